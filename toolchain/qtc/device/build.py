"""Build the bench firmware for a target: the same firmware/bench C plus one board.

* ``riscv-elf`` (qemu-rv32): riscv64-unknown-elf-gcc + picolibc → ``app.elf``
* ``host-gcc`` (host): gcc → ``bench_host`` (talks on stdin/stdout, run on a pty)
* ``esp-idf`` (esp32, esp32s3, esp32c3): a generated ESP-IDF (or PlatformIO)
  project, built with ``idf.py build`` (or ``pio run``) where installed.

A model directory is what the C back end writes (``qtc_model.h``, ``qtc_<model>.c``,
``qtc_kernels*.c``, optional ``qtc_model_testvec.h``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_file
from ..errors import QtcError
from ..target import Target, load_target

ESP_KINDS = {"esp-idf"}
IDF_HINT = ("install ESP-IDF v5.x (docs.espressif.com/projects/esp-idf/en/stable/esp32/get-started/) and run "
            "'. $IDF_PATH/export.sh', or pip install platformio and pass --platformio")


def repo_root() -> Path:
    """The folder holding firmware/ and templates/ (QTC_HOME overrides)."""
    env = os.environ.get("QTC_HOME")
    return Path(env) if env else Path(__file__).resolve().parents[3]


def firmware_dir() -> Path:
    d = repo_root() / "firmware"
    if not (d / "bench" / "bench.c").exists():
        raise QtcError(f"bench firmware sources not found under {d}", hint="set QTC_HOME to the qtc checkout")
    return d


@dataclass
class BuildResult:
    target: str
    kind: str
    artifact: Path | None              # app.elf / bench_host / the IDF build folder
    project_dir: Path | None = None    # ESP-IDF / PlatformIO project
    command: list[str] = field(default_factory=list)
    selftest: bool = False


def model_sources(model_dir: str | os.PathLike) -> list[Path]:
    """The model's C files: everything the C back end wrote (no mains, no tests)."""
    model_dir = Path(model_dir)
    if not (model_dir / "qtc_model.h").exists():
        raise QtcError(f"{model_dir} has no qtc_model.h", where=str(model_dir),
                       hint="pass the folder the C back end wrote (qtc compile --backend c), or --qir MODEL.qir")
    srcs = [p for p in sorted(model_dir.glob("*.c")) if p.name != "main.c" and not p.name.startswith("test_")]
    if not srcs:
        raise QtcError(f"{model_dir} has no C sources", where=str(model_dir), hint="re-run the C back end")
    return srcs


def bench_sources() -> list[Path]:
    d = firmware_dir() / "bench"
    return [d / "bench.c", d / "qtc_proto.c"]


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 600) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise QtcError(f"{cmd[0]} not found", hint=f"install it ({what})") from None
    except subprocess.TimeoutExpired:
        raise QtcError(f"{what} timed out after {timeout:g} s", where=cmd[0]) from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).splitlines() if "error" in ln.lower()] or \
            (r.stderr or r.stdout).strip().splitlines()[-1:]
        first = lines[0].strip() if lines else f"exit code {r.returncode}"
        raise QtcError(f"{what} failed: {first}", where=cmd[0],
                       hint="see the full compiler output by running the command by hand: " + " ".join(cmd)[:300])


