"""TFLite front end: float parity with LiteRT, exact quant-param import, layouts, errors.

Float .tflite files come from the small Keras models of test_frontend_keras.py
and from tf.functions that exercise the converter's other builtins
(transformer-ish attention, image ops, misc elementwise/reduce/slice ops).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf_keras")
pytest.importorskip("ai_edge_litert")

from qtc.errors import ModelFormatError, UnsupportedOpError  # noqa: E402
from qtc.eval.runtimes import run_litert, run_qtc  # noqa: E402
from qtc.frontends.tflite import load_tflite  # noqa: E402
from conftest import load_sibling  # noqa: E402




kc = load_sibling("test_frontend_keras")


# --------------------------------------------------------------------------- model makers
def attention_fn():
    """Multi-head self-attention-ish block: FC, reshape/transpose, batch matmul, softmax, GELU, mean."""
    rng = np.random.default_rng(0)
    wq, wk, wv = (tf.constant(rng.normal(0, 0.4, (8, 8)).astype(np.float32)) for _ in range(3))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 8], tf.float32)])
    def f(x):
        def heads(t):
            return tf.transpose(tf.reshape(t, [1, 16, 2, 4]), [0, 2, 1, 3])
        q, k, v = heads(tf.matmul(x, wq)), heads(tf.matmul(x, wk)), heads(tf.matmul(x, wv))
        p = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * 0.5)
        o = tf.reshape(tf.transpose(tf.matmul(p, v), [0, 2, 1, 3]), [1, 16, 8])
        o = tf.nn.gelu(o + x, approximate=False)
        return o - tf.reduce_mean(o, axis=-1, keepdims=True)
    return f


def image_fn():
    """Transpose conv, resizes (half-pixel and align-corners), pad, strided slice, split, pools, slice."""
    rng = np.random.default_rng(1)
    kt = tf.constant(rng.normal(0, 0.3, (3, 3, 6, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32)])
    def f(x):
        y = tf.nn.conv2d_transpose(x, kt, [1, 16, 16, 6], 2, "SAME")
        r1 = tf.image.resize(x, [16, 16], method="bilinear")
        r2 = tf.image.resize(x, [16, 16], method="nearest")
        c = tf.concat([y, r1, r2], -1)
        p = tf.pad(c, [[0, 0], [1, 2], [0, 1], [0, 0]])
        s = p[:, 1:15:2, 2:, :]
        a, b = tf.split(s, 2, axis=-1)
        m = tf.nn.max_pool2d(a, 2, 2, "VALID") + tf.nn.avg_pool2d(b, 3, 2, "SAME")[:, :3, :7, :]
        r3 = tf.compat.v1.image.resize_bilinear(x, [12, 12], align_corners=True)
        return m, tf.slice(r3, [0, 1, 2, 0], [1, 8, -1, 2])
    return f


def misc_fn():
    """Leaky relu, logistic, tanh, hard swish, fused relu6, split_v, sum, reduce max, strided slices."""
    @tf.function(input_signature=[tf.TensorSpec([1, 6, 10], tf.float32)])
    def f(x):
        a = tf.nn.leaky_relu(x, 0.2)
        b = tf.nn.relu6(x * 3.0)
        c = tf.tanh(x) + tf.sigmoid(x)
        e = x * tf.nn.relu6(x + 3.0) / 6.0
        u, v, w = tf.split(tf.concat([a, b, c, e], -1), [10, 25, -1], axis=-1)
        s = tf.reduce_sum(u, axis=1, keepdims=True)
        mx = tf.squeeze(tf.reduce_max(v, axis=[1], keepdims=True), [1])
        g = tf.expand_dims(tf.nn.relu(w[:, 2, :]), 1)
        return s, mx, g - u[:, :1, :5]
    return f


def div_fn():
    @tf.function(input_signature=[tf.TensorSpec([1, 4, 6], tf.float32)])
    def f(x):
        return tf.nn.relu(tf.math.divide(x, 2.0 + tf.sigmoid(x)))
    return f


TF_FUNCTIONS = {"attention": attention_fn, "image": image_fn, "misc": misc_fn, "div": div_fn}


def convert(source, int8: bool = False, calib: np.ndarray | None = None, int16: bool = False,
            fp16: bool = False) -> bytes:
    """Keras model or tf.function → .tflite bytes (float, full int8, 16x8, or fp16 weights)."""
    if hasattr(source, "get_concrete_function"):
        c = tf.lite.TFLiteConverter.from_concrete_functions([source.get_concrete_function()], source)
    else:
        c = tf.lite.TFLiteConverter.from_keras_model(source)
    if int8 or int16:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([s[None]] for s in calib)
        if int16:
            c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            c.inference_input_type = c.inference_output_type = tf.int16
        else:
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.inference_input_type = c.inference_output_type = tf.int8
    elif fp16:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
    return c.convert()


def fn_samples(fn, n: int, seed: int = 0) -> np.ndarray:
    shape = tuple(fn.input_signature[0].shape[1:])
    return np.random.default_rng(seed).normal(0, 1, (n, *shape)).astype(np.float32)


def assert_float_parity(blob: bytes, x: np.ndarray, tol: float = 1e-4):
    g = load_tflite(blob)
    ref = run_litert(blob, [x])
    got = run_qtc(g, [x])
    assert len(ref) == len(got)
    for r, o in zip(ref, got):
        assert r.shape == o.shape
        assert kc.rel_err(r, o) <= tol, f"relative error {kc.rel_err(r, o):.2e}"
    return g


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(kc.KERAS_MODELS) + sorted(kc.EXTRA_MODELS))
def test_tflite_float_keras_parity(name):
    model = {**kc.KERAS_MODELS, **kc.EXTRA_MODELS}[name]()
    blob = convert(model)
    x = kc.sample_inputs(model, 4, seed=3)
    g = assert_float_parity(blob, x)
    assert g.metadata["source_format"] == "tflite"
    assert all(t.quant is None for t in g.tensors.values())


@pytest.mark.parametrize("name", sorted(TF_FUNCTIONS))
def test_tflite_float_op_coverage_parity(name):
    fn = TF_FUNCTIONS[name]()
    blob = convert(fn)
    assert_float_parity(blob, fn_samples(fn, 3, seed=4))


def test_tflite_dilated_conv_chain_fused():
    """SPACE_TO_BATCH_ND → conv → BATCH_TO_SPACE_ND becomes one dilated conv, and on [N, L, C] a Conv1D."""
    model = kc.build_dilated_conv1d()
    blob = convert(model)
    g = load_tflite(blob)
    dil = sorted(tuple(n.attrs["dilations"]) for n in g.nodes if n.op == "Conv1D")
    assert dil == [(2,), (4,)]
    assert not {"Conv2D", "Unsqueeze", "Reshape", "Pad"} & {n.op for n in g.nodes}


@pytest.mark.parametrize("name", ["conv1d", "dilated_conv1d"])
def test_tflite_conv1d_matches_keras_front_end(name):
    """TF's Conv1D / 1-D pool expansion (EXPAND_DIMS + 2-D op + RESHAPE, causal PAD, dilated chains) imports
    as the Keras front end's IR: same ops and attributes, weights [O, K, I] with the same values."""
    from qtc.frontends.keras import from_keras
    from qtc.ir.diff import canonical_attrs
    from qtc.passes import canonicalize

    model = {**kc.KERAS_MODELS, **kc.EXTRA_MODELS}[name]()
    gk = canonicalize(from_keras(model), channels_last=True)
    gt = canonicalize(load_tflite(convert(model)), channels_last=True)
    assert [n.op for n in gt.nodes] == [n.op for n in gk.nodes]
    assert "Conv1D" in {n.op for n in gt.nodes}
    for nk, nt in zip(gk.nodes, gt.nodes):
        assert canonical_attrs(nt) == canonical_attrs(nk), nk.name
        if nk.op in ("Conv1D", "FullyConnected"):
            wk, wt = gk.tensors[nk.inputs[1]].data, gt.tensors[nt.inputs[1]].data
            assert wt.shape == wk.shape
            np.testing.assert_allclose(wt, wk, atol=1e-6)


