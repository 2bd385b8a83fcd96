"""Shared plumbing for the example models: seeding, the training loop, torch exports.

Determinism: every model trains on one CPU thread with deterministic algorithms
and seeded generators, so the same seed gives the same weights and therefore
byte-identical ``.pt`` and ``.onnx`` files.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import random
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from qtc.errors import QtcError


@contextlib.contextmanager
def deterministic(seed: int):
    """Seed python/numpy/torch and pin torch to one deterministic CPU thread, for the block.

    torch's thread count and deterministic-algorithms flag are restored afterwards,
    so callers (a test session, a notebook) keep their own settings.
    """
    threads = torch.get_num_threads()
    strict = torch.are_deterministic_algorithms_enabled()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


def seeded(fn: Callable) -> Callable:
    """Run ``fn(seed, ...)`` inside :func:`deterministic` (seed)."""

    @functools.wraps(fn)
    def wrapper(seed: int = 0, *args, **kwargs):
        with deterministic(seed):
            return fn(seed, *args, **kwargs)

    return wrapper


@dataclass
class IOSpec:
    """One model input: its name and shapes/layouts in torch and Keras form.

    ``calib_key`` / ``eval_key`` name the arrays in ``data.npz`` (torch layout);
    ``keras_calib_key`` / ``keras_eval_key`` the channels-last copies, when the
    Keras twin's layout differs.
    """

    name: str
    shape: list[int]
    layout: str
    calib_key: str = "x_calib"
    eval_key: str = "x_eval"
    keras_shape: list[int] | None = None
    keras_layout: str | None = None
    keras_calib_key: str | None = None
    keras_eval_key: str | None = None

    def to_meta(self) -> dict:
        return {"name": self.name, "shape": self.shape, "layout": self.layout,
                "calib_key": self.calib_key, "eval_key": self.eval_key}

    def keras_meta(self) -> dict:
        return {"name": self.name,
                "shape": self.keras_shape or self.shape,
                "layout": self.keras_layout or self.layout,
                "calib_key": self.keras_calib_key or self.calib_key,
                "eval_key": self.keras_eval_key or self.eval_key}


@dataclass
class Trained:
    """What a model module's ``train(seed)`` hands to the exporter."""

    model: nn.Module                      # trained, in eval mode
    data: dict[str, np.ndarray]           # everything that goes into data.npz
    inputs: list[IOSpec]
    outputs: list[str]
    task: str
    metric_name: str
    # metric(predict, keras=False) -> float; predict(*arrays) -> outputs, where the
    # arrays are the eval inputs in torch layout, or Keras layout when keras=True
    metric: Callable[..., float]
    keras_builder: Callable | None = None  # keras_builder(torch_model) -> tf_keras model (weights copied)
    extra_files: dict[str, bytes] = field(default_factory=dict)
    extra_meta: dict = field(default_factory=dict)


def torch_predict(model: nn.Module, batch: int = 256) -> Callable[..., np.ndarray]:
    """A numpy-in/numpy-out predictor for a torch model (eval mode, no grad)."""

    def predict(*arrays: np.ndarray) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for i in range(0, len(arrays[0]), batch):
                args = [torch.from_numpy(np.ascontiguousarray(a[i:i + batch])) for a in arrays]
                outs.append(model(*args).numpy())
        return np.concatenate(outs)

    return predict


def fit(model: nn.Module, loss_fn: Callable, tensors: list[torch.Tensor], *, epochs: int,
        batch_size: int, lr: float, seed: int, weight_decay: float = 0.0) -> list[float]:
    """AdamW with a cosine learning-rate decay over seeded shuffled minibatches.

    ``loss_fn(model, *batch)`` returns a scalar loss. Returns the mean loss per epoch.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(tensors[0])
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    history = []
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        running = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + np.cos(np.pi * step / total))
            loss = loss_fn(model, *[t[idx] for t in tensors])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item() * len(idx)
            step += 1
        history.append(running / n)
    model.eval()
    return history


def split_indices(n: int, n_eval: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation split: (train indices, eval indices)."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def param_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def state_dict_bytes(model: nn.Module) -> bytes:
    """``torch.save(model.state_dict())`` into memory.

    Saving to a buffer keeps the archive's internal root name fixed
    (``archive/``), whatever file name the bytes end up in, so the file is
    byte-identical for identical weights.
    """
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


@contextlib.contextmanager
def _quiet_onnx_logs():
    """Silence the exporter's informational warnings (opset conversion notices, missing torchvision)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_bytes(model: nn.Module, inputs: list[IOSpec], outputs: list[str], *, where: str) -> bytes:
    """Export ``model`` with ``torch.onnx.export`` (opset 17, fixed shapes, one self-contained file).

    The export is checked against torch with onnxruntime on a seeded random input.
    """
    import onnx

    args = tuple(torch.zeros(spec.shape, dtype=torch.float32) for spec in inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with contextlib.redirect_stdout(io.StringIO()), _quiet_onnx_logs():
            torch.onnx.export(model, args, str(path), input_names=[s.name for s in inputs],
                              output_names=outputs, opset_version=17, dynamo=True,
                              external_data=False, verbose=False)
        proto = onnx.load(str(path))
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise QtcError("ONNX export wrote external weight data", where=where,
                       hint="export with external_data=False")
    opset = {o.domain: o.version for o in proto.opset_import}.get("", 0)
    if opset != 17:
        raise QtcError(f"ONNX export came out at opset {opset}, not 17", where=where,
                       hint="replace the op the exporter cannot express at opset 17 (see the traceback above)")
    data = proto.SerializeToString()
    _check_onnx(model, data, inputs, where=where)
    return data


def _check_onnx(model: nn.Module, data: bytes, inputs: list[IOSpec], *, where: str) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in inputs}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    with torch.no_grad():
        want = model(*[torch.from_numpy(feeds[s.name]) for s in inputs]).numpy()
    err = float(np.max(np.abs(got - want)))
    if err > 1e-4 * max(1.0, float(np.max(np.abs(want)))):
        raise QtcError(f"ONNX export differs from torch by {err:.3g}", where=where,
                       hint="check the model for ops the exporter lowers differently")
