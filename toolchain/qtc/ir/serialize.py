"""Save/load a graph losslessly: ``model.qir/graph.json`` + ``model.qir/weights.npz``.

* ``graph.json`` is readable: tensors (shape, dtype, quant flags), nodes, I/O,
  metadata.  Arrays never go through JSON floats.
* ``weights.npz`` holds constant data and every scale/zero_point array, so a
  round trip preserves every byte.  The zip is written with fixed timestamps
  and sorted entries: the same graph gives byte-identical files.
* Writes go to a temp directory that is renamed into place, so no partial
  artifact is ever left behind.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError
from .graph import Graph, Node
from .tensor import QuantParams, Tensor

FORMAT_VERSION = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                out[info.filename[:-4]] = np.lib.format.read_array(io.BytesIO(f.read()), allow_pickle=False)
    return out


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def graph_to_json(g: Graph) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    tensors = []
    for idx, t in enumerate(g.tensors.values()):
        entry = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
        if t.data is not None:
            key = f"t{idx}"
            arrays[f"{key}.data"] = t.data
            entry["data"] = key
        if t.quant is not None:
            key = f"t{idx}"
            arrays[f"{key}.scale"] = t.quant.scale
            arrays[f"{key}.zero_point"] = t.quant.zero_point
            entry["quant"] = {"key": key, **t.quant.to_json()}
        tensors.append(entry)
    nodes = [{"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
              "attrs": _jsonable(n.attrs)} for n in g.nodes]
    doc = {
        "format": "qtc-ir",
        "version": FORMAT_VERSION,
        "name": g.name,
        "inputs": g.inputs,
        "outputs": g.outputs,
        "metadata": _jsonable(g.metadata),
        "tensors": tensors,
        "nodes": nodes,
    }
    return doc, arrays


def graph_from_json(doc: dict, arrays: dict[str, np.ndarray], where: str = "graph") -> Graph:
    if doc.get("format") != "qtc-ir":
        raise ModelFormatError("not a qtc IR (graph.json has no 'format: qtc-ir')", where=where,
                               hint="pass a directory written by 'qtc import'")
    if doc.get("version", 0) > FORMAT_VERSION:
        raise ModelFormatError(f"IR version {doc.get('version')} is newer than this qtc supports",
                               where=where, hint="upgrade qtc")
    g = Graph(name=doc["name"], inputs=list(doc["inputs"]), outputs=list(doc["outputs"]),
              metadata=dict(doc.get("metadata", {})))
    try:
        for e in doc["tensors"]:
            data = arrays[e["data"] + ".data"] if "data" in e else None
            quant = None
            if "quant" in e:
                q = e["quant"]
                quant = QuantParams(arrays[q["key"] + ".scale"], arrays[q["key"] + ".zero_point"],
                                    axis=q["axis"], bits=q["bits"], signed=q["signed"],
                                    narrow_range=q["narrow_range"], symmetric=q["symmetric"],
                                    power_of_two=q["power_of_two"])
            g.tensors[e["name"]] = Tensor(e["name"], tuple(e["shape"]), e["dtype"], data, quant)
        for n in doc["nodes"]:
            g.nodes.append(Node(n["op"], n["name"], list(n["inputs"]), list(n["outputs"]), dict(n["attrs"])))
    except KeyError as exc:
        raise ModelFormatError(f"IR is missing entry {exc}", where=where,
                               hint="the file is corrupt or truncated; re-run 'qtc import'") from None
    return g


def save(g: Graph, path: str | os.PathLike) -> Path:
    """Write ``g`` to the directory ``path`` atomically (temp dir + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc, arrays = graph_to_json(g)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "graph.json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
        _write_npz(tmp / "weights.npz", arrays)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load(path: str | os.PathLike) -> Graph:
    path = Path(path)
    where = str(path)
    gj, wz = path / "graph.json", path / "weights.npz"
    if not path.is_dir() or not gj.exists():
        raise ModelFormatError("not a qtc IR directory (no graph.json)", where=where,
                               hint="pass a .qir directory written by 'qtc import'")
    try:
        doc = json.loads(gj.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"graph.json is corrupt ({exc.msg if hasattr(exc, 'msg') else exc})",
                               where=where, hint="re-run 'qtc import' to rewrite it") from None
    try:
        arrays = _read_npz(wz) if wz.exists() else {}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise ModelFormatError(f"weights.npz is corrupt or truncated ({exc})", where=where,
                               hint="re-run 'qtc import' to rewrite it") from None
    return graph_from_json(doc, arrays, where)
