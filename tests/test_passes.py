"""Canonicalisation passes: each keeps the float output (≤ 1e-5 relative), is
pure (the input graph is untouched), and does the rewrite it promises."""
from __future__ import annotations

import numpy as np
import pytest

from qtc.ir import Graph, QuantParams, infer_shapes, validate
from qtc.ir.serialize import graph_to_json
from qtc.interp import run_float
from qtc.passes import (cancel_transposes, canonicalize, fold_batchnorm, fold_constants, fuse_activations,
                        remove_dead_nodes, to_channels_last)

TOL = 1e-5
RNG = np.random.default_rng(0)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _w(*shape, scale=0.3):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def _bn_consts(g: Graph, name: str, c: int) -> list[str]:
    vals = [RNG.uniform(0.5, 1.5, c), RNG.normal(0, 0.2, c), RNG.normal(0, 0.3, c), RNG.uniform(0.5, 1.5, c)]
    return [g.add_const(f"{name}.{k}", v.astype(np.float32)).name for k, v in zip(("g", "b", "m", "v"), vals)]


def _finish(g: Graph, inputs, outputs) -> Graph:
    g.inputs, g.outputs = list(inputs), list(outputs)
    infer_shapes(g)
    validate(g)
    return g


def _feeds(g: Graph) -> dict:
    rng = np.random.default_rng(1)
    return {i: rng.normal(size=g.tensors[i].shape).astype(np.float32) for i in g.inputs}


def _same_outputs(a: Graph, b: Graph, feeds=None, tol=TOL):
    feeds = feeds or _feeds(a)
    ra, rb = run_float(a, feeds), run_float(b, feeds)
    assert a.outputs == b.outputs
    for o in a.outputs:
        assert rel_err(rb[o], ra[o]) <= tol, o


def _snapshot(g: Graph):
    doc, arrays = graph_to_json(g)
    return doc, {k: v.copy() for k, v in arrays.items()}


def _ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


# ---------------------------------------------------------------- graphs
def conv_bn_relu(channels_last: bool) -> Graph:
    g = Graph(name="cbr")
    shape = (1, 6, 6, 3) if channels_last else (1, 3, 6, 6)
    g.add_tensor("x", shape)
    g.add_const("w", _w(4, 3, 3, 3))
    g.add_const("b", _w(4))
    g.add_node("Conv2D", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], channels_last=channels_last)
    g.add_node("BatchNorm", ["c", *_bn_consts(g, "bn", 4)], ["n"], channels_last=channels_last, epsilon=1e-3)
    g.add_node("Relu", ["n"], ["y"])
    return _finish(g, ["x"], ["y"])


def fc_bn() -> Graph:
    g = Graph(name="fcbn")
    g.add_tensor("x", (2, 5))
    g.add_const("w", _w(6, 5))
    g.add_node("FullyConnected", ["x", "w"], ["f"])
    g.add_node("BatchNorm", ["f", *_bn_consts(g, "bn", 6)], ["y"])
    return _finish(g, ["x"], ["y"])


def conv1d_bn() -> Graph:
    g = Graph(name="c1bn")
    g.add_tensor("x", (1, 3, 10))
    g.add_const("w", _w(5, 3, 3))
    g.add_node("Conv1D", ["x", "w"], ["c"], pads=[1, 1])
    g.add_node("BatchNorm", ["c", *_bn_consts(g, "bn", 5)], ["y"])
    return _finish(g, ["x"], ["y"])


def small_cnn() -> Graph:
    """NCHW: conv+relu, depthwise+relu6 (Clip), residual Add, SE-style Mul, concat, maxpool, GAP, FC, softmax."""
    g = Graph(name="cnn")
    g.add_tensor("x", (1, 3, 8, 8))
    g.add_const("w1", _w(8, 3, 3, 3))
    g.add_const("w2", _w(8, 3, 3, 1))
    g.add_const("bias_c", _w(8, 1, 1))
    g.add_const("wfc", _w(5, 16))
    g.add_node("Conv2D", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1])
    g.add_node("Relu", ["c1"], ["r1"])
    g.add_node("Conv2D", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], groups=8)
    g.add_node("Clip", ["c2"], ["r2"], min=0.0, max=6.0)
    g.add_node("Add", ["r1", "r2"], ["a"])
    g.add_node("Add", ["a", "bias_c"], ["a2"])
    g.add_node("Mean", ["a2"], ["s"], axes=[2, 3], keepdims=True)
    g.add_node("Sigmoid", ["s"], ["sg"])
    g.add_node("Mul", ["a2", "sg"], ["m"])
    g.add_node("Concat", ["m", "r1"], ["cat"], axis=1)
    g.add_node("MaxPool", ["cat"], ["p"], kernel=[2, 2], strides=[2, 2])
    g.add_node("Softmax", ["p"], ["sm"], axis=1)
    g.add_node("GlobalAvgPool", ["sm"], ["gap"], keepdims=False)
    g.add_node("FullyConnected", ["gap", "wfc"], ["y"])
    return _finish(g, ["x"], ["y"])


