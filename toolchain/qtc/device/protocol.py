"""The qtc bench protocol, host side: frame codec and message payloads.

Mirrors firmware/bench/qtc_proto.h; the format is documented in docs/protocol.md.

Frame: ``'Q' 'T' | version u8 | type u8 | seq u8 | len u16le | payload | crc16le``,
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over version..payload.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 1
MAGIC = b"QT"
HEADER = 7
OVERHEAD = 9
MAX_PAYLOAD = 1024
SAMPLE_BYTES = 12
STACK_UNKNOWN = 0xFFFFFFFF

# host -> device requests
HELLO, WRITE_INPUT, RUN, READ_SAMPLES, READ_OUTPUT, BYE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
# device -> host
ACK, INFO, RESULT, SAMPLES, OUTPUT, BOOT, ERROR = 0x80, 0x81, 0x83, 0x84, 0x85, 0x8F, 0xEE

TYPE_NAMES = {HELLO: "HELLO", WRITE_INPUT: "WRITE_INPUT", RUN: "RUN", READ_SAMPLES: "READ_SAMPLES",
              READ_OUTPUT: "READ_OUTPUT", BYE: "BYE", ACK: "ACK", INFO: "INFO", RESULT: "RESULT",
              SAMPLES: "SAMPLES", OUTPUT: "OUTPUT", BOOT: "BOOT", ERROR: "ERROR"}

# error codes carried by ERROR frames
ERR_VERSION, ERR_TYPE, ERR_LENGTH, ERR_RANGE, ERR_RUNS, ERR_INVOKE, ERR_NO_RESULT = 1, 2, 3, 4, 5, 6, 7
ERROR_NAMES = {ERR_VERSION: "protocol version mismatch", ERR_TYPE: "unknown message type",
               ERR_LENGTH: "bad payload length", ERR_RANGE: "offset/range out of bounds",
               ERR_RUNS: "run count out of range", ERR_INVOKE: "qtc_model_invoke failed",
               ERR_NO_RESULT: "no RUN result yet"}

# timing kinds (INFO)
TIMING_CYCLES, TIMING_EMULATED, TIMING_HOST = 0, 1, 2
TIMING_LABELS = {TIMING_CYCLES: "cycle counter", TIMING_EMULATED: "emulated (instructions)",
                 TIMING_HOST: "host clock"}
HAS_CYCLES, HAS_INSTRET, HAS_STACK = 0x01, 0x02, 0x04


def type_name(t: int) -> str:
    return TYPE_NAMES.get(t, f"0x{t:02x}")


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (check value of b"123456789" is 0x29B1)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = VERSION

    def encode(self) -> bytes:
        return encode_frame(self.type, self.seq, self.payload, version=self.version)


def encode_frame(type_: int, seq: int, payload: bytes = b"", *, version: int = VERSION) -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError("payload too long for one frame")
    body = struct.pack("<BBBH", version, type_, seq & 0xFF, len(payload)) + bytes(payload)
    return MAGIC + body + struct.pack("<H", crc16(body))


class FrameParser:
    """Incremental parser that resynchronises after garbage, like the firmware's.

    A candidate frame that fails (oversized length, bad CRC) is rescanned from
    its next byte, and an incomplete candidate gives way to a whole valid frame
    found later in the buffer, so a good frame right after garbage (or after a
    frame cut short by a reset) is still found.
    ``bad_frames`` counts candidates rejected by CRC, ``dropped`` the bytes skipped.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = max_payload
        self.buf = bytearray()
        self.dropped = 0
        self.bad_frames = 0

    def reset(self) -> None:
        self.buf.clear()

    def _drop_candidate(self) -> None:
        nxt = self.buf.find(MAGIC[:1], 1)
        cut = nxt if nxt > 0 else len(self.buf)
        self.dropped += cut
        del self.buf[:cut]

    def _valid_at(self, i: int) -> int:
        """Length of a complete, CRC-valid frame starting at ``i``, else 0."""
        buf = self.buf
        if len(buf) - i < OVERHEAD or buf[i:i + 2] != MAGIC:
            return 0
        (length,) = struct.unpack_from("<H", buf, i + 5)
        total = OVERHEAD + length
        if length > self.max_payload or len(buf) - i < total:
            return 0
        (want,) = struct.unpack_from("<H", buf, i + HEADER + length)
        return total if crc16(bytes(buf[i + 2:i + HEADER + length])) == want else 0

    def _skip_to_later_frame(self) -> bool:
        """The candidate at 0 is incomplete: if a whole valid frame starts later in
        the buffer (e.g. a truncated frame followed by a BOOT), drop up to it."""
        i = self.buf.find(MAGIC, 1)
        while i > 0:
            if self._valid_at(i):
                self.dropped += i
                del self.buf[:i]
                return True
            i = self.buf.find(MAGIC, i + 1)
        return False

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        frames: list[Frame] = []
        while self.buf:
            if self.buf[0] != MAGIC[0]:
                self._drop_candidate()
                continue
            if len(self.buf) < 2:
                break
            if self.buf[1] != MAGIC[1]:
                self._drop_candidate()
                continue
            if len(self.buf) < HEADER:
                if self._skip_to_later_frame():
                    continue
                break
            version, type_, seq, length = struct.unpack_from("<BBBH", self.buf, 2)
            if length > self.max_payload:
                self._drop_candidate()
                continue
            total = OVERHEAD + length
            if len(self.buf) < total:
                if self._skip_to_later_frame():
                    continue
                break
            if not self._valid_at(0):
                self.bad_frames += 1
                self._drop_candidate()
                continue
            frames.append(Frame(type_, seq, bytes(self.buf[HEADER:HEADER + length]), version))
            del self.buf[:total]
        return frames


