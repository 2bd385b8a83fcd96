"""QAT: LSQ fake quantizers, the QAT model at PTQ's quantization points, export to the integer IR,
the training loop (distillation, checkpoints, resume)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import small_nets  # noqa: E402
from qtc.errors import QtcError, UnsupportedOpError  # noqa: E402
from qtc.interp.runner import run, run_quantized  # noqa: E402
from qtc.passes.quantize import check, quantize  # noqa: E402
from qtc.passes.quantize.params import quantize_bias, round_with  # noqa: E402
from qtc.qat import accuracy_eval, prepare_qat, qat_to_ir, train_qat  # noqa: E402
from qtc.qat.fakequant import ActFakeQuant, WeightFakeQuant, fake_bias, requant_pre_step  # noqa: E402
from qtc.qat.train import CHECKPOINT, load_checkpoint  # noqa: E402
from qtc.ir import with_batch  # noqa: E402




def int_outputs(g, x):
    gb = with_batch(g, len(x))
    return run_quantized(gb, {gb.inputs[0]: x})[gb.outputs[0]]


class BnCNN(nn.Module):
    """conv-BN-relu, conv-BN-relu, maxpool, flatten, fc (digits 8x8)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is much faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    return x[:1200], y[:1200], x[1200:], y[1200:]


@pytest.fixture(scope="module")
def bn_cnn(digits):
    """A BnCNN trained for a second (full-batch Adam); BatchNorm statistics from training."""
    xtr, ytr, _, _ = digits
    torch.manual_seed(0)
    net = BnCNN()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


# ------------------------------------------------------------------ fake quantizers
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("pot,rounding", [(False, "half_away"), (True, "half_up"), (False, "half_even")])
def test_weight_fakequant_rounds_like_ptq(bits, pot, rounding):
    rng = np.random.default_rng(bits)
    w = rng.normal(0, 0.3, (6, 3, 3, 2)).astype(np.float32)
    qmax = (1 << (bits - 1)) - 1
    init = np.abs(w.reshape(6, -1)).max(1) / qmax
    wq = WeightFakeQuant(init, bits=bits, per_channel=True, power_of_two=pot, rounding=rounding, shape=w.shape)
    qp = wq.export_params()
    wt = torch.from_numpy(w)
    codes = wq.codes(wt)
    want = np.clip(round_with(w.astype(np.float64) / qp.scale.astype(np.float64)[:, None, None, None], rounding),
                   -qmax, qmax)
    np.testing.assert_array_equal(codes, want)
    assert codes.min() >= -qmax and codes.max() <= qmax
    fq = wq(wt).detach().numpy()
    np.testing.assert_allclose(fq, codes * qp.scale[:, None, None, None], rtol=1e-6)
    if pot:
        m, _ = np.frexp(qp.scale)
        assert np.all(m == 0.5), "power-of-two target: every weight scale is 2^k"
    assert qp.narrow_range and qp.symmetric and qp.axis == 0 and qp.bits == bits


def test_lsq_step_gradient():
    """d x̂/d s = round(x/s) - x/s inside, qmin/qmax outside; scaled by g = 1/sqrt(N·Qp); s = 2^t."""
    s = 0.1
    aq = ActFakeQuant(s, 0, bits=4, symmetric=True, power_of_two=False, numel=5)
    x = torch.tensor([[0.03, 0.26, -0.44, 2.0, -3.0]])
    aq(x).sum().backward()
    xs = x.numpy()[0] / s
    ds = np.where(xs > 7, 7, np.where(xs < -8, -8, np.round(xs) - xs)).sum()
    g = 1.0 / math.sqrt(5 * 7)
    want = ds * g * s * math.log(2.0)  # chain rule through s = 2^t
    assert aq.log2_scale.grad.item() == pytest.approx(want, rel=1e-4)


