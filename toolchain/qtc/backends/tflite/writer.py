"""``compile_tflite(graph, out_path)``: a qtc graph → a .tflite flatbuffer.

The graph is checked and made channels-last (:mod:`.prepare`), each node is
lowered to TFLite builtin operators (:mod:`.lower`), redundant reshape pairs
and unused tensors are dropped (:mod:`.peephole`), and the model is packed
with the schema's object API (:mod:`.fb`), buffers 16-byte aligned.  The file
is written to a temp path and renamed: a failure leaves nothing behind.  The
same graph gives the same bytes.

Model metadata entries: ``qtc_version``, ``source_sha256`` and
``calibration_method`` (from ``graph.metadata``), ``qtc_io_dtype``, plus the
caller's ``metadata`` (str → str).
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter

from ... import __version__
from ...atomic import save_bytes
from ...errors import QtcError
from ...ir.graph import Graph
from .fb import ModelBuilder
from .lower import Lowering
from .peephole import drop_unused, fold_shape_round_trips
from .prepare import prepare


def metadata_entries(graph: Graph, io_dtype: str, extra: dict | None) -> dict[str, str]:
    quant = graph.metadata.get("quantization") or {}
    entries = {
        "qtc_version": __version__,
        "source_sha256": str(graph.metadata.get("source_sha256") or ""),
        "calibration_method": str(quant.get("method") or "none"),
        "qtc_io_dtype": io_dtype,
    }
    for k, v in (extra or {}).items():
        if not isinstance(k, str) or not k or not isinstance(v, (str, bytes)):
            raise QtcError(f"metadata entry {k!r} must map a name to a string", where="compile_tflite",
                           hint="pass metadata={'name': 'value'}")
        entries[k] = v.decode("utf-8") if isinstance(v, bytes) else v
    return entries


def build(graph: Graph, *, io_dtype: str = "int8", metadata: dict | None = None) -> tuple[bytes, dict]:
    """(flatbuffer bytes, summary) for ``graph``; nothing is written."""
    g = prepare(graph, io_dtype)
    mb = ModelBuilder("main")
    Lowering(g, mb).run()
    fold_shape_round_trips(mb)
    drop_unused(mb)
    entries = metadata_entries(graph, io_dtype, metadata)
    for k, v in entries.items():
        mb.add_metadata(k, v.encode("utf-8"))
    data = mb.to_bytes(description=f"qtc {__version__}")
    names = {i: c.builtinCode for i, c in enumerate(mb.opcodes)}
    op_names = _op_names(mb)
    info = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "weight_bytes": mb.weight_bytes,
        "ops": len(mb.operators),
        "op_counts": dict(sorted(Counter(op_names[names[o.opcodeIndex]] for o in mb.operators).items())),
        "tensors": len(mb.tensors),
        "buffers": len(mb.buffers) + len(entries),
        "io_dtype": io_dtype,
        "inputs": [mb.tensors[i].name.decode() for i in mb.inputs],
        "outputs": [mb.tensors[i].name.decode() for i in mb.outputs],
        "metadata": entries,
    }
    return data, info


def _op_names(mb: ModelBuilder) -> dict[int, str]:
    return {v: k for k, v in vars(mb.fbs.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def tflite_bytes(graph: Graph, *, io_dtype: str = "int8", metadata: dict | None = None) -> bytes:
    return build(graph, io_dtype=io_dtype, metadata=metadata)[0]


def compile_tflite(graph: Graph, out_path, *, io_dtype: str = "int8", metadata: dict | None = None) -> dict:
    """Write ``graph`` as a .tflite file at ``out_path`` (atomically); returns the summary dict
    (``path``, ``bytes``, ``weight_bytes``, ``ops``, ``op_counts``, ``sha256``, ``metadata`` …)."""
    data, info = build(graph, io_dtype=io_dtype, metadata=metadata)
    save_bytes(out_path, data)
    info["path"] = os.fspath(out_path)
    return info
