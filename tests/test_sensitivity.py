"""Per-layer sensitivity ranking, the greedy high-precision proposal, and the
`qtc sensitivity` / `qtc quantize --apply-proposal` round trip, on a digits MLP
whose middle layer is made deliberately sensitive."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.ir import Graph
from qtc.ir.serialize import load, save
from qtc.ir.validate import infer_shapes
from qtc.passes.quantize import quantize
from qtc.passes.quantize.collect import collect
from qtc.passes.quantize.sensitivity import propose, rank_layers, sqnr_db, top1
from qtc.passes.quantize.mixed import make_proposal, write_proposal


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target
    perm = np.random.default_rng(0).permutation(len(x))
    return x[perm], y[perm]


@pytest.fixture(scope="module")
def model(data):
    """x[1,64] -> fc0 32 relu -> fc1 16 relu -> fc2 10, trained with sklearn (about a second).

    fc0 gets one extra hidden unit that is always 0 (zero weights, bias -1, ReLU);
    fc1 reads it through a column of weight 500.  The float model is unchanged,
    but every fc1 output channel's weight range now holds that outlier, so int8
    weights round fc1's real weights to almost nothing: fc1 is the sensitive layer.
    """
    from sklearn.neural_network import MLPClassifier

    x, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: accuracy is checked instead
        clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=300, random_state=0).fit(x[:1200], y[:1200])
    (w0, w1, w2), (b0, b1, b2) = clf.coefs_, clf.intercepts_
    w0 = np.concatenate([w0.T, np.zeros((1, 64))])
    b0 = np.concatenate([b0, [-1.0]])
    w1 = np.concatenate([w1.T, np.full((16, 1), 500.0)], axis=1)
    g = Graph(name="digits_mlp3")
    g.add_tensor("x", (1, 64))
    for name, w, b in (("fc0", w0, b0), ("fc1", w1, b1), ("fc2", w2.T, b2)):
        g.add_const(f"{name}/w", w.astype(np.float32))
        g.add_const(f"{name}/b", b.astype(np.float32))
    g.add_node("FullyConnected", ["x", "fc0/w", "fc0/b"], ["h0"], name="fc0", activation="relu")
    g.add_node("FullyConnected", ["h0", "fc1/w", "fc1/b"], ["h1"], name="fc1", activation="relu")
    g.add_node("FullyConnected", ["h1", "fc2/w", "fc2/b"], ["logits"], name="fc2")
    g.inputs, g.outputs = ["x"], ["logits"]
    return infer_shapes(g)


def test_ranking_finds_the_sensitive_layer(model, data):
    x, _ = data
    calib = {"x": x[:200]}
    cg, ranking = rank_layers(model, calib, progress=False)
    print("ranking:", [(r["layer"], r["sqnr_db"]) for r in ranking])
    assert [r["rank"] for r in ranking] == [1, 2, 3]
    assert ranking[0]["layer"] == "fc1" and ranking[0]["op"] == "FullyConnected" and ranking[0]["params"] == 16 * 33
    assert ranking[0]["sqnr_db"] < 10.0 and all(r["sqnr_db"] > 25.0 for r in ranking[1:])
    # the measured SQNR is the model's with only that layer quantized
    only = quantize(cg, calib, mode="mixed", keep_float=["=fc0", "=fc2"], canonicalize=False, progress=False)
    assert [n.name for n in only.nodes if n.op != "Quantize" and only.tensors[n.outputs[0]].dtype == "int8"] == ["fc1"]
    ref = collect(cg, calib, ["logits"])
    assert abs(sqnr_db(ref, collect(only, calib, ["logits"])) - ranking[0]["sqnr_db"]) < 1e-2


def test_greedy_proposal_meets_budgets(model, data):
    x, y = data
    calib, ev = {"x": x[:200]}, {"x": x[1200:]}
    cg, ranking = rank_layers(model, calib, progress=False)
    plan = propose(cg, calib, ranking, budget_sqnr=25.0, progress=False)
    assert plan["met"] and plan["layers"] == ["fc1"] and plan["keep_float"] == ["=fc1"]
    assert plan["steps"][0]["value"] < 25.0 <= plan["steps"][1]["value"]
    fa = top1(cg, ev, y[1200:])
    plan = propose(cg, calib, ranking, budget_drop=0.01, eval_data=ev, labels=y[1200:], progress=False)
    assert plan["met"] and plan["layers"] == ["fc1"] and plan["budget"]["float_accuracy"] == round(fa, 6)
    assert fa - plan["steps"][-1]["value"] <= 0.01 and fa - plan["steps"][0]["value"] > 0.01
    i16 = propose(cg, calib, ranking, budget_sqnr=1000.0, precision="int16", progress=False)
    assert not i16["met"] and i16["layers"] == ["fc1", "fc2", "fc0"]  # unreachable budget: every layer tried
    assert i16["int16"][:2] == ["=fc1", "=h0"]
    with pytest.raises(QtcError, match="exactly one budget"):
        propose(cg, calib, ranking, progress=False)
    with pytest.raises(QtcError, match="evaluation set"):
        propose(cg, calib, ranking, budget_drop=0.01, progress=False)


def test_sensitivity_cli_and_apply_proposal(model, data, tmp_path):
    from click.testing import CliRunner

    from qtc.quant_cli import calibrate_cmd, quantize_cmd, sensitivity_cmd

    x, y = data
    np.savez(tmp_path / "digits.npz", x=x, labels=y)
    mpath = save(model, tmp_path / "m.qir")
    runner = CliRunner()
    r = runner.invoke(calibrate_cmd, [str(mpath), "--data", str(tmp_path / "digits.npz"), "--calib-count", "200",
                                      "--eval-count", "400", "-o", str(tmp_path / "d"), "--quiet"])
    assert r.exit_code == 0, r.output
    prop = tmp_path / "proposal.json"
    r = runner.invoke(sensitivity_cmd, [str(mpath), "--calib", str(tmp_path / "d"), "--budget-drop", "1%",
                                        "--eval", str(tmp_path / "d"), "-o", str(prop), "--quiet"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["rank", "layer", "op", "SQNR", "dB", "params"]
    assert lines[1].split()[:3] == ["1", "fc1", "FullyConnected"]
    assert "budget met: keep 1 layer(s) at float: ['fc1']" in r.output
    p = json.loads(prop.read_text())
    assert p["format"] == "qtc-precision-proposal/1" and p["keep_float"] == ["=fc1"] and p["met"] is True
    assert p["settings"]["target"] == "host" and p["calibration"]["samples"] == 200
    out = tmp_path / "q.qir"
    r = runner.invoke(quantize_cmd, [str(mpath), "--calib", str(tmp_path / "d"), "--apply-proposal", str(prop),
                                     "-o", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    q = load(out)
    meta = q.metadata["quantization"]
    assert meta["mode"] == "mixed" and [f["node"] for f in meta["float_nodes"]] == ["fc1"]
    ev = {"x": np.load(tmp_path / "d" / "quant_eval_x.npy")}
    labels = np.load(tmp_path / "d" / "quant_eval_labels.npy")
    assert top1(q, ev, labels) >= top1(model, ev, labels) - 0.01
    # settings that differ from the proposal's are flagged
    r = runner.invoke(quantize_cmd, [str(mpath), "--calib", str(tmp_path / "d"), "--apply-proposal", str(prop),
                                     "--wbits", "4", "-o", str(tmp_path / "q4.qir"), "--quiet"])
    assert r.exit_code == 0 and "measured with other settings (wbits: proposal 8, now 4)" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = runner.invoke(quantize_cmd, [str(mpath), "--calib", str(tmp_path / "d"), "--apply-proposal", str(bad),
                                     "-o", str(tmp_path / "x.qir")])
    assert r.exit_code != 0 and isinstance(r.exception, QtcError)


def test_w8_proposal_gives_mixed_weight_bits(data, tmp_path):
    """At 4-bit weights, 'high precision' = 8-bit weights: the proposal names layers, quantize applies them."""
    from click.testing import CliRunner

    from qtc.quant_cli import quantize_cmd

    x, _ = data
    calib = {"x": x[:200]}
    rng = np.random.default_rng(3)
    g = Graph(name="mlp2")  # no outlier here: 8-bit weights fix what 2-bit weights break
    g.add_tensor("x", (1, 64))
    g.add_const("fc0/w", rng.normal(0, 0.3, (32, 64)).astype(np.float32))
    g.add_const("fc1/w", rng.normal(0, 0.3, (10, 32)).astype(np.float32))
    g.add_node("FullyConnected", ["x", "fc0/w"], ["h0"], name="fc0", activation="relu")
    g.add_node("FullyConnected", ["h0", "fc1/w"], ["logits"], name="fc1")
    g.inputs, g.outputs = ["x"], ["logits"]
    infer_shapes(g)
    model = g
    cg, ranking = rank_layers(model, calib, wbits=4, progress=False)
    plan = propose(cg, calib, ranking, budget_sqnr=18.0, precision="w8", wbits=4, progress=False)
    assert plan["met"] and plan["layers"] and plan["keep_float"] == [] and plan["int16"] == []
    assert plan["layer_wbits"] == {f"={name}": 8 for name in plan["layers"]}
    assert plan["steps"][0]["value"] < 18.0 <= plan["steps"][-1]["value"] and len(plan["layers"]) == 1
    prop = tmp_path / "p.json"
    write_proposal(prop, make_proposal(cg.name, {"wbits": 4}, {}, ranking, plan))
    np.save(tmp_path / "calib.npy", calib["x"])
    mpath = save(model, tmp_path / "m.qir")
    r = CliRunner().invoke(quantize_cmd, [str(mpath), "--calib", str(tmp_path / "calib.npy"), "--wbits", "4",
                                          "--apply-proposal", str(prop), "-o", str(tmp_path / "q.qir"), "--quiet"])
    assert r.exit_code == 0, r.output
    q = load(tmp_path / "q.qir")
    bits = {n.name: q.tensors[n.inputs[1]].quant.bits for n in q.nodes if n.op == "FullyConnected"}
    assert {k for k, b in bits.items() if b == 8} == set(plan["layers"]) and 4 in bits.values()
    from qtc.quant_cli import sensitivity_cmd

    r = CliRunner().invoke(sensitivity_cmd, [str(mpath), "--calib", str(tmp_path / "calib.npy"), "--precision", "w8",
                                             "--budget-sqnr", "18", "--quiet"])
    assert r.exit_code != 0 and isinstance(r.exception, QtcError) and "already has 8-bit weights" in str(r.exception)
