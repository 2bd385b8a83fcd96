"""The emulated board end to end: the bench firmware built with riscv64-unknown-elf-gcc
+ picolibc, booted in qemu-system-riscv32 -M virt, driven over its UART on a TCP
socket with pyserial.  Each QEMU run takes well under a second."""
from __future__ import annotations

import json
import re
import shutil
import time

import numpy as np
import pytest

from qtc.device import protocol as P
from qtc.device.build import build_qemu
from qtc.device.link import open_link
from qtc.device.qemu import QemuBoard, run_selftest
from qtc.device.session import DeviceSession
from qtc.errors import QtcError

from fixtures import device_tiny_mlp as mlp

MISSING = [t for t in ("qemu-system-riscv32", "riscv64-unknown-elf-gcc") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (make sysdeps)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return mlp.write_model_dir(tmp_path_factory.mktemp("tiny_mlp"))


@pytest.fixture(scope="module")
def app_elf(model_dir, tmp_path_factory):
    return build_qemu(model_dir, tmp_path_factory.mktemp("fw")).artifact


def _timing(text: str, what: str) -> dict[str, int]:
    m = re.search(rf"timing: {what} min=(\d+) median=(\d+) p95=(\d+) max=(\d+)", text)
    assert m, text
    return dict(zip(("min", "median", "p95", "max"), map(int, m.groups())))


def test_selftest_passes_with_deterministic_instruction_counts(model_dir, tmp_path):
    elf = build_qemu(model_dir, tmp_path, selftest=True).artifact
    rc1, out1 = run_selftest(elf, timeout=20)
    rc2, out2 = run_selftest(elf, timeout=20)
    assert rc1 == 0 and "qtc selftest: PASS" in out1, out1
    assert out1.count(": PASS") == mlp.N_VECTORS + 1
    instr = _timing(out1, "instructions")
    assert 1000 < instr["min"] <= instr["max"] < 100_000
    assert _timing(out1, "cycles") == instr            # under -icount, mcycle counts instructions
    assert instr == _timing(out2, "instructions")     # emulated timing is deterministic
    assert re.search(r"stack: \d+ bytes used of 32768", out1)


def test_selftest_reports_a_wrong_kernel(tmp_path):
    broken = mlp.write_model_dir(tmp_path / "broken", broken=True)
    rc, out = run_selftest(build_qemu(broken, tmp_path / "fw", selftest=True).artifact, timeout=20)
    assert rc == 1 and "qtc selftest: FAIL" in out
    assert re.search(r"vector 0: FAIL \(byte 0: got -?\d+, want -?\d+\)", out)


def test_firmware_build_is_deterministic(model_dir, app_elf, tmp_path):
    assert build_qemu(model_dir, tmp_path).artifact.read_bytes() == app_elf.read_bytes()


def test_a_crashing_model_traps_and_powers_off(tmp_path):
    crash = mlp.write_model_dir(tmp_path / "crash")
    src = crash / f"qtc_{mlp.NAME}.c"
    # store to an unmapped address on the first invoke: a store access fault
    src.write_text(src.read_text().replace("int qtc_model_invoke(const int8_t *in, int8_t *out) {",
                                           "int qtc_model_invoke(const int8_t *in, int8_t *out) {\n"
                                           "    *(volatile int *)0x4 = 1;", 1))
    rc, out = run_selftest(build_qemu(crash, tmp_path / "fw", selftest=True).artifact, timeout=20)
    assert rc == 3 and re.search(r"qtc: trap mcause 0x00000007 mepc 0x8[0-9a-f]{7} mtval 0x00000004", out), out


def test_session_over_the_emulated_uart(app_elf):
    with QemuBoard(app_elf) as board, open_link(board.url) as link:
        s = DeviceSession(link, timeout=3)
        link.write(b"\x00garbage before hello QT\x01")
        info = s.hello()
        assert (info.board, info.timing_kind, info.cpu_hz) == ("qemu-rv32", P.TIMING_EMULATED, 160_000_000)
        assert info.flags & P.HAS_INSTRET and info.flags & P.HAS_STACK and info.stack_bytes == 32768
        for x in mlp.test_inputs(4, seed=3):
            s.write_input(x.tobytes())
            res = s.run(20, 1)
            assert res.unstable_runs == 0 and 0 < res.stack_used < 4096
            np.testing.assert_array_equal(np.frombuffer(s.read_output(mlp.N_OUT), np.int8), mlp.reference(x))
            samples = s.read_samples(20)
            assert all(c == n and c > 1000 for c, n, _ in samples)
        with pytest.raises(QtcError, match="version mismatch"):
            DeviceSession(link, timeout=1, version=9).hello()
        assert s.bye()
        assert board.wait(5) == 0  # the firmware powered QEMU off through the SiFive test device


def test_emulator_killed_mid_session_is_unplugged(app_elf):
    with QemuBoard(app_elf) as board, open_link(board.url) as link:
        s = DeviceSession(link, timeout=1, retries=0)
        s.hello()
        board.proc.kill()
        board.proc.wait()
        t0 = time.monotonic()
        with pytest.raises(QtcError, match="closed or unplugged|timeout"):
            s.write_input(bytes(mlp.N_IN))
        assert time.monotonic() - t0 < 3


def test_run_bench_on_the_emulated_board(model_dir, tmp_path):
    from qtc.device.bench import format_table, run_bench

    doc, path = run_bench(target="qemu-rv32", port="qemu", model_dir=str(model_dir), runs=50, out_dir=str(tmp_path))
    assert path == tmp_path / "bench_qemu-rv32.json"
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(doc))
    assert saved["where"]["kind"] == "emulated" and saved["where"]["timing"] == "emulated (instructions)"
    assert "not a measurement of real hardware" in saved["latency_note"]
    assert saved["outputs"] == {"checked": 3, "bit_exact": True, "mismatches": [],
                                "reference": saved["outputs"]["reference"]}
    instr = saved["instructions"]
    assert instr["n"] == 50 and saved["cycles"]["median"] == instr["median"]
    assert saved["latency_us"]["median"] == pytest.approx(instr["median"] / 160.0, abs=1e-3)
    assert "emulated (instructions)" in format_table(doc)
    # deterministic: a second run writes the same report
    doc2, _ = run_bench(target="qemu-rv32", port="qemu", model_dir=str(model_dir), runs=50, out_dir=str(tmp_path))
    assert doc2 == doc


