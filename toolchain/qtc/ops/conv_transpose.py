"""ConvTranspose2D (a.k.a. deconvolution), groups = 1.

Weight layout [O, KH, KW, I] (TFLite TRANSPOSE_CONV); bias [O] optional.
Each input pixel (iy, ix) scatters x·w into output rows iy·stride - pad_top +
ky·dilation (and likewise for columns); ``pads`` (ONNX order) crop the full
result, ``output_padding`` extends its end (torch / ONNX).  Output size per
dim: (in - 1)·stride - pad_begin - pad_end + dilation·(k - 1) + output_padding + 1.

Integer semantics (TFLite reference_integer_ops::TransposeConv, per channel):
int32 scatter-accumulate of (x - zp_in)·w, + bias, MBQM with the per-channel
multiplier s_in·s_w[c]/s_out, + zp_out, clamped to the fused activation.
"""
from __future__ import annotations

import numpy as np

from ._util import (channels, clamp_act_float, from_channels_last, int64_bias, make_shape, requant_out,
                    spatial_shape, to_channels_last)
from .registry import OpDef, TensorSpec, register


@register
class ConvTranspose2D(OpDef):
    name = "ConvTranspose2D"
    NUM_INPUTS = (2, 3)
    ATTRS = {"strides": None, "pads": None, "output_padding": None, "dilations": None, "channels_last": False,
             "activation": "none", "groups": 1}

    @classmethod
    def _params(cls, node):
        strides = tuple(int(s) for s in (cls.attr(node, "strides") or (1, 1)))
        pads = [int(p) for p in (cls.attr(node, "pads") or [0, 0, 0, 0])]
        out_pad = [int(p) for p in (cls.attr(node, "output_padding") or [0, 0])]
        dil = tuple(int(d) for d in (cls.attr(node, "dilations") or (1, 1)))
        if int(cls.attr(node, "groups")) != 1:
            raise ValueError("ConvTranspose2D supports groups=1 only")
        return strides, pads, out_pad, dil, bool(cls.attr(node, "channels_last"))

    @classmethod
    def _out_spatial(cls, node, in_sp, kernel):
        strides, pads, out_pad, dil, _ = cls._params(node)
        return tuple((in_sp[i] - 1) * strides[i] - pads[i] - pads[i + 2] + dil[i] * (kernel[i] - 1) + out_pad[i] + 1
                     for i in range(2))

    @classmethod
    def infer(cls, node, ins):
        x, w = ins[0], ins[1]
        _, _, _, _, cl = cls._params(node)
        if len(x.shape) != 4 or len(w.shape) != 4:
            raise ValueError(f"ConvTranspose2D expects rank-4 input and weight, got {x.shape} and {w.shape}")
        if channels(x.shape, cl) != w.shape[3]:
            raise ValueError(f"input has {channels(x.shape, cl)} channels, weight [O, KH, KW, I] expects {w.shape[3]}")
        out = cls._out_spatial(node, spatial_shape(x.shape, cl), w.shape[1:3])
        if any(o <= 0 for o in out):
            raise ValueError(f"output spatial size {out} is empty")
        return [TensorSpec(make_shape(x.shape[0], out, w.shape[0], cl))]

    @classmethod
    def _scatter(cls, node, x_nhwc: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Scatter-accumulate x into the cropped output (N, OH, OW, O); exact for int64."""
        strides, pads, _, dil, _ = cls._params(node)
        n, ih, iw, _ = x_nhwc.shape
        o, kh, kw, _ = w.shape
        oh, ow = cls._out_spatial(node, (ih, iw), (kh, kw))
        full_h = max((ih - 1) * strides[0] + dil[0] * (kh - 1) + 1, pads[0] + oh)
        full_w = max((iw - 1) * strides[1] + dil[1] * (kw - 1) + 1, pads[1] + ow)
        full = np.zeros((n, full_h, full_w, o), dtype=np.result_type(x_nhwc, w))
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dil[0], kx * dil[1]
                contrib = x_nhwc @ w[:, ky, kx, :].T  # N, IH, IW, O
                full[:, y0:y0 + (ih - 1) * strides[0] + 1:strides[0],
                     x0:x0 + (iw - 1) * strides[1] + 1:strides[1], :] += contrib
        return full[:, pads[0]:pads[0] + oh, pads[1]:pads[1] + ow, :]

    @classmethod
    def run_float(cls, node, xs):
        x, w, b = xs[0], xs[1], (xs[2] if len(xs) > 2 else None)
        cl = cls._params(node)[4]
        y = cls._scatter(node, to_channels_last(x.astype(np.float64), cl), w.astype(np.float64))
        if b is not None:
            y = y + b.astype(np.float64)
        y = clamp_act_float(y.astype(np.float32), cls.attr(node, "activation"))
        return [from_channels_last(y, cl)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        x, w, b = xs[0], xs[1], (xs[2] if len(xs) > 2 else None)
        cl = cls._params(node)[4]
        iq, wq, oq = ctx.in_q(0), ctx.in_q(1), ctx.out_q(0)
        xl = to_channels_last(x.astype(np.int64), cl) - int(iq.zero_point[0])
        acc = cls._scatter(node, xl, w.astype(np.int64))
        if b is not None:
            acc = acc + b.astype(np.int64)
        eff = ctx.numerics.effective_scale(iq.scale[0], wq.scale, oq.scale[0])
        y = requant_out(ctx, acc, eff, axis=acc.ndim - 1, activation=cls.attr(node, "activation"),
                        int64_acc=int64_bias(ctx))
        return [from_channels_last(y, cl)]

    @classmethod
    def macs(cls, node, ins, outs):
        x, w = ins[0], ins[1]
        return int(np.prod(x.shape)) * int(np.prod(w.shape[:3]))
