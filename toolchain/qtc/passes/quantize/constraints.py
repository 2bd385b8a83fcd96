"""What a target allows, and checking a quantized graph against it.

:func:`spec_for` turns a target's ``constraints`` (targets/*.yaml) plus the
user's options into a :class:`QuantSpec` the quantizer follows.
:func:`check` lists every violation of a graph against a target, each naming
its node: non power-of-two scales on a PoT target, non-zero zero points on a
symmetric target, biases wider than the target's bias width, weights outside
``[qmin, qmax]`` for their bits, per-channel weights on a per-tensor target,
channel counts that are not a multiple of ``channel_multiple``, and ops the
target does not list.

Target keys read here (all under ``constraints:``)::

  activations: {bits, symmetric, per_channel}
  weights:     {bits, symmetric, per_channel, narrow_range}
  bias_bits:   32            # or by weight bits: {8: 24, 4: 16, 2: 16}
  power_of_two: false
  channel_multiple: 1
  ops: [...]                 # optional allow-list
  float_ops: [...]           # ops the target runs in float (kept float when quantizing)
  rounding: half_away        # informational: the device's rounding
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import QtcError
from ...ir.graph import Graph
from .params import is_pot

# Ops whose weights (input 1) are per-output-channel along axis 0 and bias (input 2) int32.
WEIGHTED_OPS = ("Conv1D", "Conv2D", "ConvTranspose2D", "FullyConnected")
CONV_OPS = ("Conv1D", "Conv2D", "ConvTranspose2D")


@dataclass
class QuantSpec:
    target: str = "host"
    abits: int = 8
    wbits: int = 8
    act_symmetric: bool = False
    per_channel: bool = True
    power_of_two: bool = False
    bias_bits: int = 32
    channel_multiple: int = 1
    ops: list[str] | None = None
    float_ops: list[str] = field(default_factory=list)
    rounding: str = "half_away"
    bias_bits_by_wbits: dict = field(default_factory=dict)  # the target's bias width at other weight bits

    def bias_bits_at(self, wbits: int) -> int:
        """The bias width for a layer with ``wbits``-bit weights (per-layer weight bits)."""
        return int(self.bias_bits_by_wbits.get(wbits, self.bias_bits)) if wbits != self.wbits else self.bias_bits

    def to_json(self) -> dict:
        return {"target": self.target, "abits": self.abits, "wbits": self.wbits,
                "act_symmetric": self.act_symmetric, "per_channel": self.per_channel,
                "power_of_two": self.power_of_two, "bias_bits": self.bias_bits,
                "channel_multiple": self.channel_multiple, "float_ops": list(self.float_ops),
                "rounding": self.rounding}


def bias_bits_for(constraints: dict, wbits: int) -> int:
    bb = constraints.get("bias_bits", 32)
    if isinstance(bb, dict):
        by = {int(k): int(v) for k, v in bb.items()}
        if wbits in by:
            return by[wbits]
        return by.get(8, 32)
    return int(bb)


def spec_for(target, *, wbits: int | None = None, abits: int | None = None,
             per_channel: bool | None = None) -> QuantSpec:
    """The quantization rules for ``target`` (a Target or its name) and the user's options."""
    from ...target import load_target

    t = load_target(target) if isinstance(target, str) else target
    c = t.constraints or {}
    acts = c.get("activations") or {}
    wts = c.get("weights") or {}
    wbits = int(wbits if wbits is not None else wts.get("bits", 8))
    abits = int(abits if abits is not None else acts.get("bits", 8))
    if wbits not in (2, 4, 8):
        raise QtcError(f"weight bits {wbits} not supported", hint="use --wbits 8, 4 or 2")
    if abits not in (4, 8):
        raise QtcError(f"activation bits {abits} not supported", hint="use --abits 8 or 4")
    if wts.get("symmetric", True) is False:
        raise QtcError("asymmetric weights are not supported", where=f"target {t.name}",
                       hint="set constraints.weights.symmetric: true")
    pc = bool(wts.get("per_channel", True)) if per_channel is None else bool(per_channel)
    return QuantSpec(target=t.name, abits=abits, wbits=wbits, act_symmetric=bool(acts.get("symmetric", False)),
                     per_channel=pc, power_of_two=bool(c.get("power_of_two", False)),
                     bias_bits=bias_bits_for(c, wbits), channel_multiple=int(c.get("channel_multiple", 1) or 1),
                     ops=list(c["ops"]) if c.get("ops") else None, float_ops=list(c.get("float_ops") or []),
                     rounding=str(c.get("rounding", "half_away")),
                     bias_bits_by_wbits={b: bias_bits_for(c, b) for b in (2, 4, 8)})


@dataclass
class Violation:
    node: str
    rule: str
    message: str

    def line(self) -> str:
        return f"{self.node}: [{self.rule}] {self.message}"


def _weight_bits(g: Graph) -> int:
    bits = [g.tensors[n.inputs[1]].quant.bits for n in g.nodes
            if n.op in WEIGHTED_OPS and len(n.inputs) > 1 and g.tensors[n.inputs[1]].quant is not None]
    return min(bits) if bits else 8


