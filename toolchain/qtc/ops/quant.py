"""Quantize / Dequantize: the bridges between float and integer regions.

Quantize also requantizes int→int (TFLite QUANTIZE with an integer input,
e.g. int8→int8 with new params, as the converter emits for Concat inputs).
"""
from __future__ import annotations

import numpy as np

from ._util import int_range
from .registry import OpDef, TensorSpec, register


@register
class Quantize(OpDef):
    name = "Quantize"
    ATTRS = {"dtype": "int8"}

    @classmethod
    def infer(cls, node, ins):
        return [TensorSpec(ins[0].shape, cls.attr(node, "dtype"))]

    @classmethod
    def run_float(cls, node, xs):  # a float graph treats Quantize as identity
        return [xs[0].astype(np.float32)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        oq = ctx.out_q(0)
        lo, hi = int_range(ctx.out_dtype(0))
        lo, hi = max(lo, oq.qmin), min(hi, oq.qmax)
        src = ctx.in_tensors[0]
        if src is not None and src.quant is not None and src.dtype != "float32":
            # int → int requantize (TFLite Requantize): MBQM(x - zp_in, M, s) + zp_out
            iq = ctx.in_q(0)
            num = ctx.numerics
            m, s = num.quantize_multiplier(float(np.float64(np.float32(iq.scale[0])) / np.float64(np.float32(oq.scale[0]))))
            y = num.multiply_by_quantized_multiplier(xs[0].astype(np.int64) - int(iq.zero_point[0]), m, s)
            return [np.clip(y + int(oq.zero_point[0]), lo, hi)]
        return [np.clip(oq.quantize(xs[0]), lo, hi)]


@register
class Dequantize(OpDef):
    name = "Dequantize"

    @classmethod
    def infer(cls, node, ins):
        return [TensorSpec(ins[0].shape, "float32")]

    @classmethod
    def run_float(cls, node, xs):
        return [xs[0].astype(np.float32)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        t = ctx.in_tensors[0]
        if t is None or t.quant is None:
            return [xs[0].astype(np.float32)]
        return [t.quant.dequantize(xs[0])]
