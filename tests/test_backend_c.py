"""The C back end: generated C + hand-written kernels, bit-exact with the reference interpreter.

Quantized graphs are built by hand (float graph → a small PTQ with realistic
per-channel weights and calibrated activations), compiled to C, built with the
host gcc (-O2 -std=c99 -Wall -Wextra -Werror) and run on >= 100 random int8
inputs; every output byte must equal ``qtc.interp.run``.  The same sources are
compiled (not run) for the emulated RV32 board.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qtc.errors import QtcError
from qtc.interp import run
from qtc.ir import Graph, QuantParams, infer_shapes, validate

CFLAGS = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror"]
RV32 = ["riscv64-unknown-elf-gcc", "-march=rv32imac", "-mabi=ilp32", "-misa-spec=2.2", "--specs=picolibc.specs",
        "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror"]
N_INPUTS = 100

HARNESS = r"""
#include <stdio.h>
#include <string.h>
#include "qtc_model.h"
#ifdef WITH_TESTVEC
#include "qtc_model_testvec.h"
#endif

/* stdin: N * INPUT_BYTES int8; stdout: N * OUTPUT_BYTES int8. "--testvec": self-check. */
int main(int argc, char **argv)
{
    static int8_t in[QTC_MODEL_INPUT_BYTES], out[QTC_MODEL_OUTPUT_BYTES];
#ifdef WITH_TESTVEC
    if (argc > 1 && strcmp(argv[1], "--testvec") == 0) {
        int i, bad = 0;
        for (i = 0; i < QTC_TESTVEC_COUNT; ++i) {
            if (qtc_model_invoke(qtc_testvec_in[i], out) != 0) return 3;
            bad += memcmp(out, qtc_testvec_out[i], QTC_MODEL_OUTPUT_BYTES) != 0;
        }
        printf("%s: %d/%d test vectors match\n", QTC_MODEL_NAME, QTC_TESTVEC_COUNT - bad, QTC_TESTVEC_COUNT);
        return bad != 0;
    }
#else
    (void)argc;
    (void)argv;
#endif
    while (fread(in, 1, sizeof in, stdin) == sizeof in) {
        if (qtc_model_invoke(in, out) != 0) return 2;
        fwrite(out, 1, sizeof out, stdout);
    }
    return 0;
}
"""


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make sysdeps)")


# ---------------------------------------------------------------- graph making
class FloatBuilder:
    """A float IR graph, node by node, with random weights (shapes inferred)."""

    def __init__(self, name: str, x_shape, seed: int = 0):
        self.g = Graph(name=name)
        self.rng = np.random.default_rng(seed)
        self.g.add_tensor("x", x_shape)
        self.g.inputs = ["x"]
        self.n = 0

    def op(self, op: str, inputs, n_out: int = 1, **attrs):
        outs = []
        for _ in range(n_out):
            outs.append(f"t{self.n}")
            self.n += 1
        self.g.add_node(op, list(inputs), outs, name=f"{op.lower()}_{self.n}", **attrs)
        infer_shapes(self.g)
        return outs[0] if n_out == 1 else outs

    def const(self, name: str, data) -> str:
        return self.g.add_const(name, np.asarray(data, dtype=np.float32)).name

    def conv(self, x, cout, k, *, groups=1, conv1d=False, bias=True, **attrs):
        cin = self.g.tensors[x].shape[-1]
        kshape = (k,) if conv1d else (k, k) if isinstance(k, int) else tuple(k)
        fan = int(np.prod(kshape)) * cin // groups
        w = self.const(f"w{self.n}", self.rng.normal(0, 1.2 / np.sqrt(fan), (cout, *kshape, cin // groups)))
        ins = [x, w]
        if bias:
            ins.append(self.const(f"b{self.n}", self.rng.normal(0, 0.2, cout)))
        return self.op("Conv1D" if conv1d else "Conv2D", ins, groups=groups, channels_last=True, **attrs)

    def fc(self, x, cout, **attrs):
        cin = self.g.tensors[x].shape[-1]
        w = self.const(f"w{self.n}", self.rng.normal(0, 1.0 / np.sqrt(cin), (cout, cin)))
        b = self.const(f"b{self.n}", self.rng.normal(0, 0.2, cout))
        return self.op("FullyConnected", [x, w, b], **attrs)

    def done(self, y) -> Graph:
        self.g.outputs = [y]
        validate(self.g)
        return self.g


FIXED = {"Softmax": (1 / 256, -128), "Sigmoid": (1 / 256, -128), "Tanh": (1 / 128, 0)}


def _act_params(lo: float, hi: float) -> QuantParams:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255.0 or 1.0)
    zp = int(np.clip(np.round(-128 - lo / float(scale)), -128, 127))
    return QuantParams(scale, zp)


def ptq(g: Graph, calib: list[np.ndarray], share=("MaxPool", "Reshape", "Flatten")) -> Graph:
    """int8 PTQ: per-channel symmetric weights, int32 bias, min/max activations.

    Outputs of the ops in ``share`` take their input's params (as TFLite does);
    every other activation gets its own calibrated params, so the requantizing
    paths of copy ops and pools are exercised too.
    """
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for x in calib:
        env = run(g, {g.inputs[0]: x}, keep=True)
        for k, v in env.items():
            if not g.tensors[k].is_const:
                lo[k] = min(lo.get(k, np.inf), float(np.min(v)))
                hi[k] = max(hi.get(k, -np.inf), float(np.max(v)))
    q = g.copy()
    for name in q.inputs:
        q.tensors[name].quant, q.tensors[name].dtype = _act_params(lo[name], hi[name]), "int8"
    for node in q.nodes:
        for o in node.outputs:
            t = q.tensors[o]
            if node.op in FIXED:
                t.quant = QuantParams(np.float32(FIXED[node.op][0]), FIXED[node.op][1])
            elif node.op in share:
                t.quant = QuantParams(q.tensors[node.inputs[0]].quant.scale, q.tensors[node.inputs[0]].quant.zero_point)
            else:
                t.quant = _act_params(lo[o], hi[o])
            t.dtype = "int8"
        x_q = q.tensors[node.inputs[0]].quant
        for k, name in enumerate(node.inputs[1:], 1):
            t = q.tensors[name] if name else None
            if t is None or not t.is_const:
                continue
            if node.op in ("Conv1D", "Conv2D", "FullyConnected") and k == 1:
                wf = t.data.astype(np.float64)
                amax = np.abs(wf.reshape(wf.shape[0], -1)).max(axis=1)
                ws = (np.maximum(amax, 1e-12) / 127.0).astype(np.float32)
                t.data = np.clip(np.round(wf / ws.reshape((-1,) + (1,) * (wf.ndim - 1))), -127, 127).astype(np.int8)
                t.dtype, t.quant = "int8", QuantParams(ws, 0, axis=0, narrow_range=True, symmetric=True)
            elif node.op in ("Conv1D", "Conv2D", "FullyConnected") and k == 2:
                ws = q.tensors[node.inputs[1]].quant.scale.astype(np.float64)
                bs = (np.float64(x_q.scale[0]) * ws).astype(np.float32)
                t.data = np.round(t.data.astype(np.float64) / bs).astype(np.int32)
                t.dtype, t.quant = "int32", QuantParams(bs, 0, axis=0, bits=32, symmetric=True)
            else:  # a constant activation operand (Add/Mul/Concat)
                p = _act_params(float(t.data.min()), float(t.data.max()))
                t.data = p.quantize(t.data).astype(np.int8)
                t.dtype, t.quant = "int8", p
    validate(q)
    return q


def calib_inputs(g: Graph, n: int = 8, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = g.tensors[g.inputs[0]].shape
    return [rng.uniform(-1.5, 1.5, shape).astype(np.float32) for _ in range(n)]


def random_int8(g: Graph, n: int, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = g.tensors[g.inputs[0]].shape
    return [rng.integers(-128, 128, shape).astype(np.int8) for _ in range(n)]


# ------------------------------------------------------------- model graphs
def cnn_graph() -> Graph:
    """Conv 3x3 / depthwise 3x3 s2 / 1x1 / residual Add / pools / Mean / FC / Softmax."""
    b = FloatBuilder("cnn", (1, 12, 12, 3), seed=0)
    c1 = b.conv("x", 8, 3, pads=[1, 1, 1, 1], activation="relu")
    dw = b.conv(c1, 8, 3, groups=8, strides=[2, 2], pads=[0, 0, 1, 1], activation="relu6")
    pw = b.conv(dw, 14, 1)
    sk = b.conv(dw, 14, 1, bias=False)
    add = b.op("Add", [pw, sk], activation="relu")
    mp = b.op("MaxPool", [add], kernel=[2, 2], strides=[1, 1], channels_last=True)
    ap = b.op("AvgPool", [mp], kernel=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], channels_last=True)
    gp = b.op("Mean", [ap], axes=[1, 2], keepdims=True)
    fl = b.op("Reshape", [gp], shape=[1, 14])
    fc = b.fc(fl, 10)
    return ptq(b.done(b.op("Softmax", [fc], axis=-1)), calib_inputs(b.g), share=("MaxPool", "Mean", "Reshape"))


def variants_graph() -> Graph:
    """Kernel corner cases: dilation, stride, asymmetric pads, groups, depth multiplier, 5x5 depthwise,
    odd channel counts (remainder loops), count_include_pad, batch-2 FC rows."""
    b = FloatBuilder("variants", (1, 11, 13, 5), seed=3)
    a = b.conv("x", 7, 3, dilations=[2, 2], pads=[2, 1, 2, 3], activation="relu")
    a = b.conv(a, 6, (3, 2), strides=[2, 3], pads=[1, 0, 0, 1])
    g2 = b.conv(a, 6, 3, groups=2, pads=[1, 1, 1, 1])
    dm = b.conv(g2, 12, 3, groups=6, pads=[1, 1, 1, 1], activation="relu6")  # depth multiplier 2
    d5 = b.conv(dm, 12, 5, groups=12, pads=[2, 2, 2, 2], strides=[1, 1])
    d3 = b.conv(d5, 12, 3, groups=12, pads=[1, 1, 1, 1], dilations=[1, 2])
    # ceil_mode windows that run past the padding: torch's divisor clips them
    ap = b.op("AvgPool", [d3], kernel=[2, 2], strides=[2, 2], pads=[1, 0, 0, 0], count_include_pad=True,
              ceil_mode=True, channels_last=True)
    p1 = b.conv(ap, 9, 1, strides=[2, 1])
    rs = b.op("Reshape", [p1], shape=[-1, 9])
    fc = b.fc(rs, 5, activation="relu")
    return ptq(b.done(b.op("Flatten", [fc], axis=0)), calib_inputs(b.g))


def misc_graph() -> Graph:
    """Conv1D, Concat (requantizing), Pad, Transpose, Slice, Split, broadcast Mul/Sub/Add with a constant,
    the table-driven activations, ReduceMax, Mean over the last axis."""
    b = FloatBuilder("misc", (1, 16, 6), seed=5)
    c1 = b.conv("x", 8, 3, conv1d=True, pads=[1, 1], activation="relu")
    c2 = b.conv("x", 4, 5, conv1d=True, pads=[4, 0], dilations=[1])
    cat = b.op("Concat", [c1, c2], axis=2)                                   # [1,16,12]
    pad = b.op("Pad", [cat], pads=[0, 1, 2, 0, 2, 1], value=0.0)             # [1,19,15]
    tr = b.op("Transpose", [pad], perm=[0, 2, 1])                            # [1,15,19]
    sl = b.op("Slice", [tr], starts=[0, 18], ends=[15, 0], axes=[1, 2], steps=[2, -3])  # [1,8,6]
    h1, h2 = b.op("Split", [sl], n_out=2, axis=2, sizes=[2, 4])
    sg = b.op("Sigmoid", [h1])
    th = b.op("Tanh", [h2])
    hs = b.op("HardSwish", [th])
    lr = b.op("LeakyRelu", [hs], alpha=0.2)
    mx = b.op("ReduceMax", [lr], axes=[2], keepdims=True)                    # [1,8,1]
    mul = b.op("Mul", [sg, mx])                                              # broadcast [1,8,2]
    k = b.const("k", np.linspace(-0.5, 0.7, 2).reshape(1, 1, 2))
    sub = b.op("Sub", [mul, k])
    add = b.op("Add", [sub, b.const("k2", np.float32([[[0.25]]]))], activation="relu_n1_to_1")
    m = b.op("Mean", [b.op("Concat", [add, sg], axis=2)], axes=[-1], keepdims=False)  # [1,8]
    r6 = b.op("Relu6", [b.op("Gelu", [m])])
    return ptq(b.done(b.op("Silu", [r6])), calib_inputs(b.g), share=("MaxPool",))


# ------------------------------------------------------------------ running
def compile_and_build(g: Graph, tmp: Path, name: str, *, test_inputs=None, extra_flags=(), esp_nn=False,
                      extra_sources=(), include=()) -> tuple[dict, Path]:
    from qtc.backends.c import compile_c

    _need("gcc")
    info = compile_c(g, tmp / f"{name}_c", model_name=name, test_inputs=test_inputs, esp_nn=esp_nn)
    harness = tmp / f"{name}_main.c"
    harness.write_text(HARNESS)
    exe = tmp / f"{name}_host"
    cmd = ["gcc", *CFLAGS, *extra_flags, "-I", info["dir"], *[f"-I{i}" for i in include], str(harness),
           *info["sources"], *map(str, extra_sources), "-o", str(exe)]
    if test_inputs is not None:
        cmd.insert(1, "-DWITH_TESTVEC")
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return info, exe


def run_c(exe: Path, g: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    data = b"".join(np.ascontiguousarray(x, dtype=np.int8).tobytes() for x in inputs)
    res = subprocess.run([str(exe)], input=data, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    y = g.tensors[g.outputs[0]]
    out = np.frombuffer(res.stdout, dtype=np.int8)
    assert out.size == y.size * len(inputs)
    return list(out.reshape(len(inputs), *y.shape))


def assert_bit_exact(g: Graph, exe: Path, n: int = N_INPUTS, seed: int = 7) -> np.ndarray:
    xs = random_int8(g, n, seed)
    got = run_c(exe, g, xs)
    want = [run(g, {g.inputs[0]: x})[g.outputs[0]] for x in xs]
    for i, (a, w) in enumerate(zip(got, want)):
        if not np.array_equal(a, w):
            bad = np.argwhere(a != w)
            raise AssertionError(f"input {i}: {len(bad)} output bytes differ, first at {bad[0].tolist()}: "
                                 f"C {a[tuple(bad[0])]} vs interpreter {w[tuple(bad[0])]}")
    want = np.stack(want)
    assert np.unique(want).size > 3, "outputs barely vary: the test graph saturates"
    return want


# -------------------------------------------------------------------- tests
@pytest.mark.parametrize("make", [cnn_graph, variants_graph, misc_graph], ids=["cnn", "variants", "misc"])
def test_bit_exact_with_interpreter(tmp_path, make):
    g = make()
    _, exe = compile_and_build(g, tmp_path, g.name)
    assert_bit_exact(g, exe)


def test_kernels_have_no_undefined_behaviour(tmp_path):
    """UBSan build (signed overflow, bad shifts, misaligned access) on the corner-case graphs."""
    flags = ["-fsanitize=undefined", "-fno-sanitize-recover=all", "-O1"]
    for make in (variants_graph, misc_graph):
        g = make()
        _, exe = compile_and_build(g, tmp_path, g.name, extra_flags=flags)
        assert_bit_exact(g, exe, n=20)


def test_generated_files_and_header(tmp_path):
    g = cnn_graph()
    xs = random_int8(g, 3)
    info, exe = compile_and_build(g, tmp_path, "cnn", test_inputs=xs)
    d = Path(info["dir"])
    names = sorted(p.name for p in d.iterdir())
    assert {"qtc_cnn.c", "qtc_cnn.h", "qtc_model.h", "qtc_model_testvec.h", "qtc_kernels.h"} <= set(names)
    alias = (d / "qtc_model.h").read_text()
    for macro in ("QTC_MODEL_NAME", "QTC_MODEL_INPUT_BYTES", "QTC_MODEL_OUTPUT_BYTES", "QTC_MODEL_ARENA_BYTES",
                  "QTC_MODEL_MACS", "QTC_MODEL_INPUT_SCALE", "QTC_MODEL_INPUT_ZERO_POINT",
                  "QTC_MODEL_OUTPUT_SCALE", "QTC_MODEL_OUTPUT_ZERO_POINT"):
        assert f"#define {macro} " in alias
    assert "int qtc_model_invoke(const int8_t *in, int8_t *out);" in alias
    hdr = (d / "qtc_cnn.h").read_text()
    assert f"#define QTC_CNN_ARENA_BYTES {info['arena_bytes']}\n" in hdr
    assert "#define QTC_CNN_INPUT_SHAPE {1, 12, 12, 3}" in hdr
    src = (d / "qtc_cnn.c").read_text()
    assert src.count("QTC_ALIGNED(16) = {") >= 4 and "static const int8_t n0_w" in src
    # the specialised kernels were chosen
    for k in ("qtc_conv_s8(", "qtc_depthwise_conv3x3_s8(", "qtc_conv1x1_s8(", "qtc_fully_connected_s8("):
        assert k in src, k
    # the embedded test vectors hold the interpreter's outputs and the C code reproduces them
    res = subprocess.run([str(exe), "--testvec"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3/3 test vectors match" in res.stdout
    assert info["macs"] > 0 and info["weight_bytes"] > 0 and info["arena_bytes"] > 0


def test_memory_plan_reuses_and_aliases(tmp_path):
    from qtc.backends.c import compile_c

    g = cnn_graph()
    info = compile_c(g, tmp_path / "out", model_name="cnn")
    t = info["plan"]["tensors"]
    acts = [n for n in t if t[n]["storage"] == "arena"]
    naive = sum(-(-t[n]["bytes"] // 16) * 16 for n in acts)
    assert info["arena_bytes"] < naive
    # Reshape is an alias (same params): same storage, same offset
    rs = next(n for n in g.nodes if n.op == "Reshape")
    a, b = t[rs.inputs[0]], t[rs.outputs[0]]
    assert (a["storage"], a["offset"]) == (b["storage"], b["offset"])
    # no two tensors with overlapping lifetimes overlap in the arena
    buf = {}
    for n in acts:
        buf[(t[n]["offset"], t[n]["bytes"], t[n]["first"], t[n]["last"])] = n
    items = list(buf)
    for i, (o1, s1, f1, l1) in enumerate(items):
        assert o1 % 16 == 0
        for o2, s2, f2, l2 in items[i + 1:]:
            if f1 <= l2 and f2 <= l1:
                assert o1 + s1 <= o2 or o2 + s2 <= o1


def test_greedy_planner_unit():
    from qtc.backends.c.memplan import plan_memory

    # a -> b -> c -> d (chain): at most two buffers live at once
    steps = [(["a"], ["b"]), (["b"], ["c"]), (["c"], ["d"])]
    sizes = {"a": 100, "b": 300, "c": 200, "d": 50}
    p = plan_memory(steps, sizes, ["a"], ["d"])
    assert p.arena_bytes == 304 + 208  # b and c overlap in time: 300 -> 304 (aligned), c after it
    assert p.buffer_of("b").offset == 0 and p.buffer_of("c").offset == 304
    # in place: c may reuse b's bytes (elementwise, b dies at step 1)
    p2 = plan_memory([(["a"], ["b"]), (["b"], ["c"]), (["c"], ["d"])], {"a": 10, "b": 64, "c": 64, "d": 8},
                     ["a"], ["d"], inplace={1: [("b", "c")]})
    assert p2.tensor_buffer["b"] == p2.tensor_buffer["c"] and p2.arena_bytes == 64
    # graph input / output live in the caller's buffers, never in the arena
    assert p2.buffer_of("a").storage == "input" and p2.buffer_of("d").storage == "output"
    # random lifetimes: never overlapping, peak >= max live sum lower bound
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = 12
        sizes = {f"t{i}": int(rng.integers(1, 200)) for i in range(n)}
        steps = []
        for i in range(n):
            ins = [f"t{j}" for j in rng.choice(i, size=min(i, 2), replace=False)] if i else []
            steps.append((ins, [f"t{i}"]))
        p = plan_memory(steps, sizes, [], [f"t{n - 1}"])
        arena = [b for b in p.buffers if b.storage == "arena"]
        for i, b1 in enumerate(arena):
            for b2 in arena[i + 1:]:
                if b1.overlaps(b2):
                    assert b1.offset + b1.size <= b2.offset or b2.offset + b2.size <= b1.offset
        live_peak = max(sum(b.size for b in arena if b.first <= s <= b.last) for s in range(n))
        assert live_peak <= p.arena_bytes


def test_in_place_elementwise(tmp_path):
    from qtc.backends.c import compile_c

    b = FloatBuilder("inplace", (1, 6, 6, 4), seed=2)
    c = b.conv("x", 8, 3, pads=[1, 1, 1, 1])
    h = b.op("HardSwish", [c])
    y = b.op("MaxPool", [h], kernel=[2, 2], channels_last=True)
    g = ptq(b.done(y), calib_inputs(b.g))
    info, exe = compile_and_build(g, tmp_path, "inplace")
    t = info["plan"]["tensors"]
    assert t[c]["offset"] == t[h]["offset"] and t[c]["storage"] == t[h]["storage"] == "arena"
    assert info["arena_bytes"] == 288  # one 6x6x8 buffer, the table op runs in place
    assert_bit_exact(g, exe)


def test_deterministic_output(tmp_path):
    from qtc.backends.c import compile_c

    g = misc_graph()
    xs = random_int8(g, 2)
    a = compile_c(g, tmp_path / "a", model_name="misc", test_inputs=xs)
    b = compile_c(misc_graph(), tmp_path / "b", model_name="misc", test_inputs=xs)
    fa = sorted(p.name for p in Path(a["dir"]).iterdir())
    assert fa == sorted(p.name for p in Path(b["dir"]).iterdir())
    for name in fa:
        assert (Path(a["dir"]) / name).read_bytes() == (Path(b["dir"]) / name).read_bytes(), name


def test_unsupported_op_names_node_and_leaves_nothing(tmp_path):
    from qtc.backends.c import compile_c

    g = cnn_graph()
    node = g.nodes[3]
    g.nodes[3] = type(node)("ConvTranspose2D", "up/deconv", node.inputs, node.outputs, {"channels_last": True})
    out = tmp_path / "never"
    with pytest.raises(QtcError, match=r"node up/deconv \(ConvTranspose2D\): op ConvTranspose2D has no C kernel"):
        compile_c(g, out, model_name="bad")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_unsupported_graphs_are_rejected(tmp_path):
    from qtc.backends.c import compile_c

    b = FloatBuilder("f", (1, 4), seed=0)
    g = b.done(b.fc("x", 3))
    with pytest.raises(QtcError, match="int8 I/O"):  # a float graph
        compile_c(g, tmp_path / "o", model_name="f")
    q = ptq(g, [np.ones((1, 4), np.float32)])
    q.outputs = [q.outputs[0], q.inputs[0]]
    with pytest.raises(QtcError, match="exactly one of each"):  # two outputs
        compile_c(q, tmp_path / "o", model_name="f")
    b = FloatBuilder("nchw", (1, 3, 8, 8), seed=0)  # channels-first conv (as ONNX imports it)
    w = b.const("w", b.rng.normal(0, 0.3, (4, 3, 3, 3)))
    g = b.done(b.op("Conv2D", ["x", w], channels_last=False))
    with pytest.raises(QtcError, match=r"channels-first.*--channels-last"):
        compile_c(ptq(g, calib_inputs(g)), tmp_path / "o", model_name="nchw")
    assert not (tmp_path / "o").exists()


def test_riscv_build(tmp_path):
    """The same C builds for the emulated board (RV32IMAC, picolibc); the device loop runs it in QEMU."""
    _need("riscv64-unknown-elf-gcc")
    from qtc.backends.c import compile_c

    for make in (cnn_graph, misc_graph):
        g = make()
        info = compile_c(g, tmp_path / g.name, model_name=g.name, test_inputs=random_int8(g, 2))
        for src in info["sources"]:
            obj = tmp_path / (Path(src).name + ".o")
            res = subprocess.run([*RV32, "-I", info["dir"], "-c", src, "-o", str(obj)], capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
            assert obj.stat().st_size > 0


ESP_NN_SHIM_H = r"""
/* Test shim: the ESP-NN API (esp_nn_defs.h + esp_nn.h prototypes) with plain reference bodies. */
#ifndef ESP_NN_SHIM_H
#define ESP_NN_SHIM_H
#include <stdint.h>
typedef struct data_dims { int32_t width; int32_t height; int32_t channels; int32_t extra; } data_dims_t;
typedef struct data_2d { int32_t width; int32_t height; } data_2d_t;
typedef struct act_params { int32_t min; int32_t max; } act_params_t;
typedef struct quant_data { int32_t *shift; int32_t *mult; } quant_data_t;
typedef struct conv_params { int32_t in_offset; int32_t out_offset; data_2d_t stride; data_2d_t padding;
                             data_2d_t dilation; act_params_t activation; } conv_params_t;
