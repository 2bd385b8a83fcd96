"""ONNX front end: parity with ONNX Runtime for torch.onnx exports (legacy and
dynamo exporters, several opsets) and for hand-built graphs covering the op
table, canonicalised in both layouts; and its error messages."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from small_nets import NETS, make, ort_run, rel_err, to_onnx_bytes  # noqa: E402

from qtc.errors import ModelFormatError, ShapeError, UnsupportedOpError  # noqa: E402
from qtc.frontends.onnx import load_onnx  # noqa: E402
from qtc.interp import run_float  # noqa: E402
from qtc.passes import canonicalize  # noqa: E402

TOL = 1e-4


def _outs(g, feeds) -> list[np.ndarray]:
    res = run_float(g, feeds)
    return [res[o] for o in g.outputs]


def _check(g, data: bytes, feeds: dict, tol: float = TOL, layouts=(None, False, True)):
    refs = ort_run(data, feeds)
    for cl in layouts:
        h = g if cl is None else canonicalize(g, channels_last=cl)
        for got, ref in zip(_outs(h, feeds), refs):
            assert rel_err(got, ref) <= tol, (cl, rel_err(got, ref))


@pytest.fixture(scope="module")
def exported():
    cache = {}
    for name in NETS:
        model, x = make(name)
        cache[name] = (to_onnx_bytes(model, x, opset=17), x.numpy())
    return cache


@pytest.mark.parametrize("name", NETS)
def test_torch_onnx_export_parity(exported, name):
    data, x = exported[name]
    g = load_onnx(data)
    assert g.metadata["source_format"] == "onnx" and g.metadata["onnx_opset"] == 17
    assert g.inputs == ["input"] and g.outputs == ["output"]
    _check(g, data, {"input": x})


def test_metadata_from_file(tmp_path, exported):
    import hashlib

    data, x = exported["cnn"]
    (tmp_path / "cnn.onnx").write_bytes(data)
    g = load_onnx(tmp_path / "cnn.onnx", name="my_cnn")
    assert g.name == "my_cnn"
    assert g.metadata["source_file"] == "cnn.onnx"
    assert g.metadata["source_sha256"] == hashlib.sha256(data).hexdigest()
    w = next(n for n in g.nodes if n.op == "Conv2D")
    assert g.tensors[w.inputs[1]].shape == (8, 3, 3, 3) and w.attrs["channels_last"] is False


def test_old_opset_decomposed_layernorm_and_erf_gelu():
    """Opset 14 has no LayerNormalization/Gelu: the exporter decomposes them; qtc fuses them back."""
    model, x = make("encoder")
    data = to_onnx_bytes(model, x, opset=14)
    src_ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert {"Erf", "Pow", "ReduceMean", "Sqrt"} <= src_ops
    g = load_onnx(data)
    ops = [n.op for n in g.nodes]
    assert ops.count("LayerNorm") == 2 and ops.count("Gelu") == 1
    _check(g, data, {"input": x.numpy()})


@pytest.mark.slow
def test_dynamo_exporter_encoder():
    model, x = make("encoder")
    data = to_onnx_bytes(model, x, dynamo=True)
    g = load_onnx(data)
    assert {"LayerNorm", "Gelu", "Softmax"} <= {n.op for n in g.nodes}
    _check(g, data, {g.inputs[0]: x.numpy()})


# ------------------------------------------------------- hand-built graphs
def _model(nodes, inputs, outputs, inits=(), opset=17) -> bytes:
    graph = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="qtc-tests")
    m.ir_version = 8
    return m.SerializeToString()


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name, arr):
    arr = np.asarray(arr)
    return numpy_helper.from_array(arr, name)


RNG = np.random.default_rng(0)


def test_gemm_matmul_variants():
    a = RNG.normal(size=(3, 5)).astype(np.float32)
    w = RNG.normal(size=(4, 5)).astype(np.float32)  # transB=1 layout
    c = RNG.normal(size=(4,)).astype(np.float32)
    w2 = RNG.normal(size=(4, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "c"], ["g1"], alpha=0.5, beta=2.0, transB=1),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
        helper.make_node("Gemm", ["xt", "w", "c"], ["g2"], transA=1, transB=1),
        helper.make_node("MatMul", ["g1", "w2"], ["m1"]),
        helper.make_node("Transpose", ["g1"], ["g1t"], perm=[1, 0]),
        helper.make_node("MatMul", ["g2", "g1t"], ["m2"]),
    ]
    data = _model(nodes, [_vi("x", [3, 5])], [_vi("m1", [3, 6]), _vi("m2", [3, 3])],
                  [_init("w", w), _init("c", c), _init("w2", w2)])
    g = load_onnx(data)
    ops = [n.op for n in g.nodes]
    assert ops.count("FullyConnected") == 3 and ops.count("MatMul") == 1
    _check(g, data, {"x": a})


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("b_const", [True, False])
@pytest.mark.parametrize("c_shape", [None, (), (4,), (1, 4), (3, 4)])
def test_gemm_alpha_beta_bias_shapes(trans_b, b_const, c_shape):
    rng = np.random.default_rng(7)
    a = rng.normal(size=(3, 5)).astype(np.float32)
    b = rng.normal(size=(4, 5) if trans_b else (5, 4)).astype(np.float32)
    inputs, inits, feeds, names = [_vi("a", [3, 5])], [], {"a": a}, ["a", "b"]
    if b_const:
        inits.append(_init("b", b))
    else:
        inputs.append(_vi("b", list(b.shape)))
        feeds["b"] = b
    if c_shape is not None:
        inits.append(_init("c", rng.normal(size=c_shape).astype(np.float32)))
        names.append("c")
    data = _model([helper.make_node("Gemm", names, ["y"], alpha=0.5, beta=2.0, transB=trans_b)], inputs,
                  [_vi("y", [3, 4])], inits)
    g = load_onnx(data)
    assert g.outputs == ["y"]
    assert ("FullyConnected" if b_const else "MatMul") in {n.op for n in g.nodes}
    _check(g, data, feeds, layouts=(None,))


def test_conv_variants_and_pools():
    x = RNG.normal(size=(1, 4, 9, 10)).astype(np.float32)
    w = RNG.normal(size=(6, 2, 3, 3)).astype(np.float32) * 0.3
    wt = RNG.normal(size=(6, 3, 2, 2)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], group=2, strides=[2, 1], auto_pad="SAME_UPPER"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "wt"], ["ct"], strides=[2, 2], output_padding=[1, 0]),
        helper.make_node("MaxPool", ["ct"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], pads=[0, 0, 1, 1],
                         count_include_pad=1, ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["ap"], ["gp"]),
        helper.make_node("LeakyRelu", ["gp"], ["y"], alpha=0.2),
    ]
    data = _model(nodes, [_vi("x", [1, 4, 9, 10])], [_vi("y", None)],
                  [_init("w", w), _init("wt", wt), _init("lo", np.float32(-0.5)), _init("hi", np.float32(1.5))])
    g = load_onnx(data)
    assert {"Conv2D", "Clip", "ConvTranspose2D", "MaxPool", "AvgPool", "GlobalAvgPool", "LeakyRelu"} == \
        {n.op for n in g.nodes}
    _check(g, data, {"x": x})


def test_batchnorm_sub_div_and_sum():
    x = RNG.normal(size=(2, 3, 5, 5)).astype(np.float32)
    c = 4
    bn = [_init(f"bn{i}", v.astype(np.float32)) for i, v in
          enumerate([RNG.uniform(0.5, 1.5, c), RNG.normal(0, 0.2, c), RNG.normal(0, 0.3, c), RNG.uniform(0.5, 1.5, c)])]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["cv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["cv", "bn0", "bn1", "bn2", "bn3"], ["n"], epsilon=1e-3),
        helper.make_node("Sub", ["n", "k"], ["s"]),
        helper.make_node("Div", ["s", "k"], ["d"]),
        helper.make_node("Sum", ["d", "n", "s"], ["y"]),
    ]
    inits = [_init("w", RNG.normal(size=(c, 3, 3, 3)).astype(np.float32) * 0.3), *bn,
             _init("k", np.float32(1.5))]
    data = _model(nodes, [_vi("x", [2, 3, 5, 5])], [_vi("y", None)], inits, opset=15)
    g = load_onnx(data)
    assert [n.op for n in g.nodes] == ["Conv2D", "BatchNorm", "Sub", "Div", "Add", "Add"]
    _check(g, data, {"x": x})


@pytest.mark.parametrize("op,kw", [
    ("ConvTranspose", {"output_shape": [10, 12], "strides": [2, 2]}),
    ("ConvTranspose", {"output_shape": [11, 13], "strides": [2, 2]}),
    ("ConvTranspose", {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("ConvTranspose", {"pads": [1, 0, 0, 1], "dilations": [2, 1], "strides": [1, 2]}),
    ("Conv", {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("Conv", {"auto_pad": "VALID", "dilations": [2, 1]}),
])
def test_conv_padding_rules(op, kw):
    x = RNG.normal(size=(1, 3, 5, 6)).astype(np.float32)
    w = RNG.normal(size=(3, 2, 3, 3) if op == "ConvTranspose" else (2, 3, 3, 3)).astype(np.float32)
    data = _model([helper.make_node(op, ["x", "w"], ["y"], **kw)], [_vi("x", [1, 3, 5, 6])], [_vi("y", None)],
                  [_init("w", w)])
    _check(load_onnx(data), data, {"x": x})


def test_shape_ops_and_reductions():
    x = RNG.normal(size=(2, 6, 4, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["s1", "s2"], axis=1),
        helper.make_node("Slice", ["s2", "st", "en", "ax", "stp"], ["sl"]),
        helper.make_node("Pad", ["s1", "pads", "pv"], ["pd"]),
        helper.make_node("ReduceSum", ["pd", "rax"], ["rs"], keepdims=1),
        helper.make_node("ReduceMax", ["sl"], ["rm"], axes=[3], keepdims=0),
        helper.make_node("ReduceMean", ["pd"], ["rmean"], axes=[1, 2], keepdims=0),
        helper.make_node("Unsqueeze", ["rm", "uax"], ["us"]),
        helper.make_node("Squeeze", ["us", "uax"], ["sq"]),
        helper.make_node("Concat", ["sq", "sq"], ["cc"], axis=-1),
        helper.make_node("Flatten", ["cc"], ["fl"], axis=2),
        helper.make_node("Transpose", ["rs"], ["tr"], perm=[0, 2, 3, 1]),
        helper.make_node("Softmax", ["tr"], ["sm"], axis=2),
        helper.make_node("Gather", ["x", "gi"], ["ga"], axis=1),
        helper.make_node("Expand", ["rmean", "eshape"], ["ex"]),
        helper.make_node("HardSigmoid", ["ex"], ["hs"], alpha=0.3, beta=0.4),
    ]
    inits = [_init("sizes", np.array([2, 4], np.int64)), _init("st", np.array([3, -1], np.int64)),
             _init("en", np.array([0, -100], np.int64)), _init("ax", np.array([1, 3], np.int64)),
             _init("stp", np.array([-1, -2], np.int64)), _init("pads", np.array([0, 1, 0, 2, 0, 0, 1, 1], np.int64)),
             _init("pv", np.float32(0.25)), _init("rax", np.array([2], np.int64)),
             _init("uax", np.array([1], np.int64)),
             _init("gi", np.array([0, 1, 4], np.int64)), _init("eshape", np.array([3, 1, 1], np.int64))]
    outs = ["fl", "sm", "ga", "hs"]
    data = _model(nodes, [_vi("x", [2, 6, 4, 5])], [_vi(o, None) for o in outs], inits)
    g = load_onnx(data)
    assert g.outputs == outs
    _check(g, data, {"x": x})


def test_softmax_opset11_flattens_trailing_dims():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    data = _model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [_vi("x", [2, 3, 4])], [_vi("y", None)],
                  opset=11)
    _check(load_onnx(data), data, {"x": x})


def test_resize_modes():
    x = RNG.normal(size=(1, 2, 5, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Resize", ["x", "", "sc"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Resize", ["up", "", "", "sz"], ["y"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Resize", ["x", "", "", "sz"], ["y2"], mode="linear",
                         coordinate_transformation_mode="align_corners"),
    ]
    data = _model(nodes, [_vi("x", [1, 2, 5, 6])], [_vi("y", None), _vi("y2", None)],
                  [_init("sc", np.array([1, 1, 2, 2], np.float32)), _init("sz", np.array([1, 2, 7, 9], np.int64))])
    g = load_onnx(data)
    assert [n.attrs["size"] for n in g.nodes] == [[10, 12], [7, 9], [7, 9]]
    _check(g, data, {"x": x})


def test_quantize_dequantize_linear():
    w = RNG.integers(-127, 128, size=(3, 4)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Gemm", ["xd", "wd"], ["y"], transB=1),
    ]
    inits = [_init("xs", np.float32(0.05)), _init("xz", np.int8(3)), _init("w", w),
             _init("ws", np.array([0.01, 0.02, 0.03], np.float32)), _init("wz", np.zeros(3, np.int8))]
    data = _model(nodes, [_vi("x", [2, 4])], [_vi("y", None)], inits)
    g = load_onnx(data)
    q = next(n for n in g.nodes if n.op == "Quantize")
    qt = g.tensors[q.outputs[0]]
    assert q.attrs["dtype"] == "int8" and qt.dtype == "int8" and qt.quant.zero_point.tolist() == [3]
    dq = [n for n in g.nodes if n.op == "Dequantize"]
    wt = next(g.tensors[n.inputs[0]] for n in dq if g.tensors[n.inputs[0]].is_const)
    assert wt.dtype == "int8" and wt.quant.axis == 0 and wt.quant.scale.tolist() == pytest.approx([0.01, 0.02, 0.03])
    # the float interpreter treats Quantize as identity; the dequantized weights are exact
    x = np.zeros((2, 4), np.float32)
    x[0, 0] = 1.0
    y = _outs(g, {"x": x})[0]
    np.testing.assert_allclose(y[0], w[:, 0] * np.float32([0.01, 0.02, 0.03]), rtol=1e-6)


def test_identity_and_dropout_are_removed():
    nodes = [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Dropout", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Identity", ["c"], ["y"])]
    data = _model(nodes, [_vi("x", [1, 3])], [_vi("y", [1, 3])])
    g = load_onnx(data)
    assert [n.op for n in g.nodes] == ["Relu"] and g.outputs == ["y"]


# ---------------------------------------------------------------- errors
def test_unsupported_op_names_node_and_type():
    boxes, scores = _vi("boxes", [1, 4, 4]), _vi("scores", [1, 1, 4])
    out = helper.make_tensor_value_info("sel", TensorProto.INT64, None)
    data = _model([helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms0")],
                  [boxes, scores], [out])
    with pytest.raises(UnsupportedOpError) as e:
        load_onnx(data)
    msg = str(e.value)
    assert "nms0" in msg and "NonMaxSuppression" in msg and "fix:" in msg


def test_custom_domain_op():
    node = helper.make_node("FancyOp", ["x"], ["y"], name="fancy", domain="com.example")
    graph = helper.make_graph([node], "t", [_vi("x", [1, 2])], [_vi("y", [1, 2])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOpError, match=r"fancy.*com\.example::FancyOp"):
        load_onnx(m)


def test_truncated_and_garbage_files(tmp_path, exported):
    data, _ = exported["cnn"]
    for cut in (len(data) // 2, len(data) - 7, 40):
        (tmp_path / "half.onnx").write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match="truncated or corrupt") as e:
            load_onnx(tmp_path / "half.onnx")
        assert "half.onnx" in str(e.value)
    with pytest.raises(ModelFormatError, match="file not found"):
        load_onnx(tmp_path / "nope.onnx")


def test_opset_range_and_input_shape_errors(exported):
    data, _ = exported["mlp"]
    m = onnx.load_from_string(data)
    m.opset_import[0].version = 9
    with pytest.raises(UnsupportedOpError, match="opset 9"):
        load_onnx(m)
    with pytest.raises(ShapeError, match="not a model input"):
        load_onnx(data, input_shapes={"inptu": (2, 16)})
    with pytest.raises(ShapeError, match="does not fit"):
        load_onnx(data, input_shapes={"input": (2, 17)})
