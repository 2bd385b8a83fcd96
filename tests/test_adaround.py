"""AdaRound: a CNN trained here on sklearn digits, W4A8 and W2A8 min-max vs learned rounding,
plus the algorithm's contracts (nearest rounding at start, fixed scales, PoT, determinism, MatMul)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.interp import run, run_quantized
from qtc.ir import Graph
from qtc.ir.serialize import save
from qtc.ir.validate import infer_shapes
from qtc.passes.quantize import check, quantize
from qtc.passes.quantize.adaround import AdaRoundConfig, adaround, layer_target, reconstruction_error
from qtc.ir import with_batch  # noqa: E402

torch = pytest.importorskip("torch")




def accuracy(g: Graph, x: np.ndarray, y: np.ndarray) -> float:
    gb = with_batch(g, len(x))
    out = run_quantized(gb, {gb.inputs[0]: x}) if gb.is_quantized else run(gb, {gb.inputs[0]: x})
    return float(np.mean(np.argmax(out[gb.outputs[0]], axis=-1) == y))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], d.target[perm]
    return x[:1200], y[:1200], x[1200:], y[1200:]


@pytest.fixture(scope="module")
def cnn(digits):
    """NCHW conv 8 relu -> maxpool -> conv 16 relu -> flatten -> fc 10; full-batch Adam, 150 steps (~1 s)."""
    xtr, ytr, _, _ = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64))
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    torch.set_num_threads(threads)
    c1, c2, fc = net[0], net[3], net[6]
    g = Graph(name="digits_cnn")
    g.add_tensor("x", (1, 1, 8, 8))
    g.add_const("c1/w", c1.weight.detach().numpy().transpose(0, 2, 3, 1))
    g.add_const("c1/b", c1.bias.detach().numpy())
    g.add_const("c2/w", c2.weight.detach().numpy().transpose(0, 2, 3, 1))
    g.add_const("c2/b", c2.bias.detach().numpy())
    g.add_const("fc/w", fc.weight.detach().numpy())
    g.add_const("fc/b", fc.bias.detach().numpy())
    g.add_node("Conv2D", ["x", "c1/w", "c1/b"], ["c1:0"], name="c1", pads=[1, 1, 1, 1])
    g.add_node("Relu", ["c1:0"], ["r1:0"], name="r1")
    g.add_node("MaxPool", ["r1:0"], ["p1:0"], name="p1", kernel=[2, 2], strides=[2, 2])
    g.add_node("Conv2D", ["p1:0", "c2/w", "c2/b"], ["c2:0"], name="c2", pads=[1, 1, 1, 1], activation="relu")
    g.add_node("Flatten", ["c2:0"], ["flat:0"], name="flatten", axis=1)
    g.add_node("FullyConnected", ["flat:0", "fc/w", "fc/b"], ["logits"], name="fc")
    g.inputs, g.outputs = ["x"], ["logits"]
    return infer_shapes(g)


@pytest.fixture(scope="module")
def results(cnn, digits):
    """Test accuracy of float, W4A8 (per-tensor weights) and W2A8 (per-channel), nearest vs AdaRound."""
    xtr, _, xte, yte = digits
    calib = {"x": xtr[:256]}
    ada = {"iters": 600}
    res = {"float": accuracy(cnn, xte, yte)}
    models = {
        "w4_minmax": quantize(cnn, calib, wbits=4, per_channel=False, progress=False),
        "w4_adaround": quantize(cnn, calib, wbits=4, per_channel=False, adaround=ada, progress=False),
        "w2_nearest": quantize(cnn, calib, wbits=2, progress=False),
        "w2_adaround": quantize(cnn, calib, wbits=2, adaround=ada, progress=False),
    }
    res.update({k: accuracy(q, xte, yte) for k, q in models.items()})
    print("digits CNN test accuracy:", json.dumps({k: round(v, 4) for k, v in res.items()}))
    return res, models


def test_w4a8_adaround_beats_minmax_and_stays_near_float(results):
    res, _ = results
    assert res["float"] > 0.95
    # min-max W4 per-tensor loses clearly more than AdaRound, which stays within 2 points of float
    assert res["float"] - res["w4_minmax"] >= 2 * max(res["float"] - res["w4_adaround"], 0.0) + 0.015, res
    assert res["w4_adaround"] >= res["float"] - 0.02, res


def test_w2a8_adaround_improves_on_nearest(results):
    res, _ = results
    assert res["w2_adaround"] >= res["w2_nearest"] + 0.3, res
    assert res["w2_adaround"] >= res["float"] - 0.08, res


def test_adaround_metadata_and_integer_weights(results, cnn):
    _, models = results
    q = models["w2_adaround"]
    meta = q.metadata["quantization"]["adaround"]
    assert meta["iters"] == 600 and meta["inputs"] == "quantized" and meta["beta"] == [20.0, 2.0]
    assert [r["node"] for r in meta["layers"]] == ["c1", "c2", "fc"]
    for r in meta["layers"]:
        assert r["mse_adaround"] <= r["mse_nearest"]
    assert sum(r["changed"] for r in meta["layers"]) > 0
    near = models["w2_nearest"]
    for name in ("c1/w", "c2/w", "fc/w"):
        t, tn = q.tensors[name], near.tensors[name]
        assert t.dtype == "int8" and t.quant.bits == 2 and t.data.min() >= -1 and t.data.max() <= 1
        np.testing.assert_array_equal(t.quant.scale, tn.quant.scale)  # AdaRound never touches scales
        # every learned integer is floor(w/s) or floor(w/s) + 1 (clipped to the range)
        ratio = cnn.tensors[name].data.astype(np.float64) / t.quant.scale.reshape(-1, *([1] * (t.data.ndim - 1)))
        lo = np.clip(np.floor(ratio), t.quant.qmin, t.quant.qmax)
        hi = np.clip(np.floor(ratio) + 1, t.quant.qmin, t.quant.qmax)
        assert np.all((t.data == lo) | (t.data == hi))


def test_zero_iterations_is_nearest_rounding():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (1, 6, 10))
    s = np.full_like(w, 0.25)
    rows = rng.normal(0, 1, (64, 1, 10))
    target = layer_target(rows, w, np.zeros(6), "none")
    q = adaround(w, s, -7, 7, rows, target, np.zeros(6), "none", AdaRoundConfig(iters=0))
    np.testing.assert_array_equal(q, np.clip(np.floor(w / s + 0.5), -7, 7))
    q2 = adaround(w, s, -7, 7, rows, target, np.zeros(6), "none", AdaRoundConfig(iters=300, seed=3))
    assert reconstruction_error(rows, s * q2, np.zeros(6), target, "none") < \
        reconstruction_error(rows, s * q, np.zeros(6), target, "none")
    q3 = adaround(w, s, -7, 7, rows, target, np.zeros(6), "none", AdaRoundConfig(iters=300, seed=3))
    np.testing.assert_array_equal(q2, q3)


def test_deterministic_bytes_and_pot_target(cnn, digits, tmp_path):
    calib = {"x": digits[0][:64]}
    kw = dict(wbits=4, adaround={"iters": 100, "seed": 5}, bias_correction=True, progress=False)
    a = save(quantize(cnn, calib, target="ti-npu", **kw), tmp_path / "a.qir")
    b = save(quantize(cnn, calib, target="ti-npu", **kw), tmp_path / "b.qir")
    for f in ("graph.json", "weights.npz"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    from qtc.ir.serialize import load

    q = load(a)
    for name in ("c1/w", "c2/w", "fc/w"):
        m, _ = np.frexp(q.tensors[name].quant.scale.astype(np.float64))
        assert np.all(m == 0.5)  # power-of-two scales kept
    rules = {v.rule for v in check(q, "ti-npu")}
    assert not rules & {"power-of-two", "weight-range", "zero-point", "bias-width"}, rules


def test_matmul_constant_b_and_dynamic_mode():
    rng = np.random.default_rng(1)
    g = Graph(name="mm")
    g.add_tensor("x", (1, 5, 12))
    g.add_const("B", rng.normal(0, 0.5, (7, 12)).astype(np.float32))
    g.add_const("fc/w", rng.normal(0, 0.5, (4, 7)).astype(np.float32))
    g.add_node("MatMul", ["x", "B"], ["mm:0"], name="mm", transpose_b=True)
    g.add_node("FullyConnected", ["mm:0", "fc/w", ""], ["y"], name="fc")
    g.inputs, g.outputs = ["x"], ["y"]
    infer_shapes(g)
    calib = {"x": rng.normal(0, 1, (40, 5, 12)).astype(np.float32)}
    for wbits in (8, 4, 2):
        q = quantize(g, calib, wbits=wbits, adaround={"iters": 200}, progress=False)
        layers = {r["node"]: r for r in q.metadata["quantization"]["adaround"]["layers"]}
        assert set(layers) == {"mm", "fc"} and layers["mm"]["mse_adaround"] < layers["mm"]["mse_nearest"]
        b = q.tensors["B"]
        assert b.quant.axis is None and b.quant.bits == wbits and np.abs(b.data).max() <= b.quant.qmax
    qf = quantize(g, calib, wbits=4, adaround={"iters": 100, "inputs": "float"}, progress=False)
    assert qf.metadata["quantization"]["adaround"]["inputs"] == "float"
    with pytest.raises(QtcError, match="inputs"):
        quantize(g, calib, adaround={"inputs": "fp"}, progress=False)
    with pytest.raises(QtcError, match="bad AdaRound settings"):
        quantize(g, calib, adaround={"iterations": 3}, progress=False)
    d = quantize(g, calib, mode="dynamic", wbits=4, adaround={"iters": 200}, bias_correction=True, progress=False)
    assert d.tensors["x"].dtype == "float32" and d.tensors["fc/w"].dtype == "int8"
    dl = {r["node"]: r for r in d.metadata["quantization"]["adaround"]["layers"]}
    assert dl["fc"]["mse_adaround"] <= dl["fc"]["mse_nearest"]
    # bias correction gave the bias-less FC a float bias in dynamic mode
    fc = d.node("fc")
    assert len(fc.inputs) == 3 and d.tensors[fc.inputs[2]].dtype == "float32"
    ref = run(g, {"x": calib["x"][:1]})["y"]
    out = run(d, {"x": calib["x"][:1]})["y"]
    assert np.abs(out - ref).max() < 0.2 * np.abs(ref).max()
