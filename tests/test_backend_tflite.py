"""The TFLite back end: qtc IR → .tflite that LiteRT (BUILTIN_REF) and TFLM run bit-exactly.

Graphs like the example models (digits_cnn, ts_cnn, peer_encoder, policy_head)
are built in the IR, quantized W8A8 / 16x8 / mixed / 4-bit-weight, written with
``compile_tflite`` and run on 100 inputs through LiteRT's reference kernels and
TFLM: every output must equal qtc's interpreter bit for bit.  Variants a
runtime cannot run are rejected at compile time; malformed IR leaves no file.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flatbuffers")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite_micro")

from qtc.backends.tflite import build, compile_tflite, tflite_bytes, with_int64_bias  # noqa: E402
from qtc.backends.tflite.size import buffer_layout, measure_arena, model_stats  # noqa: E402
from qtc.backends.tflite.verify import verify  # noqa: E402
from qtc.errors import QtcError  # noqa: E402
from qtc.eval.runtimes import compare_bitexact  # noqa: E402
from qtc.frontends.tflite import load_tflite, schema  # noqa: E402
from qtc.ir import Graph, infer_shapes, save  # noqa: E402
from qtc.ops.registry import get_op  # noqa: E402
from qtc.passes.quantize import quantize  # noqa: E402

N_EVAL = 100


# ----------------------------------------------------------------------------- graphs
class _B:
    def __init__(self, name: str, seed: int):
        self.g = Graph(name=name)
        self.rng = np.random.default_rng(seed)

    def w(self, name: str, *shape, k: float = 0.3):
        self.g.add_const(name, (self.rng.normal(size=shape) * k).astype(np.float32))
        return name

    def node(self, op: str, ins, out: str, **attrs):
        self.g.add_node(op, list(ins), [out], name=out, **attrs)
        return out

    def done(self, inputs, outputs) -> Graph:
        self.g.inputs, self.g.outputs = list(inputs), list(outputs)
        return infer_shapes(self.g)


def digits_like() -> Graph:
    """digits_cnn: conv3x3-relu, conv3x3-relu, maxpool2, flatten, fc32-relu, fc10 (NHWC as Keras)."""
    b = _B("digits_like", 1)
    b.g.add_tensor("x", (1, 8, 8, 1))
    c1 = b.node("Conv2D", ["x", b.w("conv1/w", 8, 3, 3, 1), b.w("conv1/b", 8, k=0.1)], "conv1",
                pads=[1, 1, 1, 1], channels_last=True, activation="relu")
    c2 = b.node("Conv2D", [c1, b.w("conv2/w", 16, 3, 3, 8, k=0.2), b.w("conv2/b", 16, k=0.1)], "conv2",
                pads=[1, 1, 1, 1], channels_last=True, activation="relu")
    p = b.node("MaxPool", [c2], "pool", kernel=[2, 2], strides=[2, 2], channels_last=True)
    f = b.node("Reshape", [p], "flatten", shape=[1, 256])
    h = b.node("FullyConnected", [f, b.w("fc1/w", 32, 256, k=0.1), b.w("fc1/b", 32, k=0.1)], "fc1", activation="relu")
    y = b.node("FullyConnected", [h, b.w("fc2/w", 10, 32), b.w("fc2/b", 10, k=0.1)], "fc2")
    return b.done(["x"], [y])


def ts_like() -> Graph:
    """ts_cnn: Conv1D-relu + maxpool x2, Conv1D-relu, global average pool, fc3 (NWC as Keras)."""
    b = _B("ts_like", 2)
    b.g.add_tensor("x", (1, 64, 1))
    x = "x"
    for i, (cin, cout, k) in enumerate([(1, 8, 7), (8, 16, 5), (16, 32, 3)]):
        x = b.node("Conv1D", [x, b.w(f"conv{i}/w", cout, k, cin, k=0.4), b.w(f"conv{i}/b", cout, k=0.1)], f"conv{i}",
                   pads=[k // 2, k // 2], channels_last=True, activation="relu")
        if i < 2:
            x = b.node("MaxPool", [x], f"pool{i}", kernel=[2], strides=[2], channels_last=True)
    gap = b.node("GlobalAvgPool", [x], "gap", channels_last=True, keepdims=False)
    y = b.node("FullyConnected", [gap, b.w("fc/w", 3, 32), b.w("fc/b", 3, k=0.1)], "fc")
    return b.done(["x"], [y])


def peer_like() -> Graph:
    """peer_encoder: fc64-relu, fc32-relu."""
    b = _B("peer_like", 3)
    b.g.add_tensor("x", (1, 6))
    h = b.node("FullyConnected", ["x", b.w("fc1/w", 64, 6), b.w("fc1/b", 64, k=0.1)], "fc1", activation="relu")
    y = b.node("FullyConnected", [h, b.w("fc2/w", 32, 64, k=0.2), b.w("fc2/b", 32, k=0.1)], "fc2", activation="relu")
    return b.done(["x"], [y])


def policy_like() -> Graph:
    """policy_head: fc64-relu, fc5 logits."""
    b = _B("policy_like", 4)
    b.g.add_tensor("x", (1, 36))
    h = b.node("FullyConnected", ["x", b.w("fc1/w", 64, 36, k=0.2), b.w("fc1/b", 64, k=0.1)], "fc1",
               activation="relu")
    y = b.node("FullyConnected", [h, b.w("fc2/w", 5, 64, k=0.2), b.w("fc2/b", 5, k=0.1)], "fc2")
    return b.done(["x"], [y])


def ops_like() -> Graph:
    """Channels-first input (converted by to_channels_last) and the rest of the op list."""
    b = _B("ops_like", 5)
    b.g.add_tensor("x", (1, 4, 9, 9))  # NCHW
    c = b.node("Conv2D", ["x", b.w("c/w", 8, 3, 3, 4), b.w("c/b", 8, k=0.1)], "c", pads=[1, 1, 1, 1],
               strides=[2, 2], activation="relu6")
    dw = b.node("Conv2D", [c, b.w("dw/w", 16, 3, 3, 1), b.w("dw/b", 16, k=0.1)], "dw", pads=[0, 0, 1, 1], groups=8)
    mp = b.node("MaxPool", [dw], "mp", kernel=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    ap = b.node("AvgPool", [dw], "ap", kernel=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=True)
    s = b.node("Add", [mp, ap], "add", activation="relu")
    m = b.node("Mul", [s, dw], "mul")
    d = b.node("Sub", [m, ap], "sub")
    cat = b.node("Concat", [d, mp], "cat", axis=1)
    up = b.node("Resize", [cat], "up", mode="nearest", scales=[2.0, 2.0], coordinate_transformation_mode="asymmetric")
    bl = b.node("Resize", [cat], "bl", mode="bilinear", size=[7, 7], coordinate_transformation_mode="half_pixel")
    tc = b.node("ConvTranspose2D", [cat, b.w("tc/w", 4, 3, 3, 32, k=0.1), b.w("tc/b", 4, k=0.1)], "tc",
                strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    pd = b.node("Pad", [tc], "pad", pads=[0, 0, 1, 0, 0, 0, 0, 1])
    lr = b.node("LeakyRelu", [pd], "lrelu", alpha=0.2)
    hs = b.node("HardSwish", [lr], "hswish")
    mn = b.node("Mean", [up], "mean", axes=[2, 3], keepdims=False)
    mx = b.node("ReduceMax", [bl], "rmax", axes=[1], keepdims=False)
    tr = b.node("Transpose", [mx], "tr", perm=[0, 2, 1])
    sl = b.node("Slice", [tr], "slice", starts=[1, 0], ends=[7, 5], axes=[1, 2], steps=[2, 1])
    sp = ["split0", "split1"]
    b.g.add_node("Split", [sl], sp, name="split", axis=2, sizes=[2, 3])
    mm = b.node("MatMul", [sp[0], b.w("mm/b", 2, 6)], "matmul")
    th = b.node("Tanh", [mm], "tanh")
    sg = b.node("Sigmoid", [sp[1]], "sigmoid")
    sm = b.node("Softmax", [mn], "softmax")
    cl = b.node("Clip", [hs], "clip", min=-1.0, max=1.0)
    return b.done(["x"], [sm, th, sg, cl])


GRAPHS = {"digits_like": digits_like, "ts_like": ts_like, "peer_like": peer_like, "policy_like": policy_like}
KEEP_FLOAT = {"digits_like": "conv2", "ts_like": "conv1", "peer_like": "fc1", "policy_like": "fc1"}


def calib_for(g: Graph, n: int, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: (rng.normal(size=(n, *g.tensors[i].shape[1:])) * scale).astype(np.float32) for i in g.inputs}


def quantized(name: str, variant: str) -> Graph:
    g = GRAPHS[name]() if name in GRAPHS else ops_like()
    calib = calib_for(g, 64, seed=7)
    if variant == "w8a8":
        return quantize(g, calib, progress=False)
    if variant == "16x8":  # every activation int16, then TFLite's int64-bias scheme
        names = [f"={o}" for n in g.nodes for o in n.outputs] + [f"={i}" for i in g.inputs]
        return with_int64_bias(quantize(g, calib, int16=names, progress=False))
    if variant == "mixed":
        return quantize(g, calib, mode="mixed", keep_float=[KEEP_FLOAT[name]], progress=False)
    if variant == "int4":  # per-tensor: TFLM runs INT4 fully-connected filters only per-tensor
        return quantize(g, calib, wbits=4, per_channel=False, progress=False)
    raise ValueError(variant)


def assert_bitexact(qg: Graph, data: bytes, label: str, n: int = N_EVAL) -> dict:
    xs = [v * 1.2 for v in calib_for(qg, n, seed=11).values()]  # a little beyond the calibration range
    rep = compare_bitexact(qg, data, xs, runtimes=("litert_ref", "tflm"))
    for rt in ("litert_ref", "tflm"):
        per = rep["runtimes"][rt]
        assert "error" not in per, f"{label}: {rt} cannot run it: {per.get('error')}"
        for out, s in per.items():
            assert s["samples"] == n
            assert s["exact_samples"] == n, f"{label}: {rt} {out}: {s['exact_samples']}/{n} exact, " \
                                            f"max {s.get('max_lsb_diff')} LSB"
    return rep


# ----------------------------------------------------------------------------- bit-exact
@pytest.mark.parametrize("variant", ["w8a8", "16x8", "mixed", "int4"])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_example_like_models_bitexact(name, variant, tmp_path):
    qg = quantized(name, variant)
    info = compile_tflite(qg, tmp_path / f"{name}.tflite")
    data = (tmp_path / f"{name}.tflite").read_bytes()
    assert info["bytes"] == len(data) and info["ops"] >= len([n for n in qg.nodes if n.op != "Quantize"]) - 1
    assert_bitexact(qg, data, f"{name} {variant}")
    types = {schema().TensorType.INT4: "int4", schema().TensorType.INT16: "int16"}
    kinds = _tensor_types(data)
    if variant == "int4":
        assert "int4" in {types.get(t) for t in kinds}
    if variant == "16x8":
        assert "int16" in {types.get(t) for t in kinds}
    if variant == "mixed":  # a float layer between Quantize/Dequantize bridges
        assert "QUANTIZE" in info["op_counts"] and schema().TensorType.FLOAT32 in kinds


def test_op_coverage_bitexact():
    qg = quantized("ops_like", "w8a8")
    data, info = build(qg)
    assert {"TRANSPOSE_CONV", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "BATCH_MATMUL", "SPLIT_V", "MEAN",
            "REDUCE_MAX", "CONCATENATION", "PAD", "DEPTHWISE_CONV_2D", "HARD_SWISH", "LEAKY_RELU"} \
        <= set(info["op_counts"])
    assert_bitexact(qg, data, "ops_like w8a8", n=30)


def test_float_io_bitexact():
    from qtc.backends.tflite.prepare import float_io

    qg = quantized("digits_like", "w8a8")
    data, info = build(qg, io_dtype="float32")
    assert info["inputs"] == ["x/float"] and info["op_counts"]["QUANTIZE"] == 1 and info["op_counts"]["DEQUANTIZE"] == 1
    xs = list(calib_for(qg, 30, seed=3).values())
    rep = compare_bitexact(float_io(qg), data, xs, runtimes=("litert_ref", "tflm"))
    for rt in ("litert_ref", "tflm"):
        s = next(iter(rep["runtimes"][rt].values()))
        assert s["exact_samples"] == 30 and s["max_abs_diff"] == 0.0


# ----------------------------------------------------------------------------- rejected at compile time
def test_unsupported_variants_rejected(tmp_path):
    g = digits_like()
    calib = calib_for(g, 32, seed=1)
    cases = {
        "int4 per-channel FC": (quantize(g, calib, wbits=4, progress=False), "per-channel INT4 FULLY_CONNECTED"),
        "16x8 int32 bias": (quantize(g, calib, int16=["=conv1", "=x"], progress=False), "int64 bias"),
    }
    gl = digits_like()
    gl.add_node("Gelu", ["fc2"], ["gelu"], name="gelu")
    infer_shapes(gl)
    gl.outputs = ["gelu"]
    cases["int8 Gelu"] = (quantize(gl, calib, progress=False), "256-entry table")
    cases["float Gelu"] = (quantize(gl, calib, mode="mixed", keep_float=["gelu"], progress=False), "no GELU kernel")
    cases["4-bit activations"] = (quantize(g, calib, abits=4, progress=False), "4-bit activations")
    for label, (qg, words) in cases.items():
        out = tmp_path / f"{label.replace(' ', '_')}.tflite"
        with pytest.raises(QtcError, match=words) as err:
            compile_tflite(qg, out)
        assert "fix:" in str(err.value), f"{label}: no hint in {err.value}"
        assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_malformed_ir_fails_and_leaves_nothing(tmp_path):
    qg = quantized("peer_like", "w8a8")
    missing = qg.copy()
    missing.tensors["fc1/w"].quant = None  # an int8 weight without params
    grouped = digits_like()
    grouped.nodes[1].attrs["groups"] = 2
    grouped.tensors["conv2/w"].data = grouped.tensors["conv2/w"].data[..., :4].copy()
    grouped.tensors["conv2/w"].shape = (16, 3, 3, 4)
    for label, g, words in [("no quant", missing, "no quant params"),
                            ("grouped conv", quantize(grouped, calib_for(grouped, 16, 0), progress=False),
                             "grouped convolution")]:
        out = tmp_path / "m.tflite"
        with pytest.raises(QtcError, match=words):
            compile_tflite(g, out)
        assert list(tmp_path.iterdir()) == [], label


# ----------------------------------------------------------------------------- file properties
def _strip_qtc_metadata(data: bytes) -> bytes:
    """The same model without the qtc_quant / qtc_ir entries (as another tool would leave it)."""
    import flatbuffers

    m = schema().ModelT.InitFromPackedBuf(data, 0)
    m.metadata = [md for md in m.metadata if md.name.decode() not in ("qtc_quant", "qtc_ir")]
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _meta(data: bytes) -> dict[str, str]:
    m = schema().ModelT.InitFromPackedBuf(data, 0)
    raw = {md.name.decode(): m.buffers[md.buffer].data for md in m.metadata}
    return {k: bytes(np.asarray([] if v is None else v, dtype=np.uint8)).decode() for k, v in raw.items()}


def assert_same_outputs(a: Graph, b: Graph, n: int = 3) -> None:
    """Both graphs compute the same integers (qtc's interpreter) on the same quantized inputs."""
    from qtc.interp import run

    samples = calib_for(a, n, seed=13)
    for k in range(n):
        feeds = {}
        for name in a.inputs:
            t, x = a.tensors[name], samples[name][k:k + 1]
            feeds[name] = t.quant.quantize(x).astype(t.dtype) if t.quant is not None else x
        ya, yb = run(a, feeds), run(b, dict(zip(b.inputs, feeds.values())))
        for oa, ob in zip(a.outputs, b.outputs):
            np.testing.assert_array_equal(ya[oa], yb[ob])


ROUND_TRIP = [(n, v) for n in sorted(GRAPHS) for v in ("w8a8", "16x8", "mixed", "int4")] + [("ops_like", "w8a8")]


@pytest.mark.parametrize("name,variant", ROUND_TRIP)
def test_round_trip_identical_ir(name, variant):
    """load_tflite(tflite_bytes(g)) is g: names, shapes, dtypes, constant bytes, every quant field,
    ops, attributes, I/O (ops_like is channels-first: compared with its channels-last form, as written)."""
    from qtc.backends.tflite.prepare import prepare
    from qtc.ir.diff import ir_diff

    qg = quantized(name, variant)
    ref = prepare(qg)
    data = tflite_bytes(qg)
    assert ir_diff(ref, load_tflite(data, name=qg.name)) == []
    # without qtc's metadata: names and flags may be guessed differently, the computation is the same
    bare = load_tflite(_strip_qtc_metadata(data), name=qg.name)
    assert [n.op for n in bare.nodes] == [n.op for n in ref.nodes] or name == "ops_like"
    assert_same_outputs(ref, bare)


def conv1d_forms() -> Graph:
    """1-D forms the writer expands: causal and explicit pads (PAD), depthwise, strided, dilated Conv1D,
    padded max pool, count_include_pad average pool, a conv without bias."""
    b = _B("conv1d_forms", 21)
    b.g.add_tensor("x", (1, 40, 4))
    c = b.node("Conv1D", ["x", b.w("c/w", 8, 5, 4), b.w("c/b", 8, k=0.1)], "c", pads=[4, 0], channels_last=True,
               activation="relu")
    d = b.node("Conv1D", [c, b.w("d/w", 8, 3, 1), b.w("d/b", 8, k=0.1)], "d", pads=[1, 1], groups=8, strides=[2],
               channels_last=True)
    p = b.node("MaxPool", [d], "p", kernel=[3], strides=[1], pads=[1, 1], channels_last=True)
    a = b.node("AvgPool", [p], "a", kernel=[2], strides=[2], pads=[1, 1], count_include_pad=True, channels_last=True)
    e = b.node("Conv1D", [a, b.w("e/w", 6, 3, 8)], "e", pads=[1, 1], dilations=[2], channels_last=True)
    m = b.node("MaxPool", [e], "m", kernel=[2], channels_last=True)
    return b.done(["x"], [m])


@pytest.mark.parametrize("variant", ["w8a8", "16x8", "mixed"])
def test_round_trip_conv1d_forms(variant):
    from qtc.backends.tflite.prepare import prepare
    from qtc.ir import QuantParams
    from qtc.ir.diff import ir_diff

    g = conv1d_forms()
    calib = calib_for(g, 32, seed=3)
    if variant == "w8a8":
        qg = quantize(g, calib, progress=False)
        q = qg.tensors["m"].quant  # a pool whose output params differ: MAX_POOL_2D + QUANTIZE
        qg.tensors["m"].quant = QuantParams(q.scale * 1.5, q.zero_point)
    elif variant == "16x8":
        qg = with_int64_bias(quantize(g, calib, int16=[f"={o}" for n in g.nodes for o in n.outputs] + ["=x"],
                                      progress=False))
    else:
        qg = quantize(g, calib, mode="mixed", keep_float=["p"], progress=False)
    data = tflite_bytes(qg)
    assert ir_diff(prepare(qg), load_tflite(data, name=qg.name)) == []
    assert_bitexact(qg, data, f"conv1d_forms {variant}", n=10)
    bare = load_tflite(_strip_qtc_metadata(data), name=qg.name)  # TF-converter-like: still 1-D ops
    assert not {"Conv2D", "Unsqueeze", "Reshape"} & {n.op for n in bare.nodes}
    assert_same_outputs(prepare(qg), bare)


def test_round_trip_float_io_and_clips():
    """Float model I/O, one- and two-sided Clips (int8 and float), a conv without bias, a Flatten."""
    from qtc.backends.tflite.prepare import prepare
    from qtc.ir.diff import ir_diff

    b = _B("clips", 8)
    b.g.add_tensor("x", (1, 6, 6, 3))
    c = b.node("Conv2D", ["x", b.w("c/w", 4, 3, 3, 3)], "c", pads=[1, 1, 1, 1], channels_last=True)
    lo = b.node("Clip", [c], "lo", min=-0.3)
    both = b.node("Clip", [lo], "both", min=-0.2, max=0.45)
    f = b.node("Flatten", [both], "flat", axis=1)
    y = b.node("FullyConnected", [f, b.w("fc/w", 5, 144, k=0.1)], "fc")
    hi = b.node("Clip", [y], "hi", max=0.1)
    g = b.done(["x"], [hi])
    calib = calib_for(g, 32, seed=1)
    for label, qg, io in [("int8", quantize(g, calib, progress=False), "int8"),
                          ("float io", quantize(g, calib, progress=False), "float32"),
                          ("mixed", quantize(g, calib, mode="mixed", keep_float=["both", "hi"], progress=False),
                           "int8")]:
        data = tflite_bytes(qg, io_dtype=io)
        back = load_tflite(data, name=qg.name)
        assert ir_diff(prepare(qg, io), back) == [], label
        bare = load_tflite(_strip_qtc_metadata(data), name=qg.name)
        assert [n.op for n in bare.nodes if n.op == "Clip"] == ["Clip"] * 3, label
        if io == "int8":
            assert_same_outputs(prepare(qg, io), bare)


def test_quant_flags_stored_and_inferred():
    """qtc_quant keeps the flags TFLite has no field for; without it the importer infers them."""
    from qtc.ir.diff import ir_diff

    g = digits_like()
    qg = quantize(g, calib_for(g, 32, seed=2), target="esp-dl", progress=False)  # symmetric, power-of-two
    flags = json.loads(_meta(tflite_bytes(qg))["qtc_quant"])
    assert flags["conv1/w"] == "nsp" and flags["conv1"] == "sp"
    assert ir_diff(qg, load_tflite(_strip_qtc_metadata(tflite_bytes(qg)))) == []  # inferred right here
    # flags that contradict the values: only the metadata can carry them
    qg.tensors["conv1/w"].quant.narrow_range = False  # symmetric full-range weights, all within ±127
    qg.tensors["conv2"].quant.power_of_two = False     # a power-of-two scale by chance
    qg.tensors["fc1"].quant.symmetric = False          # zero point 0 by chance
    data = tflite_bytes(qg)
    assert ir_diff(qg, load_tflite(data)) == []
    guessed = ir_diff(qg, load_tflite(_strip_qtc_metadata(data)))
    assert sorted(guessed) == ["tensor 'conv1/w': quant.narrow_range False != True",
                               "tensor 'conv2': quant.power_of_two False != True",
                               "tensor 'fc1': quant.symmetric False != True"]


def test_ir_metadata_optional_and_reserved(tmp_path):
    qg = quantized("ts_like", "w8a8")
    full, bare = tflite_bytes(qg), tflite_bytes(qg, ir_metadata=False)
    assert {"qtc_quant", "qtc_ir"} <= set(_meta(full)) and not {"qtc_quant", "qtc_ir"} & set(_meta(bare))
    assert len(bare) < len(full)
    assert json.loads(_meta(full)["qtc_ir"])["views"]  # the 3-D names the peephole dropped
    with pytest.raises(QtcError, match="written by qtc itself"):
        compile_tflite(qg, tmp_path / "m.tflite", metadata={"qtc_ir": "{}"})
    assert not (tmp_path / "m.tflite").exists()
    # an entry that is not what qtc writes: a clear error, not a wrong graph
    import flatbuffers

    from qtc.errors import ModelFormatError

    for entry, bad in [("qtc_ir", b"[1]"), ("qtc_ir", b'{"views": [1]}'), ("qtc_quant", b'{"x": "s:7"}'),
                       ("qtc_quant", b"{not json")]:
        m = schema().ModelT.InitFromPackedBuf(full, 0)
        md = next(md for md in m.metadata if md.name.decode() == entry)
        m.buffers[md.buffer].data = list(bad)
        fb = flatbuffers.Builder(len(full) + 1024)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        with pytest.raises(ModelFormatError, match=entry):
            load_tflite(bytes(fb.Output()))


@pytest.mark.parametrize("name", ["digits_cnn", "ts_cnn", "peer_encoder", "policy_head"])
def test_round_trip_example_models(name):
    """build/models/<name>: Keras → canonicalize (channels-last) → quantize (esp32) → .tflite → load_tflite:
    the same IR in W8A8, 16x8, mixed (one layer float) and int4-weight variants."""
    root = Path(__file__).resolve().parents[1] / "build" / "models" / name
    if not (root / f"{name}.keras").is_file():
        pytest.skip("no build/models: run python -m models.train_all --out build/models")
    pytest.importorskip("tf_keras")
    from qtc.frontends.keras import load_keras
    from qtc.ir.diff import ir_diff
    from qtc.passes import canonicalize

    kio = json.loads((root / "meta.json").read_text())["keras"]["inputs"][0]
    g = canonicalize(load_keras(root / f"{name}.keras"), channels_last=True)
    calib = {g.inputs[0]: np.load(root / "data.npz")[kio["calib_key"]][:64]}
    layers = [n.name for n in g.nodes if n.op in ("Conv1D", "Conv2D", "FullyConnected")]
    all16 = [f"={o}" for n in g.nodes for o in n.outputs] + [f"={i}" for i in g.inputs]
    variants = {"w8a8": quantize(g, calib, target="esp32", progress=False),
                "16x8": with_int64_bias(quantize(g, calib, target="esp32", int16=all16, progress=False)),
                "mixed": quantize(g, calib, target="esp32", mode="mixed", keep_float=[layers[1]], progress=False),
                "int4": quantize(g, calib, target="esp32", wbits=4, per_channel=False, progress=False)}
    for variant, qg in variants.items():
        back = load_tflite(tflite_bytes(qg), name=qg.name)
        assert ir_diff(qg, back) == [], f"{name} {variant}"


def test_deterministic_aligned_and_metadata(tmp_path):
    qg = quantized("ts_like", "int4")  # int4 buffers have odd byte counts
    qg.metadata["source_sha256"] = "ab" * 32
    a = compile_tflite(qg, tmp_path / "a.tflite", metadata={"purpose": "test"})
    b = compile_tflite(qg.copy(), tmp_path / "b.tflite", metadata={"purpose": "test"})
    da, db = (tmp_path / "a.tflite").read_bytes(), (tmp_path / "b.tflite").read_bytes()
    assert da == db and a["sha256"] == b["sha256"]
    layout = buffer_layout(da)
    assert len(layout) > 5 and all(x["offset"] % 16 == 0 for x in layout)
    assert any(x["bytes"] % 2 for x in layout)  # odd sizes still leave the next buffer aligned
    m = schema().ModelT.InitFromPackedBuf(da, 0)
    meta = {md.name.decode(): bytes(m.buffers[md.buffer].data).decode() for md in m.metadata}
    assert meta["qtc_version"] and meta["source_sha256"] == "ab" * 32
    assert meta["calibration_method"] == "minmax" and meta["purpose"] == "test"
    assert model_stats(da)["misaligned_buffers"] == []


# ----------------------------------------------------------------------------- verify / size / C
def test_verify_command_passes_and_names_the_op(tmp_path):
    from click.testing import CliRunner

    from qtc.backends.tflite.cli import verify_cmd

    qg = quantized("digits_like", "w8a8")
    compile_tflite(qg, tmp_path / "m.tflite")
    save(qg, tmp_path / "m.qir")
    bad = qg.copy()
    bad.tensors["conv2/b"].data = bad.tensors["conv2/b"].data + 40  # the interpreter now computes conv2 differently
    save(bad, tmp_path / "bad.qir")
    np.save(tmp_path / "eval.npy", calib_for(qg, 20, seed=5)["x"])
    r = CliRunner()
    ok = r.invoke(verify_cmd, [str(tmp_path / "m.tflite"), "--against", str(tmp_path / "m.qir"),
                               "--data", str(tmp_path / "eval.npy")])
    assert ok.exit_code == 0, ok.output
    assert "litert_ref" in ok.output and "tflm" in ok.output and "litert_xnnpack" in ok.output
    fail = r.invoke(verify_cmd, [str(tmp_path / "m.tflite"), "--against", str(tmp_path / "bad.qir"),
                                 "--data", str(tmp_path / "eval.npy"), "--per-layer"])
    assert fail.exit_code == 1, fail.output
    assert "FAIL tflm" in fail.output and "first difference at node conv2 (Conv2D)" in fail.output


def test_verify_per_layer_clean_model():
    qg = quantized("ts_like", "16x8")
    data = tflite_bytes(qg)
    rep = verify(data, qg, list(calib_for(qg, 4, seed=2).values()), per_layer=True)
    assert rep["ok"] and rep["first_diff"] == {"litert_ref": None, "tflm": None}


def test_size_measures_tflm_arena():
    from qtc.backends.tflite.arena import _works

    for name in ("digits_like", "peer_like"):
        data = tflite_bytes(quantized(name, "w8a8"))
        m = measure_arena(data)
        assert m["recorded_total"] == m["recorded_head"] + m["recorded_tail"] > 0
        # TFLM needs what it records plus its peak temporary use while preparing the ops
        assert m["arena_bytes"] >= m["recorded_total"]
        assert _works(data, m["arena_bytes"]) and not _works(data, m["arena_bytes"] - 1)
        assert measure_arena(data) == m  # repeatable


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host gcc")
def test_model_data_c_compiles_with_gcc(tmp_path):
    from qtc.backends.tflite.embed import write_model_data

    data = tflite_bytes(quantized("peer_like", "w8a8"))
    info = write_model_data(data, tmp_path, symbol="peer_model", arena_bytes=1234)
    assert sorted(p.rsplit("/", 1)[-1] for p in info["files"]) == ["model_data.c", "model_data.h"]
    (tmp_path / "main.c").write_text(
        '#include <stdint.h>\n#include <stdio.h>\n#include "model_data.h"\n'
        "int main(void) {\n  uint32_t sum = 0;\n"
        "  for (unsigned i = 0; i < peer_model_len; ++i) sum = sum * 31u + peer_model[i];\n"
        '  printf("%u %u %u %d\\n", peer_model_len, (unsigned)((uintptr_t)peer_model % 16u), sum, '
        "QTC_TFLM_ARENA_BYTES);\n  return 0;\n}\n")
    exe = tmp_path / "check"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-o", str(exe), str(tmp_path / "main.c"),
                    str(tmp_path / "model_data.c")], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    expect = 0
    for byte in data:
        expect = (expect * 31 + byte) % (1 << 32)
    assert out == [str(len(data)), "0", str(expect), "1234"]


