"""Static memory plan for the generated C: tensor lifetimes → arena offsets.

1. Activation tensors are grouped into *buffers*: a Reshape-family output
   aliases its input (same bytes, same order), and an elementwise op may write
   its output over an input that dies at that node (in place).
2. A buffer that holds the graph input lives in the caller's ``in`` array, one
   that holds the graph output in the caller's ``out`` array; every other buffer
   lives in one static arena.
3. Arena buffers are placed with TFLM's GreedyMemoryPlanner rule: largest
   first, each at the lowest 16-byte-aligned offset that does not overlap a
   placed buffer whose lifetime overlaps its own.  Peak arena = high-water mark.

Lifetimes are node indices: a tensor is live from the node that writes it to
the last node that reads it (inclusive); graph inputs are live from -1 and
graph outputs to the end.  Two buffers may share bytes only if their
lifetimes are disjoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 16


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass
class Buffer:
    """One storage region shared by a group of tensors."""

    id: int
    size: int
    first: int
    last: int
    tensors: list[str] = field(default_factory=list)
    storage: str = "arena"        # arena | input | output
    offset: int = 0

    def overlaps(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    tensor_buffer: dict[str, int]      # tensor name → buffer id
    arena_bytes: int
    copy_input_to_output: bool = False  # graph output aliases the graph input

    def buffer_of(self, tensor: str) -> Buffer:
        return self.buffers[self.tensor_buffer[tensor]]

    def summary(self) -> dict:
        tensors = {}
        for b in self.buffers:
            for t in b.tensors:
                tensors[t] = {"storage": b.storage, "offset": b.offset, "bytes": b.size,
                              "first": b.first, "last": b.last}
        return {"arena_bytes": self.arena_bytes, "tensors": dict(sorted(tensors.items()))}


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def add(self, x: str) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, keep: str, other: str) -> None:
        self.parent[self.find(other)] = self.find(keep)


def plan_memory(steps: list[tuple[list[str], list[str]]], sizes: dict[str, int],
                graph_inputs: list[str], graph_outputs: list[str],
                aliases: list[tuple[str, str]] | None = None,
                inplace: dict[int, list[tuple[str, str]]] | None = None) -> MemoryPlan:
    """Plan the arena.

    ``steps``: per node, (activation inputs, activation outputs), in execution order.
    ``sizes``: bytes per activation tensor.
    ``aliases``: (src, dst) pairs where dst is a byte-identical view of src.
    ``inplace``: node index → (input, output) pairs the kernel may share.
    """
    uf = _UnionFind()
    for t in sizes:
        uf.add(t)
    for src, dst in aliases or []:
        uf.union(src, dst)

    n_steps = len(steps)
    end = n_steps  # graph outputs stay live past the last node

    def group_span() -> dict[str, list[int]]:
        span: dict[str, list[int]] = {}
        for t in sizes:
            span.setdefault(uf.find(t), [end + 1, -2])
        for t in graph_inputs:
            s = span[uf.find(t)]
            s[0] = min(s[0], -1)
        for i, (ins, outs) in enumerate(steps):
            for t in outs:
                s = span[uf.find(t)]
                s[0] = min(s[0], i)
                s[1] = max(s[1], i)
            for t in ins:
                s = span[uf.find(t)]
                s[1] = max(s[1], i)
        for t in graph_outputs:
            span[uf.find(t)][1] = end
        return span

    ext_in = {uf.find(t) for t in graph_inputs}
    ext_out = {uf.find(t) for t in graph_outputs}
    # In place: merge an output into an input's buffer when that buffer dies here.
    for i in sorted(inplace or {}):
        for src, dst in inplace[i]:
            span = group_span()
            gs, gd = uf.find(src), uf.find(dst)
            if gs == gd or gs in ext_in or gs in ext_out or gd in ext_in or gd in ext_out:
                continue
            if span[gs][1] != i or span[gd][0] != i:
                continue
            if _group_size(uf, sizes, gs) != _group_size(uf, sizes, gd):
                continue
            uf.union(src, dst)

    span = group_span()
    roots: list[str] = []
    for t in sizes:  # insertion order of sizes = deterministic
        r = uf.find(t)
        if r not in roots:
            roots.append(r)
    buffers: list[Buffer] = []
    tensor_buffer: dict[str, int] = {}
    ext_in = {uf.find(t) for t in graph_inputs}
    ext_out = {uf.find(t) for t in graph_outputs}
    copy_io = False
    for r in roots:
        members = [t for t in sizes if uf.find(t) == r]
        storage = "arena"
        if r in ext_out:
            storage = "output"
            copy_io = copy_io or r in ext_in
        elif r in ext_in:
            storage = "input"
        b = Buffer(len(buffers), _group_size(uf, sizes, r), span[r][0], span[r][1], members, storage)
        buffers.append(b)
        for t in members:
            tensor_buffer[t] = b.id
    arena = _place_greedy([b for b in buffers if b.storage == "arena"])
    return MemoryPlan(buffers, tensor_buffer, arena, copy_io)


def _group_size(uf: _UnionFind, sizes: dict[str, int], root: str) -> int:
    return max(sizes[t] for t in sizes if uf.find(t) == root)


def _place_greedy(buffers: list[Buffer]) -> int:
    """TFLM GreedyMemoryPlanner: largest first, first gap that fits among live buffers."""
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.id))
    placed: list[Buffer] = []
    high = 0
    for b in order:
        live = sorted((p for p in placed if p.overlaps(b)), key=lambda p: (p.offset, p.id))
        offset = 0
        for p in live:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, align_up(p.offset + p.size))
        b.offset = offset
        placed.append(b)
        high = max(high, align_up(b.offset + b.size))
    return high
