"""Small helpers shared by op definitions (layout, padding, windows, clamps)."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def to_channels_last(x: np.ndarray, channels_last: bool) -> np.ndarray:
    """NC... → N...C (no-op when already channels-last)."""
    if channels_last or x.ndim < 3:
        return x
    return np.moveaxis(x, 1, -1)


def from_channels_last(x: np.ndarray, channels_last: bool) -> np.ndarray:
    if channels_last or x.ndim < 3:
        return x
    return np.moveaxis(x, -1, 1)


def spatial_shape(shape: tuple[int, ...], channels_last: bool) -> tuple[int, ...]:
    return tuple(shape[1:-1]) if channels_last else tuple(shape[2:])


def channels(shape: tuple[int, ...], channels_last: bool) -> int:
    return shape[-1] if channels_last else shape[1]


def make_shape(n: int, spatial: tuple[int, ...], c: int, channels_last: bool) -> tuple[int, ...]:
    return (n, *spatial, c) if channels_last else (n, c, *spatial)


def same_pads(in_sp, kernel, strides, dilations) -> list[int]:
    """ONNX-ordered pads [b0, b1, ..., e0, e1, ...] of TensorFlow's SAME padding (the odd pixel at the end)."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sp, kernel, strides, dilations):
        eff = (k - 1) * d + 1
        out = (size + s - 1) // s
        total = max((out - 1) * s + eff - size, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def conv_out_size(size: int, k: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    return (size + pad_begin + pad_end - dilation * (k - 1) - 1) // stride + 1


def pad_nhwc(x: np.ndarray, pads: list[int], value) -> np.ndarray:
    """pads in ONNX order [b0, b1, ..., e0, e1, ...] over the spatial dims of N...C."""
    nsp = x.ndim - 2
    if not any(pads):
        return x
    width = [(0, 0)] + [(int(pads[i]), int(pads[i + nsp])) for i in range(nsp)] + [(0, 0)]
    return np.pad(x, width, mode="constant", constant_values=value)


def windows(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...],
            dilations: tuple[int, ...]) -> np.ndarray:
    """Sliding windows of an N,*S,C array → N,*O,C,*K (view, no copy)."""
    nsp = x.ndim - 2
    eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilations))
    v = sliding_window_view(x, eff, axis=tuple(range(1, 1 + nsp)))
    # v: N, *O_full, C, *eff
    sl = [slice(None)] + [slice(None, None, s) for s in strides] + [slice(None)] + \
         [slice(None, None, d) for d in dilations]
    return v[tuple(sl)]


def clamp_act_float(x: np.ndarray, activation: str) -> np.ndarray:
    if activation in (None, "", "none"):
        return x
    if activation == "relu":
        return np.maximum(x, 0).astype(x.dtype)
    if activation == "relu6":
        return np.clip(x, 0, 6).astype(x.dtype)
    if activation == "relu_n1_to_1":
        return np.clip(x, -1, 1).astype(x.dtype)
    raise ValueError(f"unknown fused activation {activation!r}")


FUSED_ACTIVATIONS = ("none", "relu", "relu6", "relu_n1_to_1")


def int_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def requant_out(ctx, acc: np.ndarray, eff_scale: np.ndarray, axis: int | None = None,
                activation: str = "none", int64_acc: bool = False, double_rescale: bool = False) -> np.ndarray:
    """int32 accumulator → output integers via the numerics' requantizer, + zp, clamp.

    ``int64_acc``: the 16x8 kernels with an int64 bias requantize with the int64 overload.
    ``double_rescale``: ``round(acc * eff_scale)`` in double (LiteRT's reference FULLY_CONNECTED).
    """
    num = ctx.numerics
    oq = ctx.out_q(0)
    m, s = num.quantize_multipliers(eff_scale)
    if axis is not None and m.size > 1:
        shp = [1] * acc.ndim
        shp[axis] = -1
        m, s = m.reshape(shp), s.reshape(shp)
    else:
        m, s = m.reshape(()), s.reshape(())
    if double_rescale:  # LiteRT BUILTIN_REF FULLY_CONNECTED (numerics/litert_ref.py)
        eff = np.asarray(eff_scale, np.float64).reshape(m.shape)
        y = num.rescale_double(acc, eff) + int(oq.zero_point[0])
    else:
        mbqm = num.multiply_by_quantized_multiplier_int64 if int64_acc else num.multiply_by_quantized_multiplier
        y = mbqm(acc, m, s) + int(oq.zero_point[0])
    lo, hi = int_range(ctx.out_dtype(0))
    lo, hi = max(lo, oq.qmin), min(hi, oq.qmax)
    lo, hi = num.quantized_activation_range(activation, float(oq.scale[0]), int(oq.zero_point[0]), lo, hi)
    return np.clip(y, lo, hi)


