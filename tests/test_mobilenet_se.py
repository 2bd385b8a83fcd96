"""A MobileNetV3-style net (inverted residuals, depthwise convs, squeeze-excitation
with hard-sigmoid gating, HardSwish) exported with a dynamic batch axis, so the
ONNX file carries Shape/Gather/Concat/Reshape shape subgraphs that qtc must
fold once the input shape is fixed."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from small_nets import ort_run, randomize_bn, rel_err, to_onnx_bytes  # noqa: E402
from torch import nn  # noqa: E402

from qtc.errors import ShapeError  # noqa: E402
from qtc.frontends.onnx import load_onnx  # noqa: E402
from qtc.interp import run_float  # noqa: E402
from qtc.passes import canonicalize  # noqa: E402

SHAPE = (1, 3, 64, 64)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(8, c // r), 1)
        self.fc2 = nn.Conv2d(max(8, c // r), c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, k: int, stride: int, se: bool, hs: bool):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False),
                                nn.BatchNorm2d(hidden), act())
        self.se = SqueezeExcite(hidden) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3Tiny(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 16, 3, 2, se=True, hs=False),
            InvertedResidual(16, 64, 24, 3, 2, se=False, hs=False),
            InvertedResidual(24, 72, 24, 3, 1, se=False, hs=False),
            InvertedResidual(24, 96, 40, 5, 2, se=True, hs=True),
            InvertedResidual(40, 120, 40, 5, 1, se=True, hs=True),
        )
        self.head = nn.Sequential(nn.Conv2d(40, 96, 1, bias=False), nn.BatchNorm2d(96), nn.Hardswish())
        self.classifier = nn.Sequential(nn.Linear(96, 128), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(128, classes))

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.view(x.size(0), -1)  # dynamic batch: Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        return self.classifier(x)


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    model = randomize_bn(MobileNetV3Tiny())
    x = torch.randn(*SHAPE)
    data = to_onnx_bytes(model, x, opset=17, dynamic_batch=True)
    return data, x.numpy()


def test_export_has_dynamic_shape_subgraphs(exported):
    data, _ = exported
    m = onnx.load_from_string(data)
    ops = {n.op_type for n in m.graph.node}
    assert {"Shape", "Gather", "Concat", "Reshape", "HardSigmoid", "HardSwish"} <= ops
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_load_with_input_shapes_matches_onnxruntime(exported):
    data, x = exported
    g = load_onnx(data, input_shapes={"input": SHAPE})
    ops = [n.op for n in g.nodes]
    assert not {"Shape", "Gather"} & set(ops)  # folded away
    assert ops.count("Reshape") == 1 and "HardSigmoid" in ops and "HardSwish" in ops
    dw = [n for n in g.nodes if n.op == "Conv2D" and n.attrs["groups"] > 1]
    assert len(dw) == 5 and all(g.tensors[n.inputs[1]].shape[-1] == 1 for n in dw)
    ref = ort_run(data, {"input": x})[0]
    assert rel_err(run_float(g, {"input": x})[g.outputs[0]], ref) <= 1e-4
    for cl in (False, True):
        c = canonicalize(g, channels_last=cl)
        assert "BatchNorm" not in {n.op for n in c.nodes}
        assert rel_err(run_float(c, {"input": x})[c.outputs[0]], ref) <= 1e-4
        if cl:  # one Transpose into NHWC at the input, none back: the head is rank 2
            assert [n.op for n in c.nodes].count("Transpose") == 1


def test_opset13_decomposed_hardswish_is_fused():
    """Before opset 14 torch.onnx writes HardSwish as x * HardSigmoid(x); qtc fuses it back
    (and leaves the squeeze-excitation gate x * HardSigmoid(s) alone)."""
    torch.manual_seed(0)
    model = randomize_bn(MobileNetV3Tiny())
    x = torch.randn(*SHAPE)
    data = to_onnx_bytes(model, x, opset=13, dynamic_batch=True)
    assert "HardSwish" not in {n.op_type for n in onnx.load_from_string(data).graph.node}
    g = load_onnx(data, input_shapes={"input": SHAPE})
    ops = [n.op for n in g.nodes]
    assert ops.count("HardSigmoid") == 3 and ops.count("HardSwish") == 7
    ref = ort_run(data, {"input": x.numpy()})[0]
    assert rel_err(run_float(g, {"input": x.numpy()})[g.outputs[0]], ref) <= 1e-4


def test_batch_of_two(exported):
    data, x = exported
    x2 = np.concatenate([x, x[:, :, ::-1]], axis=0).copy()
    g = load_onnx(data, input_shapes={"input": (2, 3, 64, 64)})
    ref = ort_run(data, {"input": x2})[0]
    assert rel_err(run_float(g, {"input": x2})[g.outputs[0]], ref) <= 1e-4


def test_dynamic_dims_without_input_shapes_is_a_clear_error(exported):
    data, _ = exported
    with pytest.raises(ShapeError) as e:
        load_onnx(data)
    msg = str(e.value)
    assert "'input'" in msg and "dynamic" in msg and "--input-shape input=1,3,64,64" in msg