# ------------------------------------------------------------------ payloads

def _take_str(payload: bytes, off: int) -> tuple[str, int]:
    n = payload[off]
    return payload[off + 1:off + 1 + n].decode("utf-8", "replace"), off + 1 + n


@dataclass(frozen=True)
class Info:
    version: int
    timing_kind: int
    flags: int
    cpu_hz: int
    input_bytes: int
    output_bytes: int
    arena_bytes: int
    macs: int
    max_payload: int
    max_runs: int
    stack_bytes: int
    board: str
    model: str

    @classmethod
    def unpack(cls, p: bytes) -> "Info":
        (version, kind, flags, _r, cpu_hz, inb, outb, arena, macs_lo, macs_hi, max_payload, max_runs,
         stack) = struct.unpack_from("<BBBBIIIIIIHHI", p, 0)
        board, off = _take_str(p, 36)
        model, _ = _take_str(p, off)
        return cls(version, kind, flags, cpu_hz, inb, outb, arena, macs_lo | (macs_hi << 32), max_payload,
                   max_runs, stack, board, model)

    def pack(self) -> bytes:
        b, m = self.board.encode(), self.model.encode()
        return (struct.pack("<BBBBIIIIIIHHI", self.version, self.timing_kind, self.flags, 0, self.cpu_hz,
                            self.input_bytes, self.output_bytes, self.arena_bytes, self.macs & 0xFFFFFFFF,
                            self.macs >> 32, self.max_payload, self.max_runs, self.stack_bytes)
                + bytes([len(b)]) + b + bytes([len(m)]) + m)

    @property
    def timing_label(self) -> str:
        return TIMING_LABELS.get(self.timing_kind, f"timing kind {self.timing_kind}")


@dataclass(frozen=True)
class Result:
    status: int
    runs: int
    warmup: int
    stack_used: int
    output_crc: int
    unstable_runs: int

    @classmethod
    def unpack(cls, p: bytes) -> "Result":
        return cls(*struct.unpack_from("<iHHIHH", p, 0))

    def pack(self) -> bytes:
        return struct.pack("<iHHIHH", self.status, self.runs, self.warmup, self.stack_used, self.output_crc,
                           self.unstable_runs)


@dataclass(frozen=True)
class DeviceError:
    code: int
    detail: int
    text: str

    @classmethod
    def unpack(cls, p: bytes) -> "DeviceError":
        code, detail = p[0], struct.unpack_from("<I", p, 4)[0]
        return cls(code, detail, p[8:].decode("utf-8", "replace"))

    def pack(self) -> bytes:
        return struct.pack("<BBHI", self.code, 0, 0, self.detail) + self.text.encode()

    def describe(self) -> str:
        return f"{ERROR_NAMES.get(self.code, f'error {self.code}')} ({self.text}, detail {self.detail})"


def pack_write_input(offset: int, data: bytes) -> bytes:
    return struct.pack("<I", offset) + bytes(data)


def pack_run(runs: int, warmup: int) -> bytes:
    return struct.pack("<HH", runs, warmup)


def pack_read_samples(start: int, count: int) -> bytes:
    return struct.pack("<HH", start, count)


def pack_read_output(offset: int, length: int) -> bytes:
    return struct.pack("<IH", offset, length)


def unpack_samples(p: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    """-> (start, [(cycles, instructions, us), ...])"""
    start, count = struct.unpack_from("<HH", p, 0)
    return start, [struct.unpack_from("<III", p, 4 + k * SAMPLE_BYTES) for k in range(count)]


def unpack_output(p: bytes) -> tuple[int, bytes]:
    (offset,) = struct.unpack_from("<I", p, 0)
    return offset, p[4:]


def unpack_boot(p: bytes) -> tuple[int, str]:
    version = p[0] if p else 0
    board = _take_str(p, 1)[0] if len(p) > 1 else "?"
    return version, board