def test_tflite_int8_conv1d_weights_per_channel():
    """int8 Conv1D weights come back [O, K, I] with the file's per-output-channel scales on axis 0."""
    model = kc.build_conv1d()
    blob = convert(model, int8=True, calib=kc.sample_inputs(model, 20))
    g = load_tflite(blob)
    assert not {"Conv2D", "Unsqueeze"} & {n.op for n in g.nodes}
    details = {tuple(d["shape"]): d for d in _tensor_details(blob).values() if len(d["shape"]) == 4}
    convs = [n for n in g.nodes if n.op == "Conv1D"]
    assert len(convs) == 3
    for n in convs:
        w = g.tensors[n.inputs[1]]
        o, k, i = w.shape
        src = details[(o, 1, k, i)]["quantization_parameters"]
        assert w.dtype == "int8" and w.quant.axis == 0 and w.quant.narrow_range and w.quant.symmetric
        np.testing.assert_array_equal(w.quant.scale, src["scales"].astype(np.float32))
    assert g.tensors[convs[0].outputs[0]].shape == (1, 32, 8)


def test_tflite_min_max_import_as_clip():
    """MAXIMUM / MINIMUM with a constant scalar are clamps: Clip (clip_by_value → one Clip); exact in int8."""
    from qtc.eval.runtimes import compare_bitexact

    @tf.function(input_signature=[tf.TensorSpec([1, 6, 10], tf.float32)])
    def f(x):
        return tf.clip_by_value(x * 2.0, -0.5, 0.75) + tf.maximum(x, 0.25)

    g = assert_float_parity(convert(f), fn_samples(f, 3, seed=1))
    clips = sorted((n.attrs.get("min"), n.attrs.get("max")) for n in g.nodes if n.op == "Clip")
    assert clips == [(-0.5, 0.75), (0.25, None)]
    blob = convert(f, int8=True, calib=fn_samples(f, 20))
    qg = load_tflite(blob)
    assert sorted(n.op for n in qg.nodes) == ["Add", "Clip", "Clip", "Mul"]
    rep = compare_bitexact(qg, blob, [fn_samples(f, 3, seed=2)], runtimes=("litert_ref",))
    assert all(s["exact_samples"] == s["samples"] == 3 for s in rep["runtimes"]["litert_ref"].values())

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32), tf.TensorSpec([1, 4], tf.float32)])
    def two(x, y):
        return tf.maximum(x, y)

    with pytest.raises(UnsupportedOpError, match="MAXIMUM of two runtime tensors"):
        load_tflite(convert(two))


