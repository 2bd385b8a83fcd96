"""What ``qtc show`` prints: one row per node, then the model's totals.

* params: elements of a node's constant inputs (weights, biases); int64
  constants (index/shape vectors) are not parameters.  Totals count each
  constant once, even if several nodes share it.
* MACs: the op's ``macs`` rule (multiply-accumulates; 0 for data movement).
* weight bytes: constants as stored on a device, sub-byte weights packed
  (``Tensor.nbytes``: 4-bit → two per byte).
* activation peak: the largest sum of live activation bytes while running the
  nodes in order (a tensor lives from its producer to its last consumer; graph
  inputs from the start, graph outputs to the end); no buffer sharing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .graph import Graph, Node
from .tensor import Tensor


@dataclass
class Row:
    index: int
    node: str
    op: str
    in_shapes: list[tuple[int, ...]]
    out_shapes: list[tuple[int, ...]]
    params: int
    macs: int | None  # None: op unknown to the registry
    quant: str


@dataclass
class Totals:
    nodes: int
    params: int
    macs: int
    weight_bytes: int
    activation_peak_bytes: int
    quantized: bool
    integer_nodes: int


@dataclass
class Summary:
    name: str
    inputs: list[tuple[str, tuple[int, ...], str]]
    outputs: list[tuple[str, tuple[int, ...], str]]
    rows: list[Row] = field(default_factory=list)
    totals: Totals | None = None

    def to_json(self) -> dict:
        return asdict(self)


def is_param(t: Tensor | None) -> bool:
    return t is not None and t.is_const and t.dtype != "int64"


def node_params(g: Graph, node: Node) -> int:
    return sum(g.tensors[i].size for i in node.inputs if i and is_param(g.tensors.get(i)))


def node_macs(g: Graph, node: Node) -> int | None:
    from ..ops.registry import get_op, has_op

    if not has_op(node.op):
        return None
    ins = [g.tensors.get(i) if i else None for i in node.inputs]
    outs = [g.tensors[o] for o in node.outputs]
    return int(get_op(node.op).macs(node, ins, outs))


def quant_short(g: Graph, node: Node) -> str:
    """Output quant params, plus the weight's when it has its own (e.g. per-channel)."""
    parts = []
    out = g.tensors.get(node.outputs[0]) if node.outputs else None
    if out is not None and out.quant is not None:
        parts.append(out.quant.short())
    for i in node.inputs[1:]:
        t = g.tensors.get(i) if i else None
        if t is not None and t.is_const and t.quant is not None and t.dtype != "int32":
            parts.append("w " + t.quant.short())
            break
    return " | ".join(parts)


def activation_peak(g: Graph) -> int:
    """Peak bytes of simultaneously live activations, running nodes in order."""
    end = len(g.nodes)
    last_use: dict[str, int] = {}
    for i, node in enumerate(g.nodes):
        for name in node.inputs:
            t = g.tensors.get(name) if name else None
            if t is not None and not t.is_const:
                last_use[name] = i
    for name in g.outputs:
        last_use[name] = end
    live = {name for name in g.inputs if name in g.tensors}
    peak = sum(g.tensors[n].nbytes for n in live)
    for i, node in enumerate(g.nodes):
        live.update(o for o in node.outputs if o in g.tensors)
        peak = max(peak, sum(g.tensors[n].nbytes for n in live))
        live = {n for n in live if last_use.get(n, -1) > i}
    return peak


def summarize(g: Graph) -> Summary:
    from ..interp.runner import INT_DTYPES

    def io(names):
        return [(n, g.tensors[n].shape, g.tensors[n].dtype) for n in names if n in g.tensors]

    s = Summary(g.name, io(g.inputs), io(g.outputs))
    used_consts: dict[str, Tensor] = {}
    total_macs = 0
    int_nodes = 0
    for idx, node in enumerate(g.nodes):
        in_shapes = [g.tensors[i].shape for i in node.inputs
                     if i and i in g.tensors and not g.tensors[i].is_const]
        out_shapes = [g.tensors[o].shape for o in node.outputs if o in g.tensors]
        macs = node_macs(g, node)
        total_macs += macs or 0
        for i in node.inputs:
            t = g.tensors.get(i) if i else None
            if t is not None and t.is_const:
                used_consts[i] = t
        out = g.tensors.get(node.outputs[0]) if node.outputs else None
        if out is not None and out.quant is not None and out.dtype in INT_DTYPES:
            int_nodes += 1
        s.rows.append(Row(idx, node.name, node.op, in_shapes, out_shapes, node_params(g, node), macs,
                          quant_short(g, node)))
    s.totals = Totals(
        nodes=len(g.nodes),
        params=sum(t.size for t in used_consts.values() if is_param(t)),
        macs=total_macs,
        weight_bytes=sum(t.nbytes for t in used_consts.values()),
        activation_peak_bytes=activation_peak(g),
        quantized=g.is_quantized,
        integer_nodes=int_nodes,
    )
    return s


# ------------------------------------------------------------------ printing
def fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def fmt_count(n: int, unit: str = "") -> str:
    """1234567 → '1,234,567 (1.23 M)'; small numbers stay plain."""
    base = f"{n:,}{unit}"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{base} ({n / div:.3g} {suffix})"
    return base


def fmt_bytes(n: int) -> str:
    for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n:,} B ({n / div:.3g} {suffix})"
    return f"{n:,} B"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """A plain-text table; columns in ``right`` are right-aligned."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells):
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def format_summary(s: Summary, name_width: int = 40) -> str:
    rows = []
    for r in s.rows:
        shapes = f"{', '.join(fmt_shape(x) for x in r.in_shapes) or '-'} -> {', '.join(fmt_shape(x) for x in r.out_shapes)}"
        rows.append([str(r.index), _clip(r.node, name_width), r.op, shapes, f"{r.params:,}",
                     "?" if r.macs is None else f"{r.macs:,}", r.quant])
    t = s.totals
    ios = lambda xs: ", ".join(f"{n} {fmt_shape(sh)} {dt}" for n, sh, dt in xs)  # noqa: E731
    quant = (f"yes ({t.integer_nodes}/{t.nodes} nodes integer)" if t.quantized else "no")
    lines = [
        f"model {s.name}",
        f"inputs:  {ios(s.inputs)}",
        f"outputs: {ios(s.outputs)}",
        "",
        table(["#", "node", "op", "inputs -> output", "params", "MACs", "quant"], rows, right={0, 4, 5}),
        "",
        f"nodes: {t.nodes}",
        f"params: {fmt_count(t.params)}",
        f"MACs: {fmt_count(t.macs)}",
        f"weight bytes: {fmt_bytes(t.weight_bytes)}",
        f"activation peak: {fmt_bytes(t.activation_peak_bytes)}",
        f"quantized: {quant}",
    ]
    return "\n".join(lines)
