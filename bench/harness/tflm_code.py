"""How much TFLM machine code one model needs: the functions reachable in the
``tflite-micro`` wheel's runtime library from what a firmware calls.

The wheel ships TFLM compiled for the host (x86-64) inside ``_runtime.so``, with
its symbol table.  Its ``.text`` also holds pybind11, the Python wrapper and
every TFLM kernel, so its total says little about one model.  This module walks
the call graph instead, the way a linker with ``--gc-sections`` keeps functions:

* roots: ``MicroInterpreter``'s constructor (arena form), ``AllocateTensors``,
  ``Invoke``, ``input``, ``output``, the destructor, and ``Register_<OP>()`` for
  each builtin op of the model (what ``MicroMutableOpResolver::Add<Op>`` stores);
* edges: direct calls and jumps, RIP-relative address references (function
  pointers, vtables, tables), and the dynamic relocations inside referenced data
  (vtable and registration-table slots);
* result: the summed sizes of the reachable functions in ``.text``.

External calls (libc, libstdc++ through the PLT) and read-only data (strings,
tables) are not counted, so the figure is a floor for TFLM's code on x86-64.
Needs binutils (``nm``, ``objdump``, ``readelf``).
"""
from __future__ import annotations

import bisect
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT_METHODS = ("MicroInterpreter::MicroInterpreter(", "MicroInterpreter::AllocateTensors()",
                "MicroInterpreter::Invoke()", "MicroInterpreter::input(", "MicroInterpreter::output(",
                "MicroInterpreter::~MicroInterpreter()")
_FUNC_TYPES = set("tTwWi")
_REF = re.compile(r"\b([0-9a-f]+) <[^>]*>")


@dataclass
class Symbol:
    addr: int
    size: int
    kind: str
    name: str


def runtime_library() -> Path:
    """The wheel's ``_runtime.so`` (raises ImportError without tflite-micro)."""
    import tflite_micro

    libs = sorted(Path(tflite_micro.__file__).parent.rglob("_runtime*.so"))
    if not libs:
        raise FileNotFoundError("tflite_micro has no _runtime*.so")
    return libs[0]


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError(f"{cmd[0]} not found (install binutils)")
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def symbols(lib: Path) -> list[Symbol]:
    """Defined symbols with a size, demangled, sorted by address."""
    out = []
    for line in _run(["nm", "-S", "--defined-only", "--demangle", str(lib)]).splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and int(parts[1], 16) > 0:
            out.append(Symbol(int(parts[0], 16), int(parts[1], 16), parts[2], parts[3]))
    return sorted(out, key=lambda s: (s.addr, s.size))


def invoke_symbol(lib: Path) -> str:
    """The demangled name of ``MicroInterpreter::Invoke()`` (for callgrind's --toggle-collect)."""
    for s in symbols(lib):
        if s.kind in _FUNC_TYPES and s.name.endswith("MicroInterpreter::Invoke()"):
            return s.name
    raise LookupError(f"no MicroInterpreter::Invoke() in {lib}")


class _Index:
    def __init__(self, syms: list[Symbol]):
        self.syms = syms
        self.starts = [s.addr for s in syms]

    def owner(self, addr: int) -> int | None:
        """The symbol whose [addr, addr + size) holds addr (aliases: the last one at that address)."""
        i = bisect.bisect_right(self.starts, addr) - 1
        for j in range(i, max(i - 8, -1), -1):
            s = self.syms[j]
            if s.addr <= addr < s.addr + s.size:
                return j
        return None


def _code_refs(lib: Path, idx: _Index) -> dict[int, set[int]]:
    """symbol index -> symbol indices its instructions reference."""
    refs: dict[int, set[int]] = {}
    cur = None
    for line in _run(["objdump", "-d", "--no-show-raw-insn", "-w", str(lib)]).splitlines():
        if not line.startswith(" "):
            cur = None
            if line.endswith(">:"):
                cur = idx.owner(int(line.split(" ", 1)[0], 16))
            continue
        if cur is None or "<" not in line:
            continue
        for m in _REF.finditer(line.split(":", 1)[1]):
            j = idx.owner(int(m.group(1), 16))
            if j is not None and j != cur:
                refs.setdefault(cur, set()).add(j)
    return refs


def _data_refs(lib: Path, idx: _Index) -> dict[int, set[int]]:
    """data symbol index -> symbol indices its relocated slots point at."""
    refs: dict[int, set[int]] = {}
    for line in _run(["readelf", "-rW", str(lib)]).splitlines():
        f = line.split()
        if len(f) < 4 or not f[2].startswith("R_X86_64_"):
            continue
        where = idx.owner(int(f[0], 16))
        if where is None:
            continue
        if f[2] == "R_X86_64_RELATIVE":
            target = int(f[3], 16)
        elif f[2] == "R_X86_64_64" and len(f) >= 7 and int(f[3], 16):
            target = int(f[3], 16) + int(f[6], 16) * (-1 if f[5] == "-" else 1)
        else:
            continue
        j = idx.owner(target)
        if j is not None:
            refs.setdefault(where, set()).add(j)
    return refs


def reachable_code_bytes(ops: list[str], lib: Path | None = None, exclude: tuple[str, ...] = ()) -> dict:
    """TFLM x86-64 code reachable for a model using builtin ``ops`` (e.g. ["CONV_2D", "FULLY_CONNECTED"]).

    Functions whose demangled name contains one of ``exclude`` are neither counted nor
    followed (e.g. the optional tensor-compression support)."""
    lib = lib or runtime_library()
    syms = symbols(lib)
    idx = _Index(syms)
    roots = {i for i, s in enumerate(syms) if s.kind in _FUNC_TYPES and
             any(f"::{m}" in s.name for m in ROOT_METHODS)}
    missing = []
    for op in ops:
        hit = {i for i, s in enumerate(syms) if s.kind in _FUNC_TYPES and s.name.endswith(f"Register_{op}()")}
        if not hit:
            missing.append(op)
        roots |= hit
    edges = _code_refs(lib, idx)
    for k, v in _data_refs(lib, idx).items():
        edges.setdefault(k, set()).update(v)
    skip = {i for i, s in enumerate(syms) if any(x in s.name for x in exclude)}
    seen, todo = set(roots) - skip, list(roots - skip)
    while todo:
        for j in edges.get(todo.pop(), ()):
            if j not in seen and j not in skip:
                seen.add(j)
                todo.append(j)
    funcs = {syms[i].addr: syms[i].size for i in seen if syms[i].kind in _FUNC_TYPES}  # aliases once
    total_text = int(_run(["size", "-A", str(lib)]).split(".text", 1)[1].split()[0])
    return {"library": lib.name, "reachable_functions": len(funcs),
            "reachable_text_bytes": sum(funcs.values()), "library_text_bytes": total_text, "ops": sorted(ops),
            "ops_without_registration": missing, "excluded_name_parts": list(exclude)}
