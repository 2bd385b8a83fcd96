"""The C back end's QTC_RQ_MULH requantization (backends/c/requant_fit.py): the lower clamp
threshold and the step points are the reference's, the fitted one-multiply form equals
TFLite's MultiplyByQuantizedMultiplier + zero point + clamp on every accumulator a layer can
produce (Python model and the C kernel, both RV32 and branchless variants), and the small
fully-connected table kernel is bit-exact with the interpreter."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, load_sibling
from qtc.backends.c.requant_fit import (INT32_MAX, INT32_MIN, acc_bounds, check_mulh, eval_mulh, fit_mulh,
                                        step_points)
from qtc.interp.numerics import tflite as num

KERNELS = ROOT / "firmware" / "kernels"


def _ref(acc, mult, shift, out_zp, lo, hi):
    return np.clip(num.multiply_by_quantized_multiplier(np.asarray(acc, np.int64), mult, shift) + out_zp, lo, hi)


def _layer(rng, n=8, relu=True):
    """A random conv/FC layer as the code generator sees it: int8 weights (per-channel symmetric,
    each row reaching +-127), folded bias, multipliers of real scales < 0.5, ReLU-style clamp."""
    k = int(rng.integers(1, 25))
    w = rng.normal(0, 1, (n, k))
    w = np.round(w / np.abs(w).max(axis=1, keepdims=True) * 127).astype(np.int64)
    folded = rng.integers(-20000, 20000, n)
    reals = np.exp(rng.uniform(np.log(1e-4), np.log(2e-2), 1)) * rng.uniform(0.3, 1.0, n)
    mult, shift = num.quantize_multipliers(reals)
    out_zp = int(rng.integers(-128, 40))
    lo = out_zp if relu else -128
    hi = 127 if rng.random() < 0.7 else int(rng.integers(lo + 20, 128))  # relu6-style upper clamps too
    return folded, w, mult.astype(np.int64), shift.astype(np.int64), out_zp, lo, hi


# ------------------------------------------------------------ thresholds and steps
def test_lower_clamp_threshold_exact_for_every_int32_accumulator():
    """b[:, 0] = T: acc < T gives exactly act_min, acc >= T more, over all of int32 (edge values,
    both sides of T, random accumulators)."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        real = float(np.exp(rng.uniform(np.log(1e-6), np.log(0.49))))
        (mult,), (shift,) = num.quantize_multipliers(np.array([real]))
        out_zp = int(rng.integers(-128, 128))
        lo = int(rng.integers(-128, 127)) if rng.random() < 0.3 else out_zp
        (t,) = step_points(num, np.array([mult]), np.array([shift]), out_zp, lo, lo + 1,
                           np.array([INT32_MIN]), np.array([INT32_MAX]))[:, 0]
        edges = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX, *range(t - 3, t + 4)]
        acc = np.array([a for a in edges if INT32_MIN <= a <= INT32_MAX] +
                       list(rng.integers(INT32_MIN, INT32_MAX, 200, endpoint=True)) +
                       list(t + rng.integers(-5000, 5000, 200)), np.int64)
        acc = acc[(acc >= INT32_MIN) & (acc <= INT32_MAX)]
        clamped = _ref(acc, int(mult), int(shift), out_zp, lo, 127) == lo
        np.testing.assert_array_equal(clamped, acc < t, err_msg=f"M={mult} shift={shift} zp={out_zp} lo={lo}")


