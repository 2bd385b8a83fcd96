"""Lowering of the elementwise, reduction, data-movement, activation and bridge ops.

Each handler adds the TFLite operator(s) whose integer kernel equals the IR
op's integer semantics (docs/ir.md); an IR op that no TFLite builtin matches
exactly (the 256-entry LUT ops, general Clip, grouped layouts) is rejected
with a hint instead of being approximated.
"""
from __future__ import annotations

import numpy as np

from ...ops._util import int_range, norm_axis, round_half_away
from ...ops.reduce import resolve_axes
from .fb import fused_code
from .lower import Lowering

LUT_OPS = ("Gelu", "Silu", "HardSigmoid")


def _io(n):
    return n.inputs[0], n.outputs[0]


# ------------------------------------------------------------------ elementwise
def _binary(code: str, kind: str):
    def lower(L: Lowering, n) -> None:
        a, b = n.inputs
        out = n.outputs[0]
        fields = {"fusedActivationFunction": fused_code(n.attr("activation"), L.where())}
        if kind in ("AddOptions", "SubOptions") and L.t(out).dtype == "int16":
            fields["potScaleInt16"] = False  # general int16 scales (the IR's 15-bit left shift path)
        L.mb.op(code, [L.tid(a), L.tid(b)], [L.tid(out)], L.mb.options(kind, **fields))
    return lower


def div(L: Lowering, n) -> None:
    a, b = n.inputs
    opts = L.mb.options("DivOptions", fusedActivationFunction=fused_code(n.attr("activation"), L.where()))
    L.mb.op("DIV", [L.tid(a), L.tid(b)], [L.tid(n.outputs[0])], opts)


# ------------------------------------------------------------------- reductions
def _emit_reduce(L: Lowering, code: str, x: str, out: str, axes, keep: bool) -> None:
    if not axes:
        raise L.reject("a reduction over no axes has no TFLite form", "remove the node (it is a copy)")
    same = code == "REDUCE_MAX"  # MEAN/SUM rescale in/out themselves; MAX needs equal params
    target, finish = L.same_params_out(x, out) if same else (L.tid(out), lambda: None)
    L.mb.op(code, [L.tid(x), L.i32("axes", list(axes))], [target],
            L.mb.options("ReducerOptions", keepDims=bool(keep)))
    finish()


def _reduce(code: str):
    def lower(L: Lowering, n) -> None:
        x, out = _io(n)
        axes = resolve_axes(n.attr("axes"), len(L.t(x).shape))
        _emit_reduce(L, code, x, out, axes, n.attr("keepdims", True))
    return lower


def global_avg_pool(L: Lowering, n) -> None:
    x, out = _io(n)
    rank = len(L.t(x).shape)
    _emit_reduce(L, "MEAN", x, out, list(range(1, rank - 1)), n.attr("keepdims", True))


# ---------------------------------------------------------------- data movement
def reshape(L: Lowering, n) -> None:
    x, out = _io(n)
    target, finish = L.same_params_out(x, out)
    L.mb.op("RESHAPE", [L.tid(x), L.i32("shape", list(L.t(out).shape))], [target])
    finish()


def squeeze(L: Lowering, n) -> None:
    x, out = _io(n)
    shape = L.t(x).shape
    axes = n.attr("axes")
    axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else sorted(norm_axis(int(a), len(shape))
                                                                                 for a in axes)
    target, finish = L.same_params_out(x, out)
    L.mb.op("SQUEEZE", [L.tid(x)], [target], L.mb.options("SqueezeOptions", squeezeDims=axes))
    finish()


def unsqueeze(L: Lowering, n) -> None:
    x, out = _io(n)
    axes = n.attr("axes") or []
    if len(axes) != 1:
        return reshape(L, n)
    target, finish = L.same_params_out(x, out)
    axis = norm_axis(int(axes[0]), len(L.t(out).shape))
    L.mb.op("EXPAND_DIMS", [L.tid(x), L.i32("axis", [axis])], [target])
    finish()


def transpose(L: Lowering, n) -> None:
    x, out = _io(n)
    rank = len(L.t(x).shape)
    perm = n.attr("perm")
    perm = list(range(rank))[::-1] if perm is None else [norm_axis(int(p), rank) for p in perm]
    target, finish = L.same_params_out(x, out)
    L.mb.op("TRANSPOSE", [L.tid(x), L.i32("perm", perm)], [target])
    finish()


