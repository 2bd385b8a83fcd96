"""Conv/FC requantization as one high multiply, fitted and proven exact at compile time.

TFLite's per-channel output of a conv / fully-connected accumulator ``acc``,

    y(acc) = clamp(MultiplyByQuantizedMultiplier(acc, M, shift) + out_zp, act_min, act_max),

is a non-decreasing staircase in ``acc``: both roundings are monotonic for M >= 0, and the
left shift (TFLite shift > 0) does not wrap on the accumulators a layer can produce.  It is
fully described by its step points ``b_v = min{acc : unclamped y(acc) >= v}``,
``v = act_min + 1 .. act_max`` (:func:`step_points`).  The first one is the lower clamp
threshold T: ``acc < T`` gives exactly ``act_min``, ``acc >= T`` more.

``QTC_RQ_MULH`` (qtc_kernels_conv.h) computes the same staircase as

    z = acc0 * 2^L + B          (acc0 = sum(w * x), the bias left out; B = bias * 2^L + a)
    y = act_min                                       if z < 0
        act_min + min(mulh(z, m) >> s, act_max - act_min)   otherwise

(mulh: the high word of the 64-bit product), i.e. ``u = floor((acc * 2^L + a) * m / 2^(32+s))``
counts the steps above ``act_min``: one high multiply and a shift instead of TFLite's
64-bit multiply and two roundings, and no multiply at all below the threshold (``z < 0``
implies ``acc < T``).  ``2^L`` gives the offset ``a`` a resolution of ``2^-L`` accumulator
units (the zero point, the threshold and both rounding offsets ride in it); ``m`` and ``s``
set the slope.  Per channel, :func:`fit_mulh` computes the step points with the reference
arithmetic itself (``numerics.multiply_by_quantized_multiplier``), tries ``m`` near the
ideal slope, and takes ``a`` from the interval of offsets that put every step of ``u`` on
exactly ``b_v``.  Both functions being non-decreasing, equal steps inside the accumulator
range any int8 input can give mean equal outputs for every such accumulator;
:func:`check_mulh` certifies that on the step points with the reference before the fit
is used, and the tests compare with the reference on whole accumulator ranges.

One L and s per layer (immediates in the generated code); B and m per channel.  The fit
needs ``2^L`` to be about the number of steps (L >= 8 or 9 for the full int8 range) with
``acc0 * 2^L + B`` inside int32, and a single straight staircase: outputs not clamped at
the zero point (no fused ReLU) round half away from zero on both sides of it, which puts
a kink in the staircase, and keep the ``requant_records`` modes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
M_MAX = (1 << 31) - 1          # m is a signed int32 operand of mulh
M_MIN = 1 << 20                # smaller ideal multipliers (a near-dead channel) are not tried
M_SEARCH = 48                  # candidates tried on each side of the ideal m
MAX_LSH = 16


@dataclass
class MulhFit:
    lsh: int                 # L: acc0 (the accumulator without the bias) is scaled by 2^L
    rsh: int                 # s: the high word is shifted right by s
    bias: np.ndarray         # B = bias * 2^L + a, per channel (int32)
    mult: np.ndarray         # m, per channel (0 < m < 2^31)


def acc_bounds(folded: np.ndarray, w2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest accumulator (folded bias included) any int8 input gives, per channel."""
    w = np.asarray(w2d, np.int64).reshape(len(folded), -1)
    lo = np.minimum(-128 * w, 127 * w).sum(axis=1)
    hi = np.maximum(-128 * w, 127 * w).sum(axis=1)
    return np.asarray(folded, np.int64) + lo, np.asarray(folded, np.int64) + hi


def _requant(num, acc, mult, shift, out_zp):
    return num.multiply_by_quantized_multiplier(acc, mult, shift) + out_zp


def step_points(num, mult: np.ndarray, shift: np.ndarray, out_zp: int, act_min: int, act_max: int,
                acc_lo: np.ndarray, acc_hi: np.ndarray) -> np.ndarray:
    """``b[c, i]``: the smallest accumulator in ``[acc_lo[c], acc_hi[c]]`` whose unclamped output
    is ``>= act_min + 1 + i``, or ``acc_hi[c] + 1`` when none is (a binary search with the
    reference requantization, which must be non-decreasing there: :func:`monotonic`).
    ``b[:, 0]`` is the lower clamp threshold: ``acc < b[c, 0]`` gives exactly ``act_min``."""
    vals = np.arange(act_min + 1, act_max + 1, dtype=np.int64)[None, :]
    m = np.asarray(mult, np.int64)[:, None]
    sh = np.asarray(shift, np.int64)[:, None]
    top = np.asarray(acc_hi, np.int64)[:, None]
    lo = np.repeat(np.asarray(acc_lo, np.int64)[:, None], vals.shape[1], axis=1)
    hi = np.repeat(top + 1, vals.shape[1], axis=1)
    while np.any(lo < hi):
        active = lo < hi
        mid = (lo + hi) // 2
        ge = _requant(num, np.minimum(mid, top), m, sh, out_zp) >= vals
        hi = np.where(active & ge, mid, hi)
        lo = np.where(active & ~ge, mid + 1, lo)
    return lo


