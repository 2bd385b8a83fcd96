"""The op registry: each op is defined once.

An op definition is a class registered with :func:`register` that gives

* ``infer(node, ins) -> list[TensorSpec]``: the shape/dtype rule, from the
  input :class:`~qtc.ir.tensor.Tensor` objects (constants carry ``data``);
* ``run_float(node, xs) -> list[np.ndarray]``: float32 semantics;
* ``run_int(node, xs, ctx) -> list[np.ndarray]``: exact integer semantics. ``xs``
  are integer arrays (int64 for arithmetic headroom); ``ctx`` exposes the quant
  params of the node's tensors and the target's numerics
  (see :mod:`qtc.interp.numerics`).  Ops with no integer kernel leave
  ``run_int`` unset; the interpreter then says so in one line.
* ``macs(node, ins, outs) -> int``: multiply-accumulates, for ``qtc show``.

``ATTRS`` declares every attribute with its default; unknown attributes are an
IR validation error.  Keep each op small and its arithmetic readable (TFLM's
``reference/integer_ops`` is the model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..ir.graph import Node
from ..ir.tensor import QuantParams, Tensor


@dataclass
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str = "float32"


class IntContext:
    """What an integer kernel may know about the node it runs."""

    def __init__(self, node: Node, in_tensors: list[Tensor | None], out_tensors: list[Tensor], numerics):
        self.node = node
        self.in_tensors = in_tensors
        self.out_tensors = out_tensors
        self.numerics = numerics

    def in_q(self, i: int) -> QuantParams:
        t = self.in_tensors[i]
        if t is None or t.quant is None:
            raise KeyError(f"input {i} of {self.node.name} has no quant params")
        return t.quant

    def out_q(self, i: int = 0) -> QuantParams:
        q = self.out_tensors[i].quant
        if q is None:
            raise KeyError(f"output {i} of {self.node.name} has no quant params")
        return q

    def out_dtype(self, i: int = 0) -> str:
        return self.out_tensors[i].dtype


class OpDef:
    name: ClassVar[str] = ""
    ATTRS: ClassVar[dict[str, Any]] = {}
    # number of inputs: (min, max); max None = variadic
    NUM_INPUTS: ClassVar[tuple[int, int | None]] = (1, 1)
    NUM_OUTPUTS: ClassVar[int] = 1
    has_int: ClassVar[bool] = False

    @classmethod
    def attr(cls, node: Node, key: str):
        if key in node.attrs:
            return node.attrs[key]
        return cls.ATTRS[key]

    @classmethod
    def infer(cls, node: Node, ins: list[Tensor | None]) -> list[TensorSpec]:
        raise TypeError(f"op definition {cls.name} lacks a shape rule")

    @classmethod
    def run_float(cls, node: Node, xs: list[np.ndarray | None]) -> list[np.ndarray]:
        raise TypeError(f"op definition {cls.name} lacks float semantics")

    @classmethod
    def run_int(cls, node: Node, xs: list[np.ndarray | None], ctx: IntContext) -> list[np.ndarray]:
        from ..errors import UnsupportedOpError

        raise UnsupportedOpError(
            f"op {cls.name} has no integer semantics in qtc",
            where=f"node {node.name}",
            hint="keep this layer in float (mixed precision) or replace the op",
        )

    @classmethod
    def macs(cls, node: Node, ins: list[Tensor | None], outs: list[Tensor]) -> int:
        return 0


_REGISTRY: dict[str, type[OpDef]] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    if not cls.name:
        raise ValueError("op class needs a name")
    if cls.name in _REGISTRY:
        raise ValueError(f"op {cls.name} registered twice")
    cls.has_int = cls.run_int.__func__ is not OpDef.run_int.__func__  # type: ignore[attr-defined]
    _REGISTRY[cls.name] = cls
    return cls


def get_op(name: str) -> type[OpDef]:
    _load_all()
    return _REGISTRY[name]


def has_op(name: str) -> bool:
    _load_all()
    return name in _REGISTRY


def all_ops() -> dict[str, type[OpDef]]:
    _load_all()
    return dict(_REGISTRY)


_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    from .. import ops as pkg

    for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if m.name != "registry" and not m.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{m.name}")
