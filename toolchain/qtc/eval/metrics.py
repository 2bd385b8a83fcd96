"""Error metrics between a float reference and a quantized model's outputs, and their verdicts.

Every function takes numpy arrays (any shape; samples on axis 0 where it
matters) and returns plain Python floats/ints/dicts, so results go straight
into JSON.  All sums are done in float64.

Verdict bands follow the users' ACT quantization guide:

* MSE: ``< 0.001`` negligible, ``0.001 .. 0.01`` (inclusive) acceptable, ``> 0.01`` significant;
* max |err| (mean over samples of each sample's max): ``< 0.05`` good,
  ``0.05 .. 0.1`` (inclusive) acceptable, ``> 0.1`` poor.
"""
from __future__ import annotations

import math

import numpy as np

MSE_NEGLIGIBLE = 1e-3
MSE_ACCEPTABLE = 1e-2
MAXERR_GOOD = 0.05
MAXERR_ACCEPTABLE = 0.1


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _pair(ref, test) -> tuple[np.ndarray, np.ndarray]:
    a, b = _f64(ref), _f64(test)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: reference {a.shape} vs test {b.shape}")
    return a, b


def mse(ref, test) -> float:
    a, b = _pair(ref, test)
    return float(np.mean((a - b) ** 2)) if a.size else 0.0


def abs_error_stats(ref, test) -> dict:
    """max, mean and 99th-percentile |ref - test| over every element (NaNs propagate)."""
    a, b = _pair(ref, test)
    if not a.size:
        return {"max_abs_err": 0.0, "mean_abs_err": 0.0, "p99_abs_err": 0.0}
    err = np.abs(a - b).reshape(-1)
    return {"max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()),
            "p99_abs_err": float(np.percentile(err, 99.0))}


def mean_sample_max_err(ref, test) -> float:
    """The guide's 'Average Max Error': each sample's max |err| (axis 0 = samples), averaged."""
    a, b = _pair(ref, test)
    if not a.size:
        return 0.0
    err = np.abs(a - b).reshape(a.shape[0] if a.ndim else 1, -1)
    return float(err.max(axis=1).mean())


def cosine(ref, test) -> float:
    """Cosine similarity of the two arrays flattened; 1.0 when both are all zero, 0.0 when one is."""
    a, b = _pair(ref, test)
    a, b = a.reshape(-1), b.reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def per_sample_cosine(ref, test) -> np.ndarray:
    """Cosine similarity of each sample (axis 0) flattened."""
    a, b = _pair(ref, test)
    n = a.shape[0] if a.ndim else 1
    return np.array([cosine(x, y) for x, y in zip(a.reshape(n, -1), b.reshape(n, -1))])


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10·log10(signal/noise); +inf when the noise is exactly 0, -inf when the signal is."""
    if noise_power == 0.0:
        return math.inf
    if signal_power == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def sqnr(ref, test) -> float:
    """Signal-to-quantization-noise ratio in dB: sum(ref²) / sum((ref - test)²)."""
    a, b = _pair(ref, test)
    return sqnr_db(float(np.sum(a * a)), float(np.sum((a - b) ** 2)))


def finite_check(x) -> dict:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return {"nan": 0, "inf": 0}
    return {"nan": int(np.isnan(x).sum()), "inf": int(np.isinf(x).sum())}


def accuracy(logits, labels) -> float:
    """Top-1 accuracy: argmax over the last axis against integer labels."""
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    pred = np.argmax(logits.reshape(labels.shape[0], -1), axis=1)
    return float(np.mean(pred == labels)) if labels.size else 0.0


def agreement(ref, test) -> float:
    """Fraction of samples whose argmax is the same in both (top-1 agreement)."""
    a, b = _pair(ref, test)
    n = a.shape[0] if a.ndim else 1
    return float(np.mean(np.argmax(a.reshape(n, -1), 1) == np.argmax(b.reshape(n, -1), 1)))


def mse_verdict(value: float) -> str:
    """'negligible' | 'acceptable' | 'significant' (NaN is significant)."""
    if not value <= MSE_ACCEPTABLE:  # also catches NaN
        return "significant"
    return "negligible" if value < MSE_NEGLIGIBLE else "acceptable"


def max_error_verdict(value: float) -> str:
    """'good' | 'acceptable' | 'poor' for the mean per-sample max |err|."""
    if not value <= MAXERR_ACCEPTABLE:
        return "poor"
    return "good" if value < MAXERR_GOOD else "acceptable"


def output_errors(ref, test) -> dict:
    """Every output-level metric of one output tensor (reference = float model)."""
    a, b = _pair(ref, test)
    stats = {"mse": mse(a, b), **abs_error_stats(a, b), "mean_sample_max_abs_err": mean_sample_max_err(a, b),
             "cosine": cosine(a, b)}
    if a.ndim and a.shape[0] > 0:
        stats["min_sample_cosine"] = float(per_sample_cosine(a, b).min())
    nf = finite_check(test)
    stats["nan"], stats["inf"] = nf["nan"], nf["inf"]
    stats["finite"] = nf["nan"] == 0 and nf["inf"] == 0
    stats["sqnr_db"] = json_float(sqnr(a, b))
    stats["mse_verdict"] = mse_verdict(stats["mse"])
    stats["max_error_verdict"] = max_error_verdict(stats["mean_sample_max_abs_err"])
    return stats


def json_float(x: float) -> float | None:
    """JSON has no inf/NaN: they become None (the report prints them as ∞ / n/a)."""
    return None if (x is None or not math.isfinite(x)) else float(x)


class SqnrAccumulator:
    """Streams per-tensor signal and noise power over many samples."""

    def __init__(self):
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, name: str, ref, test) -> None:
        a, b = _pair(ref, test)
        self.signal[name] = self.signal.get(name, 0.0) + float(np.sum(a * a))
        self.noise[name] = self.noise.get(name, 0.0) + float(np.sum((a - b) ** 2))
        self.count[name] = self.count.get(name, 0) + int(a.size)

    def sqnr(self, name: str) -> float:
        return sqnr_db(self.signal[name], self.noise[name])

    def mse(self, name: str) -> float:
        return self.noise[name] / max(self.count[name], 1)
