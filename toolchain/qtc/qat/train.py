"""The QAT loop: fine-tune the fake-quant model, optionally distilling from the float teacher.

:func:`train_qat` prepares the :class:`~.wrap.QatModel` (BatchNorm folded, LSQ
quantizers initialised from qtc's PTQ), then trains weights and step sizes
with Adam and a cosine learning rate over all steps:

* loss = ``(1 - alpha)·task + alpha·distill``; task: cross-entropy for integer
  labels, MSE for float targets (or a callable); distill against the float
  teacher (the same folded graph without fake quantization): KL on
  temperature-softened logits (``·T²``, Hinton et al.) or MSE (embeddings);
* one tqdm bar per epoch (loss; the eval metric when the epoch ends);
* a checkpoint after every epoch (``checkpoint_dir/qat_last.pt``: model,
  optimizer, epoch, RNG state, history, config), plain tensors and containers
  that ``torch.load(..., weights_only=True)`` reads; a run started again with
  the same settings continues after the last finished epoch and ends with the
  same weights as an uninterrupted run (the shuffling of epoch ``e`` is seeded
  by ``(seed, e)``, the learning rate is a function of the step);
* under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
  DistributedDataParallel (gloo on CPU, :mod:`.ddp`), each rank trains on its
  shard of every epoch's permutation, rank 0 evaluates and writes checkpoints.
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_file
from ..errors import QtcError
from .wrap import QatModel, prepare_qat

CHECKPOINT = "qat_last.pt"
FORMAT = "qtc-qat-checkpoint/1"
# settings a resumed run must share with the checkpoint (epochs may grow)
_RESUME_KEYS = ("target", "wbits", "abits", "lr", "quant_lr", "batch_size", "seed", "distill_alpha", "temperature",
                "loss", "distill", "weight_decay", "init_method", "init_weight_method", "world_size",
                "per_feature_input", "model_sha256")


# ---------------------------------------------------------------------- data
def _to_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _split_data(data):
    """``(inputs tuple, targets or None)`` from ``(x, y)``, ``(x,)``, ``x`` or ``((x1, x2), y)``."""
    if isinstance(data, dict):
        x = data.get("x")
        if x is None:
            raise QtcError("training data dict has no 'x'", hint="pass {'x': inputs, 'y': targets} or (x, y)")
        data = (x, data.get("y"))
    if isinstance(data, (tuple, list)):
        if len(data) not in (1, 2):
            raise QtcError(f"training data is a sequence of {len(data)} items", hint="pass (x, y), (x,) or x")
        x, y = data[0], (data[1] if len(data) == 2 else None)
    else:
        x, y = data, None
    xs = tuple(_to_numpy(a).astype(np.float32) for a in (x if isinstance(x, (tuple, list)) else (x,)))
    yv = None if y is None else _to_numpy(y)
    n = len(xs[0])
    if any(len(a) != n for a in xs) or (yv is not None and len(yv) != n):
        raise QtcError("training inputs and targets have different numbers of samples",
                       hint="stack every array's samples on axis 0")
    if n == 0:
        raise QtcError("no training samples", hint="pass at least one batch of data")
    return xs, yv


def _is_loader(data) -> bool:
    return isinstance(data, torch.utils.data.DataLoader)


def _batches(data, epoch: int, seed: int, batch_size: int, rank: int, world: int):
    """Yields ``(inputs tuple, targets or None)`` torch batches for one epoch (this rank's share)."""
    if _is_loader(data):
        sampler = getattr(data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for item in data:
            if isinstance(item, (tuple, list)) and len(item) == 2:
                x, y = item
            else:
                x, y = item, None
            xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
            yield tuple(torch.as_tensor(a, dtype=torch.float32) for a in xs), (None if y is None else torch.as_tensor(y))
        return
    xs, y = data
    n = len(xs[0])
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=gen)
    share = n // world if world > 1 else n
    perm = perm[rank::world][:share]
    for i in range(0, len(perm), batch_size):
        idx = perm[i:i + batch_size].numpy()
        yield (tuple(torch.from_numpy(a[idx]) for a in xs),
               None if y is None else torch.from_numpy(np.ascontiguousarray(y[idx])))


def _steps_per_epoch(data, batch_size: int, world: int) -> int:
    if _is_loader(data):
        return len(data)
    n = len(data[0][0])
    share = n // world if world > 1 else n
    return max(1, math.ceil(share / batch_size))


# -------------------------------------------------------------------- losses
def _task_loss(kind, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if callable(kind):
        return kind(out, y)
    if kind == "ce":
        return F.cross_entropy(out, y.long())
    return F.mse_loss(out, y.to(out.dtype))


def _distill_loss(kind: str, out: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    if kind == "kl":
        t = float(temperature)
        return F.kl_div(F.log_softmax(out / t, dim=-1), F.softmax(teacher / t, dim=-1),
                        reduction="batchmean") * (t * t)
    return F.mse_loss(out, teacher)


def _resolve_losses(loss, distill: str, y, alpha: float) -> tuple:
    classification = y is not None and np.issubdtype(np.asarray(y).dtype, np.integer)
    if callable(loss):
        task = loss
    elif loss == "auto":
        task = "ce" if classification else "mse"
    elif loss in ("ce", "mse"):
        task = loss
    else:
        raise QtcError(f"unknown loss {loss!r}", hint="use 'auto', 'ce', 'mse' or a callable loss(output, target)")
    if distill == "auto":
        distill = "kl" if classification else "mse"
    if distill not in ("kl", "mse"):
        raise QtcError(f"unknown distillation loss {distill!r}", hint="use 'kl' (logits) or 'mse' (embeddings)")
    if not 0.0 <= alpha <= 1.0:
        raise QtcError(f"distill_alpha {alpha} is outside [0, 1]", hint="0 = task loss only, 1 = distillation only")
    return task, distill


# --------------------------------------------------------------- checkpoint
def _state_sha256(model: QatModel) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, model: QatModel, opt, epoch: int, history: list, config: dict) -> None:
    obj = {"format": FORMAT, "epoch": int(epoch), "model": model.state_dict(), "optimizer": opt.state_dict(),
           "rng": {"torch": torch.get_rng_state()}, "history": history, "config": config}
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable or unsafe file
        raise QtcError(f"cannot read QAT checkpoint: {str(exc).splitlines()[0][:200]}", where=str(path),
                       hint="delete it to start again, or pass resume=False") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise QtcError("not a qtc QAT checkpoint", where=str(path), hint="point checkpoint_dir at a QAT run's folder")
    return ck


def _check_resume(ck: dict, config: dict, path: Path) -> None:
    old = ck.get("config", {})
    for k in _RESUME_KEYS:
        if old.get(k) != config.get(k):
            raise QtcError(f"checkpoint was written with {k}={old.get(k)!r}, this run has {config.get(k)!r}",
                           where=str(path), hint="use the same settings, another checkpoint_dir, or resume=False")


# -------------------------------------------------------------------- eval
def accuracy_eval(x, y, batch: int = 512) -> Callable[[QatModel], float]:
    """An ``eval_fn``: argmax accuracy of the (fake-quant) model on ``x`` (array or tuple), ``y``."""
    xs = tuple(_to_numpy(a) for a in (x if isinstance(x, (tuple, list)) else (x,)))
    yv = _to_numpy(y)

    def eval_fn(model: QatModel) -> float:
        out = model.predict(*xs, batch=batch)
        out = out[0] if isinstance(out, tuple) else out
        return float(np.mean(np.argmax(out, axis=-1) == yv))

    return eval_fn


def _evaluate(eval_fn, model: QatModel) -> dict:
    if eval_fn is None:
        return {}
    was = model.training
    model.eval()
    with torch.no_grad():
        res = eval_fn(model)
    model.train(was)
    if isinstance(res, dict):
        return {str(k): float(v) for k, v in res.items()}
    return {"metric": float(res)}


def _fmt(rec: dict) -> dict:
    return {k: f"{v:.4g}" for k, v in rec.items() if k not in ("epoch", "seconds", "lr")}


# --------------------------------------------------------------------- main
def train_qat(model, data, eval_fn=None, target="host", wbits: int = 8, abits: int = 8, epochs: int = 3,
              lr: float = 1e-3, distill_alpha: float = 0.0, checkpoint_dir=None, resume: bool = True, seed: int = 0,
              *, calib=None, example_inputs=None, batch_size: int = 64, loss="auto", distill: str = "auto",
              temperature: float = 4.0, weight_decay: float = 0.0, quant_lr: float | None = 1e-2,
              init_method: str = "mse", init_weight_method: str = "mse", keep_float=(),
              per_feature_input: bool | str = False, progress: bool = True) -> tuple[QatModel, list[dict]]:
    """Quantization-aware training of ``model`` for ``target`` at ``wbits``/``abits``.

    ``model``: the float torch ``nn.Module`` (or a qtc float Graph, or a
    :class:`QatModel` to train further).  ``data``: ``(x, y)`` arrays/tensors
    (``x`` a tuple for several inputs; ``y`` None to distil only) or a
    ``DataLoader`` of ``(x, y)``.  ``eval_fn(qat_model) -> float | dict`` runs
    after each epoch (and once before training: epoch 0 is the PTQ-initialised
    model); see :func:`accuracy_eval`.  ``calib``: the PTQ calibration samples
    for the initial step sizes (default: the first 256 training inputs).
    ``per_feature_input`` (True / "auto" / False): learn one scale and zero
    point per feature of graph inputs read only by FullyConnected layers
    (:func:`~.wrap.prepare_qat`); ignored when ``model`` is already a QatModel.

    Returns ``(qat_model, history)``; ``history`` has one dict per epoch
    (``epoch``, ``loss``, ``task_loss``, ``distill_loss``, the eval metrics,
    ``lr``, ``seconds``).  Export with :func:`qtc.qat.export.qat_to_ir`.
    """
    from . import ddp  # noqa: PLC0415 - imported here so `python -m qtc.qat.ddp` runs it fresh

    rank, world = ddp.rank_world()
    if epochs < 0 or batch_size < 1:
        raise QtcError(f"bad schedule: epochs={epochs}, batch_size={batch_size}",
                       hint="use epochs >= 0 and batch_size >= 1")
    torch.manual_seed(seed)
    loader = _is_loader(data)
    if loader:
        ys = None
        first = next(iter(data))
        first_y = first[1] if isinstance(first, (tuple, list)) and len(first) == 2 else None
        ys = None if first_y is None else _to_numpy(first_y)
        train_data = data
    else:
        xs, ys = _split_data(data)
        train_data = (xs, ys)
    alpha = 1.0 if (ys is None and not callable(loss)) else float(distill_alpha)
    task_kind, distill_kind = _resolve_losses(loss, distill, ys, alpha)

    if isinstance(model, torch.nn.Module) and hasattr(model, "module"):
        model = model.module
    if isinstance(model, QatModel):
        qat = model
    else:
        if calib is None:
            if loader:
                raise QtcError("QAT from a DataLoader needs calibration samples",
                               hint="pass calib=<array of inputs> for the initial step sizes")
            calib = tuple(a[:256] for a in xs) if len(xs) > 1 else xs[0][:256]
        qat = prepare_qat(model, calib, target, wbits, abits, example_inputs=example_inputs, method=init_method,
                          weight_method=init_weight_method, keep_float=keep_float,
                          per_feature_input=per_feature_input)
    teacher = qat.float_copy() if alpha > 0 else None
    config = {"target": qat.spec.target, "wbits": qat.spec.wbits, "abits": qat.spec.abits, "lr": float(lr),
              "quant_lr": None if quant_lr is None else float(quant_lr), "batch_size": int(batch_size),
              "seed": int(seed), "distill_alpha": alpha, "temperature": float(temperature),
              "loss": task_kind if isinstance(task_kind, str) else getattr(task_kind, "__name__", "callable"),
              "distill": distill_kind, "weight_decay": float(weight_decay), "init_method": init_method,
              "init_weight_method": init_weight_method, "world_size": int(world),
              "model_sha256": _state_sha256(qat), "epochs": int(epochs),
              "per_feature_input": sorted(qat.feature_of)}
    groups = [{"params": qat.weight_params(), "lr": float(lr), "weight_decay": float(weight_decay)},
              {"params": qat.quantizer_params(), "lr": float(quant_lr if quant_lr is not None else lr),
               "weight_decay": 0.0}]
    for grp in groups:
        grp["base_lr"] = grp["lr"]
    opt = torch.optim.Adam(groups)

    start, history = 0, []
    path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if path is not None and resume and path.exists():
        ck = load_checkpoint(path)
        _check_resume(ck, config, path)
        qat.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"]["torch"])
        start, history = int(ck["epoch"]), list(ck["history"])
    if start == 0 and not history:
        history.append({"epoch": 0, **_evaluate(eval_fn, qat)} if rank == 0 else {"epoch": 0})

    net = ddp.wrap(qat)
    steps = _steps_per_epoch(train_data, batch_size, world)
    total = max(1, steps * max(epochs, 1))
    for epoch in range(start, epochs):
        t0 = time.time()
        qat.train()
        sums = {"loss": 0.0, "task_loss": 0.0, "distill_loss": 0.0}
        count = 0
        bar = _bar(steps, f"QAT {qat.spec.target} W{qat.spec.wbits}A{qat.spec.abits} epoch {epoch + 1}/{epochs}",
                   progress and rank == 0)
        for i, (xb, yb) in enumerate(_batches(train_data, epoch, seed, batch_size, rank, world)):
            factor = 0.5 * (1.0 + math.cos(math.pi * (epoch * steps + i) / total))
            for grp in opt.param_groups:
                grp["lr"] = grp["base_lr"] * factor
            out = net(*xb)
            out = out[0] if isinstance(out, tuple) else out
            task = _task_loss(task_kind, out, yb) if (yb is not None and alpha < 1.0) else out.new_zeros(())
            dist = out.new_zeros(())
            if teacher is not None:
                with torch.no_grad():
                    tout = teacher(*xb)
                    tout = tout[0] if isinstance(tout, tuple) else tout
                dist = _distill_loss(distill_kind, out, tout, temperature)
            total_loss = (1.0 - alpha) * task + alpha * dist
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            opt.step()
            n = len(xb[0])
            count += n
            sums["loss"] += float(total_loss.detach()) * n
            sums["task_loss"] += float(task.detach()) * n
            sums["distill_loss"] += float(dist.detach()) * n
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
        rec = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()},
               "lr": float(opt.param_groups[0]["lr"])}
        if rank == 0:
            rec.update(_evaluate(eval_fn, qat))
        rec["seconds"] = round(time.time() - t0, 3)
        bar.set_postfix(_fmt(rec))
        bar.close()
        history.append(rec)
        if path is not None and rank == 0:
            save_checkpoint(path, qat, opt, epoch + 1, history, config)
        ddp.barrier()
    qat.eval()
    return qat, history


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=True, dynamic_ncols=True)
