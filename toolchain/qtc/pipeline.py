"""The main job: model → IR → PTQ → .tflite + C → ESP-IDF/PlatformIO projects → board.

``deploy()`` runs each step in order and skips a step whose output already
exists (``refresh=True`` redoes everything).  With no port (or ``qemu``) the same
C runs on the built-in emulated board (QEMU RV32) and the latency and output
check are read back over its serial link; with a real serial port the ESP-IDF
project is built with ``idf.py`` and flashed with esptool first.

Every step's output lands under ``out_dir`` (``build/<model>/``):

    <model>.qir/            float IR (channels-last, canonicalized)
    calib/                  quant_dataset_<input>.npy, quant_eval_<input>.npy, quant_eval_scenarios.json
    <model>_int8.qir/       quantized IR (target numerics)
    <model>_int8.tflite     TFLite flatbuffer (LiteRT/TFLM)
    c/                      generated C + kernels + test vectors
    <target>/               ESP-IDF project;  platformio/  PlatformIO project
    device/                 emulated-board ELF and bench_<target>.json
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click

from .errors import QtcError


@dataclass
class Step:
    name: str
    output: Path
    run: Callable[[], str]


@dataclass
class DeployResult:
    out_dir: Path
    steps: list[tuple[str, str]] = field(default_factory=list)  # (name, "done"/"skipped")
    bench: dict | None = None


def _exists(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir()) if p.suffix in ("", ".qir") else p.exists()


def deploy(model: str | Path, *, target: str = "esp32", data: str | Path, out_dir: str | Path,
           port: str | None = None, method: str = "minmax", runs: int = 100, refresh: bool = False,
           test_vectors: int = 8, echo: Callable[[str], None] = click.echo) -> DeployResult:
    from .target import load_target

    model = Path(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tgt = load_target(target)
    name = model.stem if model.suffix else model.name
    res = DeployResult(out)
    fqir = out / f"{name}.qir"
    calib = out / "calib"
    qqir = out / f"{name}_int8.qir"
    tfl = out / f"{name}_int8.tflite"
    cdir = out / "c"
    proj = out / tgt.name
    pio = out / "platformio"
    dev = out / "device"

    def do_import() -> str:
        from .frontends import load_model
        from .ir import save
        from .passes import canonicalize

        g = canonicalize(load_model(model), channels_last=True)
        g.metadata["source_file"] = model.name
        save(g, fqir)
        return f"{len(g.nodes)} nodes"

    def do_calibrate() -> str:
        from .ir import load
        from .passes.quantize import make_dataset

        info = make_dataset(load(fqir), str(data), calib, seed=0, progress=False)
        return _short(info)

    def do_quantize() -> str:
        from .ir import load, save
        from .passes.quantize import load_calibration, quantize

        g = load(fqir)
        arrays, _ = load_calibration(calib, g)
        q = quantize(g, arrays, target=tgt.name, method=method, progress=False, per_feature_input="auto")
        save(q, qqir)
        meta = q.metadata.get("quantization", {})
        pf = sorted(meta.get("per_feature_input") or {})
        return (f"{tgt.name} {meta.get('method', method)} W{meta.get('wbits', 8)}A{meta.get('abits', 8)}"
                + (f", per-feature params on input {', '.join(map(repr, pf))}" if pf else ""))

    def do_tflite() -> str:
        from .backends.tflite import compile_tflite
        from .ir import load

        info = compile_tflite(load(qqir), tfl)
        return f"{info['bytes']:,} B, {info['ops']} ops"

    def do_c() -> str:
        from .backends.c import compile_c
        from .device.bench import graph_inputs
        from .ir import load

        q = load(qqir)
        info = compile_c(q, cdir, model_name=name, test_inputs=graph_inputs(q, None, test_vectors, 0))
        return (f"arena {info['arena_bytes']:,} B + scratch {info.get('scratch_bytes', 0):,} B, "
                f"weights {info['weight_bytes']:,} B, {info['macs']:,} MACs")

    def do_projects() -> str:
        from .device.projects import generate_esp_idf_project, generate_platformio_project

        if tgt.build.get("kind") != "esp-idf":
            return f"target {tgt.name} has no ESP-IDF project"
        generate_esp_idf_project(tgt, cdir, proj)
        generate_platformio_project(tgt, cdir, pio)
        return f"ESP-IDF project in {proj}, PlatformIO project in {pio}"

    steps = [
        Step("import", fqir, do_import),
        Step("calibrate", calib, do_calibrate),
        Step("quantize", qqir, do_quantize),
        Step("tflite", tfl, do_tflite),
        Step("c", cdir, do_c),
        Step("projects", proj if tgt.build.get("kind") == "esp-idf" else cdir, do_projects),
    ]
    forced = refresh
    for i, st in enumerate(steps, 1):
        label = f"[{i}/{len(steps) + 1}] {st.name:<10}"
        if not forced and _exists(st.output):
            echo(f"{label} skipped ({st.output} exists; REFRESH=1 redoes it)")
            res.steps.append((st.name, "skipped"))
            continue
        forced = True  # everything after a redone step is redone too
        t0 = time.perf_counter()
        msg = st.run()
        echo(f"{label} {msg}  ({time.perf_counter() - t0:.1f} s)")
        res.steps.append((st.name, "done"))
    res.bench = _run_device(tgt, cdir, dev, port, runs, echo, label=f"[{len(steps) + 1}/{len(steps) + 1}] device    ")
    res.steps.append(("device", "done"))
    return res


def _short(record: dict) -> str:
    return (f"{record.get('calib_count', '?')} calibration + {record.get('eval_count', '?')} eval samples, "
            f"seed {record.get('seed', 0)}")


def _run_device(tgt, cdir: Path, dev: Path, port: str | None, runs: int, echo, label: str) -> dict:
    from .device.bench import format_table, run_bench

    if port in (None, "", "qemu"):
        echo(f"{label} no PORT: the same C on the emulated board (qemu-rv32, {_mhz('qemu-rv32')} MHz nominal)")
        doc, path = run_bench(target="qemu-rv32", port="qemu", model_dir=str(cdir), runs=runs, out_dir=str(dev))
    else:
        from .device.build import build_esp
        from .device.flash import flash_esp

        echo(f"{label} building the ESP-IDF project with idf.py and flashing {port}")
        br = build_esp(tgt, cdir, dev / tgt.name)
        flash_esp(port, br.artifact, tgt.build.get("idf_target", tgt.name))
        doc, path = run_bench(target=tgt.name, port=port, model_dir=str(cdir), runs=runs, out_dir=str(dev))
    echo(format_table(doc))
    echo(f"wrote {path}")
    return doc


def _mhz(target: str) -> str:
    from .target import load_target

    return str(load_target(target).build.get("cpu_mhz", "?"))


def write_summary(res: DeployResult, path: Path) -> None:
    path.write_text(json.dumps({"steps": res.steps, "bench": res.bench}, indent=1, default=str) + "\n")



@click.command("deploy", epilog="\b\nExamples:\n"
               "  qtc deploy build/models/peer_encoder/peer_encoder.keras --data data.npz -o build/peer_encoder\n"
               "  qtc deploy model.onnx --target esp32s3 --data data.npz -o build/m --port /dev/ttyUSB0")
@click.argument("model", type=click.Path(exists=True))
@click.option("-t", "--target", default="esp32", show_default=True, help="target (targets/*.yaml)")
@click.option("--data", required=True, type=click.Path(exists=True),
              help="representative inputs: .npy, or .npz with one array per model input")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for every step's output")
@click.option("-p", "--port", default=None, help="serial port of a real board; none or 'qemu' = the emulated board")
@click.option("--method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "ema", "percentile", "entropy", "mse"]), help="activation calibration")
@click.option("--runs", default=100, show_default=True, help="timed inferences on the board")
@click.option("--refresh", is_flag=True, help="redo every step even if its output exists")
def deploy_cmd(model, target, data, out_dir, port, method, runs, refresh):
    """The whole job: import → PTQ → .tflite + C → ESP-IDF/PlatformIO projects → board.

    Steps whose output exists are skipped (--refresh redoes them).  With no
    --port the C runs on the emulated board and its latency (retired
    instructions at the target's nominal clock, labelled emulated) and
    bit-exact output check are read back over the serial link.
    """
    res = deploy(model, target=target, data=data, out_dir=out_dir, port=port, method=method, runs=runs,
                 refresh=refresh)
    write_summary(res, Path(out_dir) / "deploy.json")


def register(group: click.Group) -> None:
    group.add_command(deploy_cmd)
