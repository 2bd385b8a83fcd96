"""Layer-by-layer refinement of a quantized graph: AdaRound, then bias correction.

The *sequential* scheme: weight layers are visited in graph order; for each
one the current quantized graph (earlier layers already refined) is run over
the calibration set, and the layer's input as the quantized model computes
it (``x^``, dequantized) is what AdaRound reconstructs from and what bias
correction averages.  AdaRound's target is the float layer's output on the
float model's input ``x`` (asymmetric reconstruction, AdaRound paper §5).
With ``AdaRoundConfig.inputs = "float"`` both use the float model's inputs
instead (one float run, no re-runs of the quantized graph).

Scales never change, so activation params, bias scales and power-of-two
constraints hold as the quantizer set them; the integer weights change and
the int32 bias is re-quantized from the corrected float bias.  AdaRound's
result is kept only if its reconstruction error on the sampled rows is no
worse than nearest rounding's (recorded per layer).
"""
from __future__ import annotations

import warnings

import numpy as np

from ...ir.graph import Graph
from .adaround import AdaRoundConfig, adaround, layer_target, reconstruction_error
from .bias_correction import bias_shift, corrected_bias
from .builder import QuantizeWarning
from .collect import collect
from .constraints import QuantSpec
from .layers import WeightLayer, weight_layers
from .params import quantize_bias


def _scale_matrix(layer: WeightLayer, qg: Graph) -> np.ndarray:
    t = qg.tensors[layer.w_int]
    s = t.quant.scale.astype(np.float64).reshape(t.quant.broadcast_shape(t.data.ndim))
    return layer.to_matrix(np.broadcast_to(s, t.data.shape))


def _uses(qg: Graph, name: str) -> int:
    return sum(i == name for n in qg.nodes for i in n.inputs) + (name in qg.outputs)


def _set_bias(qg: Graph, layer: WeightLayer, b: np.ndarray, spec: QuantSpec, report: dict) -> None:
    node = qg.node(layer.node)
    name = layer.bias
    if not name or _uses(qg, name) > 1:  # no bias yet, or shared: this layer gets its own
        name = qg.unique_name(f"{layer.node}/bias")
        qg.add_tensor(name, b.shape, "float32", data=b)
        node.inputs = [*node.inputs[:2], name]
        layer.bias = name
    t = qg.tensors[name]
    if layer.dynamic:
        t.data, t.dtype, t.quant = b.astype(np.float32), "float32", None
        return
    in_scale = float(qg.tensors[node.inputs[0]].quant.scale[0])
    w_scale = qg.tensors[layer.w_int].quant.scale
    bias_bits = spec.bias_bits_at(qg.tensors[layer.w_int].quant.bits)
    qb, bq, clipped = quantize_bias(b, in_scale, w_scale, bits=bias_bits, rounding=spec.rounding)
    if clipped:
        warnings.warn(f"node {layer.node}: {clipped} corrected bias value(s) exceed the target's "
                      f"{bias_bits}-bit bias and were clipped", QuantizeWarning, stacklevel=4)
        report["bias_clipped"] = int(clipped)
    t.shape = tuple(qb.shape)
    t.data, t.dtype, t.quant = qb, "int32", bq


def refine(qg: Graph, fg: Graph, calib: dict[str, np.ndarray], spec: QuantSpec, *,
           adaround_cfg: AdaRoundConfig | None = None, bias_correction: bool = False,
           progress: bool = False, skip: frozenset[str] = frozenset()) -> dict:
    """Refine ``qg`` in place (``fg``: the float graph it was quantized from); returns metadata.

    Layers named in ``skip`` (refined elsewhere: :mod:`.block_recon`) are left alone.
    """
    from tqdm import tqdm

    layers = weight_layers(qg, fg)
    index = {lay.node: k for k, lay in enumerate(layers)}  # seeds stay those of the full layer list
    layers = [lay for lay in layers if lay.node not in skip]
    meta: dict = {"layers": []}
    if not layers or (adaround_cfg is None and not bias_correction):
        return meta
    float_inputs = adaround_cfg is not None and adaround_cfg.inputs == "float"
    need_float = adaround_cfg is not None
    xs_float = collect(fg, calib, [lay.x_float for lay in layers]) if need_float else {}
    for lay in tqdm(layers, desc="refine", unit="layer", disable=not progress, leave=False):
        k = index[lay.node]
        report: dict = {"node": lay.node, "op": lay.op}
        if float_inputs:
            xq = xs_float[lay.x_float]
        else:
            xq = collect(qg, calib, [lay.x_quant])[lay.x_quant]
        wt = qg.tensors[lay.w_int]
        wm, scale = lay.to_matrix(lay.w_float), _scale_matrix(lay, qg)
        ints = lay.to_matrix(wt.data.astype(np.int64))
        if adaround_cfg is not None:
            xf = xs_float[lay.x_float]
            total = lay.row_count(xf)
            rng = np.random.default_rng([adaround_cfg.seed, k])
            idx = np.sort(rng.choice(total, size=min(total, adaround_cfg.max_rows), replace=False))
            rows_q, rows_f = lay.rows(xq, idx), lay.rows(xf, idx)
            bias = lay.bias_vector()
            target = layer_target(rows_f, wm, bias, lay.activation)
            err_near = reconstruction_error(rows_q, scale * ints, bias, target, lay.activation)
            cfg = AdaRoundConfig(**{**adaround_cfg.__dict__, "seed": adaround_cfg.seed * 1000 + k})
            learned = adaround(wm, scale, wt.quant.qmin, wt.quant.qmax, rows_q, target, bias, lay.activation, cfg)
            err_ada = reconstruction_error(rows_q, scale * learned, bias, target, lay.activation)
            keep = err_ada <= err_near
            report["adaround"] = {"rows": int(idx.size), "mse_nearest": round(err_near, 8),
                                  "mse_adaround": round(err_ada, 8),
                                  "changed": int(np.sum(learned != ints)) if keep else 0,
                                  "kept_nearest": not keep}
            if keep:
                ints = learned
                wt.data = lay.from_matrix(ints).astype(np.int8)
        if bias_correction and lay.op != "MatMul":
            shift = bias_shift(wm, scale * ints, lay.mean_row(xq))
            _set_bias(qg, lay, corrected_bias(lay.b_float, shift), spec, report)
            report["bias_shift_max"] = round(float(np.max(np.abs(shift))), 8) if shift.size else 0.0
        meta["layers"].append(report)
    return meta