# ------------------------------------------------------- fold_batchnorm
@pytest.mark.parametrize("make", [lambda: conv_bn_relu(False), lambda: conv_bn_relu(True), fc_bn, conv1d_bn],
                         ids=["conv_nchw", "conv_nhwc", "fc", "conv1d"])
def test_fold_batchnorm_into_layer(make):
    g = make()
    before = _snapshot(g)
    f = fold_batchnorm(g)
    assert "BatchNorm" not in _ops(f) and len(f.nodes) == len(g.nodes) - 1
    assert f.outputs == g.outputs
    validate(f)
    _same_outputs(g, f)
    assert _snapshot(g)[0] == before[0]  # pure
    assert f.metadata["passes"][-1]["pass"] == "fold_batchnorm"


def test_standalone_batchnorm_becomes_mul_add():
    g = conv_bn_relu(True)
    g.nodes[0].attrs["activation"] = "relu"  # a fused clamp: BN can no longer fold into the conv
    f = fold_batchnorm(g)
    assert _ops(f) == ["Conv2D", "Mul", "Add", "Relu"]
    mul = f.nodes[1]
    assert f.tensors[mul.inputs[1]].shape == (1, 1, 1, 4)  # per channel, channels-last
    _same_outputs(g, f)
    h = conv_bn_relu(False)
    h.outputs = ["c", "y"]  # the conv output is read twice
    f2 = fold_batchnorm(h)
    assert f2.tensors[f2.nodes[1].inputs[1]].shape == (1, 4, 1, 1)
    _same_outputs(h, f2)


# ------------------------------------------------------ fuse_activations
def test_fuse_activations():
    g = small_cnn()
    f = fuse_activations(g)
    assert _ops(f).count("Relu") == 0 and _ops(f).count("Clip") == 0
    acts = {n.name: n.attrs.get("activation") for n in f.nodes if n.op == "Conv2D"}
    assert sorted(acts.values()) == ["relu", "relu6"]
    assert f.tensors["r1"].shape == (1, 8, 8, 8) and "c1" not in f.tensors  # conv now writes r1
    _same_outputs(g, f)


@pytest.mark.parametrize("case", ["two_readers", "graph_output", "not_a_clamp", "already_fused"])
def test_fuse_activations_leaves_unsafe_cases(case):
    g = Graph(name="t")
    g.add_tensor("a", (2, 3))
    g.add_tensor("b", (2, 3))
    g.add_node("Add", ["a", "b"], ["s"], activation="relu6" if case == "already_fused" else "none")
    if case == "not_a_clamp":
        g.add_node("Clip", ["s"], ["y"], min=0.0, max=3.0)
    else:
        g.add_node("Relu", ["s"], ["y"])
    outs = ["y"]
    if case == "two_readers":
        g.add_node("Mul", ["s", "b"], ["z"])
        outs.append("z")
    if case == "graph_output":
        outs.append("s")
    _finish(g, ["a", "b"], outs)
    assert _ops(fuse_activations(g)) == _ops(g)


def test_fuse_clip_n1_to_1_into_fc_and_relu_into_pool():
    g = Graph(name="t")
    g.add_tensor("x", (1, 2, 4, 4))
    g.add_const("w", _w(3, 2))
    g.add_node("MaxPool", ["x"], ["p"], kernel=[2, 2], strides=[2, 2])
    g.add_node("Relu", ["p"], ["r"])
    g.add_node("GlobalAvgPool", ["r"], ["gp"], keepdims=False)
    g.add_node("FullyConnected", ["gp", "w"], ["f"])
    g.add_node("Clip", ["f"], ["y"], min=-1.0, max=1.0)
    _finish(g, ["x"], ["y"])
    f = fuse_activations(g)
    assert [(n.op, n.attrs.get("activation")) for n in f.nodes] == [
        ("MaxPool", "relu"), ("GlobalAvgPool", None), ("FullyConnected", "relu_n1_to_1")]
    _same_outputs(g, f)


