"""IR nodes → TFLite operators: the lowering context shared by the op modules.

A :class:`Lowering` walks a prepared graph (channels-last, checked by
:mod:`.prepare`) and asks the op's handler (:mod:`.lower_conv`,
:mod:`.lower_misc`) to add operators to a :class:`~.fb.ModelBuilder`.
IR tensors keep their names in the .tflite file, so a runtime's tensors map
back to the IR by name; tensors the lowering adds (a PAD before a conv, a
requantizing QUANTIZE) are named ``<node>/<what>``.

Some IR ops mean more than their TFLite namesake: a copy op (Reshape, pools,
ReduceMax, ...) whose output params differ from its input's requantizes; the
lowering then writes the op into a temp tensor with the input's params and
adds a QUANTIZE into the IR output, exactly what the IR's integer kernel does.
"""
from __future__ import annotations

import numpy as np

from ...errors import QtcError, UnsupportedOpError
from ...ir.graph import Graph, Node
from ...ir.tensor import QuantParams, Tensor
from ...ops._util import same_pads, same_qparams
from .fb import ModelBuilder

INT_DTYPES = ("int8", "int16", "uint8")
# IR ops whose TFLite form loses the op or the exact attribute spelling (a Flatten is a RESHAPE, a Clip's
# float bounds become quantized constants, axes are normalized): their op and attributes go in qtc_ir
SPELLED_OPS = ("Flatten", "Unsqueeze", "Squeeze", "Clip", "Mean", "GlobalAvgPool", "ReduceSum", "ReduceMax",
               "Concat", "Split", "Slice", "Transpose", "Softmax", "LeakyRelu", "Pad", "Resize")
VALID, SAME = 1, 0  # TFLite Padding enum


