"""User-facing failures: one line 'error: …' on stderr, exit code 2, no output artifact left behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, has_module, make_onnx_bytes

from qtc.cli import cli


def qtc_error(*args, env=None) -> str:
    """Run the CLI in-process; assert exit 2 and exactly one 'error:' line; return it."""
    res = CliRunner(env=env).invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 2, f"exit {res.exit_code}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def assert_only(folder: Path, names: set[str]):
    """Nothing but ``names`` in ``folder``: no output, no leftover temp files (they start with '.')."""
    assert {p.name for p in folder.iterdir()} == names


def tiny_tflite_bytes() -> bytes:
    """A float FULLY_CONNECTED .tflite (x[1,4] -> y[1,3]) built with the TFLite schema, no TF needed."""
    import flatbuffers

    s = pytest.importorskip("ai_edge_litert.schema_py_generated")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    m = s.ModelT()
    m.version = 3
    m.buffers = []
    for data in (None, w, b):
        buf = s.BufferT()
        buf.data = None if data is None else np.frombuffer(data.tobytes(), np.uint8)
        m.buffers.append(buf)

    def tensor(name, shape, buffer):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), s.TensorType.FLOAT32, buffer
        return t

    sg = s.SubGraphT()
    sg.tensors = [tensor("x", (1, 4), 0), tensor("w", (3, 4), 1), tensor("b", (3,), 2), tensor("y", (1, 3), 0)]
    sg.inputs, sg.outputs = [0], [3]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    sg.operators = [op]
    m.operatorCodes, m.subgraphs = [code], [sg]
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


# ------------------------------------------------------------------ format / file errors
def test_unknown_file_format(tmp_path):
    (tmp_path / "model.bin").write_bytes(bytes(range(7, 200)))
    line = qtc_error("import", tmp_path / "model.bin", "-o", tmp_path / "out.qir")
    assert "unknown model format" in line and ".onnx" in line and ".tflite" in line and ".pt" in line
    assert_only(tmp_path, {"model.bin"})


def test_missing_file_and_wrong_extension(tmp_path):
    assert "no such file" in qtc_error("show", tmp_path / "nope.onnx")
    (tmp_path / "fake.tflite").write_bytes(b"hello world, not a model")
    assert "TFL3" in qtc_error("import", tmp_path / "fake.tflite", "-o", tmp_path / "out.qir")
    assert_only(tmp_path, {"fake.tflite"})


def test_corrupt_qir(tmp_path, float_qir):
    (float_qir / "graph.json").write_text('{"format": "qtc-ir", "tensors": [')
    line = qtc_error("import", float_qir, "-o", tmp_path / "out.qir")
    assert "graph.json is corrupt" in line and "qtc import" in line
    assert_only(tmp_path, {"tiny.qir"})


def test_truncated_qir_weights(tmp_path, float_graph):
    from qtc.ir import save

    p = save(float_graph, tmp_path / "m.qir")
    data = (p / "weights.npz").read_bytes()
    (p / "weights.npz").write_bytes(data[: len(data) // 2])
    assert "weights.npz is corrupt or truncated" in qtc_error("show", p)
    assert "weights.npz" in qtc_error("import", p, "-o", tmp_path / "out.qir")
    assert_only(tmp_path, {"m.qir"})


def test_qir_missing_entry(tmp_path, float_qir):
    (float_qir / "weights.npz").unlink()
    assert "missing entry" in qtc_error("show", float_qir)


# ------------------------------------------------------------------ front-end errors
@pytest.mark.skipif(not has_module("qtc.frontends.tflite"), reason="TFLite front end not in this tree yet")
def test_truncated_tflite(tmp_path):
    data = tiny_tflite_bytes()
    (tmp_path / "ok.tflite").write_bytes(data)
    res = CliRunner().invoke(cli, ["show", str(tmp_path / "ok.tflite")])
    assert res.exit_code == 0 and "FullyConnected" in res.stdout, res.stderr  # the whole file is fine
    (tmp_path / "half.tflite").write_bytes(data[: len(data) // 2])
    line = qtc_error("import", tmp_path / "half.tflite", "-o", tmp_path / "out.qir")
    assert "half.tflite" in line and ("truncated" in line or "corrupt" in line)
    assert_only(tmp_path, {"ok.tflite", "half.tflite"})


@pytest.mark.skipif(not has_module("qtc.frontends.onnx"), reason="ONNX front end not in this tree yet")
def test_truncated_onnx(tmp_path):
    data = make_onnx_bytes()
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    line = qtc_error("import", tmp_path / "half.onnx", "-o", tmp_path / "out.qir")
    assert "half.onnx" in line and ("truncated" in line or "corrupt" in line)
    assert_only(tmp_path, {"half.onnx"})


@pytest.mark.skipif(not has_module("qtc.frontends.onnx"), reason="ONNX front end not in this tree yet")
def test_unsupported_onnx_op(tmp_path):
    (tmp_path / "det.onnx").write_bytes(make_onnx_bytes(unsupported=True))
    line = qtc_error("import", tmp_path / "det.onnx", "-o", tmp_path / "out.qir")
    assert "Det" in line and "det0" in line
    assert_only(tmp_path, {"det.onnx"})


TINY_NET = '''
import torch


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x))
'''


@pytest.mark.skipif(not has_module("qtc.frontends.torch"), reason="torch front end not in this tree yet")
def test_pickled_module_where_state_dict_expected(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pkg = tmp_path / "netpkg"
    pkg.mkdir()
    (pkg / "qtc_test_tinynet.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(pkg))
    import qtc_test_tinynet

    torch.manual_seed(0)
    net = qtc_test_tinynet.TinyNet()
    work = tmp_path / "work"
    work.mkdir()
    torch.save(net.state_dict(), work / "good.pt")
    torch.save(net, work / "whole.pt")  # pickles the module object, not a state dict
    args = ["--model-class", "qtc_test_tinynet:TinyNet", "--input-shape", "x=1,4"]
    res = CliRunner().invoke(cli, ["import", str(work / "good.pt"), *args, "-o", str(work / "good.qir")])
    assert res.exit_code == 0, res.stderr  # the same class with a real state dict imports
    line = qtc_error("import", work / "whole.pt", *args, "-o", work / "whole.qir")
    assert "whole.pt" in line and ("state dict" in line or "state_dict" in line)
    assert_only(work, {"good.pt", "whole.pt", "good.qir"})


def test_torch_checkpoint_needs_model_class(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"PK\x03\x04" + bytes(60))
    assert "--model-class" in qtc_error("import", tmp_path / "w.pt", "-o", tmp_path / "out.qir")
    assert "pkg.module:ClassName" in qtc_error("show", tmp_path / "w.pt", "--model-class", "NoColon")
    assert_only(tmp_path, {"w.pt"})


# ------------------------------------------------------------------ run errors
def test_wrong_input_shape_for_run(tmp_path, float_qir):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 4), np.float32))
    line = qtc_error("run", float_qir, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy",
                     "--dump-dir", tmp_path / "dump")
    assert "(1, 8, 8, 4)" in line and "(1, 8, 8, 3)" in line and "--input-shape" in line
    assert_only(tmp_path, {"tiny.qir", "x.npy"})


def test_run_input_errors(tmp_path, float_qir):
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
    assert "cannot read the input array" in qtc_error("run", float_qir, "--input", tmp_path / "x.npy")
    np.savez(tmp_path / "f.npz", nothere=np.zeros(3))
    assert "not graph inputs" in qtc_error("run", float_qir, "--input", tmp_path / "f.npz")


# ------------------------------------------------------------------ internal errors
def test_internal_error_is_one_line_exit_1(float_qir, monkeypatch):
    import qtc.ir.summary

    def boom(g):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(qtc.ir.summary, "summarize", boom)
    res = CliRunner().invoke(cli, ["show", str(float_qir)])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert lines == ["internal error: RuntimeError: kaboom second line (re-run with QTC_DEBUG=1 for the traceback)"]
    res = CliRunner(env={"QTC_DEBUG": "1"}).invoke(cli, ["show", str(float_qir)])
    assert res.exit_code == 1 and "Traceback" in res.stderr and "boom" in res.stderr


# ------------------------------------------------------------------ the real console script
def test_console_script_subprocess(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x00\x01garbage")
    script = Path(sys.executable).with_name("qtc")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "qtc.cli"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "toolchain"), os.environ.get("PYTHONPATH", "")]))
    env.pop("QTC_DEBUG", None)
    p = subprocess.run([*cmd, "import", "model.bin", "-o", "out.qir"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: model.bin: unknown model format"), p.stderr
    assert_only(tmp_path, {"model.bin"})
