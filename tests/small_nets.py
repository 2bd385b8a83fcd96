"""Small torch nets and parity helpers shared by the front-end and pass tests.

Every net is built with a fixed seed and has non-trivial BatchNorm statistics,
so folding and layout passes are really exercised.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (shapes must match exactly)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
    return model.eval()


class TinyCNN(nn.Module):
    """Conv+BN+ReLU, depthwise+BN+ReLU6, pointwise, residual, max/avg pool, global pool, linear."""

    def __init__(self, c: int = 8, classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu6(self.bn1(self.dw(x)))
        x = x + self.pw(y)
        x = F.max_pool2d(x, 2)
        x = F.relu(self.down(x))
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class Conv1DNet(nn.Module):
    """Conv1d+BN+ReLU, dilated depthwise Conv1d, pools, mean over time, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 5, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.c2 = nn.Conv1d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.c3 = nn.Conv1d(8, 12, 3, stride=2)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.c1(x)))
        x = F.hardtanh(self.c2(x)) + x
        x = F.max_pool1d(x, 2)
        x = F.leaky_relu(self.c3(x), 0.1)
        x = F.avg_pool1d(x, 2)
        return self.fc(x.mean(-1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(16, 32)
        self.bn = nn.BatchNorm1d(32)
        self.l2 = nn.Linear(32, 24)
        self.l3 = nn.Linear(24, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.l1(x)))
        x = torch.tanh(self.l2(x)) * torch.sigmoid(x[:, :24])
        return torch.softmax(self.l3(x), dim=-1)


class EncoderBlock(nn.Module):
    """Pre-LN transformer encoder block: LayerNorm, multi-head attention, GELU MLP, residuals."""

    def __init__(self, d: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, 2 * d)
        self.ff2 = nn.Linear(2 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(d, dim=-1)
        q = q.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = k.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = v.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


def make(name: str, seed: int = 0):
    """(model in eval mode, example input) for one of the nets above."""
    torch.manual_seed(seed)
    if name == "cnn":
        return randomize_bn(TinyCNN(), seed), torch.randn(1, 3, 16, 16)
    if name == "conv1d":
        return randomize_bn(Conv1DNet(), seed), torch.randn(1, 4, 32)
    if name == "mlp":
        return randomize_bn(MLP(), seed), torch.randn(2, 16)
    if name == "encoder":
        return EncoderBlock().eval(), torch.randn(1, 6, 16)
    raise KeyError(name)


NETS = ("cnn", "conv1d", "mlp", "encoder")


def torch_ref(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def to_onnx_bytes(model: nn.Module, x: torch.Tensor, *, opset: int = 17, dynamo: bool = False,
                  dynamic_batch: bool = False) -> bytes:
    """torch.onnx.export to bytes, input named 'input', output 'output'."""
    f = io.BytesIO()
    kw = {"dynamo": dynamo, "input_names": ["input"], "output_names": ["output"]}
    if not dynamo:
        kw["opset_version"] = opset
        if dynamic_batch:
            kw["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(model, (x,), **kw, verbose=False)
            return prog.model_proto.SerializeToString()
        torch.onnx.export(model, (x,), f, **kw)
    return f.getvalue()


def ort_run(model_bytes: bytes, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
