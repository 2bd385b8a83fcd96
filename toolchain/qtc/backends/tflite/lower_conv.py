"""Lowering of the windowed ops: Conv2D / depthwise, Conv1D, FullyConnected,
ConvTranspose2D, MaxPool, AvgPool (all channels-last).

TFLite knows only SAME and VALID padding; other IR pads become an explicit
PAD (the input's zero point, i.e. real 0) before a VALID op, or PADV2 with the
dtype's lowest value before a max pool.  Conv1D and 1-D pools run as their
2-D forms on an [N, 1, L, C] view (EXPAND_DIMS / RESHAPE around them), as TF's
converter emits them.
"""
from __future__ import annotations

import copy

import numpy as np

from ...ir.tensor import QuantParams
from ...ops._util import int_range
from .fb import fused_code
from .lower import SAME, VALID, Lowering, tflite_out, tflite_pads


def _inputs(n):
    return n.inputs[0], n.inputs[1], (n.inputs[2] if len(n.inputs) > 2 else "")


def _named_const(L: Lowering, name: str, data: np.ndarray, quant) -> int:
    """A re-laid-out weight under the IR weight's name (or a fresh one if that is taken)."""
    int4 = quant is not None and quant.bits == 4
    if L.mb.has(name):
        return L.const(name, data, quant, int4=int4)
    L.names.add(name)
    return L.mb.const(name, data, quant, int4=int4)