def test_act_fakequant_matches_quantparams():
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 1.0, 1000).astype(np.float32)
    aq = ActFakeQuant(0.02, -37, bits=8, symmetric=False, power_of_two=False, numel=1)
    qp = aq.export_params()
    assert int(qp.zero_point[0]) == -37
    got = aq(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_array_equal(got, qp.dequantize(qp.quantize(x)))


def test_fake_bias_matches_quantize_bias():
    rng = np.random.default_rng(2)
    b = rng.normal(0, 2.0, 8).astype(np.float32)
    s_in, s_w = torch.tensor([0.013]), torch.from_numpy(rng.uniform(0.001, 0.2, 8).astype(np.float32))
    for bits in (32, 16):
        qb, bq, _ = quantize_bias(b, float(s_in[0]), s_w.numpy(), bits=bits)
        got = fake_bias(torch.from_numpy(b), s_in, s_w, bits=bits, rounding="half_away").numpy()
        np.testing.assert_allclose(got, qb * bq.scale.astype(np.float64), rtol=1e-6)


def test_requant_pre_step_is_tflite_shift():
    step = requant_pre_step(torch.tensor(0.05), torch.tensor([0.01, 0.5, 3.0]), torch.tensor(0.1))
    # M = 0.005 -> 2^-7 grid; 0.25 -> 2^-1; 1.5 -> no right shift (grid 1)
    np.testing.assert_array_equal(step.numpy(), [2.0 ** -7, 2.0 ** -1, 1.0])


# --------------------------------------------------------------- the QAT model
@pytest.mark.parametrize("name", small_nets.NETS)
def test_float_mode_matches_interpreter(name):
    model, x = small_nets.make(name)
    calib = np.concatenate([x.numpy()] + [torch.randn_like(x).numpy() for _ in range(7)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = prepare_qat(model, calib, target="esp32", example_inputs=(x,))
    qat.quantize_enabled = False
    with torch.no_grad():
        got = qat(x).numpy()
    ref = run(qat.graph, {qat.graph.inputs[0]: x.numpy()})[qat.graph.outputs[0]]
    np.testing.assert_allclose(got, ref, atol=1e-5 * max(1.0, np.abs(ref).max()))
    if x.shape[0] == 1:  # any batch size runs, one sample at a time gives the same answers
        xb = torch.from_numpy(calib[:3])
        with torch.no_grad():
            many = qat(xb).numpy()
            one = np.concatenate([qat(xb[i:i + 1]).numpy() for i in range(3)])
        np.testing.assert_allclose(many, one, atol=1e-5)


def test_bn_folded_before_training(bn_cnn, digits):
    xtr = digits[0]
    qat = prepare_qat(bn_cnn, xtr[:128], target="esp32", wbits=4, abits=8)
    assert not any(n.op == "BatchNorm" for n in qat.graph.nodes)
    assert len(qat.info["batchnorm"]["folded"]) == 2
    # the trainable conv weights are the folded ones: float mode reproduces the eval-mode torch model
    qat.quantize_enabled = False
    with torch.no_grad():
        np.testing.assert_allclose(qat(torch.from_numpy(xtr[:32])).numpy(), bn_cnn(torch.from_numpy(xtr[:32])).numpy(),
                                   atol=1e-4)
    assert len(qat.weight_q) == 3 and len(qat.int_nodes) == 5


@pytest.mark.parametrize("target,wbits,abits", [("esp32", 8, 8), ("esp32", 4, 4), ("esp32", 2, 8),
                                                ("ti-npu", 4, 8), ("esp-dl", 8, 4)])
def test_export_is_bit_exact_with_fake_quant(bn_cnn, digits, target, wbits, abits):
    """The integer graph reproduces the fake-quant forward exactly (TFLite requant rounding emulated)."""
    xtr, _, xte, _ = digits
    qat = prepare_qat(bn_cnn, xtr[:256], target=target, wbits=wbits, abits=abits)
    g = qat_to_ir(qat)
    assert check(g, target) == []
    assert g.metadata["quantization"]["method"] == "qat-lsq"
    fq = qat.predict(xte[:200])
    np.testing.assert_array_equal(int_outputs(g, xte[:200]), fq)


def test_init_is_ptq(bn_cnn, digits):
    """Before training, the exported graph has PTQ's activation params and integer weights."""
    xtr = digits[0]
    qat = prepare_qat(bn_cnn, xtr[:256], target="esp32", wbits=4, abits=8, method="minmax", weight_method="minmax")
    g = qat_to_ir(qat)
    fg = qat.graph
    pg = quantize(fg, {fg.inputs[0]: xtr[:256]}, target="esp32", wbits=4, abits=8, canonicalize=False, progress=False)
    for name, t in pg.tensors.items():
        if t.quant is None or name not in g.tensors:
            continue
        np.testing.assert_allclose(g.tensors[name].quant.scale, t.quant.scale, rtol=1e-6)
        np.testing.assert_array_equal(g.tensors[name].quant.zero_point, t.quant.zero_point)
        if t.is_const and t.dtype == "int8":
            assert np.mean(g.tensors[name].data != t.data) < 0.01  # only 1-ulp scale ties may round apart


def test_unsupported_op_is_named():
    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2.0, mode="nearest")

    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(QtcError):
        prepare_qat(Up(), x.numpy(), target="esp32", example_inputs=(x,))
    from qtc.qat.torch_ops import torch_op
    from qtc.ir.graph import Node

    with pytest.raises(UnsupportedOpError, match="Resize"):
        torch_op(Node("Resize", "up", ["x"], ["y"], {}))


def test_bad_bits_and_target_mismatch(bn_cnn, digits):
    with pytest.raises(QtcError, match="weight bits"):
        prepare_qat(bn_cnn, digits[0][:64], target="esp32", wbits=3)
    qat = prepare_qat(bn_cnn, digits[0][:64], target="esp32", wbits=8, abits=8)
    with pytest.raises(QtcError, match="trained for target esp32"):
        qat_to_ir(qat, target="ti-npu")


# ---------------------------------------------------------------------- training
def test_qat_recovers_w2_accuracy(bn_cnn, digits):
    """2-bit weights: PTQ loses accuracy, a few QAT epochs win most of it back; the export agrees."""
    xtr, ytr, xte, yte = digits
    qat, hist = train_qat(bn_cnn, (xtr, ytr), accuracy_eval(xte, yte), target="esp32", wbits=2, abits=8,
                          epochs=3, lr=2e-3, seed=0, progress=False)
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    assert hist[-1]["metric"] > hist[0]["metric"] + 0.03, hist
    g = qat_to_ir(qat)
    assert check(g, "esp32") == []
    agree = np.mean(int_outputs(g, xte).argmax(1) == qat.predict(xte).argmax(1))
    assert agree >= 0.99


def test_distillation_only(bn_cnn, digits):
    """No labels: the loss is the KL to the float teacher's logits, and it goes down."""
    xtr = digits[0]
    qat, hist = train_qat(bn_cnn, (xtr, None), None, target="esp32", wbits=2, abits=8, epochs=2, lr=2e-3,
                          distill="kl", temperature=2.0, progress=False)
    assert hist[1]["task_loss"] == 0.0 and hist[1]["distill_loss"] > 0
    assert hist[2]["distill_loss"] < hist[1]["distill_loss"]


def test_mse_distillation_for_embeddings():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU()).eval()
    x = np.random.default_rng(0).normal(0, 1, (512, 6)).astype(np.float32)
    qat, hist = train_qat(enc, (x, None), None, target="esp32", wbits=4, abits=4, epochs=2, lr=1e-3,
                          progress=False)
    assert hist[1]["distill_loss"] > 0 and hist[2]["distill_loss"] < hist[1]["distill_loss"]
    g = qat_to_ir(qat)
    np.testing.assert_array_equal(int_outputs(g, x[:64]), qat.predict(x[:64]))
    g4 = qat_to_ir(qat, example_inputs=(x[:4],))  # deployed with another batch size
    assert g4.tensors[g4.inputs[0]].shape == (4, 6)
    np.testing.assert_array_equal(run_quantized(g4, {g4.inputs[0]: x[:4]})[g4.outputs[0]], qat.predict(x[:4]))


def test_resume_gives_identical_weights(bn_cnn, digits, tmp_path):
    xtr, ytr, xte, yte = digits
    data = (xtr[:600], ytr[:600])
    kw = dict(target="esp32", wbits=4, abits=4, epochs=4, lr=2e-3, distill_alpha=0.3, seed=3, batch_size=64,
              progress=False)
    full, hist_full = train_qat(bn_cnn, data, accuracy_eval(xte, yte), checkpoint_dir=tmp_path / "a", **kw)

    calls = {"n": 0}
    acc = accuracy_eval(xte, yte)

    def interrupting(model):
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 0 (init), 1, 2 evaluated and saved; stop during epoch 3's
            raise KeyboardInterrupt
        return acc(model)

    with pytest.raises(KeyboardInterrupt):
        train_qat(bn_cnn, data, interrupting, checkpoint_dir=tmp_path / "b", **kw)
    ck = load_checkpoint(tmp_path / "b" / CHECKPOINT)  # torch.load(weights_only=True)
    assert ck["epoch"] == 2 and [h["epoch"] for h in ck["history"]] == [0, 1, 2]
    resumed, hist = train_qat(bn_cnn, data, acc, checkpoint_dir=tmp_path / "b", **kw)
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3, 4]
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert hist[-1]["metric"] == hist_full[-1]["metric"]
    # a run with other settings refuses the checkpoint
    with pytest.raises(QtcError, match="lr"):
        train_qat(bn_cnn, data, None, checkpoint_dir=tmp_path / "b", **{**kw, "lr": 1e-2})
    # a finished run resumes to itself without training
    again, hist2 = train_qat(bn_cnn, data, None, checkpoint_dir=tmp_path / "b", **kw)
    assert len(hist2) == 5 and all(torch.equal(again.state_dict()[k], b[k]) for k in b)
