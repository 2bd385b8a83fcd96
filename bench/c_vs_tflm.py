"""qtc's generated C against TFLM on the example models: instructions, RAM, flash.

    python -m bench.c_vs_tflm [--models digits_cnn,ts_cnn,peer_encoder,policy_head]
                              [--models-dir build/models] [--vectors 4] [--seed 0] [--opt -O2]
                              [--out bench/results/c_vs_tflm.json]

Both sides run the same int8 model: TFLM runs the TF converter's
``<name>_int8.tflite``; qtc compiles the IR imported from that same file
(``qtc.frontends.tflite.load_tflite``) with the C back end.  The inputs are
``--vectors`` seeded random int8 tensors; every output byte of qtc (host and
emulated board) must equal TFLM's, else the bench fails.

* **host instructions**: valgrind callgrind, counting only the inference call:
  ``--toggle-collect=qtc_model_invoke`` on a gcc build of the generated C
  (bench/harness/c_vs_tflm_main.c), and ``--toggle-collect=`` TFLM's
  ``MicroInterpreter::Invoke()`` on a Python process driving the
  ``tflite-micro`` wheel's runtime (its reference kernels).  Per inference.
* **RV32**: the generated C in the emulated board (QEMU RV32IMAC, the
  qemu-rv32 target's compiler flags); retired instructions (minstret) per
  inference, and per layer from a second build whose layer hooks read
  minstret around each kernel call (bench/harness/qtc_layer_profile.h).
* **RAM**: qtc's static arena + scratch buffer (the RV32 stack high-water mark is
  reported beside it) against TFLM's arena as TFLM measures it: the smallest
  ``arena_size`` that allocates and invokes (``qtc.backends.tflite.size``).
* **flash**: qtc = text + data of the model and kernel objects linked with
  ``--gc-sections`` from ``qtc_model_invoke`` (code + weights + tables), for the
  host (x86-64) and RV32; TFLM = the wheel's x86-64 machine code reachable from
  the interpreter and the model's op registrations (bench/harness/tflm_code.py),
  without its optional compression code, + the flatbuffer.  The ratio compares
  x86-64 with x86-64.

The JSON (sorted keys, no timings) goes to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from qtc.errors import QtcError

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).resolve().parent / "harness"
DEFAULT_MODELS = ("digits_cnn", "ts_cnn", "peer_encoder", "policy_head")
SCHEMA = "qtc.bench.c_vs_tflm/1"
TARGETS = {"host_instructions_ratio_max": 0.5, "rv32_layer_instructions_per_mac_max": 4.5,
           "ram_ratio_max": 0.7, "flash_ratio_max": 1.0}
LAYER_OPS = ("Conv1D", "Conv2D", "FullyConnected")
HOST_CFLAGS = ["-std=c99", "-Wall", "-Wextra"]
COMPRESSION = ("ecompress", "ompression", "Compressed")  # optional TFLM build feature, not counted


# --------------------------------------------------------------------------- tools
def _tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if not path:
        raise QtcError(f"{name} not found", where="bench.c_vs_tflm", hint=hint)
    return path


def _run(cmd: list[str], what: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise QtcError(f"{what} failed: {' | '.join(tail)}", where=str(cmd[0]),
                       hint="run the command by hand: " + " ".join(map(str, cmd))[:300])
    return r


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


def callgrind_per_call(cmd: list[str], toggle: str, calls: int, tmp: Path, env=None) -> tuple[float, str]:
    """Instructions (Ir) callgrind counts inside ``toggle`` over the run, per call; and stdout."""
    out = tmp / "callgrind.out"
    r = _run([_tool("valgrind", "apt-get install valgrind"), "--tool=callgrind", f"--callgrind-out-file={out}",
              f"--toggle-collect={toggle}", *cmd], "callgrind", env=env)
    m = re.search(r"^totals:\s+(\d+)", out.read_text(), flags=re.M)
    if not m or int(m.group(1)) == 0:
        raise QtcError(f"callgrind counted no instructions in {toggle}", where="bench.c_vs_tflm",
                       hint="check the symbol name (nm -C)")
    return int(m.group(1)) / calls, r.stdout


def _outputs(stdout: str) -> list[np.ndarray]:
    return [np.array([int(v) for v in ln.split()[1:]], dtype=np.int64)
            for ln in stdout.splitlines() if ln.startswith("Y")]


# --------------------------------------------------------------------------- the model
def load_model(models_dir: Path, name: str):
    from qtc.frontends.tflite import load_tflite

    path = models_dir / name / f"{name}_int8.tflite"
    if not path.exists():
        raise QtcError(f"{path} does not exist", where="bench.c_vs_tflm",
                       hint="build the example models first: make models")
    data = path.read_bytes()
    g = load_tflite(data, name=name)
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise QtcError(f"{name} has {len(g.inputs)} inputs / {len(g.outputs)} outputs", where=str(path),
                       hint="the C back end takes one of each")
    return path, data, g


def random_inputs(g, n: int, seed: int) -> np.ndarray:
    shape = g.tensors[g.inputs[0]].shape
    return np.random.default_rng(seed).integers(-128, 128, size=(n, *shape)).astype(np.int8)


def layer_macs(g) -> list[tuple[int, str, str, int]]:
    """(node index, op, name, MACs) for every node."""
    from qtc.ops.registry import get_op

    out = []
    for i, node in enumerate(g.nodes):
        ins = [g.tensors[t] if t else None for t in node.inputs]
        outs = [g.tensors[t] for t in node.outputs]
        out.append((i, node.op, node.name, int(get_op(node.op).macs(node, ins, outs))))
    return out


# --------------------------------------------------------------------------- qtc, host
def host_build(info: dict, tmp: Path, opt: str) -> Path:
    exe = tmp / "qtc_host"
    _run([_tool("gcc", "apt-get install gcc"), opt, *HOST_CFLAGS, "-I", info["dir"],
          HARNESS / "c_vs_tflm_main.c", *info["sources"], "-o", exe], "building the host harness")
    return exe


def link_size(cc: str, size: str, cflags: list[str], info: dict, tmp: Path, tag: str) -> dict:
    """Flash of the model: its objects linked with --gc-sections from qtc_model_invoke."""
    objs = []
    for src in info["sources"]:
        obj = tmp / f"{tag}_{Path(src).stem}.o"
        _run([cc, *cflags, "-ffunction-sections", "-fdata-sections", "-I", info["dir"], "-c", src, "-o", obj],
             f"compiling {Path(src).name}")
        objs.append(obj)
    elf = tmp / f"{tag}_flash.elf"
    _run([cc, *cflags, "-nostdlib", "-nostartfiles", "-Wl,--gc-sections", "-Wl,-e,qtc_model_invoke",
          "-Wl,--unresolved-symbols=ignore-all", "-Wl,--no-warn-rwx-segments", *objs, "-o", elf],
         "linking the flash probe")
    fields = _run([size, elf], "size").stdout.splitlines()[1].split()
    text, data = int(fields[0]), int(fields[1])
    return {"text_bytes": text, "data_bytes": data, "bytes": text + data}


# --------------------------------------------------------------------------- qtc, RV32
def rv32_cflags(opt: str) -> list[str]:
    """The qemu-rv32 target's compiler flags, with ``opt`` as the optimisation level."""
    from qtc.target import load_target

    return [f for f in load_target("qemu-rv32").build["cflags"] if not re.fullmatch(r"-O\w*", f)] + [opt]


