"""Byte links to a board: pyserial ports (``/dev/ttyUSB0``, ``COM3``, a pty path,
``socket://127.0.0.1:PORT`` for QEMU, ``loop://``), and the host build of the
bench firmware spawned on a pseudo-terminal.

Every read has a timeout; every failure of the port (missing, busy, unplugged,
closed by the other end) becomes a one-line :class:`QtcError`.
"""
from __future__ import annotations

import os
import subprocess
import time
import tty

try:
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - Windows
    class _TermiosError(Exception):
        pass
from pathlib import Path

from ..errors import QtcError

UNPLUGGED_HINT = "check the cable/board, then rerun; if the board reset, flash it again with qtc flash"


class Link:
    """A bidirectional byte stream with timeouts."""

    name = "link"

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; waits at most ``timeout`` s for the first; b"" on timeout."""
        raise TypeError(f"{type(self).__name__} is abstract: a subclass defines this")

    def write(self, data: bytes) -> None:
        raise TypeError(f"{type(self).__name__} is abstract: a subclass defines this")

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serial():
    try:
        import serial  # pyserial
    except ImportError:  # pragma: no cover - a declared dependency
        raise QtcError("pyserial is not installed", hint="pip install pyserial") from None
    return serial


class SerialLink(Link):
    """A pyserial port or URL.  ``socket://`` URLs are retried until
    ``connect_timeout`` (an emulator may still be starting)."""

    def __init__(self, port: str, baud: int = 115200, *, connect_timeout: float = 5.0):
        serial = _serial()
        self.name = port
        self._serial_exc = (serial.SerialException, OSError, _TermiosError)
        deadline = time.monotonic() + connect_timeout
        is_url = "://" in port
        while True:
            try:
                ser = serial.serial_for_url(port, baudrate=baud, timeout=0.1, do_not_open=True)
                if not is_url:
                    ser.exclusive = True
                    # do not pulse the ESP32 auto-reset lines when opening
                    ser.dtr = False
                    ser.rts = False
                ser.open()
                break
            except (serial.SerialException, OSError, ValueError) as exc:
                if port.startswith("socket://") and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise QtcError(f"cannot open serial port {port}: {_short(exc)}", where=port,
                               hint="check the port name (ls /dev/ttyUSB* /dev/ttyACM*), that the board is "
                                    "plugged in, and that no other program (idf.py monitor) holds it") from None
        self.ser = ser
        self._timeout = 0.1

    def _set_timeout(self, timeout: float) -> None:
        if timeout != self._timeout:
            self.ser.timeout = timeout
            self._timeout = timeout

    def read(self, n: int, timeout: float) -> bytes:
        try:
            self._set_timeout(max(timeout, 0.0))
            data = self.ser.read(1)
            if data and n > 1:
                avail = self.ser.in_waiting
                if avail:
                    data += self.ser.read(min(avail, n - 1))
            return data
        except self._serial_exc as exc:
            raise QtcError(f"serial port closed or unplugged while reading ({_short(exc)})", where=self.name,
                           hint=UNPLUGGED_HINT) from None

    def write(self, data: bytes) -> None:
        try:
            self.ser.write(data)
            self.ser.flush()
        except self._serial_exc as exc:
            raise QtcError(f"serial port closed or unplugged while writing ({_short(exc)})", where=self.name,
                           hint=UNPLUGGED_HINT) from None

    def close(self) -> None:
        try:
            sock = getattr(self.ser, "_socket", None)
            if sock is not None:  # socket://: pyserial's close() sleeps 0.3 s "for quick reconnects"
                sock.close()
                self.ser._socket = None
                self.ser.is_open = False
                return
            self.ser.close()
        except Exception:  # closing a dead port must not mask the real error
            pass


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_link(port: str, baud: int = 115200, *, connect_timeout: float = 5.0) -> SerialLink:
    return SerialLink(port, baud, connect_timeout=connect_timeout)


class HostBoard:
    """The host build of the bench firmware, running as a process on a pty.

    ``port`` is the pty's path, opened like any serial port.  ``env`` adds
    variables (e.g. ``QTC_HOST_BOARD_FAULT`` for fault tests)."""

    def __init__(self, exe: str | os.PathLike, *, env: dict[str, str] | None = None):
        exe = Path(exe)
        if not exe.exists():
            raise QtcError(f"host bench firmware {exe} does not exist", hint="build it with qtc build --target host")
        master, slave = os.openpty()
        tty.setraw(slave)  # binary-clean from the first byte (no echo, no CR/LF mangling)
        self.port = os.ttyname(slave)
        self._slave = slave
        full_env = dict(os.environ)
        full_env.update(env or {})
        try:
            self.proc = subprocess.Popen([str(exe)], stdin=master, stdout=master, stderr=subprocess.DEVNULL,
                                         env=full_env, close_fds=True)
        finally:
            os.close(master)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
