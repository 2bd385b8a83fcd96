"""The qtc IR's float op semantics in differentiable torch (for the QAT model).

One function per op, ``fn(node, xs, ctx) -> list[Tensor]``, matching the
float semantics in :mod:`qtc.ops` (attribute defaults included).  ``ctx``
carries the graph's static shapes, so ops with a static shape attribute
(Reshape) can follow a different batch size: the leading dim of a tensor
whose graph shape leads with the graph's batch is taken as the batch.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import UnsupportedOpError
from ..ir.graph import Node
from ..ops._util import pool_out_size
from ..ops.registry import get_op


class OpContext:
    """What an op may know beyond its inputs: the graph's static shapes and batch."""

    def __init__(self, in_shapes: list[tuple | None], out_shapes: list[tuple], batch: int):
        self.in_shapes = in_shapes
        self.out_shapes = out_shapes
        self.batch = batch


def _attr(node: Node, key: str):
    return get_op(node.op).attr(node, key)


def _act(y: torch.Tensor, activation) -> torch.Tensor:
    if activation in (None, "", "none"):
        return y
    if activation == "relu":
        return F.relu(y)
    if activation == "relu6":
        return torch.clamp(y, 0.0, 6.0)
    if activation == "relu_n1_to_1":
        return torch.clamp(y, -1.0, 1.0)
    raise ValueError(f"unknown fused activation {activation!r}")


def _to_cf(x: torch.Tensor, cl: bool) -> torch.Tensor:
    """Channels-last → channels-first (torch's layout) when ``cl``."""
    return x.movedim(-1, 1) if cl else x


def _from_cf(x: torch.Tensor, cl: bool) -> torch.Tensor:
    return x.movedim(1, -1) if cl else x


def _pad_spatial(x: torch.Tensor, pads: list[int], value: float = 0.0) -> torch.Tensor:
    """ONNX-ordered spatial pads [b0, b1, .., e0, e1, ..] on a channels-first tensor."""
    nsp = len(pads) // 2
    if not any(pads):
        return x
    tp: list[int] = []
    for i in reversed(range(nsp)):  # torch pads the last dim first
        tp += [pads[i], pads[i + nsp]]
    return F.pad(x, tp, value=value)


# ------------------------------------------------------------------ layers
def conv(node, xs, ctx):
    x, w, b = xs[0], xs[1], (xs[2] if len(xs) > 2 else None)
    nsp = w.dim() - 2
    strides = list(_attr(node, "strides") or [1] * nsp)
    dil = list(_attr(node, "dilations") or [1] * nsp)
    pads = [int(p) for p in (_attr(node, "pads") or [0] * (2 * nsp))]
    groups = int(_attr(node, "groups") or 1)
    cl = bool(_attr(node, "channels_last"))
    wt = w.movedim(-1, 1)  # [O, *k, I/g] → [O, I/g, *k]
    xc = _to_cf(x, cl)
    if pads[:nsp] == pads[nsp:]:
        pad_arg, xc = pads[:nsp], xc
    else:
        pad_arg, xc = [0] * nsp, _pad_spatial(xc, pads)
    fn = F.conv2d if nsp == 2 else F.conv1d
    y = fn(xc, wt, b, stride=strides, padding=pad_arg, dilation=dil, groups=groups)
    return [_from_cf(_act(y, _attr(node, "activation")), cl)]


def conv_transpose(node, xs, ctx):
    x, w, b = xs[0], xs[1], (xs[2] if len(xs) > 2 else None)
    strides = [int(s) for s in (_attr(node, "strides") or (1, 1))]
    pads = [int(p) for p in (_attr(node, "pads") or [0, 0, 0, 0])]
    dil = [int(d) for d in (_attr(node, "dilations") or (1, 1))]
    cl = bool(_attr(node, "channels_last"))
    xc = _to_cf(x, cl)
    full = F.conv_transpose2d(xc, w.permute(3, 0, 1, 2), None, stride=strides, dilation=dil)
    oh, ow = (ctx.out_shapes[0][1:3] if cl else ctx.out_shapes[0][2:4])
    grow_h = max(pads[0] + oh - full.shape[2], 0)
    grow_w = max(pads[1] + ow - full.shape[3], 0)
    if grow_h or grow_w:  # output_padding past the scattered area
        full = F.pad(full, [0, grow_w, 0, grow_h])
    y = full[:, :, pads[0]:pads[0] + oh, pads[1]:pads[1] + ow]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return [_from_cf(_act(y, _attr(node, "activation")), cl)]


