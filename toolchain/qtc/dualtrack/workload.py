"""What the dual track quantizes and how it scores it: the float checkpoint(s), the shared
quant dataset, the frozen eval set and the task metric.

* one network (``model: ts_cnn``): the quant dataset is the first N samples of
  ``x_calib`` in its ``data.npz`` (labels: none, QAT distils from the float
  model), the eval set the first N of ``x_eval`` / ``y_eval``; metric: accuracy.
  With ``qat.train_data: training`` the QAT track trains instead on the example
  model's labelled training split (``models.<name>.make_data(seed)``, checked to
  reproduce ``data.npz``'s calibration and eval arrays);
* the Deep Sets pair (``pair: deepsets``): ``peer_encoder`` + ``policy_head``
  are one deployment.  The quant dataset is N seeded scenes drawn like the
  training scenes (seed ``seed + QUANT_SCENE_SEED``; the frozen eval scenes
  come from seed 1000): every valid peer vector for the encoder, the pooled
  float-encoder latent + ego vector for the head, the float outputs of both
  and the expert's action labels.  The eval set is the frozen ``scenes_eval.npz``;
  metrics: success rate (collision-free for 3 s) and action accuracy, from
  :func:`models.deepsets.evaluate_pair` on the pair under test.

Every candidate (float, PTQ, QAT, Keras QAT) is scored by the same
:meth:`Workload.metrics` on the same arrays.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import QtcError
from .config import DualTrackConfig, SubModel, import_models

QUANT_SCENE_SEED = 500      # quant scenes: seed + 500 (training scenes: 0, frozen eval scenes: 1000)
DEFAULT_PAIR_SCENES = 512
COMPARE_SAMPLES = 512       # per-sub-model output-error diagnostics (eval_<variant>.json) use at most this many
SHORT = {"peer_encoder": "peer", "policy_head": "policy"}   # the users' plan's artifact names


def graph_fn(g, quantized: bool, numerics: str = "tflite") -> Callable[[np.ndarray], np.ndarray]:
    """A batch callable (samples on axis 0) running ``g`` one sample at a time in qtc's interpreter:
    float32 semantics for a float graph, exact integer arithmetic for a quantized one."""
    from ..interp.runner import run, run_quantized

    x_name, y_name = g.inputs[0], g.outputs[0]

    def fn(x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(len(x)):
            feed = {x_name: np.ascontiguousarray(x[i:i + 1], dtype=np.float32)}
            res = run_quantized(g, feed, numerics=numerics) if quantized else run(g, feed)
            outs.append(np.asarray(res[y_name], dtype=np.float32).reshape(1, -1))
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)

    return fn


@dataclass
class Net:
    """One sub-model: float checkpoint + float IR + its slice of the quant and eval data."""
    spec: SubModel
    module: object                  # torch nn.Module, eval mode
    graph: object                   # float IR: canonical, channels-last, torch I/O layout
    calib: np.ndarray               # quant dataset (torch layout)
    calib_keras: np.ndarray | None  # the same samples in the Keras twin's layout
    teacher: np.ndarray             # the float model's outputs on ``calib`` (distillation targets)
    calib_labels: np.ndarray | None
    compare_x: np.ndarray           # inputs for the per-sub-model output-error diagnostics
    compare_x_keras: np.ndarray | None
    train_x: np.ndarray | None = None      # qat.train_data: training -> the labelled training split
    train_y: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def short(self) -> str:
        return SHORT.get(self.spec.name, self.spec.name)


def _load_module(sm: SubModel, models_dir: Path):
    import torch

    if not sm.checkpoint.is_file():
        raise QtcError("float checkpoint not found", where=str(sm.checkpoint),
                       hint="run `make models` (it writes build/models/<name>/<name>.pt) or set the checkpoint path")
    if sm.class_path is None:
        zoo = import_models()
        module = zoo.build_torch(sm.name)
    else:
        from ..frontends import parse_model_class

        module = parse_model_class(sm.class_path)()
    try:
        state = torch.load(sm.checkpoint, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise QtcError(f"cannot load the state dict ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})",
                       where=str(sm.checkpoint), hint="give the state dict the model class was trained with") from None
    return module.eval()


def _float_graph(module, example: np.ndarray, name: str):
    import torch

    from ..frontends.torch import from_torch
    from ..passes import canonicalize

    g = from_torch(module, (torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32)),), name=name)
    return canonicalize(g, channels_last=True)


def _predict(module, x: np.ndarray) -> np.ndarray:
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            outs.append(module(torch.from_numpy(np.ascontiguousarray(x[i:i + 256], dtype=np.float32))).numpy())
    return np.concatenate(outs).astype(np.float32)


def _data(sm: SubModel) -> tuple[dict, dict]:
    if not sm.data.is_file():
        raise QtcError("model data not found", where=str(sm.data), hint="run `make models` (it writes data.npz)")
    with np.load(sm.data, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta_path = sm.data.parent / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return arrays, meta


def _keys(meta: dict, arrays: dict) -> dict:
    io = (meta.get("inputs") or [{}])[0]
    kio = ((meta.get("keras") or {}).get("inputs") or [{}])[0]
    keys = {"calib": io.get("calib_key", "x_calib"), "eval": io.get("eval_key", "x_eval"),
            "calib_keras": kio.get("calib_key"), "eval_keras": kio.get("eval_key")}
    for k in ("calib", "eval"):
        if keys[k] not in arrays:
            raise QtcError(f"data.npz has no array {keys[k]!r}", hint=f"its arrays: {sorted(arrays)}")
    return keys


class Workload:
    """The float model(s), the shared quant dataset and the frozen eval set of one config."""

    def __init__(self, cfg: DualTrackConfig):
        self.cfg = cfg
        self.pair = cfg.pair
        self.modules = [_load_module(sm, sm.checkpoint.parent) for sm in cfg.sub_models]
        if self.pair:
            self._init_pair()
        else:
            self._init_single()

    # ------------------------------------------------------------ one network
    def _init_single(self) -> None:
        sm, module = self.cfg.sub_models[0], self.modules[0]
        arrays, meta = _data(sm)
        keys = _keys(meta, arrays)
        n = self.cfg.calibration_samples
        calib = arrays[keys["calib"]][:n].astype(np.float32)
        calib_k = arrays[keys["calib_keras"]][:n].astype(np.float32) if keys["calib_keras"] in arrays else calib
        m = self.cfg.eval_samples
        self.eval_x = arrays[keys["eval"]][:m].astype(np.float32)
        self.eval_x_keras = (arrays[keys["eval_keras"]][:m].astype(np.float32) if keys["eval_keras"] in arrays
                             else self.eval_x)
        if "y_eval" not in arrays or not np.issubdtype(arrays["y_eval"].dtype, np.integer):
            raise QtcError("the dual track scores classifiers: data.npz needs integer labels y_eval",
                           where=str(sm.data), hint="use a classification model (digits_cnn, ts_cnn) or the "
                                                    "Deep Sets pair")
        self.labels = arrays["y_eval"][:m]
        self.scenes = None
        graph = _float_graph(module, calib, sm.name)
        self.nets = [Net(sm, module, graph, calib, calib_k, _predict(module, calib), None,
                         self.eval_x[:COMPARE_SAMPLES], self.eval_x_keras[:COMPARE_SAMPLES])]
        self.train_info = None
        if self.cfg.qat.train_data == "training" and "qat" in self.cfg.tracks:
            self._training_split(arrays, keys, meta)

    def _training_split(self, arrays: dict, keys: dict, meta: dict) -> None:
        """``qat.train_data: training``: regenerate the example model's labelled training split with
        ``models.<name>.make_data(seed)`` (the seed its meta.json records) and check that it is the split
        the checkpoint was trained on: the same generator call must reproduce data.npz's calibration and
        eval arrays, so the eval set stays disjoint from what QAT trains on."""
        sm, net = self.cfg.sub_models[0], self.nets[0]
        mod = import_models(f"models.{sm.name}")
        seed = int(meta.get("seed", 0))
        data = mod.make_data(seed)
        hint = "use qat.train_data: calibration, or rebuild the model data with `make models`"
        for k, mine in (("x_calib", keys["calib"]), ("x_eval", keys["eval"])):
            if k not in data or not np.array_equal(np.asarray(data[k], np.float32),
                                                   arrays[mine].astype(np.float32)):
                raise QtcError(f"qat.train_data: training: models.{sm.name}.make_data({seed}) does not reproduce "
                               f"data.npz's {mine}", where=str(sm.data), hint=hint)
        x, y = data.get("x_train"), data.get("y_train")
        if x is None or y is None or not np.issubdtype(np.asarray(y).dtype, np.integer):
            raise QtcError(f"qat.train_data: training: models.{sm.name}.make_data has no labelled x_train/y_train",
                           where=str(sm.data), hint=hint)
        net.train_x = np.ascontiguousarray(x, dtype=np.float32)
        net.train_y = np.asarray(y, dtype=np.int64)
        from ..passes.quantize.dataset import array_sha256

        self.train_info = {"kind": "labelled training split", "generator": f"models.{sm.name}.make_data",
                           "seed": seed, "samples": int(len(net.train_x)), "sha256": array_sha256(net.train_x)}

    # ------------------------------------------------------------ Deep Sets pair
    def _init_pair(self) -> None:
        ds = import_models("models.deepsets")
        enc, head = self.modules
        n = self.cfg.calibration_samples or DEFAULT_PAIR_SCENES
        qs = ds.make_scenes(n, self.cfg.seed + QUANT_SCENE_SEED)
        self.quant_scenes = qs
        if not self.cfg.scenes.is_file():
            raise QtcError("eval scenes not found", where=str(self.cfg.scenes),
                           hint="run `make models` (it writes build/models/peer_encoder/scenes_eval.npz)")
        with np.load(self.cfg.scenes, allow_pickle=False) as z:
            scenes = {k: z[k] for k in z.files}
        m = self.cfg.eval_samples
        self.scenes = {k: v[:m] for k, v in scenes.items()}
        self.labels = self.scenes["labels"]
        peers = np.ascontiguousarray(qs["peers"][qs["mask"].astype(bool)], dtype=np.float32)
        enc_fn = lambda x: _predict(enc, x)  # noqa: E731
        head_x = ds.head_inputs(enc_fn, qs)
        eval_peers = np.ascontiguousarray(self.scenes["peers"][self.scenes["mask"].astype(bool)], dtype=np.float32)
        eval_head = ds.head_inputs(enc_fn, self.scenes)
        self.nets = []
        for sm, module, calib, labels, cmp in ((self.cfg.sub_models[0], enc, peers, None, eval_peers),
                                               (self.cfg.sub_models[1], head, head_x, qs["labels"], eval_head)):
            graph = _float_graph(module, calib, sm.name)
            self.nets.append(Net(sm, module, graph, calib, calib, _predict(module, calib), labels,
                                 cmp[:COMPARE_SAMPLES], cmp[:COMPARE_SAMPLES]))

    # ------------------------------------------------------------ scoring
    @property
    def n_eval(self) -> int:
        return int(len(self.labels))

    def metrics(self, fns: list[Callable], keras_layout: bool = False) -> dict:
        """Task metrics of the deployment whose sub-models are the batch callables ``fns``."""
        if self.pair:
            ds = import_models("models.deepsets")
            res = ds.evaluate_pair(fns[0], fns[1], self.scenes)
            return {"accuracy": res["accuracy"], "success_rate": res["success_rate"],
                    "expert_success_rate": res["expert_success_rate"], "n_eval": res["n_scenes"],
                    "confusion": res["confusion"]}
        x = self.eval_x_keras if keras_layout else self.eval_x
        out = fns[0](x)
        pred = np.argmax(out.reshape(len(x), -1), axis=1)
        return {"accuracy": float(np.mean(pred == self.labels)), "n_eval": self.n_eval}

    def eval_info(self) -> dict:
        """What the frozen eval set is (for every eval_<variant>.json)."""
        from ..passes.quantize.dataset import array_sha256

        if self.pair:
            return {"kind": "deepsets scenes", "file": self.cfg.scenes.name, "scenes": self.n_eval,
                    "sha256": array_sha256(self.scenes["peers"]), "metric": "models.deepsets.evaluate_pair"}
        return {"kind": "labelled samples", "file": self.cfg.sub_models[0].data.name, "samples": self.n_eval,
                "sha256": array_sha256(self.eval_x), "metric": "accuracy (argmax vs y_eval)"}

    def write_quant_dataset(self, out_dir: Path) -> dict:
        """The shared quant dataset + frozen-eval description, as the users' plan names them."""
        from ..atomic import save_json, save_npy
        from ..passes.quantize.dataset import array_sha256

        out_dir = Path(out_dir)
        files = {}
        for net in self.nets:
            for kind, arr in (("inputs", net.calib), ("outputs", net.teacher)):
                p = save_npy(out_dir / f"quant_dataset_{net.short}_{kind}.npy", arr)
                files[p.name] = array_sha256(arr)
            if net.calib_labels is not None:
                p = save_npy(out_dir / f"quant_dataset_{net.short}_labels.npy", net.calib_labels)
                files[p.name] = array_sha256(net.calib_labels)
        doc = {"schema": "qtc.dualtrack.quant_dataset/1", "seed": self.cfg.seed, "files": files,
               "calibration": {net.name: int(len(net.calib)) for net in self.nets}, "eval": self.eval_info()}
        if self.pair:
            doc["quant_scenes"] = {"generator": "models.deepsets.make_scenes",
                                   "count": int(len(self.quant_scenes["labels"])),
                                   "seed": self.cfg.seed + QUANT_SCENE_SEED}
            doc["eval"]["first_scene_labels"] = [int(v) for v in self.labels[:16]]
        if getattr(self, "train_info", None):
            doc["qat_train"] = self.train_info
        save_json(out_dir / "quant_eval_scenarios.json", doc)
        return doc