def rv32_run(info: dict, tmp: Path, opt: str, profile: bool) -> dict:
    from qtc.device.build import firmware_dir
    from qtc.device.qemu import run_selftest

    cflags = rv32_cflags(opt)
    board = firmware_dir() / "boards" / "qemu_rv32"
    elf = tmp / ("rv32_layers.elf" if profile else "rv32.elf")
    cc = _tool("riscv64-unknown-elf-gcc", "apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf")
    _run([cc, *cflags, "-std=gnu99", "-ffunction-sections", "-fdata-sections", "-nostartfiles",
          "-T", board / "link.ld", "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments", "-DQTC_HARNESS_RV32",
          *(["-DQTC_PROFILE_LAYERS"] if profile else []), "-include", HARNESS / "qtc_layer_profile.h",
          "-I", firmware_dir() / "bench", "-I", info["dir"], board / "start.S", board / "board_qemu_rv32.c",
          HARNESS / "c_vs_tflm_main.c", *info["sources"], "-o", elf], "building the RV32 harness")
    code, text = run_selftest(elf, timeout=120)
    fields = {k: int(v) for k, v in re.findall(r"^([NTCPS]) (\d+)", text, flags=re.M)}
    if code != 0 or "OK" not in text.split() or "N" not in fields:
        raise QtcError(f"the emulated board's outputs differ from the reference (exit {code}): {text[-200:]!r}",
                       where=str(elf), hint="the generated C is not bit-exact on RV32")
    fields["layers"] = {int(i): int(v) for i, v in re.findall(r"^L (\d+) (\d+)", text, flags=re.M)}
    return fields