def fully_connected(node, xs, ctx):
    b = xs[2] if len(xs) > 2 else None
    return [_act(F.linear(xs[0], xs[1], b), _attr(node, "activation"))]


def matmul(node, xs, ctx):
    a, b = xs
    if _attr(node, "transpose_a"):
        a = a.transpose(-1, -2)
    if _attr(node, "transpose_b"):
        b = b.transpose(-1, -2)
    return [torch.matmul(a, b)]


def layer_norm(node, xs, ctx):
    x = xs[0]
    axis = int(_attr(node, "axis")) % x.dim()
    shape = tuple(x.shape[axis:])
    gamma = xs[1].reshape(shape)
    beta = xs[2].reshape(shape) if len(xs) > 2 and xs[2] is not None else None
    return [F.layer_norm(x, shape, gamma, beta, float(_attr(node, "epsilon")))]


def batch_norm(node, xs, ctx):
    x = xs[0]
    cl = bool(_attr(node, "channels_last"))
    axis = x.dim() - 1 if cl or x.dim() <= 2 else 1
    shape = [1] * x.dim()
    shape[axis] = -1
    scale, bias, mean, var = (v.reshape(shape) for v in xs[1:5])
    return [(x - mean) / torch.sqrt(var + float(_attr(node, "epsilon"))) * scale + bias]


# -------------------------------------------------------------- elementwise
def _binary(fn: Callable):
    def run(node, xs, ctx):
        return [_act(fn(xs[0], xs[1]), _attr(node, "activation"))]
    return run


def _unary(fn: Callable):
    def run(node, xs, ctx):
        return [fn(node, xs[0])]
    return run


def _clip(node, x):
    lo, hi = _attr(node, "min"), _attr(node, "max")
    return torch.clamp(x, None if lo is None else float(lo), None if hi is None else float(hi))


def _gelu(node, x):
    approx = _attr(node, "approximate")
    return F.gelu(x, approximate="tanh" if approx == "tanh" else "none")


def _softmax(node, x):
    return torch.softmax(float(_attr(node, "beta")) * x, dim=int(_attr(node, "axis")))


# ------------------------------------------------------------------ pooling
def _pool_geometry(node, x: torch.Tensor):
    nsp = x.dim() - 2
    kernel = [int(k) for k in _attr(node, "kernel")]
    strides = [int(s) for s in (_attr(node, "strides") or kernel)]
    pads = [int(p) for p in (_attr(node, "pads") or [0] * (2 * nsp))]
    ceil = bool(_attr(node, "ceil_mode"))
    sp = list(x.shape[2:])
    out = [pool_out_size(sp[i], kernel[i], strides[i], pads[i], pads[i + nsp], ceil) for i in range(nsp)]
    ends = [max((out[i] - 1) * strides[i] + kernel[i] - sp[i] - pads[i], 0) for i in range(nsp)]
    return nsp, kernel, strides, pads, out, ends


def _crop(y: torch.Tensor, out: list[int]) -> torch.Tensor:
    return y[(slice(None), slice(None)) + tuple(slice(0, o) for o in out)]


def max_pool(node, xs, ctx):
    cl = bool(_attr(node, "channels_last"))
    x = _to_cf(xs[0], cl)
    nsp, kernel, strides, pads, out, ends = _pool_geometry(node, x)
    xp = _pad_spatial(x, pads[:nsp] + ends, -math.inf)
    y = (F.max_pool2d if nsp == 2 else F.max_pool1d)(xp, kernel, strides)
    return [_from_cf(_act(_crop(y, out), _attr(node, "activation")), cl)]