typedef struct dw_conv_params { int32_t in_offset; int32_t out_offset; int32_t ch_mult; data_2d_t stride;
                                data_2d_t padding; data_2d_t dilation; act_params_t activation; } dw_conv_params_t;
void esp_nn_conv_s8(const data_dims_t *input_dims, const int8_t *input_data, const data_dims_t *filter_dims,
                    const int8_t *filter_data, const int32_t *bias, const data_dims_t *output_dims,
                    int8_t *out_data, const conv_params_t *conv_params, const quant_data_t *quant_data);
int esp_nn_get_conv_scratch_size(const data_dims_t *input_dims, const data_dims_t *filter_dims,
                                 const data_dims_t *output_dims, const conv_params_t *conv_params);
void esp_nn_set_conv_scratch_buf(const void *buf);
void esp_nn_depthwise_conv_s8(const data_dims_t *input_dims, const int8_t *input_data,
                              const data_dims_t *filter_dims, const int8_t *filter_data, const int32_t *bias,
                              const data_dims_t *output_dims, int8_t *out_data,
                              const dw_conv_params_t *conv_params, const quant_data_t *quant_data);
int esp_nn_get_depthwise_conv_scratch_size(const data_dims_t *input_dims, const data_dims_t *filter_dims,
                                           const data_dims_t *output_dims, const dw_conv_params_t *conv_params);
