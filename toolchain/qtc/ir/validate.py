"""IR validation and shape inference.

``validate(g)`` checks: known ops and attributes, input/output counts,
topological order, every referenced tensor exists, each tensor produced once,
no dangling (unused, unproduced) tensors, and that stored shapes/dtypes agree
with each op's shape rule.  ``infer_shapes(g)`` fills shapes/dtypes in from the
op rules (front ends call it after building a graph).
"""
from __future__ import annotations

from ..errors import UnsupportedOpError, ValidationError
from .graph import Graph


def _opdef(node):
    from ..ops.registry import get_op, has_op

    if not has_op(node.op):
        raise UnsupportedOpError(f"op {node.op} is not in qtc's op registry", where=f"node {node.name}",
                                 hint="see 'qtc ops' for the supported list")
    return get_op(node.op)


def infer_shapes(g: Graph) -> Graph:
    """Set every node output's shape and dtype from the op's shape rule."""
    for node in g.nodes:
        op = _opdef(node)
        ins = [g.tensors.get(i) if i else None for i in node.inputs]
        missing = [i for i, t in zip(node.inputs, ins) if i and t is None]
        if missing:
            raise ValidationError(f"input tensor {missing[0]!r} does not exist", where=f"node {node.name} ({node.op})")
        try:
            specs = op.infer(node, ins)
        except (ValueError, IndexError) as exc:
            raise ValidationError(f"shape rule failed: {exc}", where=f"node {node.name} ({node.op})",
                                  hint="check the input shapes (use --input-shape for dynamic dims)") from None
        for name, spec in zip(node.outputs, specs):
            t = g.tensors.get(name)
            if t is None:
                g.add_tensor(name, spec.shape, spec.dtype)
            else:
                t.shape = tuple(int(d) for d in spec.shape)
                if t.quant is None and t.dtype == "float32":
                    t.dtype = spec.dtype
    return g


def with_batch(g: Graph, batch: int) -> Graph:
    """A copy of ``g`` whose inputs have leading dim ``batch``; every other shape is re-inferred.

    Sound only for graphs whose ops keep the batch on axis 0 (no Reshape that
    folds it away); callers that need certainty ``validate`` the result.
    """
    r = g.copy()
    for name in r.inputs:
        t = r.tensors[name]
        if not t.shape:
            raise ValidationError(f"input {name!r} is a scalar: it has no batch dim", where=f"graph {g.name}")
        t.shape = (batch, *t.shape[1:])
    for n in r.nodes:  # forget stale shapes so the rules recompute them
        for o in n.outputs:
            r.tensors[o].shape = ()
    return infer_shapes(r)


def validate(g: Graph) -> None:
    from ..ops.registry import get_op

    where = f"graph {g.name}"
    produced: dict[str, str] = {}
    avail = set(g.inputs)
    for name in g.inputs:
        if name not in g.tensors:
            raise ValidationError(f"graph input {name!r} has no tensor", where=where)
    for name, t in g.tensors.items():
        if t.is_const:
            avail.add(name)
            if tuple(t.data.shape) != t.shape:
                raise ValidationError(f"constant {name!r} has data of shape {t.data.shape}, declared {t.shape}", where=where)
        if t.quant is not None and t.quant.axis is not None:
            ax = t.quant.axis
            if not -len(t.shape) <= ax < len(t.shape) or t.quant.scale.size != t.shape[ax]:
                raise ValidationError(f"tensor {name!r}: per-channel quant along axis {ax} has "
                                      f"{t.quant.scale.size} scales for shape {t.shape}", where=where)
    used: set[str] = set(g.outputs)
    for node in g.nodes:
        nwhere = f"node {node.name} ({node.op})"
        op = _opdef(node)
        lo, hi = op.NUM_INPUTS
        if len(node.inputs) < lo or (hi is not None and len(node.inputs) > hi):
            raise ValidationError(f"takes {lo}..{hi if hi is not None else 'n'} inputs, got {len(node.inputs)}", where=nwhere)
        unknown = set(node.attrs) - set(get_op(node.op).ATTRS)
        if unknown:
            raise ValidationError(f"unknown attribute(s) {sorted(unknown)}", where=nwhere)
        for i in node.inputs:
            if not i:
                continue
            used.add(i)
            if i not in g.tensors:
                raise ValidationError(f"input tensor {i!r} does not exist (dangling reference)", where=nwhere)
            if i not in avail:
                raise ValidationError(f"input {i!r} is used before it is produced (not in topological order)", where=nwhere)
        for o in node.outputs:
            if o in produced:
                raise ValidationError(f"tensor {o!r} is produced twice (also by {produced[o]})", where=nwhere)
            if o not in g.tensors:
                raise ValidationError(f"output tensor {o!r} does not exist", where=nwhere)
            produced[o] = node.name
            avail.add(o)
        ins = [g.tensors[i] if i else None for i in node.inputs]
        try:
            specs = op.infer(node, ins)
        except (ValueError, IndexError) as exc:
            raise ValidationError(f"shape rule failed: {exc}", where=nwhere) from None
        for o, spec in zip(node.outputs, specs):
            t = g.tensors[o]
            if tuple(spec.shape) != t.shape:
                raise ValidationError(f"output {o!r} has shape {t.shape}, the op's rule gives {tuple(spec.shape)}", where=nwhere)
            if t.quant is None and t.dtype != spec.dtype:
                raise ValidationError(f"output {o!r} has dtype {t.dtype}, the op's rule gives {spec.dtype}", where=nwhere)
    for o in g.outputs:
        if o not in avail:
            raise ValidationError(f"graph output {o!r} is never produced", where=where)
    dangling = [k for k, t in g.tensors.items() if k not in used and k not in produced and k not in g.inputs]
    if dangling:
        raise ValidationError(f"dangling tensors (never used or produced): {dangling[:5]}", where=where,
                              hint="run the dead-node removal pass")
