"""Bit-exactness of qtc's integer interpreter against TFLM and LiteRT's reference kernels.

Each Keras model of test_frontend_keras.py is converted to a full-int8 .tflite
by TF's converter (representative dataset, TFLITE_BUILTINS_INT8, int8 I/O),
imported with load_tflite and run on 100 inputs:

* TFLM (the MCU runtime; qtc's numerics are TFLM's): outputs equal bit for bit;
* LiteRT BUILTIN_REF: op by op, every qtc op fed LiteRT's own inputs gives
  LiteRT's output bit for bit; end to end equal when the model has no
  FULLY_CONNECTED (LiteRT's reference FC requantizes in double, TFLM does not:
  those FC outputs are checked against that double formula instead);
* LiteRT optimized (no delegate) and XNNPACK: LSB differences printed only.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf_keras")
pytest.importorskip("ai_edge_litert")

from qtc.eval.runtimes import compare_bitexact, compare_layerwise, format_layerwise, format_report  # noqa: E402
from qtc.frontends.tflite import load_tflite  # noqa: E402
from conftest import load_sibling  # noqa: E402

N_SAMPLES = 100




kc = load_sibling("test_frontend_keras")
ft = load_sibling("test_frontend_tflite")


def _has_tflm() -> bool:
    return importlib.util.find_spec("tflite_micro") is not None


def _has_fc(g) -> bool:
    return any(n.op == "FullyConnected" for n in g.nodes)


def assert_exact(report: dict, name: str, rt: str, min_samples: int = N_SAMPLES) -> None:
    assert report["samples"] >= min_samples
    per_out = report["runtimes"][rt]
    assert "error" not in per_out, f"{name}: {rt}: {per_out.get('error')}"
    for out, s in per_out.items():
        assert "shape_mismatch" not in s, f"{name}: {rt} {out}: {s}"
        assert s["exact_samples"] == s["samples"] and s["max_lsb_diff"] == 0, \
            f"{name}: {rt} {out}: {s['exact_samples']}/{s['samples']} exact, max diff {s['max_lsb_diff']} LSB"


def assert_layerwise_exact(g, blob: bytes, xs, name: str, skip_ops: tuple[str, ...] = ()) -> dict:
    lw = compare_layerwise(g, blob, xs)
    print(f"[{name}] op by op vs LiteRT BUILTIN_REF:\n" + format_layerwise(lw))
    assert lw, f"{name}: no node could be compared"
    bad = {k: r for k, r in lw.items() if r["max_lsb_diff"] != 0 and r["op"] not in skip_ops}
    assert not bad, f"{name}: ops that differ from LiteRT BUILTIN_REF: {bad}"
    return lw


def check_model(g, blob: bytes, xs: list[np.ndarray], name: str, tflm: str = "exact",
                skip_layerwise: tuple[str, ...] = (), min_samples: int = N_SAMPLES) -> dict:
    """The bit-exact contract; ``tflm`` is "exact", "exact_if_loads" or "record"."""
    report = compare_bitexact(g, blob, xs)
    print(f"\n[{name}] " + format_report(report))
    if _has_tflm() and tflm != "record":
        loaded = "error" not in report["runtimes"]["tflm"]
        if tflm == "exact" or loaded:
            assert_exact(report, name, "tflm", min_samples)
    if not skip_layerwise:  # LiteRT BUILTIN_REF vs qtc's 'litert_ref' numerics (its double-rescale FC)
        assert_exact(report, name, "litert_ref", min_samples)
    assert_layerwise_exact(g, blob, xs, name, skip_layerwise)
    for rt in ("litert_builtin", "litert_xnnpack"):  # recorded, not asserted
        assert rt in report["runtimes"]
    return report


@pytest.mark.parametrize("name", sorted(kc.KERAS_MODELS))
def test_bitexact_keras_int8(name):
    model = kc.KERAS_MODELS[name]()
    calib = kc.sample_inputs(model, 64, seed=11)
    blob = ft.convert(model, int8=True, calib=calib)
    g = load_tflite(blob, name=name)
    assert g.is_quantized
    x = kc.sample_inputs(model, N_SAMPLES, seed=12) * 1.2  # a little beyond the calibration range
    check_model(g, blob, [x], name)


# TFLM has no GELU kernel (attention): exact if it ever loads.  LiteRT's reference
# SUM on int8 returns wrong values for this model (TFLM and qtc agree with the
# float result), so ReduceSum is left out of the LiteRT op-by-op check for misc.
OP_COVERAGE = {"attention": ("exact_if_loads", ()), "image": ("exact", ()), "misc": ("exact", ("ReduceSum",))}


@pytest.mark.parametrize("name", sorted(OP_COVERAGE))
def test_bitexact_op_coverage_int8(name):
    fn = ft.TF_FUNCTIONS[name]()
    blob = ft.convert(fn, int8=True, calib=ft.fn_samples(fn, 64, seed=21))
    g = load_tflite(blob, name=name)
    tflm, skip = OP_COVERAGE[name]
    check_model(g, blob, [ft.fn_samples(fn, N_SAMPLES, seed=22)], name, tflm=tflm, skip_layerwise=skip)


def test_bitexact_dilated_conv1d():
    """Dilated Conv1D (fused SPACE_TO_BATCH_ND chain): exact vs LiteRT; TFLM's 3-D
    SPACE_TO_BATCH_ND/BATCH_TO_SPACE_ND give wrong values here, so TFLM is only recorded."""
    model = kc.build_dilated_conv1d()
    blob = ft.convert(model, int8=True, calib=kc.sample_inputs(model, 64, seed=11))
    g = load_tflite(blob, name="dilated_conv1d")
    check_model(g, blob, [kc.sample_inputs(model, N_SAMPLES, seed=12)], "dilated_conv1d", tflm="record")


def test_bitexact_int16_activations():
    """16x8 quantization (int16 activations, int8 weights)."""
    model = kc.build_functional()
    blob = ft.convert(model, int16=True, calib=kc.sample_inputs(model, 64, seed=11))
    g = load_tflite(blob, name="functional_16x8")
    assert g.tensors[g.inputs[0]].dtype == "int16"
    check_model(g, blob, [kc.sample_inputs(model, N_SAMPLES, seed=12)], "functional_16x8")


def test_bitexact_float_io_int8():
    """Int8 body with float I/O (converter-inserted QUANTIZE/DEQUANTIZE): float outputs identical to TFLM's."""
    import tensorflow as tf

    model = kc.build_functional()
    calib = kc.sample_inputs(model, 64, seed=1)
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([s[None]] for s in calib)
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    blob = c.convert()
    g = load_tflite(blob)
    assert g.nodes[0].op == "Quantize" and g.nodes[-1].op == "Dequantize"
    rep = compare_bitexact(g, blob, [kc.sample_inputs(model, N_SAMPLES, seed=2) * 1.3], runtimes=("tflm",))
    print("\n[float_io] " + format_report(rep))
    if _has_tflm():
        s = rep["runtimes"]["tflm"][g.outputs[0]]
        assert s["exact_samples"] == s["samples"] == N_SAMPLES and s["max_abs_diff"] == 0.0


