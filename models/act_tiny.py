"""act_tiny: a small ACT-like policy (torch only): image + state -> a chunk of future actions.

Inputs  "image" [1, 3, 32, 32] (NCHW, 0..1) and "state" [1, 8]; output "actions" [1, 8, 4].
Backbone: 3 stride-2 convs -> 4x4x64 feature map = 16 image tokens; the state is one
token; 8 learned query tokens; learned position embeddings. A 2-layer pre-LN
transformer encoder (d=64, 4 heads, GELU MLP), attention written with plain
matmul/softmax so every exporter sees ordinary ops. The query tokens' outputs go
through a linear head to 4 action dims.

Synthetic task (seeded): the image shows a red target blob (and sometimes a blue
distractor); the state is (ee_x, ee_y, ee_z, grip, vel_x, vel_y, gain, mode).
mode 0 reaches for the target (descend, close the gripper); mode 1 returns home
(0, 0, up, open). The expert chunk is a smooth first-order approach whose rate
depends on ``gain``, plus a decaying carry-over of the current velocity.
Metric: MSE over the chunk; also success = final waypoint's xy within 0.1 of the expert's.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import IOSpec, Trained, fit, seeded, torch_predict
from .zoo import build_torch

NAME = "act_tiny"
IMG = 32
N_TRAIN, N_CALIB, N_EVAL = 5000, 256, 512
SUCCESS_RADIUS = 0.1


class Block(nn.Module):
    """Pre-LN transformer encoder layer with explicit multi-head attention."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ff_dim)
        self.ff2 = nn.Linear(ff_dim, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.reshape(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # [B, H, T, dh]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = self._heads(self.q(h)), self._heads(self.k(h)), self._heads(self.v(h))
        att = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(d // self.n_heads)), dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(o)
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


class ActTiny(nn.Module):
    def __init__(self, state_dim: int = 8, chunk: int = 8, action_dim: int = 4, d_model: int = 64,
                 n_heads: int = 4, n_layers: int = 2, ff_dim: int = 128):
        super().__init__()
        self.chunk = chunk
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, d_model, 3, stride=2, padding=1)
        self.state_proj = nn.Linear(state_dim, d_model)
        n_img = (IMG // 8) ** 2
        self.queries = nn.Parameter(torch.randn(chunk, d_model) * 0.02)
        self.pos = nn.Parameter(torch.randn(1 + n_img + chunk, d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, ff_dim) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, action_dim)

    def forward(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        f = F.relu(self.conv1(image))
        f = F.relu(self.conv2(f))
        f = F.relu(self.conv3(f))                                   # [B, D, 4, 4]
        img_tokens = f.flatten(2).transpose(1, 2)                    # [B, 16, D]
        state_token = self.state_proj(state).unsqueeze(1)            # [B, 1, D]
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)        # [B, K, D]
        x = torch.cat([state_token, img_tokens, queries], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x[:, -self.chunk:]))                # [B, K, A]


def make_samples(n: int, seed: int, chunk: int = 8) -> dict[str, np.ndarray]:
    """``n`` seeded samples: image [n,3,32,32], state [n,8], actions [n,chunk,4] (float32)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:IMG, 0:IMG].astype(np.float32)
    base = rng.uniform(0.1, 0.3, (n, 3, 1, 1))
    image = base + rng.normal(0.0, 0.03, (n, 3, IMG, IMG))

    def blob(cx, cy, sigma, color):
        g = np.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / (2 * sigma[:, None, None] ** 2))
        return color[:, :, None, None] * g[:, None]

    cx, cy = rng.uniform(4, IMG - 4, n), rng.uniform(4, IMG - 4, n)
    red = np.clip(np.array([0.9, 0.15, 0.15]) + rng.normal(0, 0.05, (n, 3)), 0, 1)
    image += blob(cx, cy, rng.uniform(1.5, 2.5, n), red)
    dx, dy = rng.uniform(2, IMG - 2, n), rng.uniform(2, IMG - 2, n)
    blue = np.clip(np.array([0.15, 0.3, 0.9]) + rng.normal(0, 0.05, (n, 3)), 0, 1)
    blue *= (rng.random(n) < 0.5)[:, None]
    image += blob(dx, dy, rng.uniform(1.5, 2.5, n), blue)

    ee = rng.uniform(-1, 1, (n, 2))
    ez, grip = rng.uniform(0.3, 1.0, n), rng.uniform(0, 1, n)
    vel = rng.normal(0.0, 0.3, (n, 2))
    gain = rng.uniform(0, 1, n)
    mode = (rng.random(n) < 0.25).astype(np.float64)
    state = np.column_stack([ee, ez, grip, vel, gain, mode])

    target = np.column_stack([(cx - IMG / 2) / 12, (cy - IMG / 2) / 12])
    goal_xy = target * (1 - mode)[:, None]
    goal_z = np.where(mode > 0, 1.0, 0.1)
    goal_grip = 1.0 - mode
    k = np.arange(1, chunk + 1)[None, :]
    alpha = (0.15 + 0.25 * gain)[:, None]
    s = 1 - (1 - alpha) ** k                                         # [n, K] approach fraction
    carry = 0.15 * (1 - 0.6 ** k)                                     # velocity carry-over
    xy = ee[:, None] + (goal_xy - ee)[:, None] * s[..., None] + vel[:, None] * carry[..., None]
    z = ez[:, None] + (goal_z - ez)[:, None] * s ** 2
    g = grip[:, None] + (goal_grip - grip)[:, None] * s ** 3
    actions = np.concatenate([xy, z[..., None], g[..., None]], axis=-1)
    return {"image": image.astype(np.float32), "state": state.astype(np.float32),
            "actions": actions.astype(np.float32)}


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    tr = make_samples(N_TRAIN, seed)
    ev = make_samples(N_EVAL, seed + 1000)
    return {"image_train": tr["image"], "state_train": tr["state"], "y_train": tr["actions"],
            "x_calib_image": tr["image"][:N_CALIB], "x_calib_state": tr["state"][:N_CALIB],
            "x_eval_image": ev["image"], "x_eval_state": ev["state"], "y_eval": ev["actions"]}


def mse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((pred.astype(np.float64) - y) ** 2))


def success(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(pred[:, -1, :2] - y[:, -1, :2], axis=-1) < SUCCESS_RADIUS))


@seeded
def train(seed: int = 0) -> Trained:
    data = make_data(seed)
    model = build_torch(NAME)
    tensors = [torch.from_numpy(data[k]) for k in ("image_train", "state_train", "y_train")]
    fit(model, lambda m, im, st, y: F.mse_loss(m(im, st), y), tensors,
        epochs=20, batch_size=64, lr=2e-3, seed=seed, weight_decay=1e-4)
    out = {k: v for k, v in data.items() if not k.endswith("_train")}
    inputs = [IOSpec("image", [1, 3, IMG, IMG], "NCHW", calib_key="x_calib_image", eval_key="x_eval_image"),
              IOSpec("state", [1, 8], "NC", calib_key="x_calib_state", eval_key="x_eval_state")]
    pred = torch_predict(model)(out["x_eval_image"], out["x_eval_state"])
    return Trained(
        model=model, data=out, inputs=inputs, outputs=["actions"],
        task="action-chunk regression (ACT-like; 8 steps x 4 dims)", metric_name="mse",
        metric=lambda predict, keras=False: mse(predict(out["x_eval_image"], out["x_eval_state"]), out["y_eval"]),
        extra_meta={"success_rate": success(pred, out["y_eval"]), "success_radius": SUCCESS_RADIUS,
                    "state_fields": ["ee_x", "ee_y", "ee_z", "grip", "vel_x", "vel_y", "gain", "mode"],
                    "action_fields": ["x", "y", "z", "grip"]})


if __name__ == "__main__":  # quick look: python -m models.act_tiny
    t = train()
    print(NAME, "mse", t.metric(torch_predict(t.model)), t.extra_meta["success_rate"])
