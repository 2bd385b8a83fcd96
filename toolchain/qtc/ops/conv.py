"""Conv1D / Conv2D (incl. grouped and depthwise) and FullyConnected.

IR weight layouts (independent of the activation layout):
  Conv2D  w: [O, KH, KW, I/groups]   (TFLite OHWI; depthwise = groups == I)
  Conv1D  w: [O, K, I/groups]
  FullyConnected w: [O, I], x: [..., I]
Bias is optional ('' input), shape [O].  ``pads`` are ONNX-ordered
[begin_0, begin_1, ..., end_0, end_1, ...].  ``activation`` is a fused clamp
(none/relu/relu6/relu_n1_to_1), as TFLite fuses it.

Integer semantics (TFLite ConvPerChannel / FullyConnected, reference
integer_ops): acc = sum(w * (x - zp_in)) + bias; y = MBQM(acc, M[c], shift[c])
+ zp_out, clamped to the fused activation range.  Padding contributes 0,
i.e. the input is padded with its zero point.
"""
from __future__ import annotations

import numpy as np

from ._util import (channels, clamp_act_float, conv_out_size, int64_bias, make_shape, pad_nhwc, requant_out,
                    spatial_shape, to_channels_last, from_channels_last, windows)
from .registry import OpDef, TensorSpec, register


def _conv_core(x_nhwc: np.ndarray, w: np.ndarray, strides, dilations, groups: int) -> np.ndarray:
    """Cross-correlation on channels-last x; w [O, *K, Ig]; exact for int64 inputs."""
    nsp = x_nhwc.ndim - 2
    kernel = tuple(w.shape[1:1 + nsp])
    win = windows(x_nhwc, kernel, strides, dilations)  # N,*O,C,*K
    cin = x_nhwc.shape[-1]
    cout = w.shape[0]
    ig = cin // groups
    og = cout // groups
    outs = []
    for gi in range(groups):
        wg = w[gi * og:(gi + 1) * og]  # og, *K, ig
        xg = win[..., gi * ig:(gi + 1) * ig, *([slice(None)] * nsp)]  # N,*O,ig,*K
        # move ig after K to match w layout [og, *K, ig]
        xg = np.moveaxis(xg, 1 + nsp, -1)  # N,*O,*K,ig
        lead = xg.shape[:1 + nsp]
        xm = xg.reshape(*lead, -1)
        wm = wg.reshape(og, -1)
        outs.append(xm @ wm.T)
    return np.concatenate(outs, axis=-1) if groups > 1 else outs[0]


