"""``fold_batchnorm``: fold inference BatchNorm into the layer before it.

Conv1D / Conv2D / ConvTranspose2D / FullyConnected followed by BatchNorm over
the layer's output channels (the node's only reader) becomes one layer with
scaled weights and a shifted bias:

    s = gamma / sqrt(var + eps),   w'[o] = w[o] * s[o],   b' = (b - mean) * s + beta

A BatchNorm that cannot fold (after an op with a fused activation, several
readers, a non-constant input...) is rewritten as ``Mul(x, s) + Add(shift)``
with per-channel constants shaped for its layout, so no BatchNorm is left for
the integer back ends.  Arithmetic is done in float64 and stored as float32.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ._rewrite import log, single_consumer

_FOLDS_INTO = ("Conv1D", "Conv2D", "ConvTranspose2D", "FullyConnected")


def _bn_params(g: Graph, bn: Node):
    vals = [g.const(i) for i in bn.inputs[1:5]]
    if any(v is None for v in vals):
        return None
    gamma, beta, mean, var = (np.asarray(v, np.float64).reshape(-1) for v in vals)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def _bn_axis(g: Graph, bn: Node) -> int:
    rank = len(g.tensors[bn.inputs[0]].shape)
    return rank - 1 if bn.attrs.get("channels_last", False) or rank <= 2 else 1


def _out_channel_axis(g: Graph, p: Node) -> int:
    rank = len(g.tensors[p.outputs[0]].shape)
    if p.op == "FullyConnected":
        return rank - 1
    return rank - 1 if p.attrs.get("channels_last", False) else 1


def _try_fold(g: Graph, bn: Node, producers, consumers, s, shift) -> bool:
    x = bn.inputs[0]
    p = producers.get(x)
    if p is None or p.op not in _FOLDS_INTO or not single_consumer(g, x, consumers):
        return False
    if p.attrs.get("activation", "none") not in ("none", None, ""):
        return False
    if _out_channel_axis(g, p) != _bn_axis(g, bn):
        return False
    w = g.const(p.inputs[1])
    b = g.const(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] else None
    wt = g.tensors[p.inputs[1]]
    if w is None or wt.quant is not None or (len(p.inputs) > 2 and p.inputs[2] and b is None):
        return False
    if w.shape[0] != s.size:
        return False
    w_new = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    b_old = np.zeros(s.size) if b is None else b.astype(np.float64)
    b_new = (b_old * s + shift).astype(np.float32)
    wname = g.add_const(f"{p.inputs[1]}_bnfold", w_new).name
    bname = g.add_const(f"{p.inputs[2] if b is not None else p.name + '_bias'}_bnfold", b_new).name
    p.inputs = [p.inputs[0], wname, bname]
    del g.tensors[x]
    p.outputs = [bn.outputs[0]]
    g.nodes.remove(bn)
    return True


def _to_mul_add(g: Graph, bn: Node, s, shift) -> None:
    x, y = bn.inputs[0], bn.outputs[0]
    rank = len(g.tensors[x].shape)
    axis = _bn_axis(g, bn)
    shp = [1] * rank
    shp[axis] = s.size
    sc = g.add_const(f"{bn.name}_scale", s.astype(np.float32).reshape(shp)).name
    sh = g.add_const(f"{bn.name}_shift", shift.astype(np.float32).reshape(shp)).name
    mid = g.unique_name(f"{bn.name}_scaled")
    g.add_tensor(mid, g.tensors[x].shape, "float32")
    i = g.nodes.index(bn)
    mul = Node("Mul", g.unique_node_name(f"{bn.name}_mul"), [x, sc], [mid], {})
    add = Node("Add", g.unique_node_name(f"{bn.name}_add"), [mid, sh], [y], {})
    g.nodes[i:i + 1] = [mul, add]


def fold_batchnorm(g: Graph) -> Graph:
    """Return a copy of ``g`` with every BatchNorm folded or turned into Mul+Add."""
    g = g.copy()
    folded, rewritten = [], []
    for bn in [n for n in g.nodes if n.op == "BatchNorm"]:
        params = _bn_params(g, bn)
        if params is None:
            continue
        s, shift = params
        if _try_fold(g, bn, g.producers(), g.consumers(), s, shift):
            folded.append(bn.name)
        else:
            _to_mul_add(g, bn, s, shift)
            rewritten.append(bn.name)
    if folded or rewritten:
        g.remove_unused_tensors()
        log(g, "fold_batchnorm", folded=folded, as_mul_add=rewritten)
    return g
