"""Checks and rewrites before a graph is written as .tflite.

* the IR must validate; channels-first graphs go through ``to_channels_last``;
* every integer tensor needs quant params (finite positive scales, zero
  points in range); int16 activations need zero point 0 (TFLite's 16x8
  scheme); sub-byte values are only written where a runtime runs them:
  4-bit weights of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (packed
  INT4; TFLM takes INT4 fully-connected filters per-tensor only), never
  4-bit activations or 2-bit anything;
* 16x8 (int16-activation) Conv/FC/ConvTranspose need an int64 bias or none
  (:func:`with_int64_bias` converts a graph to that scheme);
* ``io_dtype="float32"`` adds a Quantize after each integer graph input and a
  Dequantize before each integer graph output (float model I/O).

Every failure is a :class:`~qtc.errors.QtcError` naming the tensor or node.
"""
from __future__ import annotations

import numpy as np

from ...errors import QtcError, UnsupportedOpError, ValidationError
from ...ir.graph import Graph
from ...ir.validate import validate
from ...ops._util import int_range
from ...passes.layout import LAYOUT_OPS

IO_DTYPES = ("int8", "float32")
INT_ACT = ("int8", "int16", "uint8")
INT4_WEIGHT_OPS = ("Conv2D", "Conv1D", "FullyConnected")
# ops with a 16x8 (int16 activation) kernel in both TFLM and LiteRT's reference kernels
INT16_OPS = ("Conv2D", "Conv1D", "FullyConnected", "Add", "Sub", "Mul", "MaxPool", "AvgPool", "Mean",
             "GlobalAvgPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Pad", "Slice",
             "Split", "Relu", "Relu6", "Clip", "LeakyRelu", "Quantize", "Dequantize", "ConvTranspose2D")


def prepare(graph: Graph, io_dtype: str = "int8") -> Graph:
    """A checked, channels-last copy of ``graph`` ready for :class:`~.lower.Lowering`."""
    if io_dtype not in IO_DTYPES:
        raise QtcError(f"unknown io_dtype {io_dtype!r}", where="compile_tflite", hint=f"use one of {IO_DTYPES}")
    validate(graph)
    g = graph.copy()
    if any(n.op in LAYOUT_OPS and not n.attr("channels_last", False) and _rank(g, n) >= 3 for n in g.nodes):
        from ...passes import to_channels_last

        g = to_channels_last(g)
    check_tensors(g)
    check_ops(g)
    if io_dtype == "float32":
        g = float_io(g)
    return g


def _rank(g: Graph, n) -> int:
    return len(g.tensors[n.inputs[0]].shape)


def _weight_uses(g: Graph) -> dict[str, list]:
    uses: dict[str, list] = {}
    for n in g.nodes:
        for k, i in enumerate(n.inputs):
            if i:
                uses.setdefault(i, []).append((n, k))
    return uses


def check_tensors(g: Graph) -> None:
    uses = _weight_uses(g)
    for name, t in g.tensors.items():
        where = f"tensor {name!r}"
        if t.dtype in INT_ACT and t.quant is None:
            raise ValidationError(f"{t.dtype} tensor has no quant params", where=where,
                                  hint="re-run 'qtc quantize': every integer tensor needs a scale and zero point")
        q = t.quant
        if q is None or t.dtype not in INT_ACT:
            continue
        if not np.all(np.isfinite(q.scale)) or not np.all(q.scale > 0):
            raise ValidationError("quant scale must be finite and positive", where=where,
                                  hint="recalibrate; a zero or NaN scale comes from an empty calibration range")
        lo, hi = int_range(t.dtype)
        if q.zero_point.min() < lo or q.zero_point.max() > hi:
            raise ValidationError(f"zero point outside the {t.dtype} range", where=where, hint="recalibrate")
        if t.dtype == "int16" and not t.is_const and np.any(q.zero_point != 0):
            raise UnsupportedOpError("int16 activation with a non-zero zero point: TFLite's 16x8 kernels need "
                                     "symmetric int16 activations", where=where,
                                     hint="quantize int16 layers symmetrically (zero point 0)")
        if q.bits == 2:
            raise UnsupportedOpError("2-bit values have no TFLite kernel in TFLM or LiteRT", where=where,
                                     hint="quantize with wbits=4 or 8 for the TFLite back end")
        if q.bits == 4:
            readers = uses.get(name, [])
            ok = t.is_const and readers and all(n.op in INT4_WEIGHT_OPS and k == 1 for n, k in readers)
            if ok and q.per_channel and any(n.op == "FullyConnected" for n, _ in readers):
                raise UnsupportedOpError("per-channel INT4 FULLY_CONNECTED weights: TFLM runs INT4 fully-connected "
                                         "filters only per-tensor", where=where,
                                         hint="quantize with per_channel=False, or keep dense weights 8-bit")
            if not ok:
                what = "4-bit activations" if not t.is_const else \
                    f"a 4-bit constant read by {sorted({n.op for n, _ in readers})}"
                raise UnsupportedOpError(f"{what}: packed INT4 runs on TFLM and LiteRT only as the weight of "
                                         "CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED", where=where,
                                         hint="keep this tensor 8-bit (wbits=4 applies to conv/dense weights; "
                                              "abits must be 8)")


