"""Recognise decomposed ops that exporters emit and fuse them into one node.

* GELU as ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (torch.onnx before opset 20),
  in its three common orders.
* SiLU as ``x * sigmoid(x)``; HardSwish as ``x * HardSigmoid(x, 1/6, 0.5)``
  (torch.onnx before opset 14).
* LayerNorm as ``ReduceMean / Sub / Pow / ReduceMean / Add(eps) / Sqrt / Div
  [/ Mul(gamma)] [/ Add(beta)]`` (torch.onnx before opset 17).

The fused nodes live in the private domain ``qtc.fused`` and are lowered by
the ONNX importer like any other node.  Matching is purely structural plus
constant checks; a pattern whose intermediate values are used elsewhere (or
are graph outputs) is left alone.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import NodeProto, helper

FUSED_DOMAIN = "qtc.fused"


class _Index:
    def __init__(self, nodes: list[NodeProto], consts: dict[str, np.ndarray], graph_outputs: set[str]):
        self.nodes = nodes
        self.consts = consts
        self.outs = graph_outputs
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for o in n.output:
                self.producer[o] = i
            for x in n.input:
                if x:
                    self.consumers.setdefault(x, []).append(i)

    def prod(self, name: str) -> NodeProto | None:
        i = self.producer.get(name)
        return None if i is None else self.nodes[i]

    def sole_consumer(self, name: str) -> NodeProto | None:
        """The single node reading ``name`` (None if 0 or >1 readers, or it is a graph output)."""
        c = self.consumers.get(name, [])
        if len(c) != 1 or name in self.outs:
            return None
        return self.nodes[c[0]]

    def scalar(self, name: str) -> float | None:
        v = self.consts.get(name)
        if v is None or v.size != 1:
            return None
        return float(np.asarray(v).reshape(-1)[0])

    def split_const(self, node: NodeProto) -> tuple[str, float] | None:
        """For a binary node with one scalar-constant operand: (other operand, constant)."""
        if len(node.input) != 2:
            return None
        a, b = node.input
        vb, va = self.scalar(b), self.scalar(a)
        if vb is not None and va is None:
            return a, vb
        if va is not None and vb is None:
            return b, va
        return None


def _close(v: float | None, ref: float, tol: float = 1e-4) -> bool:
    return v is not None and abs(v - ref) <= tol * max(1.0, abs(ref))


def _other(node: NodeProto, name: str) -> str | None:
    if len(node.input) != 2 or name not in node.input:
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def _match_gelu(ix: _Index, erf: NodeProto):
    pre = ix.prod(erf.input[0])
    if pre is None or pre.op_type not in ("Div", "Mul") or ix.sole_consumer(pre.output[0]) is not erf:
        return None
    xc = ix.split_const(pre)
    if xc is None or (pre.op_type == "Div" and pre.input[0] != xc[0]):
        return None
    x, c = xc
    if not ((pre.op_type == "Div" and _close(c, math.sqrt(2.0))) or
            (pre.op_type == "Mul" and _close(c, 1.0 / math.sqrt(2.0)))):
        return None
    add = ix.sole_consumer(erf.output[0])
    if add is None or add.op_type != "Add":
        return None
    ac = ix.split_const(add)
    if ac is None or ac[0] != erf.output[0] or not _close(ac[1], 1.0):
        return None
    m1 = ix.sole_consumer(add.output[0])
    if m1 is None or m1.op_type != "Mul":
        return None
    o = _other(m1, add.output[0])
    if o is None:
        return None
    if o == x:  # (x * (1 + erf)) * 0.5
        m2 = ix.sole_consumer(m1.output[0])
        if m2 is None or m2.op_type != "Mul":
            return None
        mc = ix.split_const(m2)
        if mc is None or mc[0] != m1.output[0] or not _close(mc[1], 0.5):
            return None
        return x, m2.output[0], [pre, erf, add, m1, m2]
    if _close(ix.scalar(o), 0.5):  # ((1 + erf) * 0.5) * x
        m2 = ix.sole_consumer(m1.output[0])
        if m2 is None or m2.op_type != "Mul" or _other(m2, m1.output[0]) != x:
            return None
        return x, m2.output[0], [pre, erf, add, m1, m2]
    h = ix.prod(o)  # (x * 0.5) * (1 + erf)
    if h is not None and h.op_type == "Mul" and ix.sole_consumer(o) is m1:
        hc = ix.split_const(h)
        if hc is not None and hc[0] == x and _close(hc[1], 0.5):
            return x, m1.output[0], [pre, erf, add, h, m1]
    return None


def _match_silu(ix: _Index, sig: NodeProto):
    x = sig.input[0]
    mul = ix.sole_consumer(sig.output[0])
    if mul is None or mul.op_type != "Mul" or _other(mul, sig.output[0]) != x:
        return None
    return x, mul.output[0], [sig, mul]


def _match_hardswish(ix: _Index, hs: NodeProto):
    al = {a.name: a.f for a in hs.attribute}
    if not (_close(al.get("alpha", 0.2), 1.0 / 6.0) and _close(al.get("beta", 0.5), 0.5)):
        return None
    return _match_silu(ix, hs)


def _reduce_axes(ix: _Index, node: NodeProto) -> tuple[int, ...] | None:
    for a in node.attribute:
        if a.name == "axes":
            return tuple(int(v) for v in a.ints)
    if len(node.input) > 1 and node.input[1] in ix.consts:
        return tuple(int(v) for v in np.asarray(ix.consts[node.input[1]]).reshape(-1))
    return None


def _keepdims(node: NodeProto) -> int:
    for a in node.attribute:
        if a.name == "keepdims":
            return int(a.i)
    return 1


def _match_layernorm(ix: _Index, rm1: NodeProto):
    x = rm1.input[0]
    axes = _reduce_axes(ix, rm1)
    if not axes or _keepdims(rm1) != 1:
        return None
    sub = ix.sole_consumer(rm1.output[0])
    if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, rm1.output[0]]:
        return None
    d = sub.output[0]
    readers = [ix.nodes[i] for i in ix.consumers.get(d, [])]
    if len(readers) != 2 or d in ix.outs:
        return None
    sq = next((n for n in readers if n.op_type in ("Pow", "Mul")), None)
    div = next((n for n in readers if n.op_type == "Div"), None)
    if sq is None or div is None or list(div.input)[0] != d:
        return None
    if sq.op_type == "Pow" and not (sq.input[0] == d and _close(ix.scalar(sq.input[1]), 2.0)):
        return None
    if sq.op_type == "Mul" and list(sq.input) != [d, d]:
        return None
    rm2 = ix.sole_consumer(sq.output[0])
    if rm2 is None or rm2.op_type != "ReduceMean" or _reduce_axes(ix, rm2) != axes or _keepdims(rm2) != 1:
        return None
    add = ix.sole_consumer(rm2.output[0])
    ec = None if add is None or add.op_type != "Add" else ix.split_const(add)
    if ec is None or ec[0] != rm2.output[0]:
        return None
    sqrt = ix.sole_consumer(add.output[0])
    if sqrt is None or sqrt.op_type != "Sqrt" or ix.sole_consumer(sqrt.output[0]) is not div \
            or div.input[1] != sqrt.output[0]:
        return None
    group = [rm1, sub, sq, rm2, add, sqrt, div]
    out, gamma, beta = div.output[0], "", ""
    mul = ix.sole_consumer(out)
    if mul is not None and mul.op_type == "Mul":
        g = _other(mul, out)
        if g is not None and g in ix.consts:
            gamma, out = g, mul.output[0]
            group.append(mul)
            badd = ix.sole_consumer(out)
            if badd is not None and badd.op_type == "Add":
                b = _other(badd, out)
                if b is not None and b in ix.consts:
                    beta, out = b, badd.output[0]
                    group.append(badd)
    return x, gamma, beta, out, list(axes), ec[1], group


def fuse_patterns(nodes: list[NodeProto], consts: dict[str, np.ndarray],
                  graph_outputs: set[str]) -> list[NodeProto]:
    """Return ``nodes`` with recognised decompositions replaced by fused nodes."""
    ix = _Index(list(nodes), consts, graph_outputs)
    replace: dict[int, NodeProto] = {}
    drop: set[int] = set()
    pos = {id(n): i for i, n in enumerate(ix.nodes)}
    for n in ix.nodes:
        if pos[id(n)] in drop:
            continue
        if n.op_type == "Erf" and n.domain in ("", "ai.onnx"):
            m = _match_gelu(ix, n)
            if m:
                x, out, group = m
                fused = helper.make_node("Gelu", [x], [out], name=f"{n.name or out}_gelu", domain=FUSED_DOMAIN)
                _mark(group, pos, replace, drop, fused)
        elif n.op_type == "Sigmoid" and n.domain in ("", "ai.onnx"):
            m = _match_silu(ix, n)
            if m:
                x, out, group = m
                fused = helper.make_node("Silu", [x], [out], name=f"{n.name or out}_silu", domain=FUSED_DOMAIN)
                _mark(group, pos, replace, drop, fused)
        elif n.op_type == "HardSigmoid" and n.domain in ("", "ai.onnx"):
            m = _match_hardswish(ix, n)
            if m:
                x, out, group = m
                fused = helper.make_node("HardSwish", [x], [out], name=f"{n.name or out}_hardswish",
                                         domain=FUSED_DOMAIN)
                _mark(group, pos, replace, drop, fused)
        elif n.op_type == "ReduceMean" and n.domain in ("", "ai.onnx"):
            m = _match_layernorm(ix, n)
            if m:
                x, gamma, beta, out, axes, eps, group = m
                fused = helper.make_node("LayerNorm", [x, gamma, beta], [out], name=f"{n.name or out}_layernorm",
                                         domain=FUSED_DOMAIN, axes=axes, epsilon=float(eps))
                _mark(group, pos, replace, drop, fused)
    out_nodes = []
    for i, n in enumerate(ix.nodes):
        if i in replace:
            out_nodes.append(replace[i])
        elif i not in drop:
            out_nodes.append(n)
    return out_nodes


def _mark(group, pos, replace, drop, fused) -> None:
    idx = sorted(pos[id(g)] for g in group)
    if any(i in drop or i in replace for i in idx):
        return
    # the fused node takes the place of the last node of the group, where all
    # of its inputs (x, constants) are certainly available
    replace[idx[-1]] = fused
    drop.update(idx[:-1])
