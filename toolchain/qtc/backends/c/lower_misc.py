"""Pools, reductions, softmax and data movement → C.

* Reshape / Flatten / Squeeze / Unsqueeze with equal in/out params are
  aliases: no code, the output shares the input's bytes.
* Where a copy-like op's output params differ from its input's, the
  interpreter requantizes (TFLite Requantize); the C code does the same through
  a 256-entry table evaluated at compile time with the same numerics.
* Softmax keeps TFLM's per-row arithmetic in C; only the per-diff exp values
  (256 of them) are tables.
"""
from __future__ import annotations

import numpy as np

from ...ops._util import norm_axis, requantize, same_qparams
from ...ops.reduce import resolve_axes
from ...ops.registry import get_op
from .lowering import Lowered, NodeCtx, lowers

ALIAS_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def requant_table(c: NodeCtx, in_index: int = 0, out_index: int = 0) -> np.ndarray | None:
    """None when input and output share params, else TFLite Requantize of every int8 value."""
    x = c.tin(in_index)
    iq, oq = x.quant, c.tout(out_index).quant
    if iq is None or same_qparams(iq, oq):
        return None
    lo, hi = max(-128, oq.qmin), min(127, oq.qmax)
    return np.asarray(requantize(c.num, np.arange(-128, 128), iq, oq, lo, hi), dtype=np.int64)


def _check_int8(c: NodeCtx) -> None:
    for i, name in enumerate(c.node.inputs):
        t = c.tin(i) if name else None
        if t is not None and not t.is_const and (t.dtype != "int8" or t.quant is None):
            raise c.error(f"input {name!r} is {t.dtype}; the C kernels take int8")
        if t is not None and t.quant is not None and not t.is_const:
            c.per_tensor(t.quant, f"input {name!r}")
    for i in range(len(c.node.outputs)):
        c.per_tensor(c.q_out(i), "the output")


def _lut_ref(c: NodeCtx, table, suffix: str = "lut") -> str:
    if table is None:
        return "NULL"
    return c.array(suffix, "int8_t", table, "requantization table, -128..127")


@lowers(*ALIAS_OPS)
def lower_alias(c: NodeCtx) -> Lowered:
    _check_int8(c)
    table = requant_table(c)
    if table is None:
        return Lowered([], alias_of=0)
    n = int(np.prod(c.tout().shape))
    return Lowered([f"qtc_lut_s8({_lut_ref(c, table)}, $X0, $Y0, {n});"], inplace=[(0, 0)])


# ------------------------------------------------------------------- pools
def _finish(c: NodeCtx, act: str):
    """Clamp range + optional table for 'requantize to output, then fused activation'."""
    lo, hi = c.out_range(act)
    table = requant_table(c)
    if table is None:
        return lo, hi, None
    return -128, 127, np.clip(table, lo, hi)


@lowers("MaxPool", "AvgPool")
def lower_pool(c: NodeCtx) -> Lowered:
    c.channels_last()
    _check_int8(c)
    x, y = c.tin(0), c.tout()
    kernel = [int(k) for k in c.attr("kernel")]
    strides = [int(s) for s in (c.attr("strides") or kernel)]
    nsp = len(kernel)
    pads = [int(p) for p in (c.attr("pads") or [0] * (2 * nsp))]
    if nsp == 1:
        n, in_w, ch = x.shape
        out_w = y.shape[1]
        in_h = out_h = 1
        kh, kw, sh, sw = 1, kernel[0], 1, strides[0]
        pt, pl, pb, pr = 0, pads[0], 0, pads[1]
    else:
        n, in_h, in_w, ch = x.shape
        out_h, out_w = y.shape[1], y.shape[2]
        (kh, kw), (sh, sw) = kernel, strides
        pt, pl, pb, pr = pads[0], pads[1], pads[2], pads[3]
    include_pad = c.node.op == "AvgPool" and bool(c.attr("count_include_pad"))
    lo, hi, table = _finish(c, c.attr("activation"))
    p = dict(batch=n, in_h=in_h, in_w=in_w, channels=ch, out_h=out_h, out_w=out_w, k_h=kh, k_w=kw,
             stride_h=sh, stride_w=sw, pad_top=pt, pad_left=pl, pad_bottom=pb, pad_right=pr,
             count_include_pad=int(include_pad), in_zp=int(c.q_in(0).zero_point[0]), act_min=lo, act_max=hi)
    kind = "max" if c.node.op == "MaxPool" else "avg"
    esp = c.esp_nn and n == 1 and table is None and not include_pad
    pname = c.struct("p", "qtc_pool_params_t", p, guard="!QTC_USE_ESP_NN" if esp else None)
    code = [f"qtc_{kind}_pool_s8(&{pname}, $X0, $Y0);"]
    if table is not None:
        size = int(np.prod(y.shape))
        code.append(f"qtc_lut_s8({_lut_ref(c, table)}, $Y0, $Y0, {size});")
    esp_code = None
    if esp:
        from .esp_nn import esp_nn_pool

        esp_code = esp_nn_pool(kind, p)
    return Lowered(code, esp_code)


