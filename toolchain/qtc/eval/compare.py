"""Float vs quantized: run both graphs on the same eval samples and measure the difference.

:func:`compare` runs the float graph with float32 semantics and the quantized
graph with exact integer arithmetic (float in: inputs are quantized with the
graph's input params; float out: outputs are dequantized), one sample at a
time, and returns the ``eval_<variant>.json`` document:

* the task metric of both models (accuracy from argmax vs labels, or MSE/MAE
  vs regression targets) and its change;
* per output: MSE, max/mean/p99 |err|, cosine similarity, NaN/Inf counts and
  the users' guide verdicts (see :mod:`qtc.eval.metrics`);
* per layer: SQNR of every quantized node's output against the float graph's
  tensor of the same name (integer intermediates dequantized with their own
  params).  A node whose output name has no float twin is matched by node
  name, then by a normalized name; the rest are listed as skipped.

:func:`evaluate_float` gives ``eval_float.json``: the float model's metric alone.
Samples: arrays hold samples on axis 0; a model whose input has batch 1 runs
each sample on its own.
"""
from __future__ import annotations

import hashlib
import re
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import QtcError, ShapeError
from ..ir.graph import Graph
from ..ir.tensor import INT_DTYPES
from . import metrics as M

SCHEMA = "qtc.eval/1"
METRICS = ("auto", "accuracy", "mse", "mae", "agreement", "cosine", "none")
BRIDGE_OPS = ("Quantize", "Dequantize")


# --------------------------------------------------------------------------- samples
def sample_count(g: Graph, inputs: dict[str, np.ndarray]) -> int:
    """How many samples ``inputs`` hold for ``g`` (axis 0; one sample when the shape is the input's)."""
    n = None
    for name in g.inputs:
        if name not in inputs:
            raise ShapeError(f"no eval data for graph input {name!r}", where=f"graph {g.name}",
                             hint=f"give one array per input; the inputs are {g.inputs}")
        x, shape = np.asarray(inputs[name]), g.tensors[name].shape
        if tuple(x.shape) == shape and shape[:1] != (1,):
            count = 1
        elif shape and shape[0] == 1 and tuple(x.shape[1:]) == shape[1:]:
            count = x.shape[0]
        else:
            raise ShapeError(f"eval data for {name!r} has shape {tuple(x.shape)}, the model takes samples of "
                             f"{shape}", where=f"graph {g.name}",
                             hint="stack samples on axis 0 in the model's layout (NCHW vs NHWC)")
        if n is not None and count != n:
            raise ShapeError(f"eval inputs hold different sample counts ({n} vs {count})", where=f"graph {g.name}",
                             hint="give every input the same number of samples")
        n = count
    return int(n or 0)


