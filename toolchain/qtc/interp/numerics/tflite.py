"""TFLite / TFLM / ESP-NN integer arithmetic, bit for bit.

Sources (facts, re-implemented): tensorflow ``lite/kernels/internal/
quantization_util.cc`` (QuantizeMultiplier), ``common.h``
(MultiplyByQuantizedMultiplier, default double rounding: gemmlowp
SaturatingRoundingDoublingHighMul then RoundingDivideByPOT), and
``kernel_util.cc`` (effective scale computed in double from float32 scales).

All functions are vectorised over numpy int64 arrays; values are kept in the
int32 range exactly as the C code would.
"""
from __future__ import annotations

import math

import numpy as np

NAME = "tflite"

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real = M * 2^(shift - 31), M in [2^30, 2^31)."""
    real = float(real)
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(_round_away_scalar(q * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q_fixed = 0
    # TFLite (non single-rounding) caps at shift 30 by construction of inputs
    return q_fixed, shift


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int]:
    m, s = quantize_multiplier(real)
    return m, s


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ms, ss = zip(*(quantize_multiplier(float(r)) for r in np.asarray(reals, dtype=np.float64).reshape(-1)))
    return np.asarray(ms, dtype=np.int64), np.asarray(ss, dtype=np.int64)


def _round_away_scalar(x: float) -> float:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (as int64 arrays)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b  # fits in int64: |a*b| <= 2^62
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    # C++ integer division truncates toward zero
    num = ab + nudge
    q = np.where(num >= 0, num >> 31, -((-num) >> 31))
    return np.where(overflow, INT32_MAX, q)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: round half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> exponent) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray | int,
                                     shift: np.ndarray | int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding, the default build)."""
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    xl = _wrap_int32(x * (np.int64(1) << left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xl, multiplier), right)


def multiply_by_quantized_multiplier_int64(x: np.ndarray, multiplier: np.ndarray | int,
                                           shift: np.ndarray | int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier(int64_t x, ...): the 16x8 kernels' int64-accumulator overload.

    The multiplier is rounded to 16 bits (0x7FFF when it would overflow), then
    one rounding shift: (x * M16 + 2^(14 - shift)) >> (15 - shift).
    """
    x = np.asarray(x, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    total = 15 - np.asarray(shift, dtype=np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    return (x * reduced + (np.int64(1) << (total - 1))) >> total


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    """Emulate int32 wrap-around (what C does on overflow of x << left_shift)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturate(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.clip(x, lo, hi)


def effective_scale(in_scale: float, w_scales: np.ndarray, out_scale: float) -> np.ndarray:
    """input_scale * filter_scale / output_scale in double, from float32 values."""
    return (np.float64(np.float32(in_scale)) * np.asarray(w_scales, dtype=np.float32).astype(np.float64)
            / np.float64(np.float32(out_scale)))


def quantized_activation_range(activation: str, scale: float, zero_point: int,
                               qmin: int, qmax: int) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for fused activations."""

    def q(v: float) -> int:
        return int(zero_point + _round_away_scalar(float(np.float32(v) / np.float32(scale))))

    if activation in (None, "", "none"):
        return qmin, qmax
    if activation == "relu":
        return max(qmin, q(0.0)), qmax
    if activation == "relu6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if activation == "relu_n1_to_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    raise ValueError(f"fused activation {activation!r} has no integer range")


# ---------------------------------------------------------------------------
# Helpers for the non-linear integer kernels (Softmax / Logistic / Tanh /
# HardSwish / Add).  Sources (facts, re-implemented): tensorflow
# ``quantization_util.cc`` (QuantizeMultiplierSmallerThanOneExp,
# QuantizeMultiplierGreaterThanOne, CalculateInputRadius,
# PreprocessSoftmaxScaling), ``common.h`` (GetReciprocal,
# DownScaleInt32ToInt16Multiplier) and gemmlowp ``fixedpoint/fixedpoint.h``
# (exp_on_negative_values, logistic, tanh, one_over_one_plus_x_for_x_in_0_1).
# Fixed-point values are int64 arrays holding the raw int32 (or int16) value;
# ``integer_bits`` is gemmlowp's tIntegerBits (Q<integer_bits>.<31-integer_bits>).
# ---------------------------------------------------------------------------

INT16_MIN = -(1 << 15)
INT16_MAX = (1 << 15) - 1


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement int32 wrap-around (C's signed overflow on real hardware)."""
    return _wrap_int32(np.asarray(x, dtype=np.int64))


def wrap_int16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 15)) & 0xFFFF) - (1 << 15)


def quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: same (M, exponent) as QuantizeMultiplier, exponent <= 0."""
    if not 0.0 <= float(real) < 1.0:
        raise ValueError(f"multiplier {real} is not in [0, 1)")
    return quantize_multiplier(real)


def quantize_multiplier_greater_than_one(real: float) -> tuple[int, int]:
    """QuantizeMultiplierGreaterThanOne: (M, left_shift >= 0)."""
    if float(real) <= 1.0:
        raise ValueError(f"multiplier {real} is not > 1")
    return quantize_multiplier(real)


def multiply_by_quantized_multiplier_greater_than_one(x: np.ndarray, multiplier: int, left_shift: int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul(x * 2^left_shift, M) (int32 wrap on the shift)."""
    x = np.asarray(x, dtype=np.int64)
    return saturating_rounding_doubling_high_mul(_wrap_int32(x * (1 << int(left_shift))), multiplier)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """CalculateInputRadius: largest |input| that cannot overflow the rescaling."""
    max_input_rescaled = (1.0 * ((1 << input_integer_bits) - 1) * float(1 << (total_signed_bits - input_integer_bits))
                          / float(2.0 ** input_left_shift))
    return int(math.floor(max_input_rescaled))


def frexp_multiplier(real: float) -> tuple[int, int]:
    """frexp(real) → (int32(round(q * 2^31)), exponent), as Logistic/Tanh Prepare do (no 2^31 fix-up)."""
    q, shift = math.frexp(float(real))
    m = int(_round_away_scalar(q * (1 << 31)))
    return int(wrap_int32(m)), shift


def down_scale_int32_to_int16_multiplier(m: int) -> int:
    """DownScaleInt32ToInt16Multiplier: round a Q31 multiplier to Q15."""
    if m >= INT32_MAX - (1 << 15):
        return INT16_MAX
    return (int(m) + (1 << 15)) >> 16


def saturating_rounding_doubling_high_mul_int16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul for int16."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    num = ab + nudge
    q = np.where(num >= 0, num >> 15, -((-num) >> 15))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, wrap_int16(q))


def saturating_doubling_high_mul_int16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TFLite's SaturatingDoublingHighMul (int16, truncating toward zero; ARM SQDMULH)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    q = np.where(ab >= 0, ab >> 15, -((-ab) >> 15))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, wrap_int16(q))


def saturating_left_shift_int16(x: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.int64) * (1 << int(amount)), INT16_MIN, INT16_MAX)


def saturating_rounding_multiply_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> on int32 raw values."""
    x = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    y = _wrap_int32(x << exponent)
    y = np.where(x > threshold, INT32_MAX, y)
    return np.where(x < -threshold, INT32_MIN, y)


def fp_rescale(x: np.ndarray, src_integer_bits: int, dst_integer_bits: int) -> np.ndarray:
    """gemmlowp Rescale<dst>(FixedPoint<int32, src>)."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits)


