"""The dual-track config: qtc's own YAML keys plus TI Tiny ML Tensorlab's training keys.

A config names the model(s), the target, the tracks to run and the decision
budgets.  :func:`load_config` reads it into a :class:`DualTrackConfig` (every
default filled in, every path resolved against the working directory);
:func:`parse_config` does the same for a dict.  Anything unknown or
contradictory raises a one-line :class:`~qtc.errors.QtcError` naming the key.

qtc keys (all optional except the model)::

  name: deepsets_esp32
  model: ts_cnn                     # a models/zoo.py name, or {name, checkpoint, keras, data, class}
  models: [peer_encoder, policy_head]   # several sub-models deployed together
  pair: deepsets                    # the two models are one Deep Sets policy (see models/deepsets.py)
  models_dir: build/models          # where `make models` wrote the checkpoints
  scenes: build/models/peer_encoder/scenes_eval.npz   # the frozen eval scenes (pair only)
  target: esp32                     # targets/*.yaml
  tracks: [ptq, qat, qat_keras]     # default: ptq + qat
  weight_bits: 8                    # 8 | 4 | 2
  activation_bits: 8                # 8 | 4
  calibration: {samples: 512}       # the shared quant dataset
  eval: {samples: 2000, metric: success_rate}   # the frozen eval set, the decision metric
  ptq: {methods: [minmax, percentile, entropy, mse], weight_methods: [minmax, mse], adaround: true,
        adaround_iters: 1000}
  qat: {epochs: 3, lr: 0.001, quant_lr: 0.01, distill_alpha: 0.5, resume: false,
        train_data: calibration}    # calibration: the quant dataset (no labels: distillation);
                                    # training: an example model's labelled training split
                                    # (models.<name>.make_data(seed of its meta.json))
  keras_qat: {epochs: 2, lr: 0.0005}
  budgets: {model_bytes: 102400, latency_ms: 50, accuracy_drop: 0.10}   # override the target's
  size_basis: tflite                # tflite | c_weights (what model_bytes measures)
  bench: {enabled: auto, runs: 20, port: null}
  seed: 0
  output: build/dualtrack/deepsets_esp32

Tensorlab keys (``training:`` section, plus ``common.target_device``)::

  quantization: 0 | 1 | 2           # float only | generic int8 (target host) | TI NPU (target ti-npu)
  quantization_method: PTQ | QAT    # the one track to run (qtc's default runs both)
  quantization_weight_bitwidth: 8 | 4 | 2
  quantization_activation_bitwidth: 8 | 4
  model_name, training_epochs, learning_rate, batch_size
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import QtcError

TRACKS = ("ptq", "qat", "qat_keras")
PTQ_METHODS = ("minmax", "percentile", "entropy", "mse")
ALL_PTQ_METHODS = ("minmax", "ema", "percentile", "entropy", "mse")
WEIGHT_METHODS = ("minmax", "mse")
WBITS = (8, 4, 2)
ABITS = (8, 4)
PAIRS = ("deepsets",)
PAIR_MODELS = {"deepsets": ("peer_encoder", "policy_head")}
BUDGET_KEYS = ("model_bytes", "latency_ms", "accuracy_drop", "flash_bytes", "ram_bytes")
SIZE_BASES = ("tflite", "c_weights")
METRICS = ("success_rate", "accuracy")
# Tensorlab's `quantization` modes: 1 = generic PyTorch int8 (CPU), 2 = TI NPU ("TINPU").
QUANT_MODE_TARGET = {1: "host", 2: "ti-npu"}
# Tensorlab `common.target_device` names qtc knows (the F28P55x has the hardware NPU).
TL_DEVICES = {"F28P55": "ti-npu", "F28P55X": "ti-npu"}

TOP_KEYS = ("name", "model", "models", "pair", "models_dir", "scenes", "target", "tracks", "weight_bits",
            "activation_bits", "calibration", "eval", "ptq", "qat", "keras_qat", "budgets", "size_basis", "bench",
            "seed", "output", "training", "common", "dataset", "testing", "compilation",
            "data_processing_feature_extraction")
TL_TRAINING_KEYS = ("model_name", "training_epochs", "learning_rate", "batch_size", "quantization",
                    "quantization_method", "quantization_weight_bitwidth", "quantization_activation_bitwidth")
# Tensorlab keys qtc reads but does not act on: recorded as ignored, never an error.
TL_IGNORED = {"common": ("task_type",), "dataset": ("dataset_name",), "testing": ("enable",),
              "compilation": ("enable", "preset_name"),
              "data_processing_feature_extraction": ("feature_extraction_name", "variables")}
SECTION_KEYS = {
    "calibration": ("samples",),
    "eval": ("samples", "metric"),
    "ptq": ("methods", "weight_methods", "adaround", "adaround_iters"),
    "qat": ("epochs", "lr", "quant_lr", "distill_alpha", "batch_size", "resume", "train_data", "per_feature_input"),
    "keras_qat": ("epochs", "lr", "batch_size"),
    "bench": ("enabled", "runs", "port"),
    "budgets": BUDGET_KEYS,
}
MODEL_KEYS = ("name", "checkpoint", "keras", "data", "class")
# what the torch QAT track trains on: the shared quant dataset (unlabelled: distillation), or an example
# model's labelled training split, regenerated by models.<name>.make_data(seed from meta.json)
QAT_TRAIN_DATA = ("calibration", "training")


@dataclass
class SubModel:
    """One deployable network: its torch checkpoint, the tf_keras twin, the frozen data."""
    name: str
    checkpoint: Path
    keras: Path | None
    data: Path
    class_path: str | None = None       # "pkg.module:Class"; None = the zoo's registered class


@dataclass
class QatSettings:
    epochs: int = 3
    lr: float = 1e-3
    distill_alpha: float = 0.5
    batch_size: int = 64
    resume: bool = False
    quant_lr: float = 1e-2          # the LSQ step sizes' learning rate
    train_data: str = "calibration"  # calibration | training (see QAT_TRAIN_DATA)
    per_feature_input: bool | str = "auto"  # learned per-feature input params where an input feeds only FC layers


@dataclass
class KerasQatSettings:
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 32


@dataclass
class BenchSettings:
    enabled: str = "auto"     # auto = only when a latency budget exists
    runs: int = 20
    port: str | None = None   # None / "qemu" = the emulated board


@dataclass
class DualTrackConfig:
    name: str
    sub_models: list[SubModel]
    pair: str | None
    scenes: Path | None
    target: str
    quantization: int                    # Tensorlab mode: 0 float, 1 generic, 2 TI NPU
    tracks: list[str]
    wbits: int
    abits: int
    calibration_samples: int | None
    eval_samples: int | None
    metric: str
    ptq_methods: list[str]
    weight_methods: list[str]
    adaround: bool
    adaround_iters: int
    qat: QatSettings
    keras_qat: KerasQatSettings
    budgets: dict[str, float]
    budget_sources: dict[str, str]       # budget -> "target <name>" | "config"
    size_basis: str
    bench: BenchSettings
    seed: int
    output: Path
    source: str | None = None            # the config file
    tensorlab: dict[str, Any] = field(default_factory=dict)   # the Tensorlab keys read, as given
    ignored: list[str] = field(default_factory=list)          # Tensorlab keys recorded, not acted on

    def to_json(self) -> dict:
        doc = asdict(self)
        for sm in doc["sub_models"]:
            for k in ("checkpoint", "keras", "data"):
                sm[k] = None if sm[k] is None else Path(sm[k]).as_posix()
        for k in ("scenes", "output"):
            doc[k] = None if doc[k] is None else Path(doc[k]).as_posix()
        return doc


# ------------------------------------------------------------------ helpers
def import_models(name: str = "models.zoo"):
    """Import the example-model package (``models/`` at the repository root)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("models", name):
            raise
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # like `python -m`: the repository root's packages
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            raise QtcError(f"cannot import {name} (the example models)", where=os.getcwd(),
                           hint="run qtc dualtrack from the repository root, or set PYTHONPATH to it") from None