def avg_pool(node, xs, ctx):
    cl = bool(_attr(node, "channels_last"))
    x = _to_cf(xs[0], cl)
    nsp, kernel, strides, pads, out, ends = _pool_geometry(node, x)
    pool = F.avg_pool2d if nsp == 2 else F.avg_pool1d
    k = math.prod(kernel)
    total = _crop(pool(_pad_spatial(x, pads[:nsp] + ends, 0.0), kernel, strides), out) * k
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    if bool(_attr(node, "count_include_pad")):  # torch's divisor: the window clipped to the padded input
        ones = _pad_spatial(ones, pads, 1.0)
        ones = _pad_spatial(ones, [0] * nsp + [max(e - p, 0) for e, p in zip(ends, pads[nsp:])], 0.0)
    else:
        ones = _pad_spatial(ones, pads[:nsp] + ends, 0.0)
    count = _crop(pool(ones, kernel, strides), out) * k
    return [_from_cf(_act(total / count, _attr(node, "activation")), cl)]


def global_avg_pool(node, xs, ctx):
    x = xs[0]
    axes = list(range(1, x.dim() - 1)) if _attr(node, "channels_last") else list(range(2, x.dim()))
    return [x.mean(dim=axes, keepdim=bool(_attr(node, "keepdims")))]


def _reduce(kind: str):
    def run(node, xs, ctx):
        x = xs[0]
        axes = _attr(node, "axes")
        axes = list(range(x.dim())) if axes is None else sorted({int(a) % x.dim() for a in
                                                                  ([axes] if isinstance(axes, int) else axes)})
        keep = bool(_attr(node, "keepdims"))
        if kind == "mean":
            y = x.mean(dim=axes, keepdim=keep)
        elif kind == "sum":
            y = x.sum(dim=axes, keepdim=keep)
        else:
            y = torch.amax(x, dim=axes, keepdim=keep)
        return [y]
    return run


# -------------------------------------------------------------------- shape
def _batch_shape(x: torch.Tensor, target: tuple, ctx: OpContext) -> tuple:
    """The static target shape, with the batch swapped in when the batch differs from the graph's."""
    graph_in = ctx.in_shapes[0]
    if tuple(x.shape) == tuple(graph_in):
        return tuple(target)
    if graph_in and target and graph_in[0] == ctx.batch and target[0] == ctx.batch and x.shape[0] != ctx.batch:
        return (x.shape[0], *target[1:])
    raise UnsupportedOpError(
        f"cannot follow batch {x.shape[0]} through a reshape {tuple(graph_in)} -> {tuple(target)}",
        hint="import the model with the training batch size as its example input")


def reshape(node, xs, ctx):
    return [xs[0].reshape(_batch_shape(xs[0], ctx.out_shapes[0], ctx))]


def flatten(node, xs, ctx):
    x = xs[0]
    axis = int(_attr(node, "axis")) % (x.dim() + 1)
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


def squeeze(node, xs, ctx):
    x = xs[0]
    axes = _attr(node, "axes")
    if axes is None:
        axes = [i for i, d in enumerate(ctx.in_shapes[0]) if d == 1]
    axes = {int(a) % x.dim() for a in axes}
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in axes])]


def unsqueeze(node, xs, ctx):
    x = xs[0]
    axes = _attr(node, "axes")
    rank = x.dim() + len(axes)
    shape = list(x.shape)
    for a in sorted(int(a) % rank for a in axes):
        shape.insert(a, 1)
    return [x.reshape(shape)]


def transpose(node, xs, ctx):
    x = xs[0]
    perm = _attr(node, "perm")
    perm = list(range(x.dim()))[::-1] if perm is None else [int(p) % x.dim() for p in perm]
    return [x.permute(perm)]


def concat(node, xs, ctx):
    return [torch.cat(xs, dim=int(_attr(node, "axis")))]


