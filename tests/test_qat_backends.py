"""A QAT model goes through the TFLite and C back ends and stays bit-exact (issue 7).

A small conv-BN net is fine-tuned with LSQ QAT (one short epoch), exported to
qtc's IR with the learned params, laid out channels-last, then:
* written as .tflite and run by LiteRT (BUILTIN_REF, qtc's ``litert_ref``
  numerics) and TFLM (``tflite`` numerics): every output byte equal;
* compiled to C and run as a host executable (gcc): every output byte equal.
"""
from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")

from qtc.eval.runtimes import compare_bitexact  # noqa: E402
from qtc.interp import run  # noqa: E402
from qtc.passes import canonicalize  # noqa: E402
from qtc.passes.quantize import check  # noqa: E402
from qtc.qat import qat_to_ir, train_qat  # noqa: E402
from conftest import load_sibling  # noqa: E402

N = 100




@pytest.fixture(scope="module")
def qat_graph():
    tq = load_sibling("test_qat")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = tq.BnCNN()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x[:1000]), torch.from_numpy(y[:1000])
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    qat, _ = train_qat(net.eval(), (x[:512], y[:512]), None, target="esp32", wbits=8, abits=8, epochs=1,
                       lr=1e-3, distill_alpha=0.0, checkpoint_dir=None, calib=x[:256], seed=0, progress=False)
    g = qat_to_ir(qat)
    assert g.metadata["quantization"]["method"] == "qat-lsq"
    assert check(g, "esp32") == []
    gl = canonicalize(g, channels_last=True)
    xs = [g.tensors[g.inputs[0]].quant.quantize(x[1000 + i:1001 + i]).astype(np.int8) for i in range(N)]
    for xi in xs[:10]:  # the layout pass keeps the integers
        np.testing.assert_array_equal(run(gl, {gl.inputs[0]: xi})[gl.outputs[0]],
                                      run(g, {g.inputs[0]: xi})[g.outputs[0]])
    return gl, xs


def test_qat_model_tflite_bit_exact(qat_graph, tmp_path):
    from qtc.backends.tflite import compile_tflite

    g, xs = qat_graph
    path = tmp_path / "qat.tflite"
    compile_tflite(g, path)
    rep = compare_bitexact(g, path.read_bytes(), [np.concatenate(xs)], runtimes=("litert_ref", "tflm"))
    for rt in ("litert_ref", "tflm"):
        for out, s in rep["runtimes"][rt].items():
            assert "error" not in s, s
            assert s["exact_samples"] == s["samples"] == N and s["max_lsb_diff"] == 0, (rt, out, s)


def test_qat_model_c_bit_exact(qat_graph, tmp_path):
    tc = load_sibling("test_backend_c")
    g, xs = qat_graph
    _, exe = tc.compile_and_build(g, tmp_path, "qat_cnn")
    got = tc.run_c(exe, g, xs)
    want = [run(g, {g.inputs[0]: x})[g.outputs[0]] for x in xs]
    assert all(np.array_equal(a, w) for a, w in zip(got, want))
    assert np.unique(np.stack(want)).size > 3
