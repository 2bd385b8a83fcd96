"""``method="auto"`` / ``weight_method="auto"``: choose ranges by the quantized model's output error.

One method for every tensor is rarely best: a ReLU output with a long tail
wants a clipped (MSE/entropy) range, a graph input with a few features of very
different scales wants its full min-max range.  Here each activation tensor
gets its own range method, chosen by what matters, the error of the quantized
model's *outputs* against the float model's on the calibration samples:

1. One pass over the calibration samples fills one histogram per tensor;
   every candidate method reads its range from that same histogram
   (:func:`.observers.histogram_view`).
2. Every uniform assignment (one range method for all tensors × each weight
   method) is built and scored; the lowest error wins.
3. One pass over the tensors whose params the quantizer uses, in graph order,
   graph outputs excepted: each tries the other range methods with the rest
   fixed; a change is kept only when it lowers the error by at least
   ``MIN_GAIN`` (relative), so noise-level differences do not move a choice.
   Graph outputs keep the uniform winner: their range only sets how finely
   the result is reported, and an output MSE cannot see the ties a coarser
   output grid makes in an argmax (a 4-bit policy_head lost 5 points of
   accuracy when its logits took the min-max range that lowered the MSE).

The ranges scored are exactly the ranges used.  Scoring on a held-out part
instead (ranges from the rest) was tried and dropped: with a few hundred
samples a method's range can move a lot when the held-out samples join the
histogram (entropy on digits_cnn's 200-sample split: scored error 1.2e-4,
7e-4 once all samples set its range), so the choice did not carry over to
the final model.  Choosing a range fits one or two numbers per tensor, so
scoring on the samples that set the ranges costs little optimism.

Error: the sum over graph outputs of ``mean((q - f)^2) / mean(f^2)``, ``q``
the quantized graph's dequantized outputs on qtc's integer interpreter, ``f``
the float graph's, on at most ``MAX_SCORED`` calibration samples (evenly
spaced).  The eval split is never looked at.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import QtcError
from ...ir.graph import Graph
from .calibrate import _layout, run_calibration
from .collect import collect
from .observers import HISTOGRAM_METHODS, HistogramObserver, Observer, RangeSpec, histogram_view

MIN_GAIN = 0.01
MAX_SCORED = 1024
WEIGHT_METHODS = ("minmax", "mse")
CRITERION = "sum over outputs of mean((q - f)^2) / mean(f^2) on the calibration samples"


def scoring_samples(g: Graph, calib: dict[str, np.ndarray], limit: int = MAX_SCORED) -> dict[str, np.ndarray]:
    """At most ``limit`` calibration samples, evenly spaced along axis 0 (all of them when fewer)."""
    n, stacked = _layout(g, calib)
    batch = max(g.tensors[g.inputs[0]].shape[0], 1) if stacked else 1
    steps = n // batch
    if steps <= limit:
        return {k: np.asarray(calib[k])[:steps * batch] for k in g.inputs}
    pick = np.linspace(0, steps - 1, limit).round().astype(np.int64)
    rows = (pick[:, None] * batch + np.arange(batch)[None, :]).reshape(-1)
    return {k: np.asarray(calib[k])[rows] for k in g.inputs}


def output_error(q: dict[str, np.ndarray], f: dict[str, np.ndarray]) -> float:
    """Σ over outputs of mean((q − f)²) / mean(f²) (float64)."""
    err = 0.0
    for name, ref in f.items():
        ref = np.asarray(ref, np.float64)
        power = float(np.mean(ref ** 2)) or 1.0
        err += float(np.mean((np.asarray(q[name], np.float64).reshape(ref.shape) - ref) ** 2)) / power
    return err


class Chosen(Observer):
    """A tensor's final observer: the chosen method's view (keeps the method name for the metadata)."""

    def __init__(self, inner: Observer):
        self.inner = inner
        self.method = inner.method

    def update(self, x):
        raise QtcError("a chosen range is final", hint="this is a qtc bug: calibration already ran")

    def range(self, spec=RangeSpec()):
        return self.inner.range(spec)

    def settings(self):
        return self.inner.settings()


def select(g: Graph, calib: dict[str, np.ndarray], names: list[str], *, methods: tuple[str, ...],
           weight_methods: tuple[str, ...], settings: dict, build: Callable, param_fn: Callable,
           progress: bool = False) -> tuple[dict[str, Observer], str, dict, dict]:
    """Choose a range method per tensor and a weight method (see the module docstring).

    ``build(act_params, weight_method) -> quantized graph`` builds a candidate;
    ``param_fn(observers) -> act_params`` turns observers into the quantizer's
    params function.  Returns (final observers by tensor, weight method,
    calibration facts, the ``auto`` metadata).
    """
    from tqdm import tqdm

    for m in methods:
        if m not in HISTOGRAM_METHODS:
            raise QtcError(f"calibration method {m!r} cannot take part in an automatic choice",
                           hint=f"use one of: {', '.join(HISTOGRAM_METHODS)}")
    hists = {name: HistogramObserver(int(settings.get("bins", 4096))) for name in names}
    info = run_calibration(g, calib, hists, progress=progress)
    score_on = scoring_samples(g, calib)
    reference = collect(g, score_on, list(g.outputs))
    views = {m: {name: histogram_view(m, h, **_method_settings(m, settings)) for name, h in hists.items()}
             for m in methods}
    used: set[str] = set()
    bar = tqdm(desc="auto", unit="model", disable=not progress, leave=False)

    def score(choice: dict[str, str], wm: str) -> float:
        base = param_fn({name: views[choice[name]][name] for name in names})

        def params(name):
            used.add(name)
            return base(name)

        err = output_error(collect(build(params, wm), score_on, list(g.outputs)), reference)
        bar.update(1)
        return err

    uniform = []
    try:
        for m in methods:
            for wm in weight_methods:
                uniform.append({"method": m, "weight_method": wm, "error": score(dict.fromkeys(names, m), wm)})
        best = min(uniform, key=lambda r: r["error"])  # first of equals: candidate order
        choice, wm, err = dict.fromkeys(names, best["method"]), best["weight_method"], best["error"]
        tried = []
        if len(methods) > 1:
            for name in [n for n in names if n in used and n not in g.outputs]:
                for m in methods:
                    if m == choice[name] or _same_params(param_fn, views, m, choice[name], name):
                        continue
                    trial = score({**choice, name: m}, wm)
                    tried.append(trial)
                    if trial < err * (1.0 - MIN_GAIN):
                        choice, err = {**choice, name: m}, trial
    finally:
        bar.close()
    final = {name: Chosen(views[choice[name]][name]) for name in names}
    scored = int(_layout(g, score_on)[0])
    meta = {"criterion": CRITERION, "scored_samples": scored,
            "scored_on": "every calibration sample" if scored == info["samples"] else
                         f"{scored} evenly spaced calibration samples",
            "candidates": list(methods), "weight_candidates": list(weight_methods), "min_gain": MIN_GAIN,
            "uniform": [{**r, "error": _round(r["error"])} for r in uniform],
            "weight_method": wm, "choices": {n: choice[n] for n in names if n in used},
            "counts": {m: sum(1 for n in names if n in used and choice[n] == m) for m in methods},
            "error": _round(err), "evaluations": len(uniform) + len(tried)}
    return final, wm, info, meta


def _method_settings(method: str, settings: dict) -> dict:
    """The observer settings that apply to ``method`` (``bins`` is the shared histogram's)."""
    allowed = {"percentile": ("percentile",), "entropy": ("start_bin", "stride"),
               "mse": ("grid", "min_fraction")}.get(method, ())
    return {k: v for k, v in settings.items() if k in allowed}


def _same_params(param_fn: Callable, views: dict, a: str, b: str, name: str) -> bool:
    """True when methods ``a`` and ``b`` give tensor ``name`` the same params (no need to score both)."""
    pa = param_fn({name: views[a][name]})(name)
    pb = param_fn({name: views[b][name]})(name)
    return bool(np.array_equal(pa.scale, pb.scale) and np.array_equal(pa.zero_point, pb.zero_point))


def _round(x: float) -> float:
    return float(f"{x:.6g}")


__all__ = ["select", "scoring_samples", "output_error", "MAX_SCORED", "MIN_GAIN", "WEIGHT_METHODS"]
