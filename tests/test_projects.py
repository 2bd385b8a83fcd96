"""Generated ESP-IDF and PlatformIO projects: the files ESP-IDF/PlatformIO expect,
and every C file compiled with host gcc and the RISC-V gcc against the ESP-IDF
shim (no ESP-IDF install needed).  Also `qtc build` without ESP-IDF, and the
flash image assembly."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qtc.device.build import firmware_dir
from qtc.device.projects import generate_esp_idf_project, generate_platformio_project
from qtc.errors import QtcError
from qtc.target import load_target

from fixtures import device_tiny_mlp as mlp

CHIPS = {"esp32": 240, "esp32s3": 240, "esp32c3": 160}
SHIM = firmware_dir() / "boards" / "esp_idf" / "shim"
RV_FLAGS = ["-march=rv32imac", "-mabi=ilp32", "-misa-spec=2.2", "--specs=picolibc.specs"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return mlp.write_model_dir(tmp_path_factory.mktemp("tiny_mlp"))


def _srcs(cmake_text: str) -> list[str]:
    block = re.search(r"SRCS(.*?)INCLUDE_DIRS", cmake_text, flags=re.S).group(1)
    return re.findall(r'"([^"]+)"', block)


def _compile(cc: list[str], comp: Path, srcs: list[str], defines: list[str], out: Path, link: bool) -> None:
    incs = [f"-I{comp / d}" for d in ("bench", "board", "model")] + [f"-I{SHIM}"]
    files = [str(comp / s) for s in srcs]
    if link:
        cmd = [*cc, "-std=c99", "-O1", "-Wall", "-Werror", *defines, *incs, *files, str(SHIM / "shim_posix.c"),
               "-o", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return
    for f in files:
        r = subprocess.run([*cc, "-std=c99", "-O1", "-Wall", "-Werror", *defines, *incs, "-c", f, "-o",
                            str(out.with_suffix(".o"))], capture_output=True, text=True)
        assert r.returncode == 0, f + "\n" + r.stderr


@pytest.mark.parametrize("chip", sorted(CHIPS))
def test_esp_idf_project_files(chip, model_dir, tmp_path):
    proj = generate_esp_idf_project(chip, model_dir, tmp_path / "p")
    top = (proj / "CMakeLists.txt").read_text()
    assert "cmake_minimum_required(VERSION 3.16)" in top
    assert "include($ENV{IDF_PATH}/tools/cmake/project.cmake)" in top
    assert re.search(r"^project\(qtc_bench\)$", top, flags=re.M)
    assert top.index("cmake_minimum_required") < top.index("include(") < top.index("project(")
    main = (proj / "main" / "CMakeLists.txt").read_text()
    assert "idf_component_register(" in main and re.search(r"REQUIRES esp_timer driver\s*\n\)", main)
    srcs = _srcs(main)
    assert {"bench/bench.c", "bench/qtc_proto.c", "board/board_esp_idf.c", "model/qtc_tiny_mlp.c"} == set(srcs)
    assert all((proj / "main" / s).exists() for s in srcs)
    assert f"QTC_CPU_MHZ={CHIPS[chip]}" in main
    sdk = (proj / "sdkconfig.defaults").read_text()
    assert f'CONFIG_IDF_TARGET="{chip}"' in sdk
    assert f"CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_{CHIPS[chip]}=y" in sdk
    assert "CONFIG_COMPILER_OPTIMIZATION_PERF=y" in sdk and "CONFIG_ESP_TASK_WDT_TIMEOUT_S=60" in sdk
    assert ("CONFIG_ESP32S3_DATA_CACHE_64KB=y" in sdk) == (chip == "esp32s3")
    assert not (proj / "main" / "idf_component.yml").exists()  # no managed components by default


def test_esp_nn_variant_adds_component_and_define(model_dir, tmp_path):
    proj = generate_esp_idf_project("esp32s3", model_dir, tmp_path / "p", esp_nn=True, selftest=True)
    yml = (proj / "main" / "idf_component.yml").read_text()
    assert "espressif/esp-nn:" in yml and 'idf: ">=5.1"' in yml
    main = (proj / "main" / "CMakeLists.txt").read_text()
    assert "QTC_USE_ESP_NN=1" in main and "QTC_BENCH_SELFTEST=1" in main


def test_platformio_project(model_dir, tmp_path):
    proj = generate_platformio_project("esp32c3", model_dir, tmp_path / "pio")
    ini = configparser.ConfigParser()
    ini.read(proj / "platformio.ini")
    env = ini["env:esp32-c3-devkitm-1"]
    assert (env["platform"], env["framework"], env["board"]) == ("espressif32", "espidf", "esp32-c3-devkitm-1")
    assert env["monitor_speed"] == "115200" and ini["platformio"]["default_envs"] == "esp32-c3-devkitm-1"
    assert "cmake_minimum_required(VERSION 3.16)" in (proj / "CMakeLists.txt").read_text()
    src = (proj / "src" / "CMakeLists.txt").read_text()
    assert "idf_component_register(" in src and all((proj / "src" / s).exists() for s in _srcs(src))
    assert not (proj / "main").exists()


def test_project_generation_is_deterministic(model_dir, tmp_path):
    a = generate_esp_idf_project("esp32", model_dir, tmp_path / "a")
    b = generate_esp_idf_project("esp32", model_dir, tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_non_esp_target_is_refused(model_dir, tmp_path):
    with pytest.raises(QtcError, match="not an ESP-IDF chip"):
        generate_esp_idf_project("qemu-rv32", model_dir, tmp_path / "p")
    with pytest.raises(QtcError, match="has no qtc_model.h"):
        generate_esp_idf_project("esp32", tmp_path, tmp_path / "p")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("console", ["uart", "usb-serial-jtag"])
@pytest.mark.parametrize("selftest", [False, True])
def test_project_c_compiles_and_links_on_host_with_shim(model_dir, tmp_path, console, selftest):
    proj = generate_esp_idf_project("esp32c3", model_dir, tmp_path / "p", console=console, selftest=selftest)
    main = proj / "main"
    defines = ["-DQTC_CPU_MHZ=160"] + (["-DQTC_BENCH_SELFTEST=1"] if selftest else []) + \
        (["-DCONFIG_ESP_CONSOLE_USB_SERIAL_JTAG=1"] if console == "usb-serial-jtag" else [])
    assert f"CONFIG_ESP_CONSOLE_{'USB_SERIAL_JTAG' if console != 'uart' else 'UART_DEFAULT'}=y" in \
        (proj / "sdkconfig.defaults").read_text()
    exe = tmp_path / "esp_on_host"
    _compile(["gcc"], main, _srcs((main / "CMakeLists.txt").read_text()), defines, exe, link=True)
    if selftest:  # the ESP-IDF board code runs the self-test on the host through the shim
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        assert "qtc selftest: PASS" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None, reason="riscv64-unknown-elf-gcc missing")
@pytest.mark.parametrize("console", ["uart", "usb-serial-jtag"])
def test_project_c_compiles_with_riscv_gcc(model_dir, tmp_path, console):
    proj = generate_platformio_project("esp32c3", model_dir, tmp_path / "p", console=console)
    src = proj / "src"
    defines = ["-DQTC_CPU_MHZ=160"] + (["-DCONFIG_ESP_CONSOLE_USB_SERIAL_JTAG=1"] if console != "uart" else [])
    _compile(["riscv64-unknown-elf-gcc", *RV_FLAGS], src, _srcs((src / "CMakeLists.txt").read_text()), defines,
             tmp_path / "obj", link=False)


# ------------------------------------------------------------------ qtc build
def _cli():
    import click

    from qtc.cli import QtcGroup
    from qtc.device.cli import register

    @click.group(cls=QtcGroup)
    def cli():
        pass

    register(cli)
    return cli


def test_qtc_build_esp_without_idf_says_what_to_install(model_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.delenv("IDF_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    r = CliRunner().invoke(_cli(), ["build", "--target", "esp32s3", "--model-dir", str(model_dir),
                                    "-o", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and r.output.startswith("error:")
    assert "ESP-IDF is not installed" in r.output and "export.sh" in r.output
    assert (tmp_path / "out" / "esp-idf" / "main" / "CMakeLists.txt").exists()  # the project is still there
    r = CliRunner().invoke(_cli(), ["build", "--target", "esp32", "--platformio", "--model-dir", str(model_dir),
                                    "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and "pip install platformio" in r.output


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_qtc_build_host_and_project_only(model_dir, tmp_path):
    from click.testing import CliRunner

    r = CliRunner().invoke(_cli(), ["build", "--target", "host", "--model-dir", str(model_dir), "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "bench_host").exists()
    r = CliRunner().invoke(_cli(), ["build", "--target", "esp32c3", "--project-only", "--model-dir", str(model_dir),
                                    "-o", str(tmp_path)])
    assert r.exit_code == 0 and (tmp_path / "esp-idf" / "sdkconfig.defaults").exists()
    r = CliRunner().invoke(_cli(), ["build", "--target", "host", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "no model given" in r.output


# ------------------------------------------------------------------ flashing
def _fake_idf_build(d: Path, chip: str) -> dict[int, bytes]:
    parts = {0x0 if chip != "esp32" else 0x1000: b"\xe9boot" * 20, 0x8000: b"\xaa\x50" * 16, 0x10000: b"\xe9app" * 50}
    names = {0x8000: "partition_table/partition-table.bin", 0x10000: "app.bin"}
    files = {}
    for off, data in parts.items():
        rel = names.get(off, "bootloader/bootloader.bin")
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
        files[f"0x{off:x}"] = rel
    import json

    (d / "flasher_args.json").write_text(json.dumps({"flash_files": files, "flash_settings": {
        "flash_mode": "dio", "flash_size": "4MB", "flash_freq": "80m"}, "extra_esptool_args": {"chip": chip}}))
    return parts


@pytest.mark.parametrize("chip", ["esp32", "esp32c3"])
def test_merged_image_places_every_part(chip, tmp_path):
    from qtc.device.flash import merged_image

    parts = _fake_idf_build(tmp_path, chip)
    image, settings = merged_image(tmp_path, chip)
    assert settings == {"flash_mode": "dio", "flash_size": "4MB", "flash_freq": "80m"}
    for off, data in parts.items():
        assert image[off:off + len(data)] == data
    assert len(image) == 0x10000 + len(parts[0x10000])


def test_flash_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from qtc.device.flash import flash_esp

    with pytest.raises(QtcError, match="not a finished ESP-IDF or PlatformIO build"):
        flash_esp("/dev/ttyQTCNOPE0", tmp_path, "esp32")
    _fake_idf_build(tmp_path, "esp32")
    with pytest.raises(QtcError, match="flashing failed.*ttyQTCNOPE0"):
        flash_esp("/dev/ttyQTCNOPE0", tmp_path, "esp32")
    r = CliRunner().invoke(_cli(), ["flash", "--port", "/dev/ttyQTCNOPE0"])
    assert r.exit_code == 2 and "pass --target esp32" in r.output
    r = CliRunner().invoke(_cli(), ["flash", "--port", "/dev/ttyQTCNOPE0", "--target", "esp32",
                                    "--build-dir", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no ESP build under" in r.output


def test_targets_name_the_boards_used():
    for chip in CHIPS:
        t = load_target(chip)
        assert t.build["kind"] == "esp-idf" and t.build["idf_target"] == chip and t.build["cpu_mhz"] == CHIPS[chip]
