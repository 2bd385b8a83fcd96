"""Better-than-min-max PTQ: cross-layer equalization, bias correction, the layer-as-matrix view
they and AdaRound share, quantization modes (dynamic / static / mixed with int16) and the CLI flags."""
from __future__ import annotations

import json

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.interp import run
from qtc.ir import Graph
from qtc.ir.validate import infer_shapes
from qtc.passes.quantize import quantize
from qtc.passes.quantize.collect import collect
from qtc.passes.quantize.equalize import equalize, find_pairs
from qtc.passes.quantize.layers import apply_rows, weight_layers
from qtc.passes.quantize.sensitivity import sqnr_db


def _spread_rows(rng, shape, spread=1.5):
    """Weights whose output channels have ranges spread over ~10^±spread (what CLE fixes)."""
    w = rng.normal(0, 0.3, shape)
    return (w * 10.0 ** rng.uniform(-spread, spread, (shape[0],) + (1,) * (len(shape) - 1))).astype(np.float32)


def cle_graph(seed: int = 0) -> Graph:
    """NHWC: conv 3->8 -> LeakyRelu -> depthwise 3x3 relu -> AvgPool -> conv 1x1 8->6 -> Flatten -> fc 3,
    plus a relu6 conv branch that must not be equalized."""
    rng = np.random.default_rng(seed)
    g = Graph(name="cle")
    g.add_tensor("x", (1, 6, 6, 3))
    g.add_const("c1/w", _spread_rows(rng, (8, 3, 3, 3)))
    g.add_const("c1/b", rng.normal(0, 0.1, 8).astype(np.float32))
    g.add_const("dw/w", _spread_rows(rng, (8, 3, 3, 1)))
    g.add_const("dw/b", rng.normal(0, 0.1, 8).astype(np.float32))
    g.add_const("pw/w", _spread_rows(rng, (6, 1, 1, 8)))
    g.add_const("pw/b", rng.normal(0, 0.1, 6).astype(np.float32))
    g.add_const("fc/w", rng.normal(0, 0.3, (3, 6 * 3 * 3)).astype(np.float32))
    g.add_const("fc/b", rng.normal(0, 0.1, 3).astype(np.float32))
    g.add_node("Conv2D", ["x", "c1/w", "c1/b"], ["c1:0"], name="c1", pads=[1, 1, 1, 1], channels_last=True)
    g.add_node("LeakyRelu", ["c1:0"], ["lr:0"], name="lrelu", alpha=0.1)
    g.add_node("Conv2D", ["lr:0", "dw/w", "dw/b"], ["dw:0"], name="dw", pads=[1, 1, 1, 1], groups=8,
               channels_last=True, activation="relu")
    g.add_node("AvgPool", ["dw:0"], ["ap:0"], name="pool", kernel=[2, 2], strides=[2, 2], channels_last=True)
    g.add_node("Conv2D", ["ap:0", "pw/w", "pw/b"], ["pw:0"], name="pw", channels_last=True)
    g.add_node("Flatten", ["pw:0"], ["fl:0"], name="flatten", axis=1)
    g.add_node("FullyConnected", ["fl:0", "fc/w", "fc/b"], ["y"], name="fc")
    # relu6 branch: x -> conv relu6 -> conv -> y2 (not positive homogeneous: skipped)
    g.add_const("r6/w", _spread_rows(rng, (4, 1, 1, 3)))
    g.add_const("r6b/w", rng.normal(0, 0.3, (2, 1, 1, 4)).astype(np.float32))
    g.add_node("Conv2D", ["x", "r6/w", ""], ["r6:0"], name="r6", channels_last=True, activation="relu6")
    g.add_node("Conv2D", ["r6:0", "r6b/w", ""], ["y2"], name="r6b", channels_last=True)
    g.inputs, g.outputs = ["x"], ["y", "y2"]
    return infer_shapes(g)


def _calib(g: Graph, n: int = 64, seed: int = 1) -> dict[str, np.ndarray]:
    shape = g.tensors[g.inputs[0]].shape
    return {g.inputs[0]: np.random.default_rng(seed).uniform(-1, 1, (n, *shape[1:])).astype(np.float32)}


