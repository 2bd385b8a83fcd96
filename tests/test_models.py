"""The example models: generators, shapes, the torch -> Keras twin copy, export determinism.

Fast tests use untrained (seeded random) weights; the ones that train are marked slow.
"""
from __future__ import annotations

import inspect
import json
import zipfile

import numpy as np
import pytest
import torch

from models import act_tiny, deepsets, digits_cnn, ts_cnn, zoo
from models._common import IOSpec, onnx_bytes, state_dict_bytes
from qtc.errors import QtcError

KERAS_MODELS = [n for n, s in zoo.MODELS.items() if s.keras_twin]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- data generators

@pytest.mark.parametrize("make", [
    lambda s: deepsets.make_scenes(300, s),
    lambda s: dict(zip("xy", ts_cnn.make_waveforms(60, s))),
    lambda s: act_tiny.make_samples(40, s),
    lambda s: digits_cnn.make_data(s),
], ids=["deepsets", "ts_cnn", "act_tiny", "digits"])
def test_generators_are_deterministic_and_seeded(make):
    a, b, c = make(3), make(3), make(4)
    assert _same(a, b)
    assert not _same(a, c)
    for v in a.values():
        assert v.dtype in (np.float32, np.int64, np.bool_)


def test_scenes_are_varied_and_labels_follow_the_expert():
    sc = deepsets.make_scenes(4000, 0)
    counts = np.bincount(sc["labels"], minlength=len(deepsets.ACTIONS)) / len(sc["labels"])
    assert np.all(counts > 0.1), counts            # every action is common
    assert np.array_equal(sc["labels"], deepsets.expert(sc))
    assert np.all(sc["peers"][~sc["mask"]] == 0)   # padding is zero
    assert set(np.unique(sc["n_peers"])) == set(range(1, deepsets.MAX_PEERS + 1))


def test_ttc_matches_brute_force():
    rng = np.random.default_rng(1)
    p = rng.uniform(-2.5, 2.5, (300, 2))
    w = -p * rng.uniform(0.0, 1.0, (300, 1)) + rng.normal(0.0, 0.5, (300, 2))  # many head towards us
    r = rng.uniform(0.3, 0.7, 300)
    p[np.linalg.norm(p, axis=1) < r + 0.05] = 2.0
    t = deepsets.ttc(p, w, r)
    ts = np.linspace(0, deepsets.HORIZON, 12001)
    d = np.linalg.norm(p[:, None] + w[:, None] * ts[None, :, None], axis=-1)
    hit = d <= r[:, None]
    first = np.where(hit.any(1), ts[np.argmax(hit, axis=1)], np.inf)
    clear = np.abs(d.min(axis=1) - r) > 0.01          # leave out grazing passes
    assert clear.sum() > 250
    assert np.array_equal(np.isinf(t[clear]), np.isinf(first[clear]))
    finite = clear & ~np.isinf(t)
    assert 40 < finite.sum() < clear.sum() - 40
    assert np.max(np.abs(t[finite] - first[finite])) < 1e-3


def test_evaluate_pair_scores_any_callables():
    sc = deepsets.make_scenes(500, 7)
    labels = sc["labels"]
    calls = []

    def oracle_head(x):  # receives one row per scene, in order
        calls.append(x.shape)
        return np.eye(len(deepsets.ACTIONS), dtype=np.float32)[labels]

    enc = deepsets.batched(lambda x: np.repeat(x[:, :1], 32, axis=1))
    res = deepsets.evaluate_pair(enc, oracle_head, sc)
    assert calls == [(500, 36)]
    assert res["accuracy"] == 1.0
    assert res["success_rate"] == res["expert_success_rate"]
    assert np.trace(np.array(res["confusion"])) == 500
    keep = deepsets.evaluate_pair(enc, lambda x: np.tile([1.0, 0, 0, 0, 0], (len(x), 1)), sc)
    assert keep["accuracy"] == pytest.approx(np.mean(labels == 0))
    assert keep["success_rate"] == pytest.approx(np.mean(deepsets.collision_free(sc, np.zeros(500, int))))
    assert keep["success_rate"] < res["success_rate"]