WEIGHTED = ("Conv2D", "Conv1D", "FullyConnected", "ConvTranspose2D")


def check_ops(g: Graph) -> None:
    for n in g.nodes:
        out = g.tensors[n.outputs[0]]
        x = g.tensors[n.inputs[0]]
        if n.op in WEIGHTED and x.dtype == "int16" and x.quant is not None:
            b = g.tensors[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else None
            if b is not None and b.dtype != "int64":
                raise UnsupportedOpError(f"16x8 {n.op} has bias of type {b.dtype}: TFLite's int16-activation "
                                         "kernels need an int64 bias (LiteRT rejects others, TFLM misreads them)",
                                         where=f"node {n.name}",
                                         hint="convert the graph with qtc.backends.tflite.with_int64_bias(graph) "
                                              "(the TFLite 16x8 scheme), or keep this layer int8")
        if n.op in ("Add", "Sub", "Mul", "MatMul", "Concat"):
            kinds = {g.tensors[i].dtype for i in n.inputs if g.tensors[i].quant is not None}
            if len(kinds) > 1:
                raise UnsupportedOpError(f"{n.op} mixes {' and '.join(sorted(kinds))} inputs; TFLite needs one type",
                                         where=f"node {n.name}",
                                         hint="give every input (and constant operand) the same integer type")
        if out.dtype == "int16" and out.quant is not None and n.op not in INT16_OPS:
            raise UnsupportedOpError(f"{n.op} with int16 activations has no 16x8 kernel in TFLM and LiteRT",
                                     where=f"node {n.name}", hint="keep this layer int8 (leave it out of int16=[...])")


def float_io(g: Graph) -> Graph:
    """Float32 model I/O: Quantize after each integer input, Dequantize before each integer output."""
    g = g.copy()
    head, inputs = [], []
    for name in g.inputs:
        t = g.tensors[name]
        if t.quant is None or t.dtype not in INT_ACT:
            inputs.append(name)
            continue
        f = g.unique_name(f"{name}/float")
        g.add_tensor(f, t.shape, "float32")
        head.append(_node(g, "Quantize", [f], [name], f"{name}/quantize", dtype=t.dtype))
        inputs.append(f)
    outputs = []
    for name in g.outputs:
        t = g.tensors[name]
        if t.quant is None or t.dtype not in INT_ACT:
            outputs.append(name)
            continue
        f = g.unique_name(f"{name}/float")
        g.add_tensor(f, t.shape, "float32")
        g.nodes.append(_node(g, "Dequantize", [name], [f], f"{name}/dequantize"))
        outputs.append(f)
    g.nodes = head + g.nodes
    g.inputs, g.outputs = inputs, outputs
    g.metadata["io_dtype"] = "float32"
    return g


def _node(g: Graph, op: str, ins, outs, name: str, **attrs):
    from ...ir.graph import Node

    return Node(op, g.unique_node_name(name), list(ins), list(outs), dict(attrs))


def with_int64_bias(graph: Graph) -> Graph:
    """A copy of ``graph`` in TFLite's 16x8 scheme: the bias of every int16-input Conv/FC/ConvTranspose
    widened to int64.

    The integers are unchanged, but the meaning is: an int64 bias selects
    TFLite's int64-accumulator kernels (a 16-bit rounded multiplier, one rounding
    shift), so outputs can differ by an LSB from the int32-bias graph; the
    reference interpreter runs the new graph exactly as TFLM and LiteRT do.
    """
    g = graph.copy()
    for n in g.nodes:
        x = g.tensors[n.inputs[0]]
        if n.op in WEIGHTED and x.dtype == "int16" and x.quant is not None and len(n.inputs) > 2 and n.inputs[2]:
            b = g.tensors[n.inputs[2]]
            b.data, b.dtype = b.data.astype(np.int64), "int64"
    return g
