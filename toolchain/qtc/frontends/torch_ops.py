"""Lowering of ATen ops (after torch.export) to qtc IR ops (see docs/ir.md).

A handler gets the lowering context ``cx``, the fx node, and its arguments
with fx nodes already replaced by values: :class:`~.torch.T` for run-time
tensors, ``torch.Tensor`` for constants (weights), plain Python for the rest.
It returns the node's value (a ``T``, or a tuple for multi-output ops).
Static sizes come from the exporter's shape metadata (``n.meta['val']``).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedOpError
from .torch import T



def _a(args, kwargs, i: int, name: str, default=None):
    if i < len(args):
        return args[i]
    return kwargs.get(name, default)


def _meta_shape(n, idx: int | None = None) -> list[int]:
    v = n.meta["val"]
    if idx is not None:
        v = v[idx]
    return [int(d) for d in v.shape]


def _unsupported(cx, n, what: str, hint: str):
    raise UnsupportedOpError(what, where=cx.node_where(n), hint=hint)


def _ints(v, k: int) -> list[int]:
    if isinstance(v, (list, tuple)):
        v = list(v)
        return [int(x) for x in (v * k if len(v) == 1 else v)]
    return [int(v)] * k


def _axis(d: int, rank: int) -> int:
    return int(d) % rank if rank else 0


# ------------------------------------------------------------ convolutions
def _conv(cx, n, x, w, b, stride, padding, dilation, groups):
    wv = cx.np(w)
    if wv is None:
        _unsupported(cx, n, "convolution with a computed (non-constant) weight is not supported",
                     "use nn.Conv layers with fixed weights")
    nsp = wv.ndim - 2
    if nsp not in (1, 2):
        _unsupported(cx, n, f"{nsp}-D convolution is not supported", "use Conv1d or Conv2d")
    stride, dilation = _ints(stride, nsp), _ints(dilation, nsp)
    if isinstance(padding, str):
        if padding == "valid":
            pads = [0] * (2 * nsp)
        else:  # "same" (stride 1): torch puts the extra pad at the end
            total = [d * (k - 1) for d, k in zip(dilation, wv.shape[2:])]
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        p = _ints(padding, nsp)
        pads = p + p
    w_ir = np.ascontiguousarray(np.transpose(wv, (0, 2, 3, 1) if nsp == 2 else (0, 2, 1)).astype(np.float32))
    ins = [cx.t(x), cx.b.const(cx.name_of(w, f"{n.name}_weight"), w_ir)]
    if b is not None:
        ins.append(cx.b.const(cx.name_of(b, f"{n.name}_bias"), cx.np(b).astype(np.float32)))
    return cx.emit("Conv2D" if nsp == 2 else "Conv1D", ins, n, strides=stride, dilations=dilation, pads=pads,
                   groups=int(groups), channels_last=False)


def conv(cx, n, args, kw):
    x, w = args[0], args[1]
    return _conv(cx, n, x, w, _a(args, kw, 2, "bias"), _a(args, kw, 3, "stride", 1), _a(args, kw, 4, "padding", 0),
                 _a(args, kw, 5, "dilation", 1), _a(args, kw, 6, "groups", 1))


def convolution(cx, n, args, kw):
    x, w, b, stride, padding, dilation, transposed, out_pad, groups = args[:9]
    if transposed:
        return _conv_t(cx, n, x, w, b, stride, padding, out_pad, groups, dilation)
    return _conv(cx, n, x, w, b, stride, padding, dilation, groups)


def conv_transpose(cx, n, args, kw):
    x, w = args[0], args[1]
    return _conv_t(cx, n, x, w, _a(args, kw, 2, "bias"), _a(args, kw, 3, "stride", 1), _a(args, kw, 4, "padding", 0),
                   _a(args, kw, 5, "output_padding", 0), _a(args, kw, 6, "groups", 1), _a(args, kw, 7, "dilation", 1))


def _conv_t(cx, n, x, w, b, stride, padding, out_pad, groups, dilation):
    wv = cx.np(w)
    if wv is None or wv.ndim != 4 or int(groups) != 1:
        _unsupported(cx, n, "only 2-D, groups=1 transposed convolution with a fixed weight is supported",
                     "use ConvTranspose2d(groups=1)")
    p = _ints(padding, 2)
    w_ir = np.ascontiguousarray(np.transpose(wv, (1, 2, 3, 0)).astype(np.float32))  # [I,O,kh,kw] → [O,kh,kw,I]
    ins = [cx.t(x), cx.b.const(cx.name_of(w, f"{n.name}_weight"), w_ir)]
    if b is not None:
        ins.append(cx.b.const(cx.name_of(b, f"{n.name}_bias"), cx.np(b).astype(np.float32)))
    return cx.emit("ConvTranspose2D", ins, n, strides=_ints(stride, 2), pads=p + p, output_padding=_ints(out_pad, 2),
                   dilations=_ints(dilation, 2), channels_last=False)


# ------------------------------------------------------------- dense
def _fc(cx, n, x, w_oi: np.ndarray, bias: np.ndarray | None, wname: str = "", bname: str = ""):
    ins = [cx.t(x), cx.b.const(wname or f"{n.name}_weight", np.ascontiguousarray(w_oi.astype(np.float32)))]
    if bias is not None:
        ins.append(cx.b.const(bname or f"{n.name}_bias", np.ascontiguousarray(bias.astype(np.float32))))
    return cx.emit("FullyConnected", ins, n)


def linear(cx, n, args, kw):
    x, w, b = args[0], args[1], _a(args, kw, 2, "bias")
    wv = cx.np(w)
    if wv is not None and (b is None or cx.np(b) is not None):
        return _fc(cx, n, x, wv, None if b is None else cx.np(b), cx.name_of(w, ""), cx.name_of(b, ""))
    y = cx.emit("MatMul", [cx.t(x), cx.t(w)], n, final=b is None, transpose_b=True)
    return y if b is None else cx.emit("Add", [y.name, cx.t(b, like=y.name)], n, suffix="_bias")


def addmm(cx, n, args, kw):
    bias, a, m = args[0], args[1], args[2]
    beta, alpha = float(kw.get("beta", 1)), float(kw.get("alpha", 1))
    mv, bv = cx.np(m), cx.np(bias)
    if mv is not None and bv is not None and bv.size in (1, mv.shape[1]):
        b = np.broadcast_to(bv.reshape(-1) * beta, (mv.shape[1],)).astype(np.float32)
        return _fc(cx, n, a, mv.T * alpha, b)
    y = matmul(cx, n, [a, m], {}, final=False)
    if alpha != 1:
        y = cx.emit("Mul", [y.name, cx.t(alpha, like=y.name)], n, final=False, suffix="_alpha")
    bb = cx.t(bias, like=y.name) if beta == 1 else cx.emit("Mul", [cx.t(bias, like=y.name), cx.t(beta, like=y.name)],
                                                         n, final=False, suffix="_beta").name
    return cx.emit("Add", [y.name, bb], n, suffix="_bias")


def matmul(cx, n, args, kw, final: bool = True):
    a, b = args[0], args[1]
    bv = cx.np(b)
    if bv is not None and bv.ndim == 2:
        w = cx.b.const(cx.name_of(b, f"{n.name}_weight") + "_T", np.ascontiguousarray(bv.T.astype(np.float32)))
        return cx.emit("FullyConnected", [cx.t(a), w], n, final=final)
    return cx.emit("MatMul", [cx.t(a), cx.t(b)], n, final=final)


def sdpa(cx, n, args, kw):
    """scaled_dot_product_attention = softmax(q·kᵀ·scale + mask)·v, decomposed."""
    q, k, v = args[0], args[1], args[2]
    mask = _a(args, kw, 3, "attn_mask")
    causal = bool(_a(args, kw, 5, "is_causal", False))
    scale = _a(args, kw, 6, "scale")
    if kw.get("enable_gqa"):
        _unsupported(cx, n, "grouped-query attention is not supported", "repeat k/v heads explicitly")
    qs, ks = cx.shape(q), cx.shape(k)
    scale = 1.0 / math.sqrt(qs[-1]) if scale is None else float(scale)
    s = cx.emit("MatMul", [cx.t(q), cx.t(k)], n, final=False, suffix="_scores", transpose_b=True)
    s = cx.emit("Mul", [s.name, cx.t(scale, like=s.name)], n, final=False, suffix="_scale")
    add = np.zeros((qs[-2], ks[-2]), np.float32)
    if causal:
        add = np.where(np.tril(np.ones((qs[-2], ks[-2]), bool)), 0.0, -np.inf).astype(np.float32)
    if mask is not None:
        mv = cx.np(mask)
        if mv is None:
            _unsupported(cx, n, "attention with a computed mask is not supported", "use a constant mask or none")
        add = add + (np.where(mv, 0.0, -np.inf) if mv.dtype == bool else mv).astype(np.float32)
    if causal or mask is not None:
        s = cx.emit("Add", [s.name, cx.b.const(f"{n.name}_mask", add)], n, final=False, suffix="_mask")
    p = cx.emit("Softmax", [s.name], n, final=False, suffix="_softmax", axis=-1)
    return cx.emit("MatMul", [p.name, cx.t(v)], n)


# --------------------------------------------------------- elementwise
def _binary(op):
    def h(cx, n, args, kw):
        a, b = args[0], args[1]
        alpha = kw.get("alpha", args[2] if len(args) > 2 else 1)
        if isinstance(a, T):
            like = a.name
        else:
            like = b.name if isinstance(b, T) else None
        if op in ("Add", "Sub") and alpha != 1:
            b = _scaled(cx, n, b, alpha, like)
        if op == "Div" and kw.get("rounding_mode") is not None:
            _unsupported(cx, n, f"division with rounding_mode={kw['rounding_mode']!r} is not supported",
                         "use true division")
        return cx.emit(op, [cx.t(a, like=like), cx.t(b, like=like)], n)
    return h


def _scaled(cx, n, v, alpha, like):
    if not isinstance(v, T):
        return cx.np(v) * alpha
    return cx.emit("Mul", [v.name, cx.t(alpha, like=v.name)], n, final=False, suffix="_alpha")


def rsub(cx, n, args, kw):
    a, b = args[0], args[1]
    alpha = kw.get("alpha", args[2] if len(args) > 2 else 1)
    like = a.name if isinstance(a, T) else None
    a2 = _scaled(cx, n, a, alpha, like) if alpha != 1 else a
    return cx.emit("Sub", [cx.t(b, like=like), cx.t(a2, like=like)], n)


def neg(cx, n, args, kw):
    return cx.emit("Mul", [cx.t(args[0]), cx.t(-1.0, like=cx.t(args[0]))], n)


def _unary(op, **fixed):
    def h(cx, n, args, kw):
        return cx.emit(op, [cx.t(args[0])], n, **fixed)
    return h


def _clip(cx, n, x, lo, hi):
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    if lo == 0.0 and hi is None:
        return cx.emit("Relu", [cx.t(x)], n)
    if lo == 0.0 and hi == 6.0:
        return cx.emit("Relu6", [cx.t(x)], n)
    if lo is None and hi is None:
        return x
    return cx.emit("Clip", [cx.t(x)], n, min=lo, max=hi)


def hardtanh(cx, n, args, kw):
    return _clip(cx, n, args[0], _a(args, kw, 1, "min_val", -1.0), _a(args, kw, 2, "max_val", 1.0))


def clamp(cx, n, args, kw):
    lo, hi = _a(args, kw, 1, "min"), _a(args, kw, 2, "max")
    lo = None if lo is None else float(np.asarray(cx.np(lo)).reshape(-1)[0])
    hi = None if hi is None else float(np.asarray(cx.np(hi)).reshape(-1)[0])
    return _clip(cx, n, args[0], lo, hi)


def leaky_relu(cx, n, args, kw):
    return cx.emit("LeakyRelu", [cx.t(args[0])], n, alpha=float(_a(args, kw, 1, "negative_slope", 0.01)))


def gelu(cx, n, args, kw):
    return cx.emit("Gelu", [cx.t(args[0])], n, approximate=str(kw.get("approximate", "none")))


def softmax(cx, n, args, kw):
    x = args[0]
    return cx.emit("Softmax", [cx.t(x)], n, axis=_axis(args[1], cx.rank(x)))


def layer_norm(cx, n, args, kw):
    x, shape = args[0], list(args[1])
    w, b = _a(args, kw, 2, "weight"), _a(args, kw, 3, "bias")
    eps = float(_a(args, kw, 4, "eps", 1e-5))
    gamma = cx.t(w) if w is not None else cx.b.const(f"{n.name}_gamma", np.ones(shape, np.float32))
    ins = [cx.t(x), gamma] + ([cx.t(b)] if b is not None else [])
    y = cx.emit("LayerNorm", ins, n, axis=-len(shape), epsilon=eps)
    return (y, None, None) if "native" in str(n.target) else y


def _bn(cx, n, x, w, b, mean, var, eps):
    c = cx.np(mean).shape[0]
    params = [np.ones(c, np.float32) if w is None else cx.np(w), np.zeros(c, np.float32) if b is None else cx.np(b),
              cx.np(mean), cx.np(var)]
    if any(p is None for p in params):
        _unsupported(cx, n, "batch norm with computed statistics is not supported", "export in eval mode")
    ins = [cx.t(x)] + [cx.b.const(f"{n.name}_{k}", p.astype(np.float32))
                       for k, p in zip(("scale", "bias", "mean", "var"), params)]
    return cx.emit("BatchNorm", ins, n, epsilon=float(eps), channels_last=False)


def batch_norm(cx, n, args, kw):
    x, w, b, mean, var, training, _mom, eps = args[:8]
    if training or mean is None:
        _unsupported(cx, n, "batch norm in training mode is not supported", "call model.eval() before export")
    return _bn(cx, n, x, w, b, mean, var, eps)


def bn_no_training(cx, n, args, kw):
    x, w, b, mean, var, _mom, eps = args[:7]
    return (_bn(cx, n, x, w, b, mean, var, eps), None, None)


# ------------------------------------------------------------- shapes
def cat(cx, n, args, kw):
    xs = [v for v in args[0] if not (cx.np(v) is not None and cx.np(v).size == 0)]
    dim = _a(args, kw, 1, "dim", 0)
    ref = next(v for v in xs if isinstance(v, T))
    if len(xs) == 1:
        return ref
    return cx.emit("Concat", [cx.t(v, like=ref.name) for v in xs], n, axis=_axis(dim, cx.rank(ref)))


def _split_sizes(cx, n, x, sizes, dim):
    r = cx.rank(x)
    outs = cx.b.node("Split", [cx.t(x)], n.name, n_out=len(sizes), src=cx.node_where(n),
                     axis=_axis(dim, r), sizes=[int(s) for s in sizes])
    return tuple(T(o) for o in outs)


def split(cx, n, args, kw):
    x, size = args[0], _a(args, kw, 1, "split_size", None)
    dim = _a(args, kw, 2, "dim", 0)
    if isinstance(size, (list, tuple)):
        return _split_sizes(cx, n, x, size, dim)
    sizes = [s[_axis(dim, cx.rank(x))] for s in (list(v.shape) for v in n.meta["val"])]
    return _split_sizes(cx, n, x, sizes, dim)


def split_with_sizes(cx, n, args, kw):
    return _split_sizes(cx, n, args[0], args[1], _a(args, kw, 2, "dim", 0))


def chunk(cx, n, args, kw):
    x, dim = args[0], _a(args, kw, 2, "dim", 0)
    sizes = [s[_axis(dim, cx.rank(x))] for s in (list(v.shape) for v in n.meta["val"])]
    return _split_sizes(cx, n, x, sizes, dim)


def unbind(cx, n, args, kw):
    x, dim = args[0], _axis(_a(args, kw, 1, "dim", 0), cx.rank(args[0]))
    parts = _split_sizes(cx, n, x, [1] * cx.shape(x)[dim], dim)
    return tuple(cx.emit("Squeeze", [p.name], n, final=False, suffix=f"_sq{i}", axes=[dim])
                 for i, p in enumerate(parts))


def _slice(cx, n, x, dim, start, end, step, final=True, suffix=""):
    shape = cx.shape(x)
    d = _axis(dim, len(shape))
    s, e, st = slice(start, end, step).indices(shape[d])
    return cx.emit("Slice", [cx.t(x)], n, final=final, suffix=suffix, starts=[s], ends=[e], axes=[d], steps=[st])


def slice_(cx, n, args, kw):
    x = args[0]
    dim, start, end, step = (_a(args, kw, 1, "dim", 0), _a(args, kw, 2, "start"), _a(args, kw, 3, "end"),
                             _a(args, kw, 4, "step", 1))
    if start in (None, 0) and (end is None or end >= cx.shape(x)[_axis(dim, cx.rank(x))]) and step == 1:
        return x
    return _slice(cx, n, x, dim, start, end, step)


def narrow(cx, n, args, kw):
    x, dim, start, length = args[:4]
    return _slice(cx, n, x, dim, int(start), int(start) + int(length), 1)


def select(cx, n, args, kw):
    x, dim, idx = args[0], args[1], int(args[2])
    d = _axis(dim, cx.rank(x))
    idx = idx % cx.shape(x)[d]
    y = _slice(cx, n, x, d, idx, idx + 1, 1, final=False, suffix="_take")
    return cx.emit("Squeeze", [y.name], n, axes=[d])


def reshape(cx, n, args, kw):
    x = args[0]
    shape = _meta_shape(n)
    if list(cx.shape(x)) == shape:
        return x
    return cx.emit("Reshape", [cx.t(x)], n, shape=shape)


def flatten(cx, n, args, kw):
    x = args[0]
    r = cx.rank(x)
    start, end = _axis(_a(args, kw, 1, "start_dim", 0), r), _axis(_a(args, kw, 2, "end_dim", -1), r)
    if start == 1 and end == r - 1:
        return cx.emit("Flatten", [cx.t(x)], n, axis=1)
    return reshape(cx, n, args, kw)


def squeeze(cx, n, args, kw):
    x = args[0]
    shape = cx.shape(x)
    dims = _a(args, kw, 1, "dim")
    if dims is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    else:
        axes = [_axis(d, len(shape)) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        axes = [a for a in axes if shape[a] == 1]
    if not axes:
        return x
    return cx.emit("Squeeze", [cx.t(x)], n, axes=sorted(axes))


def unsqueeze(cx, n, args, kw):
    x = args[0]
    return cx.emit("Unsqueeze", [cx.t(x)], n, axes=[_axis(args[1], cx.rank(x) + 1)])


def permute(cx, n, args, kw):
    x = args[0]
    r = cx.rank(x)
    perm = [_axis(p, r) for p in args[1]]
    if perm == list(range(r)):
        return x
    return cx.emit("Transpose", [cx.t(x)], n, perm=perm)


def transpose(cx, n, args, kw):
    x = args[0]
    r = cx.rank(x)
    a, b = _axis(args[1], r), _axis(args[2], r)
    perm = list(range(r))
    perm[a], perm[b] = perm[b], perm[a]
    return permute(cx, n, [x, perm], {})


def t_(cx, n, args, kw):
    x = args[0]
    return x if cx.rank(x) < 2 else permute(cx, n, [x, [1, 0]], {})


def pad(cx, n, args, kw):
    x, p = args[0], list(args[1])
    mode = _a(args, kw, 2, "mode", "constant")
    value = _a(args, kw, 3, "value", 0.0)
    if n.target.__name__.startswith("constant_pad_nd"):
        mode, value = "constant", _a(args, kw, 2, "value", 0.0)
    mode = {"replicate": "edge"}.get(mode, mode)
    if mode not in ("constant", "reflect", "edge"):
        _unsupported(cx, n, f"padding mode {mode!r} is not supported", "use constant, reflect or replicate padding")
    r = cx.rank(x)
    begins, ends = [0] * r, [0] * r
    for i in range(len(p) // 2):  # torch lists (begin, end) pairs from the last dim backwards
        begins[r - 1 - i], ends[r - 1 - i] = int(p[2 * i]), int(p[2 * i + 1])
    return cx.emit("Pad", [cx.t(x)], n, pads=begins + ends, value=float(value or 0.0), mode=mode)


def expand(cx, n, args, kw):
    x = args[0]
    out = _meta_shape(n)
    shape = list(cx.shape(x))
    y = x
    if len(out) > len(shape):
        shape = [1] * (len(out) - len(shape)) + shape
        y = cx.emit("Reshape", [cx.t(x)], n, final=False, suffix="_rank", shape=shape)
    for ax, (d, o) in enumerate(zip(shape, out)):
        if d != o:
            y = cx.emit("Concat", [cx.t(y)] * o, n, final=False, suffix=f"_rep{ax}", axis=ax)
    return y


def repeat(cx, n, args, kw):
    x, reps = args[0], [int(r) for r in args[1]]
    shape = list(cx.shape(x))
    y = x
    if len(reps) > len(shape):
        shape = [1] * (len(reps) - len(shape)) + shape
        y = cx.emit("Reshape", [cx.t(x)], n, final=False, suffix="_rank", shape=shape)
    for ax, r in enumerate(reps):
        if r > 1:
            y = cx.emit("Concat", [cx.t(y)] * r, n, final=False, suffix=f"_rep{ax}", axis=ax)
    return y


def identity(cx, n, args, kw):
    return args[0]


def to_copy(cx, n, args, kw):
    x = args[0]
    dt = str(n.meta["val"].dtype).replace("torch.", "")
    if dt in ("float32", "float16", "bfloat16", "float64") and cx.b.dtype(cx.t(x)) == "float32":
        return x
    _unsupported(cx, n, f"cast of a computed tensor to {dt} is not supported", "keep activations float32")


# ------------------------------------------------------------- pooling
def _pool(cx, n, op, x, kernel, stride, padding, ceil_mode, **extra):
    nsp = cx.rank(x) - 2
    k = _ints(kernel, nsp)
    s = _ints(stride, nsp) if stride not in (None, [], ()) else list(k)
    p = _ints(padding, nsp)
    return cx.emit(op, [cx.t(x)], n, kernel=k, strides=s, pads=p + p, channels_last=False,
                   ceil_mode=bool(ceil_mode), **extra)


def max_pool(cx, n, args, kw):
    x = args[0]
    dil = _a(args, kw, 4, "dilation", 1)
    if any(d != 1 for d in _ints(dil, cx.rank(x) - 2)):
        _unsupported(cx, n, "dilated max pooling is not supported", "use dilation=1")
    y = _pool(cx, n, "MaxPool", x, args[1], _a(args, kw, 2, "stride"), _a(args, kw, 3, "padding", 0),
              _a(args, kw, 5, "ceil_mode", False))
    return (y, None) if "with_indices" in str(n.target) else y


def avg_pool(cx, n, args, kw):
    x = args[0]
    if _a(args, kw, 6, "divisor_override") is not None:
        _unsupported(cx, n, "avg_pool divisor_override is not supported", "drop divisor_override")
    include = bool(_a(args, kw, 5, "count_include_pad", True))
    return _pool(cx, n, "AvgPool", x, args[1], _a(args, kw, 2, "stride"), _a(args, kw, 3, "padding", 0),
                 _a(args, kw, 4, "ceil_mode", False), count_include_pad=include)


def adaptive_avg_pool(cx, n, args, kw):
    x = args[0]
    sp = cx.shape(x)[2:]
    out = _ints(args[1], len(sp))
    if all(o == 1 for o in out):
        return cx.emit("GlobalAvgPool", [cx.t(x)], n, channels_last=False, keepdims=True)
    if all(s % o == 0 for s, o in zip(sp, out)):
        k = [s // o for s, o in zip(sp, out)]
        return cx.emit("AvgPool", [cx.t(x)], n, kernel=k, strides=k, pads=[0] * (2 * len(k)), channels_last=False)
    _unsupported(cx, n, f"adaptive_avg_pool from {tuple(sp)} to {tuple(out)} (not a divisor) is not supported",
                 "use an output size that divides the input size, or 1")


def _reduce(op):
    def h(cx, n, args, kw):
        x = args[0]
        r = cx.rank(x)
        dims = _a(args, kw, 1, "dim")
        keep = bool(_a(args, kw, 2, "keepdim", False))
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            axes = list(range(r))
        else:
            axes = [_axis(d, r) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        return cx.emit(op, [cx.t(x)], n, axes=sorted(axes), keepdims=keep)
    return h


# --------------------------------------------------------------- resize
def _upsample(mode):
    def h(cx, n, args, kw):
        x = args[0]
        out_hw = _meta_shape(n)[2:]
        if len(out_hw) != 2:
            _unsupported(cx, n, "only 2-D upsampling is supported", "upsample N,C,H,W tensors")
        if mode == "nearest":
            extra = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            align = bool(_a(args, kw, 2, "align_corners", False))
            extra = {"coordinate_transformation_mode": "align_corners" if align else "half_pixel"}
        return cx.emit("Resize", [cx.t(x)], n, mode=mode, size=out_hw, channels_last=False, **extra)
    return h


HANDLERS = {
    "conv1d": conv, "conv2d": conv, "convolution": convolution, "conv_transpose2d": conv_transpose,
    "linear": linear, "addmm": addmm, "mm": matmul, "bmm": matmul, "matmul": matmul,
    "scaled_dot_product_attention": sdpa,
    "relu": _unary("Relu"), "relu6": _unary("Relu6"), "hardtanh": hardtanh, "clamp": clamp,
    "leaky_relu": leaky_relu, "hardswish": _unary("HardSwish"),
    "hardsigmoid": _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5), "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"), "gelu": gelu, "silu": _unary("Silu"),
    "softmax": softmax, "_softmax": softmax, "layer_norm": layer_norm, "native_layer_norm": layer_norm,
    "batch_norm": batch_norm, "_native_batch_norm_legit_no_training": bn_no_training,
    "add": _binary("Add"), "sub": _binary("Sub"), "mul": _binary("Mul"), "div": _binary("Div"), "rsub": rsub,
    "neg": neg,
    "cat": cat, "concat": cat, "split": split, "split_with_sizes": split_with_sizes, "chunk": chunk, "unbind": unbind,
    "slice": slice_, "narrow": narrow, "select": select,
    "view": reshape, "reshape": reshape, "_unsafe_view": reshape, "flatten": flatten, "unflatten": reshape,
    "squeeze": squeeze, "unsqueeze": unsqueeze, "permute": permute, "transpose": transpose, "t": t_,
    "pad": pad, "constant_pad_nd": pad, "expand": expand, "repeat": repeat,
    "max_pool1d": max_pool, "max_pool2d": max_pool, "max_pool2d_with_indices": max_pool,
    "avg_pool1d": avg_pool, "avg_pool2d": avg_pool,
    "adaptive_avg_pool1d": adaptive_avg_pool, "adaptive_avg_pool2d": adaptive_avg_pool,
    "mean": _reduce("Mean"), "sum": _reduce("ReduceSum"), "amax": _reduce("ReduceMax"),
    "upsample_nearest2d": _upsample("nearest"), "upsample_bilinear2d": _upsample("bilinear"),
    "dropout": identity, "clone": identity, "contiguous": identity, "alias": identity, "detach": identity,
    "lift_fresh_copy": identity, "_to_copy": to_copy, "to": to_copy, "type_as": to_copy,
}
