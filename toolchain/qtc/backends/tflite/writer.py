"""``compile_tflite(graph, out_path)``: a qtc graph → a .tflite flatbuffer.

The graph is checked and made channels-last (:mod:`.prepare`), each node is
lowered to TFLite builtin operators (:mod:`.lower`), redundant reshape pairs
and unused tensors are dropped (:mod:`.peephole`), and the model is packed
with the schema's object API (:mod:`.fb`), buffers 16-byte aligned.  The file
is written to a temp path and renamed: a failure leaves nothing behind.  The
same graph gives the same bytes.

Model metadata entries: ``qtc_version``, ``source_sha256`` and
``calibration_method`` (from ``graph.metadata``), ``qtc_io_dtype``,
``qtc_quant`` and ``qtc_ir`` (compact JSON: what TFLite cannot hold, so that
``load_tflite`` rebuilds the same IR), ``qtc_input_quant`` when the quantizer
gave an input per-feature params (the user quantizes that input with them, not
with the tensor's; see :mod:`qtc.ir.boundary`), plus the caller's ``metadata``
(str → str).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter

from ... import __version__
from ...atomic import save_bytes
from ...errors import QtcError
from ...ir.boundary import META_KEY as BOUNDARY_KEY
from ...ir.graph import Graph
from .fb import ModelBuilder
from .lower import Lowering
from .peephole import drop_unused, fold_shape_round_trips
from .prepare import prepare


BASE_ENTRIES = ("qtc_version", "source_sha256", "calibration_method", "qtc_io_dtype")


def metadata_entries(graph: Graph, io_dtype: str, extra: dict | None) -> dict[str, str]:
    quant = graph.metadata.get("quantization") or {}
    entries = {
        "qtc_version": __version__,
        "source_sha256": str(graph.metadata.get("source_sha256") or ""),
        "calibration_method": str(quant.get("method") or "none"),
        "qtc_io_dtype": io_dtype,
    }
    for k, v in (extra or {}).items():
        if k in ("qtc_quant", "qtc_ir", "qtc_input_quant"):
            raise QtcError(f"metadata entry {k!r} is written by qtc itself", where="compile_tflite",
                           hint="choose another name for your entry")
        if not isinstance(k, str) or not k or not isinstance(v, (str, bytes)):
            raise QtcError(f"metadata entry {k!r} must map a name to a string", where="compile_tflite",
                           hint="pass metadata={'name': 'value'}")
        entries[k] = v.decode("utf-8") if isinstance(v, bytes) else v
    return entries


def _json(obj) -> str:
    """Compact, key-sorted JSON (deterministic); a Clip bound may be ±inf (Python's JSON reads it back)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# bits a TFLite tensor type implies for the importer (an int64 bias is a widened 32-bit bias: 16x8)
_TYPE_BITS = {"INT4": 4, "INT8": 8, "UINT8": 8, "INT16": 16, "INT32": 32, "INT64": 32}


def quant_entry(mb: ModelBuilder, noquant) -> str:
    """``qtc_quant``: tensor name → the quant flags TFLite cannot store, as letters (``n`` narrow_range,
    ``s`` symmetric, ``p`` power_of_two) plus ``:<bits>`` where the bits differ from the tensor type's,
    or ``-`` for a tensor the writer gave params the IR tensor does not have.  Quantized tensors with no
    flag are left out; the entry's presence says the list is complete."""
    types = {v: k for k, v in vars(mb.fbs.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
    noquant = set(noquant)
    out = {}
    for t in mb.tensors:
        name = t.name.decode("utf-8")
        if t.quantization is None:
            continue
        q = mb.qparams.get(name)
        if name in noquant or q is None:
            out[name] = "-"
            continue
        flags = "n" * q.narrow_range + "s" * q.symmetric + "p" * q.power_of_two
        if q.bits != _TYPE_BITS.get(types.get(t.type), q.bits):
            flags += f":{q.bits}"
        if flags:
            out[name] = flags
    return _json(out)


def ir_entry(mb: ModelBuilder, hints: dict) -> str:
    """``qtc_ir``: what the importer needs to rebuild the IR exactly and TFLite cannot hold —
    node names (by first output tensor), the op and attributes of lossy forms (Flatten, Clip, ...),
    the 4-D outputs of the 2-D ops that run 1-D convs/pools on a view,
    3-D tensors the peephole dropped (by the 4-D tensor that replaced them), the requantizing temps,
    the temps between an op and the explicit PAD / SLICE it was split into, and the zero biases the
    lowering added."""
    present = set(mb.index)
    entry = {
        "v": 1,
        "names": hints["names"],
        "ops": hints["ops"],
        "1d": sorted(t for t in hints["1d"] if t in present),
        "views": {k: v for k, v in mb.views.items() if k in present},
        "requant": sorted(t for t in hints["requant"] if t in present),
        "fused": sorted(t for t in hints["fused"] if t in present),
        "synthetic": sorted(t for t in hints["synthetic"] if t in present),
    }
    return _json({k: v for k, v in entry.items() if v or k == "v"})


def build(graph: Graph, *, io_dtype: str = "int8", metadata: dict | None = None,
          ir_metadata: bool = True) -> tuple[bytes, dict]:
    """(flatbuffer bytes, summary) for ``graph``; nothing is written.  ``ir_metadata=False`` leaves out
    ``qtc_quant`` / ``qtc_ir`` (a few hundred bytes; ``load_tflite`` then infers what they held)."""
    per_feature = graph.metadata.get(BOUNDARY_KEY) or {}
    if per_feature and io_dtype != "int8":
        raise QtcError(f"input(s) {sorted(per_feature)} take per-feature quant params, which a {io_dtype}-input "
                       ".tflite cannot hold", where="compile_tflite",
                       hint="export with int8 I/O (the default), or quantize without --per-feature-input")
    g = prepare(graph, io_dtype)
    mb = ModelBuilder("main")
    lowering = Lowering(g, mb)
    lowering.run()
    fold_shape_round_trips(mb)
    drop_unused(mb)
    entries = metadata_entries(graph, io_dtype, metadata)
    if ir_metadata:
        entries = {**{k: v for k, v in entries.items() if k in BASE_ENTRIES},
                   "qtc_quant": quant_entry(mb, lowering.hints["noquant"]), "qtc_ir": ir_entry(mb, lowering.hints),
                   **{k: v for k, v in entries.items() if k not in BASE_ENTRIES}}
    if per_feature:
        entries["qtc_input_quant"] = _json(per_feature)
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


def tflite_bytes(graph: Graph, *, io_dtype: str = "int8", metadata: dict | None = None,
                 ir_metadata: bool = True) -> bytes:
    return build(graph, io_dtype=io_dtype, metadata=metadata, ir_metadata=ir_metadata)[0]


def compile_tflite(graph: Graph, out_path, *, io_dtype: str = "int8", metadata: dict | None = None,
                   ir_metadata: bool = True) -> dict:
    """Write ``graph`` as a .tflite file at ``out_path`` (atomically); returns the summary dict
    (``path``, ``bytes``, ``weight_bytes``, ``ops``, ``op_counts``, ``sha256``, ``metadata`` …)."""
    data, info = build(graph, io_dtype=io_dtype, metadata=metadata, ir_metadata=ir_metadata)
    save_bytes(out_path, data)
    info["path"] = os.fspath(out_path)
    return info
