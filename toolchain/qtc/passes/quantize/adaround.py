"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization").

For one layer with weight matrix ``W`` (``[groups, og, K]``, see :mod:`.layers`)
and fixed scales ``s`` (per channel or per tensor, power of two on PoT
targets: AdaRound never changes a scale), learn per weight whether to round
down or up:

    W~ = s · clip(floor(W / s) + h(V), qmin, qmax)
    h(V) = clip(sigmoid(V)·(ζ − γ) + γ, 0, 1),   ζ = 1.1, γ = −0.1

minimizing, over batches of calibration rows,

    ‖f(W~ x^ + b) − f(W x + b)‖²  +  λ · Σ (1 − |2h(V) − 1|^β)

where ``f`` is the layer's fused activation, ``x`` the float model's input
rows and ``x^`` the rows the quantized model feeds the layer (the caller
decides: see :mod:`.refine`).  ``V`` starts where ``h(V)`` equals the
fractional part of ``W/s`` (so the soft weights start at the float weights);
the first ``warmup`` fraction of iterations runs without the regularizer,
then ``β`` decays linearly from 20 to 2, pushing every ``h`` to 0 or 1.
Finally ``h`` is hardened (``V ≥ 0`` rounds up).  The reconstruction term is
the squared error summed over output channels, averaged over rows (as the
BRECQ/MQBench implementations), divided by the mean squared float output
so one ``λ`` suits layers of any scale.

Optimisation: torch on CPU, Adam on ``V``, a seeded generator for the
batches, deterministic algorithms and one thread while it runs (same inputs
and seed → the same integers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import QtcError

ZETA, GAMMA = 1.1, -0.1


@dataclass
class AdaRoundConfig:
    iters: int = 1000
    batch: int = 256
    lam: float = 0.01
    lr: float = 3e-2
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    max_rows: int = 8192
    seed: int = 0
    inputs: str = "quantized"  # or "float": where x^ comes from (see refine.py)
    # block reconstruction at a per-feature input (see block_recon.py); off by default
    block: bool = False
    block_layers: int = 2          # FullyConnected layers in the block (1-3)
    block_scale_iters: int = 1000  # step 1: learned input scales (0: qtc's min-max ones)
    block_scale_lr: float = 1e-2
    block_iters: int = 2000        # step 3: joint AdaRound of the block
    block_tune_lr: float = 1e-3    # first layer's weight scales and bias during step 3

    def to_json(self) -> dict:
        out = {"iters": self.iters, "batch": self.batch, "lambda": self.lam, "lr": self.lr,
               "beta": [self.beta_start, self.beta_end], "warmup": self.warmup, "max_rows": self.max_rows,
               "seed": self.seed, "inputs": self.inputs, "zeta": ZETA, "gamma": GAMMA}
        if self.block:
            out["block"] = {"layers": self.block_layers, "scale_iters": self.block_scale_iters,
                            "scale_lr": self.block_scale_lr, "iters": self.block_iters,
                            "tune_lr": self.block_tune_lr}
        return out


def _activation(torch, y, activation: str):
    if activation == "relu":
        return torch.relu(y)
    if activation == "relu6":
        return torch.clamp(y, 0.0, 6.0)
    if activation == "relu_n1_to_1":
        return torch.clamp(y, -1.0, 1.0)
    return y


def _act_np(y: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(y, 0.0)
    if activation == "relu6":
        return np.clip(y, 0.0, 6.0)
    if activation == "relu_n1_to_1":
        return np.clip(y, -1.0, 1.0)
    return y


def reconstruction_error(rows: np.ndarray, wm: np.ndarray, bias: np.ndarray, target: np.ndarray,
                         activation: str) -> float:
    """Mean over rows of the squared output error summed over channels (float64)."""
    y = np.einsum("rgk,gjk->rgj", rows, wm).reshape(rows.shape[0], -1) + bias
    return float(np.mean(np.sum((_act_np(y, activation) - target) ** 2, axis=1)))


def layer_target(rows_float: np.ndarray, wm: np.ndarray, bias: np.ndarray, activation: str) -> np.ndarray:
    """f(W x + b) on the float rows: what the quantized layer should reproduce."""
    y = np.einsum("rgk,gjk->rgj", rows_float, wm).reshape(rows_float.shape[0], -1) + bias
    return _act_np(y, activation)


def adaround(wm: np.ndarray, scale: np.ndarray, qmin: int, qmax: int, rows: np.ndarray, target: np.ndarray,
             bias: np.ndarray, activation: str, cfg: AdaRoundConfig) -> np.ndarray:
    """Learned integer weights ``[groups, og, K]`` (int64) for one layer.

    ``wm`` float weights and ``scale`` (broadcast to ``wm``'s shape) as
    ``[groups, og, K]``; ``rows`` ``[R, groups, K]`` the quantized model's
    input rows; ``target`` ``[R, groups·og]`` the float layer's outputs.
    """
    try:
        import torch
    except ImportError:
        raise QtcError("AdaRound needs torch (CPU) for its optimisation", where="qtc quantize --adaround",
                       hint="pip install 'qtc[torch]', or quantize without --adaround") from None

    wm = np.asarray(wm, np.float64)
    scale = np.broadcast_to(np.asarray(scale, np.float64), wm.shape)
    ratio = wm / scale
    w_floor = np.floor(ratio)
    rest = np.clip(ratio - w_floor, 1e-4, 1 - 1e-4)
    v0 = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)

    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        gen = torch.Generator().manual_seed(int(cfg.seed))
        f32 = torch.float32
        t_rows = torch.as_tensor(rows, dtype=f32)
        t_target = torch.as_tensor(target, dtype=f32)
        t_floor = torch.as_tensor(w_floor, dtype=f32)
        t_scale = torch.as_tensor(np.array(scale, dtype=np.float32))
        t_bias = torch.as_tensor(bias, dtype=f32)
        v = torch.nn.Parameter(torch.as_tensor(v0, dtype=f32))
        opt = torch.optim.Adam([v], lr=cfg.lr)
        norm = float(np.mean(np.sum(target.astype(np.float64) ** 2, axis=1))) or 1.0
        n_rows = t_rows.shape[0]
        batch = min(cfg.batch, n_rows)
        warm = int(cfg.warmup * cfg.iters)
        for it in range(cfg.iters):
            idx = torch.randint(n_rows, (batch,), generator=gen)
            h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
            w_soft = t_scale * torch.clamp(t_floor + h, qmin, qmax)
            y = torch.einsum("rgk,gjk->rgj", t_rows[idx], w_soft).reshape(batch, -1) + t_bias
            rec = torch.sum((_activation(torch, y, activation) - t_target[idx]) ** 2, dim=1).mean() / norm
            loss = rec
            if it >= warm:
                decay = (it - warm) / max(cfg.iters - warm, 1)
                beta = cfg.beta_end + (cfg.beta_start - cfg.beta_end) * max(0.0, 1.0 - decay)
                loss = rec + cfg.lam * torch.sum(1.0 - torch.abs(2.0 * h - 1.0) ** beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
        up = (v.detach().numpy() >= 0).astype(np.float64)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    return np.clip(w_floor + up, qmin, qmax).astype(np.int64)
