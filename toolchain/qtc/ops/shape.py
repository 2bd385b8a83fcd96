"""Data-movement ops: Concat, Split, Slice, Reshape, Flatten, Squeeze, Unsqueeze,
Transpose, Pad.

Integer semantics: the integers are moved unchanged (TFLite copy kernels).
Where an output's quant params differ from its input's, the values are
requantized with TFLite Requantize — what the TF converter does by inserting
a QUANTIZE op (LiteRT and TFLM int8 CONCATENATION require all params equal;
the converter adds QUANTIZE ops on the inputs that differ).  Pad fills with
the output's quantized pad value (its zero point for value 0).
"""
from __future__ import annotations

import numpy as np

from ._util import norm_axis, out_range, requantize, requantize_to_output, round_half_away, same_qparams
from .registry import OpDef, TensorSpec, register


def _dtype(t) -> str:
    return t.dtype if t.quant is None else "float32"


def _to_output(ctx, x: np.ndarray, in_index: int, out_index: int) -> np.ndarray:
    """Requantize input ``in_index``'s integers to output ``out_index``'s params if they differ."""
    t = ctx.in_tensors[in_index]
    x = np.asarray(x, dtype=np.int64)
    if t is None or t.quant is None:  # an unquantized integer constant: already plain integers
        return x
    iq, oq = t.quant, ctx.out_q(out_index)
    if same_qparams(iq, oq):
        return x
    lo, hi = out_range(ctx, out_index)
    return requantize(ctx.numerics, x, iq, oq, lo, hi)


class _Copy(OpDef):
    """A single-input op whose integer kernel is its float kernel on the integers."""

    @classmethod
    def move(cls, node, x: np.ndarray) -> np.ndarray:
        raise TypeError(f"{cls.__name__} is abstract: a subclass defines this")

    @classmethod
    def run_float(cls, node, xs):
        return [cls.move(node, xs[0])]

    @classmethod
    def run_int(cls, node, xs, ctx):
        return [requantize_to_output(ctx, cls.move(node, np.asarray(xs[0], dtype=np.int64)))]


