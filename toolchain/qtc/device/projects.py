"""Generate complete ESP-IDF and PlatformIO projects for the bench firmware.

ESP-IDF (``esp32``/``esp32s3``/``esp32c3``)::

    CMakeLists.txt          cmake_minimum_required(3.16), IDF project.cmake, project()
    sdkconfig.defaults      -O2, top CPU clock, watchdog, console, partitions
    main/CMakeLists.txt     idf_component_register(... REQUIRES esp_timer driver)
    main/idf_component.yml  only with ESP-NN (espressif/esp-nn as a managed component)
    main/bench/  main/board/  main/model/   the sources (copied: the project stands alone)

PlatformIO: ``platformio.ini`` (platform = espressif32, framework = espidf, the
target's board) + the same tree with ``src/`` as the main component.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..atomic import atomic_dir
from ..errors import QtcError
from ..target import Target, load_target
from .build import firmware_dir, model_sources, repo_root

ESP_CHIPS = ("esp32", "esp32s3", "esp32c3")
CONSOLES = {"uart": "UART_DEFAULT", "usb-serial-jtag": "USB_SERIAL_JTAG"}
BENCH_FILES = ("bench.c", "qtc_proto.c", "qtc_proto.h", "qtc_board.h")


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(repo_root() / "templates")),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def _target(target: Target | str) -> Target:
    t = load_target(target) if isinstance(target, str) else target
    chip = t.build.get("idf_target")
    if t.build.get("kind") != "esp-idf" or chip not in ESP_CHIPS:
        raise QtcError(f"target {t.name} is not an ESP-IDF chip", where=str(t.path),
                       hint=f"ESP-IDF projects are for: {', '.join(ESP_CHIPS)}")
    return t


def _model_name(model_dir: Path) -> str:
    import re

    m = re.search(r'#define\s+QTC_MODEL_NAME\s+"([^"]*)"', (model_dir / "qtc_model.h").read_text())
    return m.group(1) if m else model_dir.name


def _populate(main: Path, model_dir: Path) -> list[str]:
    """Copy bench, board and model into ``main``; returns the component's sources (relative)."""
    fw = firmware_dir()
    (main / "bench").mkdir(parents=True)
    (main / "board").mkdir()
    (main / "model").mkdir()
    for name in BENCH_FILES:
        shutil.copyfile(fw / "bench" / name, main / "bench" / name)
    shutil.copyfile(fw / "boards" / "esp_idf" / "board_esp_idf.c", main / "board" / "board_esp_idf.c")
    srcs = ["bench/bench.c", "bench/qtc_proto.c", "board/board_esp_idf.c"]
    for p in sorted(model_dir.glob("*.[ch]")):
        shutil.copyfile(p, main / "model" / p.name)
    srcs += [f"model/{p.name}" for p in model_sources(model_dir)]
    return srcs


def _context(t: Target, model_dir: Path, *, project: str, selftest: bool, esp_nn: bool, console: str,
             stack_bytes: int) -> dict:
    if console not in CONSOLES:
        raise QtcError(f"unknown console {console!r}", hint=f"use one of: {', '.join(CONSOLES)}")
    defines = []
    if selftest:
        defines.append("QTC_BENCH_SELFTEST=1")
    if esp_nn:
        defines.append("QTC_USE_ESP_NN=1")
    return dict(project=project, model=_model_name(model_dir), chip=t.build["idf_target"],
                cpu_mhz=int(t.build.get("cpu_mhz", 160)), board=t.build.get("board", t.build["idf_target"]),
                baud=int(t.runner.get("serial_baud", 115200)), console=CONSOLES[console], esp_nn=esp_nn,
                defines=defines, stack_bytes=stack_bytes,
                include_dirs=["bench", "board", "model"],
                extra_requires=[])


def _write_common(tmp: Path, comp: str, ctx: dict, env, top_template: str, comp_template: str) -> dict[str, str]:
    main = tmp / comp
    srcs = _populate(main, ctx.pop("_model_dir"))
    files = {
        "CMakeLists.txt": env.get_template(top_template).render(**ctx),
        "sdkconfig.defaults": env.get_template("esp-idf/sdkconfig.defaults.j2").render(**ctx),
        f"{comp}/CMakeLists.txt": env.get_template(comp_template).render(srcs=srcs, **ctx),
    }
    if ctx["esp_nn"]:
        files[f"{comp}/idf_component.yml"] = env.get_template("esp-idf/idf_component.yml.j2").render(**ctx)
    for rel, text in files.items():
        (tmp / rel).write_text(text)
    return files


def generate_esp_idf_project(target: Target | str, model_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                             project: str = "qtc_bench", selftest: bool = False, esp_nn: bool = False,
                             console: str = "uart", stack_bytes: int = 16384) -> Path:
    """Write a complete ESP-IDF project (replacing ``out_dir``); returns its path."""
    t = _target(target)
    model_dir = Path(model_dir)
    model_sources(model_dir)  # fail early on a folder that is not generated C
    ctx = _context(t, model_dir, project=project, selftest=selftest, esp_nn=esp_nn, console=console,
                   stack_bytes=stack_bytes)
    env = _env()
    with atomic_dir(out_dir) as tmp:
        _write_common(tmp, "main", {**ctx, "_model_dir": model_dir}, env,
                      "esp-idf/CMakeLists.txt.j2", "esp-idf/main_CMakeLists.txt.j2")
    return Path(out_dir)


def generate_platformio_project(target: Target | str, model_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                                project: str = "qtc_bench", selftest: bool = False, esp_nn: bool = False,
                                console: str = "uart", stack_bytes: int = 16384) -> Path:
    """Write a PlatformIO project (framework = espidf, ``src/`` as the main component)."""
    t = _target(target)
    model_dir = Path(model_dir)
    model_sources(model_dir)
    ctx = _context(t, model_dir, project=project, selftest=selftest, esp_nn=esp_nn, console=console,
                   stack_bytes=stack_bytes)
    env = _env()
    with atomic_dir(out_dir) as tmp:
        _write_common(tmp, "src", {**ctx, "_model_dir": model_dir}, env,
                      "platformio/CMakeLists.txt.j2", "platformio/src_CMakeLists.txt.j2")
        (tmp / "platformio.ini").write_text(env.get_template("platformio/platformio.ini.j2").render(**ctx))
    return Path(out_dir)
