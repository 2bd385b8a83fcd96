"""Rewriting a float graph node by node into the quantized graph (used by :mod:`.quantizer`).

Integer nodes get integer inputs (a Quantize bridge is inserted after a float
producer), float nodes get float inputs (a Dequantize bridge after an integer
producer); each bridge is made once per tensor.  Constants are quantized once
the input scale they depend on is known; a constant read by several nodes is
copied so each reader gets its own quantized version.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np

from ...errors import QtcError
from ...ir.graph import Graph, Node
from ...ir.tensor import QuantParams
from .constraints import WEIGHTED_OPS, QuantSpec
from .params import activation_params, fixed_params, quantize_bias, quantize_weight

SAME_PARAMS_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "MaxPool", "AvgPool",
                             "Pad", "Slice", "Split", "ReduceMax", "Resize"})
FIXED_OUTPUT = {"Softmax": (1.0 / 256.0, -128), "Sigmoid": (1.0 / 256.0, -128), "Tanh": (1.0 / 128.0, 0)}


class QuantizeWarning(UserWarning):
    pass


class Builder:
    """Rewrites the (copied) float graph node by node into the quantized graph."""

    def __init__(self, g: Graph, spec: QuantSpec, act_params, int_nodes: set[str], dynamic_nodes: set[str],
                 weight_method: str, layer_wbits: dict[str, int] | None = None):
        self.g = g
        self.spec = spec
        self.layer_wbits = dict(layer_wbits or {})  # node name -> its weight bits (else spec.wbits)
        self.act_params = act_params  # tensor name -> QuantParams from its observer
        self.int_nodes = int_nodes
        self.dynamic_nodes = dynamic_nodes  # float nodes whose weights become int8 + Dequantize
        self.weight_method = weight_method
        self.nodes: list[Node] = []
        self.node_names = {n.name for n in g.nodes}
        self.int_of: dict[str, str] = {}
        self.float_of: dict[str, str] = {}
        self.bias_clipped: list[dict] = []
        self.uses: dict[str, int] = {}
        for n in g.nodes:
            for i in n.inputs:
                if i:
                    self.uses[i] = self.uses.get(i, 0) + 1
        for o in g.outputs:
            self.uses[o] = self.uses.get(o, 0) + 1

    # ---------------------------------------------------------------- helpers
    def _node_name(self, base: str) -> str:
        name, i = base, 1
        while name in self.node_names:
            name, i = f"{base}_{i}", i + 1
        self.node_names.add(name)
        return name

    def _emit(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> None:
        self.nodes.append(Node(op, self._node_name(name), inputs, outputs, attrs))

    def _set_int(self, name: str, qp: QuantParams) -> None:
        t = self.g.tensors[name]
        t.quant = qp
        t.dtype = "int16" if qp.bits == 16 else "int8"

    def int_version(self, name: str) -> str:
        if name in self.int_of:
            return self.int_of[name]
        src = self.float_of[name]
        qp = self.act_params(name)
        t = self.g.tensors[name]
        qn = self.g.unique_name(f"{name}/quant")
        self.g.add_tensor(qn, t.shape, "int16" if qp.bits == 16 else "int8", quant=qp)
        self._emit("Quantize", [src], [qn], f"{name}/quantize", dtype=self.g.tensors[qn].dtype)
        self.int_of[name] = qn
        return qn

    def float_version(self, name: str) -> str:
        if name in self.float_of:
            return self.float_of[name]
        src = self.int_of[name]
        fn = self.g.unique_name(f"{name}/dequant")
        self.g.add_tensor(fn, self.g.tensors[name].shape, "float32")
        self._emit("Dequantize", [src], [fn], f"{name}/dequantize")
        self.float_of[name] = fn
        return fn

    def _const_slot(self, name: str) -> str:
        """The tensor to overwrite with quantized data: itself if this is its only use."""
        if self.uses.get(name, 0) <= 1 and name not in self.g.outputs:
            return name
        src = self.g.tensors[name]
        new = self.g.unique_name(f"{name}/q")
        self.g.add_tensor(new, src.shape, src.dtype, data=src.data.copy())
        return new

    # ------------------------------------------------------------------ nodes
    def inputs(self) -> None:
        cons = self.g.consumers()
        for x in self.g.inputs:
            if any(c.name in self.int_nodes for c in cons.get(x, [])):
                self._set_int(x, self.act_params(x))
                self.int_of[x] = x
            else:
                self.float_of[x] = x

    def node(self, n: Node) -> None:
        if n.name in self.int_nodes:
            self._int_node(n)
        else:
            self._float_node(n)

    def _float_node(self, n: Node) -> None:
        ins = []
        for i, name in enumerate(n.inputs):
            t = self.g.tensors.get(name) if name else None
            if t is None:
                ins.append(name)
            elif t.is_const:
                weighted = (n.op in WEIGHTED_OPS and i == 1) or (n.op == "MatMul" and i == 1)
                ins.append(self._dynamic_weight(n, name) if n.name in self.dynamic_nodes and weighted else name)
            else:
                ins.append(self.float_version(name))
        self.nodes.append(Node(n.op, n.name, ins, list(n.outputs), dict(n.attrs)))
        for o in n.outputs:
            self.float_of[o] = o

    def _wbits(self, n: Node) -> int:
        return self.layer_wbits.get(n.name, self.spec.wbits)

    def _dynamic_weight(self, n: Node, name: str) -> str:
        slot = self._const_slot(name)
        t = self.g.tensors[slot]
        per_channel = self.spec.per_channel and n.op in WEIGHTED_OPS
        q, qp = quantize_weight(t.data, bits=self._wbits(n), per_channel=per_channel,
                                power_of_two=self.spec.power_of_two, method=self.weight_method,
                                rounding=self.spec.rounding)
        t.data, t.dtype, t.quant = q, "int8", qp
        fn = self.g.unique_name(f"{slot}/dequant")
        self.g.add_tensor(fn, t.shape, "float32")
        self._emit("Dequantize", [slot], [fn], f"{slot}/dequantize")
        return fn

    def _int_node(self, n: Node) -> None:
        ins: list[str] = []
        for i, name in enumerate(n.inputs):
            t = self.g.tensors.get(name) if name else None
            if t is None:
                ins.append(name)
            elif not t.is_const:
                ins.append(self.int_version(name))
            else:
                ins.append(name)  # constants are quantized below, once the input scale is known
        if n.op in WEIGHTED_OPS:
            ins = self._weights_and_bias(n, ins)
        else:
            ins = [self._const_operand(n, i, name) if name and self.g.tensors[name].is_const else name
                   for i, name in enumerate(ins)]
        for k, o in enumerate(n.outputs):
            self._set_int(o, self._output_params(n, ins, o))
            self.int_of[o] = o
        if n.op == "Concat":
            ins = self._requantize_concat_inputs(n, ins)
        self.nodes.append(Node(n.op, n.name, ins, list(n.outputs), dict(n.attrs)))

    def _output_params(self, n: Node, ins: list[str], out: str) -> QuantParams:
        if n.op in FIXED_OUTPUT:
            return fixed_params(*FIXED_OUTPUT[n.op])
        if n.op in SAME_PARAMS_OPS:
            return copy.deepcopy(self.g.tensors[ins[0]].quant)
        return self.act_params(out)

    def _requantize_concat_inputs(self, n: Node, ins: list[str]) -> list[str]:
        oq = self.g.tensors[n.outputs[0]].quant
        out = []
        for name in ins:
            t = self.g.tensors[name]
            if t.quant is not None and t.quant.equals(oq):
                out.append(name)
                continue
            rq = self.g.unique_name(f"{name}/requant")
            self.g.add_tensor(rq, t.shape, self.g.tensors[n.outputs[0]].dtype, quant=copy.deepcopy(oq))
            self._emit("Quantize", [name], [rq], f"{n.name}/requantize", dtype=self.g.tensors[rq].dtype)
            out.append(rq)
        return out

    def _weights_and_bias(self, n: Node, ins: list[str]) -> list[str]:
        spec = self.spec
        wname = self._const_slot(ins[1])
        w = self.g.tensors[wname]
        if not w.is_const:
            raise QtcError(f"{n.op} weight {ins[1]!r} is not a constant", where=f"node {n.name}",
                           hint="run canonicalize (constant folding) first, or keep this layer float")
        q, wq = quantize_weight(w.data, bits=self._wbits(n), per_channel=spec.per_channel,
                                power_of_two=spec.power_of_two, method=self.weight_method,
                                rounding=spec.rounding)
        w.data, w.dtype, w.quant = q, "int8", wq
        ins = list(ins)
        ins[1] = wname
        if len(ins) > 2 and ins[2]:
            bname = self._const_slot(ins[2])
            b = self.g.tensors[bname]
            in_scale = float(self.g.tensors[ins[0]].quant.scale[0])
            bias_bits = spec.bias_bits_at(self._wbits(n))
            qb, bq, clipped = quantize_bias(b.data, in_scale, wq.scale, bits=bias_bits,
                                            rounding=spec.rounding)
            if clipped:
                msg = (f"node {n.name}: {clipped} bias value(s) of {bname!r} exceed the target's "
                       f"{bias_bits}-bit bias and were clipped")
                warnings.warn(msg, QuantizeWarning, stacklevel=4)
                self.bias_clipped.append({"node": n.name, "tensor": bname, "count": clipped,
                                          "bits": bias_bits})
            b.data, b.dtype, b.quant = qb, "int32", bq
            ins[2] = bname
        return ins

    def _const_operand(self, n: Node, i: int, name: str) -> str:
        """Another op's constant input: MatMul's B like a per-tensor weight, else like an activation."""
        slot = self._const_slot(name)
        t = self.g.tensors[slot]
        if not np.issubdtype(t.data.dtype, np.floating):
            return slot  # integer constants (indices, shapes) stay as they are
        if n.op == "MatMul":
            q, qp = quantize_weight(t.data, bits=self._wbits(n), per_channel=False,
                                    power_of_two=self.spec.power_of_two, rounding=self.spec.rounding)
        else:
            d = t.data.astype(np.float64)
            qp = activation_params(float(d.min()) if d.size else 0.0, float(d.max()) if d.size else 0.0,
                                   bits=self.spec.abits, symmetric=self.spec.act_symmetric,
                                   power_of_two=self.spec.power_of_two)
            q = qp.quantize(t.data).astype(np.int8)
        t.data, t.dtype, t.quant = q, "int8", qp
        return slot
