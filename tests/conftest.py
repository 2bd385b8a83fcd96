"""Shared test setup: import paths, quiet TF, and small IR graphs built by hand.

The graphs use only Conv2D / FullyConnected (+ Quantize/Dequantize), so the
CLI and IR tests do not depend on any front end.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "toolchain", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("PYTHONHASHSEED", "0")

from qtc.ir import Graph, QuantParams  # noqa: E402


def load_sibling(name: str):
    """Import a sibling test module by path (works under any pytest import mode); cached."""
    import importlib.util

    key = f"_qtc_tests_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]


def has_module(name: str) -> bool:
    """True when the module's file exists (a front end another change adds), without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def make_float_graph(seed: int = 0) -> Graph:
    """x[1,8,8,3] NHWC -> enc/conv1 3x3 relu -> enc/conv2 8x8 (valid) -> head/fc -> y[1,1,1,2]."""
    rng = np.random.default_rng(seed)
    g = Graph(name="tiny")
    g.add_tensor("x", (1, 8, 8, 3))
    g.add_const("enc/conv1/w", rng.normal(0, 0.4, (4, 3, 3, 3)).astype(np.float32))
    g.add_const("enc/conv1/b", rng.normal(0, 0.1, (4,)).astype(np.float32))
    g.add_const("enc/conv2/w", rng.normal(0, 0.2, (6, 8, 8, 4)).astype(np.float32))
    g.add_const("enc/conv2/b", rng.normal(0, 0.1, (6,)).astype(np.float32))
    g.add_const("head/fc/w", rng.normal(0, 0.5, (2, 6)).astype(np.float32))
    g.add_const("head/fc/b", rng.normal(0, 0.1, (2,)).astype(np.float32))
    g.add_tensor("enc/conv1:0", (1, 8, 8, 4))
    g.add_tensor("enc/conv2:0", (1, 1, 1, 6))
    g.add_tensor("y", (1, 1, 1, 2))
    g.add_node("Conv2D", ["x", "enc/conv1/w", "enc/conv1/b"], ["enc/conv1:0"], name="enc/conv1",
               pads=[1, 1, 1, 1], channels_last=True, activation="relu")
    g.add_node("Conv2D", ["enc/conv1:0", "enc/conv2/w", "enc/conv2/b"], ["enc/conv2:0"], name="enc/conv2",
               channels_last=True)
    g.add_node("FullyConnected", ["enc/conv2:0", "head/fc/w", "head/fc/b"], ["y"], name="head/fc")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def _act_params(lo: float, hi: float) -> QuantParams:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255.0 or 1.0)
    zp = int(np.clip(np.round(-128 - lo / float(scale)), -128, 127))
    return QuantParams(scale, zp)


def quantize_graph(g: Graph, calib: np.ndarray) -> Graph:
    """Plain int8 PTQ of a Conv2D/FullyConnected graph: per-channel symmetric weights,
    int32 biases, activations from the calibration batch's min/max."""
    from qtc.interp import run

    env = run(g, {g.inputs[0]: calib}, keep=True)
    q = g.copy()
    for name in [*q.inputs, *(o for n in q.nodes for o in n.outputs)]:
        t = q.tensors[name]
        t.quant = _act_params(float(env[name].min()), float(env[name].max()))
        t.dtype = "int8"
    for node in q.nodes:
        x, w, b = (q.tensors[i] for i in node.inputs)
        wf = w.data.astype(np.float64)
        amax = np.abs(wf.reshape(wf.shape[0], -1)).max(axis=1)
        ws = (np.maximum(amax, 1e-12) / 127.0).astype(np.float32)
        shp = (-1,) + (1,) * (wf.ndim - 1)
        w.data = np.clip(np.round(wf / ws.reshape(shp)), -127, 127).astype(np.int8)
        w.dtype = "int8"
        w.quant = QuantParams(ws, 0, axis=0, narrow_range=True, symmetric=True)
        bs = (np.float64(x.quant.scale[0]) * ws.astype(np.float64)).astype(np.float32)
        b.data = np.round(b.data.astype(np.float64) / bs).astype(np.int32)
        b.dtype = "int32"
        b.quant = QuantParams(bs, 0, axis=0, bits=32, symmetric=True)
    return q


@pytest.fixture
def float_graph() -> Graph:
    return make_float_graph()


@pytest.fixture
def calib_batch() -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)


@pytest.fixture
def quant_graph(float_graph, calib_batch) -> Graph:
    return quantize_graph(float_graph, calib_batch)


@pytest.fixture
def float_qir(tmp_path, float_graph) -> Path:
    from qtc.ir import save

    return save(float_graph, tmp_path / "tiny.qir")


@pytest.fixture
def quant_qir(tmp_path, quant_graph) -> Path:
    from qtc.ir import save

    return save(quant_graph, tmp_path / "tiny_int8.qir")


def make_onnx_bytes(unsupported: bool = False, dynamic_batch: bool = False, seed: int = 0) -> bytes:
    """A small ONNX model: Conv -> Relu -> Flatten -> Gemm; or one node of an op qtc lacks (Det)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if unsupported:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
        graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"], name="det0")], "needs_det", [x], [y])
    else:
        rng = np.random.default_rng(seed)
        w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "conv.w")
        b = numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "conv.b")
        fw = numpy_helper.from_array(rng.normal(0, 0.2, (2, 4 * 6 * 6)).astype(np.float32), "fc.w")
        fb = numpy_helper.from_array(rng.normal(0, 0.1, (2,)).astype(np.float32), "fc.b")
        nodes = [
            helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv", kernel_shape=[3, 3]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
            helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
        ]
        batch = "N" if dynamic_batch else 1
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])
        graph = helper.make_graph(nodes, "tiny_onnx", [x], [y], initializer=[w, b, fw, fb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="qtc-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ---------------------------------------------------------------- example models
EXAMPLE_MODELS = ("peer_encoder", "policy_head", "digits_cnn", "ts_cnn", "act_tiny")


@pytest.fixture(scope="session")
def example_models_dir() -> Path:
    """build/models as written by `make models` (python -m models.train_all --out build/models).

    `make test` trains them first; a bare pytest run without them skips these tests
    with a clear reason instead of failing.
    """
    d = Path(os.environ.get("QTC_MODELS_DIR", ROOT / "build" / "models"))
    missing = [m for m in EXAMPLE_MODELS if not (d / m / "meta.json").is_file()]
    if missing:
        pytest.skip(f"example models not trained in {d} (missing {missing}); run `make models`")
    return d
