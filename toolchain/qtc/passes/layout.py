"""``to_channels_last``: NCHW/NCW → NHWC/NWC for back ends that need it.

Every activation tensor gets a *storage permutation* ``P``: the stored array
is ``logical.transpose(P)``.  Walking the graph in order:

* layout ops (Conv, pools, BatchNorm, Resize, GlobalAvgPool) want their input
  stored channels-last and get ``channels_last=True``;
* elementwise ops pass ``P`` through; Add/Sub/Mul/Div bring every operand to a
  common ``P`` (constants are permuted, not transposed at run time);
* axis ops (Concat, Softmax, Split, Slice, Pad, reductions, Squeeze) keep ``P``
  and get their axes rewritten; LayerNorm/FullyConnected keep it when their
  trailing axes are untouched;
* a Transpose node is absorbed into ``P`` (it costs nothing);
* anything else is layout-rigid (Reshape, Flatten, MatMul, ...): its inputs are
  transposed back to the logical order first.

Transposes are thus inserted only where a tensor meets a consumer that needs
another order, once per (tensor, order), and at the graph boundary; then
``cancel_transposes`` merges any Transpose chains left.  With
``keep_io_layout=True`` (default) graph inputs/outputs keep their shapes;
with ``False`` rank-3/4 float inputs and outputs become NWC/NHWC and
``metadata['io_layout']`` says so.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.validate import infer_shapes
from ._rewrite import bypass, log

LAYOUT_OPS = ("Conv1D", "Conv2D", "ConvTranspose2D", "MaxPool", "AvgPool", "GlobalAvgPool", "BatchNorm", "Resize")
ELEMENTWISE = ("Relu", "Relu6", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Gelu", "Silu",
               "Quantize", "Dequantize")
BINARY = ("Add", "Sub", "Mul", "Div")
REDUCE = ("Mean", "ReduceSum", "ReduceMax")


def cl_perm(rank: int) -> tuple[int, ...]:
    """Storage permutation of a channels-last tensor of ``rank`` (identity below rank 3)."""
    if rank < 3:
        return tuple(range(rank))
    return (0, *range(2, rank), 1)


def _ident(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def _inv(p) -> tuple[int, ...]:
    inv = [0] * len(p)
    for i, v in enumerate(p):
        inv[v] = i
    return tuple(inv)


class _Relayout:
    def __init__(self, g: Graph, keep_io_layout: bool):
        self.src = g
        self.g = Graph(name=g.name, metadata=dict(g.metadata))
        self.keep_io = keep_io_layout
        self.loc: dict[str, tuple[str, tuple[int, ...]]] = {}  # logical name → (stored name, perm)
        self.cache: dict[tuple[str, tuple[int, ...]], str] = {}
        self.inserted = 0
        self.absorbed = 0
        self.io_layout: dict[str, str] = {}

    # ------------------------------------------------------------- helpers
    def is_const(self, name: str) -> bool:
        return self.src.tensors[name].is_const

    def rank(self, name: str) -> int:
        return len(self.src.tensors[name].shape)

    def perm(self, name: str) -> tuple[int, ...]:
        return self.loc[name][1] if name in self.loc else _ident(self.rank(name))

    def fresh(self, base: str) -> str:
        """A tensor name unused in both the source and the new graph."""
        name, i = base, 1
        while name in self.g.tensors or name in self.src.tensors:
            name, i = f"{base}_{i}", i + 1
        return name

    def transpose_stored(self, stored: str, have: tuple[int, ...], want: tuple[int, ...]) -> str:
        """A tensor holding ``stored`` (kept in perm ``have``) re-stored in perm ``want``."""
        if tuple(have) == tuple(want):
            return stored
        key = (stored, tuple(want))
        if key not in self.cache:
            q = [have.index(w) for w in want]  # stored.transpose(q) == logical.transpose(want)
            base = self.g.tensors[stored]
            tag = "nhwc" if tuple(want) == cl_perm(len(want)) else ("nchw" if want == _ident(len(want)) else "t")
            out = self.fresh(f"{stored}_{tag}")
            self.g.add_tensor(out, tuple(base.shape[i] for i in q), base.dtype, quant=_perm_quant(base.quant, q))
            self.g.nodes.append(Node("Transpose", self.g.unique_node_name(f"{out}_transpose"), [stored], [out],
                                     {"perm": list(q)}))
            self.cache[key] = out
            self.inserted += 1
        return self.cache[key]

    def get(self, name: str, want: tuple[int, ...]) -> str:
        """A tensor holding logical ``name`` stored in permutation ``want``."""
        if not name:
            return ""
        if self.is_const(name):
            return self.const_in(name, want)
        stored, have = self.loc[name]
        return self.transpose_stored(stored, have, want)

    def const_in(self, name: str, want: tuple[int, ...], rank: int | None = None) -> str:
        """A constant as stored for an operand of ``rank`` dims in permutation ``want``."""
        t = self.src.tensors[name]
        data = t.data
        rank = len(want) if rank is None else rank
        if data.ndim < rank and data.size > 1:
            data = data.reshape((1,) * (rank - data.ndim) + data.shape)
        if data.ndim != len(want) or tuple(want) == _ident(len(want)) or data.size <= 1:
            if name not in self.g.tensors:
                self.g.add_tensor(name, t.shape, t.dtype, t.data, t.quant)
            return name
        key = (name, tuple(want))
        if key not in self.cache:
            arr = np.ascontiguousarray(np.transpose(data, want))
            cname = self.fresh(f"{name}_nhwc")
            self.g.add_tensor(cname, arr.shape, str(arr.dtype), arr, _perm_quant(t.quant, list(want)))
            self.cache[key] = cname
        return self.cache[key]

    def others(self, n: Node, ranks) -> list[str]:
        """Inputs after the first, in logical order (weights, params)."""
        return [self.get(i, _ident(r)) for i, r in zip(n.inputs[1:], ranks[1:])]

    def emit(self, n: Node, inputs: list[str], out_perms: list[tuple[int, ...]], **attr_updates) -> None:
        attrs = dict(n.attrs)
        attrs.update(attr_updates)
        for o, p in zip(n.outputs, out_perms):
            t = self.src.tensors[o]
            self.g.add_tensor(o, tuple(t.shape[i] for i in p), t.dtype, quant=_perm_quant(t.quant, list(p)))
            self.loc[o] = (o, tuple(p))
        self.g.nodes.append(Node(n.op, n.name, inputs, list(n.outputs), attrs))

    def rename_stored(self, old: str, new: str) -> None:
        _rename(self.g, old, new)
        self.loc = {k: ((new if s == old else s), p) for k, (s, p) in self.loc.items()}
        self.cache = {((new if s == old else s), p): (new if v == old else v) for (s, p), v in self.cache.items()}

    # ----------------------------------------------------------------- run
    def run(self) -> Graph:
        src = self.src
        for name in src.inputs:
            t = src.tensors[name]
            p = _ident(len(t.shape))
            if not self.keep_io and len(t.shape) in (3, 4) and t.dtype == "float32" and self._feeds_layout_op(name):
                p = cl_perm(len(t.shape))
                self.io_layout[name] = "NWC" if len(t.shape) == 3 else "NHWC"
            self.g.add_tensor(name, tuple(t.shape[i] for i in p), t.dtype, quant=_perm_quant(t.quant, list(p)))
            self.g.inputs.append(name)
            self.loc[name] = (name, p)
        for n in src.nodes:
            self.visit(n)
        self.finish_outputs()
        return self.g

    def _feeds_layout_op(self, name: str) -> bool:
        return any(n.op in LAYOUT_OPS and n.inputs and n.inputs[0] == name for n in self.src.nodes)

    def visit(self, n: Node) -> None:
        op = n.op
        ranks = [self.rank(i) if i else 0 for i in n.inputs]
        x = n.inputs[0] if n.inputs else ""
        act = bool(x) and not self.is_const(x)
        if op in LAYOUT_OPS and act and ranks[0] in (3, 4):
            already = bool(n.attrs.get("channels_last", False))  # e.g. a Keras/TFLite graph
            want = _ident(ranks[0]) if already else cl_perm(ranks[0])
            out_rank = self.rank(n.outputs[0])
            out_p = cl_perm(out_rank) if (out_rank == ranks[0] and not already) else _ident(out_rank)
            self.emit(n, [self.get(x, want)] + self.others(n, ranks), [out_p], channels_last=True)
            return
        if op == "Transpose" and act:
            stored, p = self.loc[x]
            inv_t = _inv([int(v) % len(p) for v in n.attrs["perm"]])
            self.loc[n.outputs[0]] = (stored, tuple(inv_t[v] for v in p))
            self.absorbed += 1
            return
        if op in ELEMENTWISE and act:
            p = self.perm(x)
            self.emit(n, [self.get(x, p)] + self.others(n, ranks), [p])
            return
        if op in BINARY:
            self.visit_binary(n, ranks)
            return
        if act and op in ("Concat", "Softmax", "Split", "Slice", "Pad", "Squeeze", "LayerNorm",
                          "FullyConnected") + REDUCE and self.visit_axis_op(n, ranks):
            return
        self.emit(n, [self.get(i, _ident(r)) for i, r in zip(n.inputs, ranks)],
                  [_ident(self.rank(o)) for o in n.outputs])

    def visit_binary(self, n: Node, ranks) -> None:
        out_rank = self.rank(n.outputs[0])
        ident = _ident(out_rank)
        acts = [i for i in n.inputs if i and not self.is_const(i)]
        target = next((self.perm(i) for i in acts if self.rank(i) == out_rank and self.perm(i) != ident), ident)
        ins = []
        for i, r in zip(n.inputs, ranks):
            if self.is_const(i):
                ins.append(self.const_in(i, target, out_rank))
            elif r == out_rank:
                ins.append(self.get(i, target))
            elif target == ident:
                ins.append(self.get(i, _ident(r)))
            else:  # lower-rank activation operand: add leading unit dims, then permute
                flat = self.get(i, _ident(r))
                t = self.g.tensors[flat]
                shape = [1] * (out_rank - r) + list(t.shape)
                mid = self.fresh(f"{flat}_rank{out_rank}")
                self.g.add_tensor(mid, tuple(shape), t.dtype, quant=t.quant)
                self.g.nodes.append(Node("Reshape", self.g.unique_node_name(f"{mid}_reshape"), [flat], [mid],
                                         {"shape": shape}))
                ins.append(self.transpose_stored(mid, ident, target))
        self.emit(n, ins, [target])

    def visit_axis_op(self, n: Node, ranks) -> bool:
        op, a = n.op, n.attrs
        x = n.inputs[0]
        r = ranks[0]
        ident = _ident(r)
        if op == "Concat":
            p = next((self.perm(i) for i in n.inputs if i and not self.is_const(i) and self.perm(i) != ident), ident)
        else:
            p = self.perm(x)
        if p == ident:
            return False
        if op in ("Concat", "Softmax", "Split"):
            ax = int(a.get("axis", -1 if op == "Softmax" else 0)) % r
            self.emit(n, [self.get(i, p) for i in n.inputs], [p] * len(n.outputs), axis=p.index(ax))
            return True
        if op == "Slice":
            axes = [int(v) % r for v in (a.get("axes") or range(len(a["starts"])))]
            self.emit(n, [self.get(x, p)], [p], axes=[p.index(v) for v in axes])
            return True
        if op == "Pad":
            pads = [int(v) for v in a["pads"]]
            self.emit(n, [self.get(x, p)], [p], pads=[pads[v] for v in p] + [pads[r + v] for v in p])
            return True
        if op in REDUCE or op == "Squeeze":
            if a.get("axes") is None and op == "Squeeze":
                axes = [i for i, d in enumerate(self.src.tensors[x].shape) if d == 1]
            else:
                axes = [int(v) % r for v in (a.get("axes") if a.get("axes") is not None else range(r))]
            keep = bool(a.get("keepdims", True)) if op in REDUCE else False
            if keep:
                out_p = p
            else:
                kept = [v for v in p if v not in axes]
                order = sorted(kept)
                out_p = tuple(order.index(v) for v in kept)
            self.emit(n, [self.get(x, p)], [out_p], axes=sorted(p.index(v) for v in axes))
            return True
        if op in ("LayerNorm", "FullyConnected"):
            start = int(a.get("axis", -1)) % r if op == "LayerNorm" else r - 1
            if any(p[i] != i for i in range(start, r)):
                return False
            self.emit(n, [self.get(x, p)] + self.others(n, ranks), [p])
            return True
        return False

    def finish_outputs(self) -> None:
        outs = []
        for o in self.src.outputs:
            if self.is_const(o):
                outs.append(self.get(o, _ident(self.rank(o))))
                continue
            stored, p = self.loc[o]
            r = len(p)
            want = _ident(r)
            if not self.keep_io and r in (3, 4) and p == cl_perm(r):
                want = p
                self.io_layout[o] = "NWC" if r == 3 else "NHWC"
            if stored == o and p == want:
                outs.append(o)
                continue
            if p == want:  # ``o`` is an alias of ``stored`` (absorbed Transposes)
                if stored in self.g.inputs or stored in outs or self.g.tensors[stored].is_const:
                    y = self._copy(stored)
                else:
                    y = stored
            else:
                if stored == o:  # free the name: the final Transpose writes ``o``
                    inner = self.fresh(f"{o}_stored")
                    self.rename_stored(o, inner)
                    stored = inner
                y = self.transpose_stored(stored, p, want)
                if y in outs:
                    y = self._copy(y)
            self.rename_stored(y, o)
            outs.append(o)
        self.g.outputs = outs

    def _copy(self, stored: str) -> str:
        """An identity Transpose (the IR has no Identity op) so a graph output gets its own tensor."""
        base = self.g.tensors[stored]
        out = self.fresh(f"{stored}_copy")
        self.g.add_tensor(out, base.shape, base.dtype, quant=base.quant)
        self.g.nodes.append(Node("Transpose", self.g.unique_node_name(f"{out}_transpose"), [stored], [out],
                                 {"perm": list(range(len(base.shape)))}))
        return out


def _perm_quant(q, perm):
    if q is None or q.axis is None:
        return q
    import copy

    q2 = copy.deepcopy(q)
    q2.axis = list(perm).index(q.axis % len(perm))
    return q2


def _rename(g: Graph, old: str, new: str) -> None:
    t = g.tensors.pop(old)
    t.name = new
    g.tensors[new] = t
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
        n.outputs = [new if o == old else o for o in n.outputs]
    g.inputs = [new if i == old else i for i in g.inputs]


_RESHAPE_LIKE = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _moves_only_unit_dims(shape, perm) -> bool:
    """True if the Transpose keeps the order of all dims larger than 1 (so it is a Reshape)."""
    big = [p for p in perm if shape[p] != 1]
    return big == sorted(big)


def cancel_transposes(g: Graph) -> Graph:
    """Clean up Transposes (returns a copy).

    * Transpose→Transpose chains merge into one Transpose;
    * identity Transposes are removed;
    * a Transpose that only moves size-1 dims becomes a Reshape, and a
      Reshape-like op (Reshape/Flatten/Squeeze/Unsqueeze) reading another one
      (with no other reader) becomes one Reshape of the first one's input.
    """
    g = g.copy()
    merged = 0
    changed = True
    while changed:
        changed = False
        producers, consumers = g.producers(), g.consumers()
        for n in list(g.nodes):
            if n.op not in ("Transpose",) + _RESHAPE_LIKE:
                continue
            p = producers.get(n.inputs[0])
            same_quant = p is not None and _quant_free(g, p.inputs[0], n.inputs[0])
            if n.op == "Transpose" and p is not None and p.op == "Transpose" and same_quant:
                a = [int(v) for v in p.attrs["perm"]]
                n.inputs = [p.inputs[0]]
                n.attrs["perm"] = [a[int(i)] for i in n.attrs["perm"]]
            elif n.op == "Transpose" and [int(v) for v in n.attrs["perm"]] == list(range(len(n.attrs["perm"]))):
                if not bypass(g, n):
                    continue
            elif n.op == "Transpose" and _moves_only_unit_dims(g.tensors[n.inputs[0]].shape,
                                                               [int(v) for v in n.attrs["perm"]]):
                n.op = "Reshape"
                n.attrs = {"shape": list(g.tensors[n.outputs[0]].shape)}
            elif n.op in _RESHAPE_LIKE and p is not None and p.op in _RESHAPE_LIKE and same_quant and \
                    len(consumers.get(n.inputs[0], [])) == 1 and n.inputs[0] not in g.outputs:
                n.op, n.inputs = "Reshape", [p.inputs[0]]
                n.attrs = {"shape": list(g.tensors[n.outputs[0]].shape)}
            elif n.op in _RESHAPE_LIKE and g.tensors[n.inputs[0]].shape == g.tensors[n.outputs[0]].shape:
                if not bypass(g, n):
                    continue
            else:
                continue
            merged += 1
            changed = True
            break
        if changed:
            live = set(g.outputs)
            kept = []
            for m in reversed(g.nodes):
                if any(o in live for o in m.outputs):
                    kept.append(m)
                    live.update(i for i in m.inputs if i)
            g.nodes = kept[::-1]
    g.remove_unused_tensors()
    if merged:
        log(g, "cancel_transposes", rewrites=merged)
    return g


def _quant_free(g: Graph, a: str, b: str) -> bool:
    """Merging across ``b`` is safe: no quant params change between ``a`` and ``b``."""
    qa, qb = g.tensors[a].quant, g.tensors[b].quant
    return (qa is None and qb is None) or (qa is not None and qa.equals(qb))


def to_channels_last(g: Graph, keep_io_layout: bool = True) -> Graph:
    """Return a copy of ``g`` with layout ops channels-last and as few Transposes as possible."""
    src = g.copy()
    r = _Relayout(src, keep_io_layout)
    out = r.run()
    infer_shapes(out)
    out.remove_unused_tensors()
    out.metadata["layout"] = "channels_last"
    if r.io_layout:
        out.metadata["io_layout"] = dict(r.io_layout)
    log(out, "to_channels_last", transposes_inserted=r.inserted, transposes_absorbed=r.absorbed,
        keep_io_layout=keep_io_layout)
    return cancel_transposes(out)
