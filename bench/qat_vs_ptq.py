"""QAT against PTQ at low bit widths: float, the best PTQ, and QAT, side by side.

    python -m bench.qat_vs_ptq [--models digits_cnn,ts_cnn,policy_head] [--bits w4a4,w2a8] [--models-dir build/models]
                               [--qat-epochs N] [--qat-lr LR] [--qat-quant-lr 1e-2] [--qat-distill-alpha 0]
                               [--qat-batch-size 64] [--qat-train-data training] [--qat-per-feature-input auto]
                               [--adaround-iters 1000] [--target host]
                               [--work build/bench/qat_vs_ptq] [--out bench/results/qat_vs_ptq.json]

Each (model, bit width) is one ``qtc dualtrack`` run (:func:`qtc.dualtrack.run_dualtrack`)
with tracks PTQ + QAT from the same float checkpoint (``build/models/<name>/<name>.pt``):

* ``float``: the float model (canonical qtc IR) on qtc's float interpreter;
* ``ptq``: the best of qtc's PTQ activation calibration methods (minmax,
  percentile, entropy, mse) x weight ranges (minmax, mse), then AdaRound on
  each weight range's best, by eval accuracy; every variant's accuracy is kept in the JSON;
* ``qat``: :func:`qtc.qat.train_qat` (LSQ fake quantizers initialised from
  PTQ on the calibration split) then :func:`qtc.qat.qat_to_ir`.  With
  ``--qat-train-data training`` (the default; dual-track key
  ``qat.train_data: training``) QAT trains on the model's labelled training
  split, ``models.<name>.make_data(seed)``: the very data the float checkpoint
  was trained on, checked to reproduce ``data.npz``'s calibration and eval
  arrays; loss ``(1-alpha)·CE + alpha·KL`` with ``--qat-distill-alpha`` (0:
  labels only).  ``--qat-train-data calibration`` trains on the unlabelled
  calibration split by distillation, like a user model.  The final epoch's model
  is exported: the eval split is reported per epoch, never used to select.
  ``--qat-per-feature-input auto`` (the default): an input read only by
  FullyConnected layers (policy_head's 36 features) learns one scale and zero
  point per feature, folded into the first layer.

QAT schedule (epochs, lr): each model's recipe in ``RECIPES`` unless
``--qat-epochs`` / ``--qat-lr`` are given.  The CNNs keep 8 epochs at 3e-3 (an
epoch of ts_cnn costs minutes on 2 cores); policy_head (a 36-64-5 MLP, 20k
training samples, a second per epoch) trains 50 epochs at 1e-3: chosen on the
*training-split* accuracy of the fake-quant model (W2A8: 0.9268 at 50 epochs,
0.9241 at 30, 0.906 at 8 epochs / 3e-3; W4A4: 0.9312 at 50, 0.9311 at 30), not
on the eval split.

Data: the model's frozen ``data.npz``: the calibration split (``x_calib``) is
the quant dataset of both tracks (PTQ calibrates on it, QAT initialises its
step sizes from it), the eval split (``x_eval`` / ``y_eval``) only scores.  Target ``host``: generic int8 numerics
(TFLite), asymmetric activations, symmetric per-channel weights; both tracks
run on qtc's integer interpreter.  No budgets apply and nothing is benched.

The JSON (sorted keys, no timings: the same inputs give the same file) goes
to ``--out``; the table and timings are printed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from qtc.atomic import save_json

SCHEMA = "qtc.bench.qat_vs_ptq/1"
BITS = {"w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4), "w2a8": (2, 8)}
DEFAULT_MODELS = ("digits_cnn", "ts_cnn", "policy_head")
DEFAULT_BITS = ("w4a4", "w2a8")
DEFAULT_RECIPE = {"epochs": 8, "lr": 3e-3}
RECIPES = {"policy_head": {"epochs": 50, "lr": 1e-3}}  # see the module docstring: chosen on the training split
QAT_DATA = {"training": "the model's training split with its labels (x_train, y_train from "
                        "models.<name>.make_data(seed in meta.json), the float checkpoint's training data)",
            "calibration": "the calibration split (x_calib), no labels: distillation from the float model"}


def len_train(rep: dict, model: str, a) -> int:
    """How many samples QAT trained on."""
    if a.qat_train_data == "training":
        return rep["quant_dataset"].get("qat_train", {}).get("samples")
    return rep["quant_dataset"]["calibration"][model]


def recipe(model: str, a) -> dict:
    """The QAT schedule for ``model``: its recipe, with any --qat-epochs / --qat-lr given on the command line."""
    r = dict(RECIPES.get(model, DEFAULT_RECIPE))
    if a.qat_epochs is not None:
        r["epochs"] = a.qat_epochs
    if a.qat_lr is not None:
        r["lr"] = a.qat_lr
    return r


def run_case(model: str, bits: str, a) -> dict:
    from qtc.dualtrack import parse_config, run_dualtrack

    wbits, abits = BITS[bits]
    sched = recipe(model, a)
    doc = {"model": model, "models_dir": a.models_dir, "target": a.target, "tracks": ["ptq", "qat"],
           "weight_bits": wbits, "activation_bits": abits,
           "ptq": {"methods": ["minmax", "percentile", "entropy", "mse"], "weight_methods": ["minmax", "mse"],
                   "adaround": a.adaround_iters > 0,
                   "adaround_iters": max(a.adaround_iters, 1)},
           "qat": {"epochs": sched["epochs"], "lr": sched["lr"], "quant_lr": a.qat_quant_lr,
                   "distill_alpha": a.qat_distill_alpha, "batch_size": a.qat_batch_size,
                   "train_data": a.qat_train_data, "per_feature_input": a.qat_per_feature_input},
           "budgets": {k: None for k in ("model_bytes", "latency_ms", "accuracy_drop", "flash_bytes", "ram_bytes")},
           "bench": {"enabled": False}, "seed": a.seed, "output": str(Path(a.work) / f"{model}_{bits}")}
    cfg = parse_config(doc)
    t0 = time.perf_counter()
    rep = run_dualtrack(cfg, echo=lambda s: None)
    seconds = time.perf_counter() - t0
    by = {c["name"]: c for c in rep["candidates"]}
    ptq, qat = by.get("ptq"), by.get("qat")
    row = {"model": model, "bits": bits, "float": rep["float"]["metrics"]["accuracy"],
           "ptq": None if ptq is None else ptq["metrics"]["accuracy"],
           "ptq_setting": None if ptq is None else ptq["setting"],
           "ptq_search": [{"method": r["method"], "weight_method": r["weight_method"], "adaround": r["adaround"],
                           "accuracy": r["metrics"]["accuracy"]}
                          for r in rep["ptq_search"]],
           "qat": None if qat is None else qat["metrics"]["accuracy"],
           "qat_schedule": sched,
           "qat_history": None if qat is None else qat.get("history"),
           "n_eval": rep["float"]["metrics"]["n_eval"],
           "n_calib": rep["quant_dataset"]["calibration"][model],
           "n_qat_train": None if qat is None else len_train(rep, model, a),
           "skipped": rep["skipped"]}
    print(f"  {model} {bits}: float {row['float']:.4f}, PTQ {row['ptq']:.4f} ({row['ptq_setting']}), "
          f"QAT {row['qat']:.4f}  ({seconds:.1f} s)", flush=True)
    return row


def table(rows: list[dict]) -> str:
    head = f"{'model':<12}{'bits':<7}{'float':>8}{'PTQ (best)':>12}{'QAT':>8}{'QAT-PTQ':>9}  best PTQ setting"
    lines = [head, "-" * len(head)]
    for r in rows:
        diff = (r["qat"] - r["ptq"]) if (r["qat"] is not None and r["ptq"] is not None) else None
        lines.append(f"{r['model']:<12}{r['bits'].upper():<7}{r['float']:>8.4f}{r['ptq'] or float('nan'):>12.4f}"
                     f"{r['qat'] or float('nan'):>8.4f}{diff if diff is not None else float('nan'):>+9.4f}  "
                     f"{r['ptq_setting']}")
    return "\n".join(lines)


def _pfi(v: str):
    v = v.lower()
    if v not in ("auto", "true", "false"):
        raise argparse.ArgumentTypeError("use auto, true or false")
    return v if v == "auto" else v == "true"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--bits", default=",".join(DEFAULT_BITS), help=f"some of {', '.join(BITS)}")
    ap.add_argument("--models-dir", default="build/models")
    ap.add_argument("--target", default="host")
    ap.add_argument("--qat-epochs", type=int, default=None, help="all models (default: each model's recipe)")
    ap.add_argument("--qat-lr", type=float, default=None, help="all models (default: each model's recipe)")
    ap.add_argument("--qat-quant-lr", type=float, default=1e-2, help="the LSQ step sizes' learning rate")
    ap.add_argument("--qat-distill-alpha", type=float, default=0.0, help="0 = labels only, 1 = distillation only")
    ap.add_argument("--qat-batch-size", type=int, default=64)
    ap.add_argument("--qat-train-data", default="training", choices=("training", "calibration"),
                    help="what QAT trains on: the labelled training split, or the unlabelled calibration split")
    ap.add_argument("--qat-per-feature-input", default="auto", type=_pfi, metavar="auto|true|false",
                    help="learned per-feature params for inputs read only by FullyConnected layers")
    ap.add_argument("--adaround-iters", type=int, default=1000, help="0 = no AdaRound")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="build/bench/qat_vs_ptq", help="the dual-track runs' output folders")
    ap.add_argument("--out", default="bench/results/qat_vs_ptq.json")
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    bits = [b for b in a.bits.split(",") if b]
    for b in bits:
        if b not in BITS:
            ap.error(f"unknown bit width {b!r}; use some of {', '.join(BITS)}")
    print(f"qat_vs_ptq: {', '.join(models)} at {', '.join(b.upper() for b in bits)}, target {a.target}, "
          f"QAT on the {a.qat_train_data} split, per-feature inputs {a.qat_per_feature_input}", flush=True)
    rows = [run_case(m, b, a) for m in models for b in bits]
    doc = {"schema": SCHEMA, "target": a.target, "seed": a.seed,
           "settings": {"qat_recipes": {m: recipe(m, a) for m in models}, "qat_quant_lr": a.qat_quant_lr,
                        "qat_per_feature_input": a.qat_per_feature_input,
                        "qat_distill_alpha": a.qat_distill_alpha, "qat_batch_size": a.qat_batch_size,
                        "qat_train_data": a.qat_train_data,
                        "adaround_iters": a.adaround_iters, "ptq_methods": ["minmax", "percentile", "entropy", "mse"],
                        "ptq_weight_methods": ["minmax", "mse"],
                        "qat_data": QAT_DATA[a.qat_train_data],
                        "qat_init": "LSQ step sizes initialised by PTQ (mse) on the calibration split (x_calib)",
                        "qat_selection": "the last epoch's model; the eval split is never used to select",
                        "eval": "the eval split (x_eval, y_eval), accuracy on qtc's integer interpreter; "
                                "it only scores"},
           "rows": rows}
    save_json(a.out, doc)
    print()
    print(table(rows))
    print(f"\nwrote {a.out}")
    return doc


if __name__ == "__main__":
    main()
