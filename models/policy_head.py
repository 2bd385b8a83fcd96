"""policy_head: the Deep Sets head, MLP [pooled 32 || ego 4] -> 64 (ReLU) -> 5 action logits.

Trained jointly with ``peer_encoder`` (see :mod:`models.deepsets`). Its data.npz
holds head inputs [N, 36] built with the float torch encoder: ``x_calib`` from
training scenes, ``x_eval`` from every eval scene, ``y_eval`` the expert actions.
:func:`make_data` regenerates them together with the labelled training split
(every training scene's head input and expert action) for QAT.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import deepsets
from ._common import IOSpec, Trained, seeded, torch_predict

NAME = "policy_head"
N_CALIB = 512


class PolicyHead(nn.Module):
    def __init__(self, pooled_dim: int = 32, ego_dim: int = 4, hidden: int = 64, num_actions: int = 5):
        super().__init__()
        self.fc1 = nn.Linear(pooled_dim + ego_dim, hidden)
        self.fc2 = nn.Linear(hidden, num_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def build_keras(model: PolicyHead):
    from ._keras import copy_dense, import_tf

    _, keras = import_tf()
    inp = keras.Input(shape=(model.fc1.in_features,), batch_size=1, name="input")
    fc1 = keras.layers.Dense(model.fc1.out_features, activation="relu", name="fc1")
    fc2 = keras.layers.Dense(model.fc2.out_features, name="fc2")
    km = keras.Model(inp, fc2(fc1(inp)), name=NAME)
    copy_dense(fc1, model.fc1)
    copy_dense(fc2, model.fc2)
    return km


def _head_data(encoder: nn.Module, train_sc: dict, eval_sc: dict, training: bool) -> dict:
    """Head inputs [N, 36] built with the float ``encoder``: ``x_calib`` from the first N_CALIB training
    scenes, ``x_eval`` / ``y_eval`` from every eval scene; with ``training`` also ``x_train`` / ``y_train``,
    every training scene and its expert action."""
    enc = torch_predict(encoder)
    calib_sc = {k: v[:N_CALIB] for k, v in train_sc.items()}
    data = {"x_calib": deepsets.head_inputs(enc, calib_sc), "x_eval": deepsets.head_inputs(enc, eval_sc),
            "y_eval": eval_sc["labels"]}
    if training:
        data["x_train"] = deepsets.head_inputs(enc, train_sc)
        data["y_train"] = train_sc["labels"]
    return data


@seeded
def make_data(seed: int = 0) -> dict:
    """The head's data as :func:`train` writes it (``x_calib``, ``x_eval``, ``y_eval``) plus its labelled
    training split ``x_train`` / ``y_train``: the jointly trained float encoder
    (:func:`models.deepsets.train_pair`, the same seeded run as the checkpoint's) on the training scenes,
    labelled with the expert actions. ``x_calib`` is ``x_train``'s first N_CALIB rows."""
    encoder, _, train_sc, eval_sc = deepsets.train_pair(seed)
    return _head_data(encoder, train_sc, eval_sc, training=True)


@seeded
def train(seed: int = 0) -> Trained:
    import numpy as np

    from .peer_encoder import scenes_bytes

    encoder, head, train_sc, eval_sc = deepsets.train_pair(seed)
    data = _head_data(encoder, train_sc, eval_sc, training=False)

    def metric(predict, keras=False):
        return float(np.mean(np.argmax(predict(data["x_eval"]), axis=1) == data["y_eval"]))

    pair = deepsets.evaluate_pair(torch_predict(encoder), torch_predict(head), eval_sc)
    return Trained(
        model=head, data=data, inputs=[IOSpec("input", [1, head.fc1.in_features], "NC")],
        outputs=["output"], task="Deep Sets policy head (multi-agent collision avoidance)",
        metric_name="action_accuracy", metric=metric, keras_builder=build_keras,
        extra_files={"scenes_eval.npz": scenes_bytes(eval_sc)},
        extra_meta={"pair": pair, "actions": list(deepsets.ACTIONS),
                    "input_layout": "[mean-pooled encoder output (32) || ego (4)]"})
