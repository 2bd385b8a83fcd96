"""Binary elementwise ops with numpy broadcasting: Add, Sub, Mul, Div.

``activation`` is a fused clamp (none/relu/relu6/relu_n1_to_1), as TFLite
fuses it into ADD/SUB/MUL.

Integer semantics (TFLite/TFLM reference ``integer_ops/add.h``, ``sub.h``,
``mul.h``):

* Add/Sub: both inputs are rescaled to a common scale 2·max(s1, s2) after a
  left shift of 20 bits (15 for int16), each with its own multiplier
  (QuantizeMultiplierSmallerThanOneExp), summed (or subtracted) in int32, then
  rescaled by 2·max(s1, s2) / (2^20 · s_out), + zp_out, clamped to the fused
  activation range.  Add computes the multipliers in double (TFLM add_common.cc
  and LiteRT add.cc agree); Sub follows TFLM sub_common.cc, which divides the
  scales in float32 before widening (LiteRT's sub.cc widens first; the two can
  differ by one multiplier LSB).
* Mul: MBQM((x1 - zp1)·(x2 - zp2), s1·s2/s_out) + zp_out, clamped.
* Div: no integer semantics (keep it in float).
"""
from __future__ import annotations

import numpy as np

from ._util import FUSED_ACTIVATIONS, clamp_act_float, out_range
from .registry import OpDef, TensorSpec, register


def _broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
    except ValueError:
        raise ValueError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast") from None


class _Binary(OpDef):
    NUM_INPUTS = (2, 2)
    ATTRS = {"activation": "none"}

    @classmethod
    def fn(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise TypeError(f"{cls.__name__} is abstract: a subclass defines this")

    @classmethod
    def infer(cls, node, ins):
        act = cls.attr(node, "activation")
        if act not in FUSED_ACTIVATIONS:
            raise ValueError(f"unknown fused activation {act!r} (expected one of {FUSED_ACTIVATIONS})")
        return [TensorSpec(_broadcast_shape(ins[0].shape, ins[1].shape), ins[0].dtype if ins[0].quant is None
                           else "float32")]

    @classmethod
    def run_float(cls, node, xs):
        a, b = xs[0].astype(np.float32), xs[1].astype(np.float32)
        return [clamp_act_float(cls.fn(a, b).astype(np.float32), cls.attr(node, "activation"))]

    @classmethod
    def _act_range(cls, node, ctx) -> tuple[int, int]:
        oq = ctx.out_q(0)
        lo, hi = out_range(ctx)
        return ctx.numerics.quantized_activation_range(cls.attr(node, "activation"), float(oq.scale[0]),
                                                       int(oq.zero_point[0]), lo, hi)


class _AddSub(_Binary):
    SIGN = 1
    FLOAT32_MULTIPLIERS = False  # Sub divides the scales in float32 (TFLM sub_common.cc)

    @classmethod
    def multipliers(cls, s1: np.float32, s2: np.float32, so: np.float32, left_shift: int):
        if cls.FLOAT32_MULTIPLIERS:
            twice_max = np.float32(2) * max(s1, s2)
            m1 = float(np.float32(s1 / twice_max))
            m2 = float(np.float32(s2 / twice_max))
            mo = float(np.float32(twice_max / (np.float32(1 << left_shift) * so)))
        else:
            twice_max = 2.0 * float(max(s1, s2))
            m1 = float(s1) / twice_max
            m2 = float(s2) / twice_max
            mo = twice_max / ((1 << left_shift) * float(so))
        return m1, m2, mo

    @classmethod
    def run_int(cls, node, xs, ctx):
        num = ctx.numerics
        q1, q2, oq = ctx.in_q(0), ctx.in_q(1), ctx.out_q(0)
        left_shift = 15 if ctx.out_dtype(0) == "int16" else 20
        s1, s2, so = np.float32(q1.scale[0]), np.float32(q2.scale[0]), np.float32(oq.scale[0])
        m1, m2, mo = cls.multipliers(s1, s2, so, left_shift)
        (M1, S1), (M2, S2), (Mo, So) = (num.quantize_multiplier_smaller_than_one_exp(m) for m in (m1, m2, mo))
        a = xs[0].astype(np.int64) - int(q1.zero_point[0])
        b = xs[1].astype(np.int64) - int(q2.zero_point[0])
        sa = num.multiply_by_quantized_multiplier(num.wrap_int32(a << left_shift), M1, S1)
        sb = num.multiply_by_quantized_multiplier(num.wrap_int32(b << left_shift), M2, S2)
        raw = num.wrap_int32(sa + cls.SIGN * sb)
        y = num.multiply_by_quantized_multiplier(raw, Mo, So) + int(oq.zero_point[0])
        lo, hi = cls._act_range(node, ctx)
        return [np.clip(y, lo, hi)]


@register
class Add(_AddSub):
    name = "Add"

    @classmethod
    def fn(cls, a, b):
        return a + b


@register
class Sub(_AddSub):
    name = "Sub"
    SIGN = -1
    FLOAT32_MULTIPLIERS = True

    @classmethod
    def fn(cls, a, b):
        return a - b


@register
class Mul(_Binary):
    name = "Mul"

    @classmethod
    def fn(cls, a, b):
        return a * b

    @classmethod
    def run_int(cls, node, xs, ctx):
        num = ctx.numerics
        q1, q2, oq = ctx.in_q(0), ctx.in_q(1), ctx.out_q(0)
        real = (float(np.float32(q1.scale[0])) * float(np.float32(q2.scale[0]))
                / float(np.float32(oq.scale[0])))
        m, s = num.quantize_multiplier(real)
        a = xs[0].astype(np.int64) - int(q1.zero_point[0])
        b = xs[1].astype(np.int64) - int(q2.zero_point[0])
        y = num.multiply_by_quantized_multiplier(num.wrap_int32(a * b), m, s) + int(oq.zero_point[0])
        lo, hi = cls._act_range(node, ctx)
        return [np.clip(y, lo, hi)]

    @classmethod
    def macs(cls, node, ins, outs):
        return int(np.prod(outs[0].shape))


@register
class Div(_Binary):
    """a / b (float only: TFLite's int8 DIV is not part of qtc's integer subset)."""

    name = "Div"

    @classmethod
    def fn(cls, a, b):
        return a / b
