"""Freeze a calibration split and an eval split of a data source, with a fixed seed.

``make_dataset(g, source, out_dir, calib_count, eval_count, seed)`` reads the
samples, shuffles their indices with ``numpy.random.default_rng(seed)``, takes
the first ``calib_count`` for calibration and the next ``eval_count`` for
evaluation (disjoint), and writes to ``out_dir``:

* ``quant_dataset_<input>.npy``: calibration inputs, samples on axis 0;
* ``quant_dataset_<output>_outputs.npy``: the float graph's outputs on them
  (the reference interpreter's float run);
* ``quant_eval_<input>.npy`` and ``quant_eval_<output>_outputs.npy``: the
  same for the eval split; ``quant_{dataset,eval}_labels.npy`` when the
  source has labels;
* ``quant_eval_scenarios.json``: seed, counts, source (name + sha256),
  sha256 of every split array.

Tensor names are made file-safe (characters outside ``[A-Za-z0-9_.-]``
become ``_``).  Every method compared reads the same frozen files.

Sources: ``X.npy`` (one input), ``X.npz`` (a key per input name, or one
array for a one-input model; ``labels``/``y`` = labels), a folder of images
(sorted; sub-folders = classes; resized bilinearly to the input's H×W,
scaled to [0, 1]), ``file.csv`` (one sample per row, header optional; one
extra column = label), or ``module:function`` (returns an array, a dict
input→array, or ``(inputs, labels)``).
"""
from __future__ import annotations

import hashlib
import importlib
import re
import sys
from pathlib import Path

import numpy as np

