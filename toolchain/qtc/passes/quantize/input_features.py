"""Per-feature input quantization: one scale and zero point per input feature.

A model whose input features live on different scales (metres next to m/s
next to a radius) loses most of its int8 accuracy at the input tensor: one
per-tensor scale gives the small-range features a handful of levels.  Where a
graph input feeds only FullyConnected layers, the feature axis (the last one)
is the contraction axis, so per-feature params cost nothing at run time:

* each feature ``i`` gets its own params ``(S_i, Z_i)`` from its calibration
  range (min/max, not widened to contain 0; power of two on PoT targets);
  the user's float input is quantized with them, ``q_i = round(x_i / S_i) + Z_i``
  (clamped) — the per-axis params recorded in ``graph.metadata["input_quant"]``
  and read by every float → int boundary (:func:`qtc.ir.boundary.input_params`);
* inside the graph the input tensor is per-tensor ``(S, 0)`` with
  ``S = 2^-(bits-1)``, and the integers are the same: ``x' = S · q``;
* the float graph is rewritten so that it computes the same function of
  ``x' = (x - c) / r`` with ``r_i = S_i / S`` and ``c_i = -Z_i · S_i``: every
  consumer's weights become ``W · diag(r)`` and its bias ``b + W c``.  The
  integer kernels, the .tflite and the C back end see an ordinary int8 input.

Exactness: ``S · round(x_i/S_i + Z_i)`` is what per-tensor ``(S, 0)``
quantization of the rewritten input gives, so calibration, AdaRound and the
integer graph all see the integers the boundary produces.
"""
from __future__ import annotations

import numpy as np

from ...errors import QtcError
from ...ir.graph import Graph
from ...ir.tensor import QuantParams
from .params import _qrange, pot_ceil


def eligible(g: Graph, name: str) -> str | None:
    """None when input ``name`` can take per-feature params, else why not."""
    t = g.tensors[name]
    if len(t.shape) < 2:
        return f"input {name!r} has rank {len(t.shape)}; per-feature params need a feature axis"
    if name in g.outputs:
        return f"input {name!r} is also a graph output"
    cons = g.consumers().get(name, [])
    if not cons:
        return f"input {name!r} feeds no node"
    for n in cons:
        if n.op != "FullyConnected" or n.inputs[0] != name or name in n.inputs[1:]:
            return f"input {name!r} feeds {n.op} node {n.name!r}, not only FullyConnected layers"
        if not g.tensors[n.inputs[1]].is_const or (len(n.inputs) > 2 and n.inputs[2]
                                                      and not g.tensors[n.inputs[2]].is_const):
            return f"FullyConnected node {n.name!r} has non-constant weights or bias"
    return None


def feature_params(x: np.ndarray, bits: int, power_of_two: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scales S_i float32, zero points Z_i int64) covering each feature's [min, max] over the samples."""
    qmin, qmax = _qrange(bits)
    flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    span = hi - lo
    const = span <= 0
    span = np.where(const, np.maximum(np.abs(hi), 1e-6) * 2.0, span)
    lo = np.where(const, hi - span / 2.0, lo)
    scale = span / (qmax - qmin)
    if power_of_two:
        scale = pot_ceil(scale)
    scale = scale.astype(np.float32)
    zp = np.floor(qmin - lo / scale.astype(np.float64) + 0.5).astype(np.int64)
    return scale, zp


def inner_scale(bits: int) -> float:
    """The per-tensor scale of the rewritten input inside the graph: 2^-(bits-1)."""
    return float(2.0 ** -(bits - 1))


def per_feature_inputs(g: Graph, calib: dict[str, np.ndarray], names: list[str], *, bits: int,
                       power_of_two: bool, params: dict | None = None) -> tuple[Graph, dict, dict, dict]:
    """Rewrite ``g`` (a copy) for per-feature params on ``names``.

    ``params`` optionally gives ``{input: (scales, zero points)}`` to use instead of the min-max ones
    (learned by :mod:`.block_recon`).

    Returns (graph, calibration inputs rewritten to ``x'``, {input: its fixed in-graph QuantParams},
    {input: per-axis boundary QuantParams}).
    """
    if bits > 8:
        raise QtcError(f"per-feature input params are for 8/4-bit inputs, not {bits}-bit",
                       hint="drop --per-feature-input, or the input from --int16")
    g = g.copy()
    calib = dict(calib)
    fixed, boundary = {}, {}
    s = inner_scale(bits)
    for name in names:
        why = eligible(g, name)
        if why is not None:
            raise QtcError(why, where=f"graph {g.name}",
                           hint="per-feature input params need an input read only by FullyConnected layers; "
                                "drop --per-feature-input")
        x = np.asarray(calib[name], dtype=np.float32)
        scale, zp = (params or {}).get(name) or feature_params(x, bits, power_of_two)
        r = scale.astype(np.float64) / s
        c = -zp.astype(np.float64) * scale.astype(np.float64)
        for n in g.consumers()[name]:
            w = g.tensors[n.inputs[1]].data.astype(np.float64)
            b = g.tensors[n.inputs[2]].data.astype(np.float64) if len(n.inputs) > 2 and n.inputs[2] else 0.0
            w_new = g.add_const(f"{n.inputs[1]}_per_feature", (w * r[None, :]).astype(np.float32))
            b_new = g.add_const(f"{n.name}_bias_per_feature", (b + w @ c).astype(np.float32))
            n.inputs = [n.inputs[0], w_new.name, b_new.name]
        calib[name] = ((x.astype(np.float64) - c) / r).astype(np.float32)
        fixed[name] = QuantParams(np.float32(s), 0, bits=bits, symmetric=True, power_of_two=power_of_two)
        boundary[name] = QuantParams(scale, zp, axis=-1, bits=bits, symmetric=not zp.any(),
                                     power_of_two=power_of_two)
    g.remove_unused_tensors()
    return g, calib, fixed, boundary
