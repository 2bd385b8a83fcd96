"""ts_cnn: a 1-D CNN that tells normal from arcing mains current (synthetic, seeded).

Waveforms are 256 samples at 6.4 kHz (two 50 Hz cycles), in amperes-ish units:
  0 "linear"    sine + small 3rd/5th harmonics, sensor noise, sometimes a switching transient
  1 "nonlinear" a phase-cut dimmer or a rectifier (SMPS) load: regular flat spots and pulses
  2 "arc"       a linear or nonlinear load whose half-cycles are erratically disturbed by an
                arc: flat "shoulders" around the zero crossings (re-ignition delay and early
                extinction) and high-frequency bursts while conducting
Weak arcs (few disturbed half-cycles, narrow shoulders, small bursts) overlap the
normal classes, so the task is not trivially separable.

Model: [Conv1d-BN-ReLU-MaxPool2] x3 -> Conv1d-BN-ReLU -> global average pool -> Linear.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import IOSpec, Trained, fit, seeded, torch_predict
from .zoo import build_torch

NAME = "ts_cnn"
LENGTH = 256
FS = 6400.0
CLASSES = ("linear", "nonlinear", "arc")
N_TRAIN, N_CALIB, N_EVAL = 4500, 512, 900
KERNELS = (7, 5, 5, 3)


class TsCNN(nn.Module):
    def __init__(self, channels: list[int] = (8, 16, 32, 32), num_classes: int = 3):
        super().__init__()
        chans = [1, *channels]
        self.convs = nn.ModuleList(nn.Conv1d(chans[i], chans[i + 1], k, padding=k // 2)
                                   for i, k in enumerate(KERNELS[:len(channels)]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(c) for c in channels)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = F.relu(bn(conv(x)))
            if i < last:
                x = F.max_pool1d(x, 2)
        # global average pool as a full-length AveragePool: it exports at opset 17
        # (a mean over an axis becomes ReduceMean-18, which the exporter cannot take down to 17)
        return self.fc(F.avg_pool1d(x, x.shape[-1]).flatten(1))


def _load(rng: np.random.Generator, theta: np.ndarray, nonlinear: bool) -> np.ndarray:
    """One load's current over phase ``theta`` (unit amplitude)."""
    if not nonlinear:
        h3, h5 = rng.uniform(0, 0.06), rng.uniform(0, 0.04)
        return (np.sin(theta) + h3 * np.sin(3 * theta + rng.uniform(0, 2 * np.pi))
                + h5 * np.sin(5 * theta + rng.uniform(0, 2 * np.pi)))
    half = np.mod(theta, np.pi)
    if rng.random() < 0.5:  # phase-cut dimmer: conducts from the firing angle to the zero crossing
        alpha = rng.uniform(0.15, 0.6) * np.pi
        return np.where(half >= alpha, np.sin(theta), 0.0)
    c = rng.uniform(0.6, 0.85)  # rectifier + bulk capacitor: pulses around the peaks
    p = rng.uniform(1.0, 2.0)
    return np.sign(np.sin(theta)) * np.maximum(0.0, (np.abs(np.sin(theta)) - c) / (1 - c)) ** p


