"""bench/c_vs_tflm: the bench runs end to end and its JSON has every field; and the
specialised conv/FC kernel paths it measures are bit-exact.

The smoke test does not assert the bench's ratios (those are results, see
bench/results/c_vs_tflm.json); it checks that every figure is there and that
qtc's outputs equal TFLM's.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

MODELS_DIR = Path(os.environ.get("QTC_MODELS_DIR", ROOT / "build" / "models"))


def _need_tools():
    for tool in ("gcc", "valgrind", "riscv64-unknown-elf-gcc", "qemu-system-riscv32", "objdump", "readelf"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make sysdeps)")
    pytest.importorskip("tflite_micro")


def test_bench_runs_and_json_has_every_field(tmp_path):
    _need_tools()
    if not (MODELS_DIR / "peer_encoder" / "peer_encoder_int8.tflite").exists():
        pytest.skip("build/models/peer_encoder not built (make models)")
    from bench import c_vs_tflm

    out = tmp_path / "c_vs_tflm.json"
    assert c_vs_tflm.main(["--models", "peer_encoder", "--models-dir", str(MODELS_DIR), "--vectors", "2",
                           "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == c_vs_tflm.SCHEMA and doc["opt"] == "-O2" and set(doc["targets"]) == set(c_vs_tflm.TARGETS)
    assert set(doc["tools"]) == {"gcc", "riscv_gcc", "valgrind", "tflite_micro"}
    (r,) = doc["models"]
    assert r["model"] == "peer_encoder" and r["outputs_equal"] is True and r["macs"] == 6 * 64 + 64 * 32
    for key in ("qtc_instructions", "tflm_instructions", "ratio"):
        assert r["host"][key] > 0
    assert r["rv32"]["instructions"] > 0 and r["rv32"]["instructions_per_mac"] > 0 and r["rv32"]["stack_bytes"] > 0
    layers = r["rv32"]["layers"]
    assert [row["op"] for row in layers] == ["FullyConnected", "FullyConnected"]
    assert all(row["instructions"] > 0 and row["instructions_per_mac"] > 0 for row in layers)
    assert r["rv32"]["max_layer_instructions_per_mac"] == max(row["instructions_per_mac"] for row in layers)
    assert sum(row["instructions"] for row in layers) <= r["rv32"]["instructions"] * 1.01
    ram = r["ram"]
    assert ram["qtc_bytes"] == ram["qtc_arena_bytes"] + ram["qtc_scratch_bytes"] and ram["tflm_arena_bytes"] > 0
    fl = r["flash"]
    assert fl["qtc_host"]["bytes"] == fl["qtc_host"]["text_bytes"] + fl["qtc_host"]["data_bytes"]
    assert fl["qtc_rv32"]["bytes"] > fl["qtc_weight_bytes"] > 0
    assert fl["tflm_bytes"] == fl["tflm_code_bytes"] + fl["tflm_flatbuffer_bytes"]
    assert fl["tflm_code"]["ops"] == ["FULLY_CONNECTED"] and not fl["tflm_code"]["ops_without_registration"]
    assert 0 < fl["tflm_code_bytes"] < fl["tflm_code"]["library_text_bytes"]
    assert set(r["meets_targets"]) == {"host_instructions", "rv32_layers", "ram", "flash"}


# ------------------------------------------------- the specialised kernel paths
def _exact_requant_last_layer(g) -> None:
    """Give the last layer the output scale s_in * max(s_w) / 0.75: its largest effective scale is
    0.75 (a shift of 0), so the code generator must use the exact two-step requantization."""
    from qtc.ir import QuantParams

    node = g.nodes[-1]
    s_in, s_w = float(g.tensors[node.inputs[0]].quant.scale[0]), g.tensors[node.inputs[1]].quant.scale
    t = g.tensors[node.outputs[0]]
    t.quant = QuantParams(np.float32(s_in * float(np.max(s_w)) / 0.75), int(t.quant.zero_point[0]))


def _graphs():
    from test_backend_c import FloatBuilder, calib_inputs, ptq

    def ws(name):  # few taps (weight-stationary) with padding, stride, dilation; 1x1 over 6 inputs; small FC
        b = FloatBuilder(name, (1, 7, 11, 1), seed=21)
        a = b.conv("x", 6, 3, pads=[1, 2, 1, 0], strides=[1, 2], dilations=[2, 1], activation="relu")
        a = b.conv(a, 5, 1, activation="relu6")
        r = b.op("Reshape", [a], shape=[-1, 5])
        return ptq(b.done(b.fc(r, 7)), calib_inputs(b.g))

    def c1(name):  # Conv1D with few taps and odd width, a strided Conv1D on blocks, FC blocks + tail
        b = FloatBuilder(name, (1, 13, 2), seed=22)
        c = b.conv("x", 9, 3, conv1d=True, pads=[2, 1], activation="relu")
        c = b.conv(c, 3, 2, conv1d=True, strides=[2])
        f = b.op("Reshape", [c], shape=[1, -1])
        return ptq(b.done(b.fc(f, 6, activation="relu")), calib_inputs(b.g))

    exact = ws("ws_exact")
    _exact_requant_last_layer(exact)
    return [ws("ws"), c1("c1"), exact]


def test_specialised_kernel_paths_bit_exact(tmp_path):
    """Weight-stationary conv (padded copy, stride, dilation, 1x1), small fully connected, both
    requantization forms: every output byte equals the interpreter's."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    from qtc.interp import run
    from test_backend_c import compile_and_build, random_int8, run_c

    for g in _graphs():
        info, exe = compile_and_build(g, tmp_path, g.name)
        src = Path(info["model_c"]).read_text()
        xs = random_int8(g, 40, seed=5)
        got = run_c(exe, g, xs)
        for x, y in zip(xs, got):
            np.testing.assert_array_equal(y, run(g, {g.inputs[0]: x})[g.outputs[0]], err_msg=g.name)
        assert len(np.unique(np.stack(got))) > 3, g.name
        if g.name.startswith("ws"):
            assert ".ws = 1" in src and info["scratch_bytes"] > 0
        assert ("QTC_RQ_EXACT" in src) == g.name.endswith("_exact"), g.name