def test_bitexact_report_counts_mismatches():
    """The comparison must see a difference when qtc's graph is perturbed (the check can fail)."""
    model = kc.build_mlp()
    blob = ft.convert(model, int8=True, calib=kc.sample_inputs(model, 32, seed=1))
    g = load_tflite(blob)
    fc = next(n for n in g.nodes if n.op == "FullyConnected")
    w = g.tensors[fc.inputs[1]]
    w.data = np.clip(w.data.astype(np.int64) + 3, -127, 127).astype(np.int8)
    rep = compare_bitexact(g, blob, [kc.sample_inputs(model, 20, seed=2)], runtimes=("litert_ref",))
    s = rep["runtimes"]["litert_ref"][g.outputs[0]]
    assert s["exact_samples"] < s["samples"] and s["max_lsb_diff"] > 0


EXAMPLE_MODELS = ("digits_cnn", "ts_cnn", "peer_encoder", "policy_head")


def _example_dir(request) -> Path | None:
    try:
        d = request.getfixturevalue("example_models_dir")
    except pytest.FixtureLookupError:
        d = Path(__file__).resolve().parents[1] / "build" / "models"
    return Path(d) if d is not None and Path(d).is_dir() else None


def _eval_inputs(folder: Path, name: str) -> list[np.ndarray]:
    data = np.load(folder / "data.npz")
    keys = ["x_eval"]
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        ins = meta.get("keras", {}).get("inputs") or []
        if ins and all("eval_key" in i for i in ins):
            keys = [i["eval_key"] for i in ins]
    return [np.asarray(data[k])[:N_SAMPLES] for k in keys]


@pytest.mark.slow
def test_bitexact_example_models(request):
    root = _example_dir(request)
    if root is None:
        pytest.skip("example models are not built (run 'make models')")
    folders = sorted(p for p in root.iterdir() if (p / f"{p.name}_int8.tflite").exists() and (p / "data.npz").exists())
    if not folders:
        pytest.skip(f"no <name>/<name>_int8.tflite + data.npz under {root}")
    for folder in folders:
        name = folder.name
        blob = (folder / f"{name}_int8.tflite").read_bytes()
        g = load_tflite(blob, name=name)
        xs = _eval_inputs(folder, name)
        tflm = "exact" if name in EXAMPLE_MODELS else "exact_if_loads"
        check_model(g, blob, xs, name, tflm=tflm, min_samples=min(N_SAMPLES, len(xs[0])))
