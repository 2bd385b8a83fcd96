"""Streaming range observers for post-training quantization.

Every observer sees the data one batch at a time (``update``) and keeps only
a fixed amount of state: running min/max, or a histogram of fixed size that
re-bins when the range grows.  Memory therefore does not grow with the number
of calibration samples.  ``range()`` returns the real interval ``(lo, hi)``
to quantize; turning that into a scale/zero point is :mod:`.params`' job.

Methods:

* ``minmax``: the exact running min and max.
* ``ema``: moving-average min/max over batches (``c=0.01``, as ORT's
  ``CalibMovingAverageConstant`` and TF-MOT's MovingAverageQuantizer).
* ``percentile``: the ``p``-th percentile (default 99.99) from the histogram,
  of ``|x|`` for symmetric quantization, of both tails otherwise.
* ``entropy``: TensorRT's KL-divergence calibration (as NVIDIA's
  pytorch-quantization ``_compute_amax_entropy``): histogram of ``|x|``, damp
  the zero spike (``bins[0] = bins[1]``), for each candidate stop bin
  ``i >= 128`` fold the tail into the last bin (P), quantize the first ``i``
  bins into 128 levels spreading each level's mass over its non-empty bins
  (Q), take the *last* argmin of KL(P||Q); amax is the stop bin's edge.
* ``mse``: grid search over clip ranges minimizing the expected quantization
  MSE over the histogram (rounding noise inside, clipping error outside),
  using the exact parameter rules of the target (bits, symmetric, power of two).

The histogram is signed, ``bins`` wide over ``[-R, R]`` anchored at zero.
When a value exceeds ``R`` the radius doubles and adjacent bin pairs merge:
bin edges stay aligned, so re-binning is exact (no interpolation).  The
histogram of ``|x|`` is the exact fold of its two halves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import QtcError

METHODS = ("minmax", "ema", "percentile", "entropy", "mse")


@dataclass(frozen=True)
class RangeSpec:
    """What the range is for: it changes percentile/entropy/mse answers."""

    bits: int = 8
    symmetric: bool = False
    power_of_two: bool = False


class Observer:
    method = ""

    def update(self, x: np.ndarray) -> None:
        raise TypeError(f"{type(self).__name__} is abstract: a subclass defines this")

    def range(self, spec: RangeSpec = RangeSpec()) -> tuple[float, float]:
        raise TypeError(f"{type(self).__name__} is abstract: a subclass defines this")

    def settings(self) -> dict:
        return {"method": self.method}

    @staticmethod
    def _finite(x: np.ndarray, where: str = "observer") -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if x.size and not np.isfinite(x).all():
            raise QtcError("calibration data produced NaN or Inf", where=where,
                           hint="check the calibration inputs and the float model")
        return x


class MinMaxObserver(Observer):
    method = "minmax"

    def __init__(self):
        self.lo = math.inf
        self.hi = -math.inf

    def update(self, x):
        x = self._finite(x)
        if x.size:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def range(self, spec=RangeSpec()):
        if self.lo > self.hi:
            return 0.0, 0.0
        return self.lo, self.hi


class MovingAverageMinMaxObserver(MinMaxObserver):
    """First batch sets min/max; later batches move them by ``c`` toward the batch's."""

    method = "ema"

    def __init__(self, c: float = 0.01):
        super().__init__()
        self.c = float(c)
        self._seen = False

    def update(self, x):
        x = self._finite(x)
        if not x.size:
            return
        bmin, bmax = float(x.min()), float(x.max())
        if not self._seen:
            self.lo, self.hi, self._seen = bmin, bmax, True
        else:
            self.lo += self.c * (bmin - self.lo)
            self.hi += self.c * (bmax - self.hi)

    def settings(self):
        return {"method": self.method, "averaging_constant": self.c}