def concat(L: Lowering, n) -> None:
    out = n.outputs[0]
    axis = norm_axis(int(n.attr("axis", 0)), len(L.t(out).shape))
    ins = [L.requantized_in(i, out) for i in n.inputs]
    L.mb.op("CONCATENATION", ins, [L.tid(out)], L.mb.options("ConcatenationOptions", axis=axis))


def split(L: Lowering, n) -> None:
    from ...ops.shape import Split

    x = n.inputs[0]
    shape = L.t(x).shape
    axis = norm_axis(int(n.attr("axis", 0)), len(shape))
    sizes = Split._sizes(n, shape)
    targets, finishes = zip(*(L.same_params_out(x, o) for o in n.outputs))
    axis_t = L.const(f"{n.name}/axis", np.asarray(axis, dtype=np.int32))
    if len(set(sizes)) == 1:
        L.mb.op("SPLIT", [axis_t, L.tid(x)], list(targets), L.mb.options("SplitOptions", numSplits=len(sizes)))
    else:
        L.mb.op("SPLIT_V", [L.tid(x), L.i32("size_splits", sizes), axis_t], list(targets),
                L.mb.options("SplitVOptions", numSplits=len(sizes)))
    for f in finishes:
        f()


def slice_(L: Lowering, n) -> None:
    from ...ops.shape import Slice

    x, out = _io(n)
    idx = Slice._index(n, L.t(x).shape)
    if any(len(i) == 0 for i in idx):
        raise L.reject("an empty Slice has no TFLite form", "remove the node")
    begin = [int(i[0]) for i in idx]
    steps = [int(i[1] - i[0]) if len(i) > 1 else 1 for i in idx]
    if min(steps) < 1:
        raise L.reject("a Slice with a negative step is not written", "reverse the tensor another way")
    target, finish = L.same_params_out(x, out)
    if all(s == 1 for s in steps):
        L.mb.op("SLICE", [L.tid(x), L.i32("begin", begin), L.i32("size", [len(i) for i in idx])], [target])
    else:
        end = [b + (len(i) - 1) * s + 1 for b, i, s in zip(begin, idx, steps)]
        L.mb.op("STRIDED_SLICE", [L.tid(x), L.i32("begin", begin), L.i32("end", end), L.i32("strides", steps)],
                [target], L.mb.options("StridedSliceOptions"))
    finish()


def pad(L: Lowering, n) -> None:
    x, out = _io(n)
    if n.attr("mode", "constant") != "constant":
        raise L.reject(f"Pad mode {n.attr('mode')!r} is not written", "use constant padding")
    rank = len(L.t(x).shape)
    pads = [int(p) for p in n.attr("pads")]
    if min(pads) < 0:
        raise L.reject(f"negative pads {pads} (cropping) have no TFLite PAD form", "crop with a Slice node")
    paddings = L.i32("paddings", [[pads[i], pads[i + rank]] for i in range(rank)])
    value = float(n.attr("value", 0.0))
    if value == 0.0:  # PAD fills with the zero point (real 0)
        target, finish = L.same_params_out(x, out)
        L.mb.op("PAD", [L.tid(x), paddings], [target])
        finish()
        return
    t = L.t(out)
    if L.is_q(out):
        if L.requantizes(x, out):
            raise L.reject("a Pad with a non-zero value and different input/output params has no exact TFLite form",
                           "give the Pad output its input's params")
        lo, hi = int_range(t.dtype)
        q = t.quant
        fill = int(np.clip(int(q.zero_point[0]) + int(round_half_away(np.float32(value) / np.float32(q.scale[0]))),
                           max(lo, q.qmin), min(hi, q.qmax)))
        cv = L.const(f"{n.name}/pad_value", np.asarray([fill], dtype=t.dtype), t.quant)
    else:
        cv = L.const(f"{n.name}/pad_value", np.asarray([value], dtype=np.float32))
    L.mb.op("PADV2", [L.tid(x), paddings, cv], [L.tid(out)])


# ------------------------------------------------------------------ activations
def _unary(code: str, options=None):
    def lower(L: Lowering, n) -> None:
        x, out = _io(n)
        opts = options(L, n) if options else None
        L.mb.op(code, [L.tid(x)], [L.tid(out)], opts)
    return lower