def test_step_points_brute_force():
    """Every step point is the first accumulator of its output value (whole range scanned)."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        folded, w, mult, shift, out_zp, lo, hi = _layer(rng, n=3)
        acc_lo, acc_hi = acc_bounds(folded, w)
        b = step_points(num, mult, shift, out_zp, lo, hi, acc_lo, acc_hi)
        for c in range(3):
            accs = np.arange(acc_lo[c], acc_hi[c] + 1)
            y = num.multiply_by_quantized_multiplier(accs, int(mult[c]), int(shift[c])) + out_zp
            want = [accs[0] + int(np.argmax(y >= v)) if np.any(y >= v) else acc_hi[c] + 1
                    for v in range(lo + 1, hi + 1)]
            np.testing.assert_array_equal(b[c], want)


# ------------------------------------------------------------------- the fit
def test_fit_equals_reference_on_every_accumulator():
    """fit_mulh on random ReLU-style layers: every output of the fitted form, over the whole
    accumulator range of each channel, equals the reference; the fit uses L >= 8."""
    rng = np.random.default_rng(5)
    fitted = 0
    for _ in range(24):
        folded, w, mult, shift, out_zp, lo, hi = _layer(rng)
        fit = fit_mulh(num, folded, w, mult, shift, out_zp, lo, hi)
        if fit is None:
            continue
        fitted += 1
        assert 8 <= fit.lsh <= 16 and 0 <= fit.rsh < 32
        assert np.all((fit.mult > 0) & (fit.mult <= INT32_MAX)) and np.all(np.abs(fit.bias) <= INT32_MAX)
        acc_lo, acc_hi = acc_bounds(folded, w)
        for c in range(len(folded)):
            accs = np.arange(acc_lo[c], acc_hi[c] + 1)
            z = (accs - folded[c]) * (1 << fit.lsh) + fit.bias[c]
            assert np.all((z >= INT32_MIN) & (z <= INT32_MAX))
            np.testing.assert_array_equal(eval_mulh(fit, c, accs, int(folded[c]), lo, hi),
                                          _ref(accs, int(mult[c]), int(shift[c]), out_zp, lo, hi))
    assert fitted >= 20  # the usual ReLU layer fits


def test_check_rejects_a_wrong_fit_and_unclamped_layers_do_not_fit():
    rng = np.random.default_rng(6)
    folded, w, mult, shift, out_zp, lo, hi = _layer(rng)
    fit = fit_mulh(num, folded, w, mult, shift, out_zp, lo, hi)
    assert fit is not None and check_mulh(num, fit, folded, w, mult, shift, out_zp, lo, hi)
    fit.bias[3] += 1 << fit.lsh  # one accumulator unit off: some step moves
    assert not check_mulh(num, fit, folded, w, mult, shift, out_zp, lo, hi)
    # a full-range output (no ReLU) rounds half away from zero on both sides of the zero point
    folded, w, mult, shift, out_zp, lo, hi = _layer(np.random.default_rng(7), relu=False)
    assert lo < out_zp and fit_mulh(num, folded, w, mult, shift, -20, -128, 127) is None


# ------------------------------------------------------------- the C kernel
RQ_PUT_HARNESS = r"""
#include <stdio.h>
#include "qtc_kernels_conv.h"
/* stdin: lines "acc bias mult rq lo hi"; stdout: the byte qtc_rq_put stores */
int main(void)
{
    long acc, bias, mult, rq, lo, hi;
    while (scanf("%ld %ld %ld %ld %ld %ld", &acc, &bias, &mult, &rq, &lo, &hi) == 6) {
        qtc_rq_t q;
        int8_t y = 0;
        q.bias = (int32_t)bias;
        q.mult = (int32_t)mult;
        q.add = 0;
        q.shift = 0;
        qtc_rq_put(&y, (int32_t)acc, &q, (int)rq, (int32_t)lo, (int32_t)hi);
        printf("%d\n", (int)y);
    }
    return 0;
}
"""


@pytest.mark.parametrize("skip", [0, 1], ids=["branchless", "rv32-skip"])
def test_c_mulh_requantization_matches_tflite(tmp_path, skip):
    """qtc_rq_put in QTC_RQ_MULH (accumulator without the bias, L > 0; and with it, L = 0 as
    the table kernel runs it) against the reference on both sides of every step point, the
    range ends and random accumulators; UBSan on."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    from qtc.backends.c.lower_conv import RQ_MULH, rq_code

    exe = tmp_path / "rq"
    (tmp_path / "rq.c").write_text(RQ_PUT_HARNESS)
    subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-DQTC_RQ_SKIP_CLAMPED={skip}",
                    "-fsanitize=undefined", "-fno-sanitize-recover=all", "-I", str(KERNELS),
                    str(tmp_path / "rq.c"), "-o", str(exe)], check=True)
    rng = np.random.default_rng(8)
    rows, want = [], []
    for _ in range(8):
        folded, w, mult, shift, out_zp, lo, hi = _layer(rng)
        fit = fit_mulh(num, folded, w, mult, shift, out_zp, lo, hi)
        if fit is None:
            continue
        acc_lo, acc_hi = acc_bounds(folded, w)
        b = step_points(num, mult, shift, out_zp, lo, hi, acc_lo, acc_hi)
        for c in range(len(folded)):
            accs = np.concatenate([b[c], b[c] - 1, [acc_lo[c], acc_hi[c]],
                                   rng.integers(acc_lo[c], acc_hi[c] + 1, 200)])
            accs = accs[(accs >= acc_lo[c]) & (accs <= acc_hi[c])]
            ref = _ref(accs, int(mult[c]), int(shift[c]), out_zp, lo, hi)
            acc0 = accs - folded[c]
            z = acc0 * (1 << fit.lsh) + fit.bias[c]
            rows += [f"{a} {fit.bias[c]} {fit.mult[c]} {rq_code(RQ_MULH, fit.lsh, fit.rsh)} {lo} {hi}" for a in acc0]
            rows += [f"{a} 0 {fit.mult[c]} {rq_code(RQ_MULH, 0, fit.rsh)} {lo} {hi}" for a in z]
            want += [ref, ref]
    assert len(want) > 50
    res = subprocess.run([str(exe)], input="\n".join(rows) + "\n", capture_output=True, text=True, check=True)
    np.testing.assert_array_equal(np.array([int(v) for v in res.stdout.split()]), np.concatenate(want))