from ...atomic import save_json, save_npy
from ...errors import QtcError
from ...ir.graph import Graph

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
LABEL_KEYS = ("labels", "label", "y", "targets")
DEFAULT_CALIB = 200
DEFAULT_EVAL = 200


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def array_sha256(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(f"{a.dtype}|{tuple(a.shape)}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------- sources
def _one_input(g: Graph, kind: str) -> str:
    if len(g.inputs) != 1:
        raise QtcError(f"a {kind} source feeds one input, the model has {len(g.inputs)}: {g.inputs}",
                       hint="use an .npz with one array per input name, or module:function returning a dict")
    return g.inputs[0]


def _sample_shape(g: Graph, name: str) -> tuple[int, ...]:
    shape = g.tensors[name].shape
    return shape[1:] if shape and shape[0] == 1 else shape


def _from_npz(path: Path, g: Graph) -> tuple[dict, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    by_safe = {safe_name(k): k for k in arrays}
    out = {}
    for name in g.inputs:
        key = name if name in arrays else by_safe.get(safe_name(name))
        if key is None and len(g.inputs) == 1 and len(arrays) == 1:
            key = next(iter(arrays))
        if key is None:
            raise QtcError(f"no array for model input {name!r} in the .npz (keys: {sorted(arrays)})",
                           where=str(path.name), hint="name each array after its model input")
        out[name] = arrays[key]
    return out, labels


def _from_images(folder: Path, g: Graph) -> tuple[dict, np.ndarray | None]:
    try:
        from PIL import Image
    except ImportError:
        raise QtcError("reading an image folder needs Pillow", hint="pip install pillow") from None
    name = _one_input(g, "image-folder")
    shape = _sample_shape(g, name)
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        h, w, c, chw = shape[0], shape[1], shape[2], False
    elif len(shape) == 3 and shape[0] in (1, 3, 4):
        c, h, w, chw = shape[0], shape[1], shape[2], True
    elif len(shape) == 2:
        h, w, c, chw = shape[0], shape[1], None, False
    else:
        raise QtcError(f"input {name!r} of shape {g.tensors[name].shape} is not an image",
                       hint="use an .npy/.npz source for non-image inputs")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise QtcError("no images found", where=str(folder.name), hint=f"use files ending in {', '.join(IMAGE_EXTS)}")
    classes = sorted({p.parent.relative_to(folder).as_posix() for p in files})
    has_classes = classes != ["."]
    xs, ys = [], []
    for p in files:
        with Image.open(p) as im:
            im = im.convert("L" if c in (None, 1) else ("RGBA" if c == 4 else "RGB"))
            im = im.resize((w, h), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
        if c == 1:
            a = a[..., None]
        if chw:
            a = np.moveaxis(a, -1, 0)
        xs.append(a)
        ys.append(classes.index(p.parent.relative_to(folder).as_posix()))
    return {name: np.stack(xs)}, (np.asarray(ys, dtype=np.int64) if has_classes else None)


def _from_csv(path: Path, g: Graph) -> tuple[dict, np.ndarray | None]:
    name = _one_input(g, "csv")
    shape = _sample_shape(g, name)
    size = int(np.prod(shape))
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    try:
        [float(v) for v in lines[0].split(",")]
    except (ValueError, IndexError):
        lines = lines[1:]  # a header row
    try:
        rows = np.asarray([[float(v) for v in ln.split(",")] for ln in lines], dtype=np.float64)
    except ValueError as exc:
        raise QtcError(f"csv has a non-numeric value ({exc})", where=path.name, hint="one numeric sample per row") from None
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise QtcError("csv has no sample rows", where=path.name, hint="one sample per row, comma-separated")
    labels = None
    if rows.shape[1] == size + 1:
        rows, labels = rows[:, :size], rows[:, size].astype(np.int64)
    elif rows.shape[1] != size:
        raise QtcError(f"csv rows have {rows.shape[1]} values; input {name!r} needs {size} (or {size + 1} with a label)",
                       where=path.name, hint=f"flatten each sample of shape {shape} into one row")
    return {name: rows.astype(np.float32).reshape(-1, *shape)}, labels


def _from_function(spec: str, g: Graph) -> tuple[dict, np.ndarray | None]:
    mod_name, _, fn_name = spec.partition(":")
    added = False
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
        added = True
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise QtcError(f"cannot load {spec!r} ({exc})", hint="give module:function importable from here") from None
    finally:
        if added:
            sys.path.remove(str(Path.cwd()))
    res = fn()
    labels = None
    if isinstance(res, tuple) and len(res) == 2:
        res, labels = res
    if isinstance(res, dict):
        missing = [n for n in g.inputs if n not in res]
        if missing:
            raise QtcError(f"{spec} returned no array for input(s) {missing}", hint=f"return a dict keyed by {g.inputs}")
        return {n: np.asarray(res[n]) for n in g.inputs}, (None if labels is None else np.asarray(labels))
    return {_one_input(g, "single-array"): np.asarray(res)}, (None if labels is None else np.asarray(labels))


def read_source(source: str, g: Graph) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict]:
    """(input arrays with samples on axis 0, labels or None, a description of the source)."""
    p = Path(source)
    if p.is_dir():
        data, labels = _from_images(p, g)
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS):
            h.update(f.relative_to(p).as_posix().encode() + b"\0" + _file_sha256(f).encode())
        info = {"kind": "image-folder", "name": p.name, "sha256": h.hexdigest()}
    elif p.suffix == ".npy" and p.exists():
        data, labels = {_one_input(g, ".npy"): np.load(p, allow_pickle=False)}, None
        info = {"kind": "npy", "name": p.name, "sha256": _file_sha256(p)}
    elif p.suffix == ".npz" and p.exists():
        data, labels = _from_npz(p, g)
        info = {"kind": "npz", "name": p.name, "sha256": _file_sha256(p)}
    elif p.suffix == ".csv" and p.exists():
        data, labels = _from_csv(p, g)
        info = {"kind": "csv", "name": p.name, "sha256": _file_sha256(p)}
    elif ":" in source and not p.exists():
        data, labels = _from_function(source, g)
        info = {"kind": "function", "name": source}
    else:
        raise QtcError(f"cannot read data source {source!r}",
                       hint="give X.npy, X.npz, a folder of images, file.csv or module:function")
    counts = {k: int(np.asarray(v).shape[0]) if np.asarray(v).ndim else 0 for k, v in data.items()}
    if len(set(counts.values())) != 1:
        raise QtcError(f"inputs have different sample counts: {counts}", hint="give the same number of samples per input")
    n = next(iter(counts.values()))
    if labels is not None and labels.shape[0] != n:
        raise QtcError(f"{labels.shape[0]} labels for {n} samples", hint="give one label per sample")
    data = {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v) for k, v in data.items()}
    info["samples"] = n
    return data, labels, info


# ----------------------------------------------------------------------- split
def split_indices(n: int, calib_count: int | None, eval_count: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    calib_count = min(DEFAULT_CALIB, n) if calib_count is None else int(calib_count)
    if calib_count < 1 or calib_count > n:
        raise QtcError(f"--calib-count {calib_count} is out of range: the source has {n} samples",
                       hint=f"use 1..{n}")
    eval_count = min(DEFAULT_EVAL, n - calib_count) if eval_count is None else int(eval_count)
    if eval_count < 0 or calib_count + eval_count > n:
        raise QtcError(f"--calib-count {calib_count} + --eval-count {eval_count} exceed the {n} samples",
                       hint=f"keep the sum <= {n}: the splits are disjoint")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:calib_count], perm[calib_count:calib_count + eval_count]


def make_dataset(g: Graph, source: str, out_dir, *, calib_count: int | None = None, eval_count: int | None = None,
                 seed: int = 0, progress: bool = True) -> dict:
    """Write the frozen calibration/eval splits and float reference outputs; returns the scenario record."""
    from .calibrate import float_outputs

    data, labels, info = read_source(source, g)
    calib_idx, eval_idx = split_indices(info["samples"], calib_count, eval_count, seed)
    names = {n: safe_name(n) for n in [*g.inputs, *g.outputs]}
    if len(set(names.values())) != len(names):
        raise QtcError("two model tensors map to the same file name", where=f"graph {g.name}",
                       hint="rename the model's inputs/outputs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"seed": int(seed), "split": "numpy.random.default_rng(seed).permutation(samples): "
                                          "calibration = first calib_count, eval = next eval_count",
              "source": info, "model": g.name, "calib_count": int(calib_idx.size),
              "eval_count": int(eval_idx.size), "files": {}}
    for split, idx in (("dataset", calib_idx), ("eval", eval_idx)):
        if idx.size == 0:
            continue
        xs = {k: np.ascontiguousarray(v[idx]) for k, v in data.items()}
        ys = float_outputs(g, xs, progress=progress)
        for k, v in xs.items():
            _save(out, record, f"quant_{split}_{names[k]}.npy", v)
        for k, v in ys.items():
            _save(out, record, f"quant_{split}_{names[k]}_outputs.npy", v)
        if labels is not None:
            _save(out, record, f"quant_{split}_labels.npy", np.ascontiguousarray(labels[idx]))
    save_json(out / "quant_eval_scenarios.json", record)
    return record


def _save(out: Path, record: dict, fname: str, a: np.ndarray) -> None:
    save_npy(out / fname, a)
    record["files"][fname] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": array_sha256(a)}


# ------------------------------------------------------------------------ load
def load_calibration(paths, g: Graph, prefix: str = "quant_dataset") -> tuple[dict[str, np.ndarray], dict | None]:
    """Calibration inputs from ``quant_dataset_<input>.npy`` files or their folder.

    Returns (arrays by input name, the scenario record beside them or None).
    ``prefix="quant_eval"`` reads the evaluation split the same way.
    """
    import json

    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += [p / f"{prefix}_{safe_name(n)}.npy" for n in g.inputs]
        else:
            files.append(p)
    calib: dict[str, np.ndarray] = {}
    by_file = {f"{prefix}_{safe_name(n)}.npy": n for n in g.inputs}
    for f in files:
        if not f.exists():
            raise QtcError("calibration file not found", where=str(f.name),
                           hint="run 'qtc calibrate MODEL --data ... -o DIR' first")
        name = by_file.get(f.name)
        if name is None and len(g.inputs) == 1 and len(files) == 1:
            name = g.inputs[0]
        if name is None:
            raise QtcError(f"cannot tell which model input {f.name!r} feeds", hint=f"name it {prefix}_<input>.npy "
                                                                              f"for one of {g.inputs}")
        calib[name] = np.load(f, allow_pickle=False)
    missing = [n for n in g.inputs if n not in calib]
    if missing:
        raise QtcError(f"no calibration file for input(s) {missing}", hint="pass one --calib per model input")
    record = None
    scen = files[0].parent / "quant_eval_scenarios.json"
    if scen.exists():
        record = json.loads(scen.read_text())
    return calib, record