def monotonic(shift: np.ndarray, mult: np.ndarray, acc_lo: np.ndarray, acc_hi: np.ndarray) -> bool:
    """The reference requantization is non-decreasing on [acc_lo, acc_hi]: M >= 0 and the left
    shift (TFLite shift > 0) cannot wrap."""
    left = np.maximum(np.asarray(shift, np.int64), 0)
    lo, hi = np.asarray(acc_lo, np.int64) << left, np.asarray(acc_hi, np.int64) << left
    return bool(np.all(np.asarray(mult) >= 0) and np.all(lo >= INT32_MIN) and np.all(hi <= INT32_MAX))


def _offsets(b: np.ndarray, acc_lo: int, acc_hi: int, m: int, S: int, L: int) -> tuple[int, int] | None:
    """The interval of offsets ``a`` for which u = floor((acc * 2^L + a) * m / 2^S) crosses
    u = i + 1 (y = act_min + 1 + i) exactly at b[i] inside [acc_lo, acc_hi]; None when empty."""
    q, rem = divmod(1 << S, m)
    v = np.arange(1, len(b) + 1, dtype=np.int64)
    c = v * q + (v * rem + m - 1) // m            # ceil(v * 2^S / m): z*m >= v*2^S  <=>  z >= c
    e = c - b * (1 << L)
    low = e[b <= acc_hi]                          # formula(b_v) >= v
    up = e[b - 1 >= acc_lo] + (1 << L) - 1        # formula(b_v - 1) <= v - 1
    a_min = int(low.max()) if low.size else None
    a_max = int(up.min()) if up.size else None
    if a_min is None and a_max is None:
        return None
    a_min = a_max if a_min is None else a_min
    a_max = a_min if a_max is None else a_max
    return (a_min, a_max) if a_min <= a_max else None


def fit_mulh(num, folded: np.ndarray, w2d: np.ndarray, mult: np.ndarray, shift: np.ndarray,
             out_zp: int, act_min: int, act_max: int, max_lsh: int = MAX_LSH) -> MulhFit | None:
    """Fit ``QTC_RQ_MULH`` for a layer (module docstring), or None when no exact fit is found.

    folded: the per-channel bias with the input zero point folded in; w2d: the weights, one
    row per output channel.  Tries the largest pre-scale L first (the finest offset)."""
    folded = np.asarray(folded, np.int64)
    n = folded.size
    mult = np.asarray(mult, np.int64)
    shift = np.asarray(shift, np.int64)
    if act_max <= act_min or np.any(mult <= 0):
        return None
    acc_lo, acc_hi = acc_bounds(folded, w2d)
    if acc_lo.min() < INT32_MIN or acc_hi.max() > INT32_MAX or not monotonic(shift, mult, acc_lo, acc_hi):
        return None
    b = step_points(num, mult, shift, out_zp, act_min, act_max, acc_lo, acc_hi)
    sum_abs = 128 * np.abs(np.asarray(w2d, np.int64).reshape(n, -1)).sum(axis=1)  # >= |acc0|
    # the slope is M * 2^(shift - 31) per accumulator unit, in [2^e, 2^(e+1)) with e = top
    top = max(int(m).bit_length() - 1 + int(sh) - 31 for m, sh in zip(mult, shift))
    for L in range(max_lsh, -1, -1):
        if np.any(sum_abs << L > INT32_MAX):
            continue
        s = L - 2 - top  # the largest ideal m is then in [2^30, 2^31)
        if not 0 <= s <= 31:
            continue
        fit = _fit_layer(b, folded, sum_abs, acc_lo, acc_hi, mult, shift, L, s)
        if fit is not None:  # (a failed check would be a bug here: the layer keeps the other modes)
            return fit if check_mulh(num, fit, folded, w2d, mult, shift, out_zp, act_min, act_max) else None
    return None


