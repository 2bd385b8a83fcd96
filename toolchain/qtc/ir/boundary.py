"""Where the user's float data meets a quantized graph: the params of each graph input and output.

A graph input's own tensor params say how its integers read inside the graph.
The params that turn the *user's* float input into those integers are usually
the same; the quantizer records different ones in
``graph.metadata["input_quant"]`` (per-axis, one per feature) when it folded
per-feature input params into the first layers
(:mod:`qtc.passes.quantize.input_features`).  Every float → int conversion of
a graph input (``qtc run``, compare, the benches, test vectors, the C header)
goes through :func:`input_params`.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph
from .tensor import INT_DTYPES, QuantParams

META_KEY = "input_quant"


def input_params(g: Graph, name: str) -> QuantParams | None:
    """The params that quantize the user's float input ``name`` (None when the input is float)."""
    t = g.tensors[name]
    if t.quant is None or t.dtype not in INT_DTYPES:
        return None
    doc = (g.metadata.get(META_KEY) or {}).get(name)
    return quant_from_json(doc) if doc is not None else t.quant


def per_feature(g: Graph, name: str) -> bool:
    """True when input ``name`` takes per-feature params (different from its tensor's)."""
    return (g.metadata.get(META_KEY) or {}).get(name) is not None


def quantize_input(g: Graph, name: str, x: np.ndarray) -> np.ndarray:
    """Float data for input ``name`` → its integers (int64; unchanged for a float input)."""
    qp = input_params(g, name)
    return np.asarray(x) if qp is None else qp.quantize(x)


def quant_to_json(q: QuantParams) -> dict:
    return {**q.to_json(), "scale": [float(v) for v in q.scale], "zero_point": [int(v) for v in q.zero_point]}


def quant_from_json(doc: dict) -> QuantParams:
    return QuantParams(np.asarray(doc["scale"], dtype=np.float32), np.asarray(doc["zero_point"], dtype=np.int64),
                       axis=doc.get("axis"), bits=int(doc.get("bits", 8)), signed=bool(doc.get("signed", True)),
                       narrow_range=bool(doc.get("narrow_range", False)), symmetric=bool(doc.get("symmetric", False)),
                       power_of_two=bool(doc.get("power_of_two", False)))
