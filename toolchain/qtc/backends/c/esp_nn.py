"""ESP-NN calls for the generated C (``--esp-nn``), compiled under ``#ifdef QTC_USE_ESP_NN``.

ESP-NN (espressif/esp-nn, ``esp_nn.h``) implements TFLM's int8 arithmetic bit
for bit while NN_SKIP_NUDGE stays off, with the TFLite calling conventions:
raw (unfolded) bias plus ``in_offset = -zp_in``, padded taps skipped, per-
channel ``quant_data_t{shift, mult}``, depthwise filters ``[KH][KW][C]``.
The calls mirror TFLM's ``kernels/esp_nn/*.cc``: batch by batch, dilation 1,
scratch buffers set before each conv.  Each returns the same bytes as the
qtc kernel in the ``#else`` branch.
"""
from __future__ import annotations

import numpy as np

from .lowering import NodeCtx

NONCONST = "(int32_t *)"  # quant_data_t holds non-const pointers; ESP-NN only reads them


def esp_nn_conv(c: NodeCtx, p: dict, depthwise: bool, wi: np.ndarray, braw: str,
                wname: str, mname: str, sname: str) -> list[str]:
    """``braw``: a C expression for the raw (unfolded) int32 bias."""
    if depthwise:
        # IR [O, KH, KW, 1] -> TFLite depthwise [1, KH, KW, O]
        whwc = wi.reshape(p["out_c"], p["k_h"] * p["k_w"]).T.copy()
        wname = c.array("w_hwc", "int8_t", whwc, "depthwise weights [KH][KW][C] for ESP-NN", guard="QTC_USE_ESP_NN")
    in_size = p["in_h"] * p["in_w"] * p["in_c"]
    out_size = p["out_h"] * p["out_w"] * p["out_c"]
    lines = [
        "{",
        f"    const data_dims_t in_d = {{{p['in_w']}, {p['in_h']}, {p['in_c']}, 1}};",
        f"    const data_dims_t f_d = {{{p['k_w']}, {p['k_h']}, 0, 0}};",
        f"    const data_dims_t out_d = {{{p['out_w']}, {p['out_h']}, {p['out_c']}, 1}};",
    ]
    common = (f"{{{p['stride_w']}, {p['stride_h']}}}, {{{p['pad_left']}, {p['pad_top']}}}, {{0, 0}}, "
              f"{{{p['act_min']}, {p['act_max']}}}")
    if depthwise:
        kind, ptype = "depthwise_conv", "dw_conv_params_t"
        cp = f"{{{-p['in_zp']}, {p['out_zp']}, {p['out_c'] // p['in_c']}, {common}}}"
    else:
        kind, ptype = "conv", "conv_params_t"
        cp = f"{{{-p['in_zp']}, {p['out_zp']}, {common}}}"
    lines += [
        f"    const {ptype} cp = {cp};",
        f"    const quant_data_t qd = {{{NONCONST}{sname}, {NONCONST}{mname}}};",
        f"    if (esp_nn_get_{kind}_scratch_size(&in_d, &f_d, &out_d, &cp) > QTC_ESP_NN_SCRATCH_BYTES) {{",
        "        return QTC_ERR_SCRATCH;",
        "    }",
        f"    esp_nn_set_{kind}_scratch_buf(qtc_esp_nn_scratch);",
    ]
    call = f"esp_nn_{kind}_s8(&in_d, $X0 + {{b}}, &f_d, {wname}, {braw}, &out_d, $Y0 + {{o}}, &cp, &qd);"
    if p["batch"] == 1:
        lines.append("    " + call.format(b=0, o=0).replace(" + 0,", ","))
    else:
        lines.append(f"    int32_t i;")
        lines.append(f"    for (i = 0; i < {p['batch']}; ++i) {{")
        lines.append("        " + call.format(b=f"i * {in_size}", o=f"i * {out_size}"))
        lines.append("    }")
    lines.append("}")
    return lines


def esp_nn_fc(c: NodeCtx, rows: int, in_f: int, out_f: int, in_zp: int, out_zp: int, lo: int, hi: int,
              bias: np.ndarray, wname: str, mname: str, sname: str) -> list[str]:
    braw = c.array("b_raw", "int32_t", bias, "raw bias (ESP-NN adds in_offset itself)", guard="QTC_USE_ESP_NN")
    call = (f"esp_nn_fully_connected_per_ch_s8($X0 + {{r}}, {-in_zp}, {in_f}, {wname}, 0, {braw}, $Y0 + {{o}}, "
            f"{out_f}, {out_zp}, {sname}, {mname}, {lo}, {hi});")
    if rows == 1:
        return [call.format(r=0, o=0).replace(" + 0,", ",")]
    return ["{", "    int32_t r;", f"    for (r = 0; r < {rows}; ++r) {{",
            "        " + call.format(r=f"r * {in_f}", o=f"r * {out_f}"), "    }", "}"]


def esp_nn_add(a_zp: int, b_zp: int, m1: int, m2: int, s1: int, s2: int, left_shift: int,
               out_zp: int, mo: int, so: int, lo: int, hi: int, size: int) -> list[str]:
    return [f"esp_nn_add_elementwise_s8($X0, $X1, {-a_zp}, {-b_zp}, {m1}, {m2}, {s1}, {s2}, {left_shift}, "
            f"$Y0, {out_zp}, {mo}, {so}, {lo}, {hi}, {size});"]


def esp_nn_mul(a_zp: int, b_zp: int, out_zp: int, m: int, s: int, lo: int, hi: int, size: int) -> list[str]:
    return [f"esp_nn_mul_elementwise_s8($X0, $X1, {-a_zp}, {-b_zp}, $Y0, {out_zp}, {m}, {s}, {lo}, {hi}, {size});"]


def esp_nn_pool(kind: str, p: dict) -> list[str]:
    """kind: max | avg.  ESP-NN pools take begin padding only and one batch."""
    return [f"esp_nn_{kind}_pool_s8($X0, {p['in_w']}, {p['in_h']}, $Y0, {p['out_w']}, {p['out_h']}, "
            f"{p['stride_w']}, {p['stride_h']}, {p['k_w']}, {p['k_h']}, {p['pad_left']}, {p['pad_top']}, "
            f"{p['act_min']}, {p['act_max']}, {p['channels']});"]
