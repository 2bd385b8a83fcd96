"""MaxPool, AvgPool (1-D or 2-D) and GlobalAvgPool.

``pads`` are ONNX-ordered over the spatial dims; ``ceil_mode`` follows torch
(the last window must start inside the input or the left padding).  AvgPool's
divisor follows torch: with ``count_include_pad`` the window clipped to the
padded input, else the number of real input elements.

Integer semantics (TFLite/TFLM reference ``integer_ops/pooling.h``):

* MaxPool: max over the real input elements, clamped to the fused activation.
* AvgPool: sum of the raw integers over the real input elements, divided by
  their count with TFLite's rounding ((acc ± n/2) / n, truncating), clamped.
  With ``count_include_pad`` padding contributes the zero point and the divisor
  is torch's (TFLite has no such mode).
* Both assume equal in/out params, as TFLite requires; if the params differ
  the result is requantized (TFLite Requantize), as the converter's extra
  QUANTIZE op would do, before the activation clamp.
* GlobalAvgPool: TFLite MEAN over the spatial axes (see :mod:`qtc.ops.reduce`).
"""
from __future__ import annotations

import numpy as np

from ._util import (clamp_act_float, from_channels_last, make_shape, out_range, pad_nhwc, pool_bounds,
                    pool_out_size, requantize_to_output, spatial_shape, to_channels_last, trunc_div, windows)
from .reduce import int_mean
from .registry import OpDef, TensorSpec, register

_LOWEST_INT = -(1 << 40)


class _Pool(OpDef):
    ATTRS = {"kernel": None, "strides": None, "pads": None, "channels_last": False,
             "count_include_pad": False, "activation": "none", "ceil_mode": False}

    @classmethod
    def _params(cls, node, rank: int):
        nsp = rank - 2
        kernel = tuple(int(k) for k in cls.attr(node, "kernel"))
        if len(kernel) != nsp:
            raise ValueError(f"kernel {list(kernel)} does not match {nsp} spatial dims")
        strides = tuple(int(s) for s in (cls.attr(node, "strides") or kernel))
        pads = [int(p) for p in (cls.attr(node, "pads") or [0] * (2 * nsp))]
        return kernel, strides, pads, bool(cls.attr(node, "channels_last")), bool(cls.attr(node, "ceil_mode"))

    @classmethod
    def _out_spatial(cls, node, sp: tuple[int, ...]) -> tuple[int, ...]:
        kernel, strides, pads, _, ceil = cls._params(node, len(sp) + 2)
        nsp = len(sp)
        return tuple(pool_out_size(sp[i], kernel[i], strides[i], pads[i], pads[i + nsp], ceil) for i in range(nsp))

    @classmethod
    def infer(cls, node, ins):
        shape = ins[0].shape
        if len(shape) not in (3, 4):
            raise ValueError(f"{cls.name} expects a rank-3 or rank-4 input, got {shape}")
        out_sp = cls._out_spatial(node, spatial_shape(shape, bool(cls.attr(node, "channels_last"))))
        if any(o <= 0 for o in out_sp):
            raise ValueError(f"output spatial size {out_sp} is empty")
        cl = bool(cls.attr(node, "channels_last"))
        c = shape[-1] if cl else shape[1]
        return [TensorSpec(make_shape(shape[0], out_sp, c, cl), ins[0].dtype if ins[0].quant is None else "float32")]

    @classmethod
    def _windows(cls, node, x_nhwc: np.ndarray, fill):
        """Windows N,*O,C,*K over x padded with ``fill`` (extra end padding for ceil_mode)."""
        kernel, strides, pads, _, _ = cls._params(node, x_nhwc.ndim)
        sp = x_nhwc.shape[1:-1]
        nsp = len(sp)
        out = cls._out_spatial(node, sp)
        ends = [max((out[i] - 1) * strides[i] + kernel[i] - sp[i] - pads[i], 0) for i in range(nsp)]
        xp = pad_nhwc(x_nhwc, pads[:nsp] + ends, fill)
        win = windows(xp, kernel, strides, (1,) * nsp)
        win = win[(slice(None),) + tuple(slice(0, o) for o in out)]
        return win, out, kernel, strides, pads

    @classmethod
    def _counts(cls, node, sp, out, kernel, strides, pads, include_pad: bool) -> np.ndarray:
        """Divisor per output position, shaped 1,*O,1."""
        nsp = len(sp)
        count = np.ones((1,) * (nsp + 2), dtype=np.int64)
        for i in range(nsp):
            lo, hi, lo_p, hi_p = pool_bounds(sp[i], kernel[i], strides[i], pads[i], pads[i + nsp], out[i])
            n = (hi_p - lo_p) if include_pad else (hi - lo)
            shape = [1] * (nsp + 2)
            shape[1 + i] = -1
            count = count * n.reshape(shape)
        return count

    @classmethod
    def _int_finish(cls, node, ctx, y: np.ndarray) -> np.ndarray:
        y = requantize_to_output(ctx, y)
        oq = ctx.out_q(0)
        lo, hi = out_range(ctx)
        lo, hi = ctx.numerics.quantized_activation_range(cls.attr(node, "activation"), float(oq.scale[0]),
                                                         int(oq.zero_point[0]), lo, hi)
        return np.clip(y, lo, hi)

    @classmethod
    def macs(cls, node, ins, outs):
        return int(np.prod(outs[0].shape)) * int(np.prod(cls.attr(node, "kernel")))


