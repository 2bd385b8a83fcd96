"""The model zoo's registry and loaders.

``MODELS`` maps a name to its :class:`ModelSpec` (the torch class and its
constructor kwargs, the task, the metric, whether a tf_keras twin exists).
``build_torch(name)`` builds the (untrained) torch module; ``load_torch(name, dir)``
loads the trained weights that ``python -m models.train_all --out DIR`` wrote;
``load_data(name, dir)`` / ``load_meta(name, dir)`` read its ``data.npz`` / ``meta.json``.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qtc.errors import QtcError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    module: str                 # the module that defines, trains and twins the model
    class_name: str
    task: str
    metric: str
    keras_twin: bool
    kwargs: dict = field(default_factory=dict)

    @property
    def class_path(self) -> str:
        return f"{self.module}:{self.class_name}"

    def load_module(self):
        return importlib.import_module(self.module)


MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("peer_encoder", "models.peer_encoder", "PeerEncoder",
              "Deep Sets per-peer encoder (collision avoidance)", "pair_action_accuracy", True,
              {"in_dim": 6, "hidden": 64, "out_dim": 32}),
    ModelSpec("policy_head", "models.policy_head", "PolicyHead",
              "Deep Sets policy head (collision avoidance)", "action_accuracy", True,
              {"pooled_dim": 32, "ego_dim": 4, "hidden": 64, "num_actions": 5}),
    ModelSpec("digits_cnn", "models.digits_cnn", "DigitsCNN",
              "8x8 digit classification", "accuracy", True,
              {"c1": 8, "c2": 16, "hidden": 32, "num_classes": 10}),
    ModelSpec("ts_cnn", "models.ts_cnn", "TsCNN",
              "arc-fault current waveform classification", "accuracy", True,
              {"channels": [8, 16, 32, 32], "num_classes": 3}),
    ModelSpec("act_tiny", "models.act_tiny", "ActTiny",
              "ACT-like action-chunk policy (image + state)", "mse", False,
              {"state_dim": 8, "chunk": 8, "action_dim": 4, "d_model": 64, "n_heads": 4,
               "n_layers": 2, "ff_dim": 128}),
]}


def spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise QtcError(f"unknown model {name!r}", where="models.zoo",
                       hint=f"pick one of {', '.join(MODELS)}") from None


def build_torch(name: str, **overrides):
    """The untrained torch module for ``name``, built with its registered kwargs."""
    s = spec(name)
    cls = getattr(s.load_module(), s.class_name)
    return cls(**{**s.kwargs, **overrides})


def model_dir(name: str, dir) -> Path:
    """``dir`` may be the train_all output root or the model's own folder."""
    dir = Path(dir)
    for cand in (dir / name, dir):
        if (cand / "meta.json").is_file() or (cand / "data.npz").is_file():
            return cand
    raise QtcError(f"no trained {name} under {dir}", where="models.zoo",
                   hint=f"run: python -m models.train_all --out {dir} --only {name}")


def load_data(name: str, dir) -> dict[str, np.ndarray]:
    """The frozen data splits of ``name`` (``x_calib``, ``x_eval``, ``y_eval``, ...)."""
    with np.load(model_dir(name, dir) / "data.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_meta(name: str, dir) -> dict:
    return json.loads((model_dir(name, dir) / "meta.json").read_text())


def load_torch(name: str, dir):
    """The trained torch module (eval mode) from ``NAME.pt``."""
    import torch

    model = build_torch(name)
    state = torch.load(model_dir(name, dir) / f"{name}.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
