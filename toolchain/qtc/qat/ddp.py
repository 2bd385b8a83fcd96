"""QAT under ``torchrun``: DistributedDataParallel on CPU (gloo), and a command to launch it.

:func:`train_qat` calls :func:`rank_world` and :func:`wrap`: started by
``torchrun`` (``WORLD_SIZE`` > 1 in the environment) it joins the process group
and trains a DDP-wrapped model, each rank on its shard of the data; started
plainly it trains in one process.  Gradients (weights and LSQ step sizes) are
averaged across ranks, so every rank ends with the same model.

The command::

    torchrun --nproc_per_node 2 -m qtc.qat.ddp --model model.qir --data train.npz \\
        --target esp32 --wbits 4 --abits 4 --epochs 4 --out build/qat

reads a float model (any format :func:`qtc.frontends.load_model` reads), a
``.npz`` with ``x_train`` (and ``y_train``, optional ``x_calib``, ``x_eval``,
``y_eval``), trains, and on rank 0 writes ``OUT/qat_last.pt`` (the checkpoint,
resumable), ``OUT/model.qir`` (the integer graph, :func:`qtc.qat.export.qat_to_ir`)
and ``OUT/qat_summary.json`` (history, and every rank's weight digest).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

from ..errors import QtcError


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init(backend: str = "gloo") -> None:
    """Join the process group torchrun describes (no-op when not distributed or already joined)."""
    if _env_world() > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend=backend)


def rank_world() -> tuple[int, int]:
    """(rank, world size), joining the process group first when torchrun started us."""
    init()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model in DistributedDataParallel when distributed, else the model itself."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    return model


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def state_digest(model: torch.nn.Module) -> str:
    """sha256 of the model's state dict (names and values): equal digests = identical weights."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_digests(model: torch.nn.Module) -> list[str]:
    """Every rank's :func:`state_digest` (rank order); just this one when not distributed."""
    d = state_digest(model)
    if not (dist.is_available() and dist.is_initialized()):
        return [d]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, d)
    return [str(x) for x in out]


# ------------------------------------------------------------------ command
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qtc.qat.ddp", description="QAT (optionally under torchrun)")
    p.add_argument("--model", required=True, help="float model: .qir, .onnx, .keras, .tflite, or .pt with --model-class")
    p.add_argument("--model-class", default=None, help="pkg.module:Class for a .pt state dict")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,..",
                   help="input shape for an ONNX or .pt model (repeat per input)")
    p.add_argument("--data", required=True, help=".npz with x_train [, y_train, x_calib, x_eval, y_eval]")
    p.add_argument("--target", default="host")
    p.add_argument("--wbits", type=int, default=8)
    p.add_argument("--abits", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--distill-alpha", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-feature-input", choices=("auto", "true", "false"), default="false",
                   help="learn one scale and zero point per feature of an input read only by FullyConnected layers")
    p.add_argument("--out", required=True, help="output folder (checkpoint, model.qir, qat_summary.json)")
    p.add_argument("--no-resume", action="store_true", help="start again even if OUT has a checkpoint")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..frontends import load_model
    from ..ir.serialize import save
    from .export import qat_to_ir
    from .train import accuracy_eval, train_qat

    a = _parser().parse_args(argv)
    try:
        rank, world = rank_world()
        shapes = {}
        for spec in a.input_shape:
            name, _, dims = spec.rpartition("=")
            try:
                shapes[name] = tuple(int(d) for d in dims.split(","))
            except ValueError:
                raise QtcError(f"--input-shape {spec!r} is not NAME=D0,D1,..", hint="e.g. --input-shape x=1,1,8,8") from None
        g = load_model(a.model, model_class=a.model_class, input_shapes=shapes or None)
        with np.load(a.data, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if "x_train" not in arrays:
            raise QtcError("the data file has no x_train array", where=a.data,
                           hint="save x_train (and y_train) with numpy.savez")
        y = arrays.get("y_train")
        eval_fn = accuracy_eval(arrays["x_eval"], arrays["y_eval"]) if "x_eval" in arrays and "y_eval" in arrays \
            and np.issubdtype(arrays["y_eval"].dtype, np.integer) else None
        qat, history = train_qat(g, (arrays["x_train"], y), eval_fn, target=a.target, wbits=a.wbits, abits=a.abits,
                                 epochs=a.epochs, lr=a.lr, distill_alpha=a.distill_alpha, checkpoint_dir=a.out,
                                 resume=not a.no_resume, seed=a.seed, calib=arrays.get("x_calib"),
                                 batch_size=a.batch_size, progress=not a.no_progress,
                                 per_feature_input={"auto": "auto", "true": True, "false": False}[a.per_feature_input])
        digests = gather_digests(qat)
        if rank == 0:
            from ..atomic import save_json

            save(qat_to_ir(qat), os.path.join(a.out, "model.qir"))
            save_json(os.path.join(a.out, "qat_summary.json"),
                      {"world_size": world, "rank_digests": digests, "ranks_identical": len(set(digests)) == 1,
                       "history": history})
        barrier()
    except QtcError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