def _need(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise QtcError(f"{tool} not found", hint=f"install it: {install} (or run make sysdeps)")
    return path


def build_qemu(model_dir, out_dir, *, target: Target | None = None, selftest: bool = False) -> BuildResult:
    """The emulated board's ELF: bench + qemu_rv32 board + the model, for -M virt."""
    target = target or load_target("qemu-rv32")
    b = target.build
    cc = _need(b.get("cc", "riscv64-unknown-elf-gcc"),
               "apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf")
    board = firmware_dir() / "boards" / "qemu_rv32"
    model_dir = Path(model_dir)
    out = Path(out_dir) / ("selftest.elf" if selftest else "app.elf")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        cmd = [cc, *b.get("cflags", []), "-std=gnu99", "-Wall", "-ffunction-sections", "-fdata-sections",
               "-nostartfiles", "-T", str(board / "link.ld"), "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments",
               f"-DQTC_CPU_MHZ={int(b.get('cpu_mhz', 160))}", *(["-DQTC_BENCH_SELFTEST"] if selftest else []),
               "-I", str(firmware_dir() / "bench"), "-I", str(model_dir),
               str(board / "start.S"), str(board / "board_qemu_rv32.c"),
               *map(str, bench_sources()), *map(str, model_sources(model_dir)), "-o", str(tmp)]
        _run(cmd, "building the emulated-board firmware")
    return BuildResult(target.name, "riscv-elf", out, command=cmd, selftest=selftest)


def build_host(model_dir, out_dir, *, target: Target | None = None, selftest: bool = False,
               board: str = "host") -> BuildResult:
    """The host build: ``board="host"`` (stdin/stdout board) or ``"esp_idf"`` (the
    ESP-IDF board code over the POSIX shim, for tests)."""
    target = target or load_target("host")
    b = target.build
    cc = _need(b.get("cc", "gcc"), "apt-get install gcc")
    fw = firmware_dir()
    model_dir = Path(model_dir)
    name = ("selftest" if selftest else "bench") + ("_host" if board == "host" else "_esp_shim")
    out = Path(out_dir) / name
    if board == "host":
        board_srcs, incs = [fw / "boards" / "host" / "board_host.c"], []
    elif board == "esp_idf":
        shim = fw / "boards" / "esp_idf" / "shim"
        board_srcs, incs = [fw / "boards" / "esp_idf" / "board_esp_idf.c", shim / "shim_posix.c"], ["-I", str(shim)]
    else:
        raise QtcError(f"unknown host board {board!r}", hint="use host or esp_idf")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        cmd = [cc, *b.get("cflags", ["-O2"]), *(["-DQTC_BENCH_SELFTEST"] if selftest else []),
               "-I", str(fw / "bench"), "-I", str(model_dir), *incs,
               *map(str, board_srcs), *map(str, bench_sources()), *map(str, model_sources(model_dir)),
               "-o", str(tmp)]
        _run(cmd, "building the host bench firmware")
    os.chmod(out, 0o755)
    return BuildResult(target.name, "host-gcc", out, command=cmd, selftest=selftest)


def find_idf() -> list[str] | None:
    """The idf.py command: on PATH (after export.sh), or $IDF_PATH/tools/idf.py."""
    exe = shutil.which("idf.py")
    if exe:
        return [exe]
    idf_path = os.environ.get("IDF_PATH")
    if idf_path and (Path(idf_path) / "tools" / "idf.py").exists():
        return [shutil.which("python3") or "python3", str(Path(idf_path) / "tools" / "idf.py")]
    return None


def find_pio() -> list[str] | None:
    for name in ("pio", "platformio"):
        exe = shutil.which(name)
        if exe:
            return [exe]
    return None


def build_esp(target: Target, model_dir, out_dir, *, selftest: bool = False, platformio: bool = False,
              esp_nn: bool = False) -> BuildResult:
    """Generate the ESP-IDF/PlatformIO project, then build it where the tools exist."""
    from .projects import generate_esp_idf_project, generate_platformio_project

    proj = Path(out_dir) / ("platformio" if platformio else "esp-idf")
    gen = generate_platformio_project if platformio else generate_esp_idf_project
    gen(target, model_dir, proj, selftest=selftest, esp_nn=esp_nn)
    chip = target.build.get("idf_target", target.name)
    if platformio:
        pio = find_pio()
        if not pio:
            raise QtcError(f"PlatformIO is not installed; the project is ready in {proj}",
                           hint="pip install platformio, then rerun (or: cd " + str(proj) + " && pio run)")
        cmd = [*pio, "run", "-d", str(proj)]
        _run(cmd, "pio run", timeout=3600)
        env = target.build.get("board", chip)
        return BuildResult(target.name, "platformio", proj / ".pio" / "build" / env, proj, cmd, selftest)
    idf = find_idf()
    if not idf:
        raise QtcError(f"ESP-IDF is not installed (no idf.py on PATH, IDF_PATH unset); the project is ready in {proj}",
                       hint=IDF_HINT)
    cmd = [*idf, "-C", str(proj), "-B", str(proj / "build"), f"-DIDF_TARGET={chip}", "build"]
    _run(cmd, "idf.py build", timeout=3600)
    return BuildResult(target.name, "esp-idf", proj / "build", proj, cmd, selftest)


def build(target_name: str, model_dir, out_dir, *, selftest: bool = False, platformio: bool = False,
          esp_nn: bool = False) -> BuildResult:
    target = load_target(target_name)
    kind = target.build.get("kind")
    out_dir = Path(out_dir)
    if kind == "riscv-elf":
        return build_qemu(model_dir, out_dir, target=target, selftest=selftest)
    if kind == "host-gcc":
        return build_host(model_dir, out_dir, target=target, selftest=selftest)
    if kind in ESP_KINDS:
        return build_esp(target, model_dir, out_dir, selftest=selftest, platformio=platformio, esp_nn=esp_nn)
    raise QtcError(f"target {target.name} has no firmware build (build.kind={kind!r})",
                   where=str(target.path), hint="use qemu-rv32, host, esp32, esp32s3 or esp32c3")