def test_tflite_fp16_weights_fold():
    model = kc.build_cnn()
    blob = convert(model, fp16=True)
    g = assert_float_parity(blob, kc.sample_inputs(model, 2), tol=1e-3)
    assert not any(n.op == "Dequantize" for n in g.nodes)
    w = g.tensors[next(n for n in g.nodes if n.op == "Conv2D").inputs[1]]
    assert w.dtype == "float32" and w.data is not None


def _tensor_details(blob: bytes) -> dict[str, dict]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    return {d["name"]: d for d in it.get_tensor_details()}


def test_tflite_int8_quant_params_exact():
    from qtc.frontends._builder import clean_name

    model = kc.build_cnn()
    blob = convert(model, int8=True, calib=kc.sample_inputs(model, 20))
    g = load_tflite(blob, name="cnn_int8")
    assert g.name == "cnn_int8" and g.is_quantized
    details = _tensor_details(blob)
    checked = 0
    for raw, d in details.items():
        qp = d["quantization_parameters"]
        name = clean_name(raw.split(";")[0])
        t = g.tensors.get(name)
        if t is None or len(qp["scales"]) == 0 or t.shape != tuple(d["shape"]) \
                or t.dtype != np.dtype(d["dtype"]).name:
            continue  # not imported under this name (re-laid out, or a name shared by two tensors)
        assert t.quant is not None, name
        assert t.quant.scale.dtype == np.float32
        np.testing.assert_array_equal(t.quant.scale, qp["scales"].astype(np.float32))
        np.testing.assert_array_equal(t.quant.zero_point, qp["zero_points"].astype(np.int64))
        if len(qp["scales"]) > 1:
            assert t.quant.axis == qp["quantized_dimension"]
        checked += 1
    assert checked >= 10
    # depthwise weights [1,KH,KW,C*M] are re-laid out to [C*M,KH,KW,1], per-channel axis 3 → 0
    dw = next(n for n in g.nodes if n.op == "Conv2D" and n.attrs.get("groups", 1) > 1)
    w = g.tensors[dw.inputs[1]]
    src = next(d for raw, d in details.items() if d["shape"].tolist() == [1, 3, 3, 16])
    assert w.shape == (16, 3, 3, 1) and w.quant.axis == 0 and w.dtype == "int8"
    np.testing.assert_array_equal(w.quant.scale, src["quantization_parameters"]["scales"])
    assert g.tensors[g.inputs[0]].dtype == "int8"
    assert g.tensors[g.outputs[0]].dtype == "int8"


