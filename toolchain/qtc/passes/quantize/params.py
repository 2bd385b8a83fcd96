"""From a real range to quantization parameters, and constant quantization.

* Asymmetric activations follow TFLite's converter (gemmlowp
  ``ChooseQuantizationParams``): the range is widened to contain 0,
  ``scale = (rmax - rmin) / (qmax - qmin)`` and the zero point is the
  rounded, clamped one of the two candidates (from min / from max) with the
  smaller error.
* Symmetric activations: ``scale = amax / qmax``, zero point 0 (TensorRT's
  ``amax / 127``).
* Weights: symmetric, narrow range ``[-(2^(b-1) - 1), 2^(b-1) - 1]``,
  per-channel along axis 0 or per-tensor.
* Power-of-two targets round every scale *up* to the next power of two
  (TI's ``2^ceil(log2(s))``; never clips more than the chosen range).
* Bias: ``round(b / (s_in * s_w[c]))`` (half away from zero), zero point 0,
  scales ``s_in * s_w[c]`` in float32 as TFLite stores them.
"""
from __future__ import annotations

import math

import numpy as np

from ...ir.tensor import QuantParams, _round_away


def pot_ceil(scale: np.ndarray | float) -> np.ndarray:
    """Smallest power of two >= scale (exact, via frexp)."""
    s = np.asarray(scale, dtype=np.float64)
    m, e = np.frexp(s)  # s = m * 2^e, m in [0.5, 1)
    e = np.where(m == 0.5, e - 1, e)
    return np.ldexp(1.0, e).astype(np.float64)


def is_pot(scale: np.ndarray | float) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float64)
    m, _ = np.frexp(s)
    return (m == 0.5) & (s > 0)


ROUNDINGS = ("half_away", "half_up", "half_even")


def round_with(x: np.ndarray, rounding: str = "half_away") -> np.ndarray:
    """Round to integers the target's way (used for constants: weights and biases).

    half_away: TFLite/C ``round``; half_up: ``floor(x + 0.5)`` (esp-ppq ROUND_HALF_UP);
    half_even: banker's rounding (ONNX QuantizeLinear, TensorRT, esp-ppq on P4).
    """
    x = np.asarray(x, dtype=np.float64)
    if rounding == "half_away":
        return _round_away(x)
    if rounding == "half_up":
        return np.floor(x + 0.5)
    if rounding == "half_even":
        return np.rint(x)
    raise ValueError(f"unknown rounding {rounding!r}; use one of {ROUNDINGS}")


def _qrange(bits: int, narrow: bool = False) -> tuple[int, int]:
    qmax = (1 << (bits - 1)) - 1
    return (-qmax if narrow else -qmax - 1), qmax


def activation_params(lo: float, hi: float, *, bits: int = 8, symmetric: bool = False,
                      power_of_two: bool = False) -> QuantParams:
    """Per-tensor params covering [lo, hi] (widened to contain 0)."""
    qmin, qmax = _qrange(bits)
    rmin, rmax = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        amax = max(-rmin, rmax)
        scale = amax / qmax if amax > 0 else 1.0
        if power_of_two:
            scale = float(pot_ceil(scale))
        return QuantParams(np.float32(scale), 0, bits=bits, symmetric=True, power_of_two=power_of_two)
    if rmax == rmin:
        scale = 1.0
    else:
        scale = (rmax - rmin) / (qmax - qmin)
    if power_of_two:
        scale = float(pot_ceil(scale))
    scale = float(np.float32(scale))
    zp_from_min = qmin - rmin / scale
    zp_from_max = qmax - rmax / scale
    err_min = abs(qmin) + abs(rmin / scale)
    err_max = abs(qmax) + abs(rmax / scale)
    zp = zp_from_min if err_min < err_max else zp_from_max
    zp = int(min(max(_round_away(np.float64(zp)), qmin), qmax))
    return QuantParams(np.float32(scale), zp, bits=bits, power_of_two=power_of_two)


def fixed_params(scale: float, zero_point: int, bits: int = 8) -> QuantParams:
    return QuantParams(np.float32(scale), zero_point, bits=bits, power_of_two=bool(is_pot(scale)))


def weight_amax(w: np.ndarray, per_channel: bool, method: str = "minmax", bits: int = 8,
                power_of_two: bool = False) -> np.ndarray:
    """Clip value per output channel (axis 0) or per tensor (array of 1)."""
    w = np.asarray(w, dtype=np.float64)
    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    amax = np.abs(rows).max(axis=1)
    if method == "minmax":
        return amax
    if method != "mse":
        raise ValueError(f"unknown weight method {method!r}")
    qmax = (1 << (bits - 1)) - 1
    out = amax.copy()
    for c, row in enumerate(rows):
        if amax[c] == 0:
            continue
        best = math.inf
        for f in np.linspace(1.0, 0.2, 81):
            s = amax[c] * f / qmax
            if power_of_two:
                s = float(pot_ceil(s))
            q = np.clip(_round_away(row / s), -qmax, qmax)
            err = float(np.sum((q * s - row) ** 2))
            if err < best:
                best, out[c] = err, amax[c] * f
    return out


def quantize_weight(w: np.ndarray, *, bits: int = 8, per_channel: bool = True, power_of_two: bool = False,
                    method: str = "minmax", rounding: str = "half_away") -> tuple[np.ndarray, QuantParams]:
    """Symmetric narrow-range weights along axis 0 → (int8 array, params)."""
    w = np.asarray(w, dtype=np.float32)
    qmax = (1 << (bits - 1)) - 1
    amax = weight_amax(w, per_channel, method, bits, power_of_two)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    if power_of_two:
        scale = pot_ceil(scale)
    scale = scale.astype(np.float32)
    qp = QuantParams(scale, np.zeros(scale.size, dtype=np.int64), axis=0 if per_channel else None,
                     bits=bits, narrow_range=True, symmetric=True, power_of_two=power_of_two)
    shp = (-1,) + (1,) * (w.ndim - 1) if per_channel else (1,) * w.ndim
    q = round_with(w.astype(np.float64) / scale.astype(np.float64).reshape(shp), rounding)
    return np.clip(q, -qmax, qmax).astype(np.int8), qp


def quantize_bias(b: np.ndarray, in_scale: float, w_scale: np.ndarray, *, bits: int = 32,
                  rounding: str = "half_away") -> tuple[np.ndarray, QuantParams, int]:
    """int32 bias with scale s_in*s_w[c]; clipped to a signed ``bits``-bit range.

    Returns (values, params, number of clipped entries).
    """
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    ws = np.asarray(w_scale, dtype=np.float32).reshape(-1)
    scale = (np.float32(in_scale) * ws).astype(np.float32)  # 1 (per-tensor) or one per channel
    q = round_with(b / scale.astype(np.float64), rounding)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    clipped = int(np.sum((q < lo) | (q > hi)))
    q = np.clip(q, lo, hi).astype(np.int64)
    qp = QuantParams(scale, np.zeros(scale.size, dtype=np.int64), axis=0 if scale.size > 1 else None,
                     bits=32, symmetric=True, power_of_two=bool(np.all(is_pot(scale))))
    return q.astype(np.int32), qp, clipped