# --------------------------------------------------------------------------- TFLM
def tflm_invoke_count(path: Path, xs: np.ndarray, tmp: Path) -> tuple[float, list[np.ndarray]]:
    from bench.harness import tflm_code

    np.save(tmp / "inputs.npy", xs)
    toggle = tflm_code.invoke_symbol(tflm_code.runtime_library())
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    per, out = callgrind_per_call([sys.executable, HARNESS / "tflm_invoke.py", path, tmp / "inputs.npy"],
                                  toggle, len(xs), tmp, env=env)
    return per, _outputs(out)


def tflm_code_bytes(data: bytes, cache: dict) -> dict:
    from bench.harness import tflm_code
    from qtc.backends.tflite.size import model_stats

    ops = sorted(model_stats(data)["op_counts"])
    key = tuple(ops)
    if key not in cache:
        cache[key] = tflm_code.reachable_code_bytes(ops, exclude=COMPRESSION)
    return cache[key]


def tflm_arena(data: bytes) -> dict:
    from qtc.backends.tflite.size import measure_arena

    return measure_arena(data)


# --------------------------------------------------------------------------- one model
def bench_model(name: str, models_dir: Path, n: int, seed: int, opt: str, code_cache: dict) -> dict:
    from qtc.backends.c import compile_c

    path, data, g = load_model(models_dir, name)
    xs = random_inputs(g, n, seed)
    with tempfile.TemporaryDirectory(prefix=f"qtc-c-vs-tflm-{name}-") as td:
        tmp = Path(td)
        info = compile_c(g, tmp / "c", model_name=name, test_inputs=list(xs))
        # host: outputs, then callgrind on qtc_model_invoke
        exe = host_build(info, tmp, opt)
        qtc_out = _outputs(_run([exe], "the host harness").stdout)
        qtc_host, _ = callgrind_per_call([exe], "qtc_model_invoke", n, tmp)
        tflm_host, tflm_out = tflm_invoke_count(path, xs, tmp)
        equal = len(qtc_out) == len(tflm_out) == n and all(np.array_equal(a, b) for a, b in zip(qtc_out, tflm_out))
        if not equal:
            raise QtcError(f"{name}: qtc's outputs differ from TFLM's on the same inputs", where="bench.c_vs_tflm",
                           hint="the C back end is not bit-exact with TFLM for this model")
        # the emulated board: totals, then per layer
        plain = rv32_run(info, tmp, opt, profile=False)
        prof = rv32_run(info, tmp, opt, profile=True)
        rv_total = plain["T"] / n - plain["C"]
        layers = []
        for i, op, lname, macs in layer_macs(g):
            if i not in prof["layers"]:
                continue
            ins = prof["layers"][i] / n - prof["P"]
            row = {"node": i, "op": op, "name": lname, "macs": macs, "instructions": round(ins, 1)}
            if macs and op in LAYER_OPS:
                row["instructions_per_mac"] = round(ins / macs, 3)
            layers.append(row)
        # flash
        flash_rv = link_size("riscv64-unknown-elf-gcc", "riscv64-unknown-elf-size", rv32_cflags(opt), info, tmp,
                             "rv32")
        flash_host = link_size("gcc", _tool("size", "apt-get install binutils"), [opt, "-std=c99"], info, tmp, "host")
    code = tflm_code_bytes(data, code_cache)
    arena = tflm_arena(data)
    macs = int(info["macs"])
    qtc_ram = int(info["arena_bytes"]) + int(info["scratch_bytes"])
    tflm_flash = code["reachable_text_bytes"] + len(data)
    conv_fc = [r for r in layers if "instructions_per_mac" in r]
    return {
        "model": name,
        "macs": macs,
        "vectors": n,
        "outputs_equal": equal,
        "host": {"qtc_instructions": round(qtc_host, 1), "tflm_instructions": round(tflm_host, 1),
                 "ratio": round(qtc_host / tflm_host, 4)},
        "rv32": {"instructions": round(rv_total, 1), "instructions_per_mac": round(rv_total / macs, 3),
                 "max_layer_instructions_per_mac": max((r["instructions_per_mac"] for r in conv_fc), default=None),
                 "stack_bytes": plain["S"], "layers": layers},
        "ram": {"qtc_arena_bytes": int(info["arena_bytes"]), "qtc_scratch_bytes": int(info["scratch_bytes"]),
                "qtc_bytes": qtc_ram, "tflm_arena_bytes": int(arena["arena_bytes"]),
                "ratio": round(qtc_ram / arena["arena_bytes"], 4)},
        "flash": {"qtc_host": flash_host, "qtc_rv32": flash_rv, "qtc_weight_bytes": int(info["weight_bytes"]),
                  "tflm_code_bytes": code["reachable_text_bytes"], "tflm_flatbuffer_bytes": len(data),
                  "tflm_bytes": tflm_flash, "tflm_code": code,
                  "ratio": round(flash_host["bytes"] / tflm_flash, 4)},
    }


