"""Block reconstruction at a per-feature input (qtc.passes.quantize.block_recon)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.interp import run, run_quantized
from qtc.ir import Graph
from qtc.ir.boundary import input_params
from qtc.ir.serialize import save
from qtc.passes.quantize import check, quantize
from qtc.passes.quantize.collect import collect

torch = pytest.importorskip("torch")

SCALES = np.array([8.0, 2.0, 0.2, 0.02, 1.0, 0.5], dtype=np.float32)
OFFSETS = np.array([0.0, -0.5, 0.5, 0.01, 3.0, 0.0], dtype=np.float32)
ADA = {"iters": 300, "seed": 1, "block_scale_iters": 300, "block_iters": 600}


def _data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, 6)) * SCALES + OFFSETS).astype(np.float32)


def _chain(seed: int = 0) -> Graph:
    """x [1,6] -> FC 24 relu -> FC 8 relu -> FC 3 (the block: the first two with block_layers=2)."""
    rng = np.random.default_rng(seed)
    g = Graph(name="chain")
    g.add_tensor("x", (1, 6))
    dims = [(24, 6), (8, 24), (3, 8)]
    acts = ["relu", "relu", "none"]
    prev = "x"
    for i, ((o, k), act) in enumerate(zip(dims, acts), 1):
        w = rng.normal(size=(o, k)) / (SCALES[None, :] if i == 1 else np.sqrt(k))
        g.add_const(f"fc{i}/w", w.astype(np.float32))
        g.add_const(f"fc{i}/b", (rng.normal(size=o) * 0.2).astype(np.float32))
        out = "y" if i == 3 else f"h{i}"
        g.add_tensor(out, (1, o))
        g.add_node("FullyConnected", [prev, f"fc{i}/w", f"fc{i}/b"], [out], name=f"fc{i}", activation=act)
        prev = out
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def _q(g, calib, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize(g, {"x": calib}, target="host", progress=False, per_feature_input=True, wbits=4, **kw)


def _block_error(g: Graph, qg: Graph, x: np.ndarray) -> float:
    """Normalised error of the integer graph's block output (h2), through the interpreter, on rows ``x``."""
    f = collect(g, {"x": x}, ["h2"])["h2"].astype(np.float64)
    q = collect(qg, {"x": x}, ["h2"])["h2"].astype(np.float64)
    return float(np.mean(np.sum((q - f) ** 2, axis=1)) / np.mean(np.sum(f ** 2, axis=1)))


@pytest.fixture(scope="module")
def models():
    g, calib = _chain(), _data(512, 2)
    return g, calib, _q(g, calib, adaround={**ADA, "block": True}), _q(g, calib, adaround=ADA)


def test_block_applied_valid_integer_graph(models):
    g, calib, qb, _ = models
    assert not check(qb, "host")
    meta = qb.metadata["quantization"]
    blk, = meta["block_reconstruction"]
    assert blk["nodes"] == ["fc1", "fc2"] and blk["applied"] and not blk["kept_nearest"]
    assert blk["learned_input_params"] and blk["learned_weight_scales"] and blk["bias_clipped"] == 0
    assert blk["loss_block"] < blk["loss_nearest"]
    assert [r["node"] for r in meta["adaround"]["layers"]] == ["fc3"]  # the rest: layer-wise AdaRound
    assert meta["adaround"]["block"]["layers"] == 2
    for name in ("fc1", "fc2"):
        n = qb.node(name)
        w, b = qb.tensors[n.inputs[1]], qb.tensors[n.inputs[2]]
        assert w.dtype == "int8" and w.quant.bits == 4 and -7 <= w.data.min() and w.data.max() <= 7
        assert b.dtype == "int32" and np.abs(b.data.astype(np.int64)).max() < 2 ** 31
        np.testing.assert_allclose(b.quant.scale, np.float32(qb.tensors[n.inputs[0]].quant.scale[0]
                                                              * w.quant.scale.astype(np.float32)), rtol=1e-6)


def test_recorded_loss_is_the_interpreters(models):
    g, calib, qb, _ = models
    blk = qb.metadata["quantization"]["block_reconstruction"][0]
    assert _block_error(g, qb, calib) == pytest.approx(blk["loss_block"], rel=1e-5)
    # one sample at a time through run_quantized (the boundary's per-feature params) = the batched run
    got = np.concatenate([run_quantized(qb, {"x": x[None]})["y"] for x in calib[:32]])
    batched = collect(qb, {"x": calib[:32]}, ["y"])["y"]
    np.testing.assert_array_equal(got, batched)


