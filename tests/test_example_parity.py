"""Every front end on every example model: the IR's float output matches the framework's.

torch models go through torch.export (state dict + class) and ONNX (torch.onnx export);
the tf_keras twins go through the Keras front end and the float .tflite through the
TFLite front end.  Tolerance: 1e-4 relative to the output's magnitude (float32
reassociation only; see docs/tolerances.md).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from qtc.interp import run

RTOL = 1e-4
N = 16  # eval samples per model and front end


def _meta(d, name):
    return json.loads((d / name / "meta.json").read_text())


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6))


def _eval_feeds(d, name, keras=False):
    meta = _meta(d, name)
    data = np.load(d / name / "data.npz")
    ins = meta["keras"]["inputs"] if keras else meta["inputs"]
    arrays = {i["name"]: data[i["eval_key"]][:N].astype(np.float32) for i in ins}
    shapes = {i["name"]: tuple(i["shape"]) for i in ins}
    return [{k: arrays[k][j:j + 1].reshape(shapes[k]) for k in arrays} for j in range(N)]


def _check(g, feeds, ref_fn):
    worst = 0.0
    for f in feeds:
        feed = {gi: f[k] for gi, k in zip(g.inputs, f)} if len(f) == len(g.inputs) else f
        ours = run(g, feed)[g.outputs[0]]
        worst = max(worst, _rel_err(ours, ref_fn(f)))
    assert worst <= RTOL, f"max relative error {worst:.3g} > {RTOL}"
    return worst


ALL = ["peer_encoder", "policy_head", "digits_cnn", "ts_cnn", "act_tiny"]
KERAS = ["peer_encoder", "policy_head", "digits_cnn", "ts_cnn"]


@pytest.mark.parametrize("name", ALL)
def test_torch_frontend(example_models_dir, name):
    import torch

    from models.zoo import load_torch as zoo_load
    from qtc.frontends.torch import load_torch

    d = example_models_dir
    meta = _meta(d, name)
    shapes = {i["name"]: tuple(i["shape"]) for i in meta["inputs"]}
    g = load_torch(d / name / meta["files"]["torch"], meta["class"], input_shapes=shapes)
    model = zoo_load(name, d).eval()

    def ref(f):
        with torch.no_grad():
            return model(*[torch.from_numpy(f[k]) for k in shapes]).numpy()

    _check(g, _eval_feeds(d, name), ref)


@pytest.mark.parametrize("name", ALL)
def test_onnx_frontend(example_models_dir, name):
    import onnxruntime as ort

    from qtc.frontends.onnx import load_onnx

    d = example_models_dir
    path = d / name / _meta(d, name)["files"]["onnx"]
    g = load_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check(g, _eval_feeds(d, name), lambda f: sess.run(None, f)[0])


@pytest.mark.parametrize("name", KERAS)
def test_keras_frontend(example_models_dir, name):
    import tf_keras as keras

    from qtc.frontends.keras import load_keras

    d = example_models_dir
    path = d / name / _meta(d, name)["files"]["keras"]
    g = load_keras(path)
    model = keras.models.load_model(path, compile=False)
    _check(g, _eval_feeds(d, name, keras=True), lambda f: model(*[f[k] for k in f], training=False).numpy())


@pytest.mark.parametrize("name", KERAS)
def test_tflite_float_frontend(example_models_dir, name):
    from qtc.eval.runtimes import run_litert
    from qtc.frontends.tflite import load_tflite

    d = example_models_dir
    blob = (d / name / _meta(d, name)["files"]["tflite_float"]).read_bytes()
    g = load_tflite(blob)
    feeds = _eval_feeds(d, name, keras=True)
    keys = list(feeds[0])
    refs = run_litert(blob, [np.concatenate([f[k] for f in feeds]) for k in keys], reference_kernels=True)[0]
    it = iter(range(len(feeds)))
    _check(g, feeds, lambda f: refs[next(it)])
