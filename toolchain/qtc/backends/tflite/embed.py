"""``model_data.c/.h``: a .tflite model as a C array for TFLM firmware.

The array is ``const unsigned char`` aligned to 16 bytes (C++ ``alignas``, C11
``_Alignas``, else GCC's ``aligned`` attribute), with its length, and the
header defines ``QTC_TFLM_ARENA_BYTES``: the arena TFLM measured for this model
(:func:`.size.measure_arena`).  Templates: ``templates/tflite/*.j2``.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ... import __version__
from ...atomic import atomic_file
from ...errors import QtcError


def template_dir() -> Path:
    env = os.environ.get("QTC_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[4]
    d = root / "templates" / "tflite"
    if not d.is_dir():
        raise QtcError(f"TFLite templates not found under {root}", where="model_data.c",
                       hint="run qtc from its source checkout, or set QTC_ROOT to it")
    return d


def c_symbol(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else f"m_{s}"


def byte_lines(data: bytes, per_line: int = 16) -> list[str]:
    return [", ".join(f"0x{b:02x}" for b in data[i:i + per_line]) + ","
            for i in range(0, len(data), per_line)]


def render(data: bytes, *, symbol: str = "qtc_model_tflite", header: str = "model_data.h",
           arena_bytes: int, arena_how: str = "measured") -> dict[str, str]:
    """{"model_data.c": text, "model_data.h": text} (no files written)."""
    import jinja2

    if not data:
        raise QtcError("the model is empty", where="model_data.c", hint="compile the model first")
    sym = c_symbol(symbol)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    guard = c_symbol(Path(header).name).upper() + "_"
    ctx = dict(symbol=sym, SYMBOL=sym.upper(), version=__version__, length=len(data),
               sha256=hashlib.sha256(data).hexdigest(), arena_bytes=int(arena_bytes), arena_how=arena_how,
               guard=guard, header=Path(header).name, lines=byte_lines(data))
    stem = Path(header).stem
    return {f"{stem}.c": env.get_template("model_data.c.j2").render(**ctx),
            f"{stem}.h": env.get_template("model_data.h.j2").render(**ctx)}


def write_model_data(data: bytes, out_dir, *, symbol: str = "qtc_model_tflite", stem: str = "model_data",
                     arena_bytes: int | None = None, arena_how: str = "given by the caller") -> dict:
    """Write ``<stem>.c`` and ``<stem>.h`` into ``out_dir`` (each atomically).

    ``arena_bytes`` defaults to the arena TFLM measures for this model.
    """
    how = arena_how
    if arena_bytes is None:
        from .size import measure_arena

        m = measure_arena(data)
        arena_bytes = m["arena_bytes"]
        how = (f"smallest arena_size that allocates and invokes; print_allocations total "
               f"{m['recorded_total']} B")
    files = render(data, symbol=symbol, header=f"{stem}.h", arena_bytes=arena_bytes, arena_how=how)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        with atomic_file(out / name) as tmp:
            tmp.write_text(text)
        paths.append(str(out / name))
    return {"files": paths, "symbol": c_symbol(symbol), "bytes": len(data), "arena_bytes": int(arena_bytes)}
