"""MatMul: batched a @ b with numpy broadcasting of the batch dims (ONNX MatMul,
torch.matmul, TFLite BATCH_MATMUL with adj_x / adj_y as transpose_a / transpose_b).

Integer semantics (TFLite reference ``batch_matmul.h``):
acc = Σ (a - zp_a)(b - zp_b) in int32, y = MBQM(acc, s_a·s_b/s_out) + zp_out,
saturated.  A constant ``b`` quantized per channel along its output-column
axis gets one multiplier per column (as FullyConnected).
"""
from __future__ import annotations

import numpy as np

from ._util import out_range, requant_out
from .registry import OpDef, TensorSpec, register


def _maybe_t(x: np.ndarray, flag: bool) -> np.ndarray:
    return np.swapaxes(x, -1, -2) if flag and x.ndim >= 2 else x


@register
class MatMul(OpDef):
    name = "MatMul"
    NUM_INPUTS = (2, 2)
    ATTRS = {"transpose_a": False, "transpose_b": False}

    @classmethod
    def _shapes(cls, node, a, b):
        a, b = list(a), list(b)
        if cls.attr(node, "transpose_a") and len(a) >= 2:
            a[-1], a[-2] = a[-2], a[-1]
        if cls.attr(node, "transpose_b") and len(b) >= 2:
            b[-1], b[-2] = b[-2], b[-1]
        return a, b

    @classmethod
    def infer(cls, node, ins):
        a, b = cls._shapes(node, ins[0].shape, ins[1].shape)
        if len(a) < 1 or len(b) < 1:
            raise ValueError("MatMul needs operands of rank >= 1")
        a2 = [1] + a if len(a) == 1 else a
        b2 = b + [1] if len(b) == 1 else b
        if a2[-1] != b2[-2]:
            raise ValueError(f"MatMul inner dims differ: {tuple(a)} @ {tuple(b)}")
        try:
            batch = list(np.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2])))
        except ValueError:
            raise ValueError(f"MatMul batch dims do not broadcast: {tuple(a)} @ {tuple(b)}") from None
        out = batch + ([a2[-2]] if len(a) > 1 else []) + ([b2[-1]] if len(b) > 1 else [])
        return [TensorSpec(tuple(out), "float32")]

    @classmethod
    def run_float(cls, node, xs):
        a = _maybe_t(xs[0].astype(np.float64), cls.attr(node, "transpose_a"))
        b = _maybe_t(xs[1].astype(np.float64), cls.attr(node, "transpose_b"))
        return [np.matmul(a, b).astype(np.float32)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        qa, qb, qo = ctx.in_q(0), ctx.in_q(1), ctx.out_q(0)
        a = _maybe_t(xs[0].astype(np.int64) - int(qa.zero_point[0]), cls.attr(node, "transpose_a"))
        b_raw = np.asarray(xs[1], dtype=np.int64)
        zb = qb.zero_point.reshape(qb.broadcast_shape(b_raw.ndim)) if qb.per_channel else int(qb.zero_point[0])
        b = _maybe_t(b_raw - zb, cls.attr(node, "transpose_b"))
        acc = np.matmul(a, b)
        eff = ctx.numerics.effective_scale(qa.scale[0], qb.scale, qo.scale[0])
        per_col = qb.per_channel and eff.size == acc.shape[-1]
        y = requant_out(ctx, acc, eff if per_col else eff[:1], axis=acc.ndim - 1 if per_col else None)
        lo, hi = out_range(ctx)
        return [np.clip(y, lo, hi)]

    @classmethod
    def macs(cls, node, ins, outs):
        a, _ = cls._shapes(node, ins[0].shape, ins[1].shape)
        return int(np.prod(outs[0].shape)) * int(a[-1])
