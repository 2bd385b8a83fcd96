"""``remove_dead_nodes``: drop identity-like nodes, nodes nothing reads, unused tensors."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ._rewrite import bypass, log

F32_MAX = float(np.finfo(np.float32).max)


def _is_identity(g: Graph, n: Node) -> bool:
    if not n.inputs or len(n.outputs) != 1 or not n.inputs[0]:
        return False
    x = g.tensors[n.inputs[0]]
    shape, rank = x.shape, len(x.shape)
    a = n.attrs
    if n.op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
        return tuple(g.tensors[n.outputs[0]].shape) == tuple(shape)
    if n.op == "Transpose":
        perm = a.get("perm")
        return perm is not None and [int(p) % max(rank, 1) for p in perm] == list(range(rank))
    if n.op == "Split":
        return tuple(g.tensors[n.outputs[0]].shape) == tuple(shape)
    if n.op == "Concat":
        return len([i for i in n.inputs if i]) == 1
    if n.op == "Pad":
        return not any(int(p) for p in a.get("pads") or [])
    if n.op == "Slice":
        starts, ends = list(a.get("starts") or []), list(a.get("ends") or [])
        axes = list(a.get("axes") or range(len(starts)))
        steps = list(a.get("steps") or [1] * len(starts))
        for s, e, ax, st in zip(starts, ends, axes, steps):
            d = shape[int(ax) % rank]
            if int(st) != 1 or slice(int(s), int(e), 1).indices(d)[:2] != (0, d):
                return False
        return True
    if n.op == "Clip":
        lo, hi = a.get("min"), a.get("max")
        return (lo is None or float(lo) <= -F32_MAX) and (hi is None or float(hi) >= F32_MAX)
    return False


def remove_dead_nodes(g: Graph) -> Graph:
    """Return a copy of ``g`` without identity-like nodes, dead nodes and unused tensors."""
    g = g.copy()
    removed_identity: list[str] = []
    for n in list(g.nodes):
        if not _is_identity(g, n):
            continue
        if bypass(g, n):
            removed_identity.append(n.name)
    live: set[str] = set(g.outputs)
    kept: list[Node] = []
    dead: list[str] = []
    for n in reversed(g.nodes):
        if any(o in live for o in n.outputs):
            kept.append(n)
            live.update(i for i in n.inputs if i)
        else:
            dead.append(n.name)
    g.nodes = kept[::-1]
    before = len(g.tensors)
    g.remove_unused_tensors()
    if removed_identity or dead or before != len(g.tensors):
        log(g, "remove_dead_nodes", identity=removed_identity, dead=dead[::-1],
            tensors_removed=before - len(g.tensors))
    return g

