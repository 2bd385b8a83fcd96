"""``qtc bench``: run the model on a board through the bench firmware, read the
latency back, and check the board's outputs against the reference bit for bit.

Where it runs (``port``):
* ``None``: the target's ``runner.default`` (``qemu``/``qemu-rv32``: the emulated
  board; ``host``: the host build);
* ``"qemu"``: build the ELF and boot it in QEMU; ``"host"``: build and spawn the
  host firmware on a pty;
* anything else: a serial port or URL with the bench firmware already flashed.

The report (``bench_<target>.json``) always says where it ran and what the
timing means: real cycles, emulated instructions, or the host clock.
"""
from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import save_json
from ..errors import QtcError
from ..ir.boundary import quantize_input
from ..target import load_target
from . import protocol as P
from .link import HostBoard, open_link
from .session import DeviceSession

WHERE = {P.TIMING_EMULATED: "emulated", P.TIMING_HOST: "host", P.TIMING_CYCLES: "board"}
WHERE_LABEL = {"emulated": "emulated board (QEMU RV32), timing in retired instructions",
               "host": "host build (the build machine), timing by the host clock",
               "board": "real board, timing by its cycle counter"}


# ---------------------------------------------------------------- reference
@dataclass
class Reference:
    inputs: list[np.ndarray]          # int8, flat
    outputs: list[np.ndarray] | None  # int8, flat; None = nothing to check against
    source: str


def _strip_c_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _c_array_values(text: str, name: str, where: str) -> list[int]:
    m = re.search(rf"\b{name}\s*\[[^=]*=\s*\{{(.*?)\}}\s*;", text, flags=re.S)
    if not m:
        raise QtcError(f"cannot find {name} in the test vectors", where=where,
                       hint="regenerate the model folder with the C back end")
    return [int(v, 0) for v in re.findall(r"-?(?:0[xX][0-9a-fA-F]+|\d+)", m.group(1))]


def reference_from_testvec(model_dir: str | Path, input_bytes: int, output_bytes: int) -> Reference:
    """The test vectors the C back end embedded (inputs + reference-interpreter outputs)."""
    path = Path(model_dir) / "qtc_model_testvec.h"
    if not path.exists():
        raise QtcError(f"no reference to check the board's outputs against: {path.name} is missing",
                       where=str(model_dir), hint="pass --qir MODEL.qir (the reference interpreter runs it)")
    text = _strip_c_comments(path.read_text())
    xs = _c_array_values(text, "qtc_testvec_in", str(path))
    ys = _c_array_values(text, "qtc_testvec_out", str(path))
    if not xs or len(xs) % input_bytes or len(ys) != len(xs) // input_bytes * output_bytes:
        raise QtcError(f"test vectors have {len(xs)} input and {len(ys)} output values, which do not fit "
                       f"{input_bytes}-byte inputs and {output_bytes}-byte outputs", where=str(path),
                       hint="the firmware and the model folder disagree: rebuild both")
    n = len(xs) // input_bytes
    ins = [np.array(xs[k * input_bytes:(k + 1) * input_bytes], dtype=np.int8) for k in range(n)]
    outs = [np.array(ys[k * output_bytes:(k + 1) * output_bytes], dtype=np.int8) for k in range(n)]
    return Reference(ins, outs, "test vectors embedded by the C back end (reference interpreter outputs)")


def graph_inputs(graph, inputs_npy: str | None, count: int, seed: int) -> list[np.ndarray]:
    """int8 inputs for the graph: from a .npy (int8, or float quantized with the
    input's params), else ``count`` seeded random int8 tensors."""
    t = graph.tensors[graph.inputs[0]]
    if inputs_npy:
        x = np.load(inputs_npy)
        if x.shape == tuple(t.shape):
            x = x[None]
        if x.shape[1:] != tuple(t.shape):
            raise QtcError(f"inputs have shape {x.shape}, the model takes {tuple(t.shape)} (or a batch of them)",
                           where=str(inputs_npy), hint="reshape the array")
        if np.issubdtype(x.dtype, np.floating):
            if t.quant is None:
                raise QtcError("float inputs need the model input's quantization params", where=str(inputs_npy),
                               hint="pass int8 inputs")
            x = quantize_input(graph, graph.inputs[0], x)
        return [np.asarray(v, dtype=np.int8) for v in x]
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, size=t.shape).astype(np.int8) for _ in range(count)]