@register
class MaxPool(_Pool):
    name = "MaxPool"

    @classmethod
    def run_float(cls, node, xs):
        cl = bool(cls.attr(node, "channels_last"))
        x = to_channels_last(xs[0].astype(np.float32), cl)
        win, *_ = cls._windows(node, x, -np.inf)
        nsp = x.ndim - 2
        y = win.max(axis=tuple(range(-nsp, 0)))
        return [from_channels_last(clamp_act_float(y.astype(np.float32), cls.attr(node, "activation")), cl)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        cl = bool(cls.attr(node, "channels_last"))
        x = to_channels_last(xs[0].astype(np.int64), cl)
        win, *_ = cls._windows(node, x, _LOWEST_INT)
        y = win.max(axis=tuple(range(-(x.ndim - 2), 0)))
        return [from_channels_last(cls._int_finish(node, ctx, y), cl)]


@register
class AvgPool(_Pool):
    name = "AvgPool"

    @classmethod
    def run_float(cls, node, xs):
        cl = bool(cls.attr(node, "channels_last"))
        x = to_channels_last(xs[0].astype(np.float64), cl)
        win, out, kernel, strides, pads = cls._windows(node, x, 0.0)
        nsp = x.ndim - 2
        total = win.sum(axis=tuple(range(-nsp, 0)))
        count = cls._counts(node, x.shape[1:-1], out, kernel, strides, pads,
                            bool(cls.attr(node, "count_include_pad")))
        y = (total / count).astype(np.float32)
        return [from_channels_last(clamp_act_float(y, cls.attr(node, "activation")), cl)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        cl = bool(cls.attr(node, "channels_last"))
        include_pad = bool(cls.attr(node, "count_include_pad"))
        x = to_channels_last(xs[0].astype(np.int64), cl)
        fill = int(ctx.in_q(0).zero_point[0]) if include_pad else 0
        win, out, kernel, strides, pads = cls._windows(node, x, fill)
        nsp = x.ndim - 2
        acc = win.sum(axis=tuple(range(-nsp, 0)))
        n = cls._counts(node, x.shape[1:-1], out, kernel, strides, pads, include_pad)
        if include_pad:
            # padding holds the zero point; cells past torch's padded window (ceil_mode) do not count
            acc = acc - (int(np.prod(kernel)) - n) * fill
        y = tflite_rounded_div(acc, n)
        return [from_channels_last(cls._int_finish(node, ctx, y), cl)]


def tflite_rounded_div(acc: np.ndarray, n: np.ndarray) -> np.ndarray:
    """TFLite AveragePool rounding: (acc + n/2) / n for acc > 0, else (acc - n/2) / n, truncating."""
    acc = np.asarray(acc, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    return trunc_div(np.where(acc > 0, acc + n // 2, acc - n // 2), n)


@register
class GlobalAvgPool(OpDef):
    """Mean over the spatial dims.  Integer: TFLite MEAN over the spatial axes."""

    name = "GlobalAvgPool"
    ATTRS = {"channels_last": False, "keepdims": True}

    @classmethod
    def _axes(cls, node, rank: int) -> list[int]:
        return list(range(1, rank - 1)) if cls.attr(node, "channels_last") else list(range(2, rank))

    @classmethod
    def infer(cls, node, ins):
        shape = ins[0].shape
        if len(shape) < 3:
            raise ValueError(f"GlobalAvgPool expects rank >= 3, got {shape}")
        axes = cls._axes(node, len(shape))
        keep = bool(cls.attr(node, "keepdims"))
        out = [1 if i in axes else d for i, d in enumerate(shape)] if keep else \
            [d for i, d in enumerate(shape) if i not in axes]
        return [TensorSpec(tuple(out), ins[0].dtype if ins[0].quant is None else "float32")]

    @classmethod
    def run_float(cls, node, xs):
        axes = tuple(cls._axes(node, xs[0].ndim))
        y = xs[0].astype(np.float64).mean(axis=axes, keepdims=bool(cls.attr(node, "keepdims")))
        return [y.astype(np.float32)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        return [int_mean(ctx, xs[0], cls._axes(node, xs[0].ndim), bool(cls.attr(node, "keepdims")))]