def test_fc1_integers_are_what_the_graph_computes(models):
    """fc1's int8 output from the interpreter = requantized  s·s_j·(n·q) + bias  with q from the boundary params."""
    _, calib, qb, _ = models
    n = qb.node("fc1")
    w, b, o = qb.tensors[n.inputs[1]], qb.tensors[n.inputs[2]], qb.tensors[n.outputs[0]].quant
    bp = input_params(qb, "x")
    q = np.clip(np.sign(calib / bp.scale) * np.floor(np.abs(calib / bp.scale) + 0.5) + bp.zero_point, -128, 127)
    acc = q.astype(np.int64) @ w.data.astype(np.int64).T + b.data.astype(np.int64)
    real = acc * (float(qb.tensors[n.inputs[0]].quant.scale[0]) * w.quant.scale.astype(np.float64))
    ref = np.clip(np.floor(np.maximum(real, 0) / float(o.scale[0]) + 0.5) + int(o.zero_point[0]), o.qmin, o.qmax)
    raw = collect(qb, {"x": calib}, ["h1"])["h1"] / float(o.scale[0]) + int(o.zero_point[0])
    assert np.max(np.abs(np.round(raw) - ref)) <= 1  # fixed-point requantization vs float64: at most 1 LSB


def test_block_beats_layerwise_adaround(models):
    g, calib, qb, ql = models
    eb, el = _block_error(g, qb, calib), _block_error(g, ql, calib)
    assert eb <= el, (eb, el)
    ev = _data(400, 9)
    ref = np.concatenate([run(g, {"x": x[None]})["y"] for x in ev])

    def out_err(qg):
        y = collect(qg, {"x": ev}, ["y"])["y"]
        return float(np.mean((y - ref) ** 2))

    assert out_err(qb) < out_err(ql)  # held out too (0.0078 vs 0.0199 when written)


def test_deterministic(tmp_path):
    g, calib = _chain(), _data(256, 4)
    cfg = {**ADA, "block": True, "block_scale_iters": 100, "block_iters": 200, "iters": 50}
    a = save(_q(g, calib, adaround=cfg), tmp_path / "a.qir")
    b = save(_q(g, calib, adaround=cfg), tmp_path / "b.qir")
    for f in ("graph.json", "weights.npz"):
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_pot_target_per_tensor_weights_and_no_per_feature_input():
    g, calib = _chain(), _data(256, 4)
    cfg = {**ADA, "block": True, "block_scale_iters": 100, "block_iters": 200, "iters": 50}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize(g, {"x": calib}, target="ti-npu", progress=False, per_feature_input=True, adaround=cfg)
    blk, = q.metadata["quantization"]["block_reconstruction"]
    assert not blk["learned_input_params"] and not blk["learned_weight_scales"]
    rules = {v.rule for v in check(q, "ti-npu")}
    assert not rules & {"power-of-two", "weight-range", "zero-point", "bias-width"}, rules
    qt = _q(g, calib, adaround=cfg, per_channel=False)  # per-tensor weights: one learned scale
    assert qt.metadata["quantization"]["block_reconstruction"][0]["applied"]
    assert qt.tensors[qt.node("fc1").inputs[1]].quant.scale.size == 1 and not check(qt, "host")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q2 = quantize(g, {"x": calib}, progress=False, wbits=4, adaround=cfg)
    assert q2.metadata["quantization"]["block_reconstruction"] == []
    assert [r["node"] for r in q2.metadata["quantization"]["adaround"]["layers"]] == ["fc1", "fc2", "fc3"]


@pytest.mark.parametrize("bad", [{"block": True, "block_layers": 4}, {"block": True, "block_iters": -1},
                                 {"block": "yes"}, {"block": True, "block_tune_lr": 0},
                                 {"block": True, "block_layers": "2"}])
def test_bad_config(bad):
    g, calib = _chain(), _data(64, 4)
    with pytest.raises(QtcError, match="block"):
        _q(g, calib, adaround=bad)


def test_dynamic_mode_refused():
    g, calib = _chain(), _data(64, 4)
    with pytest.raises(QtcError, match="block reconstruction needs integer activations"):
        quantize(g, {"x": calib}, mode="dynamic", progress=False, adaround={"block": True})


def test_cli_block_reconstruction(tmp_path):
    from click.testing import CliRunner

    from qtc.cli import cli
    from qtc.ir import load

    def qtc(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    save(_chain(), tmp_path / "m.qir")
    np.save(tmp_path / "calib.npy", _data(256, 3)[:, None, :])
    res = qtc("quantize", tmp_path / "m.qir", "--calib", tmp_path / "calib.npy", "--wbits", "4", "--adaround",
              "--adaround-iters", "100", "--per-feature-input", "--block-reconstruction", "-o", tmp_path / "q.qir",
              "--quiet")
    assert res.exit_code == 0, res.output
    assert "block reconstruction at x: fc1, fc2" in res.stdout
    blk = load(tmp_path / "q.qir").metadata["quantization"]["block_reconstruction"]
    assert blk[0]["applied"] and blk[0]["nodes"] == ["fc1", "fc2"]
    for extra, msg in ((["--adaround"], "--per-feature-input"), (["--per-feature-input"], "need --adaround")):
        res = qtc("quantize", tmp_path / "m.qir", "--calib", tmp_path / "calib.npy", "--block-reconstruction",
                  *extra, "-o", tmp_path / "bad.qir")
        assert res.exit_code != 0 and msg in res.stderr and not (tmp_path / "bad.qir").exists()
