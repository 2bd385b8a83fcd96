"""Reductions: Mean, ReduceSum, ReduceMax over ``axes`` (None = all axes).

Integer semantics (TFLM ``reduce_common.cc`` + reference ``reduce.h``):

* Mean: ``QuantizedMeanOrSum`` — M, shift = QuantizeMultiplier(s_in/s_out);
  the 1/n factor is folded into the multiplier (shift' = min(floor(log2 n), 32,
  31 + shift), M' = (M << shift') / n, truncating), then
  MBQM(sum - zp_in·n, M', shift - shift') + zp_out, saturated.  This path is
  taken even when in/out params are equal: the installed TFLM and LiteRT
  BUILTIN_REF both round that way (MBQM's double rounding), while older TFLM
  sources divided the raw sum by n with truncation in that case.  The TF
  converter turns Keras GlobalAveragePooling into MEAN over the spatial axes.
* ReduceSum: QuantizedMeanOrSum without the 1/n factor.
* ReduceMax: max of the raw integers (TFLite requires equal params; if they
  differ the result is requantized).
"""
from __future__ import annotations

import numpy as np

from ._util import norm_axis, out_range, requantize_to_output
from .registry import OpDef, TensorSpec, register


def resolve_axes(axes, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = [axes]
    return tuple(sorted({norm_axis(int(a), rank) for a in axes}))


def _count(shape, axes) -> int:
    n = 1
    for a in axes:
        n *= int(shape[a])
    return n


def _finish_shape(y: np.ndarray, axes, keepdims: bool) -> np.ndarray:
    return y if keepdims else np.squeeze(y, axis=axes)


def _sum_int32(ctx, x: np.ndarray, axes) -> np.ndarray:
    return ctx.numerics.wrap_int32(np.asarray(x, dtype=np.int64).sum(axis=axes, keepdims=True))


def _quantized_mean_or_sum(ctx, x: np.ndarray, axes, compute_sum: bool) -> np.ndarray:
    num = ctx.numerics
    iq, oq = ctx.in_q(0), ctx.out_q(0)
    n = _count(x.shape, axes)
    m, s = num.quantize_multiplier(float(np.float32(iq.scale[0])) / float(np.float32(oq.scale[0])))
    if not compute_sum:
        shift = min(n.bit_length() - 1, 32, 31 + s)
        m = int((m << shift) // n)
        s = s - shift
    shifted = num.wrap_int32(_sum_int32(ctx, x, axes) - int(iq.zero_point[0]) * n)
    y = num.multiply_by_quantized_multiplier(shifted, m, s) + int(oq.zero_point[0])
    lo, hi = out_range(ctx)
    return np.clip(y, lo, hi)


def int_mean(ctx, x: np.ndarray, axes, keepdims: bool) -> np.ndarray:
    """TFLM MEAN int8/int16 (see the module docstring)."""
    x = np.asarray(x, dtype=np.int64)
    axes = resolve_axes(axes, x.ndim)
    if not axes:
        return requantize_to_output(ctx, x)
    y = _quantized_mean_or_sum(ctx, x, axes, compute_sum=False)
    return _finish_shape(y, axes, keepdims)


class _Reduce(OpDef):
    ATTRS = {"axes": None, "keepdims": True}

    @classmethod
    def infer(cls, node, ins):
        shape = ins[0].shape
        axes = resolve_axes(cls.attr(node, "axes"), len(shape))
        if cls.attr(node, "keepdims"):
            out = tuple(1 if i in axes else d for i, d in enumerate(shape))
        else:
            out = tuple(d for i, d in enumerate(shape) if i not in axes)
        return [TensorSpec(out, ins[0].dtype if ins[0].quant is None else "float32")]

    @classmethod
    def _float(cls, x: np.ndarray, axes) -> np.ndarray:
        raise TypeError(f"{cls.__name__} is abstract: a subclass defines this")

    @classmethod
    def run_float(cls, node, xs):
        x = xs[0]
        axes = resolve_axes(cls.attr(node, "axes"), x.ndim)
        y = cls._float(x.astype(np.float64), axes) if axes else x.astype(np.float64)
        return [_finish_shape(y, axes, bool(cls.attr(node, "keepdims"))).astype(np.float32)]


@register
class Mean(_Reduce):
    name = "Mean"

    @classmethod
    def _float(cls, x, axes):
        return x.mean(axis=axes, keepdims=True)

    @classmethod
    def run_int(cls, node, xs, ctx):
        return [int_mean(ctx, xs[0], cls.attr(node, "axes"), bool(cls.attr(node, "keepdims")))]


@register
class ReduceSum(_Reduce):
    name = "ReduceSum"

    @classmethod
    def _float(cls, x, axes):
        return x.sum(axis=axes, keepdims=True)

    @classmethod
    def run_int(cls, node, xs, ctx):
        x = np.asarray(xs[0], dtype=np.int64)
        axes = resolve_axes(cls.attr(node, "axes"), x.ndim)
        if not axes:
            return [requantize_to_output(ctx, x)]
        y = _quantized_mean_or_sum(ctx, x, axes, compute_sum=True)
        return [_finish_shape(y, axes, bool(cls.attr(node, "keepdims")))]


@register
class ReduceMax(_Reduce):
    name = "ReduceMax"

    @classmethod
    def _float(cls, x, axes):
        return x.max(axis=axes, keepdims=True)

    @classmethod
    def run_int(cls, node, xs, ctx):
        x = np.asarray(xs[0], dtype=np.int64)
        axes = resolve_axes(cls.attr(node, "axes"), x.ndim)
        y = x.max(axis=axes, keepdims=True) if axes else x
        y = requantize_to_output(ctx, y)
        return [_finish_shape(y, axes, bool(cls.attr(node, "keepdims")))]
