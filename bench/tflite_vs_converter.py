"""qtc's .tflite writer against TF's TFLite converter, from the same float Keras model and data.

    python -m bench.tflite_vs_converter [--models digits_cnn,ts_cnn,peer_encoder,policy_head]
                                        [--models-dir build/models] [--eval-count N]
                                        [--out bench/results/tflite_vs_converter.json]

For each model (built by ``python -m models.train_all --out build/models``):

* ``tf-converter``: ``<name>_int8.tflite`` that train_all wrote with TF's
  converter (full int8, int8 I/O, representative dataset = every Keras-layout
  calibration sample, in order);
* ``qtc``: the float ``<name>.keras`` imported by qtc's Keras front end,
  ``qtc.passes.quantize.quantize`` (min-max, per-channel weights) on the same
  calibration samples, written by ``compile_tflite`` (int8 I/O).

Columns: flatbuffer bytes, weight bytes, op count, the TFLM arena measured by
TFLM itself (smallest ``arena_size`` that allocates and invokes), the metric
with each file run through LiteRT's reference kernels (the same scorer as
``bench.ptq_vs_peers``: top-1 accuracy, peer_encoder's Deep Sets pair action
accuracy), and for qtc's file whether TFLM matches qtc's interpreter bit for
bit on the first samples.  The JSON (sorted keys, no timings) goes to ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from qtc.errors import QtcError

DEFAULT_MODELS = ("digits_cnn", "ts_cnn", "peer_encoder", "policy_head")
SCHEMA = "qtc.bench.tflite_vs_converter/1"
BITEXACT_SAMPLES = 100


def litert_predict(blob: bytes):
    """Float samples → float outputs through LiteRT BUILTIN_REF (int8 I/O (de)quantized with the file's params)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_REF, num_threads=1)
    it.allocate_tensors()
    ind, outd = it.get_input_details()[0], it.get_output_details()[0]

    def predict(x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(len(x)):
            xi = np.asarray(x[i:i + 1], dtype=np.float32).reshape(ind["shape"])
            scale, zp = ind["quantization"]
            if np.issubdtype(ind["dtype"], np.integer):
                info = np.iinfo(ind["dtype"])
                xi = np.clip(np.sign(xi / scale) * np.floor(np.abs(xi / scale) + 0.5) + zp, info.min, info.max)
            it.set_tensor(ind["index"], xi.astype(ind["dtype"]))
            it.invoke()
            y = np.array(it.get_tensor(outd["index"]))
            oscale, ozp = outd["quantization"]
            outs.append((y.astype(np.float32) - ozp) * oscale if np.issubdtype(y.dtype, np.integer) else y)
        return np.concatenate(outs).astype(np.float32)

    return predict


def qtc_tflite(case) -> tuple[bytes, object]:
    """Keras float model → qtc quantize (same calibration samples) → compile_tflite; (bytes, quantized graph)."""
    from qtc.backends.tflite import build
    from qtc.frontends.keras import load_keras
    from qtc.passes.quantize import quantize

    g = load_keras(case.keras)
    qg = quantize(g, {g.inputs[0]: case.calib_keras}, method="minmax", progress=False)
    data, _ = build(qg)
    return data, qg


def describe(blob: bytes, case) -> dict:
    from qtc.backends.tflite.size import measure_arena, model_stats

    st = model_stats(blob)
    row = {"flatbuffer_bytes": st["flatbuffer_bytes"], "weight_bytes": st["weight_bytes"], "ops": st["ops"],
           "op_counts": st["op_counts"], "misaligned_buffers": len(st["misaligned_buffers"])}
    try:
        row.update({k: v for k, v in measure_arena(blob).items()})
    except QtcError as exc:
        row["arena_error"] = exc.line()
    row.update(case.score(litert_predict(blob), True))
    return row


def bitexact(blob: bytes, qg, case) -> dict:
    from qtc.eval.runtimes import compare_bitexact

    rep = compare_bitexact(qg, blob, [case.x_eval_keras[:BITEXACT_SAMPLES]], runtimes=("litert_ref", "tflm"))
    out = {}
    for rt, per in rep["runtimes"].items():
        if "error" in per:
            out[rt] = per["error"]
            continue
        s = next(iter(per.values()))
        out[rt] = f"{s['exact_samples']}/{s['samples']}"
    return out


def run_model(name: str, models_dir: Path, eval_count: int | None) -> dict:
    from bench.ptq_vs_peers import load_case

    case = load_case(name, models_dir, None, eval_count)
    if case.keras is None:
        raise QtcError(f"{name} has no Keras twin", where="bench", hint="pick a model with a .keras file")
    conv_path = case.dir / case.meta["files"]["tflite_int8"]
    theirs = conv_path.read_bytes()
    ours, qg = qtc_tflite(case)
    res = {"tf-converter": describe(theirs, case), "qtc": describe(ours, case)}
    res["qtc"]["bitexact_vs_qtc_interpreter"] = bitexact(ours, qg, case)
    return {"metric": case.metric, "float_keras": case.meta.get("metric_keras"), "results": res,
            "notes": case.notes}


def format_table(doc: dict) -> str:
    head = (f"{'model':<14}{'file':<14}{'bytes':>9}{'weights':>9}{'ops':>5}{'arena':>9}{'rec.total':>10}"
            f"{'metric':>9}  {'bit-exact (ref/tflm)':<20}")
    lines = [head, "-" * len(head)]
    for m, r in doc["models"].items():
        if "error" in r:
            lines.append(f"{m:<14}error: {r['error']}")
            continue
        for label, row in r["results"].items():
            metric = row.get(r["metric"])
            be = row.get("bitexact_vs_qtc_interpreter")
            be = f"{be.get('litert_ref')}, {be.get('tflm')}" if be else "-"
            lines.append(f"{m:<14}{label:<14}{row['flatbuffer_bytes']:>9,}{row['weight_bytes']:>9,}{row['ops']:>5}"
                         f"{row.get('arena_bytes', 0):>9,}{row.get('recorded_total', 0):>10,}"
                         f"{metric if metric is not None else float('nan'):>9.4f}  {be:<20}")
        lines.append(f"{'':<14}{'float keras':<14}{'':>51}{r['float_keras'] or float('nan'):>9.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from qtc.atomic import save_json

    ap = argparse.ArgumentParser(prog="python -m bench.tflite_vs_converter", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--models-dir", type=Path, default=Path("build/models"))
    ap.add_argument("--eval-count", type=int, default=None, help="score on the first N eval samples only")
    ap.add_argument("--out", type=Path, default=Path("bench/results/tflite_vs_converter.json"))
    args = ap.parse_args(argv)
    doc = {"schema": SCHEMA, "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        try:
            doc["models"][name] = run_model(name, args.models_dir, args.eval_count)
        except QtcError as exc:
            doc["models"][name] = {"error": exc.line()}
    print(format_table(doc))
    save_json(args.out, doc)
    print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in doc["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