void esp_nn_set_depthwise_conv_scratch_buf(const void *buf);
void esp_nn_fully_connected_per_ch_s8(const int8_t *input_data, const int32_t input_offset,
                                      const uint16_t row_len, const int8_t *filter_data,
                                      const int32_t filter_offset, const int32_t *bias, int8_t *out_data,
                                      const uint16_t out_channels, const int32_t out_offset,
                                      const int32_t *out_shift, const int32_t *out_mult,
                                      const int32_t activation_min, const int32_t activation_max);
void esp_nn_add_elementwise_s8(const int8_t *input1_data, const int8_t *input2_data,
                               const int32_t input1_offset, const int32_t input2_offset,
                               const int32_t input1_mult, const int32_t input2_mult,
                               const int32_t input1_shift, const int32_t input2_shift,
                               const int32_t left_shift, int8_t *output, const int32_t out_offset,
                               const int32_t out_mult, const int32_t out_shift,
                               const int32_t activation_min, const int32_t activation_max, const int32_t size);
void esp_nn_mul_elementwise_s8(const int8_t *input1_data, const int8_t *input2_data,
                               const int32_t input1_offset, const int32_t input2_offset, int8_t *output,
                               const int32_t out_offset, const int32_t out_mult, const int32_t out_shift,
                               const int32_t activation_min, const int32_t activation_max, const int32_t size);
