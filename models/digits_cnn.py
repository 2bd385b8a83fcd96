"""digits_cnn: a small CNN on sklearn's bundled 8x8 digits (no download).

conv3x3(1->8)-relu-conv3x3(8->16)-relu-maxpool2 -> flatten(16*4*4) -> fc32-relu -> fc10 logits.
The Keras twin flattens NHWC, so the first Dense gets its columns reordered
from torch's (C, H, W) order; the twin is exact.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import IOSpec, Trained, fit, seeded, split_indices, torch_predict
from .zoo import build_torch

NAME = "digits_cnn"
N_EVAL = 400
N_CALIB = 256


class DigitsCNN(nn.Module):
    def __init__(self, c1: int = 8, c2: int = 16, hidden: int = 32, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    """Digits scaled to [0, 1], NCHW; a seeded eval split, calibration = first training samples."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    train, ev = split_indices(len(x), N_EVAL, seed)
    return {"x_train": x[train], "y_train": y[train], "x_calib": x[train[:N_CALIB]],
            "x_eval": x[ev], "y_eval": y[ev]}


def accuracy(predict, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict(x), axis=1) == y))


def build_keras(model: DigitsCNN):
    from ._keras import copy_conv, copy_dense, copy_dense_after_flatten, import_tf

    _, keras = import_tf()
    L = keras.layers
    c2 = model.conv2.out_channels
    inp = keras.Input(shape=(8, 8, 1), batch_size=1, name="input")
    conv1 = L.Conv2D(model.conv1.out_channels, 3, padding="same", activation="relu", name="conv1")
    conv2 = L.Conv2D(c2, 3, padding="same", activation="relu", name="conv2")
    fc1 = L.Dense(model.fc1.out_features, activation="relu", name="fc1")
    fc2 = L.Dense(model.fc2.out_features, name="fc2")
    x = conv2(conv1(inp))
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    out = fc2(fc1(x))
    km = keras.Model(inp, out, name=NAME)
    copy_conv(conv1, model.conv1)
    copy_conv(conv2, model.conv2)
    copy_dense_after_flatten(fc1, model.fc1, (c2, 4, 4))
    copy_dense(fc2, model.fc2)
    return km


@seeded
def train(seed: int = 0) -> Trained:
    data = make_data(seed)
    model = build_torch(NAME)
    xt, yt = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    fit(model, lambda m, x, y: F.cross_entropy(m(x), y), [xt, yt],
        epochs=40, batch_size=64, lr=3e-3, seed=seed, weight_decay=1e-4)
    nhwc = {k + "_nhwc": np.ascontiguousarray(data[k].transpose(0, 2, 3, 1)) for k in ("x_calib", "x_eval")}
    out = {"x_calib": data["x_calib"], "x_eval": data["x_eval"], "y_eval": data["y_eval"], **nhwc}
    spec = IOSpec("input", [1, 1, 8, 8], "NCHW", keras_shape=[1, 8, 8, 1], keras_layout="NHWC",
                  keras_calib_key="x_calib_nhwc", keras_eval_key="x_eval_nhwc")
    return Trained(
        model=model, data=out, inputs=[spec], outputs=["output"], task="classification (10 digits)",
        metric_name="accuracy",
        metric=lambda predict, keras=False: accuracy(
            predict, out["x_eval_nhwc" if keras else "x_eval"], out["y_eval"]),
        keras_builder=build_keras)


if __name__ == "__main__":  # quick look: python -m models.digits_cnn
    t = train()
    print(NAME, "accuracy", t.metric(torch_predict(t.model)))
