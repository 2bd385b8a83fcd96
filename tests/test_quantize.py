"""The quantize pass: accuracy through the integer interpreter, the TFLite int8 scheme's
rules (fixed outputs, same-params ops, Concat requantization, bias scales), modes,
sub-byte bits, determinism, no mutation, and the calibrate/quantize CLI."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.interp import run, run_quantized
from qtc.ir import Graph
from qtc.ir.serialize import graph_to_json, save
from qtc.ir.validate import infer_shapes
from qtc.passes.quantize import quantize
from qtc.ir import with_batch  # noqa: E402


# ------------------------------------------------------------------ helpers


def accuracy(g: Graph, x: np.ndarray, y: np.ndarray) -> float:
    gb = with_batch(g, len(x))
    out = run_quantized(gb, {gb.inputs[0]: x}) if gb.is_quantized else run(gb, {gb.inputs[0]: x})
    return float(np.mean(np.argmax(out[gb.outputs[0]], axis=-1) == y))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], d.target[perm]
    return x[:1200], y[:1200], x[1200:], y[1200:]


@pytest.fixture(scope="module")
def mlp(digits):
    """x[1,64] -> FC 32 relu -> FC 10 -> Softmax, trained with sklearn in about a second."""
    from sklearn.neural_network import MLPClassifier

    xtr, ytr, _, _ = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: accuracy is checked below instead
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(xtr, ytr)
    g = Graph(name="digits_mlp")
    g.add_tensor("x", (1, 64))
    g.add_const("fc1/w", clf.coefs_[0].T.astype(np.float32))
    g.add_const("fc1/b", clf.intercepts_[0].astype(np.float32))
    g.add_const("fc2/w", clf.coefs_[1].T.astype(np.float32))
    g.add_const("fc2/b", clf.intercepts_[1].astype(np.float32))
    g.add_node("FullyConnected", ["x", "fc1/w", "fc1/b"], ["fc1:0"], name="fc1", activation="relu")
    g.add_node("FullyConnected", ["fc1:0", "fc2/w", "fc2/b"], ["logits"], name="fc2")
    g.add_node("Softmax", ["logits"], ["probs"], name="softmax")
    g.inputs, g.outputs = ["x"], ["probs"]
    return infer_shapes(g)


@pytest.fixture(scope="module")
def cnn(digits):
    """NCHW: conv 8 relu -> maxpool 2 -> conv 16 relu -> flatten -> fc 10, trained with torch."""
    torch = pytest.importorskip("torch")
    xtr, ytr, _, _ = digits
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xtr.reshape(-1, 1, 8, 8)), torch.from_numpy(ytr.astype(np.int64))
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
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


# ------------------------------------------------------------------ accuracy
def test_mlp_w8a8_minmax_within_one_point(mlp, digits):
    xtr, _, xte, yte = digits
    q = quantize(mlp, {"x": xtr[:200]}, target="esp32", method="minmax", progress=False)
    fa, qa = accuracy(mlp, xte, yte), accuracy(q, xte, yte)
    assert fa > 0.9
    assert qa >= fa - 0.01, (fa, qa)
    assert q.tensors["probs"].quant.scale[0] == np.float32(1 / 256) and q.tensors["probs"].quant.zero_point[0] == -128


def test_cnn_w8a8_minmax_within_one_point(cnn, digits):
    xtr, _, xte, yte = digits
    x4 = lambda a: a.reshape(-1, 1, 8, 8)  # noqa: E731
    q = quantize(cnn, {"x": x4(xtr[:200])}, target="host", method="minmax", progress=False)
    fa, qa = accuracy(cnn, x4(xte), yte), accuracy(q, x4(xte), yte)
    assert fa > 0.9
    assert qa >= fa - 0.01, (fa, qa)
    # canonicalize fused the standalone Relu into c1; MaxPool and Flatten keep their input's params
    assert [n.op for n in q.nodes] == ["Conv2D", "MaxPool", "Conv2D", "Flatten", "FullyConnected"]
    by_op = {n.op: n for n in q.nodes}
    for op in ("MaxPool", "Flatten"):
        n = by_op[op]
        assert q.tensors[n.outputs[0]].quant.equals(q.tensors[n.inputs[0]].quant)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse", "ema"])
def test_mlp_other_methods_close_to_float(mlp, digits, method):
    xtr, _, xte, yte = digits
    q = quantize(mlp, {"x": xtr[:200]}, target="esp32", method=method, progress=False)
    assert accuracy(q, xte, yte) >= accuracy(mlp, xte, yte) - 0.03
    assert q.metadata["quantization"]["observer"]["method"] == method


@pytest.mark.parametrize("target", ["ti-npu", "esp-dl", "tensorrt", "rpi5"])
def test_mlp_on_constrained_targets(mlp, digits, target):
    xtr, _, xte, yte = digits
    q = quantize(mlp, {"x": xtr[:200]}, target=target, progress=False)
    assert accuracy(q, xte, yte) >= accuracy(mlp, xte, yte) - 0.03
    if target in ("ti-npu", "esp-dl", "tensorrt"):
        # symmetric targets: Softmax's fixed zero point -128 cannot hold, so it stays float
        assert q.tensors["probs"].dtype == "float32"
        assert any(f["node"] == "softmax" for f in q.metadata["quantization"]["float_nodes"])


# ------------------------------------------------------------------ scheme rules
def _rules_graph(rng) -> Graph:
    """x -> FC relu -> [Sigmoid, Tanh, FC] -> Concat -> Add(const) -> Reshape -> out."""
    g = Graph(name="rules")
    g.add_tensor("x", (1, 16))
    g.add_const("a/w", rng.normal(0, 0.5, (8, 16)).astype(np.float32))
    g.add_const("a/b", rng.normal(0, 0.1, (8,)).astype(np.float32))
    g.add_const("b/w", rng.normal(0, 2.0, (8, 8)).astype(np.float32))
    g.add_const("k", rng.normal(0, 1.0, (1, 24)).astype(np.float32))
    g.add_node("FullyConnected", ["x", "a/w", "a/b"], ["a:0"], name="a", activation="relu")
    g.add_node("Sigmoid", ["a:0"], ["sig:0"], name="sig")
    g.add_node("Tanh", ["a:0"], ["tanh:0"], name="tanh")
    g.add_node("FullyConnected", ["a:0", "b/w", ""], ["b:0"], name="b")
    g.add_node("Concat", ["sig:0", "tanh:0", "b:0"], ["cat:0"], name="cat", axis=1)
    g.add_node("Add", ["cat:0", "k"], ["add:0"], name="add")
    g.add_node("Reshape", ["add:0"], ["out"], name="reshape", shape=[1, 4, 6])
    g.inputs, g.outputs = ["x"], ["out"]
    return infer_shapes(g)


def test_scheme_rules_and_integer_run():
    rng = np.random.default_rng(0)
    g = _rules_graph(rng)
    calib = rng.normal(0, 1, (64, 16)).astype(np.float32)
    q = quantize(g, {"x": calib}, progress=False)
    t = q.tensors
    assert t["x"].dtype == "int8" and t["out"].dtype == "int8"  # int8 graph I/O
    assert (float(t["sig:0"].quant.scale[0]), int(t["sig:0"].quant.zero_point[0])) == (1 / 256, -128)
    assert (float(t["tanh:0"].quant.scale[0]), int(t["tanh:0"].quant.zero_point[0])) == (1 / 128, 0)
    assert t["out"].quant.equals(t["add:0"].quant)  # Reshape keeps its input's params
    cat = q.node("cat")
    for i in cat.inputs:  # TFLite: Concat inputs and output share params (requantized where needed)
        assert t[i].quant.equals(t["cat:0"].quant)
    assert sum(n.op == "Quantize" for n in q.nodes) >= 2
    w = t["a/w"]
    assert w.dtype == "int8" and w.quant.axis == 0 and w.quant.narrow_range
    assert np.abs(w.data).max() == 127 and np.all(w.quant.zero_point == 0)
    bias = t["a/b"]
    assert bias.dtype == "int32"
    np.testing.assert_array_equal(bias.quant.scale, (np.float32(t["x"].quant.scale[0]) * w.quant.scale).astype(np.float32))
    assert t["k"].dtype == "int8" and t["k"].quant is not None  # Add's constant operand
    xt = rng.normal(0, 1, (1, 16)).astype(np.float32)
    ref = run(g, {"x": xt})["out"]
    out = run_quantized(q, {"x": xt})["out"]
    assert np.max(np.abs(out - ref)) < 0.15 * np.max(np.abs(ref)) + 0.05


def test_quantize_does_not_mutate_and_is_deterministic(mlp, digits, tmp_path):
    xtr = digits[0][:100]
    before = graph_to_json(mlp)
    q1 = quantize(mlp, {"x": xtr}, method="entropy", progress=False)
    q2 = quantize(mlp, {"x": xtr}, method="entropy", progress=False)
    after = graph_to_json(mlp)
    assert json.dumps(before[0]) == json.dumps(after[0])
    assert before[1].keys() == after[1].keys()
    assert all(np.array_equal(before[1][k], after[1][k]) for k in before[1])
    p1, p2 = save(q1, tmp_path / "a.qir"), save(q2, tmp_path / "b.qir")
    for f in ("graph.json", "weights.npz"):
        assert (p1 / f).read_bytes() == (p2 / f).read_bytes()
    meta = q1.metadata["quantization"]
    for key in ("method", "wbits", "abits", "mode", "target", "observer", "calibration"):
        assert key in meta
    assert meta["calibration"]["samples"] == 100 and len(meta["calibration"]["sha256"]) == 64


def test_dynamic_mode_int8_weights_float_activations(mlp, digits):
    _, _, xte, yte = digits
    q = quantize(mlp, None, mode="dynamic", progress=False)
    assert q.tensors["fc1/w"].dtype == "int8" and q.tensors["fc1/w"].quant.axis == 0
    assert q.tensors["x"].dtype == "float32" and q.tensors["probs"].dtype == "float32"
    deq = [n for n in q.nodes if n.op == "Dequantize"]
    assert {n.inputs[0] for n in deq} == {"fc1/w", "fc2/w"}
    assert accuracy(q, xte, yte) >= accuracy(mlp, xte, yte) - 0.01
    q2 = quantize(mlp, None, mode="dynamic", keep_float=["fc2"], progress=False)
    assert q2.tensors["fc1/w"].dtype == "int8" and q2.tensors["fc2/w"].dtype == "float32"
    assert q2.metadata["quantization"]["observer"] is None


def test_mixed_mode_keeps_layer_float(mlp, digits):
    xtr, _, xte, yte = digits
    q = quantize(mlp, {"x": xtr[:200]}, mode="mixed", keep_float=["fc2"], progress=False)
    ops = [n.op for n in q.nodes]
    assert ops == ["FullyConnected", "Dequantize", "FullyConnected", "Quantize", "Softmax"]
    assert q.tensors["fc2/w"].dtype == "float32" and q.tensors["logits"].dtype == "float32"
    assert q.tensors["fc1:0"].dtype == "int8"
    assert accuracy(q, xte, yte) >= accuracy(mlp, xte, yte) - 0.01
    with pytest.raises(QtcError, match="matches no node"):
        quantize(mlp, {"x": xtr[:20]}, mode="mixed", keep_float=["nope"], progress=False)


@pytest.mark.parametrize("wbits", [4, 2])
def test_sub_byte_weights(mlp, digits, wbits):
    xtr = digits[0][:100]
    q = quantize(mlp, {"x": xtr}, wbits=wbits, progress=False)
    qmax = (1 << (wbits - 1)) - 1
    for name in ("fc1/w", "fc2/w"):
        t = q.tensors[name]
        assert t.dtype == "int8" and t.quant.bits == wbits and t.quant.narrow_range
        assert t.data.min() >= -qmax and t.data.max() <= qmax and np.abs(t.data).max() == qmax
    assert q.tensors["fc1/w"].nbytes == (32 * 64 * wbits + 7) // 8


def test_4bit_activations(mlp, digits):
    xtr, _, xte, _ = digits
    q = quantize(mlp, {"x": xtr[:100]}, abits=4, progress=False)
    t = q.tensors["fc1:0"]
    assert t.dtype == "int8" and t.quant.bits == 4
    gb = with_batch(q, 50)
    vals = run_quantized(gb, {"x": xte[:50]}, raw=True, keep=True)["fc1:0"]
    assert vals.min() >= -8 and vals.max() <= 7


def test_int16_activations(mlp, digits):
    xtr = digits[0][:100]
    q = quantize(mlp, {"x": xtr}, int16=["fc1"], progress=False)
    t = q.tensors["fc1:0"]
    assert t.dtype == "int16" and t.quant.bits == 16 and t.quant.zero_point[0] == 0


def test_errors_are_user_errors(mlp, digits):
    with pytest.raises(QtcError, match="calibration data"):
        quantize(mlp, None, progress=False)
    with pytest.raises(QtcError, match="shape"):
        quantize(mlp, {"x": np.zeros((10, 63), np.float32)}, progress=False)
    with pytest.raises(QtcError, match="unknown calibration method"):
        quantize(mlp, {"x": digits[0][:10]}, method="kl", progress=False)
    q = quantize(mlp, {"x": digits[0][:10]}, progress=False)
    with pytest.raises(QtcError, match="already quantized"):
        quantize(q, {"x": digits[0][:10]}, progress=False)


# ------------------------------------------------------------------ dataset + CLI
def test_calibrate_and_quantize_cli(mlp, digits, tmp_path):
    from click.testing import CliRunner

    from qtc.quant_cli import calibrate_cmd, check_cmd, quantize_cmd

    x = np.concatenate([digits[0], digits[2]])
    np.savez(tmp_path / "digits.npz", x=x, labels=np.concatenate([digits[1], digits[3]]))
    model = save(mlp, tmp_path / "mlp.qir")
    runner = CliRunner()
    outs = []
    for d in ("d1", "d2"):
        r = runner.invoke(calibrate_cmd, [str(model), "--data", str(tmp_path / "digits.npz"), "--calib-count", "150",
                                          "--eval-count", "300", "--seed", "7", "-o", str(tmp_path / d), "--quiet"])
        assert r.exit_code == 0, r.output
        outs.append(tmp_path / d)
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == ["quant_dataset_labels.npy", "quant_dataset_probs_outputs.npy", "quant_dataset_x.npy",
                     "quant_eval_labels.npy", "quant_eval_probs_outputs.npy", "quant_eval_scenarios.json",
                     "quant_eval_x.npy"]
    for n in names:  # same seed, same bytes
        assert (outs[0] / n).read_bytes() == (outs[1] / n).read_bytes()
    rec = json.loads((outs[0] / "quant_eval_scenarios.json").read_text())
    assert rec["seed"] == 7 and rec["calib_count"] == 150 and rec["eval_count"] == 300
    cal, ev = np.load(outs[0] / "quant_dataset_x.npy"), np.load(outs[0] / "quant_eval_x.npy")
    assert cal.shape == (150, 64) and ev.shape == (300, 64)
    perm = np.random.default_rng(7).permutation(len(x))  # the documented split: disjoint slices of one permutation
    np.testing.assert_array_equal(cal, x[perm[:150]])
    np.testing.assert_array_equal(ev, x[perm[150:450]])
    ref = np.load(outs[0] / "quant_dataset_probs_outputs.npy")
    np.testing.assert_allclose(ref[:3], np.concatenate([run(mlp, {"x": cal[i:i + 1]})["probs"] for i in range(3)]),
                               rtol=1e-5, atol=1e-6)

    qpath = tmp_path / "mlp_q.qir"
    r = runner.invoke(quantize_cmd, [str(model), "--target", "ti-npu", "--method", "percentile", "--calib",
                                     str(outs[0] / "quant_dataset_x.npy"), "-o", str(qpath), "--quiet"])
    assert r.exit_code == 0, r.output
    from qtc.ir.serialize import load

    qg = load(qpath)
    assert qg.metadata["quantization"]["calibration"]["seed"] == 7
    r = runner.invoke(check_cmd, [str(qpath), "--target", "ti-npu"])
    # the only violation: Softmax (kept float, symmetric target) is not an NPU layer
    assert r.exit_code == 1 and r.output.splitlines()[0] == "softmax: [op] op Softmax is not supported on target ti-npu"
    r = runner.invoke(check_cmd, [str(qpath), "--target", "esp32"])
    assert r.exit_code == 0, r.output  # PoT, zero-point-0 params are also valid TFLM params
    r = runner.invoke(check_cmd, [str(tmp_path / "d1"), "--target", "esp32"])
    assert r.exit_code != 0 and isinstance(r.exception, QtcError)


def _image_model() -> Graph:
    g = Graph(name="img")
    g.add_tensor("image", (1, 6, 5, 3))
    g.add_const("w", np.full((2, 1, 1, 3), 0.5, np.float32))
    g.add_node("Conv2D", ["image", "w", ""], ["y"], name="conv", channels_last=True)
    g.inputs, g.outputs = ["image"], ["y"]
    return infer_shapes(g)


def test_dataset_sources_csv_images_function(tmp_path, monkeypatch):
    from PIL import Image

    from qtc.passes.quantize.dataset import load_calibration, make_dataset

    g = _image_model()
    rng = np.random.default_rng(0)
    # folder of images in class sub-folders -> resized, [0, 1], labels from folder names
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    rec = make_dataset(g, str(tmp_path / "imgs"), tmp_path / "o1", calib_count=4, eval_count=2, seed=1, progress=False)
    x = np.load(tmp_path / "o1" / "quant_dataset_image.npy")
    assert x.shape == (4, 6, 5, 3) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(np.concatenate([np.load(tmp_path / "o1" / f"quant_{s}_labels.npy") for s in ("dataset", "eval")])) \
        == [0, 0, 0, 1, 1, 1]
    assert rec["source"]["kind"] == "image-folder" and len(rec["source"]["sha256"]) == 64
    np.testing.assert_allclose(np.load(tmp_path / "o1" / "quant_dataset_y_outputs.npy"),
                               0.5 * x.sum(axis=-1, keepdims=True).repeat(2, axis=-1), rtol=1e-5)
    # csv: one flattened sample per row, header, extra label column
    rows = rng.normal(size=(10, 90)).round(3)
    lines = ["h" + ",h" * 90] + [",".join(map(str, r)) + f",{i % 3}" for i, r in enumerate(rows)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    make_dataset(g, str(tmp_path / "d.csv"), tmp_path / "o2", calib_count=6, eval_count=4, seed=0, progress=False)
    cal, meta = load_calibration(tmp_path / "o2", g)
    perm = np.random.default_rng(0).permutation(10)
    np.testing.assert_allclose(cal["image"], rows[perm[:6]].reshape(6, 6, 5, 3).astype(np.float32))
    assert meta["seed"] == 0 and meta["source"]["name"] == "d.csv"
    # module:function returning (inputs, labels)
    (tmp_path / "mydata.py").write_text(
        "import numpy as np\n"
        "def load():\n"
        "    return np.arange(12 * 90, dtype=np.float32).reshape(12, 6, 5, 3), np.arange(12)\n")
    monkeypatch.chdir(tmp_path)
    make_dataset(g, "mydata:load", tmp_path / "o3", calib_count=5, eval_count=7, seed=3, progress=False)
    assert np.load(tmp_path / "o3" / "quant_eval_labels.npy").shape == (7,)
    with pytest.raises(QtcError, match="exceed"):
        make_dataset(g, "mydata:load", tmp_path / "o4", calib_count=10, eval_count=5, progress=False)
    with pytest.raises(QtcError, match="cannot read data source"):
        make_dataset(g, str(tmp_path / "missing.npy"), tmp_path / "o5", progress=False)


def test_keep_float_scope_prefix(float_graph, calib_batch):
    calib = {"x": np.random.default_rng(2).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)}
    q = quantize(float_graph, calib, mode="mixed", keep_float=["enc"], progress=False)
    floats = [f["node"] for f in q.metadata["quantization"]["float_nodes"]]
    assert floats == ["enc/conv1", "enc/conv2"]
    assert q.tensors["x"].dtype == "float32" and q.tensors["y"].dtype == "int8"
    assert [n.op for n in q.nodes] == ["Conv2D", "Conv2D", "Quantize", "FullyConnected"]
    with pytest.raises(QtcError, match="matches no node"):
        quantize(float_graph, calib, keep_float=["en"], progress=False)  # not a whole scope name