# ---------------------------------------------------------------- torch models

def _torch_inputs(name: str) -> list[torch.Tensor]:
    shapes = {"peer_encoder": [[3, 6]], "policy_head": [[3, 36]], "digits_cnn": [[3, 1, 8, 8]],
              "ts_cnn": [[3, 1, 256]], "act_tiny": [[3, 3, 32, 32], [3, 8]]}[name]
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g) for s in shapes]


@pytest.mark.parametrize("name,out_shape", [
    ("peer_encoder", (3, 32)), ("policy_head", (3, 5)), ("digits_cnn", (3, 10)),
    ("ts_cnn", (3, 3)), ("act_tiny", (3, 8, 4))])
def test_forward_shapes_and_registry(name, out_shape):
    spec = zoo.MODELS[name]
    torch.manual_seed(0)
    model = zoo.build_torch(name).eval()
    assert type(model).__name__ == spec.class_name
    params = inspect.signature(type(model)).parameters
    # the registered kwargs are the constructor defaults, so `Class()` builds the same model
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in
            ((k, params[k].default) for k in spec.kwargs)} == spec.kwargs
    with torch.no_grad():
        assert tuple(model(*_torch_inputs(name)).shape) == out_shape
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < (150_000 if name == "act_tiny" else 20_000)


def test_zoo_errors_are_user_facing(tmp_path):
    with pytest.raises(QtcError, match="unknown model"):
        zoo.build_torch("nope")
    with pytest.raises(QtcError, match="train_all"):
        zoo.load_data("digits_cnn", tmp_path)


def test_torch_exports_are_byte_identical():
    torch.manual_seed(0)
    model = zoo.build_torch("peer_encoder").eval()
    spec = [IOSpec("input", [1, 6], "NC")]
    assert state_dict_bytes(model) == state_dict_bytes(model)
    a = onnx_bytes(model, spec, ["output"], where="test")
    assert a == onnx_bytes(model, spec, ["output"], where="test")
    import onnx

    proto = onnx.load_from_string(a)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 6]
    assert proto.opset_import[0].version == 17


# ---------------------------------------------------------------- Keras twins (random weights)

def _randomize(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _to_keras_layout(x: np.ndarray) -> np.ndarray:
    if x.ndim == 4:
        return x.transpose(0, 2, 3, 1)
    if x.ndim == 3:
        return x.transpose(0, 2, 1)
    return x


@pytest.mark.parametrize("name", KERAS_MODELS)
def test_keras_twin_copy_is_exact(name):
    from models._keras import check_twin, import_tf, keras_predict

    _, keras = import_tf()
    keras.backend.clear_session()
    torch.manual_seed(0)
    model = zoo.build_torch(name).eval()
    _randomize(model)
    km = zoo.spec(name).load_module().build_keras(model)
    x = _torch_inputs(name)[0].numpy()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = keras_predict(km)(np.ascontiguousarray(_to_keras_layout(x)))
    assert got.shape == want.shape
    assert check_twin(want, got, where=name) <= 1e-5 * max(1.0, float(np.abs(want).max()))
    with pytest.raises(QtcError, match="twin differs"):
        check_twin(want, got + 1e-3, where=name)


def test_keras_save_is_byte_identical_and_loads(tmp_path):
    from models._keras import import_tf, keras_bytes, keras_predict

    _, keras = import_tf()
    keras.backend.clear_session()
    torch.manual_seed(0)
    km = digits_cnn.build_keras(zoo.build_torch("digits_cnn").eval())
    blob = keras_bytes(km)
    assert blob == keras_bytes(km)
    (tmp_path / "m.keras").write_bytes(blob)
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in z.infolist())
        assert json.loads(z.read("metadata.json"))["date_saved"].startswith("1980")
    back = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    np.testing.assert_array_equal(keras_predict(back)(x), keras_predict(km)(x))


