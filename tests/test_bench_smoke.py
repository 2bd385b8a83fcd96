"""bench.ptq_vs_peers: the ORT peer's Entropy handling, and one small model end to end with few samples."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import has_module, make_onnx_bytes

needs_ort = pytest.mark.skipif(not has_module("onnxruntime"), reason="onnxruntime is not installed")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    p = tmp_path_factory.mktemp("ort") / "tiny.onnx"
    p.write_bytes(make_onnx_bytes())
    calib = np.random.default_rng(0).laplace(0.0, 0.5, (32, 3, 8, 8)).astype(np.float32)
    return p, calib


@pytest.fixture(scope="module")
def entropy_2048(tiny_onnx, tmp_path_factory):
    """ORT's Entropy calibrator with 2048 bins, run once (its KL search takes seconds)."""
    from bench.peers.ort_peer import entropy_ranges

    path, calib = tiny_onnx
    return entropy_ranges(path, calib, tmp_path_factory.mktemp("ent"))


@needs_ort
def test_ort_entropy_default_equals_minmax_and_2048_bins_clip(tmp_path, tiny_onnx, entropy_2048):
    """The pitfall bench/peers/ort_peer.py works around: with quantize_static's fixed 128/128 bins,
    ORT's Entropy calibrator returns the MinMax ranges; with 2048 bins it clips."""
    from bench.peers.ort_peer import entropy_ranges, minmax_ranges, ranges_dict

    path, calib = tiny_onnx
    mm = ranges_dict(minmax_ranges(path, calib, tmp_path))
    ent128 = ranges_dict(entropy_ranges(path, calib, tmp_path, {"num_bins": 128, "num_quantized_bins": 128}))
    ent2048 = ranges_dict(entropy_2048)
    assert mm.keys() == ent128.keys() == ent2048.keys() and "x" in mm
    for k in mm:
        assert ent128[k] == pytest.approx(mm[k], rel=1e-6, abs=1e-7), k
    clipped = [k for k in mm if ent2048[k][1] < 0.99 * mm[k][1] or ent2048[k][0] > 0.99 * mm[k][0]]
    assert clipped, (mm, ent2048)


@needs_ort
def test_ort_entropy_cache_and_overrides_give_the_same_model(tmp_path, tiny_onnx, entropy_2048, monkeypatch):
    """The 2048-bin ranges fed through calibration_cache_path and through TensorQuantOverrides
    give identical QDQ params; plain quantize_static Entropy gives MinMax's."""
    import inspect

    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import quantize_static

    from bench.peers import ort_peer

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        pytest.skip("this onnxruntime has no calibration_cache_path")
    monkeypatch.setattr(ort_peer, "entropy_ranges", lambda *a, **k: entropy_2048)
    path, calib = tiny_onnx

    def params(p):
        m = onnx.load(str(p))
        return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer
                if i.name.endswith("_scale") or i.name.endswith("_zero_point")}

    rec_c = ort_peer.quantize_ort(path, calib, tmp_path / "c.onnx", "entropy", via="cache")
    rec_o = ort_peer.quantize_ort(path, calib, tmp_path / "o.onnx", "entropy", via="overrides")
    ort_peer.quantize_ort(path, calib, tmp_path / "mm.onnx", "minmax")
    ort_peer.quantize_ort(path, calib, tmp_path / "qs.onnx", "entropy_default")
    c, o, mm, qs = (params(tmp_path / f"{k}.onnx") for k in ("c", "o", "mm", "qs"))
    assert "cache" in rec_c["calibration"] and "TensorQuantOverrides" in rec_o["calibration"]
    assert c.keys() == o.keys() and all(np.array_equal(c[k], o[k]) for k in c)
    assert mm.keys() == qs.keys() and all(np.array_equal(mm[k], qs[k]) for k in mm)
    assert any(not np.array_equal(c[k], mm[k]) for k in c)
    y = ort_peer.ort_predict(tmp_path / "c.onnx")(calib[:3])
    assert y.shape == (3, 2) and np.all(np.isfinite(y))


def test_bench_small_model_end_to_end(tmp_path, example_models_dir):
    """policy_head with 64 calibration / 100 eval samples, every peer, W8A8 and W4A4 (~20-30 s on 2 cores)."""
    from bench import ptq_vs_peers as B

    out = tmp_path / "res.json"
    argv = ["--models", "policy_head", "--models-dir", str(example_models_dir), "--calib-count", "64",
            "--eval-count", "100", "--bits", "w8a8,w4a4", "--adaround-iters", "100", "--out", str(out)]
    assert B.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == B.SCHEMA and doc["calib_count"] == 64 and doc["eval_count"] == 100
    m = doc["models"]["policy_head"]
    assert m["metric"] == "accuracy" and m["calib_samples"] == 64 and m["eval_samples"] == 100
    res = m["results"]
    expected = {"float", "tflite-int8", *B.ORT_METHODS,
                *(f"qtc-{k}-{b}" for k in B.QTC_METHODS for b in ("w8a8", "w4a4"))}
    if doc["adaround"]:
        expected |= {"qtc-auto+adaround-w8a8", "qtc-auto+adaround-w4a4", B.TENSOR_INPUT_ROW}
    assert set(res) == expected
    assert res["qtc-auto-w8a8"]["auto"]["scored_samples"] == 64  # chosen on the calibration samples only
    for r in (res["qtc-minmax-w8a8"], res["qtc-mse-w4a4"]):  # FC-fed input: per-feature params tried, scored
        pc = r["per_feature_choice"]
        assert pc["chosen"] == min(pc["error"], key=pc["error"].get)
        assert r["per_feature_input"] == (["input"] if pc["chosen"] == "per_feature" else [])
    if doc["adaround"]:
        assert res[B.TENSOR_INPUT_ROW]["per_feature_input"] == []
    v = m["verdicts"]
    w8_rows = {k: r["accuracy"] for k, r in res.items() if k.startswith("qtc-") and k.endswith("-w8a8")}
    assert v["best_label"] in w8_rows and v["w8a8"]["best"] == max(w8_rows.values())
    assert v["recipe"] == B.BEST and v["w8a8"]["float"] == res["float"]["accuracy"]
    assert v["w8a8"]["loss"] == pytest.approx(res["float"]["accuracy"] - max(w8_rows.values()))
    assert "w4a8" not in v  # no W4A8 rows were run
    for label, r in res.items():
        assert "error" not in r, (label, r)
        assert 0.0 <= r["accuracy"] <= 1.0
    # the float column is the float model on these 100 samples; int8 results stay close to it
    from models import zoo

    data = zoo.load_data("policy_head", example_models_dir)
    from bench.ptq_vs_peers import _load_graph, qtc_predict

    meta = zoo.load_meta("policy_head", example_models_dir)
    g = _load_graph(example_models_dir / "policy_head" / meta["files"]["onnx"])
    logits = qtc_predict(g, quantized=False)(data["x_eval"][:100])
    assert res["float"]["accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, 1) == data["y_eval"][:100])))
    for label in ("tflite-int8", "ort-minmax", "ort-entropy", "qtc-minmax-w8a8", "qtc-entropy-w8a8"):
        assert abs(res[label]["accuracy"] - res["float"]["accuracy"]) <= 0.05, label
    assert res["ort-entropy-qs"]["accuracy"] == res["ort-minmax"]["accuracy"]
    assert res["qtc-minmax-w4a4"]["wbits"] == 4 and res["qtc-minmax-w4a4"]["abits"] == 4
    assert "BUILTIN_REF" in res["tflite-int8"]["how"]["runtime"]