class HistogramObserver(Observer):
    """Fixed-size signed histogram over [-R, R]; R doubles (pairs merge) when exceeded."""

    method = "histogram"

    def __init__(self, bins: int = 4096):
        if bins % 4 or bins < 8:
            raise ValueError("histogram bins must be a multiple of 4 (>= 8)")
        self.bins = int(bins)
        self.hist = np.zeros(self.bins, dtype=np.int64)
        self.radius = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self._zeros_pending = 0  # all-zero data seen before any radius exists

    # ------------------------------------------------------------- update
    def _grow_to(self, amax: float) -> None:
        if self.radius == 0.0:
            self.radius = amax
            if self._zeros_pending:
                self.hist[self.bins // 2] += self._zeros_pending
                self._zeros_pending = 0
            return
        while amax > self.radius:
            merged = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.zeros(self.bins, dtype=np.int64)
            q = self.bins // 4
            self.hist[q:q + merged.size] = merged
            self.radius *= 2.0

    def update(self, x):
        x = self._finite(x)
        if not x.size:
            return
        bmin, bmax = float(x.min()), float(x.max())
        self.lo, self.hi = min(self.lo, bmin), max(self.hi, bmax)
        amax = max(abs(bmin), abs(bmax))
        if amax == 0.0 and self.radius == 0.0:
            self._zeros_pending += x.size
            return
        self._grow_to(amax)
        h, _ = np.histogram(x, bins=self.bins, range=(-self.radius, self.radius))
        self.hist += h

    # ------------------------------------------------------------- views
    @property
    def width(self) -> float:
        return 2.0 * self.radius / self.bins

    def signed(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of the signed histogram."""
        return self.hist.copy(), np.linspace(-self.radius, self.radius, self.bins + 1)

    def absolute(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of the |x| histogram, trimmed after its last non-empty bin."""
        half = self.bins // 2
        counts = self.hist[half:] + self.hist[:half][::-1]
        nz = np.flatnonzero(counts)
        n = int(nz[-1]) + 1 if nz.size else 1
        edges = np.arange(n + 1, dtype=np.float64) * self.width
        return counts[:n].copy(), edges

    def empty(self) -> bool:
        return self.radius == 0.0

    def range(self, spec=RangeSpec()):
        if self.lo > self.hi:
            return 0.0, 0.0
        return self.lo, self.hi

    def _clamp_symmetric(self, amax: float) -> tuple[float, float]:
        """A symmetric clip amax, as an interval inside the observed (min, max)."""
        return max(self.lo, -amax), min(self.hi, amax)


def _quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """Value below which a fraction q of the histogram mass lies (linear within a bin)."""
    total = counts.sum()
    if total == 0:
        return 0.0
    cdf = np.cumsum(counts)
    target = q * total
    i = int(np.searchsorted(cdf, target, side="left"))
    i = min(i, counts.size - 1)
    before = cdf[i - 1] if i > 0 else 0
    frac = (target - before) / counts[i] if counts[i] else 0.0
    return float(edges[i] + frac * (edges[i + 1] - edges[i]))


class PercentileObserver(HistogramObserver):
    method = "percentile"

    def __init__(self, percentile: float = 99.99, bins: int = 4096):
        super().__init__(bins)
        if not 0.0 < percentile <= 100.0:
            raise QtcError(f"percentile {percentile} is out of (0, 100]", hint="use e.g. 99.99")
        self.percentile = float(percentile)

    def range(self, spec=RangeSpec()):
        if self.lo > self.hi:
            return 0.0, 0.0
        if self.empty():
            return self.lo, self.hi
        p = self.percentile / 100.0
        if spec.symmetric:
            counts, edges = self.absolute()
            return self._clamp_symmetric(_quantile(counts, edges, p))
        counts, edges = self.signed()
        lo = _quantile(counts, edges, 1.0 - p)
        hi = _quantile(counts, edges, p)
        return max(self.lo, lo), min(self.hi, hi)

    def settings(self):
        return {"method": self.method, "percentile": self.percentile, "bins": self.bins}


def kl_entropy_amax(counts: np.ndarray, edges: np.ndarray, levels: int = 128,
                    start_bin: int = 128, stride: int = 1) -> float:
    """TensorRT-style KL threshold from an |x| histogram (see the module docstring)."""
    bins = counts.astype(np.float64).copy()
    if bins.size < 2:
        return float(edges[-1])
    bins[0] = bins[1]
    start = min(start_bin, bins.size)
    best_i, best_kl = bins.size, math.inf
    tail = np.concatenate([np.cumsum(bins[::-1])[::-1], [0.0]])  # tail[i] = sum(bins[i:])
    for i in range(start, bins.size + 1, stride):
        p = bins[:i].copy()
        p[-1] += tail[i]
        level = (np.arange(i) * levels) // i  # which of the `levels` quantized bins each bin falls in
        nonempty = bins[:i] != 0
        mass = np.bincount(level, weights=bins[:i], minlength=levels)
        used = np.bincount(level[nonempty], minlength=levels)
        density = np.divide(mass, used, out=np.zeros(levels), where=used > 0)
        qd = np.where(nonempty, density[level], 0.0)
        psum, qsum = p.sum(), qd.sum()
        if psum <= 0 or qsum <= 0:
            continue
        p /= psum
        qd /= qsum
        m = p > 0
        if np.any(qd[m] == 0):
            kl = math.inf
        else:
            kl = float(np.sum(p[m] * np.log(p[m] / qd[m])))
        if kl <= best_kl:  # '<=': the last argmin, as pytorch-quantization
            best_kl, best_i = kl, i
    return float(edges[best_i])


class EntropyObserver(HistogramObserver):
    method = "entropy"

    def __init__(self, bins: int = 4096, start_bin: int = 128, stride: int = 1):
        super().__init__(bins)
        self.start_bin = int(start_bin)
        self.stride = int(stride)

    def range(self, spec=RangeSpec()):
        if self.lo > self.hi:
            return 0.0, 0.0
        if self.empty():
            return self.lo, self.hi
        counts, edges = self.absolute()
        levels = 1 << (spec.bits - 1)  # 128 for signed int8
        amax = kl_entropy_amax(counts, edges, levels=levels, start_bin=self.start_bin, stride=self.stride)
        return self._clamp_symmetric(amax)

    def settings(self):
        return {"method": self.method, "bins": self.bins, "abs_bins": self.bins // 2,
                "start_bin": self.start_bin, "stride": self.stride}


class MSEObserver(HistogramObserver):
    """Clip range minimizing the expected quantization MSE of the histogram.

    Candidates scale the observed (min, max) by a geometric grid of fractions
    (1 down to ``min_fraction``).  For each, the target's exact params give a
    representable interval and a step; a bin inside contributes the uniform
    rounding noise ``step^2 / 12`` per sample, a bin outside its squared
    distance to the interval (clipping error).  The noise model stays right
    when bins are wider than the step (heavy tails stretch the histogram).
    """

    method = "mse"

    def __init__(self, bins: int = 4096, grid: int = 200, min_fraction: float = 1e-3):
        super().__init__(bins)
        self.grid = int(grid)
        self.min_fraction = float(min_fraction)

    @staticmethod
    def expected_error(centers: np.ndarray, counts: np.ndarray, qp) -> float:
        step = float(qp.scale[0])
        zp = int(qp.zero_point[0])
        lo, hi = step * (qp.qmin - zp), step * (qp.qmax - zp)
        clip = np.clip(centers, lo, hi)
        inside = clip == centers
        return float(np.sum(counts[inside]) * step * step / 12.0
                     + np.sum(counts[~inside] * (centers[~inside] - clip[~inside]) ** 2))

    def range(self, spec=RangeSpec()):
        from .params import activation_params

        if self.lo > self.hi:
            return 0.0, 0.0
        if self.empty():
            return self.lo, self.hi
        counts, edges = self.signed()
        keep = counts > 0
        centers = ((edges[:-1] + edges[1:]) / 2.0)[keep]
        w = counts[keep].astype(np.float64)
        lo0, hi0 = min(self.lo, 0.0), max(self.hi, 0.0)
        best, best_err = (lo0, hi0), math.inf
        for f in np.geomspace(1.0, self.min_fraction, self.grid):
            lo, hi = lo0 * f, hi0 * f
            qp = activation_params(lo, hi, bits=spec.bits, symmetric=spec.symmetric,
                                   power_of_two=spec.power_of_two)
            err = self.expected_error(centers, w, qp)
            if err < best_err:  # strict: ties keep the wider range
                best_err, best = err, (lo, hi)
        if spec.symmetric:
            a = max(-best[0], best[1])
            best = (-a, a)
        return max(self.lo, best[0]), min(self.hi, best[1])

    def settings(self):
        return {"method": self.method, "bins": self.bins, "grid": self.grid,
                "min_fraction": self.min_fraction}


HISTOGRAM_METHODS = ("minmax", "percentile", "entropy", "mse")  # methods a histogram's data can answer


def histogram_view(method: str, hist: HistogramObserver, **settings) -> Observer:
    """The ``method`` observer holding ``hist``'s data (same counts, min and max): no second pass.

    ``method`` is one of :data:`HISTOGRAM_METHODS`; a histogram method's ``bins`` must be ``hist``'s.
    """
    if method not in HISTOGRAM_METHODS:
        raise QtcError(f"calibration method {method!r} cannot be read from a histogram",
                       hint=f"use one of: {', '.join(HISTOGRAM_METHODS)}")
    obs = make_observer(method) if method == "minmax" else make_observer(method, **{"bins": hist.bins, **settings})
    if isinstance(obs, HistogramObserver):
        if obs.bins != hist.bins:
            raise QtcError(f"{method} observer has {obs.bins} bins, the shared histogram {hist.bins}",
                           hint="give the same 'bins' setting to every method")
        obs.hist, obs.radius, obs._zeros_pending = hist.hist.copy(), hist.radius, hist._zeros_pending
    obs.lo, obs.hi = hist.lo, hist.hi
    return obs


def make_observer(method: str, **settings) -> Observer:
    """An activation observer by method name; ``settings`` go to its constructor."""
    classes = {"minmax": MinMaxObserver, "ema": MovingAverageMinMaxObserver,
               "percentile": PercentileObserver, "entropy": EntropyObserver, "mse": MSEObserver}
    if method not in classes:
        raise QtcError(f"unknown calibration method {method!r}", hint=f"use one of: {', '.join(METHODS)}")
    try:
        return classes[method](**settings)
    except TypeError as exc:
        raise QtcError(f"bad settings for the {method} observer ({exc})",
                       hint="see qtc.passes.quantize.observers for each observer's options") from None
