"""QAT with learned per-feature input params (issue 7): one scale and zero point per input feature,
learned with LSQ and folded exactly into the first FullyConnected layer.

The exported graph must compute exactly what the fake-quant forward computed
(the zero points fold into the bias through the *quantized* weights), record
the learned boundary params in ``metadata["input_quant"]``, and stay bit-exact
through the TFLite (LiteRT, TFLM) and C back ends.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from qtc.errors import QtcError  # noqa: E402
from qtc.eval.runtimes import compare_bitexact  # noqa: E402
from qtc.interp import run, run_quantized  # noqa: E402
from qtc.ir import boundary  # noqa: E402
from qtc.passes.quantize import check  # noqa: E402
from qtc.passes.quantize.input_features import feature_params  # noqa: E402
from qtc.qat import prepare_qat, qat_to_ir, train_qat  # noqa: E402
from conftest import load_sibling  # noqa: E402

# features on very different scales and offsets (metres, m/s, a radius, ...)
SCALES = np.array([40.0, 0.05, 3.0, 0.5, 120.0, 1.0], dtype=np.float32)
OFFSETS = np.array([200.0, 0.0, -5.0, 1.0, 0.0, 3.0], dtype=np.float32)


class Mlp(nn.Module):
    def __init__(self, bias1: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(6, 16, bias=bias1)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 6)).astype(np.float32)
    y = (np.argmax(np.stack([z[:, 0] + z[:, 1], z[:, 2] - z[:, 3], 0.5 * z[:, 4] * z[:, 5]], 1), 1)).astype(np.int64)
    return z * SCALES + OFFSETS, y


def _float_model(bias1: bool = True) -> Mlp:
    x, y = _data(2000)
    torch.manual_seed(0)
    net = Mlp(bias1)
    xt = torch.from_numpy((x - OFFSETS) / SCALES)  # train on normalized inputs, then fold the normalization in
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), torch.from_numpy(y)).backward()
        opt.step()
    with torch.no_grad():
        w = net.fc1.weight / torch.from_numpy(SCALES)[None, :]
        shift = -(w @ torch.from_numpy(OFFSETS))
        net.fc1.weight.copy_(w)
        if bias1:
            net.fc1.bias.add_(shift)
    return net.eval()


def _train(bias1: bool = True, wbits: int = 4, pfi=True, epochs: int = 3, **kw):
    x, y = _data(2000)
    net = _float_model(bias1)
    if not bias1:
        x = x - OFFSETS  # a bias-free first layer sees centred data
    qat, hist = train_qat(net, (x[:1500], y[:1500]), None, target="host", wbits=wbits, abits=8, epochs=epochs,
                          lr=3e-3, calib=x[:256], seed=0, progress=False, per_feature_input=pfi, **kw)
    return net, qat, hist, x, y


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    return _train()


def _codes(g, out: np.ndarray) -> np.ndarray:
    qp = g.tensors[g.outputs[0]].quant
    return np.round(out / qp.scale[0]).astype(np.int64) + int(qp.zero_point[0])


def test_learned_feature_params_recorded(trained):
    _, qat, _, x, _ = trained
    g = qat_to_ir(qat)
    inp = g.inputs[0]
    assert boundary.per_feature(g, inp)
    qp = boundary.input_params(g, inp)
    assert qp.axis == -1 and qp.scale.size == 6 and qp.bits == 8
    assert g.tensors[inp].quant.scale[0] == np.float32(2.0 ** -7) and int(g.tensors[inp].quant.zero_point[0]) == 0
    init_s, init_z = feature_params(x[:256], 8, False)
    assert not np.array_equal(qp.scale, init_s)  # learned, not the calibration ranges
    assert np.any(qp.zero_point != 0)  # the offsets need zero points
    meta = g.metadata["quantization"]["per_feature_input"][inp]
    assert meta == {"features": 6, "inner_scale": 2.0 ** -7, "learned": True}
    assert check(g, "host") == []


def test_integer_graph_equals_fake_quant(trained):
    """The zero-point fold uses the quantized weights, so the integer graph computes the forward's values."""
    _, qat, _, x, _ = trained
    g = qat_to_ir(qat)
    xe = x[1500:1800]
    fq = qat.predict(xe)
    got = np.stack([run_quantized(g, {g.inputs[0]: xe[i:i + 1]})[g.outputs[0]][0] for i in range(len(xe))])
    np.testing.assert_array_equal(_codes(g, got), _codes(g, fq))
    assert np.unique(_codes(g, got)).size > 5