RQ_HARNESS = r"""
#include <stdio.h>
#include "qtc_kernels_conv.h"
/* stdin: lines "acc bias mult add shift mode lo hi"; stdout: qtc_rq_s8(acc + bias, ...) */
int main(void)
{
    long acc, bias, mult, add, shift, mode, lo, hi;
    while (scanf("%ld %ld %ld %ld %ld %ld %ld %ld", &acc, &bias, &mult, &add, &shift, &mode, &lo, &hi) == 8) {
        qtc_rq_t q;
        q.bias = (int32_t)bias;
        q.mult = (int32_t)mult;
        q.add = (int32_t)add;
        q.shift = (int32_t)shift;
        printf("%d\n", (int)qtc_rq_s8((int32_t)(acc + bias), &q, (int)mode, (int32_t)lo, (int32_t)hi));
    }
    return 0;
}
"""


def test_requantization_modes_match_tflite(tmp_path):
    """qtc_rq_s8 in every mode the code generator picks equals TFLite's MultiplyByQuantizedMultiplier
    + zero point + clamp, on random accumulators up to the proven bound, small shifts (frequent ties)
    and exact ties included."""
    import subprocess

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    from qtc.backends.c.lower_conv import requant_records
    from qtc.interp.numerics import tflite as num

    exe = tmp_path / "rq"
    (tmp_path / "rq.c").write_text(RQ_HARNESS)
    kernels = ROOT / "firmware" / "kernels"
    subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", "-I", str(kernels), str(tmp_path / "rq.c"), "-o", str(exe)],
                   check=True)
    rng = np.random.default_rng(1)
    rows, want, modes = [], [], set()
    for _ in range(60):
        n = 4
        reals = np.exp(rng.uniform(np.log(2e-5), np.log(3.0), n))  # shifts from -15 to +2
        mult, shift = num.quantize_multipliers(reals)
        mult, shift = mult.astype(np.int64), shift.astype(np.int64)
        out_zp = int(rng.integers(-128, 128))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        if rng.random() < 0.5:
            lo = out_zp  # ReLU-style
        w = rng.integers(-127, 128, (n, int(rng.integers(1, 300))))
        bias = rng.integers(-(1 << 16), 1 << 16, n)
        rec, mode = requant_records(bias, w, mult, shift, out_zp, lo)
        modes.add(mode)
        bound = np.abs(bias) + 128 * np.abs(w).sum(axis=1)
        for c in range(n):
            accs = rng.integers(-bound[c], bound[c] + 1, 400)
            r = int(rec[c, 3]) if mode else 0
            if mode and r >= 1:  # exact ties of the second rounding: s = (2k + 1) * 2^(r-1)
                s1 = (2 * rng.integers(-200, 200, 50) + 1) << (r - 1)
                accs = np.concatenate([accs, np.clip(s1 * (1 << 31) // max(int(mult[c]), 1), -bound[c], bound[c])])
            accs = np.concatenate([accs, [0, -1, 1, -bound[c], bound[c]]]) - bias[c]
            ref = num.multiply_by_quantized_multiplier(accs + bias[c], int(mult[c]), int(shift[c])) + out_zp
            want.append(np.clip(ref, lo, hi))
            rows += [f"{a} {rec[c, 0]} {rec[c, 1]} {rec[c, 2]} {rec[c, 3]} {mode} {lo} {hi}" for a in accs]
    assert modes == {0, 1, 2}
    res = subprocess.run([str(exe)], input="\n".join(rows) + "\n", capture_output=True, text=True, check=True)
    got = np.array([int(v) for v in res.stdout.split()])
    np.testing.assert_array_equal(got, np.concatenate(want))