def reference_from_graph(graph, inputs: list[np.ndarray], numerics: str = "tflite") -> Reference:
    from ..interp.runner import run

    outs = []
    for x in inputs:
        y = run(graph, {graph.inputs[0]: x}, numerics=numerics)[graph.outputs[0]]
        outs.append(np.asarray(y).astype(np.int8).reshape(-1))
    return Reference([np.asarray(x, np.int8).reshape(-1) for x in inputs], outs,
                     f"reference interpreter (qtc.interp, {numerics} numerics)")


def model_name_of(model_dir: str | Path) -> str | None:
    m = re.search(r'#define\s+QTC_MODEL_NAME\s+"([^"]*)"', (Path(model_dir) / "qtc_model.h").read_text())
    return m.group(1) if m else None


# ---------------------------------------------------------------- statistics
def summarize(values) -> dict | None:
    """min / median / p95 (nearest rank) / max / mean."""
    v = sorted(float(x) for x in values)
    if not v:
        return None
    n = len(v)
    median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    p95 = v[max(0, math.ceil(0.95 * n) - 1)]
    r = lambda x: round(x, 4)  # noqa: E731 - readable, stable JSON
    return {"min": r(v[0]), "median": r(median), "p95": r(p95), "max": r(v[-1]), "mean": r(sum(v) / n), "n": n}


def latency_us(info: P.Info, samples: list[tuple[int, int, int]]) -> list[float]:
    """Per-inference microseconds, from the most precise counter the board has."""
    mhz = info.cpu_hz / 1e6
    if info.timing_kind == P.TIMING_EMULATED and info.flags & P.HAS_INSTRET and mhz:
        return [s[1] / mhz for s in samples]
    if info.flags & P.HAS_CYCLES and mhz:
        return [s[0] / mhz for s in samples]
    return [float(s[2]) for s in samples]


# ---------------------------------------------------------------- the loop
@dataclass
class Measurement:
    info: P.Info
    samples: list[tuple[int, int, int]]
    outputs: list[np.ndarray]
    stack_used: int
    unstable_runs: int
    runs: int
    warmup: int


def measure(session: DeviceSession, inputs: list[np.ndarray], *, runs: int, warmup: int = 1,
            timeout: float = 10.0, connect_timeout: float = 5.0) -> Measurement:
    """HELLO, then per input: write it, run (``runs`` timed runs for the first
    input, one for the others), read samples and output."""
    info = session.hello(connect_timeout)
    samples: list[tuple[int, int, int]] = []
    outputs: list[np.ndarray] = []
    stack, unstable = 0, 0
    per_run_s = None
    for k, x in enumerate(inputs):
        data = np.asarray(x, dtype=np.int8).tobytes()
        if len(data) != info.input_bytes:
            raise QtcError(f"input {k} has {len(data)} bytes, the board's model takes {info.input_bytes}",
                           where=session.link.name, hint="flash the firmware built for this model")
        session.write_input(data)
        if per_run_s is None:  # probe: one run to learn how long a run takes
            t0 = time.monotonic()
            session.run(1, warmup, timeout=timeout)
            per_run_s = (time.monotonic() - t0) / (1 + warmup)
        todo = runs if k == 0 else 1
        while todo > 0:
            n = min(todo, info.max_runs)
            res = session.run(n, 0, timeout=timeout + 3 * n * per_run_s)
            if k == 0:
                samples += session.read_samples(n)
            stack = max(stack, res.stack_used) if res.stack_used != P.STACK_UNKNOWN else P.STACK_UNKNOWN
            unstable += res.unstable_runs
            todo -= n
        outputs.append(np.frombuffer(session.read_output(info.output_bytes), dtype=np.int8).copy())
    return Measurement(info, samples, outputs, stack, unstable, runs, warmup)


def compare_outputs(outputs: list[np.ndarray], ref: Reference) -> list[dict]:
    mismatches = []
    for k, (got, want) in enumerate(zip(outputs, ref.outputs or [])):
        want = np.asarray(want, dtype=np.int8).reshape(-1)
        if got.shape != want.shape or not np.array_equal(got, want):
            idx = int(np.flatnonzero(got != want)[0]) if got.shape == want.shape else 0
            mismatches.append({"input": k, "byte": idx, "board": int(got[idx]) if got.size > idx else None,
                               "reference": int(want[idx]) if want.size > idx else None,
                               "bytes_differing": int(np.count_nonzero(got != want)) if got.shape == want.shape
                               else int(want.size)})
    return mismatches


