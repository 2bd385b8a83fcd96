"""Streaming observers: exact min/max, percentiles within a bin, TensorRT-style entropy,
MSE clipping, exact re-binning, and memory that does not grow with the sample count."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.passes.quantize.observers import (EntropyObserver, HistogramObserver, MinMaxObserver,
                                           MovingAverageMinMaxObserver, MSEObserver, PercentileObserver,
                                           RangeSpec, kl_entropy_amax, make_observer)
from qtc.passes.quantize.params import activation_params

SYM = RangeSpec(8, symmetric=True)
ASYM = RangeSpec(8, symmetric=False)


def _feed(obs, x, batch=5000):
    for i in range(0, x.size, batch):
        obs.update(x[i:i + batch])
    return obs


def test_minmax_is_exact_over_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 2.0, 20_000).astype(np.float32)
    obs = _feed(MinMaxObserver(), x, batch=777)
    assert obs.range() == (float(x.min()), float(x.max()))


def test_moving_average_minmax_follows_batches():
    obs = MovingAverageMinMaxObserver(c=0.5)
    obs.update(np.array([-1.0, 3.0], np.float32))
    obs.update(np.array([-3.0, 1.0], np.float32))
    assert obs.range() == pytest.approx((-2.0, 2.0))


def test_histogram_rebinning_is_exact():
    """Growing the range merges bin pairs: same counts as one histogram at the final range."""
    rng = np.random.default_rng(1)
    parts = [rng.uniform(-s, s, 3000).astype(np.float32) for s in (0.5, 1.3, 2.9, 7.0)]
    obs = HistogramObserver(bins=256)
    for p in parts:
        obs.update(p)
    allx = np.concatenate(parts)
    direct, _ = np.histogram(allx, bins=256, range=(-obs.radius, obs.radius))
    assert obs.hist.sum() == allx.size
    assert np.abs(obs.hist - direct).sum() <= 4  # only float ties at shared edges may move
    assert obs.radius >= np.abs(allx).max() and obs.radius < 2 * np.abs(allx).max()


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_within_one_bin(p):
    rng = np.random.default_rng(2)
    x = rng.normal(0.5, 1.0, 200_000).astype(np.float32)
    obs = _feed(PercentileObserver(percentile=p), x)
    lo, hi = obs.range(ASYM)
    assert abs(hi - np.percentile(x, p)) <= obs.width
    assert abs(lo - np.percentile(x, 100 - p)) <= obs.width
    _, amax = obs.range(SYM)
    assert abs(amax - np.percentile(np.abs(x), p)) <= obs.width


def _naive_entropy_amax(counts, edges, levels=128, start=128):
    """Loop-by-loop transcription of the published algorithm (TRT / pytorch-quantization)."""
    from scipy.stats import entropy

    bins = counts.astype(np.float64).copy()
    bins[0] = bins[1]
    divs, args = [], []
    for i in range(start, len(bins) + 1):
        space = np.linspace(0, i, num=levels + 1)
        dig = np.digitize(range(i), space) - 1
        dig[bins[:i] == 0] = -1
        dens = np.zeros(levels)
        for j, d in enumerate(dig):
            if d != -1:
                dens[d] += bins[j]
        for key in set(dig.tolist()):
            if key != -1:
                dens[key] /= int(np.sum(dig == key))
        q = np.array([dens[d] if d != -1 else 0.0 for d in dig])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        divs.append(entropy(p / p.sum(), q / q.sum()))
        args.append(i)
    divs = np.array(divs)
    last = len(divs) - 1 - int(np.argmin(divs[::-1]))
    return edges[args[last]]


def test_entropy_matches_reference_algorithm():
    rng = np.random.default_rng(3)
    x = np.abs(rng.laplace(0, 1, 50_000))
    counts, edges = np.histogram(x, bins=400, range=(0, x.max()))
    assert kl_entropy_amax(counts, edges) == pytest.approx(_naive_entropy_amax(counts, edges))


def test_entropy_clips_laplace_tail():
    rng = np.random.default_rng(4)
    x = rng.laplace(0, 1, 1_000_000).astype(np.float32)
    obs = _feed(EntropyObserver(), x, batch=50_000)
    lo, hi = obs.range(SYM)
    amax = float(np.abs(x).max())
    assert lo == -hi
    assert 6.0 < hi < 0.8 * amax, (hi, amax)  # clips the sparse tail, keeps the bulk
    # a few far outliers on top of the same bulk barely move the threshold
    y = np.concatenate([x[:300_000], rng.uniform(-60, 60, 30).astype(np.float32)])
    lo2, hi2 = _feed(EntropyObserver(), y, batch=50_000).range(SYM)
    assert 6.0 < hi2 < 0.25 * float(np.abs(y).max()), (hi2, float(np.abs(y).max()))


def test_mse_clips_heavy_tails_and_lowers_error():
    rng = np.random.default_rng(5)
    x = rng.standard_t(2, 100_000).astype(np.float32)  # heavy tails
    mm = _feed(MinMaxObserver(), x).range(ASYM)
    ms = _feed(MSEObserver(), x).range(ASYM)
    assert ms[1] - ms[0] < 0.95 * (mm[1] - mm[0])

    def err(r):
        qp = activation_params(*r)
        return float(np.mean((qp.dequantize(qp.quantize(x)) - x) ** 2))

    brute = min(err((mm[0] * f, mm[1] * f)) for f in np.geomspace(1.0, 1e-3, 300))
    assert err(ms) < err(mm)
    assert err(ms) <= 1.02 * brute  # the histogram search finds the true optimum closely


def test_mse_respects_power_of_two_spec():
    rng = np.random.default_rng(6)
    x = rng.laplace(0, 1, 50_000).astype(np.float32)
    obs = _feed(MSEObserver(), x)
    lo, hi = obs.range(RangeSpec(8, symmetric=True, power_of_two=True))
    qp = activation_params(lo, hi, symmetric=True, power_of_two=True)
    assert math.frexp(float(qp.scale[0]))[0] == 0.5


def test_all_zero_then_data():
    obs = PercentileObserver()
    obs.update(np.zeros(100, np.float32))
    obs.update(np.array([1.0, -2.0], np.float32))
    assert obs.hist.sum() == 102
    assert obs.hist[obs.bins // 2] == 100  # the zeros landed in the [0, w) bin once a radius existed
    lo, hi = obs.range(ASYM)
    assert -2.0 <= lo < 0.0 < hi <= 1.0


def test_nan_is_a_user_error():
    with pytest.raises(QtcError, match="NaN"):
        MinMaxObserver().update(np.array([1.0, np.nan], np.float32))
    with pytest.raises(QtcError, match="unknown calibration method"):
        make_observer("kl")


@pytest.mark.parametrize("method", ["minmax", "ema", "percentile", "entropy", "mse"])
def test_memory_does_not_grow_with_samples(method):
    """Peak traced memory of the update loop is the same for 10x more samples."""

    def peak(n_batches: int) -> int:
        rng = np.random.default_rng(7)
        obs = make_observer(method)
        obs.update(rng.laplace(0, 1, 4096).astype(np.float32))  # allocate the state first
        tracemalloc.start()
        try:
            for i in range(n_batches):
                obs.update(rng.laplace(0, 1 + i % 3, 4096).astype(np.float32))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(5), peak(50)
    assert large <= 1.25 * small + 16_384, (small, large)
