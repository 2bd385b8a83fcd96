"""Deterministic C text for constant data: arrays, scalars, identifiers, comments."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...errors import QtcError

CTYPES = {"int8_t": np.int8, "uint8_t": np.uint8, "int16_t": np.int16, "int32_t": np.int32}
PER_LINE = {"int8_t": 16, "uint8_t": 16, "int16_t": 12, "int32_t": 8}
# structs of int32 fields, written one element per line: values has shape [n, fields]
STRUCTS = {"qtc_rq_t": 4}


@dataclass
class CArray:
    """A ``static const`` array in the generated model file (16-byte aligned)."""

    name: str
    ctype: str
    values: np.ndarray
    comment: str = ""
    guard: str | None = None  # None | "QTC_USE_ESP_NN" | "!QTC_USE_ESP_NN"

    @property
    def nbytes(self) -> int:
        if self.ctype in STRUCTS:
            return int(self.values.size) * 4
        return int(self.values.size) * np.dtype(CTYPES[self.ctype]).itemsize

    def render(self) -> str:
        if self.ctype in STRUCTS:
            return self._render_structs()
        vals = np.asarray(self.values).reshape(-1)
        info = np.iinfo(CTYPES[self.ctype])
        if vals.size and (vals.min() < info.min or vals.max() > info.max):
            raise QtcError(f"constant {self.name} does not fit {self.ctype}", where="C back end",
                           hint="the model's quantized constants are out of range; re-quantize it")
        n = PER_LINE[self.ctype]
        ints = [int(v) for v in vals.astype(np.int64)]
        lines = []
        for i in range(0, len(ints), n):
            lines.append("    " + ", ".join(c_int(v, self.ctype) for v in ints[i:i + n]) + ",")
        body = "\n".join(lines) if lines else "    0,"
        size = max(len(ints), 1)
        head = f"/* {comment_text(self.comment)} */\n" if self.comment else ""
        return (f"{head}static const {self.ctype} {self.name}[{size}] QTC_ALIGNED(16) = {{\n"
                f"{body}\n}};")


    def _render_structs(self) -> str:
        vals = np.asarray(self.values, dtype=np.int64).reshape(-1, STRUCTS[self.ctype])
        info = np.iinfo(np.int32)
        if vals.size and (vals.min() < info.min or vals.max() > info.max):
            raise QtcError(f"constant {self.name} does not fit int32", where="C back end",
                           hint="the model's quantized constants are out of range; re-quantize it")
        lines = ["    {" + ", ".join(c_int(int(v)) for v in row) + "}," for row in vals]
        body = "\n".join(lines) if lines else "    {0},"
        head = f"/* {comment_text(self.comment)} */\n" if self.comment else ""
        return (f"{head}static const {self.ctype} {self.name}[{max(len(vals), 1)}] QTC_ALIGNED(16) = {{\n"
                f"{body}\n}};")


def c_int(v: int, ctype: str = "int32_t") -> str:
    """An integer literal valid for every value of ``ctype`` (INT32_MIN needs care)."""
    if ctype == "int32_t" and v == -(1 << 31):
        return "INT32_MIN"
    return str(v)


def c_float(v: float) -> str:
    """A float32 literal that round-trips exactly (9 significant digits)."""
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise QtcError(f"non-finite quantization scale {f}", where="C back end")
    s = f"{f:.9g}"
    if "e" not in s and "." not in s:
        s += ".0"
    return s + "f"


def comment_text(s: str) -> str:
    """Text that is safe inside a C block comment, on one line."""
    return " ".join(str(s).replace("*/", "* /").replace("/*", "/ *").split())


_IDENT = re.compile(r"[^0-9A-Za-z_]")


def c_ident(name: str) -> str:
    """A lowercase C identifier from a model name (``digits-cnn`` → ``digits_cnn``)."""
    s = _IDENT.sub("_", name.strip()).lower()
    s = re.sub(r"_+", "_", s).strip("_")
    if not s:
        raise QtcError(f"model name {name!r} gives no C identifier", where="C back end",
                       hint="pass --name with letters, digits or underscores")
    if s[0].isdigit():
        s = "m_" + s
    return s