@register
class Concat(OpDef):
    name = "Concat"
    NUM_INPUTS = (1, None)
    ATTRS = {"axis": 0}

    @classmethod
    def infer(cls, node, ins):
        rank = len(ins[0].shape)
        axis = norm_axis(int(cls.attr(node, "axis")), rank)
        out = list(ins[0].shape)
        for t in ins[1:]:
            if len(t.shape) != rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, ins[0].shape)) if i != axis):
                raise ValueError(f"cannot concatenate {ins[0].shape} and {t.shape} along axis {axis}")
            out[axis] += t.shape[axis]
        return [TensorSpec(tuple(out), _dtype(ins[0]))]

    @classmethod
    def run_float(cls, node, xs):
        axis = norm_axis(int(cls.attr(node, "axis")), xs[0].ndim)
        return [np.concatenate([np.asarray(x) for x in xs], axis=axis)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        axis = norm_axis(int(cls.attr(node, "axis")), xs[0].ndim)
        return [np.concatenate([_to_output(ctx, x, i, 0) for i, x in enumerate(xs)], axis=axis)]


@register
class Split(OpDef):
    name = "Split"
    NUM_INPUTS = (1, 1)
    ATTRS = {"axis": 0, "sizes": None}

    @classmethod
    def _sizes(cls, node, shape) -> list[int]:
        axis = norm_axis(int(cls.attr(node, "axis")), len(shape))
        sizes = cls.attr(node, "sizes")
        if sizes is None:
            n = len(node.outputs)
            if shape[axis] % n:
                raise ValueError(f"cannot split dim {shape[axis]} into {n} equal parts")
            sizes = [shape[axis] // n] * n
        sizes = [int(s) for s in sizes]
        if sum(sizes) != shape[axis] or len(sizes) != len(node.outputs):
            raise ValueError(f"split sizes {sizes} do not cover dim {shape[axis]} with {len(node.outputs)} outputs")
        return sizes

    @classmethod
    def infer(cls, node, ins):
        shape = ins[0].shape
        axis = norm_axis(int(cls.attr(node, "axis")), len(shape))
        specs = []
        for s in cls._sizes(node, shape):
            out = list(shape)
            out[axis] = s
            specs.append(TensorSpec(tuple(out), _dtype(ins[0])))
        return specs

    @classmethod
    def run_float(cls, node, xs):
        x = xs[0]
        axis = norm_axis(int(cls.attr(node, "axis")), x.ndim)
        return np.split(x, np.cumsum(cls._sizes(node, x.shape))[:-1], axis=axis)

    @classmethod
    def run_int(cls, node, xs, ctx):
        parts = cls.run_float(node, [np.asarray(xs[0], dtype=np.int64)])
        return [_to_output(ctx, p, 0, i) for i, p in enumerate(parts)]


def _slice_indices(dim: int, start: int, end: int, step: int) -> np.ndarray:
    """ONNX Slice index rule (negative values count from the end, then clamp)."""
    if step == 0:
        raise ValueError("slice step must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return np.arange(start, end, step)


@register
class Slice(_Copy):
    name = "Slice"
    ATTRS = {"starts": None, "ends": None, "axes": None, "steps": None}

    @classmethod
    def _index(cls, node, shape) -> list[np.ndarray]:
        starts = [int(v) for v in cls.attr(node, "starts")]
        ends = [int(v) for v in cls.attr(node, "ends")]
        axes = cls.attr(node, "axes")
        axes = list(range(len(starts))) if axes is None else [norm_axis(int(a), len(shape)) for a in axes]
        steps = [int(v) for v in (cls.attr(node, "steps") or [1] * len(starts))]
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise ValueError("Slice starts/ends/axes/steps must have equal lengths")
        idx = [np.arange(d) for d in shape]
        for a, b, e, s in zip(axes, starts, ends, steps):
            idx[a] = _slice_indices(shape[a], b, e, s)
        return idx

    @classmethod
    def infer(cls, node, ins):
        return [TensorSpec(tuple(len(i) for i in cls._index(node, ins[0].shape)), _dtype(ins[0]))]

    @classmethod
    def move(cls, node, x):
        return x[np.ix_(*cls._index(node, x.shape))] if x.ndim else x


def _reshape_target(shape, target) -> tuple[int, ...]:
    target = [int(d) for d in target]
    total = int(np.prod(shape))
    if target.count(-1) > 1:
        raise ValueError(f"reshape target {target} has more than one -1")
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {tuple(shape)} to {target}")
        target[target.index(-1)] = total // known
    if int(np.prod(target)) != total:
        raise ValueError(f"cannot reshape {tuple(shape)} ({total} elements) to {target}")
    return tuple(target)


class _Reshaping(_Copy):
    """A copy op whose output is the input reshaped to ``_target(node, shape)``."""

    @classmethod
    def _target(cls, node, shape):
        raise TypeError(f"{cls.__name__} is abstract: a subclass defines this")

    @classmethod
    def infer(cls, node, ins):
        return [TensorSpec(cls._target(node, ins[0].shape), _dtype(ins[0]))]

    @classmethod
    def move(cls, node, x):
        return x.reshape(cls._target(node, x.shape))


@register
class Reshape(_Reshaping):
    name = "Reshape"
    ATTRS = {"shape": None}

    @classmethod
    def _target(cls, node, shape):
        return _reshape_target(shape, cls.attr(node, "shape"))


@register
class Flatten(_Reshaping):
    name = "Flatten"
    ATTRS = {"axis": 1}

    @classmethod
    def _target(cls, node, shape):
        axis = int(cls.attr(node, "axis"))
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis <= len(shape):
            raise ValueError(f"Flatten axis {axis} out of range for rank {len(shape)}")
        return (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))


@register
class Squeeze(_Reshaping):
    name = "Squeeze"
    ATTRS = {"axes": None}

    @classmethod
    def _target(cls, node, shape):
        axes = cls.attr(node, "axes")
        if axes is None:
            axes = [i for i, d in enumerate(shape) if d == 1]
        axes = {norm_axis(int(a), len(shape)) for a in axes}
        bad = [a for a in axes if shape[a] != 1]
        if bad:
            raise ValueError(f"cannot squeeze axis {bad[0]} of size {shape[bad[0]]}")
        return tuple(d for i, d in enumerate(shape) if i not in axes)


@register
class Unsqueeze(_Reshaping):
    """Insert size-1 dims; ``axes`` index the output (ONNX)."""

    name = "Unsqueeze"
    ATTRS = {"axes": None}

    @classmethod
    def _target(cls, node, shape):
        axes = cls.attr(node, "axes")
        rank = len(shape) + len(axes)
        axes = sorted(norm_axis(int(a), rank) for a in axes)
        out = list(shape)
        for a in axes:
            out.insert(a, 1)
        return tuple(out)


@register
class Transpose(_Copy):
    name = "Transpose"
    ATTRS = {"perm": None}

    @classmethod
    def _perm(cls, node, rank):
        perm = cls.attr(node, "perm")
        perm = list(range(rank))[::-1] if perm is None else [norm_axis(int(p), rank) for p in perm]
        if sorted(perm) != list(range(rank)):
            raise ValueError(f"perm {perm} is not a permutation of {rank} axes")
        return perm

    @classmethod
    def infer(cls, node, ins):
        perm = cls._perm(node, len(ins[0].shape))
        return [TensorSpec(tuple(ins[0].shape[p] for p in perm), _dtype(ins[0]))]

    @classmethod
    def move(cls, node, x):
        return np.transpose(x, cls._perm(node, x.ndim))


@register
class Pad(OpDef):
    """Pad every dim (``pads`` ONNX-ordered over all dims; negative = crop).

    ``mode`` constant (fill ``value``), reflect or edge (torch / ONNX).
    Integer: constant fill is the output's quantized ``value`` (its zero point
    for 0, as TFLite PAD/PADV2); reflect/edge copy integers.
    """

    name = "Pad"
    ATTRS = {"pads": None, "value": 0.0, "mode": "constant"}

    @classmethod
    def _pads(cls, node, rank):
        pads = [int(p) for p in cls.attr(node, "pads")]
        if len(pads) != 2 * rank:
            raise ValueError(f"Pad needs {2 * rank} pads for rank {rank}, got {len(pads)}")
        return pads

    @classmethod
    def infer(cls, node, ins):
        shape = ins[0].shape
        pads = cls._pads(node, len(shape))
        out = tuple(d + pads[i] + pads[i + len(shape)] for i, d in enumerate(shape))
        if any(d < 0 for d in out):
            raise ValueError(f"pads {pads} crop more than the input {shape}")
        return [TensorSpec(out, _dtype(ins[0]))]

    @classmethod
    def _pad(cls, node, x: np.ndarray, fill) -> np.ndarray:
        rank = x.ndim
        pads = cls._pads(node, rank)
        mode = cls.attr(node, "mode")
        if mode not in ("constant", "reflect", "edge"):
            raise ValueError(f"Pad mode must be constant, reflect or edge, got {mode!r}")
        grow = [(max(pads[i], 0), max(pads[i + rank], 0)) for i in range(rank)]
        kw = {"constant_values": fill} if mode == "constant" else {}
        y = np.pad(x, grow, mode=mode, **kw)
        crop = tuple(slice(max(-pads[i], 0), y.shape[i] - max(-pads[i + rank], 0)) for i in range(rank))
        return y[crop]

    @classmethod
    def run_float(cls, node, xs):
        x = xs[0]
        return [cls._pad(node, x, np.asarray(float(cls.attr(node, "value")), dtype=x.dtype))]

    @classmethod
    def run_int(cls, node, xs, ctx):
        oq = ctx.out_q(0)
        lo, hi = out_range(ctx)
        value = np.float32(cls.attr(node, "value"))
        fill = int(oq.zero_point[0]) + int(round_half_away(value / np.float32(oq.scale[0])))
        x = requantize_to_output(ctx, xs[0])
        return [cls._pad(node, x, int(np.clip(fill, lo, hi)))]
