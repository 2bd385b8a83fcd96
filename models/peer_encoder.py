"""peer_encoder: the Deep Sets per-peer MLP 6 -> 64 -> 32 (ReLU on both layers).

Trained jointly with ``policy_head`` (see :mod:`models.deepsets`). Its data.npz
holds single peer vectors [N, 6]: ``x_calib`` from training scenes, ``x_eval``
from the eval scenes, ``y_eval`` = the float encoder's embeddings of ``x_eval``.
Its metric is the pair's action accuracy on ``scenes_eval.npz`` with the float
head of the same framework (torch head for torch, Keras head for Keras/TFLite).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import deepsets
from ._common import IOSpec, Trained, seeded, torch_predict

NAME = "peer_encoder"
N_PEERS_CALIB = 1024
N_PEERS_EVAL = 1024


class PeerEncoder(nn.Module):
    def __init__(self, in_dim: int = 6, hidden: int = 64, out_dim: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc2(F.relu(self.fc1(x))))


def build_keras(model: PeerEncoder):
    from ._keras import copy_dense, import_tf

    _, keras = import_tf()
    inp = keras.Input(shape=(model.fc1.in_features,), batch_size=1, name="input")
    fc1 = keras.layers.Dense(model.fc1.out_features, activation="relu", name="fc1")
    fc2 = keras.layers.Dense(model.fc2.out_features, activation="relu", name="fc2")
    km = keras.Model(inp, fc2(fc1(inp)), name=NAME)
    copy_dense(fc1, model.fc1)
    copy_dense(fc2, model.fc2)
    return km


def scenes_bytes(scenes: dict) -> bytes:
    """scenes_eval.npz contents (deterministic zip, like data.npz)."""
    import tempfile
    from pathlib import Path

    from qtc.atomic import save_npz

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenes_eval.npz"
        save_npz(path, scenes)
        return path.read_bytes()


def peer_rows(scenes: dict, n: int) -> np.ndarray:
    """The first ``n`` valid peer vectors of ``scenes``, [n, 6] float32."""
    return np.ascontiguousarray(scenes["peers"][scenes["mask"].astype(bool)][:n], dtype=np.float32)


@seeded
def train(seed: int = 0) -> Trained:
    from . import policy_head

    encoder, head, train_sc, eval_sc = deepsets.train_pair(seed)
    x_calib = peer_rows(train_sc, N_PEERS_CALIB)
    x_eval = peer_rows(eval_sc, N_PEERS_EVAL)
    data = {"x_calib": x_calib, "x_eval": x_eval, "y_eval": torch_predict(encoder)(x_eval)}
    torch_head = torch_predict(head)

    def metric(predict, keras=False):
        head_fn = torch_head
        if keras:
            from ._keras import keras_predict
            head_fn = keras_predict(policy_head.build_keras(head))
        return deepsets.evaluate_pair(predict, head_fn, eval_sc)["accuracy"]

    pair = deepsets.evaluate_pair(torch_predict(encoder), torch_head, eval_sc)
    return Trained(
        model=encoder, data=data, inputs=[IOSpec("input", [1, deepsets.PEER_DIM], "NC")],
        outputs=["output"], task="Deep Sets peer encoder (multi-agent collision avoidance)",
        metric_name="pair_action_accuracy", metric=metric, keras_builder=build_keras,
        extra_files={"scenes_eval.npz": scenes_bytes(eval_sc)},
        extra_meta={"pair": pair, "actions": list(deepsets.ACTIONS), "y_eval": "float torch embeddings",
                    "peer_features": ["p_x", "p_y", "w_x", "w_y", "radius", "gap"]})
