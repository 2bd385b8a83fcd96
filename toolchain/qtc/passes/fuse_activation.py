"""``fuse_activations``: fold Relu / Relu6 / Clip(0,6) / Clip(-1,1) into the op before it.

TFLite fuses these clamps into Conv, FullyConnected, Add, Sub, Mul and the
pools (``activation`` attr).  The producer must have the clamp as its only
reader and no fused activation yet; its output tensor is replaced by the
clamp's output tensor (so graph output names and quant params are kept).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ._rewrite import log, single_consumer

FUSES_INTO = ("Conv1D", "Conv2D", "ConvTranspose2D", "FullyConnected", "Add", "Sub", "Mul", "MaxPool", "AvgPool")
F32_MAX = float(np.finfo(np.float32).max)


def activation_kind(n: Node) -> str | None:
    """The fused-activation name a clamp node equals, or None."""
    if n.op == "Relu":
        return "relu"
    if n.op == "Relu6":
        return "relu6"
    if n.op == "Clip":
        lo, hi = n.attrs.get("min"), n.attrs.get("max")
        lo = -F32_MAX if lo is None else float(lo)
        hi = F32_MAX if hi is None else float(hi)
        if lo == 0.0 and hi == 6.0:
            return "relu6"
        if lo == -1.0 and hi == 1.0:
            return "relu_n1_to_1"
        if lo == 0.0 and hi >= F32_MAX:
            return "relu"
    return None


def fuse_activations(g: Graph) -> Graph:
    """Return a copy of ``g`` with clamps fused into their producers."""
    g = g.copy()
    fused = []
    for act in [n for n in g.nodes if n.op in ("Relu", "Relu6", "Clip")]:
        kind = activation_kind(act)
        x = act.inputs[0]
        producers, consumers = g.producers(), g.consumers()
        p = producers.get(x)
        if kind is None or p is None or p.op not in FUSES_INTO or len(p.outputs) != 1:
            continue
        if not single_consumer(g, x, consumers) or p.attrs.get("activation", "none") not in ("none", None, ""):
            continue
        if g.tensors[x].dtype != "float32" and g.tensors[x].quant is None:
            continue
        p.attrs["activation"] = kind
        p.outputs = [act.outputs[0]]
        g.nodes.remove(act)
        del g.tensors[x]
        fused.append(f"{act.name}->{p.name}")
    if fused:
        log(g, "fuse_activations", fused=fused)
    return g