void esp_nn_max_pool_s8(const int8_t *input, const uint16_t input_wd, const uint16_t input_ht, int8_t *output,
                        const uint16_t output_wd, const uint16_t output_ht, const uint16_t stride_wd,
                        const uint16_t stride_ht, const uint16_t filter_wd, const uint16_t filter_ht,
                        const uint16_t pad_wd, const uint16_t pad_ht, const int32_t activation_min,
                        const int32_t activation_max, const uint16_t channels);
void esp_nn_avg_pool_s8(const int8_t *input, const uint16_t input_wd, const uint16_t input_ht, int8_t *output,
                        const uint16_t output_wd, const uint16_t output_ht, const uint16_t stride_wd,
                        const uint16_t stride_ht, const uint16_t filter_wd, const uint16_t filter_ht,
                        const uint16_t pad_wd, const uint16_t pad_ht, const int32_t activation_min,
                        const int32_t activation_max, const uint16_t channels);
extern int esp_nn_shim_calls;
#endif
"""

ESP_NN_SHIM_C = r"""
/* Reference bodies with ESP-NN's conventions: raw bias + in_offset, padded taps skipped,
 * depthwise filters [KH][KW][C], TFLite requantization (qtc_requant). */
#include "esp_nn.h"
#include "qtc_kernels.h"
int esp_nn_shim_calls = 0;
static int8_t out8(int32_t acc, int32_t m, int32_t s, int32_t off, int32_t lo, int32_t hi)
{ return qtc_clamp_s8(qtc_requant(acc, m, s) + off, lo, hi); }
void esp_nn_conv_s8(const data_dims_t *id, const int8_t *x, const data_dims_t *fd, const int8_t *w,
                    const int32_t *bias, const data_dims_t *od, int8_t *y, const conv_params_t *p,
                    const quant_data_t *q)
{
    int oy, ox, oc, ky, kx, ic;
    ++esp_nn_shim_calls;
    for (oy = 0; oy < od->height; ++oy) for (ox = 0; ox < od->width; ++ox) for (oc = 0; oc < od->channels; ++oc) {
        int32_t acc = bias ? bias[oc] : 0;
        for (ky = 0; ky < fd->height; ++ky) for (kx = 0; kx < fd->width; ++kx) {
            int iy = oy * p->stride.height - p->padding.height + ky, ix = ox * p->stride.width - p->padding.width + kx;
            if (iy < 0 || iy >= id->height || ix < 0 || ix >= id->width) continue;
            for (ic = 0; ic < id->channels; ++ic)
                acc += (x[(iy * id->width + ix) * id->channels + ic] + p->in_offset) *
                       w[((oc * fd->height + ky) * fd->width + kx) * id->channels + ic];
        }
        *y++ = out8(acc, q->mult[oc], q->shift[oc], p->out_offset, p->activation.min, p->activation.max);
    }
}
int esp_nn_get_conv_scratch_size(const data_dims_t *a, const data_dims_t *b, const data_dims_t *c,
                                 const conv_params_t *d) { (void)a; (void)b; (void)c; (void)d; return 64; }
