"""The Deep Sets collision-avoidance task behind ``peer_encoder`` and ``policy_head``.

A scene is one ego agent and 1..8 peers, in the ego's body frame (x forward, y left):
  ego  [4]  = (v_forward, v_lateral, goal_x, goal_y)        velocity (m/s) and unit goal direction
  peer [6]  = (p_x, p_y, w_x, w_y, radius, gap)             relative position, relative velocity
                                                             (peer - ego), combined radius, |p| - radius
The expert picks one of ACTIONS from time-to-collision (TTC) under constant velocities:
  no peer collides within HORIZON s -> steer to the goal (keep / left / right)
  earliest TTC < T_STOP            -> stop
  earliest TTC < T_SLOW            -> slow
  otherwise                        -> turn away from the side the earliest threat passes on
The policy: ``encoder`` per peer, masked mean pool, ``head`` on [pooled || ego] -> logits.
"success" means the chosen action's velocity leaves every peer collision-free for HORIZON s.

:func:`evaluate_pair` scores any pair of callables (float torch, a Keras twin, an
integer interpreter) on saved scenes.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import fit, seeded

ACTIONS = ("keep", "left", "right", "slow", "stop")
MAX_PEERS = 8
PEER_DIM = 6
EGO_DIM = 4
HORIZON = 3.0
T_STOP = 1.0
T_SLOW = 1.8
GOAL_TURN = 0.35      # rad: steer to the goal beyond this angle
TURN = np.deg2rad(35.0)
SLOW_FACTOR = 0.4
N_TRAIN, N_EVAL = 20000, 2000


def ttc(p: np.ndarray, w: np.ndarray, r: np.ndarray, horizon: float = HORIZON) -> np.ndarray:
    """Time until |p + w t| first reaches r (inf when never within ``horizon``); p, w [..., 2]."""
    a = np.sum(w * w, axis=-1)
    b = np.sum(p * w, axis=-1)
    c = np.sum(p * p, axis=-1) - r * r
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    hit = (disc >= 0) & (a > 1e-12) & (t1 >= 0) & (t1 <= horizon)
    out = np.where(hit, t1, np.inf)
    return np.where(c <= 0, 0.0, out)


def action_velocity(ego_v: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The ego velocity [N, 2] after taking ``action`` [N]."""
    ang = np.select([action == 1, action == 2], [TURN, -TURN], 0.0)
    cos, sin = np.cos(ang), np.sin(ang)
    v = np.stack([cos * ego_v[:, 0] - sin * ego_v[:, 1], sin * ego_v[:, 0] + cos * ego_v[:, 1]], axis=1)
    scale = np.select([action == 3, action == 4], [SLOW_FACTOR, 0.0], 1.0)
    return v * scale[:, None]


def collision_free(scenes: dict, actions: np.ndarray) -> np.ndarray:
    """[N] bool: the ego velocity after ``actions`` keeps every peer clear for HORIZON s."""
    peers, mask, ego = scenes["peers"], scenes["mask"].astype(bool), scenes["ego"]
    world = peers[..., 2:4] + ego[:, None, 0:2]             # peer velocity, ego-frame axes
    w = world - action_velocity(ego[:, 0:2], actions)[:, None, :]
    t = ttc(peers[..., 0:2], w, peers[..., 4])
    return np.all(~mask | np.isinf(t), axis=1)


def expert(scenes: dict) -> np.ndarray:
    """The expert's action [N] int64 for each scene."""
    peers, mask, ego = scenes["peers"], scenes["mask"].astype(bool), scenes["ego"]
    p, w = peers[..., 0:2], peers[..., 2:4]
    t = np.where(mask, ttc(p, w, peers[..., 4]), np.inf)
    first = np.argmin(t, axis=1)
    t_min = t[np.arange(len(t)), first]
    # the side the earliest threat passes on, at its closest approach
    pi = p[np.arange(len(t)), first]
    wi = w[np.arange(len(t)), first]
    t_ca = np.clip(-np.sum(pi * wi, -1) / np.maximum(np.sum(wi * wi, -1), 1e-12), 0.0, HORIZON)
    y_ca = pi[:, 1] + wi[:, 1] * t_ca
    avoid = np.where(y_ca >= 0, 2, 1)                       # threat on the left -> turn right
    goal = np.arctan2(ego[:, 3], ego[:, 2])
    steer = np.select([goal > GOAL_TURN, goal < -GOAL_TURN], [1, 2], 0)
    action = np.select([np.isinf(t_min), t_min < T_STOP, t_min < T_SLOW], [steer, 4, 3], avoid)
    return action.astype(np.int64)