# -------------------------------------------------- generated C, end to end
def _small_k_graph(name: str, rows: int, out_f: int):
    bc = load_sibling("test_backend_c")
    b = bc.FloatBuilder(name, (1, rows, 6), seed=31)
    h = b.fc("x", out_f, activation="relu")                # K = 6: the table kernel
    h = b.fc(h, 9, activation="relu")                       # K = out_f: blocks of 4, QTC_RQ_MULH
    return bc.ptq(b.done(b.fc(h, 5)), bc.calib_inputs(b.g))  # no ReLU: keeps the merged fast form


@pytest.mark.parametrize("skip", [0, 1], ids=["branchless", "rv32-skip"])
def test_small_k_fully_connected_bit_exact(tmp_path, skip):
    """A 6-input ReLU FC (the fitted table kernel: rows > 1, an output count with a tail) and the
    layers after it, host gcc with UBSan, against the interpreter on 100 random inputs."""
    bc = load_sibling("test_backend_c")
    flags = [f"-DQTC_RQ_SKIP_CLAMPED={skip}", "-fsanitize=undefined", "-fno-sanitize-recover=all"]
    for g in (_small_k_graph("fc6x37", 3, 37), _small_k_graph("fc6x64", 1, 64)):
        info, exe = bc.compile_and_build(g, tmp_path, f"{g.name}_{skip}", extra_flags=flags)
        src = Path(info["model_c"]).read_text()
        assert src.count("qtc_fc_table_s8(&") == 1 and src.count("QTC_RQ_MULH") >= 2
        assert "QTC_RQ_FAST" in src  # the last layer, not clamped at its zero point
        bc.assert_bit_exact(g, exe)


@pytest.mark.parametrize("name", ["cnn", "variants"])
def test_rv32_skip_variant_bit_exact(tmp_path, name):
    """The corner-case graphs with the RV32 form of QTC_RQ_MULH (clamped outputs branch past the
    multiply), built on the host with UBSan: conv, 1x1, few-tap, grouped, depthwise and FC paths."""
    bc = load_sibling("test_backend_c")
    g = {"cnn": bc.cnn_graph, "variants": bc.variants_graph}[name]()
    flags = ["-DQTC_RQ_SKIP_CLAMPED=1", "-fsanitize=undefined", "-fno-sanitize-recover=all"]
    info, exe = bc.compile_and_build(g, tmp_path, g.name, extra_flags=flags)
    assert "QTC_RQ_MULH" in Path(info["model_c"]).read_text()
    bc.assert_bit_exact(g, exe)
