"""Small graph-rewriting helpers shared by the passes."""
from __future__ import annotations

from ..ir.graph import Graph, Node


def replace_uses(g: Graph, old: str, new: str) -> None:
    """Every reader of ``old`` (nodes and graph outputs) reads ``new`` instead."""
    for n in g.nodes:
        if old in n.inputs:
            n.inputs = [new if i == old else i for i in n.inputs]
    g.outputs = [new if o == old else o for o in g.outputs]


def rename_tensor(g: Graph, old: str, new: str) -> None:
    """Rename a tensor everywhere (producer, readers, graph I/O)."""
    t = g.tensors.pop(old)
    t.name = new
    g.tensors[new] = t
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
        n.outputs = [new if o == old else o for o in n.outputs]
    g.inputs = [new if i == old else i for i in g.inputs]
    g.outputs = [new if o == old else o for o in g.outputs]


def bypass(g: Graph, node: Node) -> bool:
    """Remove a node whose single output equals its first input; False if it must stay.

    Readers of the output read the input instead.  When the output is a graph
    output, the input's producer writes the output tensor directly (so graph
    output names never change); that is impossible when the input is itself a
    graph input, a constant or another graph output.
    """
    src, dst = node.inputs[0], node.outputs[0]
    ts, td = g.tensors[src], g.tensors[dst]
    if ts.shape != td.shape or ts.dtype != td.dtype or not _same_quant(ts.quant, td.quant):
        return False
    if dst in g.outputs:
        if src in g.inputs or src in g.outputs or ts.is_const:
            return False
        g.nodes.remove(node)
        del g.tensors[dst]
        rename_tensor(g, src, dst)
        return True
    g.nodes.remove(node)
    replace_uses(g, dst, src)
    del g.tensors[dst]
    return True


def _same_quant(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.equals(b)


def log(g: Graph, pass_name: str, **facts) -> None:
    """Record what a pass did in the graph's metadata (JSON-able)."""
    g.metadata.setdefault("passes", []).append({"pass": pass_name, **facts})


def single_consumer(g: Graph, name: str, consumers: dict) -> bool:
    return len(consumers.get(name, [])) == 1 and name not in g.outputs
