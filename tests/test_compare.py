"""qtc compare: the metrics on known arrays, the verdict bands, layer matching, the report files, the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_onnx_bytes

from qtc.cli import cli
from qtc.errors import QtcError
from qtc.eval import metrics as M
from qtc.eval import report
from qtc.eval.compare import compare, evaluate_float, match_layers
from qtc.interp.runner import run, run_quantized

EVAL_KEYS = {"schema", "variant", "qtc_version", "float_model", "quant_model", "numerics", "quantization", "eval",
             "metric", "summary", "outputs", "layers", "skipped_layers"}
OUTPUT_KEYS = {"quant_output", "shape", "mse", "max_abs_err", "mean_abs_err", "p99_abs_err", "mean_sample_max_abs_err",
               "cosine", "min_sample_cosine", "nan", "inf", "finite", "sqnr_db", "mse_verdict", "max_error_verdict"}
SUMMARY_KEYS = {"mse", "max_abs_err", "mean_sample_max_abs_err", "p99_abs_err", "cosine", "finite", "verdict",
                "max_error_verdict"}
LAYER_KEYS = {"tensor", "node", "op", "float_tensor", "matched_by", "dtype", "sqnr_db", "mse"}


# ------------------------------------------------------------------ metrics on known arrays
def test_mse_abs_errors_and_p99():
    ref = np.zeros((2, 50), np.float32)
    test = np.arange(100, dtype=np.float32).reshape(2, 50) / 100.0  # |err| = 0.00 .. 0.99
    assert M.mse([0, 0, 0, 0], [1, -1, 2, 0]) == pytest.approx(1.5)
    s = M.abs_error_stats(ref, test)
    assert s["max_abs_err"] == pytest.approx(0.99)
    assert s["mean_abs_err"] == pytest.approx(0.495)
    assert s["p99_abs_err"] == pytest.approx(0.9801, abs=1e-6)  # linear interpolation between 0.98 and 0.99
    assert M.mean_sample_max_err(ref, test) == pytest.approx((0.49 + 0.99) / 2)
    with pytest.raises(ValueError):
        M.mse(np.zeros(3), np.zeros(4))


def test_cosine_sqnr_accuracy_finite():
    assert M.cosine([1, 0], [0, 2]) == pytest.approx(0.0)
    assert M.cosine([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.cosine([1, 2], [-1, -2]) == pytest.approx(-1.0)
    assert M.cosine([0, 0], [0, 0]) == 1.0 and M.cosine([0, 0], [1, 0]) == 0.0
    assert M.cosine([3, 4], [4, 3]) == pytest.approx(24 / 25)
    assert list(M.per_sample_cosine([[1, 0], [1, 1]], [[1, 0], [1, -1]])) == pytest.approx([1.0, 0.0])
    assert M.sqnr([1, 1, 1, 1], [1.1, 0.9, 1.1, 0.9]) == pytest.approx(20.0)  # 4 / 0.04 = 100x
    assert M.sqnr([1, 2], [1, 2]) == math.inf and M.json_float(math.inf) is None
    assert M.accuracy([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], [1, 0, 0]) == pytest.approx(2 / 3)
    assert M.agreement([[0, 1], [1, 0]], [[0, 2], [0, 1]]) == 0.5
    assert M.finite_check(np.array([1.0, np.nan, np.inf, -np.inf])) == {"nan": 1, "inf": 2}
    out = M.output_errors(np.ones((2, 2)), np.array([[1.0, np.nan], [1.0, 1.0]]))
    assert out["nan"] == 1 and out["finite"] is False and out["mse_verdict"] == "significant"


@pytest.mark.parametrize("value,verdict", [(0.0, "negligible"), (0.000234, "negligible"), (0.001, "acceptable"),
                                           (0.0099, "acceptable"), (0.01, "acceptable"), (0.0234, "significant"),
                                           (float("nan"), "significant")])
def test_mse_verdict_bands(value, verdict):
    assert M.mse_verdict(value) == verdict


@pytest.mark.parametrize("value,verdict", [(0.012, "good"), (0.05, "acceptable"), (0.1, "acceptable"),
                                           (0.156, "poor")])
def test_max_error_verdict_bands(value, verdict):
    assert M.max_error_verdict(value) == verdict


# ------------------------------------------------------------------ compare on the hand-built graphs
@pytest.fixture
def eval_set():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (12, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 2, 12)
    return x, y


def test_compare_document_and_layer_sqnr(float_graph, quant_graph, eval_set):
    x, y = eval_set
    doc = compare(float_graph, quant_graph, {"x": x}, y, metric="auto")
    assert EVAL_KEYS <= set(doc)
    assert set(doc["summary"]) == SUMMARY_KEYS and set(doc["outputs"]["y"]) == OUTPUT_KEYS
    assert doc["metric"]["name"] == "accuracy" and doc["eval"]["samples"] == 12
    # output metrics agree with a direct run of both graphs
    fy = np.concatenate([run(float_graph, {"x": x[i:i + 1]})["y"] for i in range(12)])
    qy = np.concatenate([run_quantized(quant_graph, {"x": x[i:i + 1]})["y"] for i in range(12)])
    assert doc["outputs"]["y"]["mse"] == pytest.approx(M.mse(fy, qy))
    assert doc["metric"]["float"] == pytest.approx(M.accuracy(fy, y))
    assert doc["metric"]["quant"] == pytest.approx(M.accuracy(qy, y))
    assert doc["summary"]["verdict"] == M.mse_verdict(doc["summary"]["mse"])
    # every layer matched by name, none skipped; input SQNR is that of quantize->dequantize
    assert [r["tensor"] for r in doc["layers"]] == ["x", "enc/conv1:0", "enc/conv2:0", "y"]
    assert doc["skipped_layers"] == [] and all(set(r) == LAYER_KEYS for r in doc["layers"])
    assert doc["layers"][-1]["sqnr_db"] == pytest.approx(doc["outputs"]["y"]["sqnr_db"], rel=1e-9)
    assert doc["layers"][-1]["sqnr_db"] == pytest.approx(M.sqnr(fy, qy), rel=1e-9)
    qp = quant_graph.tensors["x"].quant
    assert doc["layers"][0]["sqnr_db"] == pytest.approx(M.sqnr(x, qp.dequantize(qp.quantize(x))), rel=1e-9)
    env_f = run(float_graph, {"x": x[:1]}, keep=True)
    env_q = run_quantized(quant_graph, {"x": x[:1]}, keep=True)
    t = quant_graph.tensors["enc/conv1:0"]
    one = compare(float_graph, quant_graph, {"x": x[:1]})
    assert one["layers"][1]["sqnr_db"] == pytest.approx(
        M.sqnr(env_f["enc/conv1:0"], t.quant.dequantize(env_q["enc/conv1:0"])), rel=1e-9)
    assert one["metric"]["name"] == "none"


def test_layer_matching_by_node_name_and_skips(float_graph, quant_graph):
    q = quant_graph.copy()
    # rename conv1's output in the quantized graph: it is found through the node name
    q.tensors["renamed"] = q.tensors.pop("enc/conv1:0")
    q.tensors["renamed"].name = "renamed"
    for n in q.nodes:
        n.inputs = ["renamed" if i == "enc/conv1:0" else i for i in n.inputs]
        n.outputs = ["renamed" if o == "enc/conv1:0" else o for o in n.outputs]
    q.nodes[1].name = "something/else"  # conv2: neither its tensor name nor its node name in the float graph
    q.tensors["other:0"] = q.tensors.pop("enc/conv2:0")
    for n in q.nodes:
        n.inputs = ["other:0" if i == "enc/conv2:0" else i for i in n.inputs]
        n.outputs = ["other:0" if o == "enc/conv2:0" else o for o in n.outputs]
    matched, skipped = match_layers(float_graph, q)
    by = {m["tensor"]: (m["float_tensor"], m["matched_by"]) for m in matched}
    assert by["renamed"] == ("enc/conv1:0", "node name")
    assert by["y"] == ("y", "tensor name")
    assert [s["node"] for s in skipped] == ["something/else"]
    # normalized names: '.' and '/' alike, a ':0' suffix ignored
    q.tensors["enc.conv2"] = q.tensors.pop("other:0")
    for n in q.nodes:
        n.outputs = ["enc.conv2" if o == "other:0" else o for o in n.outputs]
        n.inputs = ["enc.conv2" if i == "other:0" else i for i in n.inputs]
    matched, skipped = match_layers(float_graph, q)
    assert ("enc.conv2", "enc/conv2:0", "normalized name") in [(m["tensor"], m["float_tensor"], m["matched_by"])
                                                               for m in matched]
    assert skipped == []


def _rename_tensor(g, old, new):
    g.tensors[new] = g.tensors.pop(old)
    g.tensors[new].name = new
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
        n.outputs = [new if o == old else o for o in n.outputs]
    g.inputs = [new if i == old else i for i in g.inputs]
    g.outputs = [new if o == old else o for o in g.outputs]


def test_layer_matching_across_front_ends(float_graph, quant_graph):
    """TFLite-style names ('net/conv1/Relu_1') against Keras-style ones ('conv1'): a scope component
    matches only a float tensor made by the same kind of op; I/O by position."""
    f, q = float_graph.copy(), quant_graph.copy()
    f.nodes[0].name, f.nodes[2].name = "conv1", "fc"
    _rename_tensor(f, "enc/conv1:0", "c1")
    for n, name in zip(q.nodes, ("net/conv1/Relu_1", "net/fc/x", "Identity")):
        n.name = name
        _rename_tensor(q, n.outputs[0], name + ":0")
    _rename_tensor(q, "x", "serving_default_x:0")
    matched, skipped = match_layers(f, q)
    got = {m["tensor"]: (m["float_tensor"], m["matched_by"]) for m in matched}
    assert got == {"serving_default_x:0": ("x", "input position"), "net/conv1/Relu_1:0": ("c1", "scope component"),
                   "Identity:0": ("y", "output position")}
    assert [s["tensor"] for s in skipped] == ["net/fc/x:0"]  # 'fc' names an FC output; this is a Conv2D


def test_compare_rejects_swapped_and_mismatched(float_graph, quant_graph, eval_set):
    x, y = eval_set
    with pytest.raises(QtcError, match="float model is quantized"):
        compare(quant_graph, float_graph, {"x": x})
    with pytest.raises(QtcError, match="no integer tensors"):
        compare(float_graph, float_graph, {"x": x})
    with pytest.raises(QtcError, match="model takes samples of"):
        compare(float_graph, quant_graph, {"x": x.transpose(0, 3, 1, 2)})
    with pytest.raises(QtcError, match="labels have shape"):
        compare(float_graph, quant_graph, {"x": x}, y[:5])
    with pytest.raises(QtcError, match="needs labels"):
        compare(float_graph, quant_graph, {"x": x}, None, metric="accuracy")


def test_report_files_and_json_fields(tmp_path, float_graph, quant_graph, eval_set):
    x, y = eval_set
    doc = compare(float_graph, quant_graph, {"x": x}, y, variant="ptq", layer_samples=4)
    paths = report.write(doc, tmp_path)
    assert {p.name for p in paths.values()} == {"eval_ptq.json", "report_ptq.md", "report_ptq_sqnr.png"}
    back = json.loads((tmp_path / "eval_ptq.json").read_text())
    assert EVAL_KEYS <= set(back) and back["eval"]["layer_samples"] == 4
    assert back["summary"]["verdict"] in ("negligible", "acceptable", "significant")
    md = (tmp_path / "report_ptq.md").read_text()
    assert "![SQNR per layer](report_ptq_sqnr.png)" in md and f"**Verdict: {back['summary']['verdict']}**" in md
    for r in back["layers"]:
        assert r["node"] in md
    png = (tmp_path / "report_ptq_sqnr.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    fdoc = evaluate_float(float_graph, {"x": x}, y)
    report.write(fdoc, tmp_path)
    f = json.loads((tmp_path / "eval_float.json").read_text())
    assert f["variant"] == "float" and f["metric"]["value"] == pytest.approx(back["metric"]["float"])
    assert f["outputs"]["y"]["nan"] == 0


# ------------------------------------------------------------------ the CLI end to end
def qtc(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def tiny_onnx_pair(tmp_path):
    """A small ONNX model, quantized by qtc's PTQ in the test; eval samples and labels as .npy."""
    from qtc.frontends import load_model
    from qtc.ir import save
    from qtc.passes.quantize import quantize

    src = tmp_path / "tiny.onnx"
    src.write_bytes(make_onnx_bytes())
    g = load_model(str(src))
    rng = np.random.default_rng(3)
    calib = rng.uniform(-1, 1, (24, 3, 8, 8)).astype(np.float32)
    save(quantize(g, {g.inputs[0]: calib}, method="minmax", progress=False), tmp_path / "tiny_q.qir")
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (16, 3, 8, 8)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 16))
    return tmp_path