def _fit_layer(b, folded, sum_abs, acc_lo, acc_hi, mult, shift, L: int, s: int) -> MulhFit | None:
    S = 32 + s
    ms, bs = [], []
    for c in range(len(b)):
        e = int(shift[c]) - 31 + S - L  # the ideal m: M * 2^e, rounded
        m0 = int(mult[c]) << e if e >= 0 else (int(mult[c]) + (1 << (-e - 1))) >> -e
        if m0 < M_MIN:
            return None
        for d in sorted(range(-M_SEARCH, M_SEARCH + 1), key=lambda d: (abs(d), d)):
            m = m0 + d
            iv = _offsets(b[c], int(acc_lo[c]), int(acc_hi[c]), m, S, L) if m <= M_MAX else None
            if iv is not None:
                break
        else:
            return None
        a = (iv[0] + iv[1]) // 2  # any a in the interval is exact: the middle, deterministically
        B = int(folded[c]) * (1 << L) + a
        if abs(B) + int(sum_abs[c] << L) > INT32_MAX:  # every partial sum of z, in any order, fits int32
            return None
        ms.append(m)
        bs.append(B)
    return MulhFit(L, s, np.asarray(bs, np.int64), np.asarray(ms, np.int64))


def _offsets(b: np.ndarray, acc_lo: int, acc_hi: int, m: int, S: int, L: int) -> tuple[int, int] | None:
    """The interval of offsets ``a`` for which u = floor((acc * 2^L + a) * m / 2^S) reaches
    i + 1 exactly at b[i], for every step point inside [acc_lo, acc_hi]; None when empty."""
    q, rem = divmod(1 << S, m)                    # q < 2^(S - 20): v * q fits int64
    v = np.arange(1, len(b) + 1, dtype=np.int64)
    c = v * q + (v * rem + m - 1) // m            # ceil(v * 2^S / m):  u(z) >= v  <=>  z >= c
    e = c - b * (1 << L)
    low = e[b <= acc_hi]                          # u(b_v) >= v
    up = e[b - 1 >= acc_lo] + (1 << L) - 1        # u(b_v - 1) <= v - 1
    if not low.size and not up.size:
        return None
    a_min = int(low.max()) if low.size else int(up.min())
    a_max = int(up.min()) if up.size else a_min
    return (a_min, a_max) if a_min <= a_max else None


def eval_mulh(fit: MulhFit, c: int, acc: np.ndarray, folded: int, act_min: int, act_max: int) -> np.ndarray:
    """What the C kernel stores for channel c, given accumulators ``acc`` (folded bias
    included), in exact integer arithmetic."""
    acc0 = np.asarray(acc, np.int64) - int(folded)
    z = acc0 * (1 << fit.lsh) + int(fit.bias[c])
    u = ((z * int(fit.mult[c])) >> 32) >> fit.rsh
    return np.where(z < 0, act_min, act_min + np.minimum(u, act_max - act_min))


def check_mulh(num, fit: MulhFit, folded: np.ndarray, w2d: np.ndarray, mult: np.ndarray, shift: np.ndarray,
               out_zp: int, act_min: int, act_max: int) -> bool:
    """The fit equals the reference on every accumulator any int8 input gives.

    Certificate: the step points are the reference's (the reference is ``>= v`` at
    ``b_v`` and ``< v`` just below it), and the fit agrees with the reference at both
    ends of the range and on both sides of every step point.  Both being non-decreasing,
    they agree everywhere in between."""
    folded = np.asarray(folded, np.int64)
    acc_lo, acc_hi = acc_bounds(folded, w2d)
    b = step_points(num, mult, shift, out_zp, act_min, act_max, acc_lo, acc_hi)
    vals = np.arange(act_min + 1, act_max + 1, dtype=np.int64)
    for c in range(folded.size):
        lo, hi = int(acc_lo[c]), int(acc_hi[c])
        inside, below = b[c] <= hi, b[c] - 1 >= lo
        ref = lambda a: _requant(num, a, int(mult[c]), int(shift[c]), out_zp)  # noqa: E731
        if np.any(ref(b[c][inside]) < vals[inside]) or np.any(ref(b[c][below] - 1) >= vals[below]):
            return False
        pts = np.unique(np.concatenate([[lo, hi], b[c][inside], b[c][below] - 1]))
        want = np.clip(ref(pts), act_min, act_max)
        z = (pts - folded[c]) * (1 << fit.lsh) + int(fit.bias[c])
        if (np.any(eval_mulh(fit, c, pts, int(folded[c]), act_min, act_max) != want)
                or np.any(np.abs(z) > INT32_MAX)):
            return False
    return True
