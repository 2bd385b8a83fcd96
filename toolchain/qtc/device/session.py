"""Request/response session with the bench firmware over a :class:`~qtc.device.link.Link`.

Every request carries a sequence number and gets exactly one reply with the
same number; replies to earlier (timed-out) requests are recognised and
skipped.  A request that gets no valid reply in time is re-sent (all requests
are idempotent), then fails with a one-line :class:`QtcError` that says whether
the link was silent or garbled.  A BOOT announcement after the session started
means the board reset: that fails at once.
"""
from __future__ import annotations

import time

from ..errors import QtcError
from . import protocol as P
from .link import Link

REFLASH_HINT = "rebuild and reflash the bench firmware with this qtc (qtc build, then qtc flash)"


class DeviceSession:
    def __init__(self, link: Link, *, timeout: float = 2.0, retries: int = 2, version: int = P.VERSION):
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.version = version
        self.parser = P.FrameParser()
        self.info: P.Info | None = None
        self._seq = 0
        self._started = False

    # ------------------------------------------------------------ plumbing
    def _next_seq(self) -> int:
        self._seq = self._seq % 255 + 1  # 1..255; 0 is the BOOT frame's
        return self._seq

    def _fail(self, what: str, hint: str) -> QtcError:
        return QtcError(what, where=self.link.name, hint=hint)

    def request(self, type_: int, payload: bytes = b"", *, expect: int, timeout: float | None = None,
                retries: int | None = None) -> P.Frame:
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        name = P.type_name(type_)
        bad_before = self.parser.bad_frames
        for _attempt in range(retries + 1):
            seq = self._next_seq()
            self.link.write(P.encode_frame(type_, seq, payload, version=self.version))
            reply = self._await(seq, name, expect, timeout)
            if reply is not None:
                return reply
        garbled = self.parser.bad_frames - bad_before
        if garbled:
            raise self._fail(f"garbled frames from the board ({garbled} with a bad CRC) and no valid reply to "
                             f"{name} after {retries + 1} tries",
                             "check the baud rate and cable; make sure nothing else prints on this port")
        raise self._fail(f"timeout: no reply to {name} within {timeout:g} s ({retries + 1} tries)",
                         "is the bench firmware flashed and running on this port? (qtc flash, or reset the board)")

    def _await(self, seq: int, name: str, expect: int, timeout: float) -> P.Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # short read slices keep the port's timeout setting mostly constant
            for f in self.parser.feed(self.link.read(4096, min(left, 0.1))):
                if f.type == P.BOOT:
                    if self._started:
                        version, board = P.unpack_boot(f.payload)
                        raise self._fail(f"the board ({board}) reset while waiting for the reply to {name}",
                                         "check power, watchdog and stack size; then rerun")
                    continue  # still connecting: the board (re)started, keep waiting
                if f.seq != seq:
                    continue  # a late reply to an earlier try
                if f.type == P.ERROR:
                    self._raise_device_error(name, P.DeviceError.unpack(f.payload))
                if f.version != self.version:
                    raise self._fail(f"the board speaks protocol v{f.version}, this qtc speaks v{self.version}",
                                     REFLASH_HINT)
                if f.type != expect:
                    raise self._fail(f"protocol error: {name} answered with {P.type_name(f.type)}, "
                                     f"expected {P.type_name(expect)}", REFLASH_HINT)
                return f

    def _raise_device_error(self, name: str, err: P.DeviceError):
        if err.code == P.ERR_VERSION:
            raise self._fail(f"protocol version mismatch: the board's firmware speaks v{err.detail}, "
                             f"this qtc speaks v{self.version}", REFLASH_HINT)
        if err.code == P.ERR_INVOKE:
            raise self._fail(f"the model failed on the board: qtc_model_invoke returned {err.detail}",
                             "check the arena size and the model's C code (qtc build)")
        raise self._fail(f"the board rejected {name}: {err.describe()}", REFLASH_HINT)

    # ------------------------------------------------------------ requests
    def hello(self, connect_timeout: float = 5.0) -> P.Info:
        """Find the board: (re)send HELLO until it answers; BOOT frames and boot logs are skipped."""
        tries = max(1, int(connect_timeout / 0.5))
        f = self.request(P.HELLO, expect=P.INFO, timeout=min(0.5, connect_timeout), retries=tries - 1)
        self.info = P.Info.unpack(f.payload)
        self._started = True
        return self.info

    def write_input(self, data: bytes) -> None:
        chunk = self._chunk(4)
        for off in range(0, len(data), chunk):
            part = data[off:off + chunk]
            f = self.request(P.WRITE_INPUT, P.pack_write_input(off, part), expect=P.ACK)
            if f.payload[:6] != P.pack_read_output(off, len(part)):  # same layout: u32 offset, u16 len
                raise self._fail("protocol error: WRITE_INPUT acknowledged the wrong range", REFLASH_HINT)

    def run(self, runs: int, warmup: int = 0, *, timeout: float | None = None) -> P.Result:
        f = self.request(P.RUN, P.pack_run(runs, warmup), expect=P.RESULT, timeout=timeout)
        return P.Result.unpack(f.payload)

    def read_samples(self, count: int) -> list[tuple[int, int, int]]:
        per = (self._payload_limit() - 4) // P.SAMPLE_BYTES
        out: list[tuple[int, int, int]] = []
        for start in range(0, count, per):
            n = min(per, count - start)
            f = self.request(P.READ_SAMPLES, P.pack_read_samples(start, n), expect=P.SAMPLES)
            got_start, samples = P.unpack_samples(f.payload)
            if got_start != start or len(samples) != n:
                raise self._fail("protocol error: READ_SAMPLES returned the wrong range", REFLASH_HINT)
            out += samples
        return out

    def read_output(self, nbytes: int) -> bytes:
        chunk = self._chunk(4)
        out = bytearray()
        for off in range(0, nbytes, chunk):
            n = min(chunk, nbytes - off)
            f = self.request(P.READ_OUTPUT, P.pack_read_output(off, n), expect=P.OUTPUT)
            got_off, data = P.unpack_output(f.payload)
            if got_off != off or len(data) != n:
                raise self._fail("protocol error: READ_OUTPUT returned the wrong range", REFLASH_HINT)
            out += data
        return bytes(out)

    def bye(self) -> bool:
        """End the session (an emulator powers off, a host board exits); best effort:
        the board may go away before its ACK is read."""
        try:
            self.request(P.BYE, expect=P.ACK, retries=0, timeout=min(self.timeout, 1.0))
            return True
        except QtcError:
            return False

    def _payload_limit(self) -> int:
        dev = self.info.max_payload if self.info else P.MAX_PAYLOAD
        return min(dev, P.MAX_PAYLOAD)

    def _chunk(self, header: int) -> int:
        return self._payload_limit() - header
