"""Conv1D / Conv2D (general, 1x1, depthwise, depthwise 3x3) and FullyConnected → C.

Compile-time work (so the kernels' inner loops stay tight):
* per-channel multiplier/shift from input_scale * w_scale[c] / output_scale
  (TFLite QuantizeMultiplier, via the interpreter's numerics), turned into the
  kernels' requantization records (``qtc_rq_t``) and a per-layer mode: one fitted
  high multiply (``requant_fit``) where it is provably exact, else the merged fast
  form where that is, else TFLite's two steps;
* the input zero point folded into the bias: bias[c] - zp_in * sum(w[c]);
* the fused activation folded into the int8 clamp range;
* the padded row width of the scratch band when any window crosses the padding.
"""
from __future__ import annotations

import numpy as np

from .lowering import Lowered, NodeCtx, lowers
from .requant_fit import MulhFit, fit_mulh

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
    element (w[4b*K + 4k + j]); the last O % 4 channels form one block of that width,
    interleaved the same way."""
    o, k = w2d.shape
    o4 = o - o % 4
    blocks = w2d[:o4].reshape(o4 // 4, 4, k).transpose(0, 2, 1).reshape(-1)
    return np.concatenate([blocks, w2d[o4:].T.reshape(-1)])


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


# requantization modes of qtc_kernels_conv.h
RQ_EXACT, RQ_FAST, RQ_FAST_NONNEG, RQ_MULH = 0, 1, 2, 3


def rq_code(mode: int, lsh: int = 0, rsh: int = 0) -> int:
    """A layer's rq code (QTC_RQ_MODE / QTC_RQ_LSH / QTC_RQ_RSH in qtc_kernels_conv.h)."""
    assert 0 <= mode < 16 and 0 <= lsh < 32 and 0 <= rsh < 32
    return mode | lsh << 4 | rsh << 9


def choose_requant(c: NodeCtx, folded: np.ndarray, wi: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                   out_zp: int, act_min: int, act_max: int) -> tuple[np.ndarray, int, str, MulhFit | None]:
    """Records, rq code and a comment for a conv/FC layer: ``QTC_RQ_MULH`` when it fits
    (requant_fit), else :func:`requant_records`'s mode."""
    fit = fit_mulh(c.num, folded, wi, mult, shift, out_zp, act_min, act_max)
    if fit is not None:
        zeros = np.zeros_like(fit.bias)
        records = np.stack([fit.bias, fit.mult, zeros, zeros], axis=1)
        return (records, rq_code(RQ_MULH, fit.lsh, fit.rsh),
                f"{{B = (bias - zp_in * sum(w)) * 2^{fit.lsh} + a, m, -, -}} per output, QTC_RQ_MULH "
                f"(L = {fit.lsh}, s = {fit.rsh})", fit)
    records, mode = requant_records(folded, wi, mult, shift, out_zp, act_min)
    return records, rq_code(mode), f"{{bias - zp_in * sum(w), mult, add, shift}} per output, {RQ_NAMES[mode]}", None


def requant_records(folded: np.ndarray, wi: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                    out_zp: int, act_min: int) -> tuple[np.ndarray, int]:
    """Per output channel ``{bias, mult, add, shift}`` (``qtc_rq_t``) and the layer's mode.

    The merged fast form (see qtc_kernels_conv.h) needs a right shift r >= 1 on every
    channel and no int32 overflow in ``hi + (lo >> 31) + add - 1``: checked here against
    the largest |acc| any int8 input can give, |bias| + 128 * sum|w|."""
    n = folded.size
    w_abs = np.abs(wi.reshape(n, -1)).sum(axis=1)
    acc_max = np.abs(folded) + 128 * w_abs
    fast = bool(np.all((shift <= -1) | (mult == 0)) and np.all(mult >= 0) and acc_max.max() < (1 << 31))
    if fast:
        r = np.where(mult == 0, 1, -shift).astype(np.int64)
        mu = 2 * mult.astype(np.int64)
        add = (1 << (r - 1)) + out_zp * (1 << r)
        s1_max = (acc_max * mu >> 32) + 1
        fast = bool(np.all(s1_max + np.abs(add) + 1 < (1 << 31)))
    if not fast:
        return np.stack([folded, mult, np.full(n, out_zp), shift], axis=1).astype(np.int64), RQ_EXACT
    mu_bits = np.where(mu >= (1 << 31), mu - (1 << 32), mu)  # the uint32 2M as int32 bits
    mode = RQ_FAST_NONNEG if act_min >= out_zp else RQ_FAST
    return np.stack([folded, mu_bits, add, r], axis=1).astype(np.int64), mode


