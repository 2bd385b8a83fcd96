"""Target constraints: what the quantizer produces on each target, and what 'qtc check' reports."""
from __future__ import annotations

import numpy as np
import pytest

from qtc.ir import Graph
from qtc.ir.validate import infer_shapes
from qtc.passes.quantize import check, quantize, spec_for
from qtc.passes.quantize.params import is_pot, pot_ceil
from qtc.passes.quantize import QuantizeWarning


def conv_graph(cout: int = 8, seed: int = 0) -> Graph:
    """x[1,4,8,8] NCHW -> conv cout 3x3 relu -> depthwise 3x3 -> GlobalAvgPool -> flatten -> fc 5."""
    rng = np.random.default_rng(seed)
    g = Graph(name="convnet")
    g.add_tensor("x", (1, 4, 8, 8))
    g.add_const("c1/w", rng.normal(0, 0.3, (cout, 3, 3, 4)).astype(np.float32))
    g.add_const("c1/b", rng.normal(0, 0.1, (cout,)).astype(np.float32))
    g.add_const("dw/w", rng.normal(0, 0.3, (cout, 3, 3, 1)).astype(np.float32))
    g.add_const("dw/b", rng.normal(0, 0.1, (cout,)).astype(np.float32))
    g.add_const("fc/w", rng.normal(0, 0.3, (5, cout)).astype(np.float32))
    g.add_const("fc/b", rng.normal(0, 0.1, (5,)).astype(np.float32))
    g.add_node("Conv2D", ["x", "c1/w", "c1/b"], ["c1:0"], name="c1", pads=[1, 1, 1, 1], activation="relu")
    g.add_node("Conv2D", ["c1:0", "dw/w", "dw/b"], ["dw:0"], name="dw", pads=[1, 1, 1, 1], groups=cout)
    g.add_node("GlobalAvgPool", ["dw:0"], ["gap:0"], name="gap")
    g.add_node("Flatten", ["gap:0"], ["flat:0"], name="flatten", axis=1)
    g.add_node("FullyConnected", ["flat:0", "fc/w", "fc/b"], ["y"], name="fc")
    g.inputs, g.outputs = ["x"], ["y"]
    return infer_shapes(g)


@pytest.fixture(scope="module")
def calib():
    return {"x": np.random.default_rng(1).normal(0, 1, (32, 4, 8, 8)).astype(np.float32)}


def _scales(q: Graph):
    return {n: t.quant.scale for n, t in q.tensors.items() if t.quant is not None}


@pytest.mark.parametrize("target", ["ti-npu", "esp-dl", "esp-dl-s3"])
def test_power_of_two_targets_give_exact_powers_of_two(calib, target):
    q = quantize(conv_graph(), calib, target=target, progress=False)
    scales = _scales(q)
    assert len(scales) >= 10
    for name, s in scales.items():
        m, _ = np.frexp(s.astype(np.float64))
        assert np.all(m == 0.5), (name, s)
    assert check(q, target) == []


@pytest.mark.parametrize("target", ["ti-npu", "esp-dl", "tensorrt"])
def test_symmetric_targets_have_zero_zero_points(calib, target):
    q = quantize(conv_graph(), calib, target=target, progress=False)
    for name, t in q.tensors.items():
        if t.quant is not None:
            assert np.all(t.quant.zero_point == 0), name
    assert check(q, target) == []


@pytest.mark.parametrize("target", ["esp32", "ti-npu", "esp-dl", "tensorrt", "rpi5"])
def test_bias_fits_target_width(calib, target):
    q = quantize(conv_graph(), calib, target=target, progress=False)
    bits = spec_for(target).bias_bits
    for node in q.nodes:
        if node.op in ("Conv2D", "FullyConnected") and len(node.inputs) > 2:
            b = q.tensors[node.inputs[2]]
            assert b.dtype == "int32"
            assert b.data.min() >= -(1 << (bits - 1)) and b.data.max() <= (1 << (bits - 1)) - 1


def test_per_channel_axis0_narrow_range(calib):
    q = quantize(conv_graph(), calib, target="esp32", progress=False)
    for node in q.nodes:
        if node.op in ("Conv2D", "FullyConnected"):
            w = q.tensors[node.inputs[1]]
            assert w.quant.axis == 0 and w.quant.scale.size == w.shape[0]
            assert w.quant.narrow_range and w.data.min() >= -127 and w.data.max() <= 127
            # each channel uses its full range: max |q| = 127 per output channel
            assert np.all(np.abs(w.data.reshape(w.shape[0], -1)).max(axis=1) == 127)
    qt = quantize(conv_graph(), calib, target="esp-dl", progress=False)  # per-tensor target
    assert all(qt.tensors[n.inputs[1]].quant.axis is None for n in qt.nodes if n.op == "Conv2D")


