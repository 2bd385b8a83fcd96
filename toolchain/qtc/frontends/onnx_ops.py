"""Lowering of individual ONNX ops to qtc IR ops (see docs/ir.md).

Each handler takes the importer (``imp``) and the ONNX node, emits IR nodes
with ``imp.emit`` and binds the node's outputs.  Static facts the IR needs
(weights, reshape targets, slice bounds, pads) must be constants by the time
a node is lowered; ``imp.need_const`` says so in one line when they are not.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..ir.tensor import QuantParams
from .onnx import attrs

F32_MAX = float(np.finfo(np.float32).max)


def _unsupported(imp, node, what: str, hint: str):
    raise UnsupportedOpError(what, where=imp.node_where(node), hint=hint)


def _in(node, i: int) -> str:
    return node.input[i] if i < len(node.input) else ""


def _norm_axes(axes, rank: int) -> list[int]:
    return [int(a) % rank if rank else int(a) for a in axes]


# ------------------------------------------------------------ convolutions
def _same_pads(in_sp, k, s, d, mode: str) -> list[int]:
    begins, ends = [], []
    for i, n in enumerate(in_sp):
        out = -(-n // s[i])
        total = max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - n)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _conv_geometry(imp, node, x: str, kernel: tuple[int, ...]):
    a = attrs(node)
    nsp = len(kernel)
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(imp.shape(x)[2:], kernel, strides, dil, auto)
    elif auto == "VALID":
        pads = [0] * (2 * nsp)
    else:
        pads = list(a.get("pads", [0] * (2 * nsp)))
    return strides, dil, pads


def conv(imp, node):
    x, wname, bname = _in(node, 0), _in(node, 1), _in(node, 2)
    w = imp.need_const(node, 1, "Conv weight")
    nsp = w.ndim - 2
    if nsp not in (1, 2):
        _unsupported(imp, node, f"Conv with {nsp} spatial dims is not supported", "use Conv1d or Conv2d")
    strides, dil, pads = _conv_geometry(imp, node, x, w.shape[2:])
    group = int(attrs(node).get("group", 1))
    w_ir = np.transpose(w, (0, 2, 3, 1) if nsp == 2 else (0, 2, 1))  # OIHW → OHWI, OIK → OKI
    ins = [imp.t(x), imp.b.const(f"{wname}", np.ascontiguousarray(w_ir))]
    if bname:
        ins.append(imp.b.const(bname, imp.need_const(node, 2, "Conv bias")))
    imp.emit("Conv2D" if nsp == 2 else "Conv1D", ins, node, strides=strides, dilations=dil, pads=pads,
             groups=group, channels_last=False)


def conv_transpose(imp, node):
    x = _in(node, 0)
    w = imp.need_const(node, 1, "ConvTranspose weight")
    a = attrs(node)
    if w.ndim != 4:
        _unsupported(imp, node, "only 2-D ConvTranspose is supported", "use ConvTranspose2d")
    if int(a.get("group", 1)) != 1:
        _unsupported(imp, node, "grouped ConvTranspose is not supported", "use groups=1")
    k = w.shape[2:]
    strides = list(a.get("strides", [1, 1]))
    dil = list(a.get("dilations", [1, 1]))
    out_pad = list(a.get("output_padding", [0, 0]))
    in_sp = imp.shape(x)[2:]
    pads = list(a.get("pads", [0, 0, 0, 0]))
    auto = a.get("auto_pad", "NOTSET")
    if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = list(a["output_shape"])[-2:] if "output_shape" in a else [n * s for n, s in zip(in_sp, strides)]
        pads = [0, 0, 0, 0]
        for i in range(2):
            total = strides[i] * (in_sp[i] - 1) + out_pad[i] + (k[i] - 1) * dil[i] + 1 - target[i]
            if total < 0:
                out_pad[i] -= total
                total = 0
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2  # ONNX: the rest goes first
            pads[i], pads[i + 2] = lo, total - lo
    ins = [imp.t(x), imp.b.const(_in(node, 1), np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0))))]
    if _in(node, 2):
        ins.append(imp.b.const(_in(node, 2), imp.need_const(node, 2, "ConvTranspose bias")))
    imp.emit("ConvTranspose2D", ins, node, strides=strides, pads=pads, output_padding=out_pad, dilations=dil,
             channels_last=False)


# -------------------------------------------------------- dense / matmul
def gemm(imp, node):
    """y = alpha·A'·B' + beta·C: FullyConnected when B is constant (C folded into its bias
    when it is per output), else MatMul (+ Mul alpha) (+ Add beta·C)."""
    a = attrs(node)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
    bname, cname = _in(node, 1), _in(node, 2)
    x = imp.t(_in(node, 0))
    if ta:
        x = imp.emit("Transpose", [x], node, out=None, suffix="_transA", perm=[1, 0])
    bval, cval = imp.c(bname), imp.c(cname)
    bias_done = not cname
    if bval is not None:
        w = (bval if tb else bval.T).astype(np.float32) * np.float32(alpha)  # [O, I]
        n_out = w.shape[0]
        ins = [x, imp.b.const(bname if (tb and alpha == 1.0) else f"{bname}_oi", np.ascontiguousarray(w))]
        if cval is not None and cval.size in (1, n_out) and (cval.ndim <= 1 or cval.shape[0] == 1):
            bias = np.broadcast_to(cval.astype(np.float32).reshape(-1) * np.float32(beta), (n_out,)).copy()
            ins.append(imp.b.const(cname if (beta == 1.0 and cval.shape == (n_out,)) else f"{cname}_bias", bias))
            bias_done = True
        y = imp.emit("FullyConnected", ins, node, out=0 if bias_done else None)
    else:
        y = imp.emit("MatMul", [x, imp.t(bname)], node, out=0 if (bias_done and alpha == 1.0) else None,
                     transpose_b=bool(tb))
        if alpha != 1.0:
            y = imp.emit("Mul", [y, imp.b.const(f"{node.output[0]}_alpha", np.float32(alpha))], node,
                         out=0 if bias_done else None, suffix="_alpha")
    if not bias_done:
        if beta == 1.0:
            cin = imp.t(cname)
        elif cval is not None:
            cin = imp.b.const(f"{cname}_beta", cval.astype(np.float32) * np.float32(beta))
        else:
            cin = imp.emit("Mul", [imp.t(cname), imp.b.const(f"{cname}_beta", np.float32(beta))], node, out=None,
                           suffix="_beta")
        imp.emit("Add", [y, cin], node, suffix="_bias")


def matmul(imp, node):
    wv = imp.c(_in(node, 1))
    if wv is not None and wv.ndim == 2 and imp.rank(_in(node, 0)) >= 1:
        w = np.ascontiguousarray(wv.T.astype(np.float32))
        imp.emit("FullyConnected", [imp.t(_in(node, 0)), imp.b.const(f"{_in(node, 1)}_oi", w)], node)
    else:
        imp.emit("MatMul", [imp.t(_in(node, 0)), imp.t(_in(node, 1))], node)


def batchnorm(imp, node):
    a = attrs(node)
    if int(a.get("training_mode", 0)) or any(o for o in node.output[1:]):
        _unsupported(imp, node, "BatchNormalization in training mode is not supported",
                     "export the model in eval mode (model.eval())")
    ins = [imp.t(_in(node, 0))]
    for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")):
        ins.append(imp.b.const(_in(node, i), imp.need_const(node, i, f"BatchNormalization {what}").astype(np.float32)))
    imp.emit("BatchNorm", ins, node, epsilon=float(a.get("epsilon", 1e-5)), channels_last=False)


# ------------------------------------------------------------ elementwise
def binary(op):
    def h(imp, node):
        imp.emit(op, [imp.t(_in(node, 0)), imp.t(_in(node, 1))], node)
    return h


def sum_(imp, node):
    ins = [i for i in node.input if i]
    y = imp.t(ins[0])
    for k, other in enumerate(ins[1:]):
        last = k == len(ins) - 2
        y = imp.emit("Add", [y, imp.t(other)], node, out=0 if last else None, suffix=f"_{k}")
    if len(ins) == 1:
        imp.bind(node.output[0], y)


def neg(imp, node):
    imp.emit("Mul", [imp.t(_in(node, 0)), imp.b.const(f"{node.output[0]}_neg1", np.float32(-1.0))], node)


def unary(op, **fixed):
    def h(imp, node):
        imp.emit(op, [imp.t(_in(node, 0))], node, **fixed)
    return h


def leaky_relu(imp, node):
    imp.emit("LeakyRelu", [imp.t(_in(node, 0))], node, alpha=float(attrs(node).get("alpha", 0.01)))


def hard_sigmoid(imp, node):
    a = attrs(node)
    imp.emit("HardSigmoid", [imp.t(_in(node, 0))], node, alpha=float(a.get("alpha", 0.2)),
             beta=float(a.get("beta", 0.5)))


def gelu(imp, node):
    approx = attrs(node).get("approximate", "none")
    imp.emit("Gelu", [imp.t(_in(node, 0))], node, approximate=approx)


def emit_clip(imp, node, x: str, lo, hi):
    lo = None if lo is None or lo <= -F32_MAX else float(lo)
    hi = None if hi is None or hi >= F32_MAX else float(hi)
    if lo == 0.0 and hi is None:
        imp.emit("Relu", [x], node)
    elif lo == 0.0 and hi == 6.0:
        imp.emit("Relu6", [x], node)
    elif lo is None and hi is None:
        imp.bind(node.output[0], x)
    else:
        imp.emit("Clip", [x], node, min=lo, max=hi)


def clip(imp, node):
    a = attrs(node)
    lo, hi = a.get("min"), a.get("max")
    if _in(node, 1):
        lo = float(imp.need_const(node, 1, "Clip min"))
    if _in(node, 2):
        hi = float(imp.need_const(node, 2, "Clip max"))
    emit_clip(imp, node, imp.t(_in(node, 0)), lo, hi)


def softmax(imp, node):
    x = _in(node, 0)
    r = imp.rank(x)
    default = -1 if imp.opset >= 13 else 1
    axis = int(attrs(node).get("axis", default)) % r
    if imp.opset >= 13 or axis == r - 1:
        imp.emit("Softmax", [imp.t(x)], node, axis=axis)
        return
    # opsets < 13: softmax over the flattened trailing dims [axis:]
    shape = list(imp.shape(x))
    f = imp.emit("Flatten", [imp.t(x)], node, out=None, suffix="_flat", axis=axis)
    s = imp.emit("Softmax", [f], node, out=None, suffix="_softmax", axis=-1)
    imp.emit("Reshape", [s], node, suffix="_unflat", shape=shape)


def layernorm(imp, node):
    a = attrs(node)
    if any(o for o in node.output[1:]):
        _unsupported(imp, node, "LayerNormalization's mean/inv-std outputs are not supported",
                     "use only the normalized output")
    ins = [imp.t(_in(node, 0)), imp.t(_in(node, 1))]
    if _in(node, 2):
        ins.append(imp.t(_in(node, 2)))
    imp.emit("LayerNorm", ins, node, axis=int(a.get("axis", -1)), epsilon=float(a.get("epsilon", 1e-5)))


# --------------------------------------------------------------- shapes
def concat(imp, node):
    axis = int(attrs(node)["axis"])
    ins = [i for i in node.input if i]
    imp.emit("Concat", [imp.t(i) for i in ins], node, axis=axis % imp.rank(ins[0]))


def split(imp, node):
    a = attrs(node)
    x = _in(node, 0)
    shape = imp.shape(x)
    axis = int(a.get("axis", 0)) % len(shape)
    if _in(node, 1):
        sizes = [int(v) for v in imp.need_const(node, 1, "Split sizes")]
    elif "split" in a:
        sizes = [int(v) for v in a["split"]]
    else:
        n = int(a.get("num_outputs", len(node.output)))
        chunk = -(-shape[axis] // n)
        sizes = [min(chunk, shape[axis] - i * chunk) for i in range(n)]
    outs = imp.b.node("Split", [imp.t(x)], node.name or node.output[0], outputs=list(node.output),
                      n_out=len(node.output), src=imp.node_where(node), axis=axis, sizes=sizes)
    for o, ir in zip(node.output, outs):
        imp.bind(o, ir)


def slice_(imp, node):
    x = _in(node, 0)
    shape = imp.shape(x)
    starts = [int(v) for v in imp.need_const(node, 1, "Slice starts")]
    ends = [int(v) for v in imp.need_const(node, 2, "Slice ends")]
    axes = [int(v) for v in imp.need_const(node, 3, "Slice axes")] if _in(node, 3) else list(range(len(starts)))
    steps = [int(v) for v in imp.need_const(node, 4, "Slice steps")] if _in(node, 4) else [1] * len(starts)
    emit_slice(imp, node, imp.t(x), shape, starts, ends, axes, steps)


def emit_slice(imp, node, x: str, shape, starts, ends, axes, steps, out=0, suffix=""):
    """Slice with bounds normalised to the static shape (numpy semantics, no sentinels)."""
    ns, ne, na, nst = [], [], [], []
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a % len(shape)
        dim = shape[a]
        s = max(min(s, 2 ** 62), -2 ** 62)
        e = max(min(e, 2 ** 62), -2 ** 62)
        s, e, st = slice(s, e, st).indices(dim)
        if st < 0 and e < 0:
            e = -dim - 1  # "before index 0" for a negative step
        ns.append(s), ne.append(e), na.append(a), nst.append(st)
    return imp.emit("Slice", [x], node, out=out, suffix=suffix, starts=ns, ends=ne, axes=na, steps=nst)


def reshape(imp, node):
    x = _in(node, 0)
    target = [int(v) for v in imp.need_const(node, 1, "Reshape target shape")]
    allowzero = int(attrs(node).get("allowzero", 0))
    imp.emit("Reshape", [imp.t(x)], node, shape=resolve_shape(imp, node, imp.shape(x), target, allowzero))


def resolve_shape(imp, node, in_shape, target, allowzero=0) -> list[int]:
    out = [in_shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(target)]
    total = int(np.prod(in_shape))
    if out.count(-1) == 1:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = total // known if known else 0
    if int(np.prod(out)) != total or any(d < 0 for d in out):
        raise ShapeError(f"cannot reshape {tuple(in_shape)} to {target}", where=imp.node_where(node),
                         hint="check --input-shape: the model may assume other input dims")
    return out


def flatten(imp, node):
    x = _in(node, 0)
    axis = int(attrs(node).get("axis", 1))
    r = imp.rank(x)
    imp.emit("Flatten", [imp.t(x)], node, axis=axis % r if r else 0)


def _axes_arg(imp, node, idx: int):
    a = attrs(node)
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if _in(node, idx):
        return [int(v) for v in np.asarray(imp.need_const(node, idx, f"{node.op_type} axes")).reshape(-1)]
    return None


def squeeze(imp, node):
    x = _in(node, 0)
    shape = imp.shape(x)
    axes = _axes_arg(imp, node, 1)
    axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else _norm_axes(axes, len(shape))
    imp.emit("Squeeze", [imp.t(x)], node, axes=sorted(axes))


def unsqueeze(imp, node):
    x = _in(node, 0)
    axes = _axes_arg(imp, node, 1) or []
    imp.emit("Unsqueeze", [imp.t(x)], node, axes=sorted(_norm_axes(axes, imp.rank(x) + len(axes))))


def transpose(imp, node):
    x = _in(node, 0)
    perm = attrs(node).get("perm") or list(range(imp.rank(x)))[::-1]
    imp.emit("Transpose", [imp.t(x)], node, perm=[int(p) for p in perm])


def pad(imp, node):
    a = attrs(node)
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        _unsupported(imp, node, f"Pad mode {mode!r} is not supported", "use constant, reflect or edge padding")
    x = _in(node, 0)
    r = imp.rank(x)
    pads = [int(v) for v in (imp.need_const(node, 1, "Pad pads") if _in(node, 1) else a.get("pads"))]
    value = float(np.asarray(imp.need_const(node, 2, "Pad value")).reshape(-1)[0]) if _in(node, 2) else \
        float(a.get("value", 0.0))
    if _in(node, 3):
        axes = _norm_axes(imp.need_const(node, 3, "Pad axes"), r)
        full = [0] * (2 * r)
        for i, ax in enumerate(axes):
            full[ax], full[ax + r] = pads[i], pads[i + len(axes)]
        pads = full
    imp.emit("Pad", [imp.t(x)], node, pads=pads, value=value, mode=mode)


# ------------------------------------------------------------- pooling
def pool(op):
    def h(imp, node):
        a = attrs(node)
        if op == "MaxPool" and len([o for o in node.output if o]) > 1:
            _unsupported(imp, node, "MaxPool with an indices output is not supported", "drop return_indices")
        x = _in(node, 0)
        k = list(a["kernel_shape"])
        if any(d != 1 for d in a.get("dilations", [1] * len(k))):
            _unsupported(imp, node, "dilated pooling is not supported", "use dilation=1")
        strides, _, pads = _conv_geometry(imp, node, x, tuple(k))
        extra = {"count_include_pad": bool(a.get("count_include_pad", 0))} if op == "AvgPool" else {}
        imp.emit(op, [imp.t(x)], node, kernel=k, strides=strides, pads=pads, channels_last=False,
                 ceil_mode=bool(a.get("ceil_mode", 0)), **extra)
    return h


def global_avg_pool(imp, node):
    imp.emit("GlobalAvgPool", [imp.t(_in(node, 0))], node, channels_last=False, keepdims=True)


def global_max_pool(imp, node):
    x = _in(node, 0)
    imp.emit("ReduceMax", [imp.t(x)], node, axes=list(range(2, imp.rank(x))), keepdims=True)


def reduce(op):
    def h(imp, node):
        a = attrs(node)
        x = _in(node, 0)
        r = imp.rank(x)
        axes = _axes_arg(imp, node, 1)
        if not axes:
            if int(a.get("noop_with_empty_axes", 0)):
                imp.bind(node.output[0], imp.t(x))
                return
            axes = list(range(r))
        imp.emit(op, [imp.t(x)], node, axes=sorted(_norm_axes(axes, r)), keepdims=bool(a.get("keepdims", 1)))
    return h


# --------------------------------------------------------------- resize
_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
_CTMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")


def resize(imp, node):
    a = attrs(node)
    x = _in(node, 0)
    shape = imp.shape(x)
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        _unsupported(imp, node, f"Resize mode {mode!r} is not supported", "use nearest or (bi)linear")
    if len(shape) not in (3, 4):
        _unsupported(imp, node, f"Resize of a rank-{len(shape)} tensor is not supported", "resize N,C,H,W or N,C,W")
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    if ctm not in _CTMS or (mode == "nearest" and nearest_mode not in _NEAREST_MODES):
        _unsupported(imp, node, f"Resize coordinate_transformation_mode {ctm!r} / nearest_mode {nearest_mode!r} "
                     "is not supported", f"use one of {', '.join(_CTMS)}")
    if "axes" in a or int(a.get("antialias", 0)):
        _unsupported(imp, node, "Resize with axes or antialias is not supported",
                     "resize all spatial dims, without antialias")
    sizes = imp.c(_in(node, 3)) if _in(node, 3) else None
    scales = imp.c(_in(node, 2)) if _in(node, 2) else None
    nsp = len(shape) - 2
    if sizes is not None and np.size(sizes):
        out_sp = [int(v) for v in np.asarray(sizes).reshape(-1)[-nsp:]]
    elif scales is not None and np.size(scales):
        sc = np.asarray(scales, dtype=np.float32).reshape(-1)
        if sc[0] != 1 or sc[1] != 1:
            _unsupported(imp, node, "Resize may only scale the spatial dims", "keep N and C scales at 1")
        out_sp = [int(math.floor(shape[2 + i] * float(sc[2 + i]))) for i in range(nsp)]
    else:
        imp.need_const(node, 3 if _in(node, 3) else 2, "Resize sizes/scales")
    extra = {"nearest_mode": nearest_mode} if mode == "nearest" else {}
    imp.emit("Resize", [imp.t(x)], node, mode="nearest" if mode == "nearest" else "bilinear", size=out_sp,
             coordinate_transformation_mode=ctm, channels_last=False, **extra)


# ------------------------------------------------------------ quantize
def _qparams(imp, node, x_rank: int, dtype: str):
    scale = np.asarray(imp.need_const(node, 1, f"{node.op_type} scale"), dtype=np.float32).reshape(-1)
    zp = np.asarray(imp.need_const(node, 2, f"{node.op_type} zero point")) if _in(node, 2) else \
        np.zeros(1, dtype=np.int64)
    axis = int(attrs(node).get("axis", 1)) % max(x_rank, 1) if scale.size > 1 else None
    bits = {"int8": 8, "uint8": 8, "int16": 16, "int32": 32}.get(dtype)
    if bits is None:
        _unsupported(imp, node, f"{node.op_type} to {dtype} is not supported", "use int8, uint8 or int16")
    return QuantParams(scale, zp.astype(np.int64).reshape(-1), axis=axis, bits=bits, signed=dtype != "uint8")


def quantize_linear(imp, node):
    zp = imp.c(_in(node, 2)) if _in(node, 2) else None
    dtype = str(zp.dtype) if zp is not None else "uint8"
    to = attrs(node).get("output_dtype")
    if to:
        from .onnx import _ONNX_DTYPES
        dtype = _ONNX_DTYPES.get(int(to), dtype)
    x = _in(node, 0)
    q = _qparams(imp, node, imp.rank(x), dtype)
    y = imp.emit("Quantize", [imp.t(x)], node, dtype=dtype)
    imp.b.g.tensors[y].dtype = dtype
    imp.b.g.tensors[y].quant = q


def dequantize_linear(imp, node):
    x = _in(node, 0)
    xv = imp.c(x)
    if xv is not None:
        dtype = str(xv.dtype)
        q = _qparams(imp, node, xv.ndim, dtype)
        xin = imp.b.g.add_const(f"{x}_q", xv, quant=q).name
    else:
        xin = imp.t(x)
        t = imp.b.g.tensors[xin]
        if t.quant is None:
            t.quant = _qparams(imp, node, len(t.shape), t.dtype)
    imp.emit("Dequantize", [xin], node)


# ------------------------------------------------- gather/expand/tile/cast
def gather(imp, node):
    x = _in(node, 0)
    idx = np.asarray(imp.need_const(node, 1, "Gather indices"))
    shape = imp.shape(x)
    axis = int(attrs(node).get("axis", 0)) % len(shape)
    flat = [int(i) % shape[axis] for i in idx.reshape(-1)]
    if idx.ndim > 1 or not flat:
        _unsupported(imp, node, "Gather with multi-dimensional indices on a computed tensor is not supported",
                     "gather with a scalar or 1-D index list")
    parts = []
    run_start = 0
    for i in range(1, len(flat) + 1):  # group consecutive index runs into slices
        if i == len(flat) or flat[i] != flat[i - 1] + 1:
            parts.append(emit_slice(imp, node, imp.t(x), shape, [flat[run_start]], [flat[i - 1] + 1], [axis], [1],
                                    out=None, suffix=f"_take{len(parts)}"))
            run_start = i
    y = parts[0] if len(parts) == 1 else imp.emit("Concat", parts, node, out=None, suffix="_cat", axis=axis)
    if idx.ndim == 0:
        imp.emit("Squeeze", [y], node, axes=[axis])
    else:
        imp.bind(node.output[0], y)


def _repeat_axis(imp, node, x: str, axis: int, n: int, tag: str) -> str:
    return imp.emit("Concat", [x] * n, node, out=None, suffix=f"_rep{tag}", axis=axis)


def expand(imp, node):
    x = _in(node, 0)
    target = [int(v) for v in imp.need_const(node, 1, "Expand shape")]
    shape = imp.shape(x)
    out_shape = list(np.broadcast_shapes(tuple(shape), tuple(target)))
    y = imp.t(x)
    if len(out_shape) > len(shape):
        shape = [1] * (len(out_shape) - len(shape)) + list(shape)
        y = imp.emit("Reshape", [y], node, out=None, suffix="_rank", shape=shape)
    for ax, (d, o) in enumerate(zip(shape, out_shape)):
        if d != o:
            y = _repeat_axis(imp, node, y, ax, o, str(ax))
    imp.bind(node.output[0], y)


def tile(imp, node):
    reps = [int(v) for v in imp.need_const(node, 1, "Tile repeats")]
    y = imp.t(_in(node, 0))
    for ax, n in enumerate(reps):
        if n > 1:
            y = _repeat_axis(imp, node, y, ax, n, str(ax))
    imp.bind(node.output[0], y)


def cast(imp, node):
    from .onnx import _ONNX_DTYPES

    to = _ONNX_DTYPES.get(int(attrs(node)["to"]))
    x = imp.t(_in(node, 0))
    if to in ("float32", "float16") and imp.b.dtype(x) == "float32":
        imp.bind(node.output[0], x)
        return
    _unsupported(imp, node, f"Cast of a computed tensor to {to} is not supported", "keep activations float32")


# --------------------------------------------------------- fused patterns
def fused_layernorm(imp, node):
    a = attrs(node)
    x = _in(node, 0)
    r = imp.rank(x)
    axes = sorted(_norm_axes(a["axes"], r))
    if axes != list(range(axes[0], r)):
        _unsupported(imp, node, f"normalisation over axes {axes} is not a trailing block",
                     "normalise over the last dims (LayerNorm)")
    norm_shape = imp.shape(x)[axes[0]:]
    gamma = imp.t(_in(node, 1)) if _in(node, 1) else imp.b.const(f"{node.output[0]}_gamma",
                                                                  np.ones(norm_shape, np.float32))
    ins = [imp.t(x), gamma] + ([imp.t(_in(node, 2))] if _in(node, 2) else [])
    imp.emit("LayerNorm", ins, node, axis=axes[0] - r, epsilon=float(a["epsilon"]))


HANDLERS = {
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
    "BatchNormalization": batchnorm,
    "Add": binary("Add"), "Sub": binary("Sub"), "Mul": binary("Mul"), "Div": binary("Div"),
    "Sum": sum_, "Neg": neg,
    "Concat": concat, "Split": split, "Slice": slice_, "Reshape": reshape, "Flatten": flatten,
    "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Transpose": transpose, "Pad": pad,
    "MaxPool": pool("MaxPool"), "AveragePool": pool("AvgPool"), "GlobalAveragePool": global_avg_pool,
    "GlobalMaxPool": global_max_pool,
    "ReduceMean": reduce("Mean"), "ReduceSum": reduce("ReduceSum"), "ReduceMax": reduce("ReduceMax"),
    "Relu": unary("Relu"), "Clip": clip, "LeakyRelu": leaky_relu, "HardSwish": unary("HardSwish"),
    "HardSigmoid": hard_sigmoid, "Sigmoid": unary("Sigmoid"), "Tanh": unary("Tanh"), "Gelu": gelu,
    "Softmax": softmax, "LayerNormalization": layernorm, "Resize": resize,
    "QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear,
    "Gather": gather, "Expand": expand, "Tile": tile, "Cast": cast,
}

FUSED = {"Gelu": unary("Gelu", approximate="none"), "Silu": unary("Silu"), "HardSwish": unary("HardSwish"),
         "LayerNorm": fused_layernorm}