def _err(key: str, what: str, hint: str, where: str | None) -> QtcError:
    return QtcError(f"config key {key!r}: {what}", where=where, hint=hint)


def _check_keys(section: dict, allowed, prefix: str, where: str | None) -> None:
    if not isinstance(section, dict):
        raise _err(prefix, f"must be a mapping, got {type(section).__name__}", f"write {prefix}: {{...}}", where)
    for k in section:
        if k not in allowed:
            raise _err(f"{prefix}.{k}" if prefix else str(k), "unknown key",
                       f"allowed{' under ' + prefix if prefix else ''}: {', '.join(allowed)}", where)


def _int(v, key: str, where, choices=None, minimum=None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(key, f"must be an integer, got {v!r}", f"e.g. {key.split('.')[-1]}: "
                   f"{choices[0] if choices else 1}", where)
    if choices is not None and v not in choices:
        raise _err(key, f"{v} is not one of {list(choices)}", f"use one of {list(choices)}", where)
    if minimum is not None and v < minimum:
        raise _err(key, f"{v} is below {minimum}", f"use a value >= {minimum}", where)
    return v


def _num(v, key: str, where, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(key, f"must be a number, got {v!r}", "e.g. 0.001", where)
    if positive and v <= 0:
        raise _err(key, f"must be positive, got {v}", "use a value > 0", where)
    return float(v)


def _path(v, key: str, where) -> Path:
    if not isinstance(v, str) or not v:
        raise _err(key, f"must be a path string, got {v!r}", "e.g. build/models", where)
    return Path(v)


def _sub_model(entry, models_dir: Path, where, key: str) -> SubModel:
    if isinstance(entry, str):
        entry = {"name": entry}
    _check_keys(entry, MODEL_KEYS, key, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _err(f"{key}.name", "every model needs a name", "e.g. model: ts_cnn", where)
    folder = models_dir / name
    cls = entry.get("class")
    if cls is None:
        MODELS = import_models().MODELS
        if name not in MODELS:
            raise _err(f"{key}.name", f"{name!r} is not a models/zoo.py model and no 'class' is given",
                       f"use one of {', '.join(MODELS)}, or give class: pkg.module:Class", where)
    elif not isinstance(cls, str) or ":" not in cls:
        raise _err(f"{key}.class", f"must be 'pkg.module:Class', got {cls!r}", "e.g. models.ts_cnn:TsCNN", where)
    ckpt = _path(entry["checkpoint"], f"{key}.checkpoint", where) if "checkpoint" in entry else folder / f"{name}.pt"
    keras = _path(entry["keras"], f"{key}.keras", where) if "keras" in entry else folder / f"{name}.keras"
    data = _path(entry["data"], f"{key}.data", where) if "data" in entry else folder / "data.npz"
    return SubModel(name=name, checkpoint=ckpt, keras=keras, data=data, class_path=cls)


# ------------------------------------------------------------------ Tensorlab mapping
def _tensorlab(doc: dict, where) -> tuple[dict, list[str]]:
    """The Tensorlab keys read (flat, as given) and the ignored ones."""
    tl: dict[str, Any] = {}
    ignored: list[str] = []
    training = doc.get("training")
    if training is not None:
        _check_keys(training, TL_TRAINING_KEYS, "training", where)
        tl.update(training)
    common = doc.get("common")
    if common is not None:
        _check_keys(common, ("target_device",) + TL_IGNORED["common"], "common", where)
        if "target_device" in common:
            tl["target_device"] = common["target_device"]
        ignored += [f"common.{k}" for k in common if k != "target_device"]
    for section, keys in TL_IGNORED.items():
        if section == "common" or section not in doc:
            continue
        _check_keys(doc[section], keys, section, where)
        ignored += [f"{section}.{k}" for k in doc[section]]
    return tl, ignored


def _quant_mode(tl: dict, where) -> int | None:
    if "quantization" not in tl:
        for k in ("quantization_method", "quantization_weight_bitwidth", "quantization_activation_bitwidth"):
            if k in tl:
                raise _err(f"training.{k}", "given without training.quantization",
                           "add quantization: 1 (generic int8) or 2 (TI NPU)", where)
        return None
    mode = _int(tl["quantization"], "training.quantization", where, choices=(0, 1, 2))
    if mode == 0:
        for k in ("quantization_method", "quantization_weight_bitwidth", "quantization_activation_bitwidth"):
            if k in tl:
                raise _err(f"training.{k}", "contradicts quantization: 0 (floating point, no quantization)",
                           "drop the key, or set quantization: 1 or 2", where)
    return mode


# ------------------------------------------------------------------ public
def parse_config(doc: dict, *, source: str | None = None, overrides: dict | None = None) -> DualTrackConfig:
    """A :class:`DualTrackConfig` from a config dict (see the module docstring).

    ``overrides`` (from the CLI) may set ``model``, ``output``, ``models_dir``,
    ``target``: they replace the config's values before validation.
    """
    where = source
    if doc is None:
        doc = {}
    _check_keys(doc, TOP_KEYS, "", where)
    doc = dict(doc)
    for k, v in (overrides or {}).items():
        if v is not None:
            doc[k] = v
            if k == "model":  # the command line's model wins over the config's (and Tensorlab's model_name)
                doc.pop("models", None)
                doc.pop("pair", None)
                doc.pop("scenes", None)
                if isinstance(doc.get("training"), dict):
                    doc["training"] = {tk: tv for tk, tv in doc["training"].items() if tk != "model_name"}
    tl, ignored = _tensorlab(doc, where)
    mode = _quant_mode(tl, where)

    # -- target: qtc's key, Tensorlab's device, Tensorlab's quantization mode must agree
    from ..target import load_target

    target = doc.get("target")
    if "target_device" in tl:
        dev = str(tl["target_device"]).upper()
        if dev not in TL_DEVICES:
            raise _err("common.target_device", f"device {tl['target_device']!r} has no qtc target",
                       f"use one of {', '.join(TL_DEVICES)}, or qtc's target: key", where)
        if target is not None and target != TL_DEVICES[dev]:
            raise _err("common.target_device", f"{tl['target_device']} means target {TL_DEVICES[dev]}, "
                       f"the config also says target: {target}", "keep one of the two", where)
        target = TL_DEVICES[dev]
    if target is None:
        target = QUANT_MODE_TARGET.get(mode, "esp32") if mode else "esp32"
    if not isinstance(target, str):
        raise _err("target", f"must be a target name, got {target!r}", "e.g. target: esp32", where)
    try:
        tgt = load_target(target)
    except QtcError as exc:
        raise _err("target", exc.what, exc.hint or "see targets/", where) from None
    if mode == 2 and not tgt.power_of_two:
        raise _err("training.quantization", f"2 (TI NPU style: power-of-two scales) contradicts target "
                   f"{tgt.name}, whose scales are not power-of-two", "use quantization: 1, or target: ti-npu", where)
    if mode == 1 and tgt.power_of_two:
        raise _err("training.quantization", f"1 (generic int8) contradicts target {tgt.name}, which needs "
                   "TI-style power-of-two quantization", "use quantization: 2 for this target", where)
    if mode is None:
        mode = 2 if tgt.power_of_two else 1

    # -- bits
    def bits(qkey, tkey, choices, default):
        v = doc.get(qkey)
        t = tl.get(tkey)
        if v is not None:
            v = _int(v, qkey, where, choices=choices)
        if t is not None:
            t = _int(t, f"training.{tkey}", where, choices=choices if tkey.endswith("weight_bitwidth") else WBITS)
        if v is not None and t is not None and v != t:
            raise _err(f"training.{tkey}", f"{t} contradicts {qkey}: {v}", "keep one of the two", where)
        return v if v is not None else (t if t is not None else default)

    wbits = bits("weight_bits", "quantization_weight_bitwidth", WBITS, 8)
    abits = bits("activation_bits", "quantization_activation_bitwidth", ABITS, 8)
    if abits not in ABITS:
        raise _err("training.quantization_activation_bitwidth",
                   f"{abits}-bit activations: qtc's integer kernels run 8- or 4-bit activations",
                   "use quantization_activation_bitwidth: 8 (or 4)", where)
    if abits != 8 and tgt.power_of_two:
        key = "training.quantization_activation_bitwidth" if "quantization_activation_bitwidth" in tl \
            else "activation_bits"
        raise _err(key, f"{abits}-bit activations on target {tgt.name}: the TI NPU runs 8-bit activations only "
                   "(NNC UG ch. 4; weights may be 8/4/2-bit)", "use 8-bit activations", where)

    # -- tracks
    tracks = doc.get("tracks")
    if tracks is not None:
        if isinstance(tracks, str):
            tracks = [tracks]
        if not isinstance(tracks, list) or not tracks:
            raise _err("tracks", f"must be a non-empty list, got {tracks!r}", "e.g. tracks: [ptq, qat]", where)
        for t in tracks:
            if t not in TRACKS:
                raise _err("tracks", f"unknown track {t!r}", f"use some of {', '.join(TRACKS)}", where)
        tracks = list(dict.fromkeys(tracks))
    method = tl.get("quantization_method")
    if method is not None:
        if not isinstance(method, str) or method.upper() not in ("PTQ", "QAT"):
            raise _err("training.quantization_method", f"{method!r} is not PTQ or QAT", "use PTQ or QAT", where)
        wanted = method.lower()
        if tracks is not None and not any(t == wanted or t.startswith(wanted + "_") for t in tracks):
            raise _err("training.quantization_method", f"{method} contradicts tracks: {tracks}",
                       f"add {wanted} to tracks, or drop one of the two keys", where)
        if tracks is None:
            tracks = [wanted]
    if mode == 0:
        if tracks is not None and doc.get("tracks") is not None:
            raise _err("tracks", "contradicts training.quantization: 0 (floating point, no quantization)",
                       "drop tracks, or set quantization: 1 or 2", where)
        tracks = []
    elif tracks is None:
        tracks = ["ptq", "qat"]
    if "qat_keras" in tracks:
        if tgt.power_of_two:
            raise _err("tracks", f"qat_keras: tfmot's 8-bit scheme has no power-of-two scales, which target "
                       f"{tgt.name} needs", "drop qat_keras for this target", where)
        if (wbits, abits) != (8, 8):
            raise _err("tracks", f"qat_keras runs tfmot's default 8-bit scheme, not W{wbits}A{abits}",
                       "drop qat_keras, or use 8-bit weights and activations", where)

    # -- models
    models_dir = _path(doc.get("models_dir", "build/models"), "models_dir", where)
    pair = doc.get("pair")
    if pair is not None and pair not in PAIRS:
        raise _err("pair", f"unknown pair {pair!r}", f"use one of {', '.join(PAIRS)}", where)
    model = doc.get("model")
    models = doc.get("models")
    tl_name = tl.get("model_name")
    if tl_name is not None:
        if model is not None or models is not None:
            given = model if model is not None else models
            name = given.get("name") if isinstance(given, dict) else given
            if name != tl_name:
                raise _err("training.model_name", f"{tl_name!r} contradicts model: {given!r}", "keep one of the two",
                           where)
        else:
            model = tl_name
    if model is not None and models is not None:
        raise _err("models", "given together with model", "use model: for one network, models: for several", where)
    if model == "deepsets" or (isinstance(model, str) and model in PAIRS):
        pair, models, model = model, list(PAIR_MODELS[model]), None
    if model is not None:
        entries = [model]
    elif models is not None:
        if not isinstance(models, list) or not models:
            raise _err("models", f"must be a non-empty list, got {models!r}",
                       "e.g. models: [peer_encoder, policy_head]", where)
        entries = models
    elif pair is not None:
        entries = list(PAIR_MODELS[pair])
    else:
        raise _err("model", "no model given", "add model: NAME (a models/zoo.py name) or training.model_name", where)
    subs = [_sub_model(e, models_dir, where, f"models[{i}]" if models is not None else "model")
            for i, e in enumerate(entries)]
    if len(subs) > 1 and pair is None:
        raise _err("models", f"{len(subs)} models without pair:", "add pair: deepsets (the only multi-model "
                   "deployment qtc evaluates end to end)", where)
    if pair is not None:
        want = PAIR_MODELS[pair]
        if tuple(s.name for s in subs) != want:
            raise _err("models", f"pair {pair} needs the sub-models {list(want)} in that order, got "
                       f"{[s.name for s in subs]}", f"models: {list(want)}", where)
    scenes = doc.get("scenes")
    if scenes is not None:
        if pair is None:
            raise _err("scenes", "eval scenes apply to a Deep Sets pair only", "drop scenes, or add pair: deepsets",
                       where)
        scenes = _path(scenes, "scenes", where)
    elif pair is not None:
        scenes = subs[0].data.parent / "scenes_eval.npz"

    # -- sections
    sections = {}
    for sec, keys in SECTION_KEYS.items():
        v = doc.get(sec) or {}
        _check_keys(v, keys, sec, where)
        sections[sec] = v
    cal, ev, ptq, qat, kq, bench, bud = (sections[s] for s in
                                         ("calibration", "eval", "ptq", "qat", "keras_qat", "bench", "budgets"))
    calib_n = _int(cal["samples"], "calibration.samples", where, minimum=1) if cal.get("samples") is not None else None
    eval_n = _int(ev["samples"], "eval.samples", where, minimum=1) if ev.get("samples") is not None else None
    metric = ev.get("metric", "success_rate" if pair else "accuracy")
    if metric not in METRICS:
        raise _err("eval.metric", f"unknown metric {metric!r}", f"use one of {', '.join(METRICS)}", where)
    if metric == "success_rate" and pair is None:
        raise _err("eval.metric", "success_rate is the Deep Sets pair's metric", "use metric: accuracy", where)
    methods = ptq.get("methods", list(PTQ_METHODS))
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list) or not methods:
        raise _err("ptq.methods", f"must be a non-empty list, got {methods!r}", "e.g. [minmax, mse]", where)
    for m in methods:
        if m not in ALL_PTQ_METHODS:
            raise _err("ptq.methods", f"unknown calibration method {m!r}", f"use some of {', '.join(ALL_PTQ_METHODS)}",
                       where)
    wmethods = ptq.get("weight_methods", list(WEIGHT_METHODS))
    if isinstance(wmethods, str):
        wmethods = [wmethods]
    if not isinstance(wmethods, list) or not wmethods or any(m not in WEIGHT_METHODS for m in wmethods):
        raise _err("ptq.weight_methods", f"must be a non-empty list of {list(WEIGHT_METHODS)}, got {wmethods!r}",
                   "e.g. weight_methods: [minmax, mse]", where)
    adaround = ptq.get("adaround", True)
    if not isinstance(adaround, bool):
        raise _err("ptq.adaround", f"must be true or false, got {adaround!r}", "adaround: true", where)
    adaround_iters = _int(ptq.get("adaround_iters", 1000), "ptq.adaround_iters", where, minimum=1)

    qs = QatSettings()
    for key, tl_key in (("epochs", "training_epochs"), ("lr", "learning_rate"), ("batch_size", "batch_size")):
        v, t = qat.get(key), tl.get(tl_key)
        if v is not None and t is not None and v != t:
            raise _err(f"training.{tl_key}", f"{t} contradicts qat.{key}: {v}", "keep one of the two", where)
        v = v if v is not None else t
        if v is None:
            continue
        if key == "lr":
            setattr(qs, key, _num(v, f"qat.{key}", where))
        else:
            setattr(qs, key, _int(v, f"qat.{key}", where, minimum=1))
    if "distill_alpha" in qat:
        a = _num(qat["distill_alpha"], "qat.distill_alpha", where, positive=False)
        if not 0.0 <= a <= 1.0:
            raise _err("qat.distill_alpha", f"{a} is outside [0, 1]", "0 = labels only, 1 = distillation only", where)
        qs.distill_alpha = a
    if "quant_lr" in qat:
        qs.quant_lr = _num(qat["quant_lr"], "qat.quant_lr", where)
    if "train_data" in qat:
        td = qat["train_data"]
        if td not in QAT_TRAIN_DATA:
            raise _err("qat.train_data", f"unknown training data {td!r}", f"use one of {', '.join(QAT_TRAIN_DATA)}",
                       where)
        if td == "training":
            if pair is not None:
                raise _err("qat.train_data", f"training: the {pair} pair has no labelled training split per "
                           "sub-model", "use train_data: calibration", where)
            if subs[0].class_path is not None:
                raise _err("qat.train_data", "training: needs an example model (models/<name>.py with make_data); "
                           f"{subs[0].name} is a user class", "use train_data: calibration", where)
            try:
                mod = import_models(f"models.{subs[0].name}")
            except QtcError:
                mod = None
            if not callable(getattr(mod, "make_data", None)):
                raise _err("qat.train_data", f"training: models.{subs[0].name} has no make_data(seed)",
                           "use train_data: calibration", where)
        qs.train_data = td
    if "per_feature_input" in qat:
        v = qat["per_feature_input"]
        if v not in (True, False, "auto"):
            raise _err("qat.per_feature_input", f"must be true, false or auto, got {v!r}",
                       "auto = every input read only by FullyConnected layers", where)
        qs.per_feature_input = v
    if "resume" in qat:
        if not isinstance(qat["resume"], bool):
            raise _err("qat.resume", f"must be true or false, got {qat['resume']!r}", "resume: false", where)
        qs.resume = qat["resume"]
    ks = KerasQatSettings()
    if "epochs" in kq:
        ks.epochs = _int(kq["epochs"], "keras_qat.epochs", where, minimum=1)
    if "lr" in kq:
        ks.lr = _num(kq["lr"], "keras_qat.lr", where)
    if "batch_size" in kq:
        ks.batch_size = _int(kq["batch_size"], "keras_qat.batch_size", where, minimum=1)

    budgets: dict[str, float] = {}
    sources: dict[str, str] = {}
    for k in BUDGET_KEYS:
        if k in (tgt.budgets or {}):
            budgets[k] = float(tgt.budgets[k])
            sources[k] = f"target {tgt.name}"
    for k, v in bud.items():
        if v is None:  # `latency_ms: null` lifts the target's budget
            budgets.pop(k, None)
            sources[k] = "lifted by config"
            continue
        budgets[k] = _num(v, f"budgets.{k}", where, positive=(k != "accuracy_drop"))
        sources[k] = "config"
    if "accuracy_drop" in budgets and not 0.0 <= budgets["accuracy_drop"] <= 1.0:
        raise _err("budgets.accuracy_drop", f"{budgets['accuracy_drop']} is not a fraction in [0, 1]",
                   "e.g. 0.10 for 10 points", where)

    size_basis = doc.get("size_basis", "tflite")
    if size_basis not in SIZE_BASES:
        raise _err("size_basis", f"unknown basis {size_basis!r}", f"use one of {', '.join(SIZE_BASES)}", where)
    bs = BenchSettings()
    if "enabled" in bench:
        if bench["enabled"] not in ("auto", True, False):
            raise _err("bench.enabled", f"must be auto, true or false, got {bench['enabled']!r}", "enabled: auto",
                       where)
        on = bench["enabled"]
        bs.enabled = on if isinstance(on, str) else ("true" if on else "false")
    if "runs" in bench:
        bs.runs = _int(bench["runs"], "bench.runs", where, minimum=1)
    if bench.get("port") is not None:
        if not isinstance(bench["port"], str):
            raise _err("bench.port", f"must be a serial port string, got {bench['port']!r}", "port: /dev/ttyUSB0",
                       where)
        bs.port = bench["port"]
    seed = _int(doc.get("seed", 0), "seed", where, minimum=0)
    name = doc.get("name") or (pair or subs[0].name) + f"_{tgt.name}"
    if not isinstance(name, str):
        raise _err("name", f"must be a string, got {name!r}", "e.g. name: deepsets_esp32", where)
    output = _path(doc.get("output", f"build/dualtrack/{name}"), "output", where)
    return DualTrackConfig(
        name=name, sub_models=subs, pair=pair, scenes=scenes, target=tgt.name, quantization=mode, tracks=tracks,
        wbits=wbits, abits=abits, calibration_samples=calib_n, eval_samples=eval_n, metric=metric,
        ptq_methods=list(dict.fromkeys(methods)), weight_methods=list(dict.fromkeys(wmethods)), adaround=adaround,
        adaround_iters=adaround_iters, qat=qs, keras_qat=ks, budgets=budgets,
        budget_sources=sources, size_basis=size_basis, bench=bs, seed=seed, output=output, source=source,
        tensorlab={k: tl[k] for k in sorted(tl)}, ignored=sorted(ignored))


def load_config(path, *, overrides: dict | None = None) -> DualTrackConfig:
    """Read and validate a dual-track YAML config (qtc keys and/or Tensorlab keys)."""
    p = Path(path)
    if not p.is_file():
        raise QtcError("config file not found", where=str(p), hint="pass a YAML file, e.g. configs/deepsets_esp32.yaml")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise QtcError(f"config is not valid YAML ({' '.join(str(exc).split())})", where=str(p),
                       hint="check the indentation and quoting") from None
    if doc is not None and not isinstance(doc, dict):
        raise QtcError(f"config must be a mapping, got {type(doc).__name__}", where=str(p),
                       hint="write key: value pairs at the top level")
    return parse_config(doc or {}, source=str(p), overrides=overrides)