void esp_nn_set_conv_scratch_buf(const void *buf) { (void)buf; }
void esp_nn_depthwise_conv_s8(const data_dims_t *id, const int8_t *x, const data_dims_t *fd, const int8_t *w,
                              const int32_t *bias, const data_dims_t *od, int8_t *y, const dw_conv_params_t *p,
                              const quant_data_t *q)
{
    int oy, ox, oc, ky, kx;
    ++esp_nn_shim_calls;
    for (oy = 0; oy < od->height; ++oy) for (ox = 0; ox < od->width; ++ox) for (oc = 0; oc < od->channels; ++oc) {
        int32_t acc = bias ? bias[oc] : 0;
        for (ky = 0; ky < fd->height; ++ky) for (kx = 0; kx < fd->width; ++kx) {
            int iy = oy * p->stride.height - p->padding.height + ky, ix = ox * p->stride.width - p->padding.width + kx;
            if (iy < 0 || iy >= id->height || ix < 0 || ix >= id->width) continue;
            acc += (x[(iy * id->width + ix) * id->channels + oc / p->ch_mult] + p->in_offset) *
                   w[(ky * fd->width + kx) * od->channels + oc];
        }
        *y++ = out8(acc, q->mult[oc], q->shift[oc], p->out_offset, p->activation.min, p->activation.max);
    }
}
int esp_nn_get_depthwise_conv_scratch_size(const data_dims_t *a, const data_dims_t *b, const data_dims_t *c,
                                           const dw_conv_params_t *d) { (void)a; (void)b; (void)c; (void)d; return 0; }