def test_flash_qemu_then_bench_over_its_port(app_elf, model_dir, tmp_path):
    import click
    from click.testing import CliRunner

    from qtc.cli import QtcGroup
    from qtc.device.cli import register

    @click.group(cls=QtcGroup)
    def cli():
        pass

    register(cli)
    r = CliRunner().invoke(cli, ["flash", "--port", "qemu", "--elf", str(app_elf)])
    assert r.exit_code == 0, r.output
    url = re.search(r"socket://127\.0\.0\.1:\d+", r.output).group(0)
    pid = int(re.search(r"qemu pid (\d+)", r.output).group(1))
    try:
        r = CliRunner().invoke(cli, ["bench", "--port", url, "--model-dir", str(model_dir), "--runs", "5",
                                     "-o", str(tmp_path)])
        assert r.exit_code == 0, r.output
        doc = json.loads((tmp_path / "bench_qemu-rv32.json").read_text())
        assert doc["where"]["kind"] == "emulated" and doc["where"]["port"] == url
        assert doc["outputs"]["bit_exact"]
    finally:
        import os
        import signal

        os.kill(pid, signal.SIGTERM)
    r = CliRunner().invoke(cli, ["flash", "--port", "qemu", "--build-dir", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no emulated-board firmware" in r.output


def _has_c_backend() -> bool:
    try:
        from qtc.backends.c import compile_c  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_c_backend(), reason="the C back end (qtc.backends.c) is not in this tree yet")
def test_bench_qir_through_the_c_backend_is_bit_exact(quant_qir, tmp_path):
    """A real quantized graph: C back end → emulated board → outputs vs the reference interpreter."""
    from qtc.device.bench import run_bench

    doc, _ = run_bench(target="qemu-rv32", port="qemu", qir=str(quant_qir), runs=10, out_dir=str(tmp_path),
                       n_inputs=4)
    assert doc["outputs"]["checked"] == 4 and doc["outputs"]["bit_exact"]
    assert doc["outputs"]["reference"].startswith("reference interpreter")
    assert doc["instructions"]["median"] > 0 and doc["macs"] > 0