# -------------------------------------------------------- fold_constants
def test_fold_constants():
    g = Graph(name="t")
    g.add_tensor("x", (2, 4))
    g.add_const("wt", _w(4, 3))
    g.add_const("c1", _w(3))
    g.add_const("c2", _w(3))
    g.add_node("Transpose", ["wt"], ["w"], perm=[1, 0])
    g.add_node("Add", ["c1", "c2"], ["b"])
    g.add_node("FullyConnected", ["x", "w", "b"], ["y"])
    _finish(g, ["x"], ["y"])
    f = fold_constants(g)
    assert _ops(f) == ["FullyConnected"]
    assert f.tensors["w"].is_const and f.tensors["w"].shape == (3, 4) and "wt" not in f.tensors
    _same_outputs(g, f)


def test_fold_constants_keeps_quantized_weights():
    g = Graph(name="t")
    g.add_tensor("x", (1, 3))
    g.add_const("wq", np.array([[1, -2, 3], [4, 5, -6]], np.int8),
                quant=QuantParams(np.float32([0.5, 0.25]), 0, axis=0))
    g.add_node("Dequantize", ["wq"], ["w"])
    g.add_node("FullyConnected", ["x", "w"], ["y"])
    _finish(g, ["x"], ["y"])
    assert _ops(fold_constants(g)) == ["Dequantize", "FullyConnected"]


# ----------------------------------------------------- remove_dead_nodes
def test_remove_dead_nodes_and_identities():
    g = Graph(name="t")
    g.add_tensor("x", (1, 4))
    g.add_node("Reshape", ["x"], ["r"], shape=[1, 4])
    g.add_node("Relu", ["r"], ["a"])
    g.add_node("Transpose", ["a"], ["t"], perm=[0, 1])
    g.add_node("Pad", ["t"], ["p"], pads=[0, 0, 0, 0])
    g.add_node("Sigmoid", ["a"], ["dead"])
    g.add_node("Tanh", ["dead"], ["dead2"])
    g.add_node("Slice", ["p"], ["y"], starts=[0], ends=[100], axes=[1])
    _finish(g, ["x"], ["y"])
    f = remove_dead_nodes(g)
    assert _ops(f) == ["Relu"] and f.outputs == ["y"] and f.nodes[0].outputs == ["y"]
    assert set(f.tensors) == {"x", "y"}
    _same_outputs(g, f)
    log = f.metadata["passes"][-1]
    assert log["dead"] == ["Sigmoid", "Tanh"] and len(log["identity"]) == 4


def test_identity_between_graph_input_and_output_stays():
    g = Graph(name="t")
    g.add_tensor("x", (2, 3))
    g.add_node("Reshape", ["x"], ["y"], shape=[2, 3])
    _finish(g, ["x"], ["y"])
    f = remove_dead_nodes(g)
    validate(f)
    assert _ops(f) == ["Reshape"]


# ------------------------------------------------------ to_channels_last
def test_to_channels_last_inserts_transposes_only_at_the_boundary():
    g = small_cnn()
    f = to_channels_last(g)
    validate(f)
    assert _ops(f).count("Transpose") == 1 and f.nodes[0].op == "Transpose"
    assert f.tensors["x"].shape == (1, 3, 8, 8)
    layout = [n for n in f.nodes if n.op in ("Conv2D", "MaxPool", "GlobalAvgPool")]
    assert all(n.attrs["channels_last"] for n in layout)
    by = {n.name: n for n in f.nodes}
    assert by["Concat"].attrs["axis"] == 3 and by["Softmax"].attrs["axis"] == 3
    assert by["Mean"].attrs["axes"] == [1, 2]
    assert f.tensors["bias_c_nhwc"].shape == (1, 1, 1, 8)  # the [8,1,1] constant, permuted
    _same_outputs(g, f)
    assert f.metadata["layout"] == "channels_last"


def test_to_channels_last_nhwc_io():
    g = small_cnn()
    f = to_channels_last(g, keep_io_layout=False)
    assert "Transpose" not in _ops(f)
    assert f.tensors["x"].shape == (1, 8, 8, 3) and f.metadata["io_layout"] == {"x": "NHWC"}
    x = _feeds(g)["x"]
    ref = run_float(g, {"x": x})["y"]
    got = run_float(f, {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})["y"]
    assert rel_err(got, ref) <= TOL


