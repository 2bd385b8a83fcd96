"""qtc dualtrack: the decision rule, a Tensorlab-style TI NPU QAT run, the Deep Sets pair on the ESP32 budgets,
and a budget nothing meets."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import has_module

from qtc.dualtrack.decide import check_budgets, decide


# ------------------------------------------------------------------ the rule on its own
def _cand(name, metric, acc, sizes, lat_ms, arena=1000):
    return {"name": name, "track": name, "metrics": {"success_rate": metric, "accuracy": acc},
            "sub_models": {f"m{i}": {"size_bytes": s, "c_arena_bytes": arena} for i, s in enumerate(sizes)},
            "latency": {"end_to_end_ms": lat_ms}}


def test_check_budgets_pass_fail_and_unmeasured():
    c = _cand("ptq", 0.80, 0.90, [60_000, 110_000], 12.0)
    checks = check_budgets(c, {"model_bytes": 102400, "flash_bytes": 200_000, "latency_ms": 50,
                               "accuracy_drop": 0.10, "ram_bytes": 999}, float_accuracy=0.95)
    assert checks["model_bytes"] == {"limit": 102400, "value": 110_000, "status": "fail",
                                     "label": "model size per sub-model"}
    assert checks["flash_bytes"]["value"] == 170_000 and checks["flash_bytes"]["status"] == "pass"
    assert checks["latency_ms"]["status"] == "pass"
    assert checks["accuracy_drop"]["value"] == pytest.approx(0.05) and checks["accuracy_drop"]["status"] == "pass"
    assert checks["ram_bytes"]["status"] == "fail"
    c["latency"] = None
    assert check_budgets(c, {"latency_ms": 50}, 0.95)["latency_ms"]["status"] == "not measured"


def test_decide_best_metric_among_passing_and_ties():
    budgets = {"model_bytes": 102400, "latency_ms": 50, "accuracy_drop": 0.10}
    cands = [_cand("ptq", 0.79, 0.91, [6000, 5000], 1.0),
             _cand("qat", 0.83, 0.70, [6000, 5000], 1.0),        # best success rate, but drops 25 points
             _cand("qat_keras", 0.81, 0.90, [200_000, 5000], 1.0),  # too big
             _cand("big", 0.79, 0.92, [7000, 5000], 1.0)]          # ties ptq on the metric, better accuracy
    d = decide(cands, budgets, "success_rate", float_accuracy=0.95)
    assert d["winner"] == "big" and d["ranking"] == ["big", "ptq"]
    assert d["failed"] == {"qat": ["accuracy_drop"], "qat_keras": ["model_bytes"]}
    assert "tied with ptq" in d["why"] and "qat (accuracy_drop)" in d["why"]
    assert [c["passes"] for c in cands] == [True, False, False, True]


def test_decide_no_winner_says_why():
    cands = [_cand("ptq", 0.8, 0.9, [6000], 80.0), _cand("qat", 0.8, 0.9, [6000], None)]
    d = decide(cands, {"latency_ms": 50}, "success_rate", float_accuracy=0.9)
    assert d["winner"] is None and d["ranking"] == []
    assert "no candidate meets every budget" in d["why"]
    assert "ptq: end-to-end latency fail" in d["why"] and "qat: end-to-end latency not measured" in d["why"]


# ------------------------------------------------------------------ end to end
def _run(tmp_path, doc: dict, name: str = "cfg.yaml", *extra):
    from qtc.cli import cli

    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = CliRunner().invoke(cli, ["dualtrack", str(path), *extra])
    assert res.exit_code == 0, res.output
    return res


def _needs_qat():
    if not has_module("qtc.qat"):
        pytest.skip("qtc.qat (torch QAT) is not in this tree")


def test_tensorlab_yaml_ti_npu_qat_w4a8_ts_cnn(tmp_path, example_models_dir):
    """A Tensorlab-style config (quantization: 2, QAT, 4-bit weights, 8-bit activations) on ts_cnn."""
    _needs_qat()
    from qtc.ir import load
    from qtc.passes.quantize import check

    out = tmp_path / "ti"
    doc = {"common": {"target_device": "F28P55"},
           "training": {"model_name": "ts_cnn", "training_epochs": 1, "batch_size": 32, "quantization": 2,
                        "quantization_method": "QAT", "quantization_weight_bitwidth": 4,
                        "quantization_activation_bitwidth": 8},
           "models_dir": str(example_models_dir), "calibration": {"samples": 96}, "eval": {"samples": 120},
           "budgets": {"accuracy_drop": 0.5}, "output": str(out)}
    res = _run(tmp_path, doc)
    assert "winner: qat" in res.output
    rep = json.loads((out / "dualtrack.json").read_text())
    assert rep["target"] == "ti-npu" and rep["quantization"]["mode"] == 2
    assert rep["config"]["tracks"] == ["qat"] and [c["name"] for c in rep["candidates"]] == ["qat"]
    for f in ("eval_float.json", "eval_qat.json", "dualtrack.md", "accuracy_vs_size.png",
              "quant_dataset/quant_dataset_ts_cnn_inputs.npy", "quant_dataset/quant_eval_scenarios.json",
              "qat/c_ts_cnn/qtc_ts_cnn.c"):
        assert (out / f).is_file(), f
    qg = load(out / "qat" / "ts_cnn_qat.qir")
    assert check(qg, "ti-npu") == []                      # power-of-two, symmetric, 16-bit bias, channels x4
    wbits = {qg.tensors[n.inputs[1]].quant.bits for n in qg.nodes if n.op in ("Conv1D", "FullyConnected")}
    assert wbits == {4}
    acts = [t for t in qg.tensors.values() if t.quant is not None and not t.is_const]
    assert acts and all(t.quant.bits == 8 and t.dtype == "int8" for t in acts)
    sub = rep["candidates"][0]["sub_models"]["ts_cnn"]
    assert sub["tflite"] is None and "INT4" in sub["tflite_error"] and sub["size_basis"] == "c_weights"
    ev = json.loads((out / "eval_qat.json").read_text())
    assert ev["metrics"]["accuracy"] == rep["candidates"][0]["metrics"]["accuracy"]
    assert ev["sub_models"]["ts_cnn"]["quantization"]["target"] == "ti-npu"


@pytest.mark.slow
def test_deepsets_esp32_every_artifact_and_a_winner(tmp_path, example_models_dir):
    """The users' ESP32 plan on the Deep Sets pair: PTQ + QAT + Keras QAT, the plan's budgets."""
    _needs_qat()
    if not has_module("tensorflow_model_optimization"):
        pytest.skip("tensorflow-model-optimization is not installed")
    out = tmp_path / "ds"
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "deepsets_esp32.yaml").read_text())
    doc = {**base, "models_dir": str(example_models_dir),
           "scenes": str(example_models_dir / "peer_encoder" / "scenes_eval.npz"),
           "calibration": {"samples": 96}, "eval": {"samples": 150, "metric": "success_rate"},
           "ptq": {"methods": ["minmax", "mse"], "adaround": True, "adaround_iters": 20},
           "qat": {"epochs": 1, "lr": 0.0005}, "keras_qat": {"epochs": 1}, "bench": {"runs": 2},
           "output": str(out)}
    _run(tmp_path, doc)
    rep = json.loads((out / "dualtrack.json").read_text())
    assert rep["budgets"] == {"model_bytes": 102400.0, "latency_ms": 50.0, "accuracy_drop": 0.10}
    assert [c["name"] for c in rep["candidates"]] == ["ptq", "qat", "qat_keras"]
    for f in ("eval_float.json", "eval_ptq.json", "eval_qat.json", "eval_qat_keras.json", "dualtrack.md",
              "accuracy_vs_size.png"):
        assert (out / f).is_file(), f
    for f in ("peer_inputs", "policy_inputs", "peer_outputs", "policy_outputs"):
        assert (out / "quant_dataset" / f"quant_dataset_{f}.npy").is_file()
    for cand in ("ptq", "qat", "qat_keras"):
        for sub in ("peer_encoder", "policy_head"):
            assert (out / cand / f"{sub}_{cand}.qir" / "graph.json").is_file()
            assert (out / cand / f"{sub}_{cand}_int8.tflite").is_file()
            assert (out / cand / f"c_{sub}" / f"qtc_{sub}.c").is_file()
    d = rep["decision"]
    assert d["winner"] in ("ptq", "qat", "qat_keras") and d["winner"] == d["ranking"][0]
    win = next(c for c in rep["candidates"] if c["name"] == d["winner"])
    assert win["passes"] and all(v["status"] == "pass" for v in win["checks"].values())
    best = max(c["metrics"]["success_rate"] for c in rep["candidates"] if c["passes"])
    assert win["metrics"]["success_rate"] == best
    lat = win["latency"]
    per = lat["per_inference_us"]
    assert lat["end_to_end_ms"] == pytest.approx((8 * per["peer_encoder"] + lat["pool_us"]
                                                  + per["policy_head"]) / 1000.0)
    assert "emulated" in lat["where"] and "emulated" in (out / "dualtrack.md").read_text()
    # the pair's accuracy is evaluate_pair on the quantized pair in qtc's integer interpreter
    ev = json.loads((out / f"eval_{d['winner']}.json").read_text())
    assert ev["metrics"]["n_eval"] == 150 and set(ev["sub_models"]) == {"peer_encoder", "policy_head"}
    assert "Winner: " + d["winner"] in (out / "dualtrack.md").read_text()


def test_no_candidate_meets_the_budget(tmp_path, example_models_dir):
    """A size budget nothing fits: the report says so and picks no candidate; same run -> same bytes."""
    out = tmp_path / "tight"
    doc = {"model": "ts_cnn", "models_dir": str(example_models_dir), "target": "esp32", "tracks": ["ptq"],
           "calibration": {"samples": 64}, "eval": {"samples": 60},
           "ptq": {"methods": ["minmax", "mse"], "weight_methods": ["minmax"], "adaround": False},
           "budgets": {"model_bytes": 1000, "latency_ms": None}, "output": str(out)}
    res = _run(tmp_path, doc)
    assert "no winner" in res.output
    rep = json.loads((out / "dualtrack.json").read_text())
    assert rep["decision"]["winner"] is None and rep["decision"]["ranking"] == []
    cand = rep["candidates"][0]
    assert cand["failed_budgets"] == ["model_bytes"] and cand["checks"]["model_bytes"]["value"] > 1000
    assert cand["latency"] is None                         # no latency budget: not benched
    md = (out / "dualtrack.md").read_text()
    assert "**No winner**" in md and "Winner:" not in md and "model size per sub-model (fail" in md
    assert [r["method"] for r in rep["ptq_search"]] == ["minmax", "mse"]
    digest = {p.relative_to(out): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
              if p.is_file()}
    _run(tmp_path, doc)
    again = {p.relative_to(out): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
             if p.is_file()}
    assert again == digest
    np.testing.assert_array_equal(np.load(out / "quant_dataset" / "quant_dataset_ts_cnn_inputs.npy"),
                                  np.load(example_models_dir / "ts_cnn" / "data.npz")["x_calib"][:64])


def test_tensorlab_quantization_0_is_float_only(tmp_path, example_models_dir):
    """quantization: 0: no track runs; the float model is the only candidate, judged by the same rule."""
    out = tmp_path / "fp"
    doc = {"training": {"model_name": "digits_cnn", "quantization": 0}, "models_dir": str(example_models_dir),
           "eval": {"samples": 50}, "output": str(out)}
    res = _run(tmp_path, doc)
    rep = json.loads((out / "dualtrack.json").read_text())
    assert rep["target"] == "esp32" and rep["config"]["tracks"] == []
    (cand,) = rep["candidates"]
    assert cand["name"] == "float" and cand["sub_models"]["digits_cnn"]["size_basis"] == "float32_weights"
    # esp32's latency budget cannot be measured for a float model: no winner, and the report says why
    assert rep["decision"]["winner"] is None and cand["checks"]["latency_ms"]["status"] == "not measured"
    assert "no winner" in res.output and not (out / "eval_ptq.json").exists()
    doc["budgets"] = {"latency_ms": None}
    _run(tmp_path, doc)
    assert json.loads((out / "dualtrack.json").read_text())["decision"]["winner"] == "float"


def test_qat_train_data_training_is_the_labelled_training_split(tmp_path, example_models_dir):
    """qat.train_data: training gives QAT the checkpoint's own labelled training split, disjoint from the eval
    split; a data.npz the generator does not reproduce is refused, naming the key."""
    from qtc.dualtrack import parse_config
    from qtc.dualtrack.workload import Workload
    from qtc.errors import QtcError

    doc = {"model": "digits_cnn", "models_dir": str(example_models_dir), "tracks": ["qat"],
           "qat": {"train_data": "training"}, "output": str(tmp_path / "o")}
    net = Workload(parse_config(doc)).nets[0]
    z = np.load(example_models_dir / "digits_cnn" / "data.npz")
    assert net.train_x.shape[1:] == z["x_eval"].shape[1:] and len(net.train_x) > len(z["x_calib"])
    assert np.issubdtype(net.train_y.dtype, np.integer) and len(net.train_y) == len(net.train_x)
    train_rows = {r.tobytes() for r in net.train_x}
    assert not any(r.tobytes() in train_rows for r in z["x_eval"].astype(np.float32))
    bad = {k: z[k] for k in z.files}
    bad["x_eval"] = bad["x_eval"][::-1].copy()
    np.savez(tmp_path / "data.npz", **bad)
    doc["model"] = {"name": "digits_cnn", "data": str(tmp_path / "data.npz"),
                    "checkpoint": str(example_models_dir / "digits_cnn" / "digits_cnn.pt")}
    with pytest.raises(QtcError, match="qat.train_data"):
        Workload(parse_config(doc))
