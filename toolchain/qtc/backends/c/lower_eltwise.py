"""Add / Sub / Mul (broadcasting) and every int8 → int8 elementwise op → C.

Unary ops (Relu, Relu6, Clip, LeakyRelu, HardSwish, HardSigmoid, Sigmoid,
Tanh, Gelu, Silu, int8→int8 Quantize) become a 256-entry table: the op's own
integer semantics from the reference interpreter evaluated once per int8
input value at compile time.  The kernel is then one load per element and
exact by construction.  A Relu/Relu6/Clip whose input and output share quant
params is a plain clamp instead (no table).
"""
from __future__ import annotations

import numpy as np

from ...ir.tensor import Tensor
from ...ops.registry import IntContext, get_op
from .lowering import Lowered, NodeCtx, lowers


def collapse_broadcast(out_shape, a_shape, b_shape, max_dims: int = 4):
    """Out shape + element strides of a and b (0 = broadcast), merged to <= max_dims dims."""
    r = len(out_shape)
    dims = []
    for shp in (a_shape, b_shape):
        full = (1,) * (r - len(shp)) + tuple(shp)
        strides, acc = [0] * r, 1
        for i in range(r - 1, -1, -1):
            strides[i] = acc if full[i] != 1 else 0
            acc *= full[i]
        dims.append(strides)
    shape = list(out_shape)
    sa, sb = dims
    # drop size-1 dims, then merge neighbours that are contiguous for both operands
    keep = [i for i in range(r) if shape[i] != 1]
    shape, sa, sb = [shape[i] for i in keep], [sa[i] for i in keep], [sb[i] for i in keep]
    i = len(shape) - 2
    while i >= 0:
        if sa[i] == sa[i + 1] * shape[i + 1] and sb[i] == sb[i + 1] * shape[i + 1]:
            shape[i] *= shape[i + 1]
            sa[i], sb[i] = sa[i + 1], sb[i + 1]
            del shape[i + 1], sa[i + 1], sb[i + 1]
        i -= 1
    if len(shape) > max_dims:
        return None
    pad = max_dims - len(shape)
    return [1] * pad + shape, [0] * pad + sa, [0] * pad + sb


def _binary_common(c: NodeCtx):
    a, b, y = c.tin(0), c.tin(1), c.tout()
    for t in (a, b):
        if t.dtype != "int8":
            raise c.error(f"input {t.name!r} is {t.dtype}, the C kernels take int8")
    geo = collapse_broadcast(y.shape, a.shape, b.shape)
    if geo is None:
        raise c.error("broadcast pattern needs more than 4 dimensions")
    a_s, a_zp = c.per_tensor(c.q_in(0), "input 0")
    b_s, b_zp = c.per_tensor(c.q_in(1), "input 1")
    o_s, o_zp = c.per_tensor(c.q_out(), "the output")
    lo, hi = c.out_range(c.attr("activation"))
    inplace = [(i, 0) for i, t in enumerate((a, b)) if t.shape == y.shape and not t.is_const]
    return geo, (a_s, a_zp), (b_s, b_zp), (o_s, o_zp), lo, hi, inplace


@lowers("Add", "Sub")
def lower_add_sub(c: NodeCtx) -> Lowered:
    (shape, sa, sb), (a_s, a_zp), (b_s, b_zp), (o_s, o_zp), lo, hi, inplace = _binary_common(c)
    op = get_op(c.node.op)
    left_shift = 20
    m1, m2, mo = op.multipliers(np.float32(a_s), np.float32(b_s), np.float32(o_s), left_shift)
    (M1, S1), (M2, S2), (Mo, So) = (c.num.quantize_multiplier_smaller_than_one_exp(m) for m in (m1, m2, mo))
    esp = c.esp_nn and c.node.op == "Add" and c.tin(0).shape == c.tin(1).shape == c.tout().shape
    p = c.struct("p", "qtc_add_params_t", {
        "shape": shape, "a_stride": sa, "b_stride": sb, "a_zp": a_zp, "b_zp": b_zp, "a_mult": M1, "a_shift": S1,
        "b_mult": M2, "b_shift": S2, "left_shift": left_shift, "out_mult": Mo, "out_shift": So,
        "out_zp": o_zp, "act_min": lo, "act_max": hi}, guard="!QTC_USE_ESP_NN" if esp else None)
    kernel = "qtc_add_s8" if c.node.op == "Add" else "qtc_sub_s8"
    code = [f"{kernel}(&{p}, $X0, $X1, $Y0);"]
    esp_code = None
    if esp:
        from .esp_nn import esp_nn_add

        esp_code = esp_nn_add(a_zp, b_zp, int(M1), int(M2), int(S1), int(S2), left_shift, o_zp, int(Mo), int(So),
                              lo, hi, int(np.prod(c.tout().shape)))
    return Lowered(code, esp_code, inplace=inplace)