def test_cli_compare_end_to_end(tiny_onnx_pair):
    d = tiny_onnx_pair
    out = d / "reports"
    res = qtc("compare", d / "tiny.onnx", d / "tiny_q.qir", "--data", d / "x.npy", "--labels", d / "y.npy",
              "--with-float", "-o", out)
    assert res.exit_code == 0, res.output
    assert "accuracy: float" in res.stdout and "output MSE" in res.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["eval_float.json", "eval_ptq.json", "report_float.md", "report_ptq.md", "report_ptq_sqnr.png"]
    doc = json.loads((out / "eval_ptq.json").read_text())
    assert doc["float_model"] == "tiny.onnx" and doc["quant_model"] == "tiny_q.qir"
    assert doc["eval"]["samples"] == 16 and doc["quantization"]["method"] == "minmax"
    assert [r["op"] for r in doc["layers"]] == ["(input)", "Conv2D", "Flatten", "FullyConnected"]
    assert all(r["matched_by"] == "tensor name" for r in doc["layers"]) and doc["skipped_layers"] == []
    assert doc["summary"]["cosine"] > 0.99
    # deterministic: a second run writes byte-identical files (PNG included)
    out2 = d / "reports2"
    assert qtc("compare", d / "tiny.onnx", d / "tiny_q.qir", "--data", d / "x.npy", "--labels", d / "y.npy",
               "--with-float", "-o", out2).exit_code == 0
    for name in names:
        assert (out / name).read_bytes() == (out2 / name).read_bytes(), name
    # an .npz with :KEY, a variant name, --count
    np.savez(d / "data.npz", x_eval=np.load(d / "x.npy"), y_eval=np.load(d / "y.npy"))
    res = qtc("compare", d / "tiny.onnx", d / "tiny_q.qir", "--data", f"{d / 'data.npz'}:x_eval",
              "--labels", f"{d / 'data.npz'}:y_eval", "--variant", "w8", "--count", "5", "--no-plot", "-o", out)
    assert res.exit_code == 0, res.output
    w8 = json.loads((out / "eval_w8.json").read_text())
    assert w8["variant"] == "w8" and w8["eval"]["samples"] == 5 and not (out / "report_w8_sqnr.png").exists()


