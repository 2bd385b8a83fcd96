"""Activations: Relu, Relu6, Clip, LeakyRelu, HardSwish, HardSigmoid, Sigmoid, Tanh,
Gelu, Silu, Softmax.

Float semantics follow ``torch.nn.functional`` (computed in float64, returned
as float32).  Integer semantics follow the TFLM reference kernels; where
LiteRT's reference kernel (BUILTIN_REF) differs, the op's docstring says how.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import QtcError
from ._util import lut_int, norm_axis, out_range, requantize, round_half_away
from .registry import OpDef, TensorSpec, register

_erf = np.vectorize(math.erf, otypes=[np.float64])


class _Unary(OpDef):
    NUM_INPUTS = (1, 1)

    @classmethod
    def f(cls, node, x: np.ndarray) -> np.ndarray:
        """The function in float64."""
        raise TypeError(f"{cls.__name__} is abstract: a subclass defines this")

    @classmethod
    def infer(cls, node, ins):
        return [TensorSpec(ins[0].shape, ins[0].dtype if ins[0].quant is None else "float32")]

    @classmethod
    def run_float(cls, node, xs):
        return [cls.f(node, xs[0].astype(np.float64)).astype(np.float32)]


def _relu_x(ctx, x: np.ndarray, act_min: float | None, act_max: float | None) -> np.ndarray:
    """TFLM ReluQuantized / LiteRT QuantizedReluX: requantize in→out, clamp to the quantized [min, max].

    The requantization is exact identity when in/out params are equal.  The
    multiplier is in_scale/out_scale in double (TFLM; LiteRT divides in float32
    first, which can differ by one multiplier LSB when the params differ).
    """
    iq, oq = ctx.in_q(0), ctx.out_q(0)
    lo, hi = out_range(ctx)
    so, zo = np.float32(oq.scale[0]), int(oq.zero_point[0])
    if act_min is not None:
        lo = max(lo, zo + int(round_half_away(np.float32(act_min) / so)))
    if act_max is not None and math.isfinite(act_max):
        hi = min(hi, zo + int(round_half_away(np.float32(act_max) / so)))
    y = requantize(ctx.numerics, x, iq, oq, -(1 << 40), 1 << 40)
    return np.clip(y, lo, hi)


@register
class Relu(_Unary):
    """max(x, 0).  Integer: TFLM ReluQuantized (requantize, clamp at the output's zero)."""

    name = "Relu"

    @classmethod
    def f(cls, node, x):
        return np.maximum(x, 0.0)

    @classmethod
    def run_int(cls, node, xs, ctx):
        return [_relu_x(ctx, xs[0], 0.0, None)]


@register
class Relu6(_Unary):
    """min(max(x, 0), 6).

    Integer: LiteRT QuantizedReluX(0, 6) — requantize, clamp to [q(0), q(6)].
    TFLM's Relu6 clamps in the input domain and ignores the output params; the
    two agree whenever in/out params are equal (the only case the converter
    emits).
    """

    name = "Relu6"

    @classmethod
    def f(cls, node, x):
        return np.clip(x, 0.0, 6.0)

    @classmethod
    def run_int(cls, node, xs, ctx):
        return [_relu_x(ctx, xs[0], 0.0, 6.0)]


@register
class Clip(_Unary):
    """clamp(x, min, max) (``None`` = unbounded).  Integer: as Relu6 with the given bounds
    (TFLite RELU_N1_TO_1 / RELU_0_TO_1 are Clip(-1, 1) / Clip(0, 1))."""

    name = "Clip"
    ATTRS = {"min": None, "max": None}

    @classmethod
    def f(cls, node, x):
        lo, hi = cls.attr(node, "min"), cls.attr(node, "max")
        if lo is not None:
            x = np.maximum(x, float(lo))
        if hi is not None:
            x = np.minimum(x, float(hi))
        return x

    @classmethod
    def run_int(cls, node, xs, ctx):
        lo, hi = cls.attr(node, "min"), cls.attr(node, "max")
        return [_relu_x(ctx, xs[0], None if lo is None else float(lo), None if hi is None else float(hi))]


@register
class LeakyRelu(_Unary):
    """x if x > 0 else alpha·x.

    Integer (TFLM leaky_relu_common.cc + reference leaky_relu.h, LiteRT the
    same): two multipliers computed in float32, s_in·alpha/s_out and
    s_in/s_out; x - zp_in >= 0 uses the identity one, else the alpha one
    (negative alpha: multiplier of |alpha|, result negated); + zp_out, saturate.
    """

    name = "LeakyRelu"
    ATTRS = {"alpha": 0.01}

    @classmethod
    def f(cls, node, x):
        return np.where(x > 0, x, x * float(cls.attr(node, "alpha")))

    @classmethod
    def run_int(cls, node, xs, ctx):
        num = ctx.numerics
        iq, oq = ctx.in_q(0), ctx.out_q(0)
        si, so = np.float32(iq.scale[0]), np.float32(oq.scale[0])
        alpha = np.float32(cls.attr(node, "alpha"))
        m_alpha, s_alpha = num.quantize_multiplier(abs(float(np.float32(si * alpha / so))))
        m_id, s_id = num.quantize_multiplier(float(np.float32(si / so)))
        v = xs[0].astype(np.int64) - int(iq.zero_point[0])
        pos = num.multiply_by_quantized_multiplier(v, m_id, s_id)
        neg = num.multiply_by_quantized_multiplier(v, m_alpha, s_alpha)
        if alpha < 0:
            neg = -neg
        y = np.where(v >= 0, pos, neg) + int(oq.zero_point[0])
        lo, hi = out_range(ctx)
        return [np.clip(y, lo, hi)]


@register
class HardSwish(_Unary):
    """x · relu6(x + 3) / 6.

    Integer: TFLM/LiteRT reference HardSwish (int16 fixed point): the input on a
    2^-7-finer scale, a "reluish" multiplier mapping [-3, 3] to [0, 1] and an
    output multiplier, both QuantizeMultiplier results rounded to Q15.
    """

    name = "HardSwish"

    @classmethod
    def f(cls, node, x):
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0

    @classmethod
    def run_int(cls, node, xs, ctx):
        num = ctx.numerics
        iq, oq = ctx.in_q(0), ctx.out_q(0)
        if ctx.out_dtype(0) != "int8":
            raise QtcError(f"HardSwish has an integer kernel for int8 only, got {ctx.out_dtype(0)}",
                           where=f"node {node.name}", hint="quantize this layer to int8 or keep it in float")
        hires_input_scale = np.float32(1.0 / 128.0) * np.float32(iq.scale[0])
        reluish_scale = np.float32(3.0 / 32768.0)
        m_out, e_out = num.quantize_multiplier(float(np.float32(hires_input_scale / np.float32(oq.scale[0]))))
        m_rel, e_rel = num.quantize_multiplier(float(np.float32(hires_input_scale / reluish_scale)))
        if e_out > 0:
            raise QtcError("HardSwish output scale is too small for TFLite's int8 kernel",
                           where=f"node {node.name}", hint="recalibrate: the output scale must be >= input scale / 128")
        m_out16 = num.down_scale_int32_to_int16_multiplier(m_out)
        m_rel16 = num.down_scale_int32_to_int16_multiplier(m_rel)

        v = num.wrap_int16(xs[0].astype(np.int64) - int(iq.zero_point[0]))
        hires = num.wrap_int16(v * 128)
        preshift_out = num.saturating_rounding_doubling_high_mul_int16(hires, m_out16)
        reluish = hires
        if e_rel > 0:
            reluish = num.saturating_left_shift_int16(reluish, e_rel - 1)
        reluish = num.saturating_rounding_doubling_high_mul_int16(reluish, m_rel16)
        if e_rel > 0:
            reluish = num.saturating_left_shift_int16(reluish, 1)
        if e_rel < 0:
            reluish = num.rounding_divide_by_pot(reluish, -e_rel)
        reluish = (reluish + (1 << 15)) >> 1
        preshift = num.saturating_doubling_high_mul_int16(reluish, preshift_out)
        y = num.rounding_divide_by_pot(preshift, -e_out)
        y = num.wrap_int16(y + int(oq.zero_point[0]))
        lo, hi = out_range(ctx)
        return [np.clip(y, lo, hi)]


class _LutUnary(_Unary):
    """Integer semantics: the 256-entry table of docs/ir.md (float64, round half away)."""

    @classmethod
    def run_int(cls, node, xs, ctx):
        lo, hi = out_range(ctx)
        return [lut_int(xs[0], ctx.in_q(0), ctx.out_q(0), lambda r: cls.f(node, r), lo, hi)]


@register
class HardSigmoid(_LutUnary):
    """clip(alpha·x + beta, 0, 1) (torch: alpha = 1/6, beta = 0.5). Integer: LUT."""

    name = "HardSigmoid"
    ATTRS = {"alpha": 1.0 / 6.0, "beta": 0.5}

    @classmethod
    def f(cls, node, x):
        return np.clip(float(cls.attr(node, "alpha")) * x + float(cls.attr(node, "beta")), 0.0, 1.0)


@register
class Gelu(_LutUnary):
    """x·Φ(x) (approximate="none") or the tanh approximation ("tanh"). Integer: LUT
    (LiteRT's GELU int8 kernel is also a table, built in float32)."""

    name = "Gelu"
    ATTRS = {"approximate": "none"}

    @classmethod
    def f(cls, node, x):
        approx = cls.attr(node, "approximate")
        if approx == "tanh":
            return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
        if approx in ("none", "", None):
            return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
        raise ValueError(f"Gelu approximate must be 'none' or 'tanh', got {approx!r}")


@register
class Silu(_LutUnary):
    """x·sigmoid(x). Integer: LUT."""

    name = "Silu"

    @classmethod
    def f(cls, node, x):
        return x / (1.0 + np.exp(-x))


def _check_fixed_output(ctx, node, op: str, scale: float, zp: int) -> None:
    oq = ctx.out_q(0)
    if ctx.out_dtype(0) != "int8" or np.float32(oq.scale[0]) != np.float32(scale) or int(oq.zero_point[0]) != zp:
        raise QtcError(f"{op} integer output must be int8 with scale {scale:g} and zero point {zp}, got "
                       f"{ctx.out_dtype(0)} {oq.short()}", where=f"node {node.name}",
                       hint=f"give the output TFLite's fixed params ({scale:g}, {zp}) when quantizing")


def _logistic_tanh_input(num, x, iq):
    """Prepare step shared by TFLM Logistic/Tanh int8: Q4.27 input multiplier and radius."""
    m, left_shift = num.frexp_multiplier(float(np.float32(iq.scale[0])) * float(1 << 27))
    radius = num.calculate_input_radius(4, left_shift, 31)
    v = np.asarray(x, dtype=np.int64) - int(iq.zero_point[0])
    inside = (v > -radius) & (v < radius)
    v_in = np.where(inside, v, 0)
    q4 = num.multiply_by_quantized_multiplier(v_in, m, left_shift)
    return v, radius, q4


@register
class Sigmoid(_Unary):
    """1 / (1 + exp(-x)).

    Integer: TFLM reference_integer_ops::Logistic — input rescaled to Q4.27,
    gemmlowp fixed-point logistic, output Q0.31 → RoundingDivideByPOT(·, 23) - 128;
    inputs beyond the radius saturate to -128 / 127.  Output params are fixed
    (1/256, -128).  LiteRT's reference kernel instead looks the result up in a
    float32-built table (LUTPopulate); the two may differ by 1 on some entries
    (none seen in tests/test_ops_int.py).
    """

    name = "Sigmoid"

    @classmethod
    def f(cls, node, x):
        return 1.0 / (1.0 + np.exp(-x))

    @classmethod
    def run_int(cls, node, xs, ctx):
        num = ctx.numerics
        _check_fixed_output(ctx, node, "Sigmoid", 1.0 / 256.0, -128)
        v, radius, q4 = _logistic_tanh_input(num, xs[0], ctx.in_q(0))
        q0 = num.fixed_point_logistic(q4, 4)
        y = np.clip(num.rounding_divide_by_pot(q0, 23) - 128, -128, 127)
        y = np.where(v <= -radius, -128, np.where(v >= radius, 127, y))
        return [y]


@register
class Tanh(_Unary):
    """tanh(x).

    Integer: TFLM reference_integer_ops::Tanh — Q4.27 input, gemmlowp
    fixed-point tanh, RoundingDivideByPOT(·, 24), saturate; output params fixed
    (1/128, 0).  LiteRT's reference kernel uses a float32-built table instead
    (may differ by 1 on some entries; none seen in tests/test_ops_int.py).
    """

    name = "Tanh"

    @classmethod
    def f(cls, node, x):
        return np.tanh(x)

    @classmethod
    def run_int(cls, node, xs, ctx):
        num = ctx.numerics
        _check_fixed_output(ctx, node, "Tanh", 1.0 / 128.0, 0)
        v, radius, q4 = _logistic_tanh_input(num, xs[0], ctx.in_q(0))
        q0 = num.fixed_point_tanh(q4, 4)
        y = np.clip(num.rounding_divide_by_pot(q0, 24), -128, 127)
        y = np.where(v <= -radius, -128, np.where(v >= radius, 127, y))
        return [y]


@register
class Softmax(_Unary):
    """softmax(beta·x) along ``axis``.

    Integer: TFLM / LiteRT reference_ops::Softmax (int8 → int8, identical in
    both): diffs to the row max are rescaled by beta·s_in into Q5.26, gemmlowp
    exp_on_negative_values, sum in Q12.19, GetReciprocal, output
    RoundingDivideByPOT + (-128); diffs below -radius give -128.  Output params
    fixed (1/256, -128).
    """

    name = "Softmax"
    ATTRS = {"axis": -1, "beta": 1.0}

    @classmethod
    def f(cls, node, x):
        axis = norm_axis(int(cls.attr(node, "axis")), x.ndim)
        z = float(cls.attr(node, "beta")) * x
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    @classmethod
    def run_int(cls, node, xs, ctx):
        num = ctx.numerics
        _check_fixed_output(ctx, node, "Softmax", 1.0 / 256.0, -128)
        iq = ctx.in_q(0)
        x = xs[0].astype(np.int64)
        axis = norm_axis(int(cls.attr(node, "axis")), x.ndim)
        x = np.moveaxis(x, axis, -1)
        real = min(float(np.float32(cls.attr(node, "beta"))) * float(np.float32(iq.scale[0])) * float(1 << 26),
                   float((1 << 31) - 1))
        m, left_shift = num.quantize_multiplier_greater_than_one(real)
        diff_min = -num.calculate_input_radius(5, left_shift, 31)

        diff = x - x.max(axis=-1, keepdims=True)
        used = diff >= diff_min
        scaled = num.multiply_by_quantized_multiplier_greater_than_one(np.where(used, diff, 0), m, left_shift)
        exps = num.exp_on_negative_values(scaled, 5)
        sum_of_exps = num.wrap_int32(np.where(used, num.fp_rescale(exps, 0, 12), 0).sum(axis=-1, keepdims=True))
        shifted_scale, bits_over_unit = num.get_reciprocal(sum_of_exps, 12)
        exponent = bits_over_unit + 31 - 8
        y = num.rounding_divide_by_pot(num.saturating_rounding_doubling_high_mul(shifted_scale, exps), exponent)
        y = np.where(used, np.clip(y - 128, -128, 127), -128)
        return [np.moveaxis(y, -1, axis)]
