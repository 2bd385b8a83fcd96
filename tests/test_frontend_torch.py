"""torch.export front end: parity with torch for small nets, canonicalised in both
layouts, the op set it emits, and load_torch's state-dict-only loading."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from small_nets import NETS, make, rel_err, torch_ref  # noqa: E402

from qtc.errors import ModelFormatError, QtcError, ShapeError  # noqa: E402
from qtc.frontends.torch import from_torch, load_torch  # noqa: E402
from qtc.interp import run_float  # noqa: E402
from qtc.passes import canonicalize  # noqa: E402

TOL = 1e-4


def _run(g, x) -> np.ndarray:
    out = run_float(g, {g.inputs[0]: x.numpy()})
    return out[g.outputs[0]]


@pytest.fixture(scope="module")
def imported():
    """Each net imported once (torch.export takes about half a second)."""
    cache = {}
    for name in NETS:
        model, x = make(name)
        cache[name] = (from_torch(model, (x,)), torch_ref(model, x), x)
    return cache


@pytest.mark.parametrize("name", NETS)
def test_parity_with_torch(imported, name):
    g, ref, x = imported[name]
    assert g.metadata["source_format"] == "torch"
    assert rel_err(_run(g, x), ref) <= TOL


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", NETS)
def test_parity_after_canonicalize(imported, name, channels_last):
    g, ref, x = imported[name]
    c = canonicalize(g, channels_last=channels_last)
    assert not any(n.op == "BatchNorm" for n in c.nodes)
    assert c.tensors[c.inputs[0]].shape == tuple(x.shape)  # I/O layout kept
    assert rel_err(_run(c, x), ref) <= TOL
    if channels_last:
        convs = [n for n in c.nodes if n.op in ("Conv1D", "Conv2D")]
        assert all(n.attrs["channels_last"] for n in convs)


def test_cnn_lowering_details(imported):
    g, _, _ = imported["cnn"]
    ops = [n.op for n in g.nodes]
    assert ops.count("Conv2D") == 4 and ops.count("BatchNorm") == 2
    assert {"MaxPool", "AvgPool", "GlobalAvgPool", "FullyConnected", "Relu6", "Add"} <= set(ops)
    dw = next(n for n in g.nodes if n.op == "Conv2D" and n.attrs["groups"] == 8)
    assert g.tensors[dw.inputs[1]].shape == (8, 3, 3, 1)  # OIHW [8,1,3,3] -> OHWI
    stem = g.nodes[0]
    assert g.tensors[stem.inputs[1]].shape == (8, 3, 3, 3) and stem.attrs["channels_last"] is False
    c = canonicalize(g)
    assert [n.op for n in c.nodes].count("Relu") == 0  # fused into convs
    assert any(n.attrs.get("activation") == "relu6" for n in c.nodes)


def test_encoder_attention_is_decomposed(imported):
    g, _, _ = imported["encoder"]
    ops = [n.op for n in g.nodes]
    assert ops.count("LayerNorm") == 2 and ops.count("Softmax") == 1 and ops.count("MatMul") == 2
    assert "Gelu" in ops and ops.count("FullyConnected") == 4


def test_more_aten_ops():
    """Upsampling, padding, concat/split/chunk, sum/amax, hardswish/hardsigmoid/silu, clamp, addmm-free bmm."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ct = torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
            self.conv = torch.nn.Conv2d(8, 4, 3, padding="same")

        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            y = torch.cat([torch.nn.functional.hardswish(a), torch.nn.functional.silu(b)], 1)
            y = torch.nn.functional.pad(y, (1, 2, 0, 1), value=0.5)
            y = torch.nn.functional.interpolate(y, scale_factor=2, mode="nearest")
            y = torch.nn.functional.interpolate(y, size=(9, 11), mode="bilinear", align_corners=False)
            y = torch.clamp(self.conv(torch.cat([y, y], 1)), -0.5, 0.7)
            z = self.ct(y)
            s = z.sum(dim=(2, 3)) + z.amax(dim=(2, 3)) - torch.nn.functional.hardsigmoid(z).mean((2, 3))
            m = torch.bmm(z.flatten(2), z.flatten(2).transpose(1, 2))
            return s.unsqueeze(-1) * 0.1 + m[:, :, :1] / 50.0

    torch.manual_seed(1)
    net = Net().eval()
    x = torch.randn(1, 4, 5, 6)
    g = from_torch(net, (x,))
    ops = {n.op for n in g.nodes}
    assert {"ConvTranspose2D", "Resize", "Pad", "Split", "Concat", "ReduceSum", "ReduceMax", "MatMul",
            "HardSwish", "Silu", "HardSigmoid", "Clip"} <= ops
    ref = torch_ref(net, x)
    assert rel_err(_run(g, x), ref) <= TOL
    for cl in (False, True):
        assert rel_err(_run(canonicalize(g, channels_last=cl), x), ref) <= TOL


