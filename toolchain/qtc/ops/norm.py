"""BatchNorm (inference form) and LayerNorm.  Float only: BatchNorm is folded
into the preceding conv by the canonicalisation passes, LayerNorm stays float
(mixed precision); neither has integer semantics in qtc."""
from __future__ import annotations

import numpy as np

from ._util import norm_axis
from .registry import OpDef, TensorSpec, register


@register
class BatchNorm(OpDef):
    """y = (x - mean) / sqrt(var + epsilon) · scale + bias, per channel
    (axis 1, or the last axis with ``channels_last``)."""

    name = "BatchNorm"
    NUM_INPUTS = (5, 5)
    ATTRS = {"epsilon": 1e-5, "channels_last": False}

    @classmethod
    def _axis(cls, node, rank: int) -> int:
        return rank - 1 if (cls.attr(node, "channels_last") or rank < 2) else 1

    @classmethod
    def infer(cls, node, ins):
        x = ins[0]
        c = x.shape[cls._axis(node, len(x.shape))]
        for t, what in zip(ins[1:], ("scale", "bias", "mean", "var")):
            if int(np.prod(t.shape)) != c:
                raise ValueError(f"BatchNorm {what} has shape {t.shape}, expected {c} channels")
        return [TensorSpec(x.shape, "float32")]

    @classmethod
    def run_float(cls, node, xs):
        x = xs[0].astype(np.float64)
        shape = [1] * x.ndim
        shape[cls._axis(node, x.ndim)] = -1
        scale, bias, mean, var = (np.asarray(v, dtype=np.float64).reshape(shape) for v in xs[1:5])
        y = (x - mean) / np.sqrt(var + float(cls.attr(node, "epsilon"))) * scale + bias
        return [y.astype(np.float32)]

    @classmethod
    def macs(cls, node, ins, outs):
        return int(np.prod(outs[0].shape))


@register
class LayerNorm(OpDef):
    """Normalise over the dims from ``axis`` to the last (ONNX LayerNormalization;
    torch layer_norm with normalized_shape = x.shape[axis:]), then γ·x̂ + β."""

    name = "LayerNorm"
    NUM_INPUTS = (2, 3)
    ATTRS = {"axis": -1, "epsilon": 1e-5}

    @classmethod
    def infer(cls, node, ins):
        x = ins[0]
        axis = norm_axis(int(cls.attr(node, "axis")), len(x.shape))
        norm_shape = x.shape[axis:]
        for t in ins[1:]:
            if t is not None and int(np.prod(t.shape)) != int(np.prod(norm_shape)):
                raise ValueError(f"LayerNorm parameter of shape {t.shape} does not match {norm_shape}")
        return [TensorSpec(x.shape, "float32")]

    @classmethod
    def run_float(cls, node, xs):
        x = xs[0].astype(np.float64)
        axis = norm_axis(int(cls.attr(node, "axis")), x.ndim)
        dims = tuple(range(axis, x.ndim))
        mean = x.mean(axis=dims, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=dims, keepdims=True)
        y = (x - mean) / np.sqrt(var + float(cls.attr(node, "epsilon")))
        y = y * np.asarray(xs[1], dtype=np.float64).reshape(x.shape[axis:])
        if len(xs) > 2 and xs[2] is not None:
            y = y + np.asarray(xs[2], dtype=np.float64).reshape(x.shape[axis:])
        return [y.astype(np.float32)]
