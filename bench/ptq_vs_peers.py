"""qtc's PTQ against its peers on the example models, same calibration and eval data for all.

    python -m bench.ptq_vs_peers [--models digits_cnn,ts_cnn,peer_encoder,policy_head]
                                 [--models-dir build/models] [--calib-count N] [--eval-count N]
                                 [--peers tflite,ort] [--bits w8a8,w4a8,w4a4] [--no-adaround]
                                 [--out bench/results/ptq_vs_peers.json]

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
  minmax/percentile/entropy/mse activation ranges, plus ``mse+adaround``
  (AdaRound weights) where this qtc has it, on qtc's integer interpreter.

Metrics: accuracy (top-1 vs labels) for the classifiers (digits_cnn, ts_cnn,
policy_head).  peer_encoder is a sub-model: its metric is the Deep Sets
pair's action accuracy on ``scenes_eval.npz`` (``models.deepsets.evaluate_pair``)
with the quantized encoder and the float policy head (qtc float interpreter);
the pair's success rate and the embedding cosine vs the float encoder on
``x_eval`` are recorded too.

The JSON (sorted keys, no timings: same inputs give the same file) goes to
``--out``; timings are printed only.
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
QTC_METHODS = ("minmax", "percentile", "entropy", "mse")
BITS = {"w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4)}
ORT_METHODS = {"ort-minmax": "minmax", "ort-percentile": "percentile", "ort-entropy": "entropy",
               "ort-entropy-qs": "entropy_default"}
PEERS = ("tflite", "ort")
SCHEMA = "qtc.bench.ptq_vs_peers/1"


# --------------------------------------------------------------------------- model cases
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
    score: Callable[[Callable, bool], dict]  # score(predict, keras_layout) -> {metric: value, ...}
    notes: dict = field(default_factory=dict)


def _load_graph(path: Path):
    from qtc.frontends import load_model
    from qtc.passes.canonicalize import canonicalize

    return canonicalize(load_model(str(path)), channels_last=False)


def qtc_predict(g, quantized: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Samples on axis 0 → first output, via qtc's float or integer interpreter (float in/out)."""
    from qtc.interp.runner import run, run_quantized

    name, out = g.inputs[0], g.outputs[0]
    go = run_quantized if quantized else run

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return np.concatenate([np.asarray(go(g, {name: x[i:i + 1]})[out], dtype=np.float32) for i in range(len(x))])

    return predict


def load_case(name: str, models_dir: Path, calib_count: int | None, eval_count: int | None) -> Case:
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
    notes = {}
    if name == "peer_encoder":
        score, metric, notes = _pair_scorer(d, models_dir, data, eval_count)
    else:
        y = data["y_eval"][cut_e]
        if not np.issubdtype(y.dtype, np.integer):
            raise QtcError(f"{name} is not a classifier (its labels are {y.dtype})", where="bench",
                           hint="benchmark the classifiers and peer_encoder")
        metric = "accuracy"

        def score(predict, keras_layout=False, _x=x_eval, _xk=x_eval_k, _y=y):
            logits = predict(_xk if keras_layout else _x)
            return {"accuracy": float(np.mean(np.argmax(logits.reshape(len(_y), -1), axis=1) == _y))}

        notes = {"metric": "top-1 accuracy vs y_eval"}
    return Case(name, d, meta, d / meta["files"]["onnx"], keras, calib, calib_k, x_eval, x_eval_k, metric,
                score, notes)


def _pair_scorer(d: Path, models_dir: Path, data: dict, eval_count: int | None):
    from models import deepsets, zoo

    with np.load(d / "scenes_eval.npz", allow_pickle=False) as z:
        scenes = {k: z[k][:eval_count] for k in z.files}
    head_dir = zoo.model_dir("policy_head", models_dir)
    head_meta = zoo.load_meta("policy_head", models_dir)
    head = qtc_predict(_load_graph(head_dir / head_meta["files"]["onnx"]), quantized=False)
    x_emb, y_emb = data["x_eval"][:eval_count], data["y_eval"][:eval_count]

    def score(predict, keras_layout=False):
        res = deepsets.evaluate_pair(predict, head, scenes)
        emb = predict(x_emb)
        from qtc.eval.metrics import cosine

        return {"pair_action_accuracy": res["accuracy"], "pair_success_rate": res["success_rate"],
                "embedding_cosine": cosine(y_emb, emb)}

    notes = {"metric": "Deep Sets pair action accuracy: quantized encoder + float policy_head (qtc float "
                       "interpreter) on scenes_eval.npz (models.deepsets.evaluate_pair)",
             "scenes": int(len(scenes["labels"])), "peers_encoded": int(scenes["mask"].sum()),
             "embedding_cosine": "cosine of all encoder outputs vs the float torch embeddings y_eval on x_eval"}
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
            out.append((f"qtc-{m}-{b}", {"method": m, "wbits": w, "abits": a}))
        if adaround:
            out.append((f"qtc-mse+adaround-{b}", {"method": "mse", "wbits": w, "abits": a, "adaround": adaround}))
    return out


