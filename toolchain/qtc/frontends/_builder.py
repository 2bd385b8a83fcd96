"""A small graph builder shared by the front ends.

It adds constants and nodes to a :class:`~qtc.ir.graph.Graph` and infers each
new node's output shapes right away from the op's shape rule, so a front end
always knows the static shape of every tensor it has produced (needed to fold
``Shape``-style subgraphs and to resolve ``-1`` in reshapes).
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..ir.graph import Graph
from ..ops.registry import get_op, has_op

_SAFE = re.compile(r"[^A-Za-z0-9_.:/\-]")


def clean_name(name: str, fallback: str = "t") -> str:
    """A readable tensor/node name (no spaces or odd characters)."""
    name = _SAFE.sub("_", str(name or "")).strip("_")
    return name or fallback


def to_ir_array(a) -> np.ndarray:
    """A numpy array in an IR dtype (float64/float16 → float32, wide unsigned → int64)."""
    a = np.asarray(a)
    if a.dtype in (np.float64, np.float16):
        return a.astype(np.float32)
    if a.dtype in (np.uint16, np.uint32, np.uint64):
        return a.astype(np.int64)
    return a


class GraphBuilder:
    def __init__(self, name: str, where: str):
        self.g = Graph(name=name)
        self.where = where  # e.g. the source file, for error messages

    # ------------------------------------------------------------- tensors
    def input(self, name: str, shape, dtype: str = "float32") -> str:
        name = self.g.unique_name(clean_name(name, "input"))
        self.g.add_tensor(name, tuple(int(d) for d in shape), dtype)
        self.g.inputs.append(name)
        return name

    def const(self, base: str, data) -> str:
        return self.g.add_const(clean_name(base, "const"), to_ir_array(data)).name

    def shape(self, name: str) -> tuple[int, ...]:
        return self.g.tensors[name].shape

    def dtype(self, name: str) -> str:
        return self.g.tensors[name].dtype

    def rank(self, name: str) -> int:
        return len(self.g.tensors[name].shape)

    # --------------------------------------------------------------- nodes
    def node(self, op: str, inputs: list[str], name: str, outputs: list[str] | None = None,
             n_out: int = 1, src: str | None = None, **attrs) -> list[str]:
        """Add ``op`` and infer its outputs; returns the output tensor names.

        ``src`` names the source-model node for error messages.
        """
        src = src or name
        if not has_op(op):
            raise UnsupportedOpError(f"qtc has no IR op {op} (needed for this node)",
                                     where=f"{self.where}: node {src}",
                                     hint="this qtc build lacks the op; see 'qtc ops'")
        outs = [self.g.unique_name(clean_name(o)) for o in (outputs or [])]
        base = clean_name(name, op.lower())
        while len(outs) < n_out:
            outs.append(self.g.unique_name(base if not outs and n_out == 1 else f"{base}_out{len(outs)}"))
        attrs = {k: _plain(v) for k, v in attrs.items()}
        node = self.g.add_node(op, list(inputs), outs, name=base, **attrs)
        ins = [self.g.tensors[i] if i else None for i in node.inputs]
        try:
            specs = get_op(op).infer(node, ins)
        except (ValueError, IndexError, TypeError) as exc:
            shapes = [t.shape if t is not None else None for t in ins]
            raise ShapeError(f"{op} cannot take input shapes {shapes}: {exc}",
                             where=f"{self.where}: node {src}",
                             hint="check the input shapes (--input-shape) and the node's attributes") from None
        for o, spec in zip(outs, specs):
            self.g.add_tensor(o, spec.shape, spec.dtype)
        return outs

    def node1(self, op: str, inputs: list[str], name: str, **kw) -> str:
        return self.node(op, inputs, name, **kw)[0]

    def finish(self, outputs: list[str]) -> Graph:
        self.g.outputs = list(outputs)
        self.g.remove_unused_tensors()
        return self.g


def _plain(v):
    """Attribute values as plain JSON-able Python (lists of int/float, bools, str)."""
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v