def softmax(L: Lowering, n) -> None:
    x, out = _io(n)
    rank = len(L.t(x).shape)
    if norm_axis(int(n.attr("axis", -1)), rank) != rank - 1:
        raise L.reject("TFLite SOFTMAX works on the last axis only", "transpose so the softmax axis is last")
    L.mb.op("SOFTMAX", [L.tid(x)], [L.tid(out)], L.mb.options("SoftmaxOptions", beta=float(n.attr("beta", 1.0))))


def relu_like(L: Lowering, n) -> None:
    """Relu / Relu6 → RELU / RELU6; Clip → MAXIMUM / MINIMUM with its bounds as constants.

    The IR requantizes, then clamps to [q(min), q(max)] with the output's
    params; here a QUANTIZE does the requantization when in/out params differ
    and the clamp runs on equal params, which is exact in TFLM and LiteRT
    (TFLM's RELU6 ignores output params; TFLM has no RELU_N1_TO_1 kernel, so
    every Clip is a MAXIMUM/MINIMUM pair).
    """
    x, out = _io(n)
    src = L.requantized_in(x, out)
    if n.op in ("Relu", "Relu6"):
        L.mb.op("RELU" if n.op == "Relu" else "RELU6", [src], [L.tid(out)])
        return
    lo, hi = n.attr("min"), n.attr("max")
    steps = [(code, float(v)) for code, v in (("MAXIMUM", lo), ("MINIMUM", hi)) if v is not None]
    if not steps:
        raise L.reject("Clip without bounds is a copy", "remove the node")
    for k, (code, bound) in enumerate(steps):
        dst = L.tid(out) if k == len(steps) - 1 else L.tmp("clip_lo", L.t(out).shape, out)
        if k < len(steps) - 1:
            L.note("fused", dst)
        L.mb.op(code, [src, _bound_const(L, out, bound)], [dst])
        src = dst


def _bound_const(L: Lowering, out: str, value: float) -> int:
    """A clip bound as a one-element constant in ``out``'s dtype and params (the IR's q(bound))."""
    t = L.t(out)
    if not L.is_q(out):
        return L.const(f"{L.node.name}/bound", np.asarray([value], dtype=np.float32))
    q = t.quant
    lo, hi = int_range(t.dtype)
    v = int(q.zero_point[0]) + int(round_half_away(np.float32(value) / np.float32(q.scale[0])))
    v = int(np.clip(v, max(lo, q.qmin), min(hi, q.qmax)))
    return L.const(f"{L.node.name}/bound", np.asarray([v], dtype=t.dtype), q)


def leaky_relu(L: Lowering, n) -> None:
    x, out = _io(n)
    alpha = float(np.float32(n.attr("alpha", 0.01)))
    L.mb.op("LEAKY_RELU", [L.tid(x)], [L.tid(out)], L.mb.options("LeakyReluOptions", alpha=alpha))


def gelu(L: Lowering, n) -> None:
    if L.is_q(n.outputs[0]):
        return lut_op(L, n)
    raise L.reject("float Gelu: TFLM has no GELU kernel (LiteRT has one)",
                   "replace Gelu (e.g. by Silu or HardSwish) for TFLM targets, or use the C back end")


def silu(L: Lowering, n) -> None:
    """float x·sigmoid(x) as LOGISTIC + MUL (the integer form is a LUT: rejected)."""
    x, out = _io(n)
    if L.is_q(out):
        return lut_op(L, n)
    sig = L.tmp("sigmoid", L.t(x).shape, x)
    L.mb.op("LOGISTIC", [L.tid(x)], [sig])
    L.mb.op("MUL", [L.tid(x), sig], [L.tid(out)], L.mb.options("MulOptions"))


_LUT_HINTS = {"Silu": "quantize with keep_float=['{name}'] (mixed precision: float LOGISTIC + MUL)",
              "Gelu": "replace Gelu (e.g. by Silu or HardSwish: TFLM has no GELU kernel)",
              "HardSigmoid": "replace HardSigmoid (e.g. by HardSwish or Relu6(x + 3) / 6)"}


def lut_op(L: Lowering, n) -> None:
    kind = "integer" if L.is_q(n.outputs[0]) else "float"
    hint = _LUT_HINTS.get(n.op, "keep it out of TFLite models").format(name=n.name)
    raise L.reject(f"{n.op} ({kind}) has no TFLite builtin that TFLM runs with qtc's numerics (qtc's integer "
                   f"{n.op} is a 256-entry table)", f"{hint}, or use the C back end")


