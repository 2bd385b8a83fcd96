"""The qtc CLI: every command on small hand-built graphs (and ONNX when its front end exists)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import has_module, make_onnx_bytes

import qtc
from qtc.cli import cli
from qtc.interp import run
from qtc.ir import load, save
from qtc.ops import all_ops


def qtc_ok(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, f"exit {res.exit_code}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res


def qtc_fails(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 2, f"exit {res.exit_code}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.fixture
def x_npy(tmp_path, calib_batch):
    p = tmp_path / "x.npy"
    np.save(p, calib_batch)
    return p


def test_version():
    assert qtc_ok("--version").stdout.strip() == f"qtc {qtc.__version__}"


@pytest.mark.parametrize("cmd", [[], ["import"], ["show"], ["layers"], ["run"], ["ops"]])
def test_every_help_has_an_example(cmd):
    out = qtc_ok(*cmd, "--help").stdout
    assert "Example" in out and "qtc " in out.split("Example", 1)[1]


def test_show_table_and_totals(float_qir):
    out = qtc_ok("show", float_qir).stdout
    for row in ("enc/conv1  Conv2D", "enc/conv2  Conv2D", "head/fc    FullyConnected"):
        assert row in out
    assert "1x8x8x3 -> 1x8x8x4" in out and "6,912" in out
    assert "nodes: 3" in out and "params: 1,668" in out and "MACs: 8,460" in out
    assert "weight bytes: 6,672 B" in out and "activation peak: 1,792 B" in out and "quantized: no" in out


def test_show_quantized_and_json(quant_qir):
    out = qtc_ok("show", quant_qir).stdout
    assert "quantized: yes (3/3 nodes integer)" in out
    assert "w s8 per-ch[0]x4" in out
    doc = json.loads(qtc_ok("show", quant_qir, "--json").stdout)
    assert doc["totals"]["macs"] == 8460 and doc["totals"]["quantized"] is True
    assert doc["totals"]["weight_bytes"] == 1656 + 4 * 12  # int8 weights + int32 biases
    assert [r["node"] for r in doc["rows"]] == ["enc/conv1", "enc/conv2", "head/fc"]


def _matched(out):
    """Node names in a 'qtc layers' table (header, separator, rows, then the count line)."""
    lines = out.strip().splitlines()
    return [ln.split()[1] for ln in lines[2:-1]] if lines[0].startswith("#") else []


def test_layers_default_and_filters(float_qir):
    out = qtc_ok("layers", float_qir).stdout
    assert _matched(out) == ["enc/conv1", "enc/conv2", "head/fc"]
    assert "3 layers matched of 3 nodes (1,668 params, 100.0% of the model's)" in out
    assert "4x3x3x3" in out  # the weight shape
    assert _matched(qtc_ok("layers", float_qir, "--scope", "enc").stdout) == ["enc/conv1", "enc/conv2"]
    assert _matched(qtc_ok("layers", float_qir, "--scope", "enc.conv2").stdout) == ["enc/conv2"]
    assert _matched(qtc_ok("layers", float_qir, "--op", "FC").stdout) == ["head/fc"]
    assert _matched(qtc_ok("layers", float_qir, "--op", "conv2d", "--scope", "head", "--scope", "enc/conv1").stdout) \
        == ["enc/conv1"]
    none = qtc_ok("layers", float_qir, "--scope", "head", "--op", "Conv").stdout
    assert none.strip().splitlines()[-1].startswith("0 layers matched of 3 nodes")
    assert "unknown op type 'Lienar'" in qtc_fails("layers", float_qir, "--op", "Lienar")


def test_ops_lists_the_registry():
    out = qtc_ok("ops").stdout
    ops = all_ops()
    for name, op in ops.items():
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [name])
        assert line.split()[1] == ("yes" if op.has_int else "no")
    n_int = sum(op.has_int for op in ops.values())
    assert f"{len(ops)} ops, {n_int} with integer semantics" in out


def test_run_float_matches_interpreter(tmp_path, float_qir, float_graph, x_npy, calib_batch):
    qtc_ok("run", float_qir, "--input", x_npy, "-o", tmp_path / "y.npy")
    y = np.load(tmp_path / "y.npy")
    ref = run(float_graph, {"x": calib_batch})["y"]
    assert y.dtype == np.float32 and np.array_equal(y, ref)
    # named input and .npz input give the same answer
    np.savez(tmp_path / "feeds.npz", x=calib_batch)
    qtc_ok("run", float_qir, "--input", f"x={x_npy}", "-o", tmp_path / "y2.npy")
    qtc_ok("run", float_qir, "--input", tmp_path / "feeds.npz", "-o", tmp_path / "y3.npy")
    assert np.array_equal(np.load(tmp_path / "y2.npy"), ref) and np.array_equal(np.load(tmp_path / "y3.npy"), ref)


def test_run_integer(tmp_path, quant_qir, quant_graph, float_graph, x_npy, calib_batch):
    qtc_ok("run", quant_qir, "--input", x_npy, "--integer", "-o", tmp_path / "y.npy")
    qtc_ok("run", quant_qir, "--input", x_npy, "--integer", "--raw", "-o", tmp_path / "yq.npy")
    y, yq = np.load(tmp_path / "y.npy"), np.load(tmp_path / "yq.npy")
    xq = quant_graph.tensors["x"].quant.quantize(calib_batch)
    ref_q = run(quant_graph, {"x": xq})["y"]
    assert yq.dtype == np.int8 and np.array_equal(yq, ref_q)
    oq = quant_graph.tensors["y"].quant
    assert y.dtype == np.float32 and np.array_equal(y, oq.dequantize(yq))
    # the integer model tracks the float model within a few output steps
    yf = run(float_graph, {"x": calib_batch})["y"]
    assert np.abs(y - yf).max() <= 4 * float(oq.scale[0])
    # inputs that are already int8 are used as they are
    np.save(tmp_path / "xq.npy", xq.astype(np.int8))
    qtc_ok("run", quant_qir, "--input", tmp_path / "xq.npy", "--integer", "--raw", "-o", tmp_path / "yq2.npy")
    assert np.array_equal(np.load(tmp_path / "yq2.npy"), yq)


def test_run_integer_input_out_of_range(tmp_path, quant_qir):
    np.save(tmp_path / "big.npy", np.full((1, 8, 8, 3), 300, np.int16))
    line = qtc_fails("run", quant_qir, "--input", tmp_path / "big.npy", "--integer", "-o", tmp_path / "y.npy")
    assert "outside int8 range" in line and not (tmp_path / "y.npy").exists()


def test_run_mode_must_match_graph(quant_qir, float_qir, x_npy):
    assert "--integer" in qtc_fails("run", quant_qir, "--input", x_npy)
    assert "needs a quantized graph" in qtc_fails("run", float_qir, "--input", x_npy, "--integer")


def test_run_dump_dir(tmp_path, quant_qir, quant_graph, x_npy, calib_batch):
    dump = tmp_path / "dump"
    qtc_ok("run", quant_qir, "--input", x_npy, "--integer", "--dump-dir", dump)
    manifest = json.loads((dump / "manifest.json").read_text())
    assert manifest["mode"] == "integer"
    names = [e["tensor"] for e in manifest["tensors"]]
    assert names == ["x", "enc/conv1:0", "enc/conv2:0", "y"]
    env = run(quant_graph, {"x": quant_graph.tensors["x"].quant.quantize(calib_batch)}, keep=True)
    for e in manifest["tensors"]:
        arr = np.load(dump / e["file"])
        assert "/" not in e["file"] and np.array_equal(arr, env[e["tensor"]]), e
        assert e["quant"]["zero_point"] == [int(z) for z in quant_graph.tensors[e["tensor"]].quant.zero_point]
    assert sorted(p.name for p in dump.iterdir()) == sorted([e["file"] for e in manifest["tensors"]] + ["manifest.json"])
    # a second dump replaces the first; a folder that is not a dump is left alone
    qtc_ok("run", quant_qir, "--input", x_npy, "--integer", "--dump-dir", dump)
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert "not an earlier qtc dump" in qtc_fails("run", quant_qir, "--input", x_npy, "--integer", "--dump-dir", other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_run_several_outputs_go_to_npz(tmp_path, float_graph, x_npy, calib_batch):
    float_graph.outputs = ["enc/conv1:0", "y"]
    p = save(float_graph, tmp_path / "two.qir")
    line = qtc_fails("run", p, "--input", x_npy, "-o", tmp_path / "out.npy")
    assert "2 outputs" in line and not (tmp_path / "out.npy").exists()
    qtc_ok("run", p, "--input", x_npy, "-o", tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz") as z:
        assert sorted(z.files) == ["enc/conv1:0", "y"]
        ref = run(float_graph, {"x": calib_batch})
        assert np.array_equal(z["y"], ref["y"]) and np.array_equal(z["enc/conv1:0"], ref["enc/conv1:0"])


def test_import_qir_is_deterministic(tmp_path, quant_qir):
    qtc_ok("import", quant_qir, "-o", tmp_path / "a.qir")
    qtc_ok("import", quant_qir, "-o", tmp_path / "b.qir")
    for f in ("graph.json", "weights.npz"):
        assert (tmp_path / "a.qir" / f).read_bytes() == (tmp_path / "b.qir" / f).read_bytes()
    assert load(tmp_path / "a.qir").is_quantized


@pytest.mark.skipif(not has_module("qtc.frontends.onnx"), reason="ONNX front end not in this tree yet")
def test_import_onnx_end_to_end(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tmp_path / "tiny.onnx"
    model.write_bytes(make_onnx_bytes(dynamic_batch=True))
    out = qtc_ok("import", model, "--input-shape", "x=1,3,8,8", "-o", tmp_path / "tiny.qir").stdout
    assert "wrote" in out
    show = qtc_ok("show", tmp_path / "tiny.qir").stdout
    assert "x 1x3x8x8 float32" in show and "quantized: no" in show
    # conv: 4x6x6 outputs x 27 + fc: 2 x 144
    assert "MACs: 4,176" in show
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    qtc_ok("run", tmp_path / "tiny.qir", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-5, atol=1e-5)
    # --channels-last: NHWC convs inside, same I/O layout and the same answer
    qtc_ok("import", model, "--input-shape", "x=1,3,8,8", "--channels-last", "-o", tmp_path / "cl.qir")
    convs = [n for n in load(tmp_path / "cl.qir").nodes if n.op == "Conv2D"]
    assert convs and all(n.attrs.get("channels_last") for n in convs)
    qtc_ok("run", tmp_path / "cl.qir", "--input", tmp_path / "x.npy", "-o", tmp_path / "y_cl.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y_cl.npy"), ref, rtol=1e-5, atol=1e-5)
    # show/layers read .onnx directly too
    assert "2 layers matched" in qtc_ok("layers", model, "--input-shape", "x=1,3,8,8").stdout


@pytest.mark.skipif(not has_module("qtc.frontends.onnx"), reason="ONNX front end not in this tree yet")
def test_import_bytes_do_not_depend_on_the_folder(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "m.onnx").write_bytes(make_onnx_bytes())
        qtc_ok("import", (tmp_path / sub / "m.onnx").resolve(), "-o", tmp_path / sub / "m.qir")
    for f in ("graph.json", "weights.npz"):
        assert (tmp_path / "a" / "m.qir" / f).read_bytes() == (tmp_path / "b" / "m.qir" / f).read_bytes()
    assert load(tmp_path / "a" / "m.qir").metadata["source_file"] == "m.onnx"


def test_detect_format_by_magic_bytes(tmp_path, float_qir):
    import zipfile

    from qtc.frontends import detect_format

    def write(name, data):
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    assert detect_format(float_qir) == "qir"
    assert detect_format(write("m.tflite", b"\x1c\x00\x00\x00TFL3" + bytes(40))) == "tflite"
    assert detect_format(write("noext1", b"\x1c\x00\x00\x00TFL3" + bytes(40))) == "tflite"
    assert detect_format(write("noext2", b"\x89HDF\r\n\x1a\n" + bytes(40))) == "keras"
    assert detect_format(write("m.onnx", make_onnx_bytes())) == "onnx"
    assert detect_format(write("noext3", make_onnx_bytes())) == "onnx"
    for name, entry, fmt in (("k.zip", "config.json", "keras"), ("t.zip", "archive/data.pkl", "torch")):
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr(entry, "{}")
        assert detect_format(tmp_path / name) == fmt
    (tmp_path / "k.zip").rename(tmp_path / "k.pt")  # a .keras archive named .pt
    with pytest.raises(qtc.errors.ModelFormatError, match="looks like a keras file"):
        detect_format(tmp_path / "k.pt")


@pytest.mark.skipif(not has_module("qtc.frontends.keras"), reason="tf_keras front end not in this tree yet")
def test_import_keras_files(tmp_path):
    keras = pytest.importorskip("tf_keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(1, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ref = model(x).numpy()
    for fname in ("m.keras", "m.h5"):
        model.save(tmp_path / fname)
        qtc_ok("import", tmp_path / fname, "-o", tmp_path / f"{fname}.qir")
        assert "2 layers matched" in qtc_ok("layers", tmp_path / f"{fname}.qir").stdout
        qtc_ok("run", tmp_path / f"{fname}.qir", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-5, atol=1e-6)