@pytest.mark.parametrize("wbits", [4, 2])
def test_sub_byte_weights_in_range_on_pot_target(calib, wbits):
    q = quantize(conv_graph(), calib, target="ti-npu", wbits=wbits, progress=False)
    qmax = (1 << (wbits - 1)) - 1
    for node in q.nodes:
        if node.op in ("Conv2D", "FullyConnected"):
            w = q.tensors[node.inputs[1]]
            assert w.quant.bits == wbits and w.data.min() >= -qmax and w.data.max() <= qmax
    assert spec_for("ti-npu", wbits=wbits).bias_bits == 16
    assert check(q, "ti-npu") == []


def test_check_reports_tflite_params_on_pot_target(calib):
    q = quantize(conv_graph(), calib, target="esp32", progress=False)
    assert check(q, "esp32") == []
    rules = {v.rule for v in check(q, "ti-npu")}
    assert {"power-of-two", "zero-point"} <= rules
    esp_dl = check(q, "esp-dl")
    assert any(v.rule == "per-channel" and v.node == "c1" for v in esp_dl)


def test_check_channel_multiple_and_ops(calib):
    q = quantize(conv_graph(cout=6), calib, target="ti-npu", progress=False)
    vs = check(q, "ti-npu")
    assert [(v.node, v.rule) for v in vs] == [("c1", "channels"), ("dw", "channels"), ("dw", "channels")]
    assert "6 output channels, not a multiple of 4" in vs[0].message
    g = conv_graph()
    g.add_node("Gelu", ["y"], ["z"], name="gelu")
    g.outputs = ["z"]
    g = infer_shapes(g)
    vs = check(quantize(g, calib, target="esp32", progress=False), "esp32")
    assert [(v.node, v.rule) for v in vs] == [("gelu", "op")]


def test_check_weight_range_and_bias_width(calib):
    q = quantize(conv_graph(), calib, target="ti-npu", wbits=4, progress=False)
    w = q.tensors["c1/w"]
    w.data = w.data.copy()
    w.data.flat[0] = 8  # outside [-7, 7]
    b = q.tensors["fc/b"]
    b.data = b.data.copy()
    b.data[0] = 1 << 20  # wider than the 16-bit bias for 4-bit weights
    vs = {(v.node, v.rule) for v in check(q, "ti-npu")}
    assert vs == {("c1", "weight-range"), ("fc", "bias-width")}


def test_bias_clipped_with_warning_and_metadata(calib):
    g = conv_graph()
    g.tensors["fc/b"].data = np.array([3000.0, 0, 0, 0, 0], np.float32)  # huge bias: > 20 bits at these scales
    with pytest.warns(QuantizeWarning, match="clipped"):
        q = quantize(g, calib, target="esp-dl-s3", progress=False)
    clipped = q.metadata["quantization"]["bias_clipped"]
    assert clipped == [{"node": "fc", "tensor": "fc/b", "count": 1, "bits": 20}]
    assert int(q.tensors["fc/b"].data[0]) == (1 << 19) - 1
    assert check(q, "esp-dl-s3") == []


def test_pot_helpers():
    s = np.array([0.3, 0.25, 1.0, 3e-5, 0.5000001])
    p = pot_ceil(s)
    assert np.all(is_pot(p)) and np.all(p >= s) and np.all(p < 2 * s)
    assert list(pot_ceil([0.25, 1.0])) == [0.25, 1.0]


def test_check_cli_exit_codes(tmp_path, calib):
    from click.testing import CliRunner

    from qtc.ir.serialize import save
    from qtc.quant_cli import check_cmd

    clean = save(quantize(conv_graph(), calib, target="ti-npu", progress=False), tmp_path / "ok.qir")
    bad = save(quantize(conv_graph(cout=6), calib, target="esp32", progress=False), tmp_path / "bad.qir")
    r = CliRunner().invoke(check_cmd, [str(clean), "--target", "ti-npu"])
    assert r.exit_code == 0 and "no violations" in r.output
    r = CliRunner().invoke(check_cmd, [str(bad), "--target", "ti-npu"])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.startswith(("c1:", "dw:", "fc:"))]
    assert any("[power-of-two]" in ln for ln in lines) and any("[channels]" in ln for ln in lines)