# ---------------------------------------------------------------- equalization
def test_cle_pairs_and_float_output_unchanged():
    g = cle_graph()
    pairs, skipped = find_pairs(g)
    assert [(p.first.name, p.second.name, p.through) for p in pairs] == [
        ("c1", "dw", ["lrelu"]), ("dw", "pw", ["pool"]), ("pw", "fc", ["flatten"])]
    assert {"node": "r6", "reason": "fused relu6 is not positive homogeneous"} in skipped
    e, meta = equalize(g)
    assert len(meta["pairs"]) == 3 and meta["sweeps"] >= 2
    calib = _calib(g, 16)
    ref, out = collect(g, calib, g.outputs), collect(e, calib, e.outputs)
    for k in g.outputs:
        scale = max(1.0, float(np.abs(ref[k]).max()))
        assert np.abs(out[k] - ref[k]).max() <= 1e-5 * scale, k
    np.testing.assert_array_equal(e.tensors["r6/w"].data, g.tensors["r6/w"].data)
    # after the sweeps every pair's output/input channel ranges match
    w1, w2 = e.tensors["c1/w"].data, e.tensors["dw/w"].data
    np.testing.assert_allclose(np.abs(w1).max(axis=(1, 2, 3)), np.abs(w2).max(axis=(1, 2, 3)), rtol=1e-3)
    w3, fc = e.tensors["pw/w"].data, e.tensors["fc/w"].data
    r_fc = np.abs(fc.reshape(3, 9, 6)).max(axis=(0, 1))  # NHWC flatten: column = position * 6 + channel
    np.testing.assert_allclose(np.abs(w3).max(axis=(1, 2, 3)), r_fc, rtol=1e-3)


def test_cle_helps_per_tensor_weights():
    g = cle_graph()
    calib = _calib(g)
    ref = collect(g, calib, ["y"])
    plain = quantize(g, calib, wbits=8, per_channel=False, progress=False)
    eq = quantize(g, calib, wbits=8, per_channel=False, equalize=True, progress=False)
    s_plain, s_eq = sqnr_db(ref, collect(plain, calib, ["y"])), sqnr_db(ref, collect(eq, calib, ["y"]))
    assert s_eq > s_plain + 6.0, (s_plain, s_eq)
    assert eq.metadata["quantization"]["equalization"]["pairs"][0]["first"] == "c1"


def test_cle_keeps_nchw_flatten_and_shared_weights_safe():
    rng = np.random.default_rng(3)
    g = Graph(name="nchw")
    g.add_tensor("x", (1, 2, 4, 4))
    g.add_const("a/w", _spread_rows(rng, (5, 3, 3, 2)))
    g.add_const("f/w", rng.normal(0, 0.3, (4, 5 * 16)).astype(np.float32))
    g.add_const("s/w", rng.normal(0, 0.3, (5, 1, 1, 5)).astype(np.float32))
    g.add_node("Conv2D", ["x", "a/w", ""], ["a:0"], name="a", pads=[1, 1, 1, 1], activation="relu")
    g.add_node("Flatten", ["a:0"], ["f:0"], name="flat", axis=1)
    g.add_node("FullyConnected", ["f:0", "f/w", ""], ["y"], name="f")
    # a shared weight is never rescaled
    g.add_node("Conv2D", ["x", "a/w", ""], ["b:0"], name="b", pads=[1, 1, 1, 1], activation="relu")
    g.add_node("Conv2D", ["b:0", "s/w", ""], ["y2"], name="s")
    g.inputs, g.outputs = ["x"], ["y", "y2"]
    infer_shapes(g)
    g2 = g.copy()
    g2.nodes = g2.nodes[:3]
    g2.outputs = ["y"]
    g2.remove_unused_tensors()
    pairs, _ = find_pairs(g2)
    assert [(p.first.name, p.second.name) for p in pairs] == [("a", "f")]
    e, _ = equalize(g2)
    calib = _calib(g2, 8)
    np.testing.assert_allclose(collect(e, calib, ["y"])["y"], collect(g2, calib, ["y"])["y"], rtol=1e-5, atol=1e-5)
    assert find_pairs(g)[0] == []  # a/w has two readers