def report(target: str, m: Measurement, ref: Reference, *, port_label: str | None) -> dict:
    info = m.info
    where = WHERE.get(info.timing_kind, "board")
    lat = summarize(latency_us(info, m.samples))
    cycles = summarize(s[0] for s in m.samples) if info.flags & P.HAS_CYCLES else None
    instr = summarize(s[1] for s in m.samples) if info.flags & P.HAS_INSTRET else None
    mism = compare_outputs(m.outputs, ref) if ref.outputs is not None else []
    timing_unit = "ns (host clock)" if info.timing_kind == P.TIMING_HOST else "cycles"
    doc = {
        "schema": "qtc.bench/1",
        "target": target,
        "model": info.model,
        "where": {"kind": where, "label": WHERE_LABEL[where], "board": info.board, "timing": info.timing_label,
                  "cpu_mhz": info.cpu_hz / 1e6, "port": port_label},
        "runs": m.runs,
        "warmup": m.warmup,
        "latency_us": lat,
        "cycles": cycles,
        "cycles_unit": timing_unit,
        "instructions": instr,
        "macs": info.macs,
        "cycles_per_mac": (cycles["median"] / info.macs) if (cycles and info.macs and
                                                            info.timing_kind != P.TIMING_HOST) else None,
        "arena_bytes": info.arena_bytes,
        "stack_bytes_used": None if m.stack_used == P.STACK_UNKNOWN else m.stack_used,
        "stack_bytes_available": info.stack_bytes or None,
        "outputs": {"checked": len(m.outputs) if ref.outputs is not None else 0,
                    "bit_exact": not mism and ref.outputs is not None,
                    "reference": ref.source, "mismatches": mism},
        "unstable_runs": m.unstable_runs,
        "protocol_version": info.version,
    }
    if info.timing_kind == P.TIMING_EMULATED:
        doc["latency_note"] = (f"emulated (instructions): retired instructions / {info.cpu_hz / 1e6:g} MHz "
                               "nominal clock, not a measurement of real hardware")
    return doc


def format_table(doc: dict) -> str:
    w = doc["where"]
    lines = [f"qtc bench: {doc['model']} for {doc['target']} on {w['board']}: {w['label']}",
             f"timing: {w['timing']} at {w['cpu_mhz']:g} MHz; {doc['runs']} runs after {doc['warmup']} warm-up"]
    o = doc["outputs"]
    if o["checked"]:
        verdict = "bit-exact" if o["bit_exact"] else f"{len(o['mismatches'])} MISMATCHING"
        lines.append(f"outputs: {o['checked']} checked, {verdict} vs {o['reference']}")
    rows = [("latency (us)", doc["latency_us"]), (doc["cycles_unit"], doc["cycles"]),
            ("instructions", doc["instructions"])]
    lines.append(f"{'':<18}{'min':>12}{'median':>12}{'p95':>12}{'max':>12}")
    for name, s in rows:
        if s:
            fmt = "{:>12.1f}" if name.startswith("latency") else "{:>12.0f}"
            lines.append(f"{name:<18}" + "".join(fmt.format(s[k]) for k in ("min", "median", "p95", "max")))
    extra = [f"arena {doc['arena_bytes']} B"]
    if doc["stack_bytes_used"] is not None:
        extra.append(f"stack {doc['stack_bytes_used']} B of {doc['stack_bytes_available']} B")
    extra.append(f"{doc['macs']} MACs")
    if doc["cycles_per_mac"]:
        unit = "instructions" if w["timing"].startswith("emulated") else "cycles"
        extra.append(f"{doc['cycles_per_mac']:.2f} {unit}/MAC")
    lines.append(" · ".join(extra))
    return "\n".join(lines)


# ---------------------------------------------------------------- qtc bench
def qir_model_name(qir: str | Path) -> str:
    return re.sub(r"\W", "_", Path(qir).name.removesuffix(".qir")) or "model"