# --------------------------------------------------------------------- integer helpers
def int64_bias(ctx, index: int = 2) -> bool:
    """True when TFLite's 16x8 conv/FC accumulate in int64: an int64 bias, or an int16 input and no bias
    (TFLM's int16 kernels take the int64 path when the bias is absent; measured)."""
    t = ctx.in_tensors[index] if len(ctx.in_tensors) > index else None
    if t is None:
        x = ctx.in_tensors[0]
        return x is not None and x.dtype == "int16"
    return t.dtype == "int64"


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C round / TfLiteRound)."""
    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def out_range(ctx, i: int = 0) -> tuple[int, int]:
    """Integer range of output ``i``: its dtype range intersected with its quant range."""
    oq = ctx.out_q(i)
    lo, hi = int_range(ctx.out_dtype(i))
    return max(lo, oq.qmin), min(hi, oq.qmax)


def same_qparams(a, b) -> bool:
    """True when two per-tensor quant params describe the same real values (TFLite's scale/zp test)."""
    return (a is not None and b is not None and a.scale.size == 1 and b.scale.size == 1
            and np.float32(a.scale[0]) == np.float32(b.scale[0]) and int(a.zero_point[0]) == int(b.zero_point[0]))


def requantize(num, x: np.ndarray, iq, oq, lo: int, hi: int) -> np.ndarray:
    """TFLite Requantize (QUANTIZE int→int): MBQM(x - zp_in, in_scale/out_scale) + zp_out, saturate.

    Identity when the params are equal (M = 2^30, shift 1 is exact).
    """
    real = float(np.float64(np.float32(iq.scale[0])) / np.float64(np.float32(oq.scale[0])))
    m, s = num.quantize_multiplier(real)
    y = num.multiply_by_quantized_multiplier(np.asarray(x, dtype=np.int64) - int(iq.zero_point[0]), m, s)
    return np.clip(y + int(oq.zero_point[0]), lo, hi)


def requantize_to_output(ctx, x: np.ndarray, in_index: int = 0) -> np.ndarray:
    """Pass integers through when input ``in_index`` and output 0 share params, else requantize.

    This is what a copy op (Reshape, Transpose, ...) means in TFLite: the
    converter inserts a QUANTIZE op wherever the params would differ.
    """
    iq, oq = ctx.in_q(in_index), ctx.out_q(0)
    x = np.asarray(x, dtype=np.int64)
    if same_qparams(iq, oq):
        return x
    lo, hi = out_range(ctx)
    return requantize(ctx.numerics, x, iq, oq, lo, hi)


def lut_int(x: np.ndarray, iq, oq, fn, lo: int, hi: int) -> np.ndarray:
    """The 256-entry (or 2^bits) table kernel of docs/ir.md.

    For every integer q of the input range: y = quantize_out(fn(dequantize_in(q)))
    in float64 with round-half-away-from-zero, saturated; then a gather.
    """
    qlo, qhi = iq.qmin, iq.qmax
    q = np.arange(qlo, qhi + 1, dtype=np.int64)
    real = (q - int(iq.zero_point[0])).astype(np.float64) * np.float64(np.float32(iq.scale[0]))
    y = np.asarray(fn(real), dtype=np.float64) / np.float64(np.float32(oq.scale[0]))
    table = np.clip(round_half_away(y).astype(np.int64) + int(oq.zero_point[0]), lo, hi)
    return table[np.asarray(x, dtype=np.int64) - qlo]


def pool_bounds(size: int, k: int, stride: int, pad_begin: int, pad_end: int, out: int):
    """Per output index: window start/end clipped to the input, and to the padded input.

    Returns (lo, hi, lo_pad, hi_pad) arrays: valid input range [lo, hi) and the
    range [lo_pad, hi_pad) inside the padded input (torch's count_include_pad
    divisor).
    """
    start = np.arange(out) * stride - pad_begin
    end_pad = np.minimum(start + k, size + pad_end)
    return np.maximum(start, 0), np.minimum(end_pad, size), start, end_pad


def pool_out_size(size: int, k: int, stride: int, pad_begin: int, pad_end: int, ceil_mode: bool) -> int:
    """Pool output length (torch/ONNX rule; with ceil_mode the last window must start inside)."""
    span = size + pad_begin + pad_end - k
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad_begin:
            out -= 1
        return out
    return span // stride + 1


def trunc_div(a: np.ndarray, b) -> np.ndarray:
    """C integer division (truncates toward zero); b > 0."""
    a = np.asarray(a, dtype=np.int64)
    return np.where(a >= 0, a // b, -((-a) // b))
