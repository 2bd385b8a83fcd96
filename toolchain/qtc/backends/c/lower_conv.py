"""Conv1D / Conv2D (general, 1x1, depthwise, depthwise 3x3) and FullyConnected → C.

Compile-time work (so the kernels' inner loops stay tight):
* per-channel multiplier/shift from input_scale * w_scale[c] / output_scale
  (TFLite QuantizeMultiplier, via the interpreter's numerics);
* the input zero point folded into the bias: bias[c] - zp_in * sum(w[c]);
* the fused activation folded into the int8 clamp range.
"""
from __future__ import annotations

import numpy as np

from .lowering import Lowered, NodeCtx, lowers

INT32 = (-(1 << 31), (1 << 31) - 1)


def _weights(c: NodeCtx):
    x, w, b = c.tin(0), c.tin(1), c.tin(2)
    if w is None or not w.is_const or (b is not None and not b.is_const):
        raise c.error("weights and bias must be constants", hint="fold the weight computation before compiling")
    if x.dtype != "int8" or w.dtype != "int8" or w.quant is None:
        raise c.error(f"needs int8 input and int8 weights (got {x.dtype} / {w.dtype})")
    if b is not None and b.dtype not in ("int32", "int64"):
        raise c.error(f"bias dtype {b.dtype} is not int32")
    o = w.shape[0]
    wi = w.data.astype(np.int64)
    bias = b.data.astype(np.int64).reshape(-1) if b is not None else np.zeros(o, np.int64)
    return wi, bias