# --------------------------------------------------------------------- matmul
def matmul(L: Lowering, n) -> None:
    a, b = n.inputs
    out = n.outputs[0]
    if len(L.t(a).shape) < 2 or len(L.t(b).shape) < 2:
        raise L.reject("BATCH_MATMUL needs operands of rank >= 2", "reshape the vector operand to a matrix")
    if L.is_q(b) and L.t(b).quant.per_channel:
        raise L.reject("TFLite BATCH_MATMUL takes a per-tensor quantized right operand",
                       "quantize the MatMul weight per tensor (per_channel=False)")
    opts = L.mb.options("BatchMatMulOptions", adjX=bool(n.attr("transpose_a", False)),
                        adjY=bool(n.attr("transpose_b", False)))
    L.mb.op("BATCH_MATMUL", [L.tid(a), L.tid(b)], [L.tid(out)], opts)


# --------------------------------------------------------------------- resize
_NEAREST = {("asymmetric", "auto"): (False, False), ("asymmetric", "floor"): (False, False),
            ("align_corners", "auto"): (True, False),
            ("tf_half_pixel_for_nn", "auto"): (False, True), ("tf_half_pixel_for_nn", "floor"): (False, True)}
_BILINEAR = {"asymmetric": (False, False), "align_corners": (True, False), "half_pixel": (False, True),
             "pytorch_half_pixel": (False, True)}


def resize(L: Lowering, n) -> None:
    x, out = _io(n)
    if len(L.t(x).shape) != 4:
        raise L.reject("TFLite resizes 4-D NHWC tensors only", "reshape the 1-D signal to [N, 1, L, C]")
    size = list(L.t(out).shape[1:3])
    mode = "bilinear" if n.attr("mode", "nearest") in ("bilinear", "linear") else n.attr("mode", "nearest")
    ctm = n.attr("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        flags = _NEAREST.get((ctm, n.attr("nearest_mode", "auto")))
        code, kind = "RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions"
    else:
        flags = _BILINEAR.get(ctm) if not (ctm == "pytorch_half_pixel" and min(size) <= 1) else None
        code, kind = "RESIZE_BILINEAR", "ResizeBilinearOptions"
    if flags is None:
        raise L.reject(f"{mode} Resize with coordinate_transformation_mode={ctm!r}, "
                       f"nearest_mode={n.attr('nearest_mode', 'auto')!r} has no TFLite form",
                       "use asymmetric/align_corners/half_pixel (tf_half_pixel_for_nn for nearest)")
    target, finish = L.same_params_out(x, out)
    L.mb.op(code, [L.tid(x), L.i32("size", size)], [target],
            L.mb.options(kind, alignCorners=flags[0], halfPixelCenters=flags[1]))
    finish()


def unsupported(hint: str):
    def lower(L: Lowering, n) -> None:
        raise L.reject(f"{n.op} has no TFLite builtin in qtc's writer", hint)
    return lower


HANDLERS = {
    "Add": _binary("ADD", "AddOptions"),
    "Sub": _binary("SUB", "SubOptions"),
    "Mul": _binary("MUL", "MulOptions"),
    "Div": div,
    "GlobalAvgPool": global_avg_pool,
    "Mean": _reduce("MEAN"),
    "ReduceSum": _reduce("SUM"),
    "ReduceMax": _reduce("REDUCE_MAX"),
    "Reshape": reshape,
    "Flatten": reshape,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Transpose": transpose,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Pad": pad,
    "Softmax": softmax,
    "Sigmoid": _unary("LOGISTIC"),
    "Tanh": _unary("TANH"),
    "Relu": relu_like,
    "Relu6": relu_like,
    "Clip": relu_like,
    "LeakyRelu": leaky_relu,
    "HardSwish": _unary("HARD_SWISH"),
    "Gelu": gelu,
    "Silu": silu,
    "HardSigmoid": lut_op,
    "MatMul": matmul,
    "Resize": resize,
    "Quantize": _unary("QUANTIZE"),
    "Dequantize": _unary("DEQUANTIZE"),
    "BatchNorm": unsupported("fold it into the preceding conv (qtc's canonicalize pass does)"),
    "LayerNorm": unsupported("keep LayerNorm out of models for TFLite/TFLM (no MCU back end of qtc runs it yet); "
                             "the reference interpreter runs it in float"),
}