@lowers("Mul")
def lower_mul(c: NodeCtx) -> Lowered:
    (shape, sa, sb), (a_s, a_zp), (b_s, b_zp), (o_s, o_zp), lo, hi, inplace = _binary_common(c)
    real = float(np.float32(a_s)) * float(np.float32(b_s)) / float(np.float32(o_s))
    m, s = c.num.quantize_multiplier(real)
    esp = c.esp_nn and c.tin(0).shape == c.tin(1).shape == c.tout().shape
    p = c.struct("p", "qtc_mul_params_t", {
        "shape": shape, "a_stride": sa, "b_stride": sb, "a_zp": a_zp, "b_zp": b_zp, "out_mult": m, "out_shift": s,
        "out_zp": o_zp, "act_min": lo, "act_max": hi}, guard="!QTC_USE_ESP_NN" if esp else None)
    esp_code = None
    if esp:
        from .esp_nn import esp_nn_mul

        esp_code = esp_nn_mul(a_zp, b_zp, o_zp, int(m), int(s), lo, hi, int(np.prod(c.tout().shape)))
    return Lowered([f"qtc_mul_s8(&{p}, $X0, $X1, $Y0);"], esp_code, inplace=inplace)


UNARY_LUT_OPS = ("Relu", "Relu6", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh",
                 "Gelu", "Silu", "Quantize")


def unary_table(c: NodeCtx) -> np.ndarray:
    """The op's reference integer semantics on every int8 value, in order -128..127."""
    node, g = c.node, c.g
    x = c.tin(0)
    probe_in = Tensor(x.name, (256,), x.dtype, quant=x.quant)
    probe_out = Tensor(c.tout().name, (256,), c.tout().dtype, quant=c.tout().quant)
    ctx = IntContext(node, [probe_in], [probe_out], c.num)
    xs = [np.arange(-128, 128, dtype=np.int64)] + [
        (g.tensors[i].data.astype(np.int64) if g.tensors[i].dtype != "float32" else g.tensors[i].data)
        if i else None for i in node.inputs[1:]]
    ys = get_op(node.op).run_int(node, xs, ctx)
    table = np.asarray(ys[0]).astype(np.int64).reshape(-1)
    if table.size != 256 or table.min() < -128 or table.max() > 127:
        raise c.error("elementwise integer semantics did not give one int8 per input value")
    return table


@lowers(*UNARY_LUT_OPS)
def lower_unary(c: NodeCtx) -> Lowered:
    x, y = c.tin(0), c.tout()
    if x.dtype != "int8" or y.dtype != "int8" or x.quant is None:
        raise c.error(f"{c.node.op} from {x.dtype} to {y.dtype}: the C back end runs int8 → int8 only",
                      hint="give the model int8 inputs/outputs (quantize outside the model)")
    for i in c.node.inputs[1:]:
        if i and not c.g.tensors[i].is_const:
            raise c.error("extra inputs must be constants")
    c.per_tensor(c.q_in(0), "the input")
    c.per_tensor(c.q_out(), "the output")
    n = int(np.prod(y.shape))
    table = unary_table(c)
    ident = np.arange(-128, 128)
    clamped = (table == np.clip(ident, table.min(), table.max())).all()
    if clamped:
        return Lowered([f"qtc_clamp_s8_n($X0, $Y0, {n}, {int(table.min())}, {int(table.max())});"], inplace=[(0, 0)])
    t = c.array("lut", "int8_t", table, f"{c.node.op} on every int8 input, -128..127")
    return Lowered([f"qtc_lut_s8({t}, $X0, $Y0, {n});"], inplace=[(0, 0)])
