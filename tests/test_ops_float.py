"""Float semantics of every catalogue op against torch.nn.functional (1e-5 relative)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from qtc.interp import run  # noqa: E402
from qtc.ir.graph import Graph  # noqa: E402
from qtc.ir.validate import infer_shapes, validate  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def run_op(op: str, inputs: list, consts: list | None = None, n_out: int = 1, **attrs):
    """Run one ``op`` node: ``inputs`` are graph inputs, ``consts`` constant inputs after them."""
    g = Graph(name=op)
    names = []
    for i, x in enumerate(inputs):
        g.add_tensor(f"x{i}", x.shape, "float32")
        g.inputs.append(f"x{i}")
        names.append(f"x{i}")
    for i, c in enumerate(consts or []):
        names.append("" if c is None else g.add_const(f"c{i}", np.asarray(c, dtype=np.float32)).name)
    outs = [f"y{i}" for i in range(n_out)]
    g.add_node(op, names, outs, **attrs)
    g.outputs = outs
    infer_shapes(g)
    validate(g)
    res = run(g, {f"x{i}": x for i, x in enumerate(inputs)})
    ys = [res[o] for o in outs]
    for o, y in zip(outs, ys):
        assert y.shape == g.tensors[o].shape
    return ys if n_out > 1 else ys[0]


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def close(y, ref):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def rand(rng, *shape, scale=2.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def nhwc(x):
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def nchw(x):
    return np.moveaxis(x, -1, 1)


# ----------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("op,fn", [("Add", torch.add), ("Sub", torch.sub), ("Mul", torch.mul), ("Div", torch.div)])
def test_binary_broadcast(rng, op, fn):
    a, b = rand(rng, 2, 3, 4, 5), rand(rng, 3, 1, 5)
    if op == "Div":
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
    close(run_op(op, [a, b]), fn(t(a), t(b)))


@pytest.mark.parametrize("act,ref", [("relu", F.relu), ("relu6", F.relu6), ("relu_n1_to_1", lambda v: v.clamp(-1, 1))])
def test_binary_fused_activation(rng, act, ref):
    a, b = rand(rng, 2, 8, scale=4), rand(rng, 2, 8, scale=4)
    close(run_op("Add", [a, b], activation=act), ref(t(a) + t(b)))


# ----------------------------------------------------------------------------- activations
UNARY = [
    ("Relu", {}, F.relu),
    ("Relu6", {}, F.relu6),
    ("Clip", {"min": -0.5, "max": 1.5}, lambda v: v.clamp(-0.5, 1.5)),
    ("Clip", {"max": 1.0}, lambda v: v.clamp(max=1.0)),
    ("LeakyRelu", {"alpha": 0.2}, lambda v: F.leaky_relu(v, 0.2)),
    ("LeakyRelu", {}, F.leaky_relu),
    ("HardSwish", {}, F.hardswish),
    ("HardSigmoid", {}, F.hardsigmoid),
    ("Sigmoid", {}, torch.sigmoid),
    ("Tanh", {}, torch.tanh),
    ("Gelu", {}, F.gelu),
    ("Gelu", {"approximate": "tanh"}, lambda v: F.gelu(v, approximate="tanh")),
    ("Silu", {}, F.silu),
    ("Softmax", {}, lambda v: F.softmax(v, dim=-1)),
    ("Softmax", {"axis": 1}, lambda v: F.softmax(v, dim=1)),
    ("Softmax", {"axis": 1, "beta": 0.5}, lambda v: F.softmax(0.5 * v, dim=1)),
]


@pytest.mark.parametrize("op,attrs,ref", UNARY, ids=[f"{u[0]}-{i}" for i, u in enumerate(UNARY)])
def test_unary(rng, op, attrs, ref):
    x = rand(rng, 2, 5, 3, 7, scale=3)
    close(run_op(op, [x], **attrs), ref(t(x)))


# ----------------------------------------------------------------------------- shape ops
def test_concat_split(rng):
    a, b = rand(rng, 2, 3, 4), rand(rng, 2, 5, 4)
    close(run_op("Concat", [a, b], axis=1), torch.cat([t(a), t(b)], dim=1))
    close(run_op("Concat", [a, b], axis=-2), torch.cat([t(a), t(b)], dim=-2))
    parts = run_op("Split", [b], n_out=3, axis=1, sizes=[1, 3, 1])
    for p, r in zip(parts, torch.split(t(b), [1, 3, 1], dim=1)):
        close(p, r)


def test_slice(rng):
    x = rand(rng, 4, 6, 5)
    close(run_op("Slice", [x], starts=[1, -4], ends=[4, 100], axes=[1, 2], steps=[2, 1]), t(x)[:, 1:4:2, -4:])
    close(run_op("Slice", [x], starts=[-1], ends=[-100], axes=[0], steps=[-1]), t(x).flip(0))
    close(run_op("Slice", [x], starts=[5], ends=[0], axes=[1], steps=[-2]), t(x.copy()[:, 5:0:-2]))


@pytest.mark.parametrize("op,attrs,ref", [
    ("Reshape", {"shape": [2, -1, 5]}, lambda v: v.reshape(2, -1, 5)),
    ("Flatten", {}, lambda v: v.flatten(1)),
    ("Flatten", {"axis": 2}, lambda v: v.reshape(2 * 3, -1)),
    ("Squeeze", {"axes": [2]}, lambda v: v.squeeze(2)),
    ("Squeeze", {}, lambda v: v.squeeze()),
    ("Unsqueeze", {"axes": [0, -1]}, lambda v: v.unsqueeze(0).unsqueeze(-1)),
    ("Transpose", {"perm": [0, 3, 1, 2]}, lambda v: v.permute(0, 3, 1, 2)),
    ("Transpose", {}, lambda v: v.permute(3, 2, 1, 0)),
])
def test_copy_ops(rng, op, attrs, ref):
    x = rand(rng, 2, 3, 1, 5)
    close(run_op(op, [x], **attrs), ref(t(x)))


@pytest.mark.parametrize("mode,value", [("constant", 0.0), ("constant", 1.5), ("reflect", 0.0), ("edge", 0.0)])
def test_pad(rng, mode, value):
    x = rand(rng, 1, 2, 5, 6)
    torch_mode = {"edge": "replicate"}.get(mode, mode)
    ref = F.pad(t(x), (2, 1, 1, 3), mode=torch_mode, **({"value": value} if mode == "constant" else {}))
    close(run_op("Pad", [x], pads=[0, 0, 1, 2, 0, 0, 3, 1], value=value, mode=mode), ref)


def test_pad_negative_crops(rng):
    x = rand(rng, 1, 2, 5, 6)
    close(run_op("Pad", [x], pads=[0, 0, -1, 2, 0, 0, 0, -2]), F.pad(t(x), (2, -2, -1, 0)))


# ----------------------------------------------------------------------------- pooling
POOLS = [
    dict(kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel=[3, 2], strides=[2, 1], pads=[1, 0, 1, 0], ceil_mode=True),
    dict(kernel=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=True),
]


@pytest.mark.parametrize("p", POOLS)
@pytest.mark.parametrize("cl", [False, True])
def test_maxpool(rng, p, cl):
    x = rand(rng, 2, 3, 9, 8)
    ref = F.max_pool2d(t(x), p["kernel"], p["strides"], p["pads"][:2], ceil_mode=p.get("ceil_mode", False))
    y = run_op("MaxPool", [nhwc(x) if cl else x], channels_last=cl, **p)
    close(nchw(y) if cl else y, ref)


@pytest.mark.parametrize("p", POOLS)
@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("cl", [False, True])
def test_avgpool(rng, p, include_pad, cl):
    x = rand(rng, 2, 3, 9, 8)
    ref = F.avg_pool2d(t(x), p["kernel"], p["strides"], p["pads"][:2], ceil_mode=p.get("ceil_mode", False),
                       count_include_pad=include_pad)
    y = run_op("AvgPool", [nhwc(x) if cl else x], channels_last=cl, count_include_pad=include_pad, **p)
    close(nchw(y) if cl else y, ref)


def test_pool_1d(rng):
    x = rand(rng, 2, 3, 11)
    close(run_op("MaxPool", [x], kernel=[3], strides=[2], pads=[1, 1]), F.max_pool1d(t(x), 3, 2, 1))
    close(run_op("AvgPool", [x], kernel=[3], strides=[2], pads=[1, 1]),
          F.avg_pool1d(t(x), 3, 2, 1, count_include_pad=False))


@pytest.mark.parametrize("cl", [False, True])
def test_global_avg_pool(rng, cl):
    x = rand(rng, 2, 4, 5, 6)
    y = run_op("GlobalAvgPool", [nhwc(x) if cl else x], channels_last=cl)
    close(nchw(y) if cl else y, F.adaptive_avg_pool2d(t(x), 1))
    close(run_op("GlobalAvgPool", [x], keepdims=False), t(x).mean(dim=(2, 3)))


# ----------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("op,ref", [("Mean", torch.mean), ("ReduceSum", torch.sum),
                                    ("ReduceMax", lambda v, dim, keepdim: torch.amax(v, dim=dim, keepdim=keepdim))])
@pytest.mark.parametrize("axes,keep", [([1, 2], True), ([-1], False), (None, False)])
def test_reduce(rng, op, ref, axes, keep):
    x = rand(rng, 2, 3, 4, 5)
    dims = tuple(range(x.ndim)) if axes is None else tuple(axes)
    close(run_op(op, [x], axes=axes, keepdims=keep), ref(t(x), dim=dims, keepdim=keep))


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("cl", [False, True])
def test_batchnorm(rng, cl):
    x = rand(rng, 2, 4, 5, 6)
    scale, bias, mean = rand(rng, 4), rand(rng, 4), rand(rng, 4)
    var = np.abs(rand(rng, 4)) + 0.1
    ref = F.batch_norm(t(x), t(mean), t(var), t(scale), t(bias), training=False, eps=1e-3)
    y = run_op("BatchNorm", [nhwc(x) if cl else x], [scale, bias, mean, var], epsilon=1e-3, channels_last=cl)
    close(nchw(y) if cl else y, ref)


def test_layernorm(rng):
    x = rand(rng, 2, 3, 4, 8)
    g, b = rand(rng, 4, 8), rand(rng, 4, 8)
    close(run_op("LayerNorm", [x], [g, b], axis=-2), F.layer_norm(t(x), (4, 8), t(g), t(b)))
    close(run_op("LayerNorm", [x], [g[0], None], epsilon=1e-3), F.layer_norm(t(x), (8,), t(g[0]), None, eps=1e-3))


# ----------------------------------------------------------------------------- resize
RESIZES = [
    (dict(mode="nearest", scales=[2, 2], coordinate_transformation_mode="asymmetric"),
     dict(scale_factor=2, mode="nearest")),
    (dict(mode="nearest", size=[7, 5], coordinate_transformation_mode="asymmetric"),
     dict(size=(7, 5), mode="nearest")),
    (dict(mode="nearest", size=[7, 13], coordinate_transformation_mode="tf_half_pixel_for_nn"),
     dict(size=(7, 13), mode="nearest-exact")),
    (dict(mode="bilinear", scales=[2, 2], coordinate_transformation_mode="half_pixel"),
     dict(scale_factor=2, mode="bilinear", align_corners=False)),
    (dict(mode="bilinear", size=[7, 13], coordinate_transformation_mode="align_corners"),
     dict(size=(7, 13), mode="bilinear", align_corners=True)),
    (dict(mode="bilinear", size=[3, 4], coordinate_transformation_mode="half_pixel"),
     dict(size=(3, 4), mode="bilinear", align_corners=False)),
]


@pytest.mark.parametrize("attrs,torch_kw", RESIZES)
@pytest.mark.parametrize("cl", [False, True])
def test_resize(rng, attrs, torch_kw, cl):
    x = rand(rng, 2, 3, 5, 6)
    y = run_op("Resize", [nhwc(x) if cl else x], channels_last=cl, **attrs)
    close(nchw(y) if cl else y, F.interpolate(t(x), **torch_kw))


# ----------------------------------------------------------------------------- matmul / deconv
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul(rng, ta, tb):
    a, b = rand(rng, 2, 1, 4, 6), rand(rng, 3, 6, 5)
    a_in = np.swapaxes(a, -1, -2).copy() if ta else a
    b_in = np.swapaxes(b, -1, -2).copy() if tb else b
    close(run_op("MatMul", [a_in, b_in], transpose_a=ta, transpose_b=tb), torch.matmul(t(a), t(b)))
    close(run_op("MatMul", [a[0, 0], b[0, :, 0].copy()]), torch.matmul(t(a[0, 0]), t(b[0, :, 0].copy())))


@pytest.mark.parametrize("stride,pad,out_pad,dil", [(1, 0, 0, 1), (2, 1, 1, 1), (2, 0, 0, 2), (3, 2, 2, 1)])
@pytest.mark.parametrize("cl", [False, True])
def test_conv_transpose(rng, stride, pad, out_pad, dil, cl):
    x = rand(rng, 2, 3, 5, 4)
    wt = rand(rng, 3, 6, 3, 2)  # torch layout [I, O, KH, KW]
    b = rand(rng, 6)
    ref = F.conv_transpose2d(t(x), t(wt), t(b), stride=stride, padding=pad, output_padding=out_pad, dilation=dil)
    w_ir = np.ascontiguousarray(wt.transpose(1, 2, 3, 0))  # [O, KH, KW, I]
    y = run_op("ConvTranspose2D", [nhwc(x) if cl else x], [w_ir, b], strides=[stride] * 2, pads=[pad] * 4,
               output_padding=[out_pad] * 2, dilations=[dil] * 2, channels_last=cl)
    close(nchw(y) if cl else y, ref)