def test_per_feature_beats_one_scale_on_mixed_scales():
    """Six features on scales from 0.05 to 120: one input scale leaves the small ones a few levels."""
    torch.set_num_threads(1)
    _, qat_pf, _, x, y = _train(pfi=True, epochs=2)
    _, qat_pt, _, _, _ = _train(pfi=False, epochs=2)
    xe, ye = x[1500:], y[1500:]
    acc_pf = np.mean(np.argmax(qat_pf.predict(xe), 1) == ye)
    acc_pt = np.mean(np.argmax(qat_pt.predict(xe), 1) == ye)
    assert not qat_pt.feature_of and qat_pf.feature_of
    assert acc_pf > acc_pt + 0.05, (acc_pf, acc_pt)


def test_bias_free_first_layer_gets_a_bias():
    torch.set_num_threads(1)
    net, qat, _, x, _ = _train(bias1=False, epochs=1)
    assert net.fc1.bias is None
    g = qat_to_ir(qat)
    fc = next(n for n in g.nodes if n.op == "FullyConnected" and n.inputs[0] == g.inputs[0])
    assert len(fc.inputs) == 3 and g.tensors[fc.inputs[2]].dtype == "int32"
    xe = x[1500:1600]
    got = np.stack([run_quantized(g, {g.inputs[0]: xe[i:i + 1]})[g.outputs[0]][0] for i in range(len(xe))])
    np.testing.assert_array_equal(_codes(g, got), _codes(g, qat.predict(xe)))


def _int_inputs(g, x, n: int = 50) -> list[np.ndarray]:
    return [boundary.quantize_input(g, g.inputs[0], x[1500 + i:1501 + i]).astype(np.int8) for i in range(n)]


def test_tflite_bit_exact(tmp_path):
    """W8A8 (TFLM runs INT4 FULLY_CONNECTED filters only per-tensor): LiteRT and TFLM byte-equal."""
    from qtc.backends.tflite import compile_tflite

    torch.set_num_threads(1)
    _, qat, _, x, _ = _train(wbits=8, epochs=1)
    g = qat_to_ir(qat)
    assert boundary.per_feature(g, g.inputs[0])
    xs = _int_inputs(g, x)
    path = tmp_path / "qat_pf.tflite"
    compile_tflite(g, path)
    rep = compare_bitexact(g, path.read_bytes(), [np.concatenate(xs)], runtimes=("litert_ref", "tflm"))
    for rt in ("litert_ref", "tflm"):
        for out, s in rep["runtimes"][rt].items():
            assert "error" not in s, s
            assert s["exact_samples"] == s["samples"] == 50 and s["max_lsb_diff"] == 0, (rt, out, s)


def test_c_bit_exact_w4(trained, tmp_path):
    _, qat, _, x, _ = trained
    g = qat_to_ir(qat)
    xs = _int_inputs(g, x)
    tc = load_sibling("test_backend_c")
    _, exe = tc.compile_and_build(g, tmp_path, "qat_pf")
    got = tc.run_c(exe, g, xs)
    want = [run(g, {g.inputs[0]: xi})[g.outputs[0]] for xi in xs]
    assert all(np.array_equal(a, w) for a, w in zip(got, want))


def test_per_feature_needs_an_fc_input():
    tq = load_sibling("test_qat")
    x = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    with pytest.raises(QtcError, match="per-feature|FullyConnected"):
        prepare_qat(tq.BnCNN().eval(), x, "host", 8, 8, per_feature_input=True)
    qat = prepare_qat(tq.BnCNN().eval(), x, "host", 8, 8, per_feature_input="auto")
    assert not qat.feature_of
    with pytest.raises(QtcError, match="per_feature_input must be"):
        prepare_qat(tq.BnCNN().eval(), x, "host", 8, 8, per_feature_input="sometimes")


def test_resume_refuses_other_per_feature_setting(tmp_path):
    torch.set_num_threads(1)
    x, y = _data(400)
    net = _float_model()
    kw = dict(target="host", wbits=8, abits=8, lr=1e-3, calib=x[:128], seed=0, progress=False,
              checkpoint_dir=str(tmp_path))
    train_qat(net, (x, y), None, epochs=1, per_feature_input=True, **kw)
    with pytest.raises(QtcError, match="per_feature_input"):
        train_qat(net, (x, y), None, epochs=2, per_feature_input=False, **kw)