def verdicts(r: dict) -> dict:
    t = TARGETS
    worst = r["rv32"]["max_layer_instructions_per_mac"]
    return {"host_instructions": r["host"]["ratio"] <= t["host_instructions_ratio_max"],
            "rv32_layers": worst is not None and worst <= t["rv32_layer_instructions_per_mac_max"],
            "ram": r["ram"]["ratio"] <= t["ram_ratio_max"],
            "flash": r["flash"]["ratio"] <= t["flash_ratio_max"]}


# --------------------------------------------------------------------------- report
def format_model(r: dict) -> str:
    v = verdicts(r)
    ok = lambda b: "ok" if b else "MISSED"  # noqa: E731
    h, rv, ram, fl = r["host"], r["rv32"], r["ram"], r["flash"]
    lines = [f"{r['model']}  ({r['macs']:,} MACs, {r['vectors']} inputs, outputs equal to TFLM: {r['outputs_equal']})",
             f"  {'':<28}{'qtc':>12}{'TFLM':>12}{'ratio':>9}  target",
             f"  {'host x86-64 instructions':<28}{h['qtc_instructions']:>12,.0f}{h['tflm_instructions']:>12,.0f}"
             f"{h['ratio']:>9.3f}  <= {TARGETS['host_instructions_ratio_max']}  {ok(v['host_instructions'])}",
             f"  {'peak RAM bytes':<28}{ram['qtc_bytes']:>12,}{ram['tflm_arena_bytes']:>12,}{ram['ratio']:>9.3f}"
             f"  <= {TARGETS['ram_ratio_max']}  {ok(v['ram'])}   (qtc arena {ram['qtc_arena_bytes']:,}"
             f" + scratch {ram['qtc_scratch_bytes']:,}; RV32 stack {rv['stack_bytes']:,})",
             f"  {'flash bytes (x86-64)':<28}{fl['qtc_host']['bytes']:>12,}{fl['tflm_bytes']:>12,}{fl['ratio']:>9.3f}"
             f"  <= {TARGETS['flash_ratio_max']}  {ok(v['flash'])}   (TFLM code {fl['tflm_code_bytes']:,}"
             f" + flatbuffer {fl['tflm_flatbuffer_bytes']:,}; qtc RV32 {fl['qtc_rv32']['bytes']:,},"
             f" weights {fl['qtc_weight_bytes']:,})",
             f"  RV32 instructions {rv['instructions']:,.0f} = {rv['instructions_per_mac']:.3f}/MAC;"
             f" conv/FC layers <= {TARGETS['rv32_layer_instructions_per_mac_max']}/MAC: {ok(v['rv32_layers'])}"]
    for row in rv["layers"]:
        per = f"{row['instructions_per_mac']:.3f}/MAC" if "instructions_per_mac" in row else ""
        lines.append(f"    n{row['node']:<3} {row['op']:<15} {row['name'][:34]:<34} {row['instructions']:>10,.0f}"
                     f" {row['macs']:>9,} MACs  {per}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.c_vs_tflm", description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--models-dir", default=str(ROOT / "build" / "models"))
    ap.add_argument("--vectors", type=int, default=4, help="random int8 inputs per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opt", default="-O2", help="optimisation flag for qtc's C (host and RV32)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "c_vs_tflm.json"))
    a = ap.parse_args(argv)
    results, cache = [], {}
    try:
        for name in [m for m in a.models.split(",") if m]:
            r = bench_model(name, Path(a.models_dir), a.vectors, a.seed, a.opt, cache)
            r["meets_targets"] = verdicts(r)
            print(format_model(r), flush=True)
            results.append(r)
    except QtcError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 1
    import tflite_micro

    doc = {"schema": SCHEMA, "targets": TARGETS, "opt": a.opt, "vectors": a.vectors, "seed": a.seed,
           "tools": {"gcc": _version(["gcc", "--version"]),
                     "riscv_gcc": _version(["riscv64-unknown-elf-gcc", "--version"]),
                     "valgrind": _version(["valgrind", "--version"]), "tflite_micro": tflite_micro.__version__},
           "models": results}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
