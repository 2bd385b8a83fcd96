"""tf_keras front end: float parity with Keras on small models built here, layouts, errors.

The model builders (``KERAS_MODELS``) are shared with the TFLite front-end and
bit-exact tests, which load this file by path.
"""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")

from qtc.errors import QtcError, ShapeError, UnsupportedOpError  # noqa: E402
from qtc.interp import run  # noqa: E402

L = keras.layers


def _randomize_bn(model, seed: int) -> None:
    """Give every BatchNormalization non-trivial statistics so it is not an identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(0, 0.2, c).astype(np.float32),
                               rng.normal(0, 0.3, c).astype(np.float32), rng.uniform(0.3, 2.0, c).astype(np.float32)])


def build_cnn() -> "keras.Model":
    """Conv + BN + depthwise (multiplier 2) + pooling + dense."""
    keras.utils.set_random_seed(1)
    m = keras.Sequential([
        L.InputLayer((12, 12, 3)),
        L.Conv2D(8, 3, padding="same"),
        L.BatchNormalization(),
        L.ReLU(),
        L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2),
        L.BatchNormalization(),
        L.ReLU(6.0),
        L.MaxPooling2D(2),
        L.Conv2D(12, 1, activation="relu"),
        L.AveragePooling2D(3, strides=1, padding="same"),
        L.Flatten(),
        L.Dropout(0.2),
        L.Dense(16, activation="relu"),
        L.Dense(5),
    ], name="cnn")
    _randomize_bn(m, 1)
    return m


def build_conv1d() -> "keras.Model":
    keras.utils.set_random_seed(2)
    m = keras.Sequential([
        L.InputLayer((32, 4)),
        L.Conv1D(8, 5, padding="same", activation="relu"),
        L.BatchNormalization(),
        L.MaxPooling1D(2),
        L.Conv1D(8, 3, padding="causal"),
        L.ReLU(),
        L.AveragePooling1D(2),
        L.Conv1D(6, 3, strides=2, padding="valid", activation="relu"),
        L.GlobalAveragePooling1D(),
        L.Dense(3),
    ], name="conv1d_net")
    _randomize_bn(m, 2)
    return m


def build_dilated_conv1d() -> "keras.Model":
    """Dilated 1-D convs: TF's converter lowers them to SPACE_TO_BATCH_ND / conv / BATCH_TO_SPACE_ND."""
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        L.InputLayer((32, 4)),
        L.Conv1D(8, 3, dilation_rate=2, padding="causal", activation="relu"),
        L.Conv1D(6, 3, dilation_rate=4, padding="same"),
        L.GlobalAveragePooling1D(),
        L.Dense(3),
    ], name="dilated_conv1d")


def build_mlp() -> "keras.Model":
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        L.InputLayer((20,)),
        L.Dense(32, activation="relu"),
        L.Dropout(0.1),
        L.Dense(16, activation="relu6"),
        L.Dense(8),
        L.Softmax(),
    ], name="mlp")


def build_functional() -> "keras.Model":
    """Two branches joined with Add and Concatenate."""
    keras.utils.set_random_seed(4)
    x = L.Input((10, 10, 4), name="img")
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="a")(x)
    b = L.Conv2D(8, 1, name="b")(x)
    c = L.Add(name="sum")([a, b])
    d = L.Conv2D(4, 3, padding="same", activation="relu", name="d")(c)
    e = L.Concatenate(name="cat")([c, d])
    e = L.MaxPooling2D(2, name="pool")(e)
    f = L.GlobalAveragePooling2D(name="gap")(e)
    y = L.Dense(6, name="head")(f)
    return keras.Model(x, y, name="functional")


KERAS_MODELS = {"cnn": build_cnn, "conv1d": build_conv1d, "mlp": build_mlp, "functional": build_functional}
EXTRA_MODELS = {"dilated_conv1d": build_dilated_conv1d}


def sample_inputs(model, n: int, seed: int = 0) -> np.ndarray:
    """``n`` single samples stacked on axis 0 (the model's batch is 1)."""
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(0, 1, (n, *shape)).astype(np.float32)