def test_to_channels_last_rigid_ops_and_absorbed_transposes():
    """Reshape is layout-rigid (a Transpose back is inserted); explicit Transposes are absorbed;
    Pad/Slice/Split axes are rewritten; a 4-D graph output is transposed back."""
    g = Graph(name="t")
    g.add_tensor("x", (1, 4, 6, 6))
    g.add_const("w", _w(4, 3, 3, 4))
    g.add_node("Conv2D", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    g.add_node("Pad", ["c"], ["p"], pads=[0, 1, 0, 2, 0, 0, 1, 0], value=0.5)
    g.add_node("Slice", ["p"], ["s"], starts=[1], ends=[5], axes=[1])
    g.add_node("Split", ["s"], ["s1", "s2"], axis=3, sizes=[3, 5])
    g.add_node("Transpose", ["s2"], ["tt"], perm=[0, 2, 3, 1])
    g.add_node("Transpose", ["tt"], ["back"], perm=[0, 3, 1, 2])
    g.add_node("Reshape", ["s1"], ["flat"], shape=[1, -1])
    g.add_node("HardSwish", ["back"], ["y2"])
    _finish(g, ["x"], ["flat", "y2"])
    f = to_channels_last(g)
    validate(f)
    tr = [n for n in f.nodes if n.op == "Transpose"]
    assert len(tr) == 3  # into NHWC, back for the Reshape, back for the 4-D output
    assert f.outputs == ["flat", "y2"]
    _same_outputs(g, f)
    assert canonicalize(f).outputs == ["flat", "y2"]


def test_cancel_transposes():
    g = Graph(name="t")
    g.add_tensor("x", (1, 2, 3, 1))
    g.add_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1])
    g.add_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2])
    g.add_node("Relu", ["b"], ["r"])
    g.add_node("Transpose", ["r"], ["c"], perm=[0, 1, 3, 2])  # only moves a size-1 dim: a reshape
    g.add_node("Reshape", ["c"], ["y"], shape=[2, 3])
    _finish(g, ["x"], ["y"])
    f = cancel_transposes(g)
    assert _ops(f) == ["Relu", "Reshape"]
    _same_outputs(g, f)


# ---------------------------------------------------- all passes, all nets
PASSES = {
    "fold_batchnorm": fold_batchnorm, "fuse_activations": fuse_activations, "fold_constants": fold_constants,
    "remove_dead_nodes": remove_dead_nodes, "to_channels_last": to_channels_last,
    "canonicalize": canonicalize, "canonicalize_cl": lambda g: canonicalize(g, channels_last=True),
}


@pytest.fixture(scope="module")
def torch_graphs():
    pytest.importorskip("torch")
    from small_nets import NETS, make

    from qtc.frontends.torch import from_torch

    graphs = {"small_cnn": small_cnn(), "conv_bn_relu": conv_bn_relu(False)}
    for name in NETS:
        model, x = make(name)
        graphs[name] = from_torch(model, (x,))
    return graphs


@pytest.mark.parametrize("pass_name", list(PASSES))
def test_every_pass_keeps_float_output_and_is_pure(torch_graphs, pass_name):
    for name, g in torch_graphs.items():
        before = _snapshot(g)
        f = PASSES[pass_name](g)
        validate(f)
        _same_outputs(g, f)
        doc, arrays = _snapshot(g)
        assert doc == before[0] and all(np.array_equal(arrays[k], before[1][k]) for k in arrays), name


def test_to_channels_last_is_identity_on_channels_last_graphs():
    """A graph that is already channels-last (Keras/TFLite) passes through unchanged in value."""
    import numpy as np

    from qtc.interp import run
    from qtc.ir import Graph, infer_shapes
    from qtc.passes import canonicalize

    rng = np.random.default_rng(0)
    g = Graph("nwc")
    g.add_tensor("x", (1, 32, 1))
    g.inputs = ["x"]
    g.add_const("w0", rng.normal(size=(4, 3, 1)).astype(np.float32))
    g.add_const("w1", rng.normal(size=(8, 3, 4)).astype(np.float32))
    g.add_const("fw", rng.normal(size=(3, 8)).astype(np.float32))
    g.add_node("Conv1D", ["x", "w0"], ["c0"], pads=[1, 1], channels_last=True, activation="relu")
    g.add_node("MaxPool", ["c0"], ["p0"], kernel=[2], strides=[2], channels_last=True)
    g.add_node("Conv1D", ["p0", "w1"], ["c1"], pads=[1, 1], channels_last=True)
    g.add_node("GlobalAvgPool", ["c1"], ["gap"], channels_last=True, keepdims=False)
    g.add_node("FullyConnected", ["gap", "fw"], ["y"])
    g.outputs = ["y"]
    infer_shapes(g)
    x = rng.normal(size=(1, 32, 1)).astype(np.float32)
    h = canonicalize(g, channels_last=True)
    assert not any(n.op == "Transpose" for n in h.nodes)
    np.testing.assert_allclose(run(h, {"x": x})["y"], run(g, {"x": x})["y"], rtol=1e-5, atol=1e-6)