def test_inplace_ops_and_decomposed_ops():
    """In-place ops force functionalisation; glu/addcmul/clamp_min reach the IR through core-ATen decompositions."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.act = torch.nn.ReLU(inplace=True)
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x):
            y = self.act(self.fc(x))
            y.mul_(2)
            y += 1
            z = torch.nn.functional.glu(torch.cat([y, x], -1), -1)
            return torch.addcmul(z, y, x, value=0.5).clamp_min(0.1)

    torch.manual_seed(2)
    net = Net().eval()
    x = torch.randn(2, 8)
    g = from_torch(net, (x.clone(),))
    assert {"Sigmoid", "Concat", "Clip", "FullyConnected"} <= {n.op for n in g.nodes}
    assert "fc.weight" in g.tensors  # parameters keep their state-dict names
    assert rel_err(_run(g, x), torch_ref(net, x.clone())) <= TOL


def test_import_is_deterministic(imported):
    from qtc.ir.serialize import graph_to_json

    model, x = make("cnn")
    a, b = from_torch(model, (x,)), from_torch(model, (x,))
    ja, wa = graph_to_json(a)
    jb, wb = graph_to_json(b)
    assert ja == jb and wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------ load_torch
def test_load_torch_state_dict(tmp_path):
    model, x = make("cnn")
    torch.save(model.state_dict(), tmp_path / "cnn.pt")
    g = load_torch(tmp_path / "cnn.pt", "small_nets:TinyCNN", input_shapes={"image": (1, 3, 16, 16)})
    assert g.inputs == ["image"]
    assert g.metadata["source_file"] == "cnn.pt" and len(g.metadata["source_sha256"]) == 64
    assert rel_err(_run(g, x), torch_ref(model, x)) <= TOL
    g2 = load_torch(tmp_path / "cnn.pt", "small_nets:TinyCNN", example_inputs=(x,))
    assert rel_err(_run(g2, x), torch_ref(model, x)) <= TOL


def test_load_torch_refuses_pickled_module(tmp_path):
    model, _ = make("mlp")
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(QtcError) as e:
        load_torch(tmp_path / "whole.pt", "small_nets:MLP", input_shapes={"x": (2, 16)})
    msg = str(e.value)
    assert "whole.pt is a pickled module, not a state dict" in msg and "state_dict()" in msg


def test_load_torch_refuses_non_state_dict(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(QtcError, match="not a state dict"):
        load_torch(tmp_path / "meta.pt", "small_nets:MLP", input_shapes={"x": (2, 16)})


def test_load_torch_key_mismatch(tmp_path):
    model, _ = make("mlp")
    torch.save(model.state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(QtcError) as e:
        load_torch(tmp_path / "mlp.pt", "small_nets:TinyCNN", input_shapes={"x": (1, 3, 16, 16)})
    msg = str(e.value)
    assert "missing keys" in msg and "stem.weight" in msg and "unexpected keys" in msg and "l1.weight" in msg


def test_load_torch_truncated_and_bad_class(tmp_path):
    model, _ = make("mlp")
    torch.save(model.state_dict(), tmp_path / "mlp.pt")
    data = (tmp_path / "mlp.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        load_torch(tmp_path / "half.pt", "small_nets:MLP", input_shapes={"x": (2, 16)})
    with pytest.raises(QtcError, match="pkg.module:Class"):
        load_torch(tmp_path / "mlp.pt", "small_nets.MLP", input_shapes={"x": (2, 16)})
    with pytest.raises(ShapeError, match="--input-shape"):
        load_torch(tmp_path / "mlp.pt", "small_nets:MLP")


def test_unsupported_aten_op_names_the_node():
    class Net(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1)

    from qtc.errors import UnsupportedOpError

    with pytest.raises(UnsupportedOpError) as e:
        from_torch(Net(), (torch.randn(1, 4),))
    assert "cumsum" in str(e.value) and "node" in str(e.value)
