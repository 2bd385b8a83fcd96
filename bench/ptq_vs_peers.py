"""qtc's PTQ against its peers on the example models, same calibration and eval data for all.

    python -m bench.ptq_vs_peers [--models digits_cnn,ts_cnn,peer_encoder,policy_head]
                                 [--models-dir build/models] [--calib-count N] [--eval-count N]
                                 [--peers tflite,ort] [--bits w8a8,w4a8,w4a4] [--no-adaround]
                                 [--no-extra-samples] [--out bench/results/ptq_vs_peers.json]

For each model (built by ``python -m models.train_all --out build/models``):

* ``float``: the float ONNX model on qtc's float interpreter;
* ``tflite-int8``: TF's TFLite converter, full int8, representative dataset =
  the same calibration samples (Keras layout), run with LiteRT BUILTIN_REF;
* ``ort-minmax`` / ``ort-percentile`` / ``ort-entropy``: ONNX Runtime
  ``quantize_static`` QDQ per-channel S8S8; Entropy ranges come from
  ``create_calibrator`` with 2048 bins (see :mod:`bench.peers.ort_peer`);
  ``ort-entropy-qs`` is plain ``quantize_static(Entropy)`` for reference
  (equal to MinMax, the known pitfall);
* ``qtc-<method>-<wXaY>``: ``qtc.passes.quantize.quantize`` (target host:
  int8/int4 asymmetric activations, symmetric per-channel weights) with
  minmax/percentile/entropy/mse activation ranges (min-max weights), or
  ``auto`` (per-tensor range method and weight clipping chosen on held-out
  calibration samples, :mod:`qtc.passes.quantize.select`);
  ``qtc-auto+adaround-<wXaY>`` adds AdaRound: this is **qtc's recipe**,
  fixed for every model (:data:`BEST`); nothing is picked on the eval split.
  Every qtc row uses ``per_feature_input="auto"``: where a graph input is read
  only by FullyConnected layers (peer_encoder, policy_head), qtc quantizes with
  and without one scale and zero point per feature (folded into those layers,
  :mod:`qtc.passes.quantize.input_features`) and keeps the one with the lower
  output error on the calibration samples; the row lists the inputs it
  applied to and both errors (``per_feature_choice``).  ``qtc-auto+adaround-w8a8+tensor-input`` is the recipe with the
  usual per-tensor input params, for comparison (where it applies).
  ``qtc-auto+adaround-w4a8+first-layer-w8`` (peer_encoder, a diagnostic):
  the W4A8 recipe with the first layer's weights at 8 bits (``layer_wbits``).
  ``qtc-auto+blockround-w4a8`` (a diagnostic, where the W4A8 recipe used per-feature input params): the W4A8
  recipe with block reconstruction (``adaround`` ``block=True``, :mod:`qtc.passes.quantize.block_recon`):
  learned per-feature input scales and one joint AdaRound of the FullyConnected block reading that input.

Verdicts (:func:`verdicts`): W8A8 compares qtc's best method with the best
peer, each picked by the eval metric among its own rows (the issue's "best
method" and "best peer"); the fixed recipe's numbers are recorded beside them.
W4A8 judges the AdaRound recipe: block reconstruction (``qtc-auto+blockround-w4a8``)
where it applies, else layer-wise AdaRound (``qtc-auto+adaround-w4a8``), picked
by applicability, never by score; both rows stay in the table.

Metrics: accuracy (top-1 vs labels) for the classifiers (digits_cnn, ts_cnn,
policy_head).  peer_encoder is a sub-model: its metric is the Deep Sets
pair's action accuracy on ``scenes_eval.npz`` (``models.deepsets.evaluate_pair``)
with the quantized encoder and the float policy head (qtc float interpreter).
Also recorded for it: the *quantized pair* (the head quantized by the same
tool and settings on its own calibration split), the success rate, the
embedding cosine vs the float encoder on ``x_eval``, and one diagnostic row
with the graph input and the first layer at int16 (where the W8A8 loss comes from).

Extra samples (a diagnostic; ``--no-extra-samples`` skips them): the eval
splits are small (900 waveforms, 2000 scenes: one sample is 0.11 / 0.05
points), so the same accuracies are also measured on freshly generated
samples no model saw: 20000 scenes for peer_encoder (every row) and 10000
waveforms for ts_cnn (the rows in :data:`EXTRA_ROWS`).  The verdicts use the
eval split; the extra numbers are reported beside them.

The JSON (sorted keys, no timings: same inputs give the same file) goes to
``--out``; it holds each model's criteria verdict (:func:`verdicts`).
Timings are printed only.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from qtc.errors import QtcError

DEFAULT_MODELS = ("digits_cnn", "ts_cnn", "peer_encoder", "policy_head")
QTC_METHODS = ("minmax", "percentile", "entropy", "mse", "auto")
BITS = {"w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4)}
ORT_METHODS = {"ort-minmax": "minmax", "ort-percentile": "percentile", "ort-entropy": "entropy",
               "ort-entropy-qs": "entropy_default"}
PEER_ROWS = ("tflite-int8", *ORT_METHODS)
PEERS = ("tflite", "ort")
BEST = "qtc-auto+adaround-w8a8"      # qtc's best W8A8 recipe, the same for every model
ADA_W4A8 = "qtc-auto+adaround-w4a8"
MINMAX_W4A8 = "qtc-minmax-w4a8"
INT16_ROW = "qtc-auto-w8a8+int16-input"
TENSOR_INPUT_ROW = "qtc-auto+adaround-w8a8+tensor-input"
FIRST_W8_ROW = "qtc-auto+adaround-w4a8+first-layer-w8"
BLOCK_W4A8_ROW = "qtc-auto+blockround-w4a8"
DIAGNOSTIC_ROWS = (INT16_ROW, TENSOR_INPUT_ROW, FIRST_W8_ROW, BLOCK_W4A8_ROW)
BIG_SCENES, BIG_SEED = 20000, 5000  # extra peer_encoder scenes (models.deepsets.make_scenes)
BIG_WAVEFORMS, BIG_WAVE_SEED = 10000, 5000  # extra ts_cnn samples (models.ts_cnn.make_waveforms)
# rows scored on ts_cnn's extra samples (qtc's interpreter takes ~20 s per 10k waveforms): every W8A8 method
EXTRA_ROWS = ("float", *PEER_ROWS, *(f"qtc-{m}-w8a8" for m in QTC_METHODS), BEST, MINMAX_W4A8, ADA_W4A8)
SCHEMA = "qtc.bench.ptq_vs_peers/2"
CRITERIA = {"w8a8_max_loss": 0.005, "w8a8_max_behind_best_peer": 0.002, "w4a8_adaround_max_loss": 0.02,
            "w4a8_minmax_clearly_more": 0.01}


# --------------------------------------------------------------------------- model cases
@dataclass
class Head:
    """The float policy head, and how each tool quantizes it (peer_encoder's quantized pair)."""

    onnx: Path
    keras: Path | None
    calib: np.ndarray
    calib_keras: np.ndarray | None
    float_predict: Callable


@dataclass
class Case:
    name: str
    dir: Path
    meta: dict
    onnx: Path
    keras: Path | None
    calib: np.ndarray          # torch/ONNX layout
    calib_keras: np.ndarray | None
    x_eval: np.ndarray
    x_eval_keras: np.ndarray | None
    metric: str
    score: Callable            # score(predict, keras_layout, head_predict=None, extra=False) -> {metric: value}
    notes: dict = field(default_factory=dict)
    head: Head | None = None   # peer_encoder only
    extra_metric: str | None = None        # the metric on extra generated samples (a diagnostic)
    extra_rows: tuple | None = None        # rows that get it (None: every row)


def _load_graph(path: Path):
    from qtc.frontends import load_model
    from qtc.passes.canonicalize import canonicalize

    return canonicalize(load_model(str(path)), channels_last=False)


def qtc_predict(g, quantized: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Samples on axis 0 → first output, via qtc's float or integer interpreter (float in/out).

    Runs through :func:`qtc.passes.quantize.collect.collect`: the graph is re-batched only when one
    sample gives the same values either way (checked), so this equals one interpreter run per sample.
    """
    from qtc.passes.quantize.collect import collect

    name, out = g.inputs[0], g.outputs[0]

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return np.asarray(collect(g, {name: x}, [out])[out], dtype=np.float32).reshape(len(x), -1)

    return predict


def load_case(name: str, models_dir: Path, calib_count: int | None, eval_count: int | None,
              extra_samples: bool = False) -> Case:
    from models import zoo

    d = zoo.model_dir(name, models_dir)
    meta = zoo.load_meta(name, models_dir)
    data = zoo.load_data(name, models_dir)
    if len(meta["inputs"]) != 1:
        raise QtcError(f"{name} has {len(meta['inputs'])} inputs; the benchmark takes one-input models",
                       where="bench", hint=f"drop {name} from --models")
    io = meta["inputs"][0]
    kio = (meta.get("keras") or {}).get("inputs", [io])[0]
    cut_c = slice(None, calib_count)
    cut_e = slice(None, eval_count)
    keras = d / meta["files"]["keras"] if "keras" in meta.get("files", {}) else None
    calib, x_eval = data[io["calib_key"]][cut_c], data[io["eval_key"]][cut_e]
    calib_k = data[kio["calib_key"]][cut_c] if keras else None
    x_eval_k = data[kio["eval_key"]][cut_e] if keras else None
    head, extra_metric, extra_rows = None, None, None
    if name == "peer_encoder":
        head = _head(models_dir, calib_count)
        score, metric, notes = _pair_scorer(d, data, eval_count, head, extra_samples)
        extra_metric = f"pair_action_accuracy_{BIG_SCENES // 1000}k" if extra_samples else None
    else:
        y = data["y_eval"][cut_e]
        if not np.issubdtype(y.dtype, np.integer):
            raise QtcError(f"{name} is not a classifier (its labels are {y.dtype})", where="bench",
                           hint="benchmark the classifiers and peer_encoder")
        metric = "accuracy"
        notes = {"metric": "top-1 accuracy vs y_eval"}
        big = None
        if name == "ts_cnn" and extra_samples:
            from models import ts_cnn

            xb, yb = ts_cnn.make_waveforms(BIG_WAVEFORMS, BIG_WAVE_SEED)
            xbk = np.ascontiguousarray(np.moveaxis(xb, 1, -1)) if keras and calib_k.shape[1:] != calib.shape[1:] else xb
            big = (xb, xbk, yb)
            extra_metric, extra_rows = f"accuracy_{BIG_WAVEFORMS // 1000}k", EXTRA_ROWS
            notes["extra_samples"] = {"count": BIG_WAVEFORMS, "seed": BIG_WAVE_SEED, "rows": list(EXTRA_ROWS),
                                      "what": "models.ts_cnn.make_waveforms(count, seed): waveforms no model saw, "
                                              "to measure the accuracy change with less sampling noise"}

        def top1(predict, x, y):
            return float(np.mean(np.argmax(predict(x).reshape(len(y), -1), axis=1) == y))

        def score(predict, keras_layout=False, head_predict=None, extra=False, _x=x_eval, _xk=x_eval_k, _y=y):
            out = {"accuracy": top1(predict, _xk if keras_layout else _x, _y)}
            if extra and big is not None:
                out[extra_metric] = top1(predict, big[1] if keras_layout else big[0], big[2])
            return out

    return Case(name, d, meta, d / meta["files"]["onnx"], keras, calib, calib_k, x_eval, x_eval_k, metric,
                score, notes, head, extra_metric, extra_rows)


def _head(models_dir: Path, calib_count: int | None) -> Head:
    from models import zoo

    d = zoo.model_dir("policy_head", models_dir)
    meta = zoo.load_meta("policy_head", models_dir)
    data = zoo.load_data("policy_head", models_dir)
    io = meta["inputs"][0]
    kio = (meta.get("keras") or {}).get("inputs", [io])[0]
    keras = d / meta["files"]["keras"] if "keras" in meta.get("files", {}) else None
    onnx = d / meta["files"]["onnx"]
    return Head(onnx, keras, data[io["calib_key"]][:calib_count],
                data[kio["calib_key"]][:calib_count] if keras else None,
                qtc_predict(_load_graph(onnx), quantized=False))


def _pair_scorer(d: Path, data: dict, eval_count: int | None, head: Head, extra_samples: bool):
    from models import deepsets

    from qtc.eval.metrics import cosine

    with np.load(d / "scenes_eval.npz", allow_pickle=False) as z:
        scenes = {k: z[k][:eval_count] for k in z.files}
    big = deepsets.make_scenes(BIG_SCENES, BIG_SEED) if extra_samples else None
    x_emb, y_emb = data["x_eval"][:eval_count], data["y_eval"][:eval_count]

    def score(predict, keras_layout=False, head_predict=None, extra=False):
        res = deepsets.evaluate_pair(predict, head.float_predict, scenes)
        out = {"pair_action_accuracy": res["accuracy"], "pair_success_rate": res["success_rate"],
               "embedding_cosine": cosine(y_emb, predict(x_emb))}
        if head_predict is not None:
            out["quantized_pair_action_accuracy"] = deepsets.evaluate_pair(predict, head_predict, scenes)["accuracy"]
        if big is not None and extra:
            out[f"pair_action_accuracy_{BIG_SCENES // 1000}k"] = deepsets.evaluate_pair(
                predict, head.float_predict, big)["accuracy"]
            if head_predict is not None:
                out[f"quantized_pair_action_accuracy_{BIG_SCENES // 1000}k"] = deepsets.evaluate_pair(
                    predict, head_predict, big)["accuracy"]
        return out

    notes = {"metric": "Deep Sets pair action accuracy: quantized encoder + float policy_head (qtc float "
                       "interpreter) on scenes_eval.npz (models.deepsets.evaluate_pair)",
             "quantized_pair_action_accuracy": "encoder and policy_head both quantized by the same tool and "
                                               "settings (the head on its own calibration split)",
             "scenes": int(len(scenes["labels"])), "peers_encoded": int(scenes["mask"].sum()),
             "embedding_cosine": "cosine of all encoder outputs vs the float torch embeddings y_eval on x_eval"}
    if big is not None:
        notes["extra_samples"] = {"count": BIG_SCENES, "seed": BIG_SEED, "peers_encoded": int(big["mask"].sum()),
                               "what": "models.deepsets.make_scenes(count, seed): scenes no model saw, to "
                                       "measure the accuracy change with less sampling noise"}
    return score, "pair_action_accuracy", notes


# --------------------------------------------------------------------------- runs
def _adaround_available() -> bool:
    from qtc.passes.quantize import quantize

    return "adaround" in inspect.signature(quantize).parameters


def qtc_configs(bits: list[str], adaround) -> list[tuple[str, dict]]:
    """(label, quantize kwargs) per bit width and method; ``adaround`` is False, True or AdaRound settings."""
    out = []
    for b in bits:
        w, a = BITS[b]
        for m in QTC_METHODS:
            kw = {"method": m, "wbits": w, "abits": a}
            if m == "auto":
                kw["weight_method"] = "auto"
            out.append((f"qtc-{m}-{b}", kw))
        if adaround:
            out.append((f"qtc-auto+adaround-{b}", {"method": "auto", "weight_method": "auto", "wbits": w, "abits": a,
                                                    "adaround": adaround}))
    return out


def _quantize(fg, calib: np.ndarray, kw: dict):
    from qtc.passes.quantize import quantize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize(fg, {fg.inputs[0]: calib}, target="host", progress=False,
                        **{"per_feature_input": "auto", **kw})


def _extra(case: Case, label: str) -> bool:
    return case.extra_metric is not None and (case.extra_rows is None or label in case.extra_rows)


def run_qtc(case: Case, fg, label: str, kw: dict) -> dict:
    qg = _quantize(fg, case.calib, kw)
    head = None
    if case.head is not None and not kw.get("int16"):  # the int16 row is an encoder-only diagnostic
        head = qtc_predict(_quantize(_load_graph(case.head.onnx), case.head.calib, kw), quantized=True)
    res = case.score(qtc_predict(qg, quantized=True), False, head, _extra(case, label))
    meta = qg.metadata.get("quantization", {})
    out = {**res, "tool": "qtc", "method": kw["method"] + ("+adaround" if kw.get("adaround") else ""),
           "weight_method": meta.get("weight_method"), "wbits": kw["wbits"], "abits": kw["abits"],
           "float_nodes": len(meta.get("float_nodes") or [])}
    if kw.get("int16"):
        out["int16"] = list(kw["int16"])
    if kw.get("layer_wbits"):
        out["layer_wbits"] = meta.get("layer_wbits")
    out["per_feature_input"] = sorted(meta.get("per_feature_input") or {})
    if meta.get("block_reconstruction"):
        out["block_reconstruction"] = meta["block_reconstruction"]
    if meta.get("per_feature_choice"):
        out["per_feature_choice"] = meta["per_feature_choice"]
    if meta.get("auto"):
        a = meta["auto"]
        out["auto"] = {k: a[k] for k in ("choices", "weight_method", "error", "scored_samples")}
    return out


def run_ort(case: Case, label: str, method: str, tmp: Path) -> dict:
    from bench.peers.ort_peer import ort_predict, quantize_ort

    path = tmp / f"{case.name}_{label}.onnx"
    rec = quantize_ort(case.onnx, case.calib, path, method)
    head = None
    if case.head is not None:
        hpath = tmp / f"{case.name}_{label}_head.onnx"
        quantize_ort(case.head.onnx, case.head.calib, hpath, method)
        head = ort_predict(hpath)
    res = case.score(ort_predict(path), False, head, _extra(case, label))
    return {**res, "tool": "onnxruntime", "method": method, "wbits": 8, "abits": 8, "how": rec}


def run_tflite(case: Case) -> dict:
    from bench.peers.tflite_peer import convert_int8, litert_predict

    if case.keras is None:
        raise QtcError(f"{case.name} has no tf_keras twin", where="bench", hint="skip the tflite peer for it")
    blob = convert_int8(case.keras, case.calib_keras)
    head = None
    if case.head is not None and case.head.keras is not None:
        head = litert_predict(convert_int8(case.head.keras, case.head.calib_keras))
    return {**case.score(litert_predict(blob), True, head, _extra(case, "tflite-int8")), "tool": "tflite-converter",
            "method": "representative dataset", "wbits": 8, "abits": 8,
            "how": {"converter": "TFLiteConverter.from_keras_model, Optimize.DEFAULT, TFLITE_BUILTINS_INT8, "
                                 "int8 in/out", "runtime": "LiteRT BUILTIN_REF"}}


def _first_layer(fg) -> str:
    from qtc.passes.quantize.layers import LAYER_OPS

    return next(n.name for n in fg.nodes if n.op in LAYER_OPS)


def bench_model(case: Case, peers: list[str], bits: list[str], adaround, log=print) -> dict:
    results: dict[str, dict] = {}

    def timed(label: str, fn):
        t0 = time.perf_counter()
        try:
            with _quiet_stdout():
                results[label] = fn()
        except QtcError as exc:
            results[label] = {"error": exc.line()}
        dt = time.perf_counter() - t0
        r = results[label]
        shown = r.get(case.metric)
        log(f"  {case.name:<13} {label:<28} {case.metric} "
            f"{'error: ' + r['error'] if 'error' in r else f'{shown:.4f}'}  ({dt:.1f} s)")

    fg = _load_graph(case.onnx)
    timed("float", lambda: {**case.score(qtc_predict(fg, quantized=False), False,
                                         case.head.float_predict if case.head else None, _extra(case, "float")),
                            "tool": "qtc float interpreter"})
    if "tflite" in peers and case.keras is not None:
        timed("tflite-int8", lambda: run_tflite(case))
    if "ort" in peers:
        with tempfile.TemporaryDirectory(prefix="qtc-bench-") as tmp:
            for label, method in ORT_METHODS.items():
                timed(label, lambda label=label, method=method: run_ort(case, label, method, Path(tmp)))
    for label, kw in qtc_configs(bits, adaround):
        timed(label, lambda label=label, kw=kw: run_qtc(case, fg, label, kw))
    if case.head is not None and "w8a8" in bits:  # where peer_encoder's W8A8 loss comes from
        kw = {"method": "auto", "weight_method": "auto", "wbits": 8, "abits": 8, "mode": "mixed",
              "int16": [fg.inputs[0], "=" + _first_layer(fg)]}
        timed(INT16_ROW, lambda: run_qtc(case, fg, INT16_ROW, kw))
    if case.head is not None and "w4a8" in bits and adaround:  # peer_encoder's W4A8 loss is fc1's 4-bit weights
        kw = {"method": "auto", "weight_method": "auto", "wbits": 4, "abits": 8, "adaround": adaround,
              "layer_wbits": {"=" + _first_layer(fg): 8}}
        timed(FIRST_W8_ROW, lambda: run_qtc(case, fg, FIRST_W8_ROW, kw))
    if (results.get(ADA_W4A8) or {}).get("per_feature_input") and adaround:  # block reconstruction at that input
        kw = {"method": "auto", "weight_method": "auto", "wbits": 4, "abits": 8,
              "adaround": {**(adaround if isinstance(adaround, dict) else {}), "block": True}}
        timed(BLOCK_W4A8_ROW, lambda: run_qtc(case, fg, BLOCK_W4A8_ROW, kw))
    best = results.get(BEST) or {}
    if best.get("per_feature_input") and "w8a8" in bits and adaround:  # what per-feature input params bring
        kw = {"method": "auto", "weight_method": "auto", "wbits": 8, "abits": 8, "adaround": adaround,
              "per_feature_input": False}
        timed(TENSOR_INPUT_ROW, lambda: run_qtc(case, fg, TENSOR_INPUT_ROW, kw))
    return {"metric": case.metric, "extra_metric": case.extra_metric, "calib_samples": int(len(case.calib)),
            "eval_samples": int(len(case.x_eval)), "notes": case.notes, "results": results}


class _quiet_stdout:
    """ORT's calibrators print progress on stdout; keep the table readable."""

    def __enter__(self):
        import contextlib
        import io

        self._cm = contextlib.redirect_stdout(io.StringIO())
        self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# --------------------------------------------------------------------------- verdicts
def _value(res: dict, label: str, metric: str) -> float | None:
    r = res.get(label)
    return None if r is None or "error" in r or metric not in r else float(r[metric])


def best_qtc_w8a8(res: dict, metric: str) -> str | None:
    """qtc's best W8A8 method on this model: the qtc W8A8 row with the highest metric (diagnostics excluded)."""
    rows = {k: _value(res, k, metric) for k in res
            if k.startswith("qtc-") and k.endswith("-w8a8") and k not in DIAGNOSTIC_ROWS}
    rows = {k: v for k, v in rows.items() if v is not None}
    return max(sorted(rows), key=rows.get) if rows else None


def verdicts(model: dict) -> dict:
    """The issue's acceptance criteria for one model's results (losses in accuracy units, 0.005 = 0.5 points)."""
    res, metric = model["results"], model["metric"]
    label = best_qtc_w8a8(res, metric)
    flt, best = _value(res, "float", metric), (_value(res, label, metric) if label else None)
    out: dict = {"best_label": label, "recipe": BEST, "recipe_value": _value(res, BEST, metric)}
    peers = {k: _value(res, k, metric) for k in PEER_ROWS if _value(res, k, metric) is not None}
    if flt is not None and best is not None:
        loss = round(flt - best, 6)
        w8 = {"float": flt, "best": best, "loss": loss, "ok_loss": loss <= CRITERIA["w8a8_max_loss"] + 1e-9}
        if peers:
            peer = max(peers, key=peers.get)
            behind = round(peers[peer] - best, 6)
            w8.update({"best_peer": peer, "best_peer_value": peers[peer], "behind_best_peer": behind,
                       "ok_vs_peer": behind <= CRITERIA["w8a8_max_behind_best_peer"] + 1e-9})
        w8["pass"] = bool(w8["ok_loss"] and w8.get("ok_vs_peer", True))
        out["w8a8"] = w8
        xm = model.get("extra_metric")
        xf, xb = (_value(res, "float", xm), _value(res, label, xm)) if xm else (None, None)
        if xf is not None and xb is not None:  # the same criteria on the extra samples: a diagnostic
            xp = {k: _value(res, k, xm) for k in PEER_ROWS if _value(res, k, xm) is not None}
            diag = {"metric": xm, "float": xf, "best": xb, "loss": round(xf - xb, 6)}
            if xp:
                peer = max(xp, key=xp.get)
                diag.update({"best_peer": peer, "best_peer_value": xp[peer],
                             "behind_best_peer": round(xp[peer] - xb, 6)})
            out["w8a8_extra_samples"] = diag
    # W4A8 AdaRound: block reconstruction where it applies (a per-feature input feeding FC layers), else
    # layer-wise; chosen by applicability, not by score (both rows stay in the table)
    ada_label = BLOCK_W4A8_ROW if _value(res, BLOCK_W4A8_ROW, metric) is not None else ADA_W4A8
    mm, ada = _value(res, MINMAX_W4A8, metric), _value(res, ada_label, metric)
    if flt is not None and mm is not None and ada is not None:
        ada_loss, mm_loss = round(flt - ada, 6), round(flt - mm, 6)
        out["w4a8"] = {"minmax": mm, "adaround": ada, "adaround_label": ada_label,
                       "minmax_loss": mm_loss, "adaround_loss": ada_loss,
                       "pass": ada_loss <= CRITERIA["w4a8_adaround_max_loss"] + 1e-9,
                       "minmax_loses_clearly_more": mm_loss - ada_loss >= CRITERIA["w4a8_minmax_clearly_more"]}
    return out


# --------------------------------------------------------------------------- output
def table(doc: dict) -> str:
    """Configurations down, models across; each model's own metric."""
    models = list(doc["models"])
    labels: list[str] = []
    for m in models:
        for label in doc["models"][m]["results"]:
            if label not in labels:
                labels.append(label)
    metric = {m: doc["models"][m]["metric"] for m in models}
    width = {m: max(10, len(m), len(metric[m])) + 2 for m in models}
    first = max(len(x) for x in labels + ["config"]) + 2
    lines = [f"{'config':<{first}}" + "".join(f"{m:>{width[m]}}" for m in models),
             f"{'(metric)':<{first}}" + "".join(f"{metric[m]:>{width[m]}}" for m in models)]
    lines.append("-" * len(lines[0]))
    for label in labels:
        cells = []
        for m in models:
            r = doc["models"][m]["results"].get(label)
            text = "-" if r is None else ("error" if "error" in r else f"{r[metric[m]]:.4f}")
            cells.append(f"{text:>{width[m]}}")
        lines.append(f"{label:<{first}}" + "".join(cells))
    return "\n".join(lines)


def verdict_lines(doc: dict) -> list[str]:
    lines = []
    for name, m in doc["models"].items():
        v = m.get("verdicts", {})
        w8, w4 = v.get("w8a8"), v.get("w4a8")
        if w8:
            peer = (f", {_behind(w8['behind_best_peer'])} {w8['best_peer']}" if "best_peer" in w8 else "")
            lines.append(f"{name:<13} W8A8 {v['best_label']}: loss {w8['loss'] * 100:.2f} pt{peer} -> "
                         f"{'PASS' if w8['pass'] else 'FAIL'}")
            if v.get("recipe_value") is not None:
                lines.append(f"{'':<13}   (recipe {v['recipe']}: loss {(w8['float'] - v['recipe_value']) * 100:.2f} pt)")
        x = v.get("w8a8_extra_samples")
        if x:
            peer = f", {_behind(x['behind_best_peer'])} {x['best_peer']}" if "best_peer" in x else ""
            lines.append(f"{'':<13}   (diagnostic, {x['metric']}: loss {x['loss'] * 100:.2f} pt{peer})")
        if w4:
            lines.append(f"{name:<13} W4A8 AdaRound loss {w4['adaround_loss'] * 100:.2f} pt (min-max "
                         f"{w4['minmax_loss'] * 100:.2f} pt) -> {'PASS' if w4['pass'] else 'FAIL'}")
    return lines


def _behind(d: float) -> str:
    return f"{abs(d) * 100:.2f} pt {'behind' if d > 0 else 'ahead of'}"


def _versions(peers: list[str]) -> dict:
    import qtc

    v = {"qtc": qtc.__version__, "numpy": np.__version__}
    if "ort" in peers:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    if "tflite" in peers:
        from bench.peers.tflite_peer import versions

        v.update(versions())
    return v


def run_bench(models: list[str], models_dir: Path, *, calib_count: int | None = None, eval_count: int | None = None,
              peers: list[str] = list(PEERS), bits: list[str] = list(BITS), adaround: bool | dict = True,
              extra_samples: bool = True, log=print) -> dict:
    """Every model × config; ``adaround`` True (qtc's defaults), a dict of AdaRound settings, or False."""
    for p in peers:
        if p not in PEERS:
            raise QtcError(f"unknown peer {p!r}", hint=f"use {', '.join(PEERS)}")
    for b in bits:
        if b not in BITS:
            raise QtcError(f"unknown bit widths {b!r}", hint=f"use {', '.join(BITS)}")
    ada = adaround if (adaround is not False and _adaround_available()) else False
    doc = {"schema": SCHEMA, "versions": _versions(peers), "calib_count": calib_count, "eval_count": eval_count,
           "adaround": ada if not isinstance(ada, dict) else {"settings": ada}, "best": BEST,
           "criteria": CRITERIA, "models": {}}
    for name in models:
        case = load_case(name, models_dir, calib_count, eval_count, extra_samples)
        log(f"{name}: {len(case.calib)} calibration / {len(case.x_eval)} eval samples ({case.metric})")
        doc["models"][name] = bench_model(case, peers, bits, ada, log=log)
        doc["models"][name]["verdicts"] = verdicts(doc["models"][name])
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ptq_vs_peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    ap.add_argument("--models-dir", type=Path, default=Path("build/models"))
    ap.add_argument("--calib-count", type=int, default=None, help="first N calibration samples (default all)")
    ap.add_argument("--eval-count", type=int, default=None, help="first N eval samples / scenes (default all)")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated: tflite, ort (empty for none)")
    ap.add_argument("--bits", default=",".join(BITS), help="comma-separated qtc bit widths")
    ap.add_argument("--no-adaround", action="store_true", help="skip the qtc AdaRound rows")
    ap.add_argument("--adaround-iters", type=int, default=None, help="AdaRound iterations per layer (qtc default)")
    ap.add_argument("--no-extra-samples", action="store_true",
                    help=f"skip the extra generated samples (peer_encoder {BIG_SCENES} scenes, ts_cnn "
                         f"{BIG_WAVEFORMS} waveforms)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/ptq_vs_peers.json"))
    args = ap.parse_args(argv)
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    t0 = time.perf_counter()
    try:
        doc = run_bench(split(args.models), args.models_dir, calib_count=args.calib_count,
                        eval_count=args.eval_count, peers=split(args.peers), bits=split(args.bits),
                        adaround=False if args.no_adaround else
                        ({"iters": args.adaround_iters} if args.adaround_iters else True),
                        extra_samples=not args.no_extra_samples)
        from qtc.atomic import save_json
        from qtc.eval.report import clean_json

        save_json(args.out, clean_json(doc))
    except QtcError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    print()
    print(table(doc))
    print()
    print("\n".join(verdict_lines(doc)))
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