def make_scenes(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` seeded scenes: peers [n,8,6] (zero padded), mask [n,8] bool, ego [n,4], labels [n]."""
    rng = np.random.default_rng(seed)
    shape = (n, MAX_PEERS)
    vf = rng.uniform(0.6, 1.4, n)
    vl = np.clip(rng.normal(0.0, 0.1, n), -0.25, 0.25)
    goal = np.clip(rng.normal(0.0, 0.6, n), -np.pi, np.pi)
    ego = np.stack([vf, vl, np.cos(goal), np.sin(goal)], axis=1)
    ego_v = ego[:, None, 0:2]
    n_peers = rng.integers(1, MAX_PEERS + 1, n)
    mask = np.arange(MAX_PEERS)[None, :] < n_peers[:, None]
    radius = rng.uniform(0.3, 0.7, shape)
    # peer velocities (world = ego axes): random heading and speed
    heading = rng.uniform(-np.pi, np.pi, shape)
    speed = rng.uniform(0.0, 1.5, shape)
    u = np.stack([np.cos(heading), np.sin(heading)], -1) * speed[..., None]
    # background peers: anywhere 1..7 m away
    dist = rng.uniform(1.0, 7.0, shape)
    bearing = rng.uniform(-np.pi, np.pi, shape)
    p_rand = np.stack([np.cos(bearing), np.sin(bearing)], -1) * dist[..., None]
    # threatening peers: aimed to meet the ego's path at time tau, with a miss offset
    tau = rng.uniform(0.5, 4.0, shape)
    miss = rng.normal(0.0, 0.35, shape + (2,))
    p_threat = ego_v * tau[..., None] + miss - u * tau[..., None]
    threat = rng.random(shape) < 0.3
    p = np.where(threat[..., None], p_threat, p_rand)
    too_close = np.linalg.norm(p, axis=-1) < radius + 0.3
    p = np.where(too_close[..., None], p_rand, p)
    w = u - ego_v
    gap = np.linalg.norm(p, axis=-1) - radius
    peers = np.concatenate([p, w, radius[..., None], gap[..., None]], -1) * mask[..., None]
    scenes = {"peers": peers.astype(np.float32), "mask": mask, "ego": ego.astype(np.float32),
              "n_peers": n_peers.astype(np.int64)}
    scenes["labels"] = expert(scenes)
    return scenes


def pool(encoded: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over the peer axis: encoded [N, 8, D], mask [N, 8] -> [N, D]."""
    m = mask.astype(np.float32)[..., None]
    return (encoded * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)


def head_inputs(encoder_fn: Callable, scenes: dict) -> np.ndarray:
    """[N, 36] = [pooled encoder outputs || ego] for every scene, float32."""
    mask = scenes["mask"].astype(bool)
    flat = np.ascontiguousarray(scenes["peers"][mask], dtype=np.float32)
    enc = np.asarray(encoder_fn(flat), dtype=np.float32)
    full = np.zeros(mask.shape + (enc.shape[-1],), np.float32)
    full[mask] = enc
    return np.concatenate([pool(full, mask), scenes["ego"]], axis=1).astype(np.float32)


def evaluate_pair(encoder_fn: Callable, head_fn: Callable, scenes) -> dict:
    """Score a policy made of any two callables on scenes (a dict or a ``scenes_eval.npz`` path).

    ``encoder_fn(x [M, 6] float32) -> [M, 32]`` runs on every valid peer;
    ``head_fn(x [N, 36] float32) -> [N, 5]`` logits (or any scores; argmax is taken).
    Wrap batch-1 callables with :func:`batched`.
    """
    if not isinstance(scenes, dict):
        with np.load(scenes) as z:
            scenes = {k: z[k] for k in z.files}
    actions = np.argmax(np.asarray(head_fn(head_inputs(encoder_fn, scenes))), axis=1)
    labels = scenes["labels"]
    confusion = np.zeros((len(ACTIONS), len(ACTIONS)), np.int64)
    np.add.at(confusion, (labels, actions), 1)
    return {"accuracy": float(np.mean(actions == labels)),
            "success_rate": float(np.mean(collision_free(scenes, actions))),
            "expert_success_rate": float(np.mean(collision_free(scenes, labels))),
            "n_scenes": int(len(labels)),
            "confusion": confusion.tolist()}


def batched(fn: Callable) -> Callable:
    """Turn a one-sample callable (x [1, D] -> [1, K]) into a batch callable."""
    def run(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(fn(x[i:i + 1])) for i in range(len(x))])
    return run


class DeepSetsPolicy(nn.Module):
    """encoder per peer -> masked mean -> head on [pooled || ego] (training only; never exported)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, peers: torch.Tensor, mask: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        m = mask.to(peers.dtype).unsqueeze(-1)
        enc = self.encoder(peers) * m
        pooled = enc.sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return self.head(torch.cat([pooled, ego], dim=1))


@functools.lru_cache(maxsize=2)
@seeded
def train_pair(seed: int = 0):
    """Train encoder + head jointly. Returns (encoder, head, train scenes, eval scenes)."""
    from .zoo import build_torch

    train_sc = make_scenes(N_TRAIN, seed)
    eval_sc = make_scenes(N_EVAL, seed + 1000)
    encoder, head = build_torch("peer_encoder"), build_torch("policy_head")
    policy = DeepSetsPolicy(encoder, head)
    tensors = [torch.from_numpy(train_sc[k]) for k in ("peers", "mask", "ego", "labels")]
    fit(policy, lambda m, p, k, e, y: F.cross_entropy(m(p, k, e), y), tensors,
        epochs=40, batch_size=128, lr=3e-3, seed=seed, weight_decay=1e-4)
    return encoder.eval(), head.eval(), train_sc, eval_sc
