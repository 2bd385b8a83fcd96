"""LiteRT's BUILTIN_REF kernels: the tflite numerics, except FULLY_CONNECTED.

LiteRT's *reference* FULLY_CONNECTED (int8/int16, per-tensor and per-channel)
rescales the int32 accumulator in double, ``round(acc * s_in*s_w[c]/s_out)``
(round half away from zero), instead of the integer multiplier
(MultiplyByQuantizedMultiplier) that TFLM, ESP-NN and LiteRT's optimized
kernels use.  Measured against ai-edge-litert 2.3.0: op by op 100/100 exact
with this formula, while the integer multiplier differs by 1 LSB on a few
percent of outputs.  Every other op is the tflite numerics unchanged.

Use ``numerics="litert_ref"`` only to reproduce LiteRT BUILTIN_REF bit for bit;
devices (TFLM, ESP-NN, qtc's C) compute with ``tflite``.
"""
from __future__ import annotations

import numpy as np

from .tflite import *  # noqa: F401,F403 - same arithmetic for every other op
from .tflite import quantized_activation_range  # noqa: F401

NAME = "litert_ref"
FC_DOUBLE_RESCALE = True


def rescale_double(acc: np.ndarray, eff_scale: np.ndarray) -> np.ndarray:
    """round(acc * eff_scale) in double, half away from zero (C's std::round)."""
    v = np.asarray(acc, dtype=np.float64) * np.asarray(eff_scale, dtype=np.float64)
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)