def pack4(w2d: np.ndarray) -> np.ndarray:
    """[O][K] → the kernels' packed layout: blocks of 4 output channels interleaved per
    element (w[4b*K + 4k + j]), the last O % 4 rows left as plain rows."""
    o, k = w2d.shape
    o4 = o - o % 4
    blocks = w2d[:o4].reshape(o4 // 4, 4, k).transpose(0, 2, 1).reshape(-1)
    return np.concatenate([blocks, w2d[o4:].reshape(-1)])


def _requant(c: NodeCtx, n_out: int):
    in_s, in_zp = c.per_tensor(c.q_in(0), "the input")
    out_s, out_zp = c.per_tensor(c.q_out(), "the output")
    eff = c.num.effective_scale(in_s, c.q_in(1).scale, out_s)
    mult, shift = c.multipliers(eff, n_out)
    return in_zp, out_zp, mult, shift


def _folded_bias(c: NodeCtx, bias: np.ndarray, wi: np.ndarray, in_zp: int) -> np.ndarray:
    folded = bias - in_zp * wi.reshape(wi.shape[0], -1).sum(axis=1)
    if folded.min() < INT32[0] or folded.max() > INT32[1]:
        raise c.error("bias folded with the input zero point overflows int32")
    return folded


@lowers("Conv2D", "Conv1D")
def lower_conv(c: NodeCtx) -> Lowered:
    c.channels_last()
    wi, bias = _weights(c)
    x, y = c.tin(0), c.tout()
    groups = int(c.attr("groups"))
    if c.node.op == "Conv1D":
        n, in_w, in_c = x.shape
        _, out_w, out_c = y.shape
        in_h = out_h = k_h = 1
        k_w = wi.shape[1]
        sw, = tuple(c.attr("strides") or (1,))
        dw, = tuple(c.attr("dilations") or (1,))
        pads = list(c.attr("pads") or [0, 0])
        sh, dh, pad_top, pad_left = 1, 1, 0, int(pads[0])
    else:
        n, in_h, in_w, in_c = x.shape
        _, out_h, out_w, out_c = y.shape
        k_h, k_w = wi.shape[1], wi.shape[2]
        sh, sw = tuple(c.attr("strides") or (1, 1))
        dh, dw = tuple(c.attr("dilations") or (1, 1))
        pads = list(c.attr("pads") or [0, 0, 0, 0])
        pad_top, pad_left = int(pads[0]), int(pads[1])
    in_zp, out_zp, mult, shift = _requant(c, out_c)
    lo, hi = c.out_range(c.attr("activation"))
    depthwise = groups > 1 and groups == in_c and wi.shape[-1] == 1
    params = dict(batch=n, in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w, out_c=out_c,
                  k_h=k_h, k_w=k_w, stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw,
                  pad_top=pad_top, pad_left=pad_left, groups=groups, in_zp=in_zp, out_zp=out_zp,
                  act_min=lo, act_max=hi)
    if depthwise:
        kernel = "qtc_depthwise_conv3x3_s8" if (k_h, k_w) == (3, 3) and out_c == in_c else "qtc_depthwise_conv_s8"
        wflat = wi.reshape(out_c, k_h * k_w)
    elif groups == 1 and (k_h, k_w) == (1, 1) and not any(pads):
        kernel, wflat = "qtc_conv1x1_s8", wi.reshape(out_c, -1)
    else:
        kernel, wflat = "qtc_conv_s8", wi.reshape(out_c, -1)

    esp = _esp_nn_conv_ok(c, depthwise, groups, dh, dw)
    folded = _folded_bias(c, bias, wi, in_zp)
    packed = groups == 1 and not depthwise
    layout = "packed by 4 output channels" if packed else "per output channel"
    wname = c.array("w", "int8_t", pack4(wflat) if packed else wflat,
                    f"{c.node.name} weights {list(wi.shape)}, {layout}", guard="!QTC_USE_ESP_NN" if esp else None)
    if esp and not depthwise:  # ESP-NN reads plain OHWI weights
        esp_w = c.array("w_ohwi", "int8_t", wflat, "weights OHWI for ESP-NN", guard="QTC_USE_ESP_NN")
    else:
        esp_w = wname
    if kernel == "qtc_conv1x1_s8":  # no padding: the folded bias alone
        bname = c.array("b", "int32_t", folded, "bias - zp_in * sum(w)", guard="!QTC_USE_ESP_NN" if esp else None)
        raw = c.array("b_raw", "int32_t", bias, "raw bias (ESP-NN adds in_offset itself)",
                      guard="QTC_USE_ESP_NN") if esp else None
    else:  # interior pixels use the folded half, border pixels the raw half
        bname = c.array("b", "int32_t", np.concatenate([folded, bias]), "bias - zp_in * sum(w), then raw bias")
        raw = f"{bname} + {out_c}"
    mname = c.array("m", "int32_t", mult, "requant multipliers")
    sname = c.array("s", "int32_t", shift, "requant shifts")
    pname = c.struct("p", "qtc_conv_params_t", params, guard="!QTC_USE_ESP_NN" if esp else None)
    code = [f"{kernel}(&{pname}, $X0, {wname}, {bname}, {mname}, {sname}, $Y0);"]
    if not esp:
        return Lowered(code)
    from .esp_nn import esp_nn_conv

    return Lowered(code, esp_nn_conv(c, params, depthwise, wi, raw, esp_w, mname, sname), needs_esp_nn_scratch=True)


def _esp_nn_conv_ok(c: NodeCtx, depthwise: bool, groups: int, dh: int, dw: int) -> bool:
    """ESP-NN's conv/depthwise take dilation 1 and groups 1 (or depthwise), as TFLM's esp_nn/conv.cc."""
    return c.esp_nn and dh == 1 and dw == 1 and (depthwise or groups == 1)


@lowers("FullyConnected")
def lower_fc(c: NodeCtx) -> Lowered:
    wi, bias = _weights(c)
    x, y = c.tin(0), c.tout()
    in_f, out_f = wi.shape[1], wi.shape[0]
    rows = int(np.prod(x.shape[:-1])) if len(x.shape) > 1 else 1
    in_zp, out_zp, mult, shift = _requant(c, out_f)
    lo, hi = c.out_range(c.attr("activation"))
    esp = c.esp_nn and in_f < (1 << 16) and out_f < (1 << 16)
    wname = c.array("w", "int8_t", pack4(wi), f"{c.node.name} weights {list(wi.shape)}, packed by 4 outputs",
                    guard="!QTC_USE_ESP_NN" if esp else None)
    esp_w = c.array("w_plain", "int8_t", wi, "weights [out][in] for ESP-NN", guard="QTC_USE_ESP_NN") if esp else None
    bname = c.array("b", "int32_t", _folded_bias(c, bias, wi, in_zp), "bias - zp_in * sum(w)",
                    guard="!QTC_USE_ESP_NN" if esp else None)
    mname = c.array("m", "int32_t", mult, "requant multipliers")
    sname = c.array("s", "int32_t", shift, "requant shifts")
    pname = c.struct("p", "qtc_fc_params_t", dict(rows=rows, in_features=in_f, out_features=out_f,
                                                  out_zp=out_zp, act_min=lo, act_max=hi),
                     guard="!QTC_USE_ESP_NN" if esp else None)
    code = [f"qtc_fully_connected_s8(&{pname}, $X0, {wname}, {bname}, {mname}, {sname}, $Y0);"]
    if not esp:
        return Lowered(code)
    from .esp_nn import esp_nn_fc

    return Lowered(code, esp_nn_fc(c, rows, in_f, out_f, in_zp, out_zp, lo, hi, bias, esp_w, mname, sname))