# ---------------------------------------------------------------- layers as matrices
def test_layer_rows_reproduce_every_layer():
    rng = np.random.default_rng(2)
    g = Graph(name="rows")
    g.add_tensor("x", (1, 4, 11))
    g.add_const("c/w", rng.normal(0, 0.5, (6, 3, 2)).astype(np.float32))
    g.add_const("c/b", rng.normal(0, 0.5, 6).astype(np.float32))
    g.add_node("Conv1D", ["x", "c/w", "c/b"], ["c:0"], name="c", strides=[2], dilations=[2], pads=[2, 1], groups=2)
    g.add_node("Transpose", ["c:0"], ["t:0"], name="t", perm=[0, 2, 1])  # N,W,C
    g.add_node("Unsqueeze", ["t:0"], ["u:0"], name="u", axes=[1])         # N,1,W,C  (NHWC)
    g.add_const("d/w", rng.normal(0, 0.5, (6, 1, 3, 1)).astype(np.float32))
    g.add_node("Conv2D", ["u:0", "d/w", ""], ["d:0"], name="d", pads=[0, 1, 0, 1], strides=[1, 2], groups=6,
               channels_last=True, activation="relu")
    g.add_const("f/w", rng.normal(0, 0.5, (5, 6)).astype(np.float32))
    g.add_const("f/b", rng.normal(0, 0.5, 5).astype(np.float32))
    g.add_node("FullyConnected", ["d:0", "f/w", "f/b"], ["f:0"], name="f")
    g.add_const("m/B", rng.normal(0, 0.5, (5, 7)).astype(np.float32))
    g.add_node("MatMul", ["f:0", "m/B"], ["y"], name="m")
    g.inputs, g.outputs = ["x"], ["y"]
    infer_shapes(g)
    q = quantize(g, None, mode="dynamic", canonicalize=False, progress=False)
    layers = weight_layers(q, g)
    assert [(lay.node, lay.dynamic) for lay in layers] == [("c", True), ("d", True), ("f", True), ("m", True)]
    x = rng.normal(0, 1, (3, 4, 11)).astype(np.float32)
    env = collect(g, {"x": x}, ["x", "c:0", "u:0", "d:0", "f:0", "y"])
    for lay, xin, yout, cl in [(layers[0], "x", "c:0", False), (layers[1], "u:0", "d:0", True),
                               (layers[2], "d:0", "f:0", True), (layers[3], "f:0", "y", True)]:
        rows = lay.rows(env[xin])
        y = apply_rows(rows, lay.to_matrix(lay.w_float)) + lay.bias_vector()
        if lay.activation == "relu":
            y = np.maximum(y, 0)
        ref = env[yout] if cl else np.moveaxis(env[yout], 1, -1)
        np.testing.assert_allclose(y, ref.reshape(-1, ref.shape[-1]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lay.mean_row(env[xin]), rows.mean(axis=0), rtol=1e-6, atol=1e-9)
        idx = np.array([0, rows.shape[0] - 1])
        np.testing.assert_array_equal(lay.rows(env[xin], idx), rows[idx])
        np.testing.assert_array_equal(lay.from_matrix(lay.to_matrix(lay.w_float)), lay.w_float)


# ---------------------------------------------------------------- bias correction
def test_bias_correction_removes_the_mean_output_error():
    rng = np.random.default_rng(4)
    g = Graph(name="bc")
    g.add_tensor("x", (1, 16))
    g.add_const("w", rng.normal(0, 1.0, (12, 16)).astype(np.float32))
    g.add_node("FullyConnected", ["x", "w", ""], ["y"], name="fc")
    g.inputs, g.outputs = ["x"], ["y"]
    infer_shapes(g)
    calib = {"x": (rng.normal(0, 1, (256, 16)) + rng.uniform(0.5, 2.0, 16)).astype(np.float32)}  # non-zero mean
    ref = collect(g, calib, ["y"])["y"]
    plain = quantize(g, calib, wbits=4, per_channel=False, progress=False)
    bc = quantize(g, calib, wbits=4, per_channel=False, bias_correction=True, progress=False)
    e_plain = np.abs((collect(plain, calib, ["y"])["y"] - ref).mean(axis=0))
    e_bc = np.abs((collect(bc, calib, ["y"])["y"] - ref).mean(axis=0))
    out_step = float(bc.tensors["y"].quant.scale[0])
    assert e_plain.max() > 4 * out_step  # W4 per-tensor shifts the channel means
    assert e_bc.max() < 0.3 * e_plain.max() and e_bc.mean() < out_step
    node = bc.node("fc")
    b = bc.tensors[node.inputs[2]]  # a bias was added
    expected_scale = (bc.tensors["x"].quant.scale[0] * bc.tensors["w"].quant.scale).astype(np.float32)
    assert b.dtype == "int32" and np.array_equal(b.quant.scale, expected_scale)
    meta = bc.metadata["quantization"]["bias_correction"]
    assert meta["layers"][0]["node"] == "fc" and meta["layers"][0]["bias_shift_max"] > 0


@pytest.fixture(scope="module")
def digits_mlp():
    """sklearn digits, x[1,64] -> FC 32 relu -> FC 10, trained in about a second."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x[:1200], y[:1200])
    g = Graph(name="digits_mlp")
    g.add_tensor("x", (1, 64))
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        g.add_const(f"fc{i}/w", w.T.astype(np.float32))
        g.add_const(f"fc{i}/b", b.astype(np.float32))
    g.add_node("FullyConnected", ["x", "fc0/w", "fc0/b"], ["h"], name="fc0", activation="relu")
    g.add_node("FullyConnected", ["h", "fc1/w", "fc1/b"], ["logits"], name="fc1")
    g.inputs, g.outputs = ["x"], ["logits"]
    return infer_shapes(g), x[:200], x[1200:], y[1200:]


def test_bias_correction_improves_a_trained_mlp(digits_mlp):
    g, xcal, xte, yte = digits_mlp
    calib, ev = {"x": xcal}, {"x": xte}
    ref = collect(g, ev, ["logits"])

    def score(q):
        out = collect(q, ev, ["logits"])
        return sqnr_db(ref, out), float(np.mean(out["logits"].argmax(1) == yte))

    s0, _ = score(quantize(g, calib, wbits=4, per_channel=False, progress=False))
    s1, _ = score(quantize(g, calib, wbits=4, per_channel=False, bias_correction=True, progress=False))
    _, a2 = score(quantize(g, calib, wbits=2, progress=False))
    _, a3 = score(quantize(g, calib, wbits=2, bias_correction=True, progress=False))
    print(f"digits MLP: W4 per-tensor SQNR {s0:.2f} -> {s1:.2f} dB with bias correction; "
          f"W2 accuracy {a2:.3f} -> {a3:.3f}")
    assert s1 > s0 + 2.0
    assert a3 > a2 + 0.1


# ---------------------------------------------------------------- modes
def test_modes_dynamic_static_mixed_int16(float_graph):
    calib = _calib(float_graph, 16)
    d = quantize(float_graph, None, mode="dynamic", progress=False)
    assert all(d.tensors[n].dtype == "int8" for n in ("enc/conv1/w", "enc/conv2/w", "head/fc/w"))
    assert all(d.tensors[n].dtype == "float32" for n in ("x", "enc/conv1:0", "y"))
    assert d.metadata["quantization"]["scheme"] == "dynamic-int8-weights"
    with pytest.raises(QtcError, match="dynamic mode"):
        quantize(float_graph, None, mode="dynamic", int16=["enc/conv2"], progress=False)
    with pytest.raises(QtcError, match="need calibration data"):
        quantize(float_graph, None, mode="dynamic", bias_correction=True, progress=False)
    s = quantize(float_graph, calib, mode="static", progress=False)
    assert all(s.tensors[n].dtype == "int8" for n in ("x", "enc/conv1:0", "enc/conv2:0", "y"))
    m = quantize(float_graph, calib, mode="mixed", keep_float=["enc/conv2"], int16=["=enc/conv1", "x"], progress=False)
    assert m.tensors["x"].dtype == "int16" and m.tensors["enc/conv1:0"].dtype == "int16"
    assert m.tensors["enc/conv2:0"].dtype == "float32" and m.tensors["y"].dtype == "int8"
    assert [n.op for n in m.nodes] == ["Conv2D", "Dequantize", "Conv2D", "Quantize", "FullyConnected"]
    ref = run(float_graph, {"x": calib["x"][:1]})["y"]
    out = collect(m, {"x": calib["x"][:1]}, ["y"])["y"]
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max() + 0.02
    # '=' patterns are exact: 'enc' alone would be a scope, '=enc' matches no node
    with pytest.raises(QtcError, match="matches no node"):
        quantize(float_graph, calib, mode="mixed", keep_float=["=enc"], progress=False)


# ---------------------------------------------------------------- CLI
def test_quantize_cli_flags(float_qir, tmp_path):
    from click.testing import CliRunner

    from qtc.ir.serialize import load
    from qtc.quant_cli import quantize_cmd

    calib = np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "quant_dataset_x.npy", calib)
    out = tmp_path / "q.qir"
    r = CliRunner().invoke(quantize_cmd, [str(float_qir), "--calib", str(tmp_path / "quant_dataset_x.npy"),
                                          "--wbits", "4", "--equalize", "--bias-correction", "--adaround",
                                          "--adaround-iters", "50", "--keep-float", "head/fc", "--int16", "enc/conv1",
                                          "-o", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "adaround: 2 layer(s)" in r.output and "bias correction: 2 layer(s)" in r.output
    meta = load(out).metadata["quantization"]
    assert meta["adaround"]["iters"] == 50 and meta["mode"] == "static"
    assert meta["equalization"]["pairs"][0] == {"first": "enc/conv1", "second": "enc/conv2", "through": [],
                                                "scale_min": meta["equalization"]["pairs"][0]["scale_min"],
                                                "scale_max": meta["equalization"]["pairs"][0]["scale_max"]}
    assert [f["node"] for f in meta["float_nodes"]] == ["head/fc"]
    assert json.dumps(meta)  # JSON-able
    r = CliRunner().invoke(quantize_cmd, [str(float_qir), "--adaround-iters", "5", "--calib",
                                          str(tmp_path / "quant_dataset_x.npy"), "-o", str(tmp_path / "b.qir")])
    assert r.exit_code != 0 and isinstance(r.exception, QtcError) and "need --adaround" in str(r.exception)
    r = CliRunner().invoke(quantize_cmd, [str(float_qir), "--mode", "dynamic", "--bias-correction",
                                          "-o", str(tmp_path / "c.qir")])
    assert r.exit_code != 0 and "need --calib" in str(r.exception)
