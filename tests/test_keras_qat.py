"""Keras QAT via tfmot: BN folding, the Conv1D QuantizeConfig, TF's converter, back into qtc's IR."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import has_module

pytestmark = pytest.mark.skipif(not (has_module("tensorflow_model_optimization") and has_module("tf_keras")),
                                reason="needs tensorflow, tf_keras and tensorflow-model-optimization")


def _small_conv1d(path, seed: int = 0):
    """Conv1D-BN-ReLU-MaxPool1D-Conv1D-BN-ReLU-GAP-Dense: the layers tfmot 0.8 lacks configs for."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(32, 1), batch_size=1, name="input")
    x = keras.layers.Conv1D(4, 5, padding="same", name="conv0")(inp)
    x = keras.layers.BatchNormalization(name="bn0")(x)
    x = keras.layers.ReLU(name="relu0")(x)
    x = keras.layers.MaxPooling1D(2, name="pool0")(x)
    x = keras.layers.Conv1D(8, 3, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    out = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inp, out, name="small1d")
    rng = np.random.default_rng(seed)
    for bn in ("bn0", "bn1"):  # non-trivial statistics, so folding matters
        layer = model.get_layer(bn)
        c = layer.get_weights()[0].shape[0]
        layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.3, c),
                           rng.uniform(0.5, 2.0, c)])
    fc = model.get_layer("fc")
    fc.set_weights([rng.normal(0, 1.0, fc.get_weights()[0].shape), rng.normal(0, 0.1, 3)])  # logits of O(1)
    model.save(path)
    return model


def test_fold_chain_matches_and_rejects_branches(tmp_path):
    import tf_keras as keras

    from qtc.dualtrack.keras_qat import fold_chain
    from qtc.errors import QtcError

    model = _small_conv1d(tmp_path / "m.keras")
    folded, what = fold_chain(model)
    assert what == ["bn0 into conv0 (+relu0)", "bn1 into conv1 (+relu1)"]
    assert not any(type(lay).__name__ == "BatchNormalization" for lay in folded.layers)
    x = np.random.default_rng(1).normal(0, 1, (6, 32, 1)).astype(np.float32)
    ref = np.concatenate([model(x[i:i + 1]).numpy() for i in range(6)])
    np.testing.assert_allclose(folded.predict(x, verbose=0), ref, atol=1e-4)   # batch-free and equal

    inp = keras.Input(shape=(4,))
    a, b = keras.layers.Dense(2, name="a")(inp), keras.layers.Dense(2, name="b")(inp)
    branchy = keras.Model(inp, keras.layers.Add(name="add")([a, b]))
    with pytest.raises(QtcError, match="chain of single-input layers"):
        fold_chain(branchy)


def test_keras_qat_conv1d_to_int8_tflite_and_ir(tmp_path):
    from qtc.dualtrack.keras_qat import keras_qat
    from qtc.eval.compare import compare
    from qtc.eval.runtimes import quantize_samples, run_qtc, run_tflm
    from qtc.passes.quantize import check

    path = tmp_path / "small1d.keras"
    _small_conv1d(path)
    rng = np.random.default_rng(2)
    calib = rng.normal(0, 1, (96, 32, 1)).astype(np.float32)
    res = keras_qat(path, calib, tmp_path / "a.tflite", epochs=1, batch_size=32, seed=0)
    assert res.tflite_path.read_bytes()[4:8] == b"TFL3" and res.tflite_bytes == res.tflite_path.stat().st_size
    assert len(res.history) == 1 and np.isfinite(res.history[0])
    g = res.graph
    assert g.is_quantized and g.tensors[g.inputs[0]].dtype == "int8" and g.tensors[g.outputs[0]].dtype == "int8"
    convs = [n for n in g.nodes if n.op in ("Conv1D", "Conv2D")]
    assert len(convs) == 2
    for n in convs:  # qtc's Conv1D QuantizeConfig: one (per-tensor) weight scale, weights in int8 narrow range
        w = g.tensors[n.inputs[1]]
        assert w.quant.scale.size == 1 and w.dtype == "int8" and int(np.abs(w.data).max()) <= 127
    assert not [v for v in check(g, "esp32") if v.rule != "op"]
    # the integer model tracks the float twin on fresh data
    x = rng.normal(0, 1, (32, 32, 1)).astype(np.float32)
    doc = compare(res.float_graph, g, {res.float_graph.inputs[0]: x}, variant="qat_keras", layer_samples=4)
    assert doc["summary"]["cosine"] > 0.97, doc["summary"]
    # and qtc's import of the converter's file computes what TFLM computes on it, bit for bit
    xq = quantize_samples(g, [x[:8]])
    assert np.array_equal(run_tflm(res.tflite_path.read_bytes(), xq)[0], run_qtc(g, xq)[0])
    # deterministic: same model, data and seed -> the same bytes
    again = keras_qat(path, calib, tmp_path / "b.tflite", epochs=1, batch_size=32, seed=0)
    assert again.tflite_path.read_bytes() == res.tflite_path.read_bytes()


def test_keras_qat_errors(tmp_path):
    from qtc.dualtrack.keras_qat import keras_qat
    from qtc.errors import QtcError

    with pytest.raises(QtcError, match="no tf_keras twin"):
        keras_qat(tmp_path / "none.keras", np.zeros((4, 32, 1), np.float32), tmp_path / "x.tflite")
    path = tmp_path / "m.keras"
    _small_conv1d(path)
    with pytest.raises(QtcError, match="Keras model takes"):
        keras_qat(path, np.zeros((4, 1, 32), np.float32), tmp_path / "x.tflite")