def _band_width(in_w: int, out_w: int, k_w: int, stride: int, dil: int, pad_left: int) -> int:
    """Padded row width the windows of one output row span (>= in_w + pad_left)."""
    return max(in_w + pad_left, (out_w - 1) * stride + (k_w - 1) * dil + 1)


WS_MAX_K, WS_MAX_SPAN = 12, 64  # QTC_WS_MAX_K and the unroll limit of qtc_conv_ws
FC_SMALL_K = 8                  # QTC_FC_SMALL_K: the row of a small fully connected layer stays in registers


def _weight_stationary(k_h: int, k_w: int, in_c: int, out_w: int, sw: int, dw: int) -> bool:
    """Few taps per window: qtc_conv_ws keeps one channel's weights in registers."""
    span = 3 * sw * in_c + (k_w - 1) * dw * in_c + in_c  # QTC_WS_SPAN
    return k_h * k_w * in_c <= WS_MAX_K and span <= WS_MAX_SPAN and out_w >= 4


def _needs_padding(in_h, in_w, out_h, out_w, k_h, k_w, sh, sw, dh, dw, pad_top, pad_left) -> bool:
    span_h = (out_h - 1) * sh + (k_h - 1) * dh + 1
    span_w = (out_w - 1) * sw + (k_w - 1) * dw + 1
    return pad_top > 0 or pad_left > 0 or span_h - pad_top > in_h or span_w - pad_left > in_w


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
    padded = _needs_padding(in_h, in_w, out_h, out_w, k_h, k_w, sh, sw, dh, dw, pad_top, pad_left)
    band_w = _band_width(in_w, out_w, k_w, sw, dw, pad_left) if padded else 0
    ws = int(groups == 1 and _weight_stationary(k_h, k_w, in_c, out_w, sw, dw))
    rows = (out_h - 1) * sh + (k_h - 1) * dh + 1 if ws else k_h  # padded rows the scratch holds
    scratch = rows * band_w * in_c
    folded = _folded_bias(c, bias, wi, in_zp)
    records, rq, rq_text, _ = choose_requant(c, folded, wi, mult, shift, out_zp, lo, hi)
    params = dict(batch=n, in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w, out_c=out_c,
                  k_h=k_h, k_w=k_w, stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw,
                  pad_top=pad_top, pad_left=pad_left, groups=groups, in_zp=in_zp, out_zp=out_zp,
                  act_min=lo, act_max=hi, band_w=band_w, ws=ws, rq=rq)
    if depthwise:
        kernel = "qtc_depthwise_conv3x3_s8" if (k_h, k_w) == (3, 3) and out_c == in_c else "qtc_depthwise_conv_s8"
        wflat = wi.reshape(out_c, k_h * k_w)
    elif groups == 1 and (k_h, k_w) == (1, 1) and not padded:
        kernel, wflat = "qtc_conv1x1_s8", wi.reshape(out_c, -1)
    else:
        kernel, wflat = "qtc_conv_s8", wi.reshape(out_c, -1)

    esp = _esp_nn_conv_ok(c, depthwise, groups, dh, dw)
    qtc_only = "!QTC_USE_ESP_NN" if esp else None
    packed = groups == 1 and not depthwise
    layout = "packed by 4 output channels" if packed else "per output channel"
    wname = c.array("w", "int8_t", pack4(wflat) if packed else wflat,
                    f"{c.node.name} weights {list(wi.shape)}, {layout}", guard=qtc_only)
    qname = c.array("q", "qtc_rq_t", records, rq_text, guard=qtc_only)
    pname = c.struct("p", "qtc_conv_params_t", params, guard=qtc_only)
    args = f"&{pname}, $X0, {wname}, {qname}"
    if kernel == "qtc_conv1x1_s8":
        code = [f"{kernel}({args}, $Y0);"]
    else:
        code = [f"{kernel}({args}, {'$S' if scratch else 'NULL'}, $Y0);"]
    if not esp:
        return Lowered(code, scratch=scratch)
    from .esp_nn import esp_nn_conv

    esp_w = wname if depthwise else c.array("w_ohwi", "int8_t", wflat, "weights OHWI for ESP-NN",
                                            guard="QTC_USE_ESP_NN")
    raw = c.array("b_raw", "int32_t", bias, "raw bias (ESP-NN adds in_offset itself)", guard="QTC_USE_ESP_NN")
    mname = c.array("m", "int32_t", mult, "requant multipliers (TFLite)", guard="QTC_USE_ESP_NN")
    sname = c.array("s", "int32_t", shift, "requant shifts (TFLite)", guard="QTC_USE_ESP_NN")
    return Lowered(code, esp_nn_conv(c, params, depthwise, wi, raw, esp_w, mname, sname),
                   needs_esp_nn_scratch=True, scratch=scratch)


