"""The emulated board: the bench ELF in ``qemu-system-riscv32 -M virt``.

The command comes from targets/qemu-rv32.yaml (``runner.qemu``: ``-M virt -bios
none -icount shift=0 -nographic``); the UART is served on a local TCP port
(``socket://127.0.0.1:PORT`` for pyserial).  The firmware powers QEMU off
through the SiFive test device when the host says BYE, or when a self-test ends.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import QtcError
from ..target import load_target

INSTALL_HINT = "install it: apt-get install qemu-system-misc (or run make sysdeps)"


def qemu_base_command(target_name: str = "qemu-rv32") -> list[str]:
    cmd = list(load_target(target_name).runner.get("qemu") or
               ["qemu-system-riscv32", "-M", "virt", "-bios", "none", "-icount", "shift=0", "-nographic"])
    exe = shutil.which(cmd[0])
    if not exe:
        raise QtcError(f"{cmd[0]} not found", hint=INSTALL_HINT)
    return [exe, *cmd[1:]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QemuBoard:
    """Boot ``elf`` in QEMU with its UART on ``socket://127.0.0.1:PORT``.

    ``detach=True`` leaves QEMU running after this process exits (``qtc flash --port qemu``);
    otherwise :meth:`stop` (or the context manager) ends it."""

    def __init__(self, elf: str | os.PathLike, *, target: str = "qemu-rv32", port: int | None = None,
                 detach: bool = False, log_path: str | os.PathLike | None = None):
        self.elf = Path(elf)
        if not self.elf.exists():
            raise QtcError(f"firmware {self.elf} does not exist", hint="build it first: qtc build --target qemu-rv32")
        self.base = qemu_base_command(target)
        self.detach = detach
        self.port = port
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        return [*self.base, "-kernel", str(self.elf), "-monitor", "none",
                "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on"]

    def start(self) -> "QemuBoard":
        fixed = self.port is not None
        for _attempt in range(5):
            port = self.port if fixed else free_port()
            if self.log_path:
                self._log = open(self.log_path, "w+b")
            else:
                self._log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=self.detach)
            self.port = port
            if self._wait_listening(port):
                return self
            err = self._log_text()
            self.stop()
            if "in use" in err.lower() and not fixed:
                continue
            raise QtcError(f"the emulated board did not start: {err or 'qemu exited'}", where=str(self.elf),
                           hint="run the qemu command by hand to see why: " + " ".join(self.command(port)))
        raise QtcError("could not find a free local port for the emulated board's UART", hint="retry")

    def _wait_listening(self, port: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                try:
                    # probing would consume QEMU's single client slot: only check the port is bound
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return True
            time.sleep(0.02)
        return False

    def _log_text(self) -> str:
        if not self._log:
            return ""
        self._log.seek(0)
        return " ".join(self._log.read().decode("utf-8", "replace").split())[:300]

    def wait(self, timeout: float) -> int | None:
        """QEMU's exit code once it powers off, or None if still running after ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log and not self.detach:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def run_selftest(elf: str | os.PathLike, *, target: str = "qemu-rv32", timeout: float = 30.0) -> tuple[int, str]:
    """Boot a self-test ELF with the UART on stdout; returns (exit code, text)."""
    cmd = [*qemu_base_command(target), "-kernel", str(elf)]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise QtcError(f"the emulated board's self-test did not finish within {timeout:g} s", where=str(elf),
                       hint="the model may be too slow for the emulator, or the firmware hung") from None
    return r.returncode, r.stdout.decode("utf-8", "replace")
