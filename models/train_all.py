"""Train every example model on the CPU and write its artifacts.

    python -m models.train_all --out DIR [--only NAME ...] [--seed N]

For each NAME, ``DIR/NAME/`` gets ``NAME.pt`` (state_dict), ``NAME.onnx``
(opset 17, batch 1), and for models with a tf_keras twin ``NAME.keras``,
``NAME_float.tflite`` and ``NAME_int8.tflite``; plus ``data.npz`` and
``meta.json``. The same seed gives byte-identical files. Each model's folder is
replaced atomically. Timings (wall and CPU seconds) go to stdout only: they are not deterministic.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from qtc.atomic import atomic_dir, save_bytes, save_json, save_npz
from qtc.errors import QtcError

from ._common import Trained, deterministic, onnx_bytes, param_count, state_dict_bytes, torch_predict
from .zoo import MODELS, spec


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _keras_artifacts(name: str, t: Trained) -> tuple[dict[str, bytes], dict]:
    from ._keras import (check_twin, import_tf, keras_bytes, keras_predict, tflite_float, tflite_int8,
                         tflite_predict)

    tf, keras = import_tf()
    keras.backend.clear_session()
    tf.random.set_seed(0)
    km = t.keras_builder(t.model)
    where = f"models/{name}"
    torch_out = torch_predict(t.model)(*[t.data[s.eval_key] for s in t.inputs])
    keras_out = keras_predict(km)(*[t.data[s.keras_meta()["eval_key"]] for s in t.inputs])
    twin_err = check_twin(torch_out, keras_out, where=where)
    calib = [t.data[s.keras_meta()["calib_key"]] for s in t.inputs]
    files = {f"{name}.keras": keras_bytes(km), f"{name}_float.tflite": tflite_float(km),
             f"{name}_int8.tflite": tflite_int8(km, calib)}
    meta = {
        "keras": {"inputs": [s.keras_meta() for s in t.inputs], "outputs": list(km.output_names),
                  "twin_max_abs_diff": twin_err},
        "metric_keras": _round(t.metric(keras_predict(km), keras=True)),
    }
    if len(t.inputs) == 1:
        meta["metric_tflite_float"] = _round(t.metric(tflite_predict(files[f"{name}_float.tflite"]), keras=True))
        meta["metric_tflite_int8"] = _round(t.metric(tflite_predict(files[f"{name}_int8.tflite"]), keras=True))
    return files, meta


def export(name: str, t: Trained, out: Path, seed: int) -> dict:
    """Write every artifact of one trained model into ``out/name`` (atomically). Returns its meta."""
    s = spec(name)
    files = {f"{name}.pt": state_dict_bytes(t.model),
             f"{name}.onnx": onnx_bytes(t.model, t.inputs, t.outputs, where=f"models/{name}")}
    meta = {
        "name": name, "task": t.task, "seed": seed,
        "class": s.class_path, "kwargs": s.kwargs, "params": param_count(t.model),
        "metric": t.metric_name,
        "metric_torch": _round(t.metric(torch_predict(t.model))),
        "inputs": [i.to_meta() for i in t.inputs], "outputs": t.outputs,
        "files": {},
    }
    if t.keras_builder is not None:
        kfiles, kmeta = _keras_artifacts(name, t)
        files.update(kfiles)
        meta.update(kmeta)
    files.update(t.extra_files)
    meta.update(t.extra_meta)
    meta["files"] = {"torch": f"{name}.pt", "onnx": f"{name}.onnx", "data": "data.npz"}
    if t.keras_builder is not None:
        meta["files"].update({"keras": f"{name}.keras", "tflite_float": f"{name}_float.tflite",
                              "tflite_int8": f"{name}_int8.tflite"})
    for extra in t.extra_files:
        meta["files"][extra.rsplit(".", 1)[0]] = extra
    with atomic_dir(out / name) as tmp:
        for fname, blob in files.items():
            save_bytes(tmp / fname, blob)
        save_npz(tmp / "data.npz", t.data)
        save_json(tmp / "meta.json", meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train_all", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output root; each model goes to OUT/NAME/")
    ap.add_argument("--only", nargs="+", metavar="NAME", help=f"train only these ({', '.join(MODELS)})")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = args.only or list(MODELS)
    try:
        for name in names:
            spec(name)
        print(f"{'model':<14}{'params':>8}  {'metric':<22}{'torch':>9}{'keras':>9}{'tfl-f32':>9}{'tfl-i8':>9}"
              f"{'train s':>9}{'total s':>9}{'cpu s':>8}", flush=True)
        for name in names:
            t0, c0 = time.perf_counter(), time.process_time()
            trained = spec(name).load_module().train(args.seed)
            t1 = time.perf_counter()
            with deterministic(args.seed):  # same threads for the metrics as in training
                meta = export(name, trained, args.out, args.seed)
            t2, c2 = time.perf_counter(), time.process_time()
            cells = [meta.get(k) for k in ("metric_torch", "metric_keras", "metric_tflite_float",
                                           "metric_tflite_int8")]
            cells = "".join(f"{c:>9.4f}" if c is not None else f"{'-':>9}" for c in cells)
            print(f"{name:<14}{meta['params']:>8}  {meta['metric']:<22}{cells}{t1 - t0:>9.1f}{t2 - t0:>9.1f}{c2 - c0:>8.1f}",
                  flush=True)
    except QtcError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
