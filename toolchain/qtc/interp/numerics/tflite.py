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