def rel_err(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    return float(np.abs(ref - np.asarray(got, np.float64)).max() / max(np.abs(ref).max(), 1e-6))


def qtc_float(g, x: np.ndarray) -> np.ndarray:
    return np.concatenate([run(g, {g.inputs[0]: x[i:i + 1]})[g.outputs[0]] for i in range(len(x))])


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(KERAS_MODELS) + sorted(EXTRA_MODELS))
def test_keras_float_parity(name):
    from qtc.frontends.keras import from_keras

    model = {**KERAS_MODELS, **EXTRA_MODELS}[name]()
    g = from_keras(model)
    x = sample_inputs(model, 4, seed=5)
    ref = model(x, training=False).numpy()
    got = qtc_float(g, x)
    assert got.shape == ref.shape
    assert rel_err(ref, got) <= 1e-4, f"{name}: relative error {rel_err(ref, got):.2e}"
    assert g.metadata["source_format"] == "keras"
    assert g.tensors[g.inputs[0]].shape[0] == 1


def test_keras_weight_layouts_and_bn_kept():
    from qtc.frontends.keras import from_keras

    model = build_cnn()
    g = from_keras(model)
    convs = [n for n in g.nodes if n.op == "Conv2D"]
    first = model.layers[0]
    w = g.tensors[convs[0].inputs[1]].data
    np.testing.assert_array_equal(w, first.kernel.numpy().transpose(3, 0, 1, 2))  # [KH,KW,I,O] → [O,KH,KW,I]
    dw_layer = next(layer for layer in model.layers if isinstance(layer, L.DepthwiseConv2D))
    dw = next(n for n in convs if n.attrs.get("groups", 1) > 1)
    k = dw_layer.depthwise_kernel.numpy()  # [3,3,C=8,M=2]
    wd = g.tensors[dw.inputs[1]].data
    assert wd.shape == (16, 3, 3, 1) and dw.attrs["groups"] == 8
    np.testing.assert_array_equal(wd[2 * 3 + 1, :, :, 0], k[:, :, 3, 1])  # out channel c*M + m
    dense = model.layers[-1]
    fc = [n for n in g.nodes if n.op == "FullyConnected"][-1]
    np.testing.assert_array_equal(g.tensors[fc.inputs[1]].data, dense.kernel.numpy().T)
    assert sum(n.op == "BatchNorm" for n in g.nodes) == 2
    assert not any(n.op in ("Dropout", "Identity") for n in g.nodes)
    # relu kwarg fused into the conv, separate ReLU layer is its own node
    assert any(n.op == "Conv2D" and n.attrs.get("activation") == "relu" for n in g.nodes)


def test_keras_same_padding_is_tf_rule():
    """Even input, stride 2, SAME: TF puts the odd pad at the end (pads [0,0,1,1])."""
    from qtc.frontends.keras import from_keras

    keras.utils.set_random_seed(0)
    m = keras.Sequential([L.InputLayer((8, 8, 2)), L.Conv2D(3, 3, strides=2, padding="same")])
    g = from_keras(m)
    assert g.nodes[0].attrs["pads"] == [0, 0, 1, 1]
    x = sample_inputs(m, 2)
    assert rel_err(m(x).numpy(), qtc_float(g, x)) <= 1e-5


def test_keras_more_layers_parity():
    """Separable conv, Subtract/Multiply, LayerNorm, ZeroPadding, UpSampling, activations, GlobalMax."""
    from qtc.frontends.keras import from_keras

    keras.utils.set_random_seed(6)
    x = L.Input((8, 8, 3))
    a = L.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, activation="swish")(x)
    b = L.Conv2D(6, 1, activation="sigmoid")(x)
    c = L.Multiply()([a, b])
    c = L.Subtract()([c, L.Conv2D(6, 1, activation="tanh")(x)])
    c = L.ZeroPadding2D(((1, 0), (0, 2)))(c)
    c = L.LeakyReLU(0.1)(c)
    c = L.UpSampling2D(2)(c)
    c = L.Activation("gelu")(c)
    c = L.LayerNormalization()(c)
    p = L.GlobalMaxPooling2D()(c)
    q = L.Dense(4, activation="hard_sigmoid")(L.Reshape((-1,))(L.AveragePooling2D(4)(c)))
    y = L.Concatenate()([p, q])
    m = keras.Model(x, y)
    g = from_keras(m)
    xs = sample_inputs(m, 3, seed=7)
    assert rel_err(m(xs).numpy(), qtc_float(g, xs)) <= 1e-4


