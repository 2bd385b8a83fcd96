"""The qtc IR: a typed dataflow graph (torch.fx-style plain data).

* ``Graph.tensors`` maps a name to a :class:`Tensor` (activations and constants).
* ``Graph.nodes`` is a list of :class:`Node` in topological order.
* A node refers to tensors by name; an optional input that is absent is ``""``.
* ``Graph.inputs`` / ``Graph.outputs`` name the graph's I/O tensors.
* ``Graph.metadata`` holds free-form JSON-able facts (source file, hashes,
  every choice a pass made).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .tensor import QuantParams, Tensor

AttrValue = Any  # int | float | str | bool | list[int] | list[float] | list[str]


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, AttrValue] = field(default_factory=dict)

    def attr(self, key: str, default: AttrValue = None) -> AttrValue:
        return self.attrs.get(key, default)


@dataclass
class Graph:
    name: str = "model"
    tensors: dict[str, Tensor] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ build
    def add_tensor(self, name: str, shape: Iterable[int], dtype: str = "float32",
                   data: np.ndarray | None = None, quant: QuantParams | None = None) -> Tensor:
        if name in self.tensors:
            raise ValueError(f"tensor {name!r} already exists")
        t = Tensor(name, tuple(shape), dtype, data, quant)
        self.tensors[name] = t
        return t

    def add_const(self, name: str, data: np.ndarray, quant: QuantParams | None = None) -> Tensor:
        data = np.asarray(data)
        return self.add_tensor(self.unique_name(name), data.shape, str(data.dtype), data, quant)

    def add_node(self, op: str, inputs: list[str], outputs: list[str], name: str | None = None,
                 **attrs: AttrValue) -> Node:
        node = Node(op, self.unique_node_name(name or op), list(inputs), list(outputs), dict(attrs))
        self.nodes.append(node)
        return node

    def unique_name(self, base: str) -> str:
        if base not in self.tensors:
            return base
        i = 1
        while f"{base}_{i}" in self.tensors:
            i += 1
        return f"{base}_{i}"

    def unique_node_name(self, base: str) -> str:
        names = {n.name for n in self.nodes}
        if base not in names:
            return base
        i = 1
        while f"{base}_{i}" in names:
            i += 1
        return f"{base}_{i}"

    # ---------------------------------------------------------------- queries
    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        t = self.tensors.get(name)
        return None if t is None else t.data

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    def toposort(self) -> None:
        """Reorder nodes topologically (stable: keeps the given order where it can)."""
        avail = set(self.inputs) | {k for k, t in self.tensors.items() if t.is_const}
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            progressed = False
            rest = []
            for n in pending:
                if all((not i) or i in avail for i in n.inputs):
                    ordered.append(n)
                    avail.update(n.outputs)
                    progressed = True
                else:
                    rest.append(n)
            if not progressed:
                names = ", ".join(n.name for n in rest[:5])
                raise ValueError(f"graph has a cycle or missing inputs at nodes: {names}")
            pending = rest
        self.nodes = ordered

    def remove_unused_tensors(self) -> None:
        used = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            used.update(i for i in n.inputs if i)
            used.update(n.outputs)
        for k in [k for k in self.tensors if k not in used]:
            del self.tensors[k]

    @property
    def is_quantized(self) -> bool:
        return any(t.quant is not None and not t.is_const for t in self.tensors.values())

    def __str__(self) -> str:  # compact, fx-like
        lines = [f"graph {self.name}({', '.join(self.inputs)}):"]
        for n in self.nodes:
            a = ", ".join(f"{k}={v}" for k, v in n.attrs.items())
            lines.append(f"  {', '.join(n.outputs)} = {n.op}({', '.join(n.inputs)}{'; ' + a if a else ''})")
        lines.append(f"  return {', '.join(self.outputs)}")
        return "\n".join(lines)