def compile_graph(graph, out_dir: Path, name: str, inputs: list[np.ndarray], *, esp_nn: bool = False) -> Path:
    """The C back end's model folder (with the inputs as embedded test vectors) in ``out_dir/c_<name>``."""
    try:
        from ..backends.c import compile_c
    except ImportError:
        raise QtcError("the C back end is not available in this qtc",
                       hint="pass --model-dir with generated C") from None
    model_dir = Path(out_dir) / f"c_{name}"
    compile_c(graph, model_dir, model_name=name, test_inputs=inputs, esp_nn=esp_nn)
    return model_dir


@contextlib.contextmanager
def _board_link(where: str, model_dir: Path, out_dir: Path, *, baud: int, connect_timeout: float):
    """Yield (link, port label, the board process we started or None) for the chosen place."""
    from .build import build_host, build_qemu
    from .qemu import QemuBoard

    fw_dir = out_dir / "firmware"
    if where in ("qemu", "qemu-rv32"):
        res = build_qemu(model_dir, fw_dir / "qemu-rv32", target=load_target("qemu-rv32"))
        with QemuBoard(res.artifact) as board, open_link(board.url, baud, connect_timeout=connect_timeout) as link:
            yield link, "qemu", board
    elif where == "host":
        res = build_host(model_dir, fw_dir / "host", target=load_target("host"))
        with HostBoard(res.artifact) as board, open_link(board.port, baud, connect_timeout=connect_timeout) as link:
            yield link, "host", board
    else:
        with open_link(where, baud, connect_timeout=connect_timeout) as link:
            yield link, where, None


def run_bench(*, target: str = "qemu-rv32", port: str | None = None, model_dir: str | None = None,
              qir: str | None = None, runs: int = 100, warmup: int = 1, out_dir: str = ".",
              timeout: float = 10.0, connect_timeout: float = 5.0, baud: int = 115200,
              inputs_npy: str | None = None, n_inputs: int = 3, seed: int = 0,
              check: bool = True) -> tuple[dict, Path]:
    """Run the bench; returns (report, path of bench_<target>.json).  Raises
    QtcError on any link failure and (``check``), after writing the report, on an
    output mismatch."""
    if runs < 1:
        raise QtcError(f"--runs must be at least 1, got {runs}", hint="e.g. --runs 100")
    if not model_dir and not qir:
        raise QtcError("nothing to bench", hint="pass --model-dir DIR (generated C) or --qir MODEL.qir")
    tgt = load_target(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graph = None
    if qir:
        from ..ir.serialize import load

        graph = load(qir)
        inputs = graph_inputs(graph, inputs_npy, n_inputs, seed)
        ref = reference_from_graph(graph, inputs, tgt.numerics or "tflite")
        mdir = Path(model_dir) if model_dir else compile_graph(graph, out, qir_model_name(qir), inputs)
    else:
        mdir = Path(model_dir)
        ref = None
    where = port or str(tgt.runner.get("default", "qemu"))
    with _board_link(where, mdir, out, baud=baud, connect_timeout=connect_timeout) as (link, label, board):
        session = DeviceSession(link, timeout=min(timeout, 5.0))
        info = session.hello(connect_timeout)
        want = model_name_of(mdir)
        if want and info.model != want:
            raise QtcError(f"the board runs model {info.model!r}, not {want!r}", where=label,
                           hint="flash the firmware built for this model (qtc build, then qtc flash)")
        if ref is None:
            ref = reference_from_testvec(mdir, info.input_bytes, info.output_bytes)
        m = measure(session, ref.inputs, runs=runs, warmup=warmup, timeout=timeout, connect_timeout=connect_timeout)
        if board is not None:  # an emulator/host process we started: end it cleanly
            session.bye()
            if hasattr(board, "wait"):
                board.wait(5)
    doc = report(tgt.name, m, ref, port_label=None if label in ("qemu", "host") else label)
    path = save_json(out / f"bench_{tgt.name}.json", doc)
    if check:
        check_outputs(doc, path)
    return doc, path


def check_outputs(doc: dict, path: Path) -> None:
    """Raise a one-line QtcError if the board's outputs differ from the reference."""
    mism = doc["outputs"]["mismatches"]
    if mism:
        f = mism[0]
        raise QtcError(f"the board's output differs from the reference for input {f['input']}: byte {f['byte']} "
                       f"is {f['board']}, reference {f['reference']} ({f['bytes_differing']} bytes differ; "
                       f"report in {path})",
                       where=doc["where"]["board"],
                       hint="the C kernels disagree with the reference interpreter; run the host build "
                            "(--port host) to see if the board or the C is at fault")
