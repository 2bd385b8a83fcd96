"""The reference interpreter: the oracle every back end is checked against.

``run(g, feeds)`` executes the graph node by node:

* a node whose output tensor is float runs the op's float32 semantics;
* a node whose output tensor is quantized (integer dtype + QuantParams) runs
  the op's exact integer semantics under the chosen numerics (default
  ``tflite``: TFLite/TFLM/ESP-NN double-rounding requantization);
* Quantize/Dequantize bridge the two.

With ``keep=True`` it returns every intermediate tensor, for layer-wise error
reports and ``qtc run --dump-dir``.
"""
from __future__ import annotations

import importlib

import numpy as np

from ..errors import QtcError, ShapeError, UnsupportedOpError
from ..ir.boundary import INT_DTYPES, quantize_input
from ..ir.graph import Graph
from ..ops.registry import IntContext, get_op, has_op


def get_numerics(name: str = "tflite"):
    try:
        return importlib.import_module(f"qtc.interp.numerics.{name}")
    except ModuleNotFoundError:
        raise QtcError(f"unknown numerics {name!r}", hint="use one of: tflite, litert_ref") from None


def _is_int_node(g: Graph, node) -> bool:
    t = g.tensors[node.outputs[0]]
    return t.quant is not None and t.dtype in INT_DTYPES


def check_feeds(g: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name in g.inputs:
        if name not in feeds:
            raise ShapeError(f"no value given for graph input {name!r}", where=f"graph {g.name}",
                             hint=f"the graph's inputs are {g.inputs}")
        x = np.asarray(feeds[name])
        t = g.tensors[name]
        if tuple(x.shape) != t.shape:
            raise ShapeError(f"input {name!r} has shape {tuple(x.shape)}, the model expects {t.shape}",
                             where=f"graph {g.name}", hint="reshape the input or re-import with --input-shape")
        if t.quant is not None and t.dtype in INT_DTYPES:
            if not np.issubdtype(x.dtype, np.integer):
                raise ShapeError(f"input {name!r} is {x.dtype} but the graph input is quantized {t.dtype}",
                                 where=f"graph {g.name}", hint="pass integer data, or quantize it with the input's params")
            x = x.astype(np.int64)
        else:
            x = x.astype(np.float32)
        out[name] = x
    return out


def run(g: Graph, feeds: dict[str, np.ndarray], *, numerics: str = "tflite", keep: bool = False) -> dict[str, np.ndarray]:
    """Run ``g``; returns the graph outputs (or every tensor with ``keep=True``).

    Quantized tensors are returned as integer arrays of their declared dtype.
    """
    num = get_numerics(numerics)
    env: dict[str, np.ndarray] = {}
    for name, t in g.tensors.items():
        if t.data is not None:
            env[name] = t.data.astype(np.int64) if t.dtype in INT_DTYPES else t.data
    env.update(check_feeds(g, feeds))
    consumers_left: dict[str, int] = {}
    if not keep:
        for n in g.nodes:
            for i in n.inputs:
                if i:
                    consumers_left[i] = consumers_left.get(i, 0) + 1
    for node in g.nodes:
        if not has_op(node.op):
            raise UnsupportedOpError(f"op {node.op} is not supported", where=f"node {node.name}")
        op = get_op(node.op)
        xs = [env[i] if i else None for i in node.inputs]
        try:
            if _is_int_node(g, node) or node.op in _BRIDGE_OPS:
                ctx = IntContext(node, [g.tensors[i] if i else None for i in node.inputs],
                                 [g.tensors[o] for o in node.outputs], num)
                ys = op.run_int(node, xs, ctx)
            else:
                ys = op.run_float(node, xs)
        except QtcError:
            raise
        except Exception as exc:  # noqa: BLE001 - name the node in every failure
            raise QtcError(f"{type(exc).__name__}: {exc}", where=f"node {node.name} ({node.op})",
                           hint="check the model's shapes and quant params with 'qtc show'") from exc
        for o, y in zip(node.outputs, ys):
            env[o] = y
        if not keep:
            for i in node.inputs:
                if i and i in consumers_left:
                    consumers_left[i] -= 1
                    if consumers_left[i] == 0 and i not in g.outputs and not g.tensors[i].is_const:
                        env.pop(i, None)
    result = env if keep else {o: env[o] for o in g.outputs}
    return {k: _as_declared(g, k, v) for k, v in result.items()}


# Dequantize reads an integer tensor but writes float: it always gets the int context.
_BRIDGE_OPS = {"Dequantize"}


def _as_declared(g: Graph, name: str, v: np.ndarray) -> np.ndarray:
    t = g.tensors.get(name)
    if t is None or v is None:
        return v
    if t.dtype in INT_DTYPES and v.dtype != np.dtype(t.dtype):
        return v.astype(t.dtype)
    return v


def run_float(g: Graph, feeds: dict[str, np.ndarray], keep: bool = False) -> dict[str, np.ndarray]:
    return run(g, feeds, keep=keep)


def run_quantized(g: Graph, feeds_float: dict[str, np.ndarray], *, numerics: str = "tflite",
                  raw: bool = False, keep: bool = False) -> dict[str, np.ndarray]:
    """Quantize float inputs with the graph's input params (:func:`qtc.ir.boundary.input_params`), run,
    dequantize outputs (unless raw)."""
    feeds = {name: quantize_input(g, name, np.asarray(feeds_float[name])) for name in g.inputs}
    outs = run(g, feeds, numerics=numerics, keep=keep)
    if raw:
        return outs
    res = {}
    for k, v in outs.items():
        t = g.tensors[k]
        res[k] = t.quant.dequantize(v) if (t.quant is not None and t.dtype in INT_DTYPES and k in g.outputs) else v
    return res
