"""Run the float graph over calibration data and feed streaming observers.

Samples are stacked along axis 0 of each input array.  An array shaped
``[N, *input_shape]`` gives one full feed per sample; an array shaped
``[N, *input_shape[1:]]`` stacks samples along the graph's batch axis.  For
speed the float graph is re-batched (shapes re-inferred with a larger batch)
when that is provably equivalent: the re-batched graph must validate and give
the same outputs as the original on the first sample; otherwise samples run
one graph-batch at a time.  Memory holds one batch of activations at a time.
"""
from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np

from ...errors import QtcError, ShapeError
from ...ir.graph import Graph
from .observers import Observer

CALIB_CHUNK = 32  # samples per interpreter call when the graph can be re-batched
CHUNK_BYTES = 256 << 20  # ... and at most this many bytes of float activations per call


def calibration_hash(calib: dict[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every calibration array, by name."""
    h = hashlib.sha256()
    for name in sorted(calib):
        a = np.ascontiguousarray(calib[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _layout(g: Graph, calib: dict[str, np.ndarray]) -> tuple[int, bool]:
    """(number of samples, True if samples stack along the graph's batch axis)."""
    counts, stacked = set(), set()
    for name in g.inputs:
        if name not in calib:
            raise QtcError(f"no calibration data for graph input {name!r}", where=f"graph {g.name}",
                           hint=f"give arrays for every input: {g.inputs}")
        a = np.asarray(calib[name])
        shape = g.tensors[name].shape
        if tuple(a.shape[1:]) == shape:
            counts.add(a.shape[0])
            stacked.add(False)
        elif len(shape) >= 1 and a.ndim == len(shape) and tuple(a.shape[1:]) == shape[1:]:
            if a.shape[0] % max(shape[0], 1):
                raise ShapeError(f"calibration data for {name!r} has {a.shape[0]} rows, not a multiple of "
                                 f"the model's batch {shape[0]}", where=f"graph {g.name}",
                                 hint="give a multiple of the batch size")
            counts.add(a.shape[0] // max(shape[0], 1) * max(shape[0], 1))
            stacked.add(True)
        else:
            raise ShapeError(f"calibration data for {name!r} has shape {a.shape}; the model input is {shape}",
                             where=f"graph {g.name}",
                             hint=f"stack samples on axis 0: [N, *{shape[1:]}] or [N, *{shape}]")
    if len(counts) != 1 or len(stacked) != 1:
        raise ShapeError("calibration arrays disagree on the number of samples or their layout",
                         where=f"graph {g.name}", hint="give the same N samples for every input")
    n = counts.pop()
    if n == 0:
        raise QtcError("no calibration samples", where=f"graph {g.name}", hint="give at least one sample")
    return n, stacked.pop()


def _rebatched(g: Graph, batch: int) -> Graph | None:
    """A copy of ``g`` whose inputs have batch ``batch``, or None if that is not sound."""
    from ...ir.validate import validate, with_batch

    try:
        r = with_batch(g, batch)
        validate(r)
    except Exception:  # noqa: BLE001 - any failure means: do not re-batch
        return None
    for name in r.outputs:
        if r.tensors[name].shape[:1] != (batch,):
            return None
    return r


def _feeds(calib, names, start, stop, stacked, graph_batch):
    if stacked:
        return {k: np.asarray(calib[k][start * graph_batch:stop * graph_batch]) for k in names}
    return {k: np.asarray(calib[k][start]) for k in names}


class _Plan:
    """How to walk the samples: stacked or one feed each, graph batch, re-batched copy."""

    def __init__(self, g: Graph, data: dict[str, np.ndarray], chunk: int):
        from ...interp import run

        self.samples, self.stacked = _layout(g, data)
        self.graph_batch = max(g.tensors[g.inputs[0]].shape[0], 1) if self.stacked else 1
        self.steps = self.samples // self.graph_batch
        self.big = None
        per_sample = sum(4 * t.size for t in g.tensors.values() if not t.is_const)
        chunk = max(1, min(chunk, CHUNK_BYTES // max(per_sample, 1)))
        if self.stacked and self.graph_batch == 1 and self.steps > 1 and chunk > 1:
            n = min(chunk, self.steps)
            big = _rebatched(g, n)
            if big is not None:
                ref = run(g, _feeds(data, g.inputs, 0, 1, True, 1))
                test = run(big, _feeds(data, g.inputs, 0, n, True, 1))
                if all(np.allclose(ref[o], test[o][:1], rtol=1e-4, atol=1e-5) for o in g.outputs):
                    self.big = big
        self.per_call = self.big.tensors[g.inputs[0]].shape[0] if self.big is not None else 1

    def info(self) -> dict:
        return {"samples": int(self.samples), "graph_batch": int(self.graph_batch),
                "samples_per_run": int(self.per_call * self.graph_batch)}


def iterate_batches(g: Graph, data: dict[str, np.ndarray], *, keep: bool = False, progress: bool = True,
                    chunk: int = CALIB_CHUNK, desc: str = "calibrate",
                    plan: _Plan | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Run the float graph over all samples in order, yielding each run's tensors.

    With stacked samples the yielded arrays carry several samples on axis 0;
    with one feed per sample each yield is one sample.  The tqdm bar counts samples.
    """
    from tqdm import tqdm

    from ...interp import run

    p = plan or _Plan(g, data, chunk)
    bar = tqdm(total=p.samples, desc=desc, unit="sample", disable=not progress, leave=False)
    try:
        start = 0
        while start < p.steps:
            stop = min(start + p.per_call, p.steps)
            graph = g
            if p.big is not None:
                graph = p.big if stop - start == p.per_call else _rebatched(g, stop - start)
            if graph is None:  # the short last chunk could not be re-batched: one at a time
                for s in range(start, stop):
                    yield run(g, _feeds(data, g.inputs, s, s + 1, True, 1), keep=keep)
            else:
                yield run(graph, _feeds(data, g.inputs, start, stop, p.stacked, p.graph_batch), keep=keep)
            bar.update((stop - start) * p.graph_batch)
            start = stop
    finally:
        bar.close()


def run_calibration(g: Graph, calib: dict[str, np.ndarray], observers: dict[str, Observer], *,
                    progress: bool = True, chunk: int = CALIB_CHUNK) -> dict:
    """Feed every tensor named in ``observers`` with its float values over all samples.

    Returns facts for the metadata: samples, graph batch, samples per interpreter run.
    """
    plan = _Plan(g, calib, chunk)
    for env in iterate_batches(g, calib, keep=True, progress=progress, plan=plan):
        for name, obs in observers.items():
            v = env.get(name)
            if v is not None:
                obs.update(v)
    return plan.info()


def float_outputs(g: Graph, data: dict[str, np.ndarray], *, progress: bool = True) -> dict[str, np.ndarray]:
    """The float graph's outputs for every sample, stacked on axis 0 like the inputs."""
    plan = _Plan(g, data, CALIB_CHUNK)
    parts: dict[str, list[np.ndarray]] = {o: [] for o in g.outputs}
    for env in iterate_batches(g, data, progress=progress, desc="reference", plan=plan):
        for o in g.outputs:
            parts[o].append(np.asarray(env[o]) if plan.stacked else np.asarray(env[o])[None])
    return {o: np.concatenate(v, axis=0) for o, v in parts.items()}