RQ_NAMES = {RQ_EXACT: "QTC_RQ_EXACT", RQ_FAST: "QTC_RQ_FAST", RQ_FAST_NONNEG: "QTC_RQ_FAST_NONNEG"}


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
    qtc_only = "!QTC_USE_ESP_NN" if esp else None
    records, rq, rq_text, fit = choose_requant(c, _folded_bias(c, bias, wi, in_zp), wi, mult, shift, out_zp,
                                               lo, hi)
    fields = dict(rows=rows, in_features=in_f, out_features=out_f, out_zp=out_zp, act_min=lo, act_max=hi)
    if fit is not None and in_f <= FC_SMALL_K:
        # one table {B, m, w * 2^L} per output; the weights carry the 2^L, so the rq code has L = 0
        table = np.concatenate([fit.bias[:, None], fit.mult[:, None], wi << fit.lsh], axis=1)
        tname = c.array("t", "int32_t", table, f"{c.node.name}: {{B, m, w[0..{in_f - 1}] * 2^{fit.lsh}}} per output, "
                        f"QTC_RQ_MULH (s = {fit.rsh})", guard=qtc_only)
        pname = c.struct("p", "qtc_fc_params_t", dict(fields, rq=rq_code(RQ_MULH, 0, fit.rsh)), guard=qtc_only)
        code = [f"qtc_fc_table_s8(&{pname}, $X0, {tname}, $Y0);"]
    else:
        wname = c.array("w", "int8_t", pack4(wi), f"{c.node.name} weights {list(wi.shape)}, packed by 4 outputs",
                        guard=qtc_only)
        qname = c.array("q", "qtc_rq_t", records, rq_text, guard=qtc_only)
        pname = c.struct("p", "qtc_fc_params_t", dict(fields, rq=rq), guard=qtc_only)
        code = [f"qtc_fully_connected_s8(&{pname}, $X0, {wname}, {qname}, $Y0);"]
    if not esp:
        return Lowered(code)
    from .esp_nn import esp_nn_fc

    esp_w = c.array("w_plain", "int8_t", wi, "weights [out][in] for ESP-NN", guard="QTC_USE_ESP_NN")
    mname = c.array("m", "int32_t", mult, "requant multipliers (TFLite)", guard="QTC_USE_ESP_NN")
    sname = c.array("s", "int32_t", shift, "requant shifts (TFLite)", guard="QTC_USE_ESP_NN")
    return Lowered(code, esp_nn_fc(c, rows, in_f, out_f, in_zp, out_zp, lo, hi, bias, esp_w, mname, sname))
