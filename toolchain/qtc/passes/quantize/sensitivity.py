"""Per-layer quantization sensitivity and a greedy mixed-precision proposal.

:func:`rank_layers` quantizes one weight layer at a time (its weights, its
input and output activations; every other node stays float, bridged by
Quantize/Dequantize) and measures the model's output SQNR on the
calibration set,

    SQNR = 10 · log10( Σ y² / Σ (y~ − y)² )   over every output value,

so a low SQNR means the layer alone adds a large error.  Layers are ranked
most sensitive (lowest SQNR) first.

:func:`propose` then looks for the smallest set of layers to keep at high
precision (float, int16 activations, or 8-bit weights in a low-bit run): starting from the fully quantized
model, it adds the next most sensitive layer to the set until the budget
holds, measuring the whole quantized model each time.  A budget is a
minimum output SQNR in dB (on the calibration set), or a maximum top-1
accuracy drop against labels on an evaluation set.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ...errors import QtcError
from ...ir.graph import Graph
from .collect import collect
from .constraints import WEIGHTED_OPS
from .quantizer import _canonical, quantize

SQNR_CAP_DB = 200.0  # an exact output (no error at all) reports this


def sqnr_db(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> float:
    signal = sum(float(np.sum(np.asarray(ref[k], np.float64) ** 2)) for k in ref)
    noise = sum(float(np.sum((np.asarray(out[k], np.float64) - np.asarray(ref[k], np.float64)) ** 2)) for k in ref)
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return float(min(10.0 * math.log10(signal / noise), SQNR_CAP_DB))


def weight_layer_nodes(g: Graph) -> list:
    """Nodes with a constant weight: Conv/ConvTranspose/FullyConnected, MatMul with a constant B."""
    out = []
    for n in g.nodes:
        if (n.op in WEIGHTED_OPS or n.op == "MatMul") and len(n.inputs) > 1 and n.inputs[1] \
                and g.tensors[n.inputs[1]].is_const:
            out.append(n)
    return out


def top1(g: Graph, data: dict[str, np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of the first output's argmax over its last axis."""
    y = collect(g, data, [g.outputs[0]])[g.outputs[0]]
    labels = np.asarray(labels).reshape(-1)
    if y.size % labels.size:
        raise QtcError(f"output {g.outputs[0]!r} has {y.size} values, not a multiple of {labels.size} labels",
                       where=f"graph {g.name}", hint="give one label per evaluation sample")
    return float(np.mean(np.argmax(y.reshape(labels.size, -1), axis=1) == labels))


def precision_settings(layers: list[str], precision: str, g: Graph) -> dict:
    """quantize() keyword arguments keeping ``layers`` at ``precision`` (exact names)."""
    if precision == "float":
        return {"keep_float": [f"={name}" for name in layers], "int16": []}
    if precision == "w8":  # mixed-precision weights: these layers' weights at 8 bits
        return {"keep_float": [], "int16": [], "layer_wbits": {f"={name}": 8 for name in layers}}
    if precision != "int16":
        raise QtcError(f"unknown precision {precision!r}", hint="use float, int16 or w8")
    by_name = {n.name: n for n in g.nodes}
    pats: list[str] = []
    for name in layers:  # the layer's output and its activation input become int16 (a 16x8 layer)
        pats += [f"={name}", f"={by_name[name].inputs[0]}"]
    return {"keep_float": [], "int16": list(dict.fromkeys(pats))}


def rank_layers(g: Graph, calib: dict[str, np.ndarray], *, progress: bool = True,
                **qargs) -> tuple[Graph, list[dict]]:
    """(canonical graph, ranking) — one quantized layer at a time, lowest output SQNR first."""
    from tqdm import tqdm

    cg = _canonical(g)
    layers = weight_layer_nodes(cg)
    if not layers:
        raise QtcError("the model has no weight layer to rank", where=f"graph {g.name}",
                       hint="sensitivity ranks Conv/FullyConnected/MatMul layers with constant weights")
    ref = collect(cg, calib, cg.outputs)
    rows = []
    for n in tqdm(layers, desc="sensitivity", unit="layer", disable=not progress, leave=False):
        others = [f"={m.name}" for m in cg.nodes if m.name != n.name]
        q = quantize(cg, calib, mode="mixed", keep_float=others, canonicalize=False, progress=False, **qargs)
        quantized = not any(f["node"] == n.name for f in q.metadata["quantization"]["float_nodes"])
        out = collect(q, calib, cg.outputs)
        rows.append({"layer": n.name, "op": n.op, "sqnr_db": round(sqnr_db(ref, out), 3),
                     "params": int(cg.tensors[n.inputs[1]].size), "quantized": quantized})
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["sqnr_db"], i))
    ranking = [{"rank": r + 1, **rows[i]} for r, i in enumerate(order)]
    return cg, ranking


def propose(cg: Graph, calib: dict[str, np.ndarray], ranking: list[dict], *, budget_sqnr: float | None = None,
            budget_drop: float | None = None, eval_data: dict[str, np.ndarray] | None = None,
            labels: np.ndarray | None = None, precision: str = "float", progress: bool = True,
            **qargs) -> dict:
    """Greedy smallest high-precision set meeting the budget (see the module docstring)."""
    from tqdm import tqdm

    if (budget_sqnr is None) == (budget_drop is None):
        raise QtcError("give exactly one budget", hint="--budget-sqnr DB or --budget-drop X (with --eval and --labels)")
    measure: Callable[[Graph], float]
    if budget_drop is not None:
        if eval_data is None or labels is None:
            raise QtcError("--budget-drop needs an evaluation set with labels",
                           hint="pass --eval EVAL.npy --labels Y.npy")
        if not 0.0 <= budget_drop < 1.0:
            raise QtcError(f"accuracy drop {budget_drop} is not a fraction", hint="e.g. 0.01 (or 1%) for one point")
        float_acc = top1(cg, eval_data, labels)
        measure = lambda q: top1(q, eval_data, labels)  # noqa: E731
        holds = lambda v: float_acc - v <= budget_drop + 1e-12  # noqa: E731
        budget = {"kind": "accuracy_drop", "max_drop": budget_drop, "float_accuracy": round(float_acc, 6),
                  "eval_samples": int(np.asarray(labels).size)}
    else:
        ref = collect(cg, calib, cg.outputs)
        measure = lambda q: sqnr_db(ref, collect(q, calib, cg.outputs))  # noqa: E731
        holds = lambda v: v >= budget_sqnr  # noqa: E731
        budget = {"kind": "sqnr_db", "min_sqnr_db": budget_sqnr}
    order = [r["layer"] for r in ranking]
    kept: list[str] = []
    steps = []
    bar = tqdm(total=len(order) + 1, desc="propose", unit="model", disable=not progress, leave=False)
    try:
        while True:
            sel = precision_settings(kept, precision, cg)
            q = quantize(cg, calib, mode="mixed", canonicalize=False, progress=False, **sel, **qargs)
            value = measure(q)
            steps.append({"high_precision": list(kept), "value": round(float(value), 6)})
            bar.update(1)
            if holds(value) or len(kept) == len(order):
                break
            kept.append(order[len(kept)])
    finally:
        bar.close()
    met = holds(steps[-1]["value"])
    return {"budget": budget, "met": bool(met), "precision": precision, "layers": kept, "steps": steps,
            **precision_settings(kept, precision, cg)}
