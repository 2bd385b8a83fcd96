"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", §4.2).

Quantizing a weight ``W`` to ``W~`` shifts the mean of each output channel by
``E[W~ x] − E[W x] = (W~ − W) · E[x]`` (the layer is linear before its fused
activation).  Subtracting that shift from the bias removes the biased part
of the quantization error.  ``E[x]`` is the mean input row (im2col patch for
convolutions, zero padding included) over every output position of every
calibration sample, taken from the inputs the *quantized* model feeds the
layer (see :mod:`.refine`).
"""
from __future__ import annotations

import numpy as np


def bias_shift(w_float: np.ndarray, w_quant: np.ndarray, mean_row: np.ndarray) -> np.ndarray:
    """Per output channel ``(W~ − W) · E[x]`` from ``[groups, og, K]`` weights and a ``[groups, K]`` mean row."""
    err = np.asarray(w_quant, np.float64) - np.asarray(w_float, np.float64)
    return np.einsum("gjk,gk->gj", err, np.asarray(mean_row, np.float64)).reshape(-1)


def corrected_bias(b_float: np.ndarray | None, shift: np.ndarray) -> np.ndarray:
    """The float bias with the mean output shift removed (a zero bias when there was none)."""
    b = np.zeros(shift.shape, np.float64) if b_float is None else np.asarray(b_float, np.float64).reshape(-1)
    return (b - shift).astype(np.float32)
