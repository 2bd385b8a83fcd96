"""Lowering one IR node to C: the shared context and the op → lowering table.

A lowering function takes a :class:`NodeCtx` and returns a :class:`Lowered`:
C statements that call one kernel, written with ``$X<i>`` / ``$Y<i>``
placeholders for the node's input / output pointers (the code generator
substitutes arena offsets, the caller's ``in``/``out`` or constant arrays)
and ``$S`` for the model's scratch buffer (``Lowered.scratch`` bytes of it).
Constant data (weights, folded biases, multipliers, tables) and parameter
structs are registered on the context and emitted once, ``static const``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import QtcError, UnsupportedOpError
from ...ir.graph import Graph, Node
from ...ir.tensor import QuantParams, Tensor
from .cdata import CArray, c_int, comment_text


@dataclass
class Lowered:
    code: list[str]                                   # qtc-kernel statements
    esp_nn_code: list[str] | None = None              # ESP-NN statements (under #ifdef)
    inplace: list[tuple[int, int]] = field(default_factory=list)  # (input idx, output idx)
    alias_of: int | None = None                       # output 0 is a view of this input: no code
    needs_esp_nn_scratch: bool = False
    scratch: int = 0                                  # bytes of the shared scratch buffer ($S) the code uses


class NodeCtx:
    """What a lowering may look at and the constants it emits."""

    def __init__(self, g: Graph, node: Node, index: int, numerics, esp_nn: bool):
        self.g = g
        self.node = node
        self.index = index
        self.num = numerics
        self.esp_nn = esp_nn
        self.prefix = f"n{index}"
        self.arrays: list[CArray] = []
        self.structs: list[str] = []

    # ---------------------------------------------------------------- tensors
    def tin(self, i: int) -> Tensor | None:
        name = self.node.inputs[i] if i < len(self.node.inputs) else ""
        return self.g.tensors[name] if name else None

    def tout(self, i: int = 0) -> Tensor:
        return self.g.tensors[self.node.outputs[i]]

    def q_in(self, i: int) -> QuantParams:
        t = self.tin(i)
        if t is None or t.quant is None:
            raise self.error(f"input {i} has no quantization parameters")
        return t.quant

    def q_out(self, i: int = 0) -> QuantParams:
        q = self.tout(i).quant
        if q is None:
            raise self.error("output has no quantization parameters")
        return q

    def attr(self, key: str):
        from ...ops.registry import get_op

        return get_op(self.node.op).attr(self.node, key)

    def per_tensor(self, q: QuantParams, what: str) -> tuple[float, int]:
        if q.scale.size != 1:
            raise self.error(f"{what} is quantized per channel; the C back end needs per-tensor activations")
        return float(q.scale[0]), int(q.zero_point[0])

    def channels_last(self) -> None:
        if not bool(self.attr("channels_last")):
            raise UnsupportedOpError(f"{self.node.op} is channels-first; the C kernels are NHWC",
                                     where=self.where, hint="re-import with 'qtc import --channels-last' before quantizing")

    # -------------------------------------------------------------- emitting
    def array(self, suffix: str, ctype: str, values, comment: str = "", guard: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        self.arrays.append(CArray(name, ctype, np.asarray(values), comment, guard))
        return name

    def struct(self, suffix: str, ctype: str, fields: dict, guard: str | None = None) -> str:
        """A ``static const`` parameter struct; a field is an int or a list of ints."""
        name = f"{self.prefix}_{suffix}"

        def val(v) -> str:
            if isinstance(v, (list, tuple, np.ndarray)):
                return "{" + ", ".join(c_int(int(e)) for e in v) + "}"
            return c_int(int(v))

        body = ", ".join(f".{k} = {val(v)}" for k, v in fields.items())
        text = f"static const {ctype} {name} = {{{body}}};"
        if guard:
            text = _guarded(guard, text)
        self.structs.append(text)
        return name

    # ------------------------------------------------------------- quantized
    def out_range(self, activation: str = "none") -> tuple[int, int]:
        """int8 output clamp range incl. the fused activation (as ops/_util.requant_out)."""
        oq = self.q_out()
        if self.tout().dtype != "int8":
            raise self.error(f"output dtype {self.tout().dtype} is not int8")
        lo, hi = max(-128, oq.qmin), min(127, oq.qmax)
        return self.num.quantized_activation_range(activation, float(oq.scale[0]), int(oq.zero_point[0]), lo, hi)

    def multipliers(self, reals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.num.quantize_multipliers(np.asarray(reals, dtype=np.float64).reshape(-1))
        if m.size == 1 and n > 1:
            m, s = np.repeat(m, n), np.repeat(s, n)
        return m.astype(np.int64), s.astype(np.int64)

    @property
    def where(self) -> str:
        return f"node {self.node.name} ({self.node.op})"

    def error(self, what: str, hint: str | None = None) -> QtcError:
        return UnsupportedOpError(what, where=self.where, hint=hint or "keep this layer in int8 with per-tensor "
                                  "activations, or compile with the tflite back end")

    def comment(self) -> str:
        return comment_text(f"{self.node.name}: {self.node.op}")


def _guarded(guard: str, text: str) -> str:
    if guard.startswith("!"):
        return f"#ifndef {guard[1:]}\n{text}\n#endif"
    return f"#ifdef {guard}\n{text}\n#endif"


LOWERINGS: dict[str, Callable[[NodeCtx], Lowered]] = {}


def lowers(*ops: str):
    def deco(fn):
        for op in ops:
            LOWERINGS[op] = fn
        return fn
    return deco


def load_lowerings() -> dict[str, Callable[[NodeCtx], Lowered]]:
    from . import lower_conv, lower_eltwise, lower_misc  # noqa: F401  (register themselves)

    return LOWERINGS