def _feeds(g: Graph, inputs: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    out = {}
    for name in g.inputs:
        x, shape = np.asarray(inputs[name]), g.tensors[name].shape
        out[name] = x if tuple(x.shape) == shape and shape[:1] != (1,) else x[i:i + 1]
    return out


def align_inputs(g: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Key ``inputs`` by ``g``'s input names; arrays keyed by another graph's names go by position."""
    if set(g.inputs) <= set(inputs):
        return {k: inputs[k] for k in g.inputs}
    if len(inputs) == len(g.inputs):
        return dict(zip(g.inputs, inputs.values()))
    raise ShapeError(f"eval data has arrays {sorted(inputs)}, the graph's inputs are {g.inputs}",
                     where=f"graph {g.name}", hint="name the arrays after the model inputs")


def data_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype}|{tuple(a.shape)}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- runs
def _stack(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts, axis=0) if parts and parts[0].ndim else np.stack(parts)


def float_runner(g: Graph) -> Callable:
    from ..interp.runner import run

    if g.is_quantized:
        raise QtcError("the float model is quantized", where=f"graph {g.name}",
                       hint="pass the float model first and the quantized one second")
    return lambda feeds, keep=False: run(g, feeds, keep=keep)


def quant_runner(g: Graph, numerics: str = "tflite") -> Callable:
    from ..interp.runner import run_quantized

    if not g.is_quantized:
        raise QtcError("the quantized model has no integer tensors", where=f"graph {g.name}",
                       hint="quantize it first: qtc quantize FLOAT --calib ... -o QUANT.qir")
    return lambda feeds, keep=False: run_quantized(g, feeds, numerics=numerics, keep=keep)


def dequantized(g: Graph, name: str, value: np.ndarray) -> np.ndarray:
    """A tensor as float32: integer tensors with params are dequantized, float ones pass.

    A graph input with per-feature params reads back in the user's units (:mod:`qtc.ir.boundary`)."""
    from ..ir.boundary import input_params

    t = g.tensors.get(name)
    if t is not None and t.quant is not None and t.dtype in INT_DTYPES:
        return (input_params(g, name) if name in g.inputs else t.quant).dequantize(value)
    return np.asarray(value, dtype=np.float32)


# --------------------------------------------------------------------------- layer matching
def _norm(name: str) -> str:
    name = re.sub(r":\d+$", "", name)
    return re.sub(r"[/.:_\-]+", "_", name).strip("_").lower()


_FAMILIES = ({"Conv1D", "Conv2D"}, {"Reshape", "Flatten", "Squeeze", "Unsqueeze"},
             {"AvgPool", "GlobalAvgPool", "Mean"}, {"FullyConnected", "MatMul"})


def _family(op: str) -> str:
    return next((min(f) for f in _FAMILIES if op in f), op)


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def match_layers(fg: Graph, qg: Graph) -> tuple[list[dict], list[dict]]:
    """Pair every quantized node's output with a float tensor; returns (matched, skipped).

    Order: same tensor name; else the float node of the same name (its output
    at the same position); else the same normalized tensor or node name
    (``/``, ``.``, ``:``, ``-`` alike, case and a ``:0`` suffix ignored); else a
    scope component of the quantized name that names a float node or tensor
    made by the same kind of op (``model/conv1/Relu_1`` → ``conv1``, the
    innermost such component; Conv1D/Conv2D alike, reshapes alike); graph
    inputs and outputs finally by position.  Bridges (Quantize/Dequantize) are
    not layers.  Shapes must agree up to unit dimensions.
    """
    f_nodes = {n.name: n for n in fg.nodes}
    f_producer = {o: n.op for n in fg.nodes for o in n.outputs}
    f_acts = {name for name, t in fg.tensors.items() if not t.is_const}
    f_by_norm: dict[str, str] = {}
    for name in fg.inputs:
        f_by_norm.setdefault(_norm(name), name)
    for n in fg.nodes:
        for o in n.outputs:
            f_by_norm.setdefault(_norm(o), o)
        if len(n.outputs) == 1:
            f_by_norm.setdefault(_norm(n.name), n.outputs[0])
    matched, skipped = [], []
    rows = [(name, "(input)", "(input)", 0) for name in qg.inputs]
    rows += [(o, n.name, n.op, k) for n in qg.nodes if n.op not in BRIDGE_OPS for k, o in enumerate(n.outputs)]
    for qname, node, op, k in rows:
        fname, how = None, None
        if qname in f_acts:
            fname, how = qname, "tensor name"
        elif node in f_nodes and k < len(f_nodes[node].outputs):
            fname, how = f_nodes[node].outputs[k], "node name"
        elif _norm(qname) in f_by_norm:
            fname, how = f_by_norm[_norm(qname)], "normalized name"
        elif op != "(input)" and _norm(node) in f_by_norm:
            fname, how = f_by_norm[_norm(node)], "normalized node name"
        else:
            for part in reversed(re.split(r"[/:]", qname)[:-1]):
                cand = f_by_norm.get(_norm(part)) if part else None
                if cand is not None and _family(f_producer.get(cand, "")) == _family(op):
                    fname, how = cand, "scope component"
                    break
        for names_q, names_f, kind in ((qg.inputs, fg.inputs, "input"), (qg.outputs, fg.outputs, "output")):
            if fname is None and qname in names_q and names_q.index(qname) < len(names_f):
                fname, how = names_f[names_q.index(qname)], f"{kind} position"
        entry = {"tensor": qname, "node": node, "op": op}
        if fname is None:
            skipped.append({**entry, "reason": "no float counterpart by name (see match_layers)"})
            continue
        fs, qs = fg.tensors[fname].shape, qg.tensors[qname].shape
        if fs != qs and _squeezed(fs) != _squeezed(qs):
            skipped.append({**entry, "reason": f"float tensor {fname!r} ({how}) has shape {list(fs)}, "
                                              f"quantized {list(qs)}"})
            continue
        matched.append({**entry, "float_tensor": fname, "matched_by": how,
                        "dtype": qg.tensors[qname].dtype})
    return matched, skipped


# --------------------------------------------------------------------------- metric
def resolve_metric(metric: str, labels: np.ndarray | None) -> str:
    if metric not in METRICS:
        raise QtcError(f"unknown metric {metric!r}", hint=f"use one of: {', '.join(METRICS)}")
    if metric == "auto":
        if labels is None:
            return "none"
        return "accuracy" if np.issubdtype(np.asarray(labels).dtype, np.integer) else "mse"
    if metric in ("accuracy", "mse", "mae") and labels is None:
        raise QtcError(f"--metric {metric} needs labels", hint="pass --labels y.npy, or use --metric agreement")
    return metric


def task_metric(metric: str, out: np.ndarray, labels: np.ndarray | None, ref: np.ndarray | None = None):
    """The task metric of one model's first output; None when it does not apply."""
    if metric == "accuracy":
        return M.accuracy(out, labels)
    if metric in ("mse", "mae"):
        y = np.asarray(labels, dtype=np.float64)
        if y.size != out.size:
            raise ShapeError(f"labels hold {y.size} values, the model output {out.size}", where="--labels",
                             hint="regression targets must have the output's shape")
        d = out.astype(np.float64).reshape(-1) - y.reshape(-1)
        return float(np.mean(d * d)) if metric == "mse" else float(np.mean(np.abs(d)))
    if metric == "agreement" and ref is not None:
        return M.agreement(ref, out)
    if metric == "cosine" and ref is not None:
        return M.cosine(ref, out)
    return None


HIGHER_IS_BETTER = {"accuracy": True, "agreement": True, "cosine": True, "mse": False, "mae": False}


def _check_labels(labels, n: int):
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape[:1] != (n,):
        raise ShapeError(f"labels have shape {labels.shape}, expected {n} samples on axis 0", where="--labels",
                         hint="give one label (or target row) per eval sample")
    return labels


# --------------------------------------------------------------------------- public API
def evaluate_float(fg: Graph, inputs: dict[str, np.ndarray], labels=None, metric: str = "auto",
                   model_name: str | None = None, data_name: str | None = None) -> dict:
    """``eval_float.json``: the float model's task metric and output sanity on the eval split."""
    run = float_runner(fg)
    inputs = align_inputs(fg, inputs)
    n = sample_count(fg, inputs)
    labels = _check_labels(labels, n)
    metric = resolve_metric(metric, labels)
    if metric in ("agreement", "cosine"):
        raise QtcError(f"--metric {metric} compares two models", hint="use accuracy/mse/mae with --variant float")
    outs: dict[str, list] = {o: [] for o in fg.outputs}
    for i in range(n):
        res = run(_feeds(fg, inputs, i))
        for o in fg.outputs:
            outs[o].append(np.asarray(res[o], dtype=np.float32))
    arrays = {o: _stack(v) for o, v in outs.items()}
    first = arrays[fg.outputs[0]] if fg.outputs else None
    value = task_metric(metric, first, labels) if first is not None else None
    return {
        "schema": SCHEMA, "variant": "float", "qtc_version": __version__,
        "model": model_name or fg.name,
        "eval": _eval_block(inputs, n, data_name, labels),
        "metric": {"name": metric, "value": value},
        "outputs": {o: {"shape": list(a.shape), **M.finite_check(a),
                        "finite": bool(np.all(np.isfinite(a)))} for o, a in arrays.items()},
    }


def _eval_block(inputs, n, data_name, labels) -> dict:
    return {"data": data_name, "samples": n, "sha256": data_sha256(inputs),
            "labels": None if labels is None else {"shape": list(labels.shape), "dtype": str(labels.dtype)}}


def compare(fg: Graph, qg: Graph, inputs: dict[str, np.ndarray], labels=None, *, metric: str = "auto",
            variant: str = "ptq", numerics: str = "tflite", layer_samples: int | None = None,
            float_name: str | None = None, quant_name: str | None = None, data_name: str | None = None) -> dict:
    """Run both graphs on every eval sample; returns the ``eval_<variant>.json`` document.

    ``layer_samples`` caps how many samples feed the per-layer SQNR table
    (None = all of them); output metrics always use every sample.
    """
    frun, qrun = float_runner(fg), quant_runner(qg, numerics)
    finputs = align_inputs(fg, inputs)
    qinputs = align_inputs(qg, inputs)
    n = sample_count(fg, finputs)
    nq = sample_count(qg, qinputs)
    if n != nq:
        raise ShapeError(f"the float model sees {n} samples, the quantized one {nq}", where="eval data",
                         hint="the two models must take the same input shapes")
    if len(fg.outputs) != len(qg.outputs):
        raise QtcError(f"the float model has {len(fg.outputs)} outputs, the quantized one {len(qg.outputs)}",
                       hint="compare a model with its own quantized version")
    labels = _check_labels(labels, n)
    metric = resolve_metric(metric, labels)
    matched, skipped = match_layers(fg, qg)
    acc = M.SqnrAccumulator()
    n_layer = n if layer_samples is None else min(n, max(int(layer_samples), 0))
    fouts: dict[str, list] = {o: [] for o in fg.outputs}
    qouts: dict[str, list] = {o: [] for o in qg.outputs}
    for i in range(n):
        keep = i < n_layer and bool(matched)
        fres = frun(_feeds(fg, finputs, i), keep=keep)
        qres = qrun(_feeds(qg, qinputs, i), keep=keep)
        for o in fg.outputs:
            fouts[o].append(np.asarray(fres[o], dtype=np.float32))
        for o in qg.outputs:  # run_quantized dequantizes the graph outputs
            qouts[o].append(np.asarray(qres[o], dtype=np.float32))
        if keep:
            for m in matched:
                name = m["tensor"]
                qv = qres[name] if name in qg.outputs else dequantized(qg, name, qres[name])
                acc.add(name, np.reshape(fres[m["float_tensor"]], -1), np.reshape(qv, -1))
    fa = {o: _stack(v) for o, v in fouts.items()}
    qa = {o: _stack(v) for o, v in qouts.items()}
    outputs = {}
    for fo, qo in zip(fg.outputs, qg.outputs):
        if fa[fo].shape != qa[qo].shape:
            raise ShapeError(f"output {fo!r} is {fa[fo].shape} in the float model, {qa[qo].shape} quantized",
                             hint="compare models with the same output layout")
        outputs[fo] = {"quant_output": qo, "shape": list(fa[fo].shape), **M.output_errors(fa[fo], qa[qo])}
    first_f, first_q = fa[fg.outputs[0]], qa[qg.outputs[0]]
    fval = task_metric(metric, first_f, labels, first_f)
    qval = task_metric(metric, first_q, labels, first_f)
    metric_doc = {"name": metric, "float": fval, "quant": qval,
                  "delta": None if fval is None or qval is None else qval - fval}
    if metric_doc["delta"] is not None and metric in HIGHER_IS_BETTER and fval:
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        metric_doc["relative_drop"] = -sign * metric_doc["delta"] / abs(fval)
    if first_f.ndim == 2 and first_f.shape[1] > 1:
        metric_doc["top1_agreement"] = M.agreement(first_f, first_q)
    layers = []
    for m in matched:
        if m["tensor"] not in acc.signal:
            continue
        layers.append({**m, "sqnr_db": M.json_float(acc.sqnr(m["tensor"])), "mse": acc.mse(m["tensor"])})
    worst = [o for o in outputs.values()]
    summary = {
        "mse": max(o["mse"] for o in worst),
        "max_abs_err": max(o["max_abs_err"] for o in worst),
        "mean_sample_max_abs_err": max(o["mean_sample_max_abs_err"] for o in worst),
        "p99_abs_err": max(o["p99_abs_err"] for o in worst),
        "cosine": min(o["cosine"] for o in worst),
        "finite": all(o["finite"] for o in worst),
    }
    summary["verdict"] = M.mse_verdict(summary["mse"]) if summary["finite"] else "significant"
    summary["max_error_verdict"] = M.max_error_verdict(summary["mean_sample_max_abs_err"])
    return {
        "schema": SCHEMA, "variant": variant, "qtc_version": __version__,
        "float_model": float_name or fg.name, "quant_model": quant_name or qg.name,
        "numerics": numerics,
        "quantization": _quant_summary(qg),
        "eval": {**_eval_block(finputs, n, data_name, labels), "layer_samples": n_layer},
        "metric": metric_doc,
        "summary": summary,
        "outputs": outputs,
        "layers": layers,
        "skipped_layers": skipped,
    }


def _quant_summary(qg: Graph) -> dict:
    meta = qg.metadata.get("quantization") or {}
    target = meta.get("target")
    return {"method": meta.get("method"), "wbits": meta.get("wbits"), "abits": meta.get("abits"),
            "mode": meta.get("mode"), "per_channel": meta.get("per_channel"),
            "target": target.get("target") if isinstance(target, dict) else target,
            "float_nodes": len(meta.get("float_nodes") or [])}