# -------------------------------------------------------------- reductions
def _reduce_geometry(c: NodeCtx, shape, axes) -> tuple[int, int, int]:
    """[outer][reduce][inner] view of a reduction, or an error when the axes are not one block."""
    keep = [i for i, d in enumerate(shape) if d != 1 or i in axes]
    red = [i for i in keep if i in axes and shape[i] != 1]
    if not red:
        return int(np.prod(shape)), 1, 1
    first, last = keep.index(red[0]), keep.index(red[-1])
    if any(keep[j] not in axes and shape[keep[j]] != 1 for j in range(first, last + 1)):
        raise c.error(f"reduction over axes {list(axes)} of {list(shape)} is not one contiguous block",
                      hint="transpose so the reduced axes are adjacent")
    outer = int(np.prod([shape[i] for i in keep[:first]])) if first else 1
    reduce = int(np.prod([shape[i] for i in red]))
    inner = int(np.prod([shape[i] for i in keep[last + 1:]])) if last + 1 < len(keep) else 1
    return outer, reduce, inner


@lowers("Mean", "GlobalAvgPool", "ReduceSum", "ReduceMax")
def lower_reduce(c: NodeCtx) -> Lowered:
    _check_int8(c)
    x = c.tin(0)
    rank = len(x.shape)
    if c.node.op == "GlobalAvgPool":
        axes = tuple(range(1, rank - 1)) if c.attr("channels_last") else tuple(range(2, rank))
    else:
        axes = resolve_axes(c.attr("axes"), rank)
    if not axes:
        raise c.error("a reduction over no axes is a requantize; fold it before compiling")
    outer, red, inner = _reduce_geometry(c, x.shape, set(axes))
    iq, oq = c.q_in(0), c.q_out()
    lo, hi = max(-128, oq.qmin), min(127, oq.qmax)
    fields = dict(outer=outer, reduce=red, inner=inner, mode=0, in_zp_times_n=0, mult=0, shift=0,
                  out_zp=int(oq.zero_point[0]), act_min=lo, act_max=hi)
    table = None
    n = int(np.prod([x.shape[a] for a in axes]))
    if c.node.op == "ReduceMax":
        fields["mode"] = 1
        table = requant_table(c)
    else:  # TFLM QuantizedMeanOrSum, also when in/out params are equal
        m, s = c.num.quantize_multiplier(float(np.float32(iq.scale[0])) / float(np.float32(oq.scale[0])))
        if c.node.op != "ReduceSum":  # fold 1/n into the multiplier, as TFLM's QuantizedMeanOrSum
            shift = min(n.bit_length() - 1, 32, 31 + s)
            m, s = int((m << shift) // n), s - shift
        fields.update(mode=0, in_zp_times_n=int(iq.zero_point[0]) * n, mult=m, shift=s)
    p = c.struct("p", "qtc_reduce_params_t", fields)
    code = [f"qtc_reduce_s8(&{p}, $X0, $Y0);"]
    if table is not None:
        code.append(f"qtc_lut_s8({_lut_ref(c, table)}, $Y0, $Y0, {outer * inner});")
    return Lowered(code)


# ----------------------------------------------------------------- softmax
@lowers("Softmax")
def lower_softmax(c: NodeCtx) -> Lowered:
    _check_int8(c)
    num = c.num
    x = c.tin(0)
    oq = c.q_out()
    if np.float32(oq.scale[0]) != np.float32(1.0 / 256.0) or int(oq.zero_point[0]) != -128:
        raise c.error("Softmax output must have TFLite's fixed params (1/256, -128)",
                      hint="quantize Softmax outputs with scale 1/256 and zero point -128")
    axis = norm_axis(int(c.attr("axis")), len(x.shape))
    outer = int(np.prod(x.shape[:axis]))
    depth = int(x.shape[axis])
    inner = int(np.prod(x.shape[axis + 1:]))
    # Prepare, exactly as the interpreter's Softmax.run_int
    real = min(float(np.float32(c.attr("beta"))) * float(np.float32(c.q_in(0).scale[0])) * float(1 << 26),
               float((1 << 31) - 1))
    m, left_shift = num.quantize_multiplier_greater_than_one(real)
    diff_min = -num.calculate_input_radius(5, left_shift, 31)
    diffs = -np.arange(256, dtype=np.int64)
    used = diffs >= diff_min
    scaled = num.multiply_by_quantized_multiplier_greater_than_one(np.where(used, diffs, 0), m, left_shift)
    exps = np.where(used, num.exp_on_negative_values(scaled, 5), 0)
    sums = np.where(used, num.fp_rescale(exps, 0, 12), 0)
    et = c.array("exp", "int32_t", exps, "exp(diff) in Q0.31 for diff = 0, -1, ..., -255")
    st = c.array("sum", "int32_t", sums, "the same in Q12.19 (summed per row)")
    p = c.struct("p", "qtc_softmax_params_t", dict(outer=outer, depth=depth, inner=inner,
                                                   diff_min=max(int(diff_min), -(1 << 31))))
    return Lowered([f"qtc_softmax_s8(&{p}, {et}, {st}, $X0, $Y0);"])


# ------------------------------------------------------------ data movement
def _collapse(shape, strides, max_dims: int):
    """Drop size-1 dims and merge dims that are contiguous in the source; pad to max_dims."""
    dims = [(int(d), int(s)) for d, s in zip(shape, strides) if d != 1]
    merged: list[list[int]] = []
    for d, s in dims:
        if merged and merged[-1][1] == s * d:
            merged[-1] = [merged[-1][0] * d, s]
        else:
            merged.append([d, s])
    if len(merged) > max_dims:
        return None
    pad = [[1, 0]] * (max_dims - len(merged))
    merged = pad + merged
    return [m[0] for m in merged], [m[1] for m in merged]


def _strides(shape) -> list[int]:
    out, acc = [0] * len(shape), 1
    for i in range(len(shape) - 1, -1, -1):
        out[i] = acc
        acc *= int(shape[i])
    return out


def _gather(c: NodeCtx, out_index: int, out_shape, src_strides, offset: int, suffix: str) -> str:
    geo = _collapse(out_shape, src_strides, 6)
    if geo is None:
        raise c.error("data movement needs more than 6 dimensions")
    shape, strides = geo
    p = c.struct(f"p{suffix}", "qtc_gather_params_t", dict(shape=shape, stride=strides, offset=offset))
    lut = _lut_ref(c, requant_table(c, 0, out_index), f"lut{suffix}")
    return f"qtc_gather_s8(&{p}, {lut}, $X0, $Y{out_index});"


@lowers("Transpose")
def lower_transpose(c: NodeCtx) -> Lowered:
    _check_int8(c)
    x = c.tin(0)
    perm = get_op("Transpose")._perm(c.node, len(x.shape))
    src = _strides(x.shape)
    return Lowered([_gather(c, 0, c.tout().shape, [src[p] for p in perm], 0, "")])


@lowers("Slice")
def lower_slice(c: NodeCtx) -> Lowered:
    _check_int8(c)
    x = c.tin(0)
    idx = get_op("Slice")._index(c.node, x.shape)
    src = _strides(x.shape)
    offset, strides = 0, []
    for d, ix in enumerate(idx):
        if len(ix) == 0:
            raise c.error("Slice gives an empty tensor")
        step = int(ix[1] - ix[0]) if len(ix) > 1 else 1
        offset += int(ix[0]) * src[d]
        strides.append(step * src[d])
    return Lowered([_gather(c, 0, c.tout().shape, strides, offset, "")])


@lowers("Split")
def lower_split(c: NodeCtx) -> Lowered:
    _check_int8(c)
    x = c.tin(0)
    axis = norm_axis(int(c.attr("axis")), len(x.shape))
    src = _strides(x.shape)
    code, start = [], 0
    for i, o in enumerate(c.node.outputs):
        shp = c.g.tensors[o].shape
        code.append(_gather(c, i, shp, src, start * src[axis], str(i)))
        start += shp[axis]
    return Lowered(code)


@lowers("Concat")
def lower_concat(c: NodeCtx) -> Lowered:
    _check_int8(c)
    y = c.tout()
    axis = norm_axis(int(c.attr("axis")), len(y.shape))
    outer = int(np.prod(y.shape[:axis]))
    out_row = int(np.prod(y.shape[axis:]))
    code, offset = [], 0
    for i, name in enumerate(c.node.inputs):
        t = c.tin(i)
        row = int(np.prod(t.shape[axis:]))
        lut = _lut_ref(c, requant_table(c, i, 0), f"lut{i}")
        dst = "$Y0" if offset == 0 else f"$Y0 + {offset}"
        code.append(f"qtc_copy_rows_s8($X{i}, {dst}, {outer}, {row}, {row}, {out_row}, {lut});")
        offset += row
    return Lowered(code)


@lowers("Pad")
def lower_pad(c: NodeCtx) -> Lowered:
    _check_int8(c)
    x, y = c.tin(0), c.tout()
    if c.attr("mode") != "constant":
        raise c.error(f"Pad mode {c.attr('mode')!r} has no C kernel (constant only)")
    rank = len(x.shape)
    pads = [int(p) for p in c.attr("pads")]
    if any(p < 0 for p in pads):
        raise c.error("negative pads (cropping) have no C kernel", hint="use Slice to crop")
    oq = c.q_out()
    lo, hi = max(-128, oq.qmin), min(127, oq.qmax)
    from ...ops._util import round_half_away

    fill = int(oq.zero_point[0]) + int(round_half_away(np.float32(c.attr("value")) / np.float32(oq.scale[0])))
    fill = int(np.clip(fill, lo, hi))
    # merge leading unpadded dims; at most 4 dims remain
    dims = [(int(x.shape[i]), pads[i], pads[i + rank]) for i in range(rank)]
    merged: list[tuple[int, int, int]] = []
    for d, b, e in dims:
        if merged and merged[-1][1] == merged[-1][2] == 0 and b == e == 0:
            merged[-1] = (merged[-1][0] * d, 0, 0)
        else:
            merged.append((d, b, e))
    while len(merged) > 4 and merged[0][1] == merged[0][2] == 0 and merged[1][1] == merged[1][2] == 0:
        merged[0:2] = [(merged[0][0] * merged[1][0], 0, 0)]
    if len(merged) > 4:
        raise c.error(f"Pad over {len(merged)} padded dims has no C kernel (4 at most)")
    merged = [(1, 0, 0)] * (4 - len(merged)) + merged
    p = c.struct("p", "qtc_pad_params_t", dict(
        in_shape=[m[0] for m in merged], out_shape=[m[0] + m[1] + m[2] for m in merged],
        before=[m[1] for m in merged], fill=fill))
    lut = _lut_ref(c, requant_table(c))
    return Lowered([f"qtc_pad_s8(&{p}, {lut}, $X0, $Y0);"])
