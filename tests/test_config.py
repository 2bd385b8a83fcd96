"""qtc dualtrack configs: qtc's keys, TI Tensorlab's training keys and how they map, and the one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from qtc.dualtrack.config import load_config, parse_config
from qtc.errors import QtcError

ROOT = Path(__file__).resolve().parents[1]


def tl(**training) -> dict:
    return {"training": {"model_name": "ts_cnn", **training}}


# ------------------------------------------------------------------ qtc keys
def test_defaults_for_one_model():
    cfg = parse_config({"model": "ts_cnn", "models_dir": "m"})
    assert cfg.target == "esp32" and cfg.quantization == 1
    assert cfg.tracks == ["ptq", "qat"] and (cfg.wbits, cfg.abits) == (8, 8)
    assert cfg.metric == "accuracy" and cfg.pair is None and cfg.scenes is None
    sm = cfg.sub_models[0]
    assert (sm.name, sm.checkpoint, sm.keras, sm.data) == (
        "ts_cnn", Path("m/ts_cnn/ts_cnn.pt"), Path("m/ts_cnn/ts_cnn.keras"), Path("m/ts_cnn/data.npz"))
    # the target's budgets are the defaults, and say where they came from
    assert cfg.budgets == {"model_bytes": 102400.0, "latency_ms": 50.0, "accuracy_drop": 0.10}
    assert cfg.budget_sources["latency_ms"] == "target esp32"
    assert cfg.output == Path("build/dualtrack/ts_cnn_esp32")


def test_deepsets_pair_and_overrides():
    cfg = parse_config({"pair": "deepsets", "tracks": ["ptq", "qat", "qat_keras"], "seed": 3,
                        "budgets": {"model_bytes": 2048, "latency_ms": None}, "eval": {"samples": 100}})
    assert [s.name for s in cfg.sub_models] == ["peer_encoder", "policy_head"]
    assert cfg.metric == "success_rate" and cfg.eval_samples == 100 and cfg.seed == 3
    assert cfg.scenes == Path("build/models/peer_encoder/scenes_eval.npz")
    assert cfg.budgets == {"model_bytes": 2048.0, "accuracy_drop": 0.10}   # latency lifted
    assert cfg.budget_sources["model_bytes"] == "config" and cfg.budget_sources["latency_ms"] == "lifted by config"
    # the CLI's --model replaces the config's model (and its pair)
    one = parse_config({"pair": "deepsets"}, overrides={"model": "digits_cnn"})
    assert [s.name for s in one.sub_models] == ["digits_cnn"] and one.pair is None
    two = parse_config({"model": "ts_cnn"}, overrides={"model": "deepsets"})
    assert two.pair == "deepsets"


def test_model_entry_with_paths():
    cfg = parse_config({"model": {"name": "ts_cnn", "checkpoint": "a/b.pt", "keras": "a/b.keras", "data": "a/d.npz"}})
    sm = cfg.sub_models[0]
    assert (sm.checkpoint, sm.keras, sm.data) == (Path("a/b.pt"), Path("a/b.keras"), Path("a/d.npz"))


# ------------------------------------------------------------------ Tensorlab mapping
@pytest.mark.parametrize("mode,target,tracks", [(0, "esp32", []), (1, "host", ["ptq", "qat"]),
                                                (2, "ti-npu", ["ptq", "qat"])])
def test_tensorlab_quantization_modes(mode, target, tracks):
    cfg = parse_config(tl(quantization=mode))
    assert cfg.quantization == mode and cfg.target == target and cfg.tracks == tracks
    assert cfg.tensorlab["quantization"] == mode


def test_tensorlab_method_bits_epochs_and_device():
    cfg = parse_config({"common": {"target_device": "F28P55"},
                        **tl(quantization=2, quantization_method="QAT", quantization_weight_bitwidth=4,
                             quantization_activation_bitwidth=8, training_epochs=2, learning_rate=0.01,
                             batch_size=16)})
    assert cfg.target == "ti-npu" and cfg.tracks == ["qat"]
    assert (cfg.wbits, cfg.abits) == (4, 8)
    assert (cfg.qat.epochs, cfg.qat.lr, cfg.qat.batch_size) == (2, 0.01, 16)
    ptq = parse_config(tl(quantization=1, quantization_method="PTQ", quantization_weight_bitwidth=2))
    assert ptq.tracks == ["ptq"] and ptq.target == "host" and ptq.wbits == 2
    # qtc keys and Tensorlab keys that agree are fine; Tensorlab's unused sections are recorded
    both = parse_config({"target": "ti-npu", "weight_bits": 4, "dataset": {"dataset_name": "arc"},
                         "compilation": {"enable": True}, **tl(quantization=2, quantization_weight_bitwidth=4)})
    assert both.wbits == 4 and both.ignored == ["compilation.enable", "dataset.dataset_name"]


def test_example_configs_load():
    ds = load_config(ROOT / "configs" / "deepsets_esp32.yaml")
    assert ds.pair == "deepsets" and ds.target == "esp32" and ds.tracks == ["ptq", "qat", "qat_keras"]
    assert ds.budgets == {"model_bytes": 102400.0, "latency_ms": 50.0, "accuracy_drop": 0.10}
    ti = load_config(ROOT / "configs" / "ts_cnn_tinpu.yaml")
    assert (ti.target, ti.quantization, ti.tracks, ti.wbits, ti.abits) == ("ti-npu", 2, ["qat"], 4, 8)


def test_qat_train_data_and_quant_lr():
    cfg = parse_config({"model": "ts_cnn"})
    assert (cfg.qat.train_data, cfg.qat.quant_lr) == ("calibration", 1e-2)   # default: the quant dataset
    cfg = parse_config({"model": "digits_cnn", "qat": {"train_data": "training", "quant_lr": 0.02,
                                                       "distill_alpha": 0}})
    assert (cfg.qat.train_data, cfg.qat.quant_lr, cfg.qat.distill_alpha) == ("training", 0.02, 0.0)
    assert cfg.to_json()["qat"]["train_data"] == "training"


# ------------------------------------------------------------------ errors: one line, naming the key
@pytest.mark.parametrize("doc,key", [
    ({"modle": "ts_cnn"}, "'modle'"),
    (tl(quantization=3), "'training.quantization'"),
    (tl(quantization=0, quantization_method="QAT"), "'training.quantization_method'"),
    (tl(quantization=0, quantization_weight_bitwidth=8), "'training.quantization_weight_bitwidth'"),
    (tl(quantization_method="QAT"), "'training.quantization_method'"),
    (tl(quantization=1, quantization_method="AWQ"), "'training.quantization_method'"),
    (tl(quantization=1, quantization_activation_bitwidth=2), "'training.quantization_activation_bitwidth'"),
    (tl(quantization=2, quantization_activation_bitwidth=4), "'training.quantization_activation_bitwidth'"),
    (tl(quantization=1, quantization_weight_bitwidth=3), "'training.quantization_weight_bitwidth'"),
    ({"target": "esp32", **tl(quantization=2)}, "'training.quantization'"),
    ({"target": "ti-npu", **tl(quantization=1)}, "'training.quantization'"),
    ({"weight_bits": 8, **tl(quantization=1, quantization_weight_bitwidth=4)},
     "'training.quantization_weight_bitwidth'"),
    ({"tracks": ["ptq"], **tl(quantization=1, quantization_method="QAT")}, "'training.quantization_method'"),
    ({"tracks": ["ptq"], **tl(quantization=0)}, "'tracks'"),
    ({"qat": {"epochs": 5}, **tl(training_epochs=2)}, "'training.training_epochs'"),
    (tl(optimizer="adam"), "'training.optimizer'"),
    ({"model": "digits_cnn", **tl()}, "'training.model_name'"),
    ({"common": {"target_device": "AM62A"}, "model": "ts_cnn"}, "'common.target_device'"),
    ({"model": "resnet50"}, "'model.name'"),
    ({"model": "ts_cnn", "activation_bits": 2}, "'activation_bits'"),
    ({"model": "ts_cnn", "target": "ti-npu", "activation_bits": 4}, "'activation_bits'"),
    ({"model": "ts_cnn", "target": "nope"}, "'target'"),
    ({"model": "ts_cnn", "tracks": ["ptq", "gptq"]}, "'tracks'"),
    ({"model": "ts_cnn", "target": "ti-npu", "tracks": ["qat_keras"]}, "'tracks'"),
    ({"model": "ts_cnn", "weight_bits": 4, "tracks": ["qat_keras"]}, "'tracks'"),
    ({"model": "ts_cnn", "budgets": {"energy_mj": 3}}, "'budgets.energy_mj'"),
    ({"model": "ts_cnn", "budgets": {"accuracy_drop": 5}}, "'budgets.accuracy_drop'"),
    ({"model": "ts_cnn", "ptq": {"methods": ["kl"]}}, "'ptq.methods'"),
    ({"model": "ts_cnn", "ptq": {"weight_methods": ["percentile"]}}, "'ptq.weight_methods'"),
    ({"model": "ts_cnn", "qat": {"distill_alpha": 2}}, "'qat.distill_alpha'"),
    ({"model": "ts_cnn", "qat": {"train_data": "eval"}}, "'qat.train_data'"),
    ({"model": {"name": "mine", "class": "models.ts_cnn:TsCNN"}, "qat": {"train_data": "training"}},
     "'qat.train_data'"),
    ({"pair": "deepsets", "qat": {"train_data": "training"}}, "'qat.train_data'"),
    ({"model": "ts_cnn", "qat": {"quant_lr": 0}}, "'qat.quant_lr'"),
    ({"model": "ts_cnn", "scenes": "s.npz"}, "'scenes'"),
    ({"model": "ts_cnn", "eval": {"metric": "success_rate"}}, "'eval.metric'"),
    ({"models": ["peer_encoder", "policy_head"]}, "'models'"),
    ({"pair": "deepsets", "models": ["policy_head", "peer_encoder"]}, "'models'"),
    ({"model": "ts_cnn", "size_basis": "zip"}, "'size_basis'"),
    ({"model": "ts_cnn", "bench": {"enabled": "sometimes"}}, "'bench.enabled'"),
    ({}, "'model'"),
])
def test_errors_name_the_key(doc, key):
    with pytest.raises(QtcError) as exc:
        parse_config(doc, source="cfg.yaml")
    line = str(exc.value)
    assert key in line and "\n" not in line and line.startswith("cfg.yaml:")
    assert "(fix:" in line


def test_config_file_errors(tmp_path):
    with pytest.raises(QtcError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [quantization: 1\n")
    with pytest.raises(QtcError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(QtcError, match="must be a mapping"):
        load_config(listy)


def test_cli_check_and_error_exit(tmp_path):
    from qtc.cli import cli

    good = tmp_path / "ok.yaml"
    good.write_text("training:\n  model_name: ts_cnn\n  quantization: 2\n  quantization_method: PTQ\n")
    res = CliRunner().invoke(cli, ["dualtrack", str(good), "--check"])
    assert res.exit_code == 0, res.output
    assert '"target": "ti-npu"' in res.output and '"ptq"' in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  model_name: ts_cnn\n  quantization: 0\n  quantization_method: QAT\n")
    res = CliRunner().invoke(cli, ["dualtrack", str(bad)])
    assert res.exit_code == 2
    assert "training.quantization_method" in res.output and "contradicts quantization: 0" in res.output
