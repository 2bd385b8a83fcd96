"""Per-feature input params (qtc.passes.quantize.input_features) and the boundary they set."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.interp import run, run_quantized
from qtc.ir import Graph
from qtc.ir.boundary import META_KEY, input_params, per_feature
from qtc.passes.quantize import quantize
from qtc.passes.quantize.input_features import eligible, feature_params, inner_scale

# features on very different scales: metres, m/s, a radius in [0.3, 0.7], a flag-like value
SCALES = np.array([8.0, 2.0, 0.2, 0.02], dtype=np.float32)
OFFSETS = np.array([0.0, -0.5, 0.5, 0.01], dtype=np.float32)


def _data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, 4)) * SCALES + OFFSETS).astype(np.float32)


def _mlp(seed: int = 0) -> Graph:
    """x [1,4] -> FC 16 relu -> FC 3; fc1 weights undo the feature scales (every feature matters)."""
    rng = np.random.default_rng(seed)
    g = Graph(name="mlp")
    g.add_tensor("x", (1, 4))
    g.add_const("fc1/w", (rng.normal(size=(16, 4)) / SCALES[None, :]).astype(np.float32))
    g.add_const("fc1/b", rng.normal(size=16).astype(np.float32) * 0.1)
    g.add_const("fc2/w", rng.normal(size=(3, 16)).astype(np.float32) * 0.3)
    g.add_const("fc2/b", np.zeros(3, np.float32))
    g.add_tensor("h", (1, 16))
    g.add_tensor("y", (1, 3))
    g.add_node("FullyConnected", ["x", "fc1/w", "fc1/b"], ["h"], name="fc1", activation="relu")
    g.add_node("FullyConnected", ["h", "fc2/w", "fc2/b"], ["y"], name="fc2")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def _q(g, calib, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize(g, {"x": calib}, target="host", progress=False, **kw)


def _float_out(g, xs):
    return np.concatenate([run(g, {"x": x[None]})["y"] for x in xs])


def _quant_out(qg, xs):
    return np.concatenate([run_quantized(qg, {"x": x[None]})["y"] for x in xs])


def test_feature_params_cover_each_range():
    x = _data(500, 1)
    scale, zp = feature_params(x, 8, power_of_two=False)
    lo, hi = x.min(0), x.max(0)
    np.testing.assert_allclose(scale, (hi - lo) / 255.0, rtol=1e-6)
    q = np.round(x / scale) + zp
    assert q.min() >= -128 and q.max() <= 127
    assert (q.min(0) <= -127).all() and (q.max(0) >= 126).all()  # each feature uses the whole int8 range
    s_pot, _ = feature_params(x, 8, power_of_two=True)
    m, _e = np.frexp(s_pot)
    assert (m == 0.5).all() and (s_pot >= scale).all()


def test_per_feature_input_is_exact_and_more_accurate():
    g, calib, ev = _mlp(), _data(512, 2), _data(300, 3)
    ref = _float_out(g, ev)
    plain = _q(g, calib)
    pf = _q(g, calib, per_feature_input=True)
    assert not per_feature(plain, "x") and per_feature(pf, "x")
    # the graph's own input tensor: per-tensor (2^-7, 0); the user's input: one scale/zero point per feature
    t = pf.tensors["x"]
    assert t.quant.scale.tolist() == [inner_scale(8)] and t.quant.zero_point.tolist() == [0]
    bq = input_params(pf, "x")
    assert bq.axis == -1 and bq.scale.size == 4
    assert pf.metadata["quantization"]["per_feature_input"] == {"x": {"features": 4, "inner_scale": 2 ** -7}}
    # the integers entering the graph are the per-feature quantization of the raw input
    env = run_quantized(pf, {"x": ev[:1]}, raw=True, keep=True)
    np.testing.assert_array_equal(env["x"], bq.quantize(ev[:1]))
    err_plain = np.abs(_quant_out(plain, ev) - ref).mean()
    err_pf = np.abs(_quant_out(pf, ev) - ref).mean()
    assert err_pf < 0.5 * err_plain, (err_pf, err_plain)


def test_auto_applies_only_where_it_can():
    from conftest import make_float_graph

    g = make_float_graph()
    assert "Conv2D" in (eligible(g, "x") or "")
    calib = np.random.default_rng(0).normal(size=(16, *g.tensors["x"].shape[1:])).astype(np.float32)
    qg = quantize(g, {"x": calib}, target="host", progress=False, per_feature_input="auto")
    assert META_KEY not in qg.metadata and qg.metadata["quantization"]["per_feature_input"] is None
    with pytest.raises(QtcError, match="FullyConnected"):
        quantize(g, {"x": calib}, target="host", progress=False, per_feature_input=True)


def test_int16_input_and_float_layers_refused():
    g, calib = _mlp(), _data(64, 4)
    with pytest.raises(QtcError, match="int16 or read by a float layer"):
        _q(g, calib, per_feature_input=True, mode="mixed", keep_float=["fc1"])
    qg = _q(g, calib, per_feature_input="auto", mode="mixed", int16=["x", "=fc1"])
    assert META_KEY not in qg.metadata


def test_power_of_two_target_keeps_its_rules():
    from qtc.passes.quantize.constraints import check

    g, calib = _mlp(), _data(256, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qg = quantize(g, {"x": calib}, target="esp-dl", progress=False, per_feature_input=True)
    assert check(qg, "esp-dl") == []
    m, _e = np.frexp(input_params(qg, "x").scale)
    assert (m == 0.5).all()


def test_qir_and_tflite_round_trips_keep_the_input_params(tmp_path):
    from qtc.backends.tflite import compile_tflite, tflite_bytes
    from qtc.eval.runtimes import compare_bitexact
    from qtc.frontends.tflite import load_tflite
    from qtc.ir import load, save

    qg = _q(_mlp(), _data(256, 6), per_feature_input=True)
    save(qg, tmp_path / "m.qir")
    back = load(tmp_path / "m.qir")
    assert back.metadata[META_KEY] == qg.metadata[META_KEY]
    compile_tflite(qg, tmp_path / "m.tflite")
    tg = load_tflite(str(tmp_path / "m.tflite"))
    assert tg.metadata[META_KEY] == qg.metadata[META_KEY]
    # float samples are quantized per feature for both sides; the runtimes agree bit for bit
    rep = compare_bitexact(qg, (tmp_path / "m.tflite").read_bytes(), [_data(20, 7)],
                           runtimes=("tflm", "litert_ref"))
    for rt, res in rep["runtimes"].items():
        assert "error" not in res, (rt, res)
        assert all(s["exact_samples"] == rep["samples"] for s in res.values()), (rt, res)
    with pytest.raises(QtcError, match="per-feature"):
        tflite_bytes(qg, io_dtype="float32")


C_MAIN = r"""
#include <math.h>
#include <stdio.h>
#include "qtc_pfi.h"
/* float rows on stdin -> quantized per feature with the header's params -> int8 outputs on stdout */
int main(void) {
    static const float s[] = QTC_PFI_INPUT_FEATURE_SCALES;
    static const int z[] = QTC_PFI_INPUT_FEATURE_ZERO_POINTS;
    float x[QTC_PFI_INPUT_FEATURES];
    int8_t q[QTC_PFI_INPUT_BYTES], y[QTC_PFI_OUTPUT_BYTES];
    while (fread(x, sizeof x, 1, stdin) == 1) {
        for (int i = 0; i < QTC_PFI_INPUT_FEATURES; i++) {
            long v = (long)roundf(x[i] / s[i]) + z[i];
            q[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
        if (qtc_pfi_invoke(q, y) != 0) return 1;
        fwrite(y, 1, sizeof y, stdout);
    }
    return 0;
}
"""


def test_c_header_gives_the_per_feature_params(tmp_path):
    import shutil
    import subprocess

    from qtc.backends.c import compile_c

    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    qg = _q(_mlp(), _data(256, 8), per_feature_input=True)
    info = compile_c(qg, tmp_path / "c", model_name="pfi")
    header = (tmp_path / "c" / "qtc_pfi.h").read_text()
    assert "#define QTC_PFI_INPUT_PER_FEATURE 1" in header and "#define QTC_PFI_INPUT_FEATURES 4" in header
    main = tmp_path / "main.c"
    main.write_text(C_MAIN)
    exe = tmp_path / "pfi"
    res = subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Werror", "-I", info["dir"], str(main),
                          *info["sources"], "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    xs = _data(50, 9)
    out = subprocess.run([str(exe)], input=xs.tobytes(), capture_output=True, timeout=60)
    assert out.returncode == 0
    got = np.frombuffer(out.stdout, dtype=np.int8).reshape(50, 3)
    want = np.concatenate([run_quantized(qg, {"x": x[None]}, raw=True)["y"] for x in xs])
    np.testing.assert_array_equal(got, want)


def test_layer_wbits_mixed_weights(tmp_path):
    """fc1 at 8-bit weights, fc2 at 4: ranges, bias widths per layer, metadata, .tflite exact with TFLM."""
    from qtc.backends.tflite import compile_tflite
    from qtc.eval.runtimes import compare_bitexact
    from qtc.passes.quantize.constraints import check

    g, calib = _mlp(), _data(256, 10)
    qg = _q(g, calib, wbits=4, layer_wbits={"fc1": 8}, per_channel=False)  # TFLM: INT4 FC per-tensor only
    w1, w2 = (qg.tensors[n.inputs[1]] for n in qg.nodes if n.op == "FullyConnected")
    assert (w1.quant.bits, w2.quant.bits) == (8, 4)
    assert np.abs(w1.data).max() > 7 and np.abs(w2.data).max() <= 7
    assert qg.metadata["quantization"]["layer_wbits"] == {"fc1": 8}
    assert check(qg, "host") == []
    compile_tflite(qg, tmp_path / "m.tflite")
    rep = compare_bitexact(qg, (tmp_path / "m.tflite").read_bytes(), [_data(20, 11)], runtimes=("tflm",))
    assert all(s["exact_samples"] == rep["samples"] for s in rep["runtimes"]["tflm"].values()), rep
    # TI NPU: 24-bit bias at 8-bit weights, 16-bit at 4-bit (targets/ti-npu.yaml): each layer gets its own
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq = quantize(g, {"x": calib}, target="ti-npu", progress=False, wbits=4, layer_wbits={"fc1": 8})
    assert check(tq, "ti-npu") == []
    with pytest.raises(QtcError, match="matches no node"):
        _q(g, calib, layer_wbits={"nope": 8})
    with pytest.raises(QtcError, match="matches no weight layer"):
        _q(g, calib, layer_wbits={"x": 8})  # the graph input: a name, but no weight layer
    with pytest.raises(QtcError, match="8, 4 or 2"):
        _q(g, calib, layer_wbits={"fc1": 3})


def test_cli_quantize_and_run_with_per_feature_params(tmp_path):
    from click.testing import CliRunner

    from qtc.cli import cli
    from qtc.ir import load, save

    def qtc(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    save(_mlp(), tmp_path / "m.qir")
    np.save(tmp_path / "calib.npy", _data(256, 12)[:, None, :])
    x = _data(1, 13)
    np.save(tmp_path / "x.npy", x)
    res = qtc("quantize", tmp_path / "m.qir", "--calib", tmp_path / "calib.npy", "--per-feature-input",
              "--wbits", "4", "--layer-wbits", "fc1=8", "-o", tmp_path / "q.qir", "--quiet")
    assert res.exit_code == 0, res.output
    assert "per-feature params for 4 features" in res.stdout and "fc1=8" in res.stdout
    qg = load(tmp_path / "q.qir")
    res = qtc("run", tmp_path / "q.qir", "--input", tmp_path / "x.npy", "--integer", "--raw", "-o", tmp_path / "y.npy")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), run_quantized(qg, {"x": x}, raw=True)["y"])
    res = qtc("quantize", tmp_path / "m.qir", "--calib", tmp_path / "calib.npy", "--layer-wbits", "fc1",
              "-o", tmp_path / "bad.qir")
    assert res.exit_code != 0 and "NAME=BITS" in res.stderr and not (tmp_path / "bad.qir").exists()


def test_auto_keeps_the_lower_calibration_error():
    g, calib = _mlp(), _data(256, 14)
    for kw in ({"wbits": 8}, {"wbits": 2}):
        qg = _q(g, calib, per_feature_input="auto", **kw)
        pc = qg.metadata["quantization"]["per_feature_choice"]
        assert set(pc["error"]) == {"per_feature", "per_tensor"}
        assert pc["chosen"] == min(pc["error"], key=pc["error"].get)
        assert per_feature(qg, "x") == (pc["chosen"] == "per_feature")
    # at 8 bits the mixed-scale input is what costs: per-feature wins here
    assert _q(g, calib, per_feature_input="auto").metadata["quantization"]["per_feature_choice"]["chosen"] \
        == "per_feature"