def check(g: Graph, target) -> list[Violation]:
    """Every constraint violation of quantized graph ``g`` on ``target``."""
    from ...target import load_target

    t = load_target(target) if isinstance(target, str) else target
    c = t.constraints or {}
    acts = c.get("activations") or {}
    wts = c.get("weights") or {}
    pot = bool(c.get("power_of_two", False))
    act_sym = bool(acts.get("symmetric", False))
    per_channel_ok = bool(wts.get("per_channel", True))
    mult = int(c.get("channel_multiple", 1) or 1)
    ops = set(c["ops"]) if c.get("ops") else None
    out: list[Violation] = []
    seen: set[str] = set()

    def tensor_rules(node, name: str, role: str) -> None:
        tt = g.tensors.get(name)
        if tt is None or tt.quant is None or name in seen:
            return
        seen.add(name)
        q = tt.quant
        if pot and not np.all(is_pot(q.scale)):
            bad = q.scale[~is_pot(q.scale)]
            out.append(Violation(node.name, "power-of-two",
                                 f"{role} {name!r} scale {float(bad[0]):.6g} is not a power of two"
                                 + (f" ({bad.size} of {q.scale.size} channels)" if q.scale.size > 1 else "")))
        symmetric_needed = role in ("weight", "bias") or act_sym
        if symmetric_needed and np.any(q.zero_point != 0):
            out.append(Violation(node.name, "zero-point",
                                 f"{role} {name!r} has zero point {int(q.zero_point[q.zero_point != 0][0])}, "
                                 f"the target needs 0"))
        if role == "weight" and tt.data is not None:
            d = tt.data.astype(np.int64)
            if d.size and (d.min() < q.qmin or d.max() > q.qmax):
                out.append(Violation(node.name, "weight-range",
                                     f"weight {name!r} holds values in [{int(d.min())}, {int(d.max())}], "
                                     f"outside [{q.qmin}, {q.qmax}] for {q.bits}-bit"))
            if q.per_channel and not per_channel_ok:
                out.append(Violation(node.name, "per-channel",
                                     f"weight {name!r} is per-channel; the target takes per-tensor weights"))
            if q.per_channel and q.axis % len(tt.shape) != 0:
                out.append(Violation(node.name, "per-channel-axis",
                                     f"weight {name!r} is quantized along axis {q.axis}, not 0"))

    if not any(tt.quant is not None for tt in g.tensors.values()):
        out.append(Violation(g.name, "not-quantized", "the graph has no quantized tensor; run 'qtc quantize' first"))
    graph_bias_bits = bias_bits_for(c, _weight_bits(g))
    for node in g.nodes:
        wq = g.tensors[node.inputs[1]].quant if node.op in WEIGHTED_OPS and len(node.inputs) > 1 else None
        bias_bits = bias_bits_for(c, wq.bits) if wq is not None else graph_bias_bits  # per-layer weight bits
        blo, bhi = -(1 << (bias_bits - 1)), (1 << (bias_bits - 1)) - 1
        if ops is not None and node.op not in ops:
            out.append(Violation(node.name, "op", f"op {node.op} is not supported on target {t.name}"))
        for i, name in enumerate(node.inputs):
            if not name:
                continue
            role = "activation"
            if node.op in WEIGHTED_OPS and i == 1:
                role = "weight"
            elif node.op in WEIGHTED_OPS and i == 2:
                role = "bias"
            elif g.tensors[name].is_const:
                role = "constant"
            tensor_rules(node, name, role)
            bt = g.tensors[name]
            if role == "bias" and bt.quant is not None and bt.data is not None and bt.data.size:
                d = bt.data.astype(np.int64)
                if d.min() < blo or d.max() > bhi:
                    out.append(Violation(node.name, "bias-width",
                                         f"bias {name!r} holds values in [{int(d.min())}, {int(d.max())}], "
                                         f"wider than the target's {bias_bits}-bit bias"))
        for name in node.outputs:
            tensor_rules(node, name, "activation")
        if mult > 1 and node.op in CONV_OPS + ("MaxPool",):
            out.extend(_channel_violations(g, node, mult))
    return out


def _channel_violations(g: Graph, node, mult: int) -> list[Violation]:
    out = []
    if node.op in CONV_OPS:
        w = g.tensors[node.inputs[1]]
        groups = int(node.attrs.get("groups", 1) or 1)
        cout = w.shape[0]
        cin = w.shape[-1] * groups
        if cout % mult:
            out.append(Violation(node.name, "channels", f"{cout} output channels, not a multiple of {mult}"))
        if cin > 1 and cin % mult:
            out.append(Violation(node.name, "channels", f"{cin} input channels, not a multiple of {mult}"))
    elif node.op == "MaxPool":
        x = g.tensors[node.inputs[0]]
        cl = bool(node.attrs.get("channels_last", False))
        ch = x.shape[-1] if cl else x.shape[1]
        if ch % mult:
            out.append(Violation(node.name, "channels", f"{ch} channels, not a multiple of {mult}"))
    return out