def run_qtc(case: Case, fg, label: str, kw: dict) -> dict:
    from qtc.passes.quantize import quantize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qg = quantize(fg, {fg.inputs[0]: case.calib}, target="host", progress=False, **kw)
    res = case.score(qtc_predict(qg, quantized=True), False)
    meta = qg.metadata.get("quantization", {})
    return {**res, "tool": "qtc", "method": kw["method"] + ("+adaround" if kw.get("adaround") else ""),
            "wbits": kw["wbits"], "abits": kw["abits"], "float_nodes": len(meta.get("float_nodes") or [])}


def run_ort(case: Case, label: str, method: str, tmp: Path) -> dict:
    from bench.peers.ort_peer import ort_predict, quantize_ort

    path = tmp / f"{case.name}_{label}.onnx"
    rec = quantize_ort(case.onnx, case.calib, path, method)
    return {**case.score(ort_predict(path), False), "tool": "onnxruntime", "method": method, "wbits": 8,
            "abits": 8, "how": rec}


def run_tflite(case: Case) -> dict:
    from bench.peers.tflite_peer import convert_int8, litert_predict

    if case.keras is None:
        raise QtcError(f"{case.name} has no tf_keras twin", where="bench", hint="skip the tflite peer for it")
    blob = convert_int8(case.keras, case.calib_keras)
    return {**case.score(litert_predict(blob), True), "tool": "tflite-converter", "method": "representative dataset",
            "wbits": 8, "abits": 8,
            "how": {"converter": "TFLiteConverter.from_keras_model, Optimize.DEFAULT, TFLITE_BUILTINS_INT8, "
                                 "int8 in/out", "runtime": "LiteRT BUILTIN_REF"}}


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
        log(f"  {case.name:<13} {label:<26} {case.metric} "
            f"{'error: ' + r['error'] if 'error' in r else f'{shown:.4f}'}  ({dt:.1f} s)")

    fg = _load_graph(case.onnx)
    timed("float", lambda: {**case.score(qtc_predict(fg, quantized=False), False), "tool": "qtc float interpreter"})
    if "tflite" in peers and case.keras is not None:
        timed("tflite-int8", lambda: run_tflite(case))
    if "ort" in peers:
        with tempfile.TemporaryDirectory(prefix="qtc-bench-") as tmp:
            for label, method in ORT_METHODS.items():
                timed(label, lambda label=label, method=method: run_ort(case, label, method, Path(tmp)))
    for label, kw in qtc_configs(bits, adaround):
        timed(label, lambda label=label, kw=kw: run_qtc(case, fg, label, kw))
    return {"metric": case.metric, "calib_samples": int(len(case.calib)), "eval_samples": int(len(case.x_eval)),
            "notes": case.notes, "results": results}


class _quiet_stdout:
    """ORT's calibrators print progress on stdout; keep the table readable."""

    def __enter__(self):
        import contextlib
        import io

        self._cm = contextlib.redirect_stdout(io.StringIO())
        self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


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
              log=print) -> dict:
    """Every model × config; ``adaround`` True (qtc's defaults), a dict of AdaRound settings, or False."""
    for p in peers:
        if p not in PEERS:
            raise QtcError(f"unknown peer {p!r}", hint=f"use {', '.join(PEERS)}")
    for b in bits:
        if b not in BITS:
            raise QtcError(f"unknown bit widths {b!r}", hint=f"use {', '.join(BITS)}")
    ada = adaround if (adaround is not False and _adaround_available()) else False
    doc = {"schema": SCHEMA, "versions": _versions(peers), "calib_count": calib_count, "eval_count": eval_count,
           "adaround": ada if not isinstance(ada, dict) else {"settings": ada}, "models": {}}
    for name in models:
        case = load_case(name, models_dir, calib_count, eval_count)
        log(f"{name}: {len(case.calib)} calibration / {len(case.x_eval)} eval samples ({case.metric})")
        doc["models"][name] = bench_model(case, peers, bits, ada, log=log)
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
    ap.add_argument("--out", type=Path, default=Path("bench/results/ptq_vs_peers.json"))
    args = ap.parse_args(argv)
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    t0 = time.perf_counter()
    try:
        doc = run_bench(split(args.models), args.models_dir, calib_count=args.calib_count,
                        eval_count=args.eval_count, peers=split(args.peers), bits=split(args.bits),
                        adaround=False if args.no_adaround else
                        ({"iters": args.adaround_iters} if args.adaround_iters else True))
        from qtc.atomic import save_json
        from qtc.eval.report import clean_json

        save_json(args.out, clean_json(doc))
    except QtcError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    print()
    print(table(doc))
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
