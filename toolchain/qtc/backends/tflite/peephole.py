"""Clean-ups on the lowered operator list, before packing.

* Back-to-back shape-only ops (RESHAPE / EXPAND_DIMS / SQUEEZE) that return a
  tensor to the exact shape and params it had — e.g. a Conv1D's 4-D result
  squeezed to 3-D and expanded again for the next 1-D pool — are dropped: the
  next op reads the original tensor.  TFLM copies at every RESHAPE and its
  planner gives each a separate buffer, so this saves ops and arena.  The
  3-D tensor disappears from the file when nothing else reads it; its name
  is kept in ``mb.views`` (4-D tensor → 3-D IR tensor) for the ``qtc_ir``
  metadata, so the importer restores it.
* Tensors no operator touches (and their buffers) are removed, and indices
  renumbered; graph inputs/outputs are always kept.
"""
from __future__ import annotations

from .fb import ModelBuilder

SHAPE_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")


def _same_tensor_form(a, b) -> bool:
    qa, qb = a.quantization, b.quantization
    same_q = (qa is None) == (qb is None) and (qa is None or (qa.scale == qb.scale and qa.zeroPoint == qb.zeroPoint))
    return list(a.shape) == list(b.shape) and a.type == b.type and same_q


def fold_shape_round_trips(mb: ModelBuilder) -> int:
    """Remove X → shape op → Y → shape op → Z where Z has X's shape, dtype and params; returns ops removed."""
    names = {v: k for k, v in vars(mb.fbs.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}
    removed = 0
    changed = True
    while changed:
        changed = False
        code = [names[mb.opcodes[o.opcodeIndex].builtinCode] for o in mb.operators]
        producer = {o.outputs[0]: i for i, o in enumerate(mb.operators) if len(o.outputs) == 1}
        readers: dict[int, int] = {}
        for o in mb.operators:
            for t in o.inputs:
                readers[t] = readers.get(t, 0) + 1
        keep = set(mb.inputs) | set(mb.outputs)
        for j, op in enumerate(mb.operators):
            i = producer.get(op.inputs[0]) if code[j] in SHAPE_OPS else None
            if i is None or code[i] not in SHAPE_OPS:
                continue
            x, y, z = mb.operators[i].inputs[0], op.inputs[0], op.outputs[0]
            if z in keep or not _same_tensor_form(mb.tensors[x], mb.tensors[z]):
                continue
            for o in mb.operators:  # readers of z read x
                o.inputs = [x if t == z else t for t in o.inputs]
            drop = {j} | ({i} if readers.get(y, 0) == 1 and y not in keep else set())
            if i in drop:  # y leaves the file: record which tensor now stands for it (the importer's 3-D name)
                mb.views[mb.tensors[x].name.decode("utf-8")] = mb.tensors[y].name.decode("utf-8")
            mb.operators = [o for k, o in enumerate(mb.operators) if k not in drop]
            removed += len(drop)
            changed = True
            break
    return removed


def drop_unused(mb: ModelBuilder) -> None:
    """Remove tensors no operator or graph I/O uses, and buffers no tensor uses; renumber."""
    used = set(mb.inputs) | set(mb.outputs)
    for o in mb.operators:
        used.update(t for t in o.inputs if t >= 0)
        used.update(o.outputs)
    new_index = {}
    tensors = []
    for k, t in enumerate(mb.tensors):
        if k in used:
            new_index[k] = len(tensors)
            tensors.append(t)
    buffers_used = sorted({t.buffer for t in tensors if t.buffer})
    new_buf = {b: k + 1 for k, b in enumerate(buffers_used)}
    mb.weight_bytes = sum(len(mb.buffers[b].raw or b"") for b in buffers_used)
    mb.buffers = [mb.buffers[0]] + [mb.buffers[b] for b in buffers_used]
    for t in tensors:
        t.buffer = new_buf.get(t.buffer, 0)
    for o in mb.operators:
        o.inputs = [new_index[t] if t >= 0 else t for t in o.inputs]
        o.outputs = [new_index[t] for t in o.outputs]
    mb.inputs = [new_index[t] for t in mb.inputs]
    mb.outputs = [new_index[t] for t in mb.outputs]
    mb.tensors = tensors
    mb.index = {t.name.decode("utf-8"): k for k, t in enumerate(tensors)}
    used_codes = sorted({o.opcodeIndex for o in mb.operators})
    new_code = {c: k for k, c in enumerate(used_codes)}
    mb.opcodes = [mb.opcodes[c] for c in used_codes]
    mb.opcode_index = {key: new_code[v] for key, v in mb.opcode_index.items() if v in new_code}
    for o in mb.operators:
        o.opcodeIndex = new_code[o.opcodeIndex]