def _transient(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A damped ringing at a random instant (a switching event)."""
    t0 = rng.uniform(0, t[-1])
    f, tau = rng.uniform(500, 2000), rng.uniform(1e-3, 4e-3)
    dt = t - t0
    return np.where(dt >= 0, np.exp(-np.maximum(dt, 0) / tau) * np.sin(2 * np.pi * f * dt), 0.0)


def _arc(rng: np.random.Generator, theta: np.ndarray, current: np.ndarray, strength: float) -> np.ndarray:
    """Disturb random half-cycles of ``current`` like a series arc would."""
    out = current.copy()
    half_index = np.floor(theta / np.pi).astype(int)
    half_phase = np.mod(theta, np.pi) / np.pi  # 0..1 within each half-cycle
    p_hit = 0.25 + 0.75 * strength
    for k in np.unique(half_index):
        if rng.random() > p_hit:
            continue
        sel = half_index == k
        w_on = rng.uniform(0.02, 0.04 + 0.14 * strength)   # re-ignition delay (shoulder after zero)
        w_off = rng.uniform(0.0, 0.02 + 0.06 * strength)   # early extinction (shoulder before zero)
        flat = sel & ((half_phase < w_on) | (half_phase > 1 - w_off))
        out[flat] = rng.normal(0, 0.01, flat.sum())
        burst = sel & ~flat
        amp = rng.uniform(0.02, 0.04 + 0.16 * strength)
        noise = np.diff(rng.normal(0, 1, burst.sum() + 1))  # high-passed white noise
        out[burst] += amp * noise
    return out


def make_waveforms(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` waveforms [n, 1, 256] float32 and their labels [n] int64, balanced, seeded."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH) / FS
    x = np.empty((n, 1, LENGTH), np.float32)
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    for i in range(n):
        theta = 2 * np.pi * rng.uniform(49.5, 50.5) * t + rng.uniform(0, 2 * np.pi)
        theta -= 2 * np.pi * np.floor(theta[0] / (2 * np.pi))  # keep theta >= 0
        amp = rng.uniform(0.3, 1.0)
        nonlinear = (y[i] == 1) or (y[i] == 2 and rng.random() < 0.35)
        cur = _load(rng, theta, nonlinear)
        if y[i] == 2:
            cur = _arc(rng, theta, cur, strength=rng.uniform(0.05, 1.0) ** 1.25)
        if rng.random() < 0.3:
            cur = cur + rng.uniform(0.05, 0.3) * _transient(rng, t)
        sig = amp * cur + rng.normal(0, rng.uniform(0.005, 0.03), LENGTH)
        x[i, 0] = sig.astype(np.float32)
    return x, y.astype(np.int64)


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    x_train, y_train = make_waveforms(N_TRAIN, seed)
    x_eval, y_eval = make_waveforms(N_EVAL, seed + 1000)
    return {"x_train": x_train, "y_train": y_train, "x_calib": x_train[:N_CALIB],
            "x_eval": x_eval, "y_eval": y_eval}


def accuracy(predict, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict(x), axis=1) == y))


def build_keras(model: TsCNN):
    from ._keras import copy_batchnorm, copy_conv, copy_dense, import_tf

    _, keras = import_tf()
    L = keras.layers
    inp = keras.Input(shape=(LENGTH, 1), batch_size=1, name="input")
    x = inp
    pairs = []
    last = len(model.convs) - 1
    for i, (conv, bn) in enumerate(zip(model.convs, model.bns)):
        kconv = L.Conv1D(conv.out_channels, conv.kernel_size[0], padding="same", name=f"conv{i}")
        kbn = L.BatchNormalization(epsilon=bn.eps, name=f"bn{i}")
        x = L.ReLU(name=f"relu{i}")(kbn(kconv(x)))
        if i < last:
            x = L.MaxPooling1D(2, name=f"pool{i}")(x)
        pairs.append((kconv, kbn, conv, bn))
    x = L.GlobalAveragePooling1D(name="gap")(x)
    fc = L.Dense(model.fc.out_features, name="fc")
    km = keras.Model(inp, fc(x), name=NAME)
    for kconv, kbn, conv, bn in pairs:
        copy_conv(kconv, conv)
        copy_batchnorm(kbn, bn)
    copy_dense(fc, model.fc)
    return km


@seeded
def train(seed: int = 0) -> Trained:
    data = make_data(seed)
    model = build_torch(NAME)
    xt, yt = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    fit(model, lambda m, x, y: F.cross_entropy(m(x), y), [xt, yt],
        epochs=20, batch_size=64, lr=3e-3, seed=seed, weight_decay=1e-4)
    nwc = {k + "_nhwc": np.ascontiguousarray(data[k].transpose(0, 2, 1)) for k in ("x_calib", "x_eval")}
    out = {"x_calib": data["x_calib"], "x_eval": data["x_eval"], "y_eval": data["y_eval"], **nwc}
    spec = IOSpec("input", [1, 1, LENGTH], "NCW", keras_shape=[1, LENGTH, 1], keras_layout="NWC",
                  keras_calib_key="x_calib_nhwc", keras_eval_key="x_eval_nhwc")
    return Trained(
        model=model, data=out, inputs=[spec], outputs=["output"],
        task="classification (current waveform: " + ", ".join(CLASSES) + ")",
        metric_name="accuracy",
        metric=lambda predict, keras=False: accuracy(
            predict, out["x_eval_nhwc" if keras else "x_eval"], out["y_eval"]),
        keras_builder=build_keras, extra_meta={"classes": list(CLASSES), "sample_rate_hz": FS})


if __name__ == "__main__":  # quick look: python -m models.ts_cnn
    t = train()
    print(NAME, "accuracy", t.metric(torch_predict(t.model)))