def _attrs(node) -> dict:
    """A node's attributes with defaults filled in and neutral values (stride 1, pad 0, ...) dropped."""
    neutral = {"strides": 1, "dilations": 1, "pads": 0}
    out = {}
    for k, v in {**get_op(node.op).ATTRS, **node.attrs}.items():
        if v is None or v == "none" or (k in neutral and all(int(e) == neutral[k] for e in v)):
            continue
        out[k] = v
    return out


def _tensor_types(data: bytes) -> set[int]:
    sg = schema().Model.GetRootAs(data, 0).Subgraphs(0)
    return {sg.Tensors(i).Type() for i in range(sg.TensorsLength())}


def test_verify_reports_litert_ref_sum_as_known_deviation():
    b = _B("sum_like", 9)
    b.g.add_tensor("x", (1, 4, 5, 8))
    b.node("ReduceSum", ["x"], "sum", axes=[1, 2], keepdims=False)
    g = b.done(["x"], ["sum"])
    qg = quantize(g, calib_for(g, 32, 1), progress=False)
    rep = verify(tflite_bytes(qg), qg, list(calib_for(qg, 10, seed=2).values()))
    tflm = rep["runtimes"]["tflm"]["sum"]
    assert tflm["exact_samples"] == 10  # TFLM runs SUM exactly ...
    assert rep["runtimes"]["litert_ref"]["sum"]["exact_samples"] < 10  # ... LiteRT's reference SUM does not
    assert rep["ok"] and [k["op"] for k in rep["known_deviations"]] == ["ReduceSum"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_cnn", "ts_cnn", "peer_encoder", "policy_head"])
def test_keras_example_models_bitexact(name):
    """The trained Keras twins from build/models (python -m models.train_all --out build/models), if present."""
    root = Path(__file__).resolve().parents[1] / "build" / "models" / name
    if not (root / f"{name}.keras").is_file():
        pytest.skip("no build/models: run python -m models.train_all --out build/models")
    pytest.importorskip("tf_keras")
    from qtc.frontends.keras import load_keras
    from qtc.passes import canonicalize

    kio = json.loads((root / "meta.json").read_text())["keras"]["inputs"][0]
    data = np.load(root / "data.npz")
    g = load_keras(root / f"{name}.keras")
    g = canonicalize(g, channels_last=False) or g
    calib = {g.inputs[0]: data[kio["calib_key"]]}
    xs = [data[kio["eval_key"]][:N_EVAL]]
    all16 = [f"={o}" for n in g.nodes for o in n.outputs] + [f"={i}" for i in g.inputs]
    variants = {"w8a8": quantize(g, calib, progress=False),
                "16x8": with_int64_bias(quantize(g, calib, int16=all16, progress=False)),
                "int4": quantize(g, calib, wbits=4, per_channel=False, progress=False)}
    for variant, qg in variants.items():
        rep = compare_bitexact(qg, tflite_bytes(qg), xs, runtimes=("litert_ref", "tflm"))
        for rt, per in rep["runtimes"].items():
            assert "error" not in per, f"{name} {variant} {rt}: {per}"
            s = next(iter(per.values()))
            assert s["exact_samples"] == s["samples"] == N_EVAL, f"{name} {variant} {rt}: {s}"


def test_float_graph_without_bias_runs():
    """A float graph (no quantization; convs without bias get a zero bias LiteRT requires)."""
    from qtc.eval.runtimes import run_litert, run_qtc, run_tflm

    b = _B("float_like", 6)
    b.g.add_tensor("x", (1, 6, 6, 3))
    y = b.node("Conv2D", ["x", b.w("w", 4, 3, 3, 3)], "conv", pads=[1, 1, 1, 1], channels_last=True)
    z = b.node("Conv2D", [y, b.w("dw/w", 4, 3, 3, 1)], "dw", pads=[1, 1, 1, 1], groups=4, channels_last=True,
               activation="relu")
    g = b.done(["x"], [z])
    data = tflite_bytes(g)
    x = calib_for(g, 5, seed=4)["x"]
    ref = run_qtc(g, [x])[0]
    for got in (run_litert(data, [x])[0], run_tflm(data, [x])[0]):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