def rounding_half_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingHalfSum (int32): (a + b ± 1) / 2 truncated toward zero."""
    s = np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)
    num = np.where(s >= 0, s + 1, s - 1)
    return np.where(num >= 0, num // 2, -((-num) // 2))


def _fp_mul(a, b):
    return saturating_rounding_doubling_high_mul(a, b)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term = 1895147668          # exp(-1/8)
    constant_1_over_3 = 715827883
    x = _wrap_int32(np.asarray(a, dtype=np.int64) + (1 << 28))
    x2 = _fp_mul(x, x)
    x3 = _fp_mul(x2, x)
    x4 = _fp_mul(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    poly = saturating_rounding_multiply_by_pot(
        _wrap_int32(_fp_mul(_wrap_int32(x4_over_4 + x3), constant_1_over_3) + x2), -1)
    return _wrap_int32(constant_term + _fp_mul(constant_term, _wrap_int32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: Q<integer_bits> in (a <= 0), Q0.31 out."""
    a = np.asarray(a, dtype=np.int64)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _wrap_int32((a & mask) - one_quarter)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        fp_rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = _wrap_int32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where((remainder & bit) != 0, _fp_mul(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _newton_reciprocal_half(a: np.ndarray) -> np.ndarray:
    """The Newton-Raphson loop shared by 1/(1+x) and (1-x)/(1+x): returns x ≈ 1/half_denominator in Q2.29."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    constant_48_over_17 = 1515870810
    constant_neg_32_over_17 = -1010580540
    one_q2 = 1 << 29
    x = _wrap_int32(constant_48_over_17 + _fp_mul(half_denominator, constant_neg_32_over_17))
    for _ in range(3):
        half_denominator_times_x = _fp_mul(half_denominator, x)
        one_minus = _wrap_int32(one_q2 - half_denominator_times_x)
        x = _wrap_int32(x + fp_rescale(_fp_mul(x, one_minus), 4, 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp: 1 / (1 + a) for a in (0, 1), Q0.31 in and out."""
    x = _newton_reciprocal_half(a)
    return fp_rescale(x, 1, 0)  # ExactMulByPot<-1> makes it Q1.30, then Rescale<0>


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp: (1 - a) / (1 + a) for a in (0, 1), Q0.31 in and out."""
    x = _newton_reciprocal_half(a)
    return fp_rescale(_wrap_int32(x - (1 << 29)), 2, 0)


def fixed_point_logistic(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp logistic: Q<integer_bits> in, Q0.31 out."""
    a = np.asarray(a, dtype=np.int64)
    positive = a > 0
    abs_input = np.where(positive, a, _wrap_int32(-a))
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(_wrap_int32(-abs_input), integer_bits))
    result_if_negative = _wrap_int32(INT32_MAX - result_if_positive)
    out = np.where(positive, result_if_positive, result_if_negative)
    return np.where(a == 0, 1 << 30, out)


def fixed_point_tanh(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp tanh: Q<integer_bits> in, Q0.31 out."""
    a = np.asarray(a, dtype=np.int64)
    negative = a < 0
    n = np.where(negative, a, _wrap_int32(-a))
    # ExactMulByPot<1>: the same raw value read with one more integer bit
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    out = np.where(negative, _wrap_int32(-t), t)
    return np.where(a == 0, 0, out)


def count_leading_zeros32(x: np.ndarray) -> np.ndarray:
    """CountLeadingZeros of the value as a uint32 (32 for zero)."""
    v = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    bits = np.zeros(v.shape, dtype=np.int64)
    for s in (16, 8, 4, 2, 1):
        big = v >= (1 << s)
        bits += np.where(big, s, 0)
        v = np.where(big, v >> s, v)
    return 32 - (bits + (v >= 1))


def get_reciprocal(x: np.ndarray, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite GetReciprocal: (1/x as Q0.31 scaled into [0.5, 1), num_bits_over_unit)."""
    x = np.asarray(x, dtype=np.int64)
    headroom_plus_one = count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x & 0xFFFFFFFF) << headroom_plus_one) & 0xFFFFFFFF
    shifted_sum_minus_one = _wrap_int32(shifted - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit
