"""From the trained QAT model back to qtc's integer IR, with the learned parameters.

:func:`qat_to_ir` rebuilds the quantized graph from the QAT model's float graph
with PTQ's own :class:`~qtc.passes.quantize.builder.Builder` (same placement,
same bridges, same fixed-output and same-params rules), taking

* activation scales / zero points from the learned LSQ quantizers,
* weights as the integer codes the fake-quant forward used
  (``clamp(round(w/s), ±qmax)`` in float64 with the target's rounding) and the
  learned per-channel steps as their scales,
* biases re-quantized from the trained float biases with scale ``s_in·s_w[c]``
  (:func:`qtc.passes.quantize.params.quantize_bias`, as the forward did).

The result passes :func:`qtc.passes.quantize.check` for the target and runs in
the integer interpreter; it differs from the fake-quant forward only by the
integer kernels' requantization rounding.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import QtcError, ShapeError
from ..ir.boundary import META_KEY as BOUNDARY_KEY
from ..ir.boundary import quant_to_json
from ..ir.graph import Graph
from ..ir.validate import infer_shapes, validate
from ..passes.quantize.builder import Builder, QuantizeWarning
from ..passes.quantize.constraints import spec_for
from ..passes.quantize.params import quantize_bias
from .wrap import QatModel


def unwrap(model) -> QatModel:
    """The :class:`QatModel` inside a DistributedDataParallel (or the model itself)."""
    inner = getattr(model, "module", model) if isinstance(model, nn.Module) else model
    if not isinstance(inner, QatModel):
        raise QtcError(f"expected a QAT model, got {type(model).__name__}",
                       hint="pass the model returned by train_qat or prepare_qat")
    return inner


def _with_inputs(g: Graph, example_inputs) -> Graph:
    """``g`` with input shapes taken from ``example_inputs`` (re-inferred when the batch differs)."""
    arrays = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if len(arrays) != len(g.inputs):
        raise ShapeError(f"got {len(arrays)} example input(s) for {len(g.inputs)} graph input(s)",
                         where=f"graph {g.name}", hint=f"pass one example per input {g.inputs}")
    shapes = [tuple(int(d) for d in np.shape(a)) for a in arrays]
    if all(s == g.tensors[n].shape for s, n in zip(shapes, g.inputs)):
        return g
    r = g.copy()
    try:
        for name, s in zip(r.inputs, shapes):
            r.tensors[name].shape = s
        for n in r.nodes:
            for o in n.outputs:
                r.tensors[o].shape = ()
        infer_shapes(r)
        validate(r)
    except Exception as exc:  # noqa: BLE001 - any shape failure: say how to fix it
        raise ShapeError(f"the QAT graph cannot take input shapes {shapes}: {exc}", where=f"graph {g.name}",
                         hint="prepare the QAT model with example inputs of the deployed shape") from None
    return r


def qat_to_ir(qat_model, example_inputs=None, target=None) -> Graph:
    """The integer qtc graph of a trained QAT model (see the module docstring).

    ``example_inputs`` (optional) sets the deployed input shapes (default: the
    shapes the QAT model was prepared with).  ``target`` (optional) must be the
    target the model was trained for; it is checked, not changed.
    """
    qat = unwrap(qat_model)
    spec = qat.spec
    if target is not None:
        want = spec_for(target, wbits=spec.wbits, abits=spec.abits, per_channel=spec.per_channel)
        if want.to_json() != spec.to_json():
            raise QtcError(f"the QAT model was trained for target {spec.target}, not {want.target}",
                           hint=f"export with target={spec.target!r}, or train again for {want.target}")
    g = qat.graph.copy()
    for name, key in qat.param_of.items():
        g.tensors[name].data = qat.weights[key].detach().cpu().numpy().astype(np.float32).copy()
    if example_inputs is not None:
        g = _with_inputs(g, example_inputs)
    float_w = {name: g.tensors[name].data for name in qat.param_of}

    def act_params(name: str):
        key = qat.int_q.get(name)
        if key is None:
            raise QtcError(f"tensor {name!r} has no learned quantizer", where=f"graph {g.name}",
                           hint="this is a qtc bug: the QAT model and the builder disagree on placement")
        return qat.act_q[key].export_params()

    b = Builder(g, spec, act_params, set(qat.int_nodes), set(), "minmax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizeWarning)  # biases are re-quantized below with the learned scales
        b.inputs()
        for n in list(g.nodes):
            b.node(n)
    g.nodes = b.nodes
    built = {n.name: n for n in g.nodes}
    clipped = []
    for st in qat._plan:
        if st.weight_q is None:
            continue
        wq = qat.weight_q[st.weight_q]
        node = built[st.node.name]
        w_float = float_w[st.node.inputs[1]]
        w_eff, b_eff = _effective(qat, st, float_w)
        wt = g.tensors[node.inputs[1]]
        wt.data, wt.dtype, wt.quant = wq.codes(w_eff), "int8", wq.export_params()
        if wt.data.shape != w_float.shape:
            raise QtcError(f"weight {node.inputs[1]!r} changed shape", where=f"node {node.name}",
                           hint="this is a qtc bug")
        if len(node.inputs) > 2 and node.inputs[2]:
            bt = g.tensors[node.inputs[2]]
            in_scale = float(g.tensors[node.inputs[0]].quant.scale[0])
            qb, bq, n_clip = quantize_bias(b_eff, in_scale, wt.quant.scale,
                                           bits=spec.bias_bits, rounding=spec.rounding)
            bt.data, bt.dtype, bt.quant = qb, "int32", bq
            if n_clip:
                clipped.append({"node": node.name, "tensor": node.inputs[2], "count": n_clip, "bits": spec.bias_bits})
    g.remove_unused_tensors()
    validate(g)
    g.metadata["quantization"] = {
        "qtc_version": __version__,
        "scheme": "tflite-int8",
        "mode": "static",
        "method": "qat-lsq",
        "observer": None,
        "weight_method": "qat-lsq",
        "wbits": spec.wbits,
        "abits": spec.abits,
        "per_channel": spec.per_channel,
        "target": spec.to_json(),
        "keep_float": list(qat.info.get("keep_float", [])),
        "int16": [],
        "float_nodes": list(qat.info.get("float_nodes", [])),
        "bias_clipped": clipped,
        "calibration": None,
        "canonicalized": True,
        "weights": "symmetric narrow-range, axis 0" if spec.per_channel else "symmetric narrow-range, per-tensor",
        "qat": {k: v for k, v in qat.info.items() if k not in ("keep_float", "float_nodes")},
        "per_feature_input": {name: {"features": int(qat.feature_q[k].log2_scale.numel()),
                                     "inner_scale": qat.feature_q[k].inner, "learned": True}
                              for name, k in sorted(qat.feature_of.items())} or None,
    }
    live = {name: k for name, k in qat.feature_of.items() if g.tensors[name].quant is not None}
    if live:
        g.metadata[BOUNDARY_KEY] = {name: quant_to_json(qat.feature_q[k].export_params())
                                    for name, k in sorted(live.items())}
    return g


@torch.no_grad()
def _effective(qat: QatModel, st, float_w: dict) -> tuple:
    """The float weight the step's codes come from and its float bias (None without one): the
    trained values, or for a per-feature input's consumer the folded ``W'`` and ``b - s·Q(W')·Z``
    exactly as the fake-quant forward computes them."""
    w = qat.weights[qat.param_of[st.node.inputs[1]]]
    has_b = len(st.node.inputs) > 2 and bool(st.node.inputs[2])
    if st.feature_in is None:
        return w, (float_w[st.node.inputs[2]] if has_b else None)
    fq = qat.feature_q[st.feature_in]
    w_eff = fq.fold_weight(w)
    b = qat.weights[qat.param_of[st.node.inputs[2]]] if has_b else None
    return w_eff, fq.fold_bias(b, qat.weight_q[st.weight_q](w_eff)).numpy()