# ---------------------------------------------------------------- training (slow)

@pytest.mark.slow
def test_train_all_digits_is_deterministic_and_accurate(tmp_path):
    from models.train_all import main

    assert main(["--out", str(tmp_path / "a"), "--only", "digits_cnn"]) == 0
    assert main(["--out", str(tmp_path / "b"), "--only", "digits_cnn"]) == 0
    files = sorted(p.name for p in (tmp_path / "a" / "digits_cnn").iterdir())
    assert files == ["data.npz", "digits_cnn.keras", "digits_cnn.onnx", "digits_cnn.pt",
                     "digits_cnn_float.tflite", "digits_cnn_int8.tflite", "meta.json"]
    for f in files:
        assert (tmp_path / "a" / "digits_cnn" / f).read_bytes() == (tmp_path / "b" / "digits_cnn" / f).read_bytes(), f
    meta = zoo.load_meta("digits_cnn", tmp_path / "a")
    assert meta["metric_torch"] >= 0.95 and meta["metric_keras"] == meta["metric_torch"]
    assert meta["metric_tflite_int8"] >= 0.93
    data = zoo.load_data("digits_cnn", tmp_path / "a")
    assert len(data["x_calib"]) >= 256 and len(data["x_eval"]) >= 200
    model = zoo.load_torch("digits_cnn", tmp_path / "a")
    with torch.no_grad():
        acc = (model(torch.from_numpy(data["x_eval"])).argmax(1).numpy() == data["y_eval"]).mean()
    assert acc == pytest.approx(meta["metric_torch"], abs=1e-6)


@pytest.mark.slow
def test_policy_head_make_data_reproduces_data_npz(example_models_dir):
    """make_data(seed in meta.json) retrains the pair and gives data.npz's arrays exactly, plus the labelled
    training split QAT trains on (qat.train_data: training): every training scene's head input and expert action."""
    from models import policy_head

    seed = int(zoo.load_meta("policy_head", example_models_dir)["seed"])
    data = policy_head.make_data(seed)
    frozen = zoo.load_data("policy_head", example_models_dir)
    assert set(frozen) <= set(data)
    for k, v in frozen.items():
        assert data[k].dtype == v.dtype and np.array_equal(data[k], v), k
    x, y = data["x_train"], data["y_train"]
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (deepsets.N_TRAIN, 36) and len(y) == len(x)
    np.testing.assert_array_equal(x[:policy_head.N_CALIB], data["x_calib"])
    np.testing.assert_array_equal(y, deepsets.make_scenes(deepsets.N_TRAIN, seed)["labels"])
    assert np.all(np.bincount(y, minlength=len(deepsets.ACTIONS)) > 0.1 * len(y))
    train_rows = {r.tobytes() for r in x}
    assert not any(r.tobytes() in train_rows for r in data["x_eval"])


@pytest.mark.slow
def test_deep_sets_pair_end_to_end(tmp_path):
    from models._common import torch_predict
    from models.train_all import main

    assert main(["--out", str(tmp_path), "--only", "peer_encoder", "policy_head"]) == 0
    meta = zoo.load_meta("policy_head", tmp_path)
    assert meta["metric_torch"] >= 0.85
    enc, head = zoo.load_torch("peer_encoder", tmp_path), zoo.load_torch("policy_head", tmp_path)
    res = deepsets.evaluate_pair(torch_predict(enc), torch_predict(head), tmp_path / "policy_head" / "scenes_eval.npz")
    assert res["accuracy"] == pytest.approx(meta["metric_torch"], abs=1e-3)
    assert res["success_rate"] >= 0.9 * res["expert_success_rate"]
    head_in = zoo.load_data("policy_head", tmp_path)["x_eval"]
    assert head_in.shape == (res["n_scenes"], 36)