def _explicit_pad(L: Lowering, x_idx: int, x_name: str, shape4, pads, value=None) -> int:
    """PAD (zero point) or PADV2 (``value``, an integer/float of the input dtype) on H and W."""
    n, h, w, c = shape4
    pt, pl, pb, pr = pads
    if min(pads) < 0:
        raise L.reject(f"negative pads {list(pads)} have no TFLite form", "crop with a Slice node instead")
    out = L.tmp("pad", (n, h + pt + pb, w + pl + pr, c), x_name)
    L.fused(out)
    paddings = L.i32("paddings", [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    if value is None:
        L.mb.op("PAD", [x_idx, paddings], [out])
    else:
        t = L.t(x_name)
        cv = L.const(f"{L.node.name}/pad_value", np.asarray(value, dtype=t.dtype), t.quant)
        L.mb.op("PADV2", [x_idx, paddings, cv], [out])
    return out


def _conv_padding(L: Lowering, x_idx: int, x_name: str, shape4, kernel, strides, dil, pads):
    for p in (VALID, SAME):
        if list(pads) == tflite_pads(shape4[1:3], kernel, strides, dil, p):
            return x_idx, p
    return _explicit_pad(L, x_idx, x_name, shape4, pads), VALID


def _emit_conv(L: Lowering, n, x_idx: int, x_name: str, shape4, w_name: str, b: str,
               strides, dil, pads, groups: int, out_idx: int) -> None:
    """CONV_2D or DEPTHWISE_CONV_2D on NHWC ``x_idx`` with IR weight ``w_name`` (OHWI, or Conv1D's OKI)."""
    w_shape = L.t(w_name).shape
    kernel = w_shape[1:3] if len(w_shape) == 4 else (1, w_shape[1])
    cin, cout = shape4[3], w_shape[0]
    depthwise = groups > 1 and groups == cin
    if groups != 1 and not depthwise:
        raise L.reject(f"grouped convolution (groups={groups}, {cin} input channels) has no TFLite kernel in "
                       "TFLM or LiteRT's reference kernels", "split it into per-group convs, or use the C back end")
    x_idx, padding = _conv_padding(L, x_idx, x_name, shape4, kernel, strides, dil, pads)
    act = fused_code(n.attr("activation"), L.where())
    common = dict(padding=padding, strideH=int(strides[0]), strideW=int(strides[1]), fusedActivationFunction=act,
                  dilationHFactor=int(dil[0]), dilationWFactor=int(dil[1]))
    if depthwise:
        w_idx = _conv_weight(L, w_name, lambda d: _as_ohwi(d).transpose(3, 1, 2, 0), 3)  # [1, KH, KW, C*M]
        code, opts = "DEPTHWISE_CONV_2D", L.mb.options("DepthwiseConv2DOptions", depthMultiplier=cout // cin,
                                                        **common)
    else:
        w_idx = _conv_weight(L, w_name, _as_ohwi, 0)
        code, opts = "CONV_2D", L.mb.options("Conv2DOptions", **common)
    L.mb.op(code, [x_idx, w_idx, _conv_bias(L, b, x_name, w_name, cout)], [out_idx], opts)


def _as_ohwi(w: np.ndarray) -> np.ndarray:
    """Conv1D's [O, K, I] weight as the 2-D [O, 1, K, I]; Conv2D's OHWI unchanged."""
    return w.reshape(w.shape[0], 1, w.shape[1], w.shape[2]) if w.ndim == 3 else w


def _conv_weight(L: Lowering, w_name: str, relayout, axis: int) -> int:
    """The filter tensor in TFLite's layout (quant axis moved to ``axis``).  A dynamic-mode weight
    (Dequantize of an int8 constant) is re-laid-out as int8, then dequantized."""
    src = L.deferred.get(w_name)
    c = L.t(src if src else w_name)
    data = relayout(c.data)
    q = copy.deepcopy(c.quant)
    if q is not None and q.axis is not None:
        q.axis = axis
    if src:
        return L.dequantized(w_name, _named_const(L, src, data, q), data.shape)
    if data.shape == c.shape and (q is None or q.axis == (c.quant.axis if c.quant else None)):
        return L.tid(w_name)
    return _named_const(L, w_name, data, q)


def _conv_bias(L: Lowering, b: str, x_name: str, w_name: str, cout: int) -> int:
    """The bias; a conv without one gets a zero bias (LiteRT's CONV_2D requires a bias tensor)."""
    if b:
        return L.bias(b, x_name, w_name)
    if not L.is_q(x_name):
        idx = L.const(f"{L.node.name}/zero_bias", np.zeros(cout, dtype=np.float32))
        L.note("synthetic", idx)
        return idx
    x = L.t(x_name)
    dtype = "int64" if x.dtype == "int16" else "int32"
    ws = np.resize(L.t(w_name).quant.scale, cout).astype(np.float64)
    scale = (np.float64(np.float32(x.quant.scale[0])) * ws).astype(np.float32)
    q = QuantParams(scale, np.zeros(cout, dtype=np.int64), axis=0 if cout > 1 else None, bits=32)
    idx = L.const(f"{L.node.name}/zero_bias", np.zeros(cout, dtype=dtype), q)
    L.note("synthetic", idx)
    return idx


def _conv_attrs(n, nsp: int):
    strides = [int(s) for s in (n.attr("strides") or [1] * nsp)]
    dil = [int(d) for d in (n.attr("dilations") or [1] * nsp)]
    pads = [int(p) for p in (n.attr("pads") or [0] * (2 * nsp))]
    return strides, dil, pads, int(n.attr("groups", 1))


def conv2d(L: Lowering, n) -> None:
    x, w, b = _inputs(n)
    strides, dil, pads, groups = _conv_attrs(n, 2)
    _emit_conv(L, n, L.tid(x), x, L.t(x).shape, w, b, strides, dil, pads, groups, L.tid(n.outputs[0]))


def conv1d(L: Lowering, n) -> None:
    """EXPAND_DIMS [N, L, C] → [N, 1, L, C], CONV_2D with weight [O, 1, K, I], RESHAPE back."""
    x, w, b = _inputs(n)
    strides, dil, pads, groups = _conv_attrs(n, 1)
    nb, length, c = L.t(x).shape
    out = n.outputs[0]
    x4 = L.tmp("as_4d", (nb, 1, length, c), x)
    L.mb.op("EXPAND_DIMS", [L.tid(x), L.i32("axis", [1])], [x4])
    o_n, o_len, o_c = L.t(out).shape
    y4 = L.tmp("conv_4d", (o_n, 1, o_len, o_c), out)
    L.note("1d", y4)  # a 1-D op's 2-D form, for the importer
    _emit_conv(L, n, x4, x, (nb, 1, length, c), w, b, [1, strides[0]], [1, dil[0]],
               [0, pads[0], 0, pads[1]], groups, y4)
    L.mb.op("RESHAPE", [y4, L.i32("shape", [o_n, o_len, o_c])], [L.tid(out)])


def fully_connected(L: Lowering, n) -> None:
    x, w, b = _inputs(n)
    keep = len(L.t(x).shape) != 2
    opts = L.mb.options("FullyConnectedOptions", fusedActivationFunction=fused_code(n.attr("activation"), L.where()),
                        keepNumDims=keep)
    L.mb.op("FULLY_CONNECTED", [L.tid(x), L.tid(w), L.bias(b, x, w)], [L.tid(n.outputs[0])], opts)


def _transpose_conv_pad(size: int, k: int, s: int, padding: int) -> int:
    """TFLite TRANSPOSE_CONV's top/left pad: a forward conv's padding computed from the output size."""
    out = tflite_out(size, k, s, 1, padding)
    return max(((out - 1) * s + k - size) // 2, 0)


def conv_transpose2d(L: Lowering, n) -> None:
    """TRANSPOSE_CONV; pads other than SAME/VALID's: a VALID TRANSPOSE_CONV to the full size, then SLICE."""
    x, w, b = _inputs(n)
    strides = [int(s) for s in (n.attr("strides") or [1, 1])]
    pads = [int(p) for p in (n.attr("pads") or [0, 0, 0, 0])]
    dil = [int(d) for d in (n.attr("dilations") or [1, 1])]
    if dil != [1, 1]:
        raise L.reject("dilated ConvTranspose2D has no TFLite form", "use dilation 1")
    out = n.outputs[0]
    out_shape = list(L.t(out).shape)
    kh, kw = L.t(w).shape[1:3]
    target, crop = L.tid(out), None
    for padding in (VALID, SAME):
        begins = [_transpose_conv_pad(out_shape[1], kh, strides[0], padding),
                  _transpose_conv_pad(out_shape[2], kw, strides[1], padding)]
        if begins == pads[:2]:
            break
    else:  # the IR output is a window of the uncropped result: compute that, then slice
        padding = VALID
        ih, iw = L.t(x).shape[1:3]
        full = [out_shape[0], max((ih - 1) * strides[0] + kh, pads[0] + out_shape[1]),
                max((iw - 1) * strides[1] + kw, pads[1] + out_shape[2]), out_shape[3]]
        crop, out_shape = target, full
        target = L.tmp("uncropped", full, out)
        L.fused(target)
    opts = L.mb.options("TransposeConvOptions", padding=padding, strideH=strides[0], strideW=strides[1],
                        fusedActivationFunction=fused_code(n.attr("activation"), L.where()))
    ins = [L.i32("output_shape", out_shape), L.tid(w), L.tid(x)]
    if b:
        ins.append(L.bias(b, x, w))
    L.mb.op("TRANSPOSE_CONV", ins, [target], opts)
    if crop is not None:
        size = list(L.t(out).shape)
        L.mb.op("SLICE", [target, L.i32("begin", [0, pads[0], pads[1], 0]), L.i32("size", size)], [crop])


# ------------------------------------------------------------------------ pools
def _pool(code: str):
    def lower(L: Lowering, n) -> None:
        x, out = n.inputs[0], n.outputs[0]
        shape, out_shape = L.t(x).shape, L.t(out).shape
        kernel = [int(k) for k in n.attr("kernel")]
        strides = [int(s) for s in (n.attr("strides") or kernel)]
        pads = [int(p) for p in (n.attr("pads") or [0] * (2 * len(kernel)))]
        x_idx = L.tid(x)
        if len(shape) == 3:  # 1-D pool on [N, L, C] → 2-D on [N, 1, L, C]
            kernel, strides, pads = [1, kernel[0]], [1, strides[0]], [0, pads[0], 0, pads[1]]
            shape = (shape[0], 1, shape[1], shape[2])
            out_shape = (out_shape[0], 1, out_shape[1], out_shape[2])
            x_idx = L.reshape(x_idx, shape, x, "as_4d")
        include_pad = bool(n.attr("count_include_pad", False)) and any(pads)
        x_idx, padding = _pool_padding(L, n, code, x, x_idx, shape, out_shape, kernel, strides, pads, include_pad)
        act = fused_code(n.attr("activation"), L.where())
        target, finish = L.same_params_out(x, out)
        if act and L.requantizes(x, out):
            raise L.reject("a pool with a fused activation and different input/output params has no exact "
                           "TFLite form", "give the pool's output its input's params (as the quantizer does)")
        if len(L.t(x).shape) == 3:
            y4 = L.tmp("pool_4d", out_shape, x)
            L.note("1d", y4)
            _emit_pool(L, code, x_idx, y4, kernel, strides, padding, act)
            L.mb.op("RESHAPE", [y4, L.i32("shape", list(L.t(out).shape))], [target])
        else:
            _emit_pool(L, code, x_idx, target, kernel, strides, padding, act)
        finish()
    return lower


def _emit_pool(L, code, x_idx, out_idx, kernel, strides, padding, act) -> None:
    opts = L.mb.options("Pool2DOptions", padding=padding, strideH=strides[0], strideW=strides[1],
                        filterHeight=kernel[0], filterWidth=kernel[1], fusedActivationFunction=act)
    L.mb.op(code, [x_idx], [out_idx], opts)


def _pool_padding(L, n, code, x, x_idx, shape, out_shape, kernel, strides, pads, include_pad):
    in_hw, out_hw = list(shape[1:3]), list(out_shape[1:3])
    for p in (VALID, SAME):
        tp = tflite_pads(in_hw, kernel, strides, (1, 1), p)
        outs = [tflite_out(in_hw[i], kernel[i], strides[i], 1, p) for i in range(2)]
        if outs == out_hw and tp[:2] == pads[:2] and not (include_pad and any(tp)):
            return x_idx, p
    # explicit padding, then VALID; ceil_mode's last window may need extra end padding
    extra = [max((out_hw[i] - 1) * strides[i] + kernel[i] - (in_hw[i] + pads[i] + pads[i + 2]), 0) for i in range(2)]
    full = [pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1]]
    if code == "MAX_POOL_2D":
        lowest = int_range(L.t(x).dtype)[0] if L.is_q(x) else float(np.finfo(np.float32).min)
        return _explicit_pad(L, x_idx, x, shape, full, value=lowest), VALID
    if include_pad and not any(extra):
        return _explicit_pad(L, x_idx, x, shape, full), VALID
    raise L.reject(f"AvgPool pads {pads} (count_include_pad={bool(n.attr('count_include_pad', False))}) have no "
                   "TFLite form", "use SAME/VALID padding, or count_include_pad=True without ceil_mode")


HANDLERS = {
    "Conv2D": conv2d,
    "Conv1D": conv1d,
    "FullyConnected": fully_connected,
    "ConvTranspose2D": conv_transpose2d,
    "MaxPool": _pool("MAX_POOL_2D"),
    "AvgPool": _pool("AVERAGE_POOL_2D"),
}
