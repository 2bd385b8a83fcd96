"""``ir_diff(a, b)``: every difference between two graphs, one line each (empty list = identical).

Compared: graph inputs/outputs, tensor names, shapes, dtypes, constant bytes,
every :class:`~qtc.ir.tensor.QuantParams` field, and node ops, names, inputs,
outputs, attributes and order.  Attributes are compared by meaning, not
spelling: an absent attribute equals its declared default (``ATTRS`` in the op
registry), ``strides``/``dilations``/``pads`` left ``None`` equal the explicit
neutral lists (a pool's strides default to its kernel), tuples equal lists
and ``1 == 1.0``; a trailing absent optional input (``""``) equals none.
``node_names=False`` matches nodes by their first output tensor instead of
their name (for producers that cannot keep node names).
``Graph.metadata`` is not compared (it records where a graph came from).
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, Node
from .tensor import Tensor

_QFIELDS = ("axis", "bits", "signed", "narrow_range", "symmetric", "power_of_two")
_CONV = ("Conv1D", "Conv2D", "ConvTranspose2D")
_POOL = ("MaxPool", "AvgPool")


def ir_diff(a: Graph, b: Graph, *, node_names: bool = True, graph_name: bool = False) -> list[str]:
    """Lines describing how ``b`` differs from ``a`` (``[]`` when the graphs are the same IR)."""
    out: list[str] = []
    if graph_name and a.name != b.name:
        out.append(f"graph name: {a.name!r} != {b.name!r}")
    for what in ("inputs", "outputs"):
        if list(getattr(a, what)) != list(getattr(b, what)):
            out.append(f"graph {what}: {list(getattr(a, what))} != {list(getattr(b, what))}")
    out += _tensor_diffs(a, b)
    out += _node_diffs(a, b, node_names)
    return out


# ------------------------------------------------------------------ tensors
def _tensor_diffs(a: Graph, b: Graph) -> list[str]:
    out = []
    for name in a.tensors:
        if name not in b.tensors:
            out.append(f"tensor {name!r}: only in the first graph")
    for name in b.tensors:
        if name not in a.tensors:
            out.append(f"tensor {name!r}: only in the second graph")
    for name, ta in a.tensors.items():
        tb = b.tensors.get(name)
        if tb is not None:
            out += [f"tensor {name!r}: {d}" for d in tensor_diff(ta, tb)]
    return out


def tensor_diff(ta: Tensor, tb: Tensor) -> list[str]:
    """Differences between two tensors (shape, dtype, constant bytes, quant params)."""
    out = []
    if ta.shape != tb.shape:
        out.append(f"shape {list(ta.shape)} != {list(tb.shape)}")
    if ta.dtype != tb.dtype:
        out.append(f"dtype {ta.dtype} != {tb.dtype}")
    if ta.is_const != tb.is_const:
        out.append("constant in one graph, activation in the other")
    elif ta.is_const and ta.data.shape == tb.data.shape and ta.data.dtype == tb.data.dtype:
        da, db = np.ascontiguousarray(ta.data), np.ascontiguousarray(tb.data)
        if da.tobytes() != db.tobytes():
            ne = da.reshape(-1) != db.reshape(-1)
            count = int(np.sum(ne)) if ne.dtype == bool else -1
            out.append(f"data differs ({count} of {da.size} values)" if count >= 0 else "data differs")
    qa, qb = ta.quant, tb.quant
    if (qa is None) != (qb is None):
        out.append(f"quant params only in the {'first' if qa is not None else 'second'} graph")
    elif qa is not None:
        for f in ("scale", "zero_point"):
            va, vb = getattr(qa, f), getattr(qb, f)
            if va.shape != vb.shape or va.dtype != vb.dtype or va.tobytes() != vb.tobytes():
                out.append(f"quant.{f} {_short(va)} != {_short(vb)}")
        for f in _QFIELDS:
            if getattr(qa, f) != getattr(qb, f):
                out.append(f"quant.{f} {getattr(qa, f)!r} != {getattr(qb, f)!r}")
    return out


def _short(v: np.ndarray) -> str:
    vals = ", ".join(repr(x) for x in v.reshape(-1)[:4].tolist())
    return f"{v.dtype}[{v.size}]({vals}{', ...' if v.size > 4 else ''})"


# -------------------------------------------------------------------- nodes
def _node_diffs(a: Graph, b: Graph, node_names: bool) -> list[str]:
    def key(n: Node) -> str:
        return n.name if node_names else (n.outputs[0] if n.outputs else n.name)

    ka = {key(n): n for n in a.nodes}
    kb = {key(n): n for n in b.nodes}
    label = "node" if node_names else "node writing"
    out = [f"{label} {k!r} ({ka[k].op}): only in the first graph" for k in ka if k not in kb]
    out += [f"{label} {k!r} ({kb[k].op}): only in the second graph" for k in kb if k not in ka]
    for k, na in ka.items():
        nb = kb.get(k)
        if nb is not None:
            out += [f"{label} {k!r}: {d}" for d in node_diff(na, nb)]
    order_a = [key(n) for n in a.nodes if key(n) in kb]
    order_b = [key(n) for n in b.nodes if key(n) in ka]
    if order_a != order_b:
        first = next(i for i, (x, y) in enumerate(zip(order_a, order_b)) if x != y)
        out.append(f"node order differs from position {first}: {order_a[first]!r} vs {order_b[first]!r}")
    return out


def node_diff(na: Node, nb: Node, names: bool = False) -> list[str]:
    """Differences between two nodes (op, inputs, outputs, attributes; the name when ``names``)."""
    out = []
    if names and na.name != nb.name:
        out.append(f"name {na.name!r} != {nb.name!r}")
    if na.op != nb.op:
        return out + [f"op {na.op} != {nb.op}"]
    for what in ("inputs", "outputs"):
        if _trimmed(getattr(na, what)) != _trimmed(getattr(nb, what)):
            out.append(f"{what} {list(getattr(na, what))} != {list(getattr(nb, what))}")
    aa, ab = canonical_attrs(na), canonical_attrs(nb)
    for k in sorted(set(aa) | set(ab)):
        if not _same_value(aa.get(k), ab.get(k)):
            out.append(f"attr {k}: {aa.get(k)!r} != {ab.get(k)!r}")
    return out


def _trimmed(names) -> list[str]:
    """Tensor names without trailing absent optional inputs ("" at the end means the same as nothing)."""
    out = list(names)
    while out and out[-1] == "":
        out.pop()
    return out


def canonical_attrs(node: Node) -> dict:
    """The node's attributes with defaults filled in and neutral ``None`` lists made explicit."""
    from ..ops.registry import get_op

    try:
        defaults = dict(get_op(node.op).ATTRS)
    except Exception:  # noqa: BLE001 - an unknown op: compare the attributes as written
        defaults = {}
    attrs = {**defaults, **node.attrs}
    nsp = _spatial_dims(node, attrs)
    if nsp is not None:
        if node.op in _POOL and attrs.get("strides") is None and attrs.get("kernel") is not None:
            attrs["strides"] = list(attrs["kernel"])
        for k, v in (("strides", 1), ("dilations", 1), ("pads", 0), ("output_padding", 0)):
            n = 2 * nsp if k == "pads" else nsp
            if k in attrs and attrs[k] is None:
                attrs[k] = [v] * n
    return {k: _plain(v) for k, v in attrs.items()}


def _spatial_dims(node: Node, attrs: dict) -> int | None:
    if node.op in _POOL and attrs.get("kernel") is not None:
        return len(attrs["kernel"])
    if node.op in _CONV:
        return {"Conv1D": 1}.get(node.op, 2)
    return None


def _plain(v):
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _same_value(x, y) -> bool:
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same_value(p, q) for p, q in zip(x, y))
    if isinstance(x, bool) or isinstance(y, bool):  # True is not 1
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    return x == y  # numbers by value (1 == 1.0), strings, None