def split(node, xs, ctx):
    x = xs[0]
    axis = int(_attr(node, "axis")) % x.dim()
    sizes = _attr(node, "sizes")
    if sizes is None:
        sizes = [x.shape[axis] // len(node.outputs)] * len(node.outputs)
    return list(torch.split(x, [int(s) for s in sizes], dim=axis))


def slice_(node, xs, ctx):
    x = xs[0]
    starts = [int(v) for v in _attr(node, "starts")]
    ends = [int(v) for v in _attr(node, "ends")]
    axes = _attr(node, "axes")
    axes = list(range(len(starts))) if axes is None else [int(a) % x.dim() for a in axes]
    steps = [int(v) for v in (_attr(node, "steps") or [1] * len(starts))]
    for a, b, e, s in zip(axes, starts, ends, steps):
        dim = x.shape[a]
        b = b + dim if b < 0 else b
        e = e + dim if e < 0 else e
        if s > 0:
            b, e = min(max(b, 0), dim), min(max(e, 0), dim)
        else:
            b, e = min(max(b, 0), dim - 1), min(max(e, -1), dim - 1)
        idx = torch.arange(b, e, s)
        x = torch.index_select(x, a, idx)
    return [x]


def pad(node, xs, ctx):
    x = xs[0]
    rank = x.dim()
    pads = [int(p) for p in _attr(node, "pads")]
    mode = _attr(node, "mode")
    grow: list[int] = []
    for i in reversed(range(rank)):
        grow += [max(pads[i], 0), max(pads[i + rank], 0)]
    if mode == "constant":
        y = F.pad(x, grow, value=float(_attr(node, "value")))
    else:
        tmode = {"reflect": "reflect", "edge": "replicate"}[mode]
        lead = 0
        while lead < rank and pads[lead] <= 0 and pads[lead + rank] <= 0:
            lead += 1
        y = F.pad(x, grow[:2 * (rank - lead)], mode=tmode)
    crop = tuple(slice(max(-pads[i], 0), y.shape[i] - max(-pads[i + rank], 0)) for i in range(rank))
    return [y[crop]]


OPS: dict[str, Callable] = {
    "Conv1D": conv, "Conv2D": conv, "ConvTranspose2D": conv_transpose, "FullyConnected": fully_connected,
    "MatMul": matmul, "LayerNorm": layer_norm, "BatchNorm": batch_norm,
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul),
    "Div": lambda node, xs, ctx: [xs[0] / xs[1]],
    "Relu": _unary(lambda n, x: F.relu(x)), "Relu6": _unary(lambda n, x: torch.clamp(x, 0.0, 6.0)),
    "Clip": _unary(_clip), "LeakyRelu": _unary(lambda n, x: F.leaky_relu(x, float(_attr(n, "alpha")))),
    "HardSwish": _unary(lambda n, x: x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0),
    "HardSigmoid": _unary(lambda n, x: torch.clamp(float(_attr(n, "alpha")) * x + float(_attr(n, "beta")), 0.0, 1.0)),
    "Sigmoid": _unary(lambda n, x: torch.sigmoid(x)), "Tanh": _unary(lambda n, x: torch.tanh(x)),
    "Gelu": _unary(_gelu), "Silu": _unary(lambda n, x: F.silu(x)), "Softmax": _unary(_softmax),
    "MaxPool": max_pool, "AvgPool": avg_pool, "GlobalAvgPool": global_avg_pool,
    "Mean": _reduce("mean"), "ReduceSum": _reduce("sum"), "ReduceMax": _reduce("max"),
    "Reshape": reshape, "Flatten": flatten, "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Transpose": transpose,
    "Concat": concat, "Split": split, "Slice": slice_, "Pad": pad,
}


def torch_op(node: Node) -> Callable:
    fn = OPS.get(node.op)
    if fn is None:
        raise UnsupportedOpError(f"op {node.op} has no differentiable torch version for QAT",
                                 where=f"node {node.name}",
                                 hint=f"QAT supports {', '.join(sorted(OPS))}; keep this layer out of the "
                                      "QAT model or quantize it with PTQ")
    return fn