def test_tflite_int16_activations_import():
    model = kc.build_mlp()
    blob = convert(model, int16=True, calib=kc.sample_inputs(model, 20))
    g = load_tflite(blob)
    acts = [g.tensors[o] for n in g.nodes for o in n.outputs]
    assert any(t.dtype == "int16" for t in acts)
    for t in acts:
        if t.dtype == "int16":
            assert t.quant.bits == 16 and np.all(t.quant.zero_point == 0)


def test_tflite_metadata_and_path(tmp_path):
    import hashlib

    model = kc.build_mlp()
    blob = convert(model)
    p = tmp_path / "mlp_float.tflite"
    p.write_bytes(blob)
    g = load_tflite(p)
    assert g.name == "mlp_float"
    assert g.metadata["source_file"] == "mlp_float.tflite"
    assert g.metadata["source_sha256"] == hashlib.sha256(blob).hexdigest()


def test_tflite_import_is_deterministic(tmp_path):
    from qtc.ir import save

    model = kc.build_cnn()
    blob = convert(model, int8=True, calib=kc.sample_inputs(model, 16))
    a = save(load_tflite(blob, name="m"), tmp_path / "a.qir")
    b = save(load_tflite(blob, name="m"), tmp_path / "b.qir")
    for f in ("graph.json", "weights.npz"):
        assert (Path(a) / f).read_bytes() == (Path(b) / f).read_bytes()


def test_tflite_corrupt_and_truncated(tmp_path):
    model = kc.build_mlp()
    blob = convert(model)
    p = tmp_path / "junk.tflite"
    p.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ModelFormatError, match="junk.tflite"):
        load_tflite(p)
    for cut in (16, len(blob) // 3, len(blob) // 2, len(blob) - 100):
        t = tmp_path / f"cut{cut}.tflite"
        t.write_bytes(blob[:cut])
        with pytest.raises(ModelFormatError, match=f"cut{cut}.tflite"):
            load_tflite(t)
    with pytest.raises(ModelFormatError, match="cannot read"):
        load_tflite(tmp_path / "missing.tflite")


def test_tflite_unsupported_op_named():
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def f(x):
        return tf.math.sin(x) * 2.0

    with pytest.raises(UnsupportedOpError) as exc:
        load_tflite(convert(f))
    msg = str(exc.value)
    assert "SIN" in msg and "op #0" in msg and "fix:" in msg


def _example_dir(request) -> Path | None:
    try:
        d = request.getfixturevalue("example_models_dir")
    except pytest.FixtureLookupError:
        d = Path(__file__).resolve().parents[1] / "build" / "models"
    return Path(d) if d is not None and Path(d).is_dir() else None


def test_tflite_example_models_float(request):
    """Every example model's float .tflite imports and matches LiteRT on its eval data."""
    import json

    root = _example_dir(request)
    if root is None:
        pytest.skip("example models are not built (run 'make models')")
    folders = sorted(p for p in root.iterdir() if (p / f"{p.name}_float.tflite").exists())
    if not folders:
        pytest.skip(f"no <name>/<name>_float.tflite under {root}")
    for folder in folders:
        data = np.load(folder / "data.npz")
        meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
        keys = [i["eval_key"] for i in meta.get("keras", {}).get("inputs", [])] or ["x_eval"]
        xs = [np.asarray(data[k][:8], np.float32) for k in keys]
        blob = (folder / f"{folder.name}_float.tflite").read_bytes()
        g = load_tflite(blob, name=folder.name)
        ref, got = run_litert(blob, xs), run_qtc(g, xs)
        for r, o in zip(ref, got):
            assert kc.rel_err(r, o) <= 1e-4, f"{folder.name}: relative error {kc.rel_err(r, o):.2e}"
