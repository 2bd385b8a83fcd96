"""Measure the smallest TFLM tensor arena for a .tflite model, with TFLM itself.

Run as a script in a child process (``python arena.py MODEL``; prints one
JSON line), and each trial size in a forked grandchild: after a failed
allocation TFLM's Python wrapper can crash the process, so the caller
(:mod:`.size`) keeps it at arm's length.
This file imports only the standard library, numpy and ``tflite_micro``.

1. A generous arena: allocate, invoke, ``print_allocations()`` with the C
   stderr redirected (``os.dup2``) into a temp file; parse the
   "Arena allocation total / head / tail" lines.
2. Binary search of the smallest ``arena_size`` for which
   ``Interpreter.from_bytes(model, arena_size=N)`` allocates and invokes,
   between ``total - 1`` (TFLM needs at least what it recorded, so that size
   fails without trying it) and a size that works.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile

_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


@contextlib.contextmanager
def captured_stderr():
    """Redirect the process's fd 2 (C and Python) into a temp file; yields a dict that gets ``text``."""
    out: dict = {}
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out["text"] = tmp.read().decode("utf-8", "replace")


def _works(data: bytes, size: int) -> bool:
    """Does TFLM allocate and invoke with an arena of ``size`` bytes?  Tried in a forked child:
    after a failed allocation TFLM's Python wrapper can crash the process that made it."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            import faulthandler

            faulthandler.disable()  # a crash here is an answer ("does not fit"), not a report
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            import numpy as np
            from tflite_micro import runtime as tflm

            it = tflm.Interpreter.from_bytes(data, arena_size=size)
            for k in range(_input_count(data)):
                d = it.get_input_details(k)
                it.set_input(np.zeros(d["shape"], dtype=d["dtype"]), k)
            it.invoke()
            code = 0
        except BaseException:  # noqa: BLE001 - any failure means "does not fit"
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _input_count(data: bytes) -> int:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    return fb.Model.GetRootAs(data, 0).Subgraphs(0).InputsLength()


def recorded(data: bytes, size: int) -> dict[str, int]:
    """Arena use as TFLM's RecordingMicroAllocator prints it, for an arena of ``size`` bytes."""
    import numpy as np
    from tflite_micro import runtime as tflm

    with captured_stderr() as err:
        it = tflm.Interpreter.from_bytes(data, arena_size=size)
        for k in range(_input_count(data)):
            d = it.get_input_details(k)
            it.set_input(np.zeros(d["shape"], dtype=d["dtype"]), k)
        it.invoke()
        it.print_allocations()
    found = {k: int(v) for k, v in _LINE.findall(err["text"])}
    if set(found) != {"total", "head", "tail"}:
        raise RuntimeError(f"print_allocations gave no arena totals: {err['text'][:300]!r}")
    return found


def measure(data: bytes) -> dict[str, int]:
    big = max(16 * len(data), 1 << 20)
    while not _works(data, big):
        if big > (1 << 30):
            raise RuntimeError("TFLM cannot run the model even with a 1 GiB arena")
        big *= 4
    rec = recorded(data, big)
    lo, hi = rec["total"] - 1, rec["total"]
    while not _works(data, hi):  # grow from the recorded total to a size that works
        lo, hi = hi, hi + max(16, hi - lo) * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _works(data, mid) else (mid, hi)
    return {"arena_bytes": hi, "recorded_total": rec["total"], "recorded_head": rec["head"],
            "recorded_tail": rec["tail"]}


def main(argv: list[str]) -> int:
    with open(argv[0], "rb") as f:
        data = f.read()
    try:
        print(json.dumps(measure(data)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one JSON line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
