"""Block reconstruction at a per-feature input: learned input params + a joint AdaRound of the first FC block.

Where a graph input with per-feature params (:mod:`.input_features`) feeds a
chain of up to ``block_layers`` FullyConnected layers (each the only reader
of the previous one's output, fused activations allowed), layer-by-layer
AdaRound is replaced for that chain (the *block*) by:

1. before calibration (:func:`learn_input_params`): the per-feature input
   scales ``S_i`` are learned together with the first layer's weight scales
   ``s_j`` and float bias ``b`` (straight-through rounding, Adam on
   ``log2 S``, ``log2 s_j``), minimising the block output error with the
   later layers in float; ``S_i`` never goes below the min-max scale (no
   more clipping than qtc's), ``Z_i`` centres the calibration range.  Then
   ``q = round(x/S) + Z`` (clamped), ``x^ = S(q - Z)``, and the first
   layer's weights in the rewritten graph are ``n = round(W·S/(s·s_j))``,
   ``s = 2^-(bits-1)`` the in-graph input scale;
2. qtc calibrates and builds the graph with these input params as usual
   (the activation params inside the block and the later layers' weight
   scales are qtc's);
3. (:func:`reconstruct`) one AdaRound over all the block's weights at once
   against the float block output, the first layer's ``s_j`` and ``b`` still
   learning, the activations inside the block fake-quantized with qtc's
   params; the integers, scales and the bias
   ``b' = b - s·s_j·Σ_i n_ji Z_i`` are written into the integer graph, and
   kept only if the *integer graph's* block output error on the calibration
   rows is no worse than the graph's as built (nearest rounding).

On power-of-two targets no scale is learned (only the joint rounding and the
bias).  Deterministic: float64, one thread, seeded generators.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ...errors import QtcError
from ...ir.graph import Graph
from ...ir.tensor import _round_away
from .adaround import GAMMA, ZETA, AdaRoundConfig, _act_np, _activation
from .collect import collect
from .constraints import QuantSpec
from .input_features import feature_params, inner_scale
from .params import _qrange, quantize_bias, weight_amax


@dataclass
class Block:
    input: str
    nodes: list[str]
    ws: list[np.ndarray]       # float weights [O, I] of the original graph
    bs: list[np.ndarray]
    acts: list[str]
    x: np.ndarray              # calibration rows [R, F] of the original input (float64)
    scale: np.ndarray          # per-feature S_i (float32)
    zero_point: np.ndarray     # Z_i (int64)
    w_scale: np.ndarray | None  # learned first-layer weight scales s_j (None: qtc's)
    bias: np.ndarray           # first layer's float bias (learned or the model's)
    learned: bool
    loss: float | None         # step-1 block loss (normalised), None when not learned


def find_block(g: Graph, name: str, max_layers: int, int_nodes: set[str]) -> list | None:
    """The chain of FullyConnected nodes reading ``name`` (None when there is none)."""
    cons = g.consumers()
    chain, cur = [], name
    while len(chain) < max_layers:
        nxt = cons.get(cur, [])
        if cur in g.outputs or len(nxt) != 1:
            break
        n = nxt[0]
        if n.op != "FullyConnected" or n.inputs[0] != cur or n.name not in int_nodes \
                or not g.tensors[n.inputs[1]].is_const or g.tensors[n.inputs[1]].data.ndim != 2 \
                or not (len(n.inputs) < 3 or not n.inputs[2] or g.tensors[n.inputs[2]].is_const):
            break
        chain.append(n)
        cur = n.outputs[0]
    return chain or None


def _torch():
    try:
        import torch
    except ImportError:
        raise QtcError("block reconstruction needs torch (CPU)", where="qtc quantize --adaround",
                       hint="pip install 'qtc[torch]', or quantize without block reconstruction") from None
    return torch


def _round_ste(torch, v):
    r = torch.sign(v) * torch.floor(torch.abs(v) + 0.5)  # half away from zero, as the kernels
    return v + (r - v).detach()


def _centred_zp(scale: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    qmin, qmax = _qrange(bits)
    return np.floor(0.5 * (qmin + qmax) - 0.5 * (lo + hi) / scale + 0.5).astype(np.int64)


def _float_block(x: np.ndarray, blk: Block) -> np.ndarray:
    a = x
    for w, b, act in zip(blk.ws, blk.bs, blk.acts):
        a = _act_np(a @ w.T + b, act)
    return a


def _sample(x: np.ndarray, cfg: AdaRoundConfig) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, 7])
    idx = np.sort(rng.choice(x.shape[0], size=min(x.shape[0], cfg.max_rows), replace=False))
    return x[idx]


class _torch_mode:
    """One thread and deterministic algorithms while the optimisation runs (restored after)."""

    def __init__(self, torch):
        self.torch = torch

    def __enter__(self):
        t = self.torch
        self.saved = t.get_num_threads(), t.are_deterministic_algorithms_enabled()
        t.set_num_threads(1)
        t.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        self.torch.set_num_threads(self.saved[0])
        self.torch.use_deterministic_algorithms(self.saved[1])


def learn_input_params(g: Graph, name: str, x: np.ndarray, chain: list, spec: QuantSpec, wbits: int,
                       cfg: AdaRoundConfig) -> Block:
    """Step 1: per-feature input params (and the first layer's scales, bias) for the block at ``name``."""
    t_ = g.tensors
    ws = [t_[n.inputs[1]].data.astype(np.float64) for n in chain]
    bs = [t_[n.inputs[2]].data.astype(np.float64) if len(n.inputs) > 2 and n.inputs[2]
          else np.zeros(w.shape[0]) for n, w in zip(chain, ws)]
    acts = [str(n.attrs.get("activation", "none") or "none") for n in chain]
    flat = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    s0, z0 = feature_params(flat, spec.abits, spec.power_of_two)
    blk = Block(name, [n.name for n in chain], ws, bs, acts, _sample(flat, cfg), s0, z0, None, bs[0].copy(),
                False, None)
    if spec.power_of_two or cfg.block_scale_iters == 0:
        return blk
    torch = _torch()
    qmin, qmax = _qrange(spec.abits)
    wq = (1 << (wbits - 1)) - 1
    s_in = inner_scale(spec.abits)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    sw0 = np.maximum(weight_amax(ws[0] * (s0.astype(np.float64) / s_in)[None, :], spec.per_channel, "mse", wbits)
                     / wq, 1e-12)
    with _torch_mode(torch):
        f64 = torch.float64
        gen = torch.Generator().manual_seed(int(cfg.seed))
        xt = torch.as_tensor(blk.x, dtype=f64)
        y = torch.as_tensor(_float_block(blk.x, blk), dtype=f64)
        norm = float((y ** 2).sum(1).mean()) or 1.0
        W = [torch.as_tensor(w, dtype=f64) for w in ws]
        B = [torch.as_tensor(b, dtype=f64) for b in bs]
        t_min = torch.as_tensor(np.log2(s0.astype(np.float64)))
        t = torch.nn.Parameter(t_min.clone())
        u = torch.nn.Parameter(torch.as_tensor(np.log2(sw0)))
        b1 = torch.nn.Parameter(B[0].clone())
        lo_t, hi_t = torch.as_tensor(lo), torch.as_tensor(hi)
        opt = torch.optim.Adam([t, u, b1], lr=cfg.block_scale_lr)
        rows = xt.shape[0]
        batch = min(cfg.batch, rows)
        loss = None
        for _ in range(cfg.block_scale_iters):
            idx = torch.randint(rows, (batch,), generator=gen)
            S, sw = torch.exp2(t), torch.exp2(u)
            Z = torch.floor(0.5 * (qmin + qmax) - 0.5 * (lo_t + hi_t) / S + 0.5).detach()
            q = torch.clamp(_round_ste(torch, xt[idx] / S) + Z, qmin, qmax)
            n = torch.clamp(_round_ste(torch, W[0] * S[None, :] / (s_in * sw[:, None])), -wq, wq)
            a = _activation(torch, (S * (q - Z)) @ (s_in * sw[:, None] * n / S[None, :]).T + b1, acts[0])
            for w, b, act in zip(W[1:], B[1:], acts[1:]):
                a = _activation(torch, a @ w.T + b, act)
            loss = ((a - y[idx]) ** 2).sum(1).mean() / norm
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                t.copy_(torch.maximum(t, t_min))
        scale = np.float32(torch.exp2(t).detach().numpy())
        blk.scale = scale
        blk.zero_point = _centred_zp(scale.astype(np.float64), lo, hi, spec.abits)
        blk.w_scale = np.float32(torch.exp2(u).detach().numpy())
        blk.bias = b1.detach().numpy().astype(np.float64)
        blk.learned, blk.loss = True, round(float(loss.detach()), 8) if loss is not None else None
    return blk


def _block_error(qg: Graph, calib_q: dict, out: str, y: np.ndarray) -> float:
    """The integer graph's block output error on every calibration row (normalised as the loss)."""
    got = collect(qg, calib_q, [out])[out].astype(np.float64).reshape(y.shape)
    return float(np.mean(np.sum((got - y) ** 2, axis=1)) / (np.mean(np.sum(y ** 2, axis=1)) or 1.0))


def reconstruct(qg: Graph, blk: Block, calib_q: dict, x_full: np.ndarray, spec: QuantSpec,
                cfg: AdaRoundConfig) -> dict:
    """Steps 3-4 on the built graph ``qg`` (in place); returns the block's metadata."""
    torch = _torch()
    nodes = [qg.node(n) for n in blk.nodes]
    report: dict = {"input": blk.input, "nodes": list(blk.nodes), "learned_input_params": blk.learned,
                    "input_loss": blk.loss}
    for a, b in zip(nodes, nodes[1:]):
        if b.inputs[0] != a.outputs[0]:
            return {**report, "applied": False, "reason": f"{b.name!r} does not read {a.name!r}'s output directly"}
    wts = [qg.tensors[n.inputs[1]] for n in nodes]
    if any(w.quant is None or qg.tensors[n.outputs[0]].quant is None for w, n in zip(wts, nodes)):
        return {**report, "applied": False, "reason": "the block is not all integer"}
    s_in = float(qg.tensors[nodes[0].inputs[0]].quant.scale[0])
    qmin, qmax = _qrange(spec.abits)
    S = blk.scale.astype(np.float64)
    Z = blk.zero_point.astype(np.float64)
    xh = S * (np.clip(_round_away(blk.x / S) + Z, qmin, qmax) - Z)  # the input as the boundary quantizes it
    y = _float_block(blk.x, blk)
    learn_w = blk.w_scale is not None
    sw0 = blk.w_scale.astype(np.float64) if learn_w else wts[0].quant.scale.astype(np.float64)
    scales = [w.quant.scale.astype(np.float64).reshape(-1, 1) for w in wts]
    mids = [qg.tensors[n.outputs[0]].quant for n in nodes[:-1]]
    with _torch_mode(torch):
        f64 = torch.float64
        gen = torch.Generator().manual_seed(int(cfg.seed) + 7919)
        xt, yt = torch.as_tensor(xh, dtype=f64), torch.as_tensor(y, dtype=f64)
        norm = float((yt ** 2).sum(1).mean()) or 1.0
        St = torch.as_tensor(S)
        u = torch.nn.Parameter(torch.as_tensor(np.log2(sw0)))
        b1 = torch.nn.Parameter(torch.as_tensor(blk.bias, dtype=f64))
        ratios = [blk.ws[0] * S[None, :] / (s_in * sw0[:, None])] + [w / s for w, s in zip(blk.ws[1:], scales[1:])]
        floors, vs = [], []
        for r in ratios:
            fl = np.floor(r)
            rest = np.clip(r - fl, 1e-4, 1 - 1e-4)
            floors.append(torch.as_tensor(fl))
            vs.append(torch.nn.Parameter(torch.as_tensor(-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0))))
        lims = [(w.quant.qmin, w.quant.qmax) for w in wts]
        sc = [torch.as_tensor(s) for s in scales]
        bt = [torch.as_tensor(b, dtype=f64) for b in blk.bs]
        groups = [{"params": vs, "lr": cfg.lr}, {"params": ([u] if learn_w else []) + [b1], "lr": cfg.block_tune_lr}]
        opt = torch.optim.Adam(groups)

        def forward(idx, hard: bool):
            hs = [(v >= 0).to(f64) if hard else
                  torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0) for v in vs]
            ns = [torch.clamp(f + h, lo, hi) for f, h, (lo, hi) in zip(floors, hs, lims)]
            sw = torch.exp2(u)
            a = _activation(torch, xt[idx] @ (s_in * sw[:, None] * ns[0] / St[None, :]).T + b1, blk.acts[0])
            for k in range(1, len(ns)):
                p = mids[k - 1]
                sa, za = float(p.scale[0]), float(p.zero_point[0])
                a = sa * (torch.clamp(_round_ste(torch, a / sa) + za, p.qmin, p.qmax) - za)
                a = _activation(torch, a @ (sc[k] * ns[k]).T + bt[k], blk.acts[k])
            return a, hs, ns

        rows = xt.shape[0]
        batch = min(cfg.batch, rows)
        warm = int(cfg.warmup * cfg.block_iters)
        for it in range(cfg.block_iters):
            idx = torch.randint(rows, (batch,), generator=gen)
            a, hs, _ = forward(idx, False)
            loss = ((a - yt[idx]) ** 2).sum(1).mean() / norm
            if it >= warm:
                decay = (it - warm) / max(cfg.block_iters - warm, 1)
                beta = cfg.beta_end + (cfg.beta_start - cfg.beta_end) * max(0.0, 1.0 - decay)
                loss = loss + cfg.lam * sum(torch.sum(1.0 - torch.abs(2.0 * h - 1.0) ** beta) for h in hs)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            a, _, ns = forward(torch.arange(rows), True)
            report["loss_soft_to_hard"] = round(float(((a - yt) ** 2).sum(1).mean() / norm), 8)
            ints = [n.numpy().astype(np.int64) for n in ns]
            sw = np.float32(torch.exp2(u).numpy())
            bias1 = b1.numpy().astype(np.float64)
    # install into the integer graph; keep it only if the integer block output is no worse than as built
    y_full = _float_block(np.asarray(x_full, np.float64).reshape(-1, x_full.shape[-1]), blk)
    out = nodes[-1].outputs[0]
    err_near = _block_error(qg, calib_q, out, y_full)
    saved = {name: copy.deepcopy(qg.tensors[name]) for n in nodes for name in n.inputs[1:3] if name}
    w_scale = sw if learn_w else wts[0].quant.scale.astype(np.float32)
    bias_q = bias1 - s_in * w_scale.astype(np.float64) * (ints[0] * blk.zero_point[None, :]).sum(1)
    bias_bits = spec.bias_bits_at(wts[0].quant.bits)
    qb, bq, clipped = quantize_bias(bias_q, s_in, w_scale, bits=bias_bits, rounding=spec.rounding)
    for wt, n in zip(wts, ints):
        wt.data = n.astype(np.int8)
    wts[0].quant.scale = np.asarray(w_scale, np.float32)
    bname = nodes[0].inputs[2] if len(nodes[0].inputs) > 2 and nodes[0].inputs[2] else ""
    if not bname or sum(i == bname for m in qg.nodes for i in m.inputs) > 1:
        bname = qg.unique_name(f"{nodes[0].name}/bias")
        qg.add_tensor(bname, qb.shape, "int32", data=qb)
        old_inputs = list(nodes[0].inputs)
        nodes[0].inputs = [*nodes[0].inputs[:2], bname]
    else:
        old_inputs = None
    bt_ = qg.tensors[bname]
    bt_.shape, bt_.data, bt_.dtype, bt_.quant = tuple(qb.shape), qb, "int32", bq
    err_block = _block_error(qg, calib_q, out, y_full)
    keep = err_block <= err_near and not clipped
    if not keep:
        for name, t in saved.items():
            qg.tensors[name] = t
        if old_inputs is not None:
            nodes[0].inputs = old_inputs
    report.update({"applied": True, "rows": int(blk.x.shape[0]), "loss_nearest": round(err_near, 8),
                   "loss_block": round(err_block, 8), "bias_clipped": int(clipped), "kept_nearest": not keep,
                   "learned_weight_scales": learn_w})
    return report