def test_cli_compare_reads_a_calibrate_folder(tiny_onnx_pair):
    """--data DIR takes the frozen eval split (and its labels) that 'qtc calibrate' wrote."""
    d = tiny_onnx_pair
    np.savez(d / "src.npz", x=np.load(d / "x.npy"), labels=np.load(d / "y.npy"))
    res = qtc("calibrate", d / "tiny.onnx", "--data", d / "src.npz", "--calib-count", "6", "--eval-count", "10",
              "--quiet", "-o", d / "split")
    assert res.exit_code == 0, res.output
    res = qtc("compare", d / "tiny.onnx", d / "tiny_q.qir", "--data", d / "split", "--no-plot", "-o", d / "r")
    assert res.exit_code == 0, res.output
    doc = json.loads((d / "r" / "eval_ptq.json").read_text())
    assert doc["eval"]["samples"] == 10 and doc["metric"]["name"] == "accuracy"
    ev = np.load(d / "split" / "quant_eval_x.npy")
    assert doc["eval"]["sha256"] == compare_sha({"x": ev})


def compare_sha(arrays):
    from qtc.eval.compare import data_sha256

    return data_sha256(arrays)


def test_cli_compare_float_variant_and_errors(tiny_onnx_pair):
    d = tiny_onnx_pair
    res = qtc("compare", d / "tiny.onnx", "--variant", "float", "--data", d / "x.npy", "--labels", d / "y.npy",
              "-o", d / "f")
    assert res.exit_code == 0, res.output
    f = json.loads((d / "f" / "eval_float.json").read_text())
    assert f["metric"]["name"] == "accuracy" and 0.0 <= f["metric"]["value"] <= 1.0
    assert qtc("compare", d / "tiny.onnx", d / "tiny_q.qir", "--variant", "float", "--data", d / "x.npy").exit_code == 2
    swapped = qtc("compare", d / "tiny_q.qir", d / "tiny.onnx", "--data", d / "x.npy")
    assert swapped.exit_code == 2 and "float model is quantized" in swapped.stderr
    bad = qtc("compare", d / "tiny.onnx", d / "tiny_q.qir", "--data", f"{d / 'x.npy'}", "--labels", d / "nope.npy")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")