class Lowering:
    def __init__(self, g: Graph, mb: ModelBuilder):
        self.g = g
        self.mb = mb
        self.node: Node | None = None
        self.names = set(g.tensors)
        # Dequantize of a constant (dynamic-mode weights): written where it is read, in the reader's layout
        self.deferred: dict[str, str] = {n.outputs[0]: n.inputs[0] for n in g.nodes
                                         if n.op == "Dequantize" and g.tensors[n.inputs[0]].is_const}
        # what TFLite cannot hold, for the qtc_ir metadata entry (see writer.ir_entry)
        self.hints: dict = {"names": {}, "ops": {}, "1d": [], "requant": [], "fused": [], "synthetic": [],
                            "noquant": []}

    # ----------------------------------------------------------------- errors
    def where(self) -> str:
        return f"node {self.node.name} ({self.node.op})" if self.node is not None else f"graph {self.g.name}"

    def reject(self, what: str, hint: str) -> UnsupportedOpError:
        return UnsupportedOpError(what, where=self.where(), hint=hint)

    # ---------------------------------------------------------------- tensors
    def t(self, name: str) -> Tensor:
        return self.g.tensors[name]

    def is_q(self, name: str) -> bool:
        t = self.g.tensors[name]
        return t.quant is not None and t.dtype in INT_DTYPES

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.names or self.mb.has(name):
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def tid(self, name: str) -> int:
        """Index of IR tensor ``name``, written on first use (constants with their data)."""
        if not name:
            return -1
        if self.mb.has(name):
            return self.mb.index[name]
        if name in self.deferred:
            return self.dequantized(name, self.tid(self.deferred[name]), self.t(name).shape)
        t = self.g.tensors[name]
        if t.is_const:
            int4 = t.quant is not None and t.quant.bits == 4
            return self.mb.const(name, t.data, t.quant, int4=int4)
        return self.mb.tensor(name, t.shape, t.dtype, t.quant)

    def dequantized(self, name: str, src: int, shape) -> int:
        """A DEQUANTIZE of constant ``src`` into float tensor ``name`` (or a fresh name if taken)."""
        out = self.mb.tensor(self.fresh(name) if self.mb.has(name) else name, shape, "float32")
        self.mb.op("DEQUANTIZE", [src], [out])
        return out

    def const(self, base: str, data: np.ndarray, quant: QuantParams | None = None, int4: bool = False) -> int:
        return self.mb.const(self.fresh(base), np.asarray(data), quant, int4=int4)

    def i32(self, what: str, values) -> int:
        """An int32 constant (shapes, axes, permutations, paddings) named after the node."""
        return self.const(f"{self.node.name}/{what}", np.asarray(values, dtype=np.int32))

    def tmp(self, what: str, shape, like: str, quant: QuantParams | None | str = "like") -> int:
        """An intermediate activation with ``like``'s dtype (and quant params unless given)."""
        src = self.g.tensors[like]
        q = src.quant if quant == "like" else quant
        return self.mb.tensor(self.fresh(f"{self.node.name}/{what}"), shape, src.dtype, q)

    # ------------------------------------------------------------------ hints
    def keep_op(self, n: Node, *keys: str) -> None:
        """Record ``n``'s op and these attributes: its TFLite form does not say them exactly."""
        attrs = {k: _plain(n.attrs[k]) for k in keys if k in n.attrs}
        self.hints["ops"][n.outputs[0]] = {"op": n.op, "attrs": attrs}

    def note(self, kind: str, idx: int) -> None:
        """Record tensor ``idx``'s name under ``kind`` (``1d``, ``requant``, ``fused``, ``synthetic``)."""
        self.hints[kind].append(self.mb.tensors[idx].name.decode("utf-8"))

    def fused(self, temp: int) -> None:
        """``temp`` joins the current node's op and an explicit PAD / SLICE the lowering added."""
        self.note("fused", temp)
        self.keep_op(self.node, *sorted(self.node.attrs))

    # ------------------------------------------------------- same-params ops
    def requantizes(self, src: str, dst: str) -> bool:
        """True when integer tensors ``src`` and ``dst`` have different params."""
        return self.is_q(src) and self.is_q(dst) and not same_qparams(self.t(src).quant, self.t(dst).quant)

    def same_params_out(self, src: str, dst: str):
        """(tensor to write, finish): ``dst`` itself when its params equal ``src``'s, else a temp
        with ``src``'s params and a QUANTIZE into ``dst`` (the IR's requantize)."""
        if not self.requantizes(src, dst):
            return self.tid(dst), (lambda: None)
        if self.t(src).dtype != self.t(dst).dtype:
            raise self.reject(f"changes dtype {self.t(src).dtype} → {self.t(dst).dtype}",
                              "insert an explicit Quantize node for the dtype change")
        mid = self.tmp("same_params", self.t(dst).shape, src)
        self.note("requant", mid)

        def finish():
            self.mb.op("QUANTIZE", [mid], [self.tid(dst)])
        return mid, finish

    def requantized_in(self, src: str, quant_of: str, shape=None) -> int:
        """``src`` as a tensor with ``quant_of``'s params (a QUANTIZE when they differ)."""
        if not self.is_q(src) or same_qparams(self.t(src).quant, self.t(quant_of).quant):
            return self.tid(src)
        mid = self.tmp("requant", shape or self.t(src).shape, quant_of)
        self.note("requant", mid)
        self.mb.op("QUANTIZE", [self.tid(src)], [mid])
        return mid

    # -------------------------------------------------------------- helpers
    def reshape(self, src: int, shape, like: str, what: str, quant="like") -> int:
        out = self.tmp(what, shape, like, quant)
        self.mb.op("RESHAPE", [src, self.i32(f"{what}_shape", list(shape))], [out])
        return out

    def bias(self, b: str, x: str, w: str) -> int:
        """The bias tensor; an integer bias without params gets TFLite's s_in·s_w[c], zero point 0."""
        if not b:
            return -1
        t = self.t(b)
        if t.quant is None and t.dtype in ("int32", "int64") and self.is_q(x):
            ws = self.t(w).quant.scale.astype(np.float64)
            scale = (np.float64(np.float32(self.t(x).quant.scale[0])) * ws).astype(np.float32)
            q = QuantParams(scale, np.zeros(scale.size, dtype=np.int64), axis=0 if scale.size > 1 else None,
                            bits=32)
            self.hints["noquant"].append(b)
            return self.mb.const(b, t.data, q)
        return self.tid(b)

    # ------------------------------------------------------------------- run
    def run(self) -> None:
        from .lower_conv import HANDLERS as CONV
        from .lower_misc import HANDLERS as MISC

        handlers = {**CONV, **MISC}
        for name in self.g.inputs:
            self.mb.inputs.append(self.tid(name))
        for node in self.g.nodes:
            self.node = node
            if node.outputs[0] in self.deferred:
                continue
            if node.name != node.outputs[0]:  # TFLite operators have no names; the importer names by output
                self.hints["names"][node.outputs[0]] = node.name
            if node.op in SPELLED_OPS and node.attrs:
                self.keep_op(node, *sorted(node.attrs))
            fn = handlers.get(node.op)
            if fn is None:
                raise self.reject(f"op {node.op} has no TFLite form in qtc's writer",
                                  "keep it out of the graph, or use the C back end")
            try:
                fn(self, node)
            except QtcError:
                raise
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                raise QtcError(f"cannot write this node: {type(exc).__name__}: {exc}", where=self.where(),
                               hint="check the node's attributes with 'qtc show'") from exc
        self.node = None
        for name in self.g.outputs:
            if not self.mb.has(name):
                raise QtcError(f"graph output {name!r} is never written", where=f"graph {self.g.name}",
                               hint="an output must be produced by a node")
            self.mb.outputs.append(self.mb.index[name])


def _plain(v):
    """An attribute value as plain JSON (lists, ints, floats, strings)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def tflite_pads(in_sp, kernel, strides, dilations, padding: int) -> list[int]:
    """[b0, b1, ..., e0, e1, ...] that TFLite uses for SAME/VALID (the odd pixel at the end)."""
    n = len(in_sp)
    if padding == VALID:
        return [0] * (2 * n)
    return same_pads(in_sp, kernel, strides, dilations)


def tflite_out(size: int, k: int, s: int, d: int, padding: int) -> int:
    eff = (k - 1) * d + 1
    return (size + s - 1) // s if padding == SAME else (size - eff + s) // s
