"""Run a float *or* quantized graph over stacked samples and collect tensors as float.

The PTQ refinements (AdaRound, bias correction, sensitivity) need a few
intermediate tensors over the whole calibration set, from the float graph and
from a (partly) quantized one.  :func:`collect` runs only the nodes those
tensors depend on (:func:`subgraph`), re-batched when that is provably
equivalent (as :mod:`.calibrate` does), quantizing float inputs with the
graph's input params and dequantizing integer tensors with their own params.
Values come back stacked on axis 0 like the inputs.
"""
from __future__ import annotations

import numpy as np

from ...interp import run_quantized
from ...ir.boundary import INT_DTYPES, META_KEY
from ...ir.graph import Graph
from .calibrate import CALIB_CHUNK, _layout, _rebatched


def subgraph(g: Graph, outputs: list[str]) -> Graph:
    """A copy of ``g`` computing only ``outputs`` (the nodes they depend on)."""
    producers = g.producers()
    need, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        n = producers.get(name)
        if n is None or n.name in need:
            continue
        need.add(n.name)
        stack.extend(i for i in n.inputs if i)
    s = Graph(name=g.name, tensors=dict(g.tensors), nodes=[n for n in g.nodes if n.name in need],
              inputs=list(g.inputs), outputs=list(outputs),
              metadata={META_KEY: g.metadata[META_KEY]} if META_KEY in g.metadata else {})
    s = s.copy()
    s.remove_unused_tensors()
    for name in g.inputs:  # inputs stay (feeds are checked against them) even when unused
        s.tensors.setdefault(name, g.tensors[name])
    return s


def as_float(g: Graph, name: str, v: np.ndarray) -> np.ndarray:
    t = g.tensors[name]
    if t.quant is not None and t.dtype in INT_DTYPES:
        return t.quant.dequantize(v)
    return np.asarray(v, dtype=np.float32)


def _run(g: Graph, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    env = run_quantized(g, feeds, raw=True, keep=True)  # quantizes only the inputs that have params
    return {k: as_float(g, k, env[k]) for k in names}


def collect(g: Graph, data: dict[str, np.ndarray], names: list[str], *,
            chunk: int = CALIB_CHUNK) -> dict[str, np.ndarray]:
    """Float values of tensors ``names`` of ``g`` over every sample of ``data``.

    ``data`` maps each graph input to samples stacked on axis 0 (as for
    calibration); a name is a graph input or a node output.  Each run's
    values are concatenated on axis 0 (a graph batch of B per feed gives N*B rows).
    """
    names = list(dict.fromkeys(names))
    s = subgraph(g, [n for n in names if n not in g.inputs] or [g.inputs[0]])
    samples, stacked = _layout(s, data)
    gb = max(s.tensors[s.inputs[0]].shape[0], 1) if stacked else 1
    steps = samples // gb
    big = None
    if stacked and gb == 1 and steps > 1:
        n = min(chunk, steps)
        big = _rebatched(s, n)
        if big is not None:  # sound only if one sample gives the same values either way
            one = _run(s, {k: data[k][:1] for k in s.inputs}, names)
            many = _run(big, {k: data[k][:n] for k in s.inputs}, names)
            if not all(np.allclose(one[k], many[k][:1], rtol=1e-4, atol=1e-5) for k in names):
                big = None
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    start = 0
    while start < steps:
        if big is not None:
            stop = min(start + big.tensors[big.inputs[0]].shape[0], steps)
            graph = big if stop - start == big.tensors[big.inputs[0]].shape[0] else (_rebatched(s, stop - start) or s)
            if graph is s:
                stop = start + 1
            feeds = {k: data[k][start:stop] for k in s.inputs}
        else:
            stop = start + 1
            graph = s
            feeds = {k: (data[k][start * gb:stop * gb] if stacked else data[k][start]) for k in s.inputs}
        out = _run(graph, feeds, names)
        for k in names:
            parts[k].append(out[k] if out[k].ndim else out[k][None])
        start = stop
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}
