"""One error type the CLI turns into a single line and exit code 2.

Every user-facing failure (bad file, unsupported op, wrong shape, bad port, …)
raises :class:`QtcError` with *what* went wrong, *where* (file / node / op) and
*how to fix it*.  The CLI prints ``error: <where>: <what> (<hint>)`` and exits 2.
"""
from __future__ import annotations


class QtcError(Exception):
    """A user-facing error: one line, names the place, says how to fix it."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        msg = self.what
        if self.where:
            msg = f"{self.where}: {msg}"
        if self.hint:
            msg = f"{msg} (fix: {self.hint})"
        return " ".join(msg.split())  # always one line


class UnsupportedOpError(QtcError):
    pass


class ModelFormatError(QtcError):
    pass


class ShapeError(QtcError):
    pass


class ValidationError(QtcError):
    pass
