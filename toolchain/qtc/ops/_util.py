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
                activation: str = "none") -> np.ndarray:
    """int32 accumulator → output integers via the numerics' requantizer, + zp, clamp."""
    num = ctx.numerics
    oq = ctx.out_q(0)
    m, s = num.quantize_multipliers(eff_scale)
    if axis is not None and m.size > 1:
        shp = [1] * acc.ndim
        shp[axis] = -1
        m, s = m.reshape(shp), s.reshape(shp)
    else:
        m, s = m.reshape(()), s.reshape(())
    y = num.multiply_by_quantized_multiplier(acc, m, s) + int(oq.zero_point[0])
    lo, hi = int_range(ctx.out_dtype(0))
    lo, hi = max(lo, oq.qmin), min(hi, oq.qmax)
    lo, hi = num.quantized_activation_range(activation, float(oq.scale[0]), int(oq.zero_point[0]), lo, hi)
    return np.clip(y, lo, hi)