void esp_nn_set_depthwise_conv_scratch_buf(const void *buf) { (void)buf; }
void esp_nn_fully_connected_per_ch_s8(const int8_t *x, const int32_t in_off, const uint16_t n, const int8_t *w,
                                      const int32_t w_off, const int32_t *bias, int8_t *y, const uint16_t oc_n,
                                      const int32_t out_off, const int32_t *shift, const int32_t *mult,
                                      const int32_t lo, const int32_t hi)
{
    int oc, i;
    ++esp_nn_shim_calls;
    for (oc = 0; oc < oc_n; ++oc) {
        int32_t acc = bias ? bias[oc] : 0;
        for (i = 0; i < n; ++i) acc += (x[i] + in_off) * (w[oc * n + i] + w_off);
        y[oc] = out8(acc, mult[oc], shift[oc], out_off, lo, hi);
    }
}
void esp_nn_add_elementwise_s8(const int8_t *a, const int8_t *b, const int32_t a_off, const int32_t b_off,
                               const int32_t a_m, const int32_t b_m, const int32_t a_s, const int32_t b_s,
                               const int32_t ls, int8_t *y, const int32_t out_off, const int32_t o_m,
                               const int32_t o_s, const int32_t lo, const int32_t hi, const int32_t size)
{
    int i;
    ++esp_nn_shim_calls;
    for (i = 0; i < size; ++i) {
        int32_t sa = qtc_requant((a[i] + a_off) * (1 << ls), a_m, a_s);
        int32_t sb = qtc_requant((b[i] + b_off) * (1 << ls), b_m, b_s);
        y[i] = out8(sa + sb, o_m, o_s, out_off, lo, hi);
    }
}
void esp_nn_mul_elementwise_s8(const int8_t *a, const int8_t *b, const int32_t a_off, const int32_t b_off,
                               int8_t *y, const int32_t out_off, const int32_t m, const int32_t s,
                               const int32_t lo, const int32_t hi, const int32_t size)
{
    int i;
    ++esp_nn_shim_calls;
    for (i = 0; i < size; ++i) y[i] = out8((a[i] + a_off) * (b[i] + b_off), m, s, out_off, lo, hi);
}
static void pool(int avg, const int8_t *x, int iw, int ih, int8_t *y, int ow, int oh, int sw, int sh, int fw,
                 int fh, int pw, int ph, int lo, int hi, int ch)
{
    int oy, ox, c, ky, kx;
    ++esp_nn_shim_calls;
    for (oy = 0; oy < oh; ++oy) for (ox = 0; ox < ow; ++ox) for (c = 0; c < ch; ++c) {
        int32_t acc = avg ? 0 : -128, n = 0;
        for (ky = 0; ky < fh; ++ky) for (kx = 0; kx < fw; ++kx) {
            int iy = oy * sh - ph + ky, ix = ox * sw - pw + kx;
            int32_t v;
            if (iy < 0 || iy >= ih || ix < 0 || ix >= iw) continue;
            v = x[(iy * iw + ix) * ch + c];
            ++n;
            if (avg) acc += v; else if (v > acc) acc = v;
        }
        if (avg) acc = (acc > 0 ? acc + n / 2 : acc - n / 2) / n;
        *y++ = qtc_clamp_s8(acc, lo, hi);
    }
}
void esp_nn_max_pool_s8(const int8_t *x, const uint16_t iw, const uint16_t ih, int8_t *y, const uint16_t ow,
                        const uint16_t oh, const uint16_t sw, const uint16_t sh, const uint16_t fw,
                        const uint16_t fh, const uint16_t pw, const uint16_t ph, const int32_t lo,
                        const int32_t hi, const uint16_t ch)
{ pool(0, x, iw, ih, y, ow, oh, sw, sh, fw, fh, pw, ph, lo, hi, ch); }
void esp_nn_avg_pool_s8(const int8_t *x, const uint16_t iw, const uint16_t ih, int8_t *y, const uint16_t ow,
                        const uint16_t oh, const uint16_t sw, const uint16_t sh, const uint16_t fw,
                        const uint16_t fh, const uint16_t pw, const uint16_t ph, const int32_t lo,
                        const int32_t hi, const uint16_t ch)
{ pool(1, x, iw, ih, y, ow, oh, sw, sh, fw, fh, pw, ph, lo, hi, ch); }
"""


def esp_nn_graph() -> Graph:
    """Every op the ESP-NN path calls: conv, depthwise (multiplier 1 and 2), 1x1, FC, Add, Mul, pools."""
    b = FloatBuilder("espnn", (1, 9, 7, 3), seed=11)  # non-square, asymmetric strides and pads throughout
    c = b.conv("x", 6, 3, pads=[1, 0, 1, 0], strides=[2, 1], activation="relu")         # 5x5
    d = b.conv(c, 12, 3, groups=6, pads=[0, 1, 1, 1])                                    # 4x5, multiplier 2
    d = b.conv(d, 12, 3, groups=12, pads=[1, 0, 1, 1], strides=[1, 2], activation="relu6")  # 4x2
    p = b.conv(d, 12, 1)
    a = b.op("Add", [p, d])
    m = b.op("Mul", [a, p])
    mp = b.op("MaxPool", [m], kernel=[2, 1], strides=[1, 1], pads=[0, 0, 1, 0], channels_last=True)
    ap = b.op("AvgPool", [mp], kernel=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1], channels_last=True)
    fl = b.op("Reshape", [ap], shape=[1, -1])
    return ptq(b.done(b.fc(fl, 7)), calib_inputs(b.g), share=("MaxPool", "AvgPool", "Reshape"))


def test_esp_nn_path_matches(tmp_path):
    """--esp-nn: the ESP-NN calls type-check against the real prototypes and, with reference bodies behind
    them (ESP-NN conventions: raw bias, in_offset, HWC depthwise filters), give the interpreter's bytes."""
    g = esp_nn_graph()
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "esp_nn.h").write_text(ESP_NN_SHIM_H)
    (shim / "esp_nn_shim.c").write_text(ESP_NN_SHIM_C)
    info, exe = compile_and_build(g, tmp_path, "espnn", esp_nn=True, extra_flags=["-DQTC_USE_ESP_NN"],
                                  extra_sources=[shim / "esp_nn_shim.c"], include=[shim])
    src = Path(info["model_c"]).read_text()
    for fn in ("esp_nn_conv_s8(", "esp_nn_depthwise_conv_s8(", "esp_nn_fully_connected_per_ch_s8(",
               "esp_nn_add_elementwise_s8(", "esp_nn_mul_elementwise_s8(", "esp_nn_max_pool_s8(",
               "esp_nn_avg_pool_s8("):
        assert fn in src, fn
    assert_bit_exact(g, exe)
    # without QTC_USE_ESP_NN the same file is the plain qtc build
    _, exe2 = compile_and_build(g, tmp_path, "espnn", esp_nn=True)
    assert_bit_exact(g, exe2, n=20)