class _ConvBase(OpDef):
    NUM_INPUTS = (2, 3)
    NSP = 2
    ATTRS = {"strides": None, "dilations": None, "pads": None, "groups": 1,
             "channels_last": False, "activation": "none"}

    @classmethod
    def _params(cls, node):
        n = cls.NSP
        strides = tuple(cls.attr(node, "strides") or (1,) * n)
        dil = tuple(cls.attr(node, "dilations") or (1,) * n)
        pads = list(cls.attr(node, "pads") or [0] * (2 * n))
        return strides, dil, pads, int(cls.attr(node, "groups")), bool(cls.attr(node, "channels_last"))

    @classmethod
    def infer(cls, node, ins):
        x, w = ins[0], ins[1]
        strides, dil, pads, groups, cl = cls._params(node)
        if len(x.shape) != cls.NSP + 2 or len(w.shape) != cls.NSP + 2:
            raise ValueError(f"{cls.name} expects rank-{cls.NSP + 2} input and weight, got {x.shape} and {w.shape}")
        cin = channels(x.shape, cl)
        if cin != w.shape[-1] * groups:
            raise ValueError(f"input has {cin} channels, weight expects {w.shape[-1]}x{groups} groups")
        if w.shape[0] % groups:
            raise ValueError(f"{w.shape[0]} output channels not divisible by groups={groups}")
        sp = spatial_shape(x.shape, cl)
        out_sp = tuple(conv_out_size(sp[i], w.shape[1 + i], strides[i], dil[i], pads[i], pads[i + cls.NSP])
                       for i in range(cls.NSP))
        if any(o <= 0 for o in out_sp):
            raise ValueError(f"output spatial size {out_sp} is empty")
        return [TensorSpec(make_shape(x.shape[0], out_sp, w.shape[0], cl))]

    @classmethod
    def run_float(cls, node, xs):
        x, w, b = xs[0], xs[1], (xs[2] if len(xs) > 2 else None)
        strides, dil, pads, groups, cl = cls._params(node)
        xl = pad_nhwc(to_channels_last(x.astype(np.float32), cl), pads, 0.0)
        y = _conv_core(xl.astype(np.float64), w.astype(np.float64), strides, dil, groups)
        if b is not None:
            y = y + b.astype(np.float64)
        y = clamp_act_float(y.astype(np.float32), cls.attr(node, "activation"))
        return [from_channels_last(y, cl)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        x, w, b = xs[0], xs[1], (xs[2] if len(xs) > 2 else None)
        strides, dil, pads, groups, cl = cls._params(node)
        iq, wq, oq = ctx.in_q(0), ctx.in_q(1), ctx.out_q(0)
        zp_in = int(iq.zero_point[0])
        xl = pad_nhwc(to_channels_last(x.astype(np.int64), cl), pads, zp_in) - zp_in
        acc = _conv_core(xl, w.astype(np.int64), strides, dil, groups)
        if b is not None:
            acc = acc + b.astype(np.int64)
        eff = ctx.numerics.effective_scale(iq.scale[0], wq.scale, oq.scale[0])
        y = requant_out(ctx, acc, eff, axis=acc.ndim - 1, activation=cls.attr(node, "activation"),
                        int64_acc=int64_bias(ctx))
        return [from_channels_last(y, cl)]

    @classmethod
    def macs(cls, node, ins, outs):
        w = ins[1]
        return int(np.prod(outs[0].shape)) * int(np.prod(w.shape[1:]))


@register
class Conv2D(_ConvBase):
    name = "Conv2D"
    NSP = 2


@register
class Conv1D(_ConvBase):
    name = "Conv1D"
    NSP = 1


@register
class FullyConnected(OpDef):
    """y = x @ w.T + b over the last axis (TFLite FULLY_CONNECTED, torch Linear)."""

    name = "FullyConnected"
    NUM_INPUTS = (2, 3)
    ATTRS = {"activation": "none"}

    @classmethod
    def infer(cls, node, ins):
        x, w = ins[0], ins[1]
        if len(w.shape) != 2 or x.shape[-1] != w.shape[1]:
            raise ValueError(f"input {x.shape} does not match weight {w.shape} (expects last dim {w.shape[1] if len(w.shape) == 2 else '?'})")
        return [TensorSpec((*x.shape[:-1], w.shape[0]))]

    @classmethod
    def run_float(cls, node, xs):
        x, w, b = xs[0], xs[1], (xs[2] if len(xs) > 2 else None)
        y = x.astype(np.float64) @ w.astype(np.float64).T
        if b is not None:
            y = y + b.astype(np.float64)
        return [clamp_act_float(y.astype(np.float32), cls.attr(node, "activation"))]

    @classmethod
    def run_int(cls, node, xs, ctx):
        x, w, b = xs[0], xs[1], (xs[2] if len(xs) > 2 else None)
        iq, wq, oq = ctx.in_q(0), ctx.in_q(1), ctx.out_q(0)
        acc = (x.astype(np.int64) - int(iq.zero_point[0])) @ w.astype(np.int64).T
        if b is not None:
            acc = acc + b.astype(np.int64)
        eff = ctx.numerics.effective_scale(iq.scale[0], wq.scale, oq.scale[0])
        return [requant_out(ctx, acc, eff, axis=acc.ndim - 1, activation=cls.attr(node, "activation"),
                            int64_acc=int64_bias(ctx),
                            double_rescale=getattr(ctx.numerics, "FC_DOUBLE_RESCALE", False))]

    @classmethod
    def macs(cls, node, ins, outs):
        return int(np.prod(outs[0].shape)) * int(ins[1].shape[1])
