"""IR unit tests: lossless save/load, deterministic bytes, validation, summary numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_float_graph, quantize_graph

from qtc.errors import ModelFormatError, UnsupportedOpError, ValidationError
from qtc.ir import Graph, QuantParams, load, save, validate
from qtc.ir.summary import activation_peak, summarize


def _with_4bit(g: Graph) -> Graph:
    """Make enc/conv1's weights 4-bit (int8 storage, values in [-8, 7]) with per-channel params."""
    w = g.tensors["enc/conv1/w"]
    rng = np.random.default_rng(3)
    w.data = rng.integers(-8, 8, w.shape).astype(np.int8)
    w.dtype = "int8"
    w.quant = QuantParams(np.float32([0.011, 0.07, 0.5, 1e-3]), 0, axis=0, bits=4, narrow_range=False,
                          symmetric=True, power_of_two=False)
    return g


@pytest.fixture
def rich_graph(calib_batch) -> Graph:
    g = quantize_graph(make_float_graph(), calib_batch)
    g = _with_4bit(g)
    g.metadata = {"source_file": "tiny.onnx", "choices": {"calib": [1, 2.5, "minmax"]}}
    return g


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _assert_same_graph(a: Graph, b: Graph):
    assert (a.name, a.inputs, a.outputs, a.metadata) == (b.name, b.inputs, b.outputs, b.metadata)
    assert list(a.tensors) == list(b.tensors)
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        assert (ta.shape, ta.dtype) == (tb.shape, tb.dtype), name
        if ta.data is None:
            assert tb.data is None
        else:
            assert ta.data.dtype == tb.data.dtype and ta.data.tobytes() == tb.data.tobytes(), name
        if ta.quant is None:
            assert tb.quant is None
        else:
            assert ta.quant.equals(tb.quant), name
            assert ta.quant.scale.dtype == np.float32 and tb.quant.scale.tobytes() == ta.quant.scale.tobytes()
            assert tb.quant.zero_point.dtype == np.int64
    assert [(n.op, n.name, n.inputs, n.outputs, n.attrs) for n in a.nodes] == \
           [(n.op, n.name, n.inputs, n.outputs, n.attrs) for n in b.nodes]


def test_round_trip_is_lossless_and_byte_exact(tmp_path, rich_graph):
    validate(rich_graph)
    p1 = save(rich_graph, tmp_path / "a.qir")
    g2 = load(p1)
    _assert_same_graph(rich_graph, g2)
    w = g2.tensors["enc/conv1/w"]
    assert w.quant.bits == 4 and w.quant.axis == 0 and w.data.min() >= -8 and w.data.max() <= 7
    assert g2.tensors["enc/conv2/w"].quant.per_channel
    assert np.float32(0.011) == w.quant.scale[0]
    p2 = save(g2, tmp_path / "b.qir")
    assert _files(p1) == _files(p2)


def test_saved_bytes_are_deterministic(tmp_path, calib_batch):
    a = save(quantize_graph(make_float_graph(), calib_batch), tmp_path / "a.qir")
    b = save(quantize_graph(make_float_graph(), calib_batch), tmp_path / "b.qir")
    assert _files(a) == _files(b)
    # overwriting in place gives the same bytes and leaves no temp folder behind
    save(quantize_graph(make_float_graph(), calib_batch), tmp_path / "a.qir")
    assert _files(a) == _files(b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qir", "b.qir"]


def test_graph_json_is_readable(tmp_path, rich_graph):
    doc = json.loads((save(rich_graph, tmp_path / "m.qir") / "graph.json").read_text())
    assert doc["format"] == "qtc-ir"
    assert [n["op"] for n in doc["nodes"]] == ["Conv2D", "Conv2D", "FullyConnected"]
    w = next(t for t in doc["tensors"] if t["name"] == "enc/conv1/w")
    assert w["quant"]["bits"] == 4 and w["quant"]["axis"] == 0


def test_valid_graph_passes(float_graph, quant_graph):
    validate(float_graph)
    validate(quant_graph)


def test_validate_catches_bad_topological_order(float_graph):
    float_graph.nodes[0], float_graph.nodes[1] = float_graph.nodes[1], float_graph.nodes[0]
    with pytest.raises(ValidationError, match="topological"):
        validate(float_graph)


def test_validate_catches_dangling_tensor(float_graph):
    float_graph.add_tensor("orphan", (3,))
    with pytest.raises(ValidationError, match="dangling.*orphan"):
        validate(float_graph)


def test_validate_catches_missing_input_tensor(float_graph):
    float_graph.nodes[1].inputs[0] = "nowhere"
    with pytest.raises(ValidationError, match="nowhere"):
        validate(float_graph)


def test_validate_catches_bad_shape(float_graph):
    float_graph.tensors["enc/conv1:0"].shape = (1, 8, 8, 5)
    with pytest.raises(ValidationError, match="shape"):
        validate(float_graph)


def test_validate_catches_const_data_shape_mismatch(float_graph):
    float_graph.tensors["head/fc/b"].shape = (3,)
    with pytest.raises(ValidationError, match="head/fc/b"):
        validate(float_graph)


def test_validate_catches_unknown_op(float_graph):
    float_graph.nodes[2].op = "FrobnicateV2"
    with pytest.raises(UnsupportedOpError, match="FrobnicateV2"):
        validate(float_graph)


def test_validate_catches_unknown_attr(float_graph):
    float_graph.nodes[0].attrs["paddding"] = [1, 1, 1, 1]
    with pytest.raises(ValidationError, match="paddding"):
        validate(float_graph)


def test_validate_catches_per_channel_count(quant_graph):
    quant_graph.tensors["enc/conv1/w"].quant = QuantParams(np.ones(3, np.float32), 0, axis=0)
    with pytest.raises(ValidationError, match="per-channel"):
        validate(quant_graph)


def test_load_rejects_corrupt_files(tmp_path, float_graph):
    p = save(float_graph, tmp_path / "m.qir")
    (p / "graph.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="graph.json"):
        load(p)
    p = save(float_graph, tmp_path / "m.qir")
    data = (p / "weights.npz").read_bytes()
    (p / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="weights.npz"):
        load(p)
    with pytest.raises(ModelFormatError, match="graph.json"):
        load(tmp_path)


def test_summary_numbers(float_graph):
    s = summarize(float_graph)
    # conv1: 8*8*4 outputs x 3*3*3; conv2: 6 x 8*8*4; fc: 2 x 6
    assert [r.macs for r in s.rows] == [8 * 8 * 4 * 27, 6 * 256, 12]
    assert [r.params for r in s.rows] == [108 + 4, 1536 + 6, 12 + 2]
    t = s.totals
    assert (t.nodes, t.params, t.macs) == (3, 1668, 8460)
    assert t.weight_bytes == 1668 * 4 and not t.quantized
    # peak while conv1 runs: x (768 B) + its output (1024 B)
    assert t.activation_peak_bytes == activation_peak(float_graph) == 768 + 1024


def test_summary_packs_sub_byte_weights(rich_graph):
    t = summarize(rich_graph).totals
    assert t.quantized and t.integer_nodes == 3
    # 4-bit conv1 weights pack two per byte; other weights int8; biases int32
    assert t.weight_bytes == 108 // 2 + 1536 + 12 + 4 * (4 + 6 + 2)
    assert t.activation_peak_bytes == 192 + 256