def test_keras_batch_size_and_nested_model():
    from qtc.frontends.keras import from_keras

    keras.utils.set_random_seed(8)
    inner = keras.Sequential([L.InputLayer((6,)), L.Dense(5, activation="relu")], name="inner")
    x = L.Input((6,))
    y = L.Dense(2)(inner(x))
    m = keras.Model(x, y)
    g = from_keras(m, batch_size=3)
    xs = sample_inputs(m, 3, seed=1)
    assert g.tensors[g.inputs[0]].shape == (3, 6)
    got = run(g, {g.inputs[0]: xs})[g.outputs[0]]
    assert rel_err(m(xs).numpy(), got) <= 1e-5


def test_keras_save_and_load(tmp_path):
    from qtc.frontends.keras import load_keras

    m = build_mlp()
    path = tmp_path / "mlp.keras"
    m.save(path)
    g = load_keras(path)
    assert g.metadata["source_file"] == "mlp.keras" and len(g.metadata["source_sha256"]) == 64
    xs = sample_inputs(m, 2)
    assert rel_err(m(xs).numpy(), qtc_float(g, xs)) <= 1e-4


def test_keras_errors(tmp_path):
    from qtc.frontends.keras import from_keras, load_keras

    m = keras.Sequential([L.InputLayer((4, 3)), L.LSTM(2)])
    with pytest.raises(UnsupportedOpError, match="LSTM"):
        from_keras(m)
    dyn = keras.Sequential([L.InputLayer((None, 3)), L.Dense(2)])
    with pytest.raises(ShapeError, match="dynamic"):
        from_keras(dyn)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model")
    with pytest.raises(QtcError, match="bad.keras"):
        load_keras(bad)
    with pytest.raises(UnsupportedOpError, match="elu"):
        from_keras(keras.Sequential([L.InputLayer((3,)), L.Dense(2, activation="elu")]))


def test_keras_example_models(request):
    """Every example model's .keras file imports and matches Keras on its eval data."""
    import json
    from pathlib import Path

    from qtc.frontends.keras import load_keras

    try:
        root = request.getfixturevalue("example_models_dir")
    except pytest.FixtureLookupError:
        root = Path(__file__).resolve().parents[1] / "build" / "models"
    root = Path(root) if root is not None else None
    if root is None or not root.is_dir():
        pytest.skip("example models are not built (run 'make models')")
    folders = sorted(p for p in root.iterdir() if (p / f"{p.name}.keras").exists())
    if not folders:
        pytest.skip(f"no <name>/<name>.keras under {root}")
    for folder in folders:
        model = keras.models.load_model(folder / f"{folder.name}.keras", compile=False)
        g = load_keras(folder / f"{folder.name}.keras")
        data = np.load(folder / "data.npz")
        meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
        keys = [i["eval_key"] for i in meta.get("keras", {}).get("inputs", [])] or ["x_eval"]
        xs = [np.asarray(data[k][:4], np.float32) for k in keys]
        for i in range(len(xs[0])):
            feeds = {nm: x[i:i + 1] for nm, x in zip(g.inputs, xs)}
            got = run(g, feeds)
            ref = model([x[i:i + 1] for x in xs] if len(xs) > 1 else xs[0][i:i + 1], training=False)
            ref = ref if isinstance(ref, (list, tuple)) else [ref]
            for r, o in zip(ref, g.outputs):
                assert rel_err(np.asarray(r), got[o]) <= 1e-4, f"{folder.name}: {rel_err(np.asarray(r), got[o]):.2e}"
