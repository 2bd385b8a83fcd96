"""Click commands ``qtc build``, ``qtc flash`` and ``qtc bench`` (the device loop).

They raise :class:`QtcError` for every user-facing failure; the ``qtc`` group
turns that into one ``error: …`` line and exit code 2.  Wire them with
``register(group)``.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import QtcError

DEFAULT_OUT = "build/qtc"


def _model_from_qir(qir: str, out: Path, *, esp_nn: bool, n_inputs: int = 3, seed: int = 0) -> Path:
    """Compile a quantized .qir to C (with reference test vectors) under ``out``."""
    from ..ir.serialize import load
    from .bench import compile_graph, graph_inputs, qir_model_name

    graph = load(qir)
    return compile_graph(graph, out, qir_model_name(qir), graph_inputs(graph, None, n_inputs, seed), esp_nn=esp_nn)


def _need_model(model_dir: str | None, qir: str | None) -> None:
    if not model_dir and not qir:
        raise QtcError("no model given", hint="pass --model-dir DIR (C from the C back end) or --qir MODEL.qir")


@click.command("build")
@click.option("-t", "--target", default="qemu-rv32", show_default=True, help="target name (targets/*.yaml)")
@click.option("--model-dir", type=click.Path(file_okay=False), help="folder of generated C (qtc_model.h, ...)")
@click.option("--qir", type=click.Path(), help="quantized model to compile to C first")
@click.option("-o", "--out", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False),
              help="output folder")
@click.option("--selftest", is_flag=True, help="firmware that checks the embedded test vectors, no host needed")
@click.option("--platformio", is_flag=True, help="ESP targets: a PlatformIO project, built with pio run")
@click.option("--esp-nn", is_flag=True, help="ESP targets: call ESP-NN kernels (adds the esp-nn component)")
@click.option("--project-only", is_flag=True, help="ESP targets: write the project, do not run idf.py/pio")
def build_cmd(target, model_dir, qir, out, selftest, platformio, esp_nn, project_only):
    """Build the bench firmware for TARGET: an ELF for the emulated board, a host
    executable, or an ESP-IDF/PlatformIO project built with idf.py / pio."""
    from ..target import load_target
    from .build import build

    _need_model(model_dir, qir)
    out = Path(out)
    tgt = load_target(target)
    mdir = Path(model_dir) if model_dir else _model_from_qir(qir, out, esp_nn=esp_nn)
    if project_only:
        if tgt.build.get("kind") != "esp-idf":
            raise QtcError("--project-only is for ESP targets", hint="drop it for qemu-rv32/host")
        from .projects import generate_esp_idf_project, generate_platformio_project

        gen = generate_platformio_project if platformio else generate_esp_idf_project
        proj = gen(tgt, mdir, out / ("platformio" if platformio else "esp-idf"), selftest=selftest, esp_nn=esp_nn)
        click.echo(f"project: {proj}")
        return
    res = build(target, mdir, out, selftest=selftest, platformio=platformio, esp_nn=esp_nn)
    if res.project_dir:
        click.echo(f"project: {res.project_dir}")
    click.echo(f"built: {res.artifact}")


@click.command("flash")
@click.option("-t", "--target", default=None, help="target name; default: qemu-rv32 for --port qemu")
@click.option("-p", "--port", default=None, help="serial port of the board, or 'qemu' (default) for the emulated board")
@click.option("--build-dir", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False),
              help="what qtc build wrote (or an IDF build/ or PlatformIO .pio/build/<env> folder)")
@click.option("--elf", type=click.Path(dir_okay=False), help="emulated board: the ELF to boot")
@click.option("--baud", default=460800, show_default=True, help="flashing baud rate")
def flash_cmd(target, port, build_dir, elf, baud):
    """Flash the bench firmware: esptool for an ESP board on PORT; with --port qemu
    (or no port) boot it in the emulator in the background and print its port."""
    from ..target import load_target
    from .flash import boot_qemu, flash_esp

    build_dir = Path(build_dir)
    if port in (None, "qemu"):
        if target not in (None, "qemu-rv32"):
            raise QtcError(f"--port qemu runs the emulated board, not {target}",
                           hint="pass the board's serial port to flash a real one")
        elf_path = Path(elf) if elf else build_dir / "app.elf"
        if not elf_path.exists():
            raise QtcError(f"no emulated-board firmware at {elf_path}",
                           hint="build it: qtc build --target qemu-rv32 --model-dir DIR (or pass --elf)")
        board = boot_qemu(elf_path, log_path=elf_path.with_suffix(".qemu.log"))
        click.echo(f"emulated board running: {board.url} (qemu pid {board.proc.pid})")
        click.echo(f"bench it: qtc bench --port {board.url} --model-dir DIR; stop it: kill {board.proc.pid}")
        return
    if not target:
        raise QtcError("which chip is on the port?", hint="pass --target esp32, esp32s3 or esp32c3")
    tgt = load_target(target)
    if tgt.build.get("kind") != "esp-idf":
        raise QtcError(f"target {target} is not flashed over a serial port", hint="use --port qemu for qemu-rv32")
    chip = tgt.build.get("idf_target", tgt.name)
    candidates = [build_dir, build_dir / "esp-idf" / "build",
                  build_dir / "platformio" / ".pio" / "build" / str(tgt.build.get("board", chip))]
    found = next((d for d in candidates if (d / "flasher_args.json").exists() or (d / "firmware.bin").exists()), None)
    if found is None:
        raise QtcError(f"no ESP build under {build_dir}",
                       hint=f"build it first: qtc build --target {target} -o {build_dir}")
    res = flash_esp(port, found, chip, baud=baud)
    click.echo(f"flashed {res['bytes']} bytes to the {chip} on {port}")


@click.command("bench")
@click.option("-t", "--target", default="qemu-rv32", show_default=True, help="target name (targets/*.yaml)")
@click.option("-p", "--port", default=None,
              help="serial port / socket:// URL of a flashed board, 'qemu' or 'host'; default: the target's runner")
@click.option("--runs", default=100, show_default=True, help="timed inferences")
@click.option("--warmup", default=1, show_default=True, help="untimed inferences first")
@click.option("--model-dir", type=click.Path(file_okay=False), help="folder of generated C (with test vectors)")
@click.option("--qir", type=click.Path(), help="quantized model: the reference interpreter checks the outputs")
@click.option("--inputs", "inputs_npy", type=click.Path(dir_okay=False), help=".npy of inputs (with --qir)")
@click.option("-o", "--out", default=".", show_default=True, type=click.Path(file_okay=False),
              help="folder for bench_<target>.json")
@click.option("--timeout", default=10.0, show_default=True, help="seconds to wait for one reply")
@click.option("--baud", default=115200, show_default=True, help="serial baud rate")
def bench_cmd(target, port, runs, warmup, model_dir, qir, inputs_npy, out, timeout, baud):
    """Run the model on a board, read latency back, check outputs bit for bit
    against the reference, print a table and write bench_<target>.json."""
    from .bench import check_outputs, format_table, run_bench

    _need_model(model_dir, qir)
    doc, path = run_bench(target=target, port=port, model_dir=model_dir, qir=qir, runs=runs, warmup=warmup,
                          out_dir=out, timeout=timeout, baud=baud, inputs_npy=inputs_npy, check=False)
    click.echo(format_table(doc))
    click.echo(f"wrote {path}")
    check_outputs(doc, path)


COMMANDS = (build_cmd, flash_cmd, bench_cmd)


def register(group: click.Group) -> None:
    for cmd in COMMANDS:
        group.add_command(cmd)
