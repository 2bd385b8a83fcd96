"""``qtc size``: what a .tflite model costs on a device.

* flatbuffer bytes, weight bytes (the constant buffers tensors read),
  metadata bytes, op count per builtin, and each buffer's data offset (all must
  be 16-byte aligned for TFLM to use weights in place);
* the TFLM tensor arena, measured by TFLM itself in a child process
  (:mod:`.arena`): the smallest ``arena_size`` that allocates and invokes,
  and the "Arena allocation total/head/tail" that ``print_allocations()``
  records.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from ...errors import QtcError
from ...frontends.tflite import schema

ALIGN = 16


def buffer_layout(data: bytes) -> list[dict]:
    """Every non-empty buffer: index, data offset in the file, size."""
    m = schema().Model.GetRootAs(data, 0)
    out = []
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        n = b.DataLength()
        if n:
            pos = b._tab.Vector(b._tab.Offset(4))  # start of the data vector's bytes
            out.append({"buffer": i, "offset": int(pos), "bytes": int(n)})
    return out


def model_stats(data: bytes) -> dict:
    """Sizes, op counts and buffer alignment of a .tflite model (no runtime needed)."""
    fbs = schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise QtcError("not a TFLite flatbuffer (no 'TFL3' identifier)", where="qtc size",
                       hint="pass a .tflite file")
    m = fbs.Model.GetRootAs(data, 0)
    sg = m.Subgraphs(0)
    names = {v: k for k, v in vars(fbs.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}
    codes = [max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(m.OperatorCodesLength())]
    ops = Counter(names.get(codes[sg.Operators(i).OpcodeIndex()], "?") for i in range(sg.OperatorsLength()))
    tensor_buffers = {sg.Tensors(i).Buffer() for i in range(sg.TensorsLength())}
    meta_buffers = {m.Metadata(i).Buffer() for i in range(m.MetadataLength())}
    layout = buffer_layout(data)
    weight = sum(b["bytes"] for b in layout if b["buffer"] in tensor_buffers)
    meta = sum(b["bytes"] for b in layout if b["buffer"] in meta_buffers)
    misaligned = [b for b in layout if b["offset"] % ALIGN]
    return {"flatbuffer_bytes": len(data), "weight_bytes": weight, "metadata_bytes": meta,
            "ops": sg.OperatorsLength(), "op_counts": dict(sorted(ops.items())), "tensors": sg.TensorsLength(),
            "buffers": len(layout), "misaligned_buffers": misaligned}


def measure_arena(data: bytes, timeout: float = 300.0) -> dict:
    """TFLM's own arena numbers (see :mod:`.arena`), measured in a child process."""
    script = Path(__file__).with_name("arena.py")
    with tempfile.TemporaryDirectory(prefix="qtc-arena-") as tmp:
        model = Path(tmp) / "model.tflite"
        model.write_bytes(data)
        try:
            proc = subprocess.run([sys.executable, str(script), str(model)], capture_output=True, text=True,
                                  timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        except subprocess.TimeoutExpired:
            raise QtcError(f"measuring the TFLM arena took more than {timeout:.0f} s", where="qtc size",
                           hint="try a smaller model") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise QtcError(f"TFLM crashed while measuring the arena: {tail[0]}", where="qtc size",
                       hint="check that TFLM runs the model ('qtc verify')")
    res = json.loads(lines[-1])
    if "error" in res:
        raise QtcError(f"TFLM cannot run the model: {res['error']}", where="qtc size",
                       hint="every op needs a TFLM kernel; 'qtc verify' shows which one fails")
    return res


def size_report(data: bytes, arena: bool = True) -> dict:
    rep = model_stats(data)
    if arena:
        rep.update(measure_arena(data))
    return rep


def format_size(rep: dict, name: str = "model") -> str:
    lines = [f"{name}: {rep['flatbuffer_bytes']:,} B flatbuffer, {rep['weight_bytes']:,} B weights, "
             f"{rep['metadata_bytes']:,} B metadata, {rep['ops']} ops, {rep['tensors']} tensors",
             "  ops: " + ", ".join(f"{k} x{v}" for k, v in rep["op_counts"].items())]
    if "arena_bytes" in rep:
        lines.append(f"  TFLM arena: {rep['arena_bytes']:,} B (smallest arena_size that allocates and invokes); "
                     f"print_allocations: total {rep['recorded_total']:,} B = head {rep['recorded_head']:,} "
                     f"+ tail {rep['recorded_tail']:,}")
    bad = rep["misaligned_buffers"]
    lines.append(f"  buffers: {rep['buffers']} non-empty, " +
                 ("all 16-byte aligned" if not bad else f"{len(bad)} NOT 16-byte aligned: {bad[:3]}"))
    return "\n".join(lines)
