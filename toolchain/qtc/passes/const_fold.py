"""``fold_constants``: evaluate every node whose inputs are all constants.

Uses each op's float semantics (the interpreter's), so folding never changes
the float output.  Quantize/Dequantize and nodes reading quantized constants
are left alone: their meaning is more than a float value.
"""
from __future__ import annotations

import numpy as np

from ..errors import QtcError
from ..ir.graph import Graph
from ..ops.registry import get_op, has_op
from ._rewrite import log

_KEEP = ("Quantize", "Dequantize")


def fold_constants(g: Graph) -> Graph:
    """Return a copy of ``g`` in which all-constant subgraphs are replaced by their values."""
    g = g.copy()
    folded = []
    for n in list(g.nodes):
        ins = [g.tensors[i] if i else None for i in n.inputs]
        if n.op in _KEEP or not has_op(n.op) or not any(t is not None for t in ins):
            continue
        if not all(t is None or (t.is_const and t.quant is None) for t in ins):
            continue
        if any(o in g.inputs for o in n.outputs):
            continue
        try:
            ys = get_op(n.op).run_float(n, [None if t is None else t.data for t in ins])
        except Exception as exc:  # noqa: BLE001 - name the node
            raise QtcError(f"constant folding failed: {type(exc).__name__}: {exc}", where=f"node {n.name} ({n.op})",
                           hint="check the node's attributes with 'qtc show'") from None
        for o, y in zip(n.outputs, ys):
            t = g.tensors[o]
            y = np.asarray(y)
            if tuple(y.shape) != t.shape:
                raise QtcError(f"constant folding gave shape {y.shape}, expected {t.shape}",
                               where=f"node {n.name} ({n.op})")
            t.data = y.astype(t.dtype)
        g.nodes.remove(n)
        folded.append(n.name)
    if folded:
        g.remove_unused_tensors()
        log(g, "fold_constants", folded=folded)
    return g
