"""method="auto" / weight_method="auto": histogram views, the scored samples, the choice (never worse than
the best single method, and the final model is the one scored), determinism, metadata and user errors."""
from __future__ import annotations

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.ir import Graph
from qtc.ir.serialize import save
from qtc.ir.validate import infer_shapes
from qtc.passes.quantize import quantize
from qtc.passes.quantize.collect import collect
from qtc.passes.quantize.observers import (HISTOGRAM_METHODS, HistogramObserver, RangeSpec, histogram_view,
                                           make_observer)
from qtc.passes.quantize.select import output_error, scoring_samples


def mlp(seed: int = 0) -> Graph:
    """x[1,16] -> FC 32 relu -> FC 24 relu -> FC 5 (random weights, one large input feature)."""
    rng = np.random.default_rng(seed)
    g = Graph(name="auto_mlp")
    g.add_tensor("x", (1, 16))
    for i, (o, k) in enumerate([(32, 16), (24, 32), (5, 24)]):
        g.add_const(f"fc{i}/w", rng.normal(0, 1.0 / np.sqrt(k), (o, k)).astype(np.float32))
        g.add_const(f"fc{i}/b", rng.normal(0, 0.1, o).astype(np.float32))
    g.add_node("FullyConnected", ["x", "fc0/w", "fc0/b"], ["h0"], name="fc0", activation="relu")
    g.add_node("FullyConnected", ["h0", "fc1/w", "fc1/b"], ["h1"], name="fc1", activation="relu")
    g.add_node("FullyConnected", ["h1", "fc2/w", "fc2/b"], ["y"], name="fc2")
    g.inputs, g.outputs = ["x"], ["y"]
    return infer_shapes(g)


def calib(n: int = 96, seed: int = 1) -> np.ndarray:
    """Heavy-tailed samples: min-max ranges waste levels on rare outliers."""
    x = np.random.default_rng(seed).laplace(0.0, 0.5, (n, 16)).astype(np.float32)
    x[:, 0] *= 6.0
    return x


def test_histogram_view_equals_each_methods_own_observer():
    rng = np.random.default_rng(0)
    batches = [rng.laplace(0.3, 1.0, 500).astype(np.float32) * (1 + i) for i in range(4)]
    hist = HistogramObserver(4096)
    for b in batches:
        hist.update(b)
    for m in HISTOGRAM_METHODS:
        own = make_observer(m)
        for b in batches:
            own.update(b)
        for spec in (RangeSpec(8, False), RangeSpec(4, True)):
            assert histogram_view(m, hist).range(spec) == own.range(spec), (m, spec)
    with pytest.raises(QtcError):
        histogram_view("ema", hist)


def test_scoring_samples_are_evenly_spaced_and_capped():
    g = mlp()
    x = calib(96)
    assert np.array_equal(scoring_samples(g, {"x": x})["x"], x)
    sub = scoring_samples(g, {"x": x}, limit=10)["x"]
    assert len(sub) == 10 and np.array_equal(sub[0], x[0]) and np.array_equal(sub[-1], x[-1])


def test_auto_is_never_worse_than_the_best_single_method_and_is_what_it_scored():
    g = mlp()
    x = {"x": calib(96)}
    qg = quantize(g, x, wbits=4, abits=4, method="auto", weight_method="auto", progress=False)
    meta = qg.metadata["quantization"]
    auto = meta["auto"]
    assert meta["method"] == "auto" and meta["weight_method"] in ("minmax", "mse")
    assert auto["scored_samples"] == 96 and auto["scored_on"] == "every calibration sample"
    assert len(auto["uniform"]) == 8  # 4 range methods x 2 weight methods
    assert auto["error"] <= min(r["error"] for r in auto["uniform"])
    assert set(auto["choices"]) >= {"x", "h0", "h1", "y"}
    winner = min(auto["uniform"], key=lambda r: r["error"])
    assert auto["choices"]["y"] == winner["method"]  # graph outputs keep the uniform winner
    ref = collect(g, x, ["y"])
    # the final model is exactly the one scored
    assert output_error(collect(qg, x, ["y"]), ref) == pytest.approx(auto["error"], rel=1e-5)
    # a uniform candidate is exactly the model that method alone gives
    minmax = quantize(g, x, wbits=4, abits=4, method="minmax", progress=False)
    err_minmax = output_error(collect(minmax, x, ["y"]), ref)
    assert next(r["error"] for r in auto["uniform"]
                if r["method"] == "minmax" and r["weight_method"] == "minmax") == pytest.approx(err_minmax, rel=1e-5)
    assert auto["error"] < 0.9 * err_minmax  # heavy tails: clipping wins clearly at 4 bits


def test_auto_is_deterministic_and_records_no_observer(tmp_path):
    g = mlp()
    x = calib(64)
    a = quantize(g, {"x": x}, method="auto", progress=False)
    b = quantize(g, {"x": x}, method="auto", progress=False)
    pa, pb = save(a, tmp_path / "a.qir"), save(b, tmp_path / "b.qir")
    for f in ("graph.json", "weights.npz"):
        assert (pa / f).read_bytes() == (pb / f).read_bytes()
    meta = a.metadata["quantization"]
    assert meta["observer"] is None and meta["weight_method"] == "minmax"
    assert meta["auto"]["weight_candidates"] == ["minmax"] and meta["calibration"]["samples"] == 64


def test_weight_method_auto_with_a_named_activation_method():
    g = mlp()
    qg = quantize(g, {"x": calib(64)}, wbits=4, method="mse", weight_method="auto", progress=False)
    auto = qg.metadata["quantization"]["auto"]
    assert auto["candidates"] == ["mse"] and [r["weight_method"] for r in auto["uniform"]] == ["minmax", "mse"]
    assert set(auto["choices"].values()) == {"mse"}


def test_auto_user_errors():
    g = mlp()
    x = {"x": calib(32)}
    with pytest.raises(QtcError, match="dynamic"):
        quantize(g, x, method="auto", mode="dynamic", progress=False)
    with pytest.raises(QtcError, match="named method"):
        quantize(g, x, method="auto", observer_settings={"percentile": 99.9}, progress=False)
    with pytest.raises(QtcError, match="ema"):
        quantize(g, x, method="ema", weight_method="auto", progress=False)
    with pytest.raises(QtcError, match="weight method"):
        quantize(g, x, weight_method="best", progress=False)