def test_cli_compile(tmp_path):
    click = pytest.importorskip("click.testing")
    from qtc.backends.cli import compile as compile_cmd
    from qtc.ir import save

    g = cnn_graph()
    qir = save(g, tmp_path / "cnn.qir")
    out = tmp_path / "cnn_c"
    res = click.CliRunner().invoke(compile_cmd, [str(qir), "--backend", "c", "-o", str(out), "--target", "qemu-rv32",
                                                 "--test-vectors", "4"])
    assert res.exit_code == 0, res.output
    assert "arena" in res.output and "weights" in res.output
    assert (out / "qtc_cnn.c").exists() and (out / "qtc_model_testvec.h").exists()
    assert "#define QTC_TESTVEC_COUNT 4" in (out / "qtc_model_testvec.h").read_text()
    bad = click.CliRunner().invoke(compile_cmd, [str(qir), "--backend", "onnx", "-o", str(tmp_path / "x")])
    assert bad.exit_code != 0


# --------------------------------------------------- TF-converter int8 models
def _tflite_int8(build, calib):
    tf = pytest.importorskip("tensorflow")
    model = build()

    def rep():
        for x in calib:
            yield [x]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_tflite_converter_model_bit_exact(tmp_path):
    """A tf_keras CNN converted by the TF converter (int8 I/O), imported with load_tflite, compiled to C."""
    pytest.importorskip("tf_keras")
    from conftest import has_module

    if not has_module("qtc.frontends.tflite"):
        pytest.skip("the .tflite front end is not available")
    import tf_keras as keras

    from qtc.frontends.tflite import load_tflite

    def build():
        keras.utils.set_random_seed(0)
        inp = keras.Input((14, 14, 2), batch_size=1)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
        y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6")(x)
        y = keras.layers.Conv2D(8, 1)(y)
        z = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
        y = keras.layers.Add()([y, z])
        y = keras.layers.MaxPooling2D(2, padding="same")(y)
        y = keras.layers.AveragePooling2D(2)(y)
        y = keras.layers.Conv2D(12, 1, activation="tanh")(y)
        y = keras.layers.GlobalAveragePooling2D()(y)
        y = keras.layers.Dense(16, activation="sigmoid")(y)
        y = keras.layers.Dense(5)(y)
        return keras.Model(inp, keras.layers.Softmax()(y))

    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (1, 14, 14, 2)).astype(np.float32) for _ in range(16)]
    g = load_tflite(_tflite_int8(build, calib), name="keras_cnn")
    _, exe = compile_and_build(g, tmp_path, "keras_cnn")
    assert_bit_exact(g, exe)


EXAMPLE_MODELS = ("digits_cnn", "ts_cnn", "peer_encoder", "policy_head")


@pytest.mark.parametrize("name", EXAMPLE_MODELS)
def test_backend_c_example_models(tmp_path, name):
    """The trained example models (``make models`` → build/models/<name>/<name>_int8.tflite)."""
    from conftest import ROOT, has_module

    path = Path(os.environ.get("QTC_MODELS_DIR", ROOT / "build" / "models")) / name / f"{name}_int8.tflite"
    if not path.exists():
        pytest.skip(f"{path} not built (make models)")
    if not has_module("qtc.frontends.tflite"):
        pytest.skip("the .tflite front end is not available")
    from qtc.frontends.tflite import load_tflite

    g = load_tflite(str(path))
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        pytest.skip(f"{name} has {len(g.inputs)} inputs / {len(g.outputs)} outputs (C back end: one of each)")
    info, exe = compile_and_build(g, tmp_path, name, test_inputs=random_int8(g, 3))
    assert_bit_exact(g, exe)
    res = subprocess.run([str(exe), "--testvec"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
