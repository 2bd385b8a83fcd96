"""Resize (nearest / bilinear) over the spatial dims.

Attributes: ``mode`` nearest|bilinear (``linear`` is an alias); the output
size from ``size`` (spatial sizes, or all dims) or else ``scales`` (spatial or
all dims; out = floor(in·scale)); ``coordinate_transformation_mode`` as in
ONNX: half_pixel, pytorch_half_pixel, align_corners, asymmetric,
tf_half_pixel_for_nn; ``nearest_mode`` floor|ceil|round_prefer_floor|
round_prefer_ceil, or ``auto`` = TFLite's rule (floor; round half away from
zero with align_corners).

Source coordinates are computed in float32 with scale = in/out, as TFLite and
torch do.  torch: ``nearest`` = asymmetric+floor, ``nearest-exact`` =
tf_half_pixel_for_nn, bilinear align_corners=False = half_pixel.

Integer semantics: nearest is a gather of the integers (TFLite
ResizeNearestNeighbor); bilinear is TFLite ResizeBilinearInteger (10-bit
fixed-point coordinates, 20-bit products, rounding (v ± 2^19) / 2^20).  Both
assume equal in/out params (the converter guarantees it); differing params
are requantized.
"""
from __future__ import annotations

import numpy as np

from ..errors import QtcError
from ._util import (from_channels_last, make_shape, requantize_to_output, spatial_shape, to_channels_last,
                    trunc_div)
from .registry import OpDef, TensorSpec, register

_CTMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
_NEAREST = ("auto", "floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


def _source_coords(out: int, size: int, ctm: str) -> np.ndarray:
    """float32 source coordinate of every output index along one axis."""
    i = np.arange(out, dtype=np.float32)
    scale = np.float32(size) / np.float32(out)
    if ctm == "asymmetric":
        return i * scale
    if ctm == "tf_half_pixel_for_nn":
        return (i + np.float32(0.5)) * scale
    if ctm == "align_corners":
        if out <= 1:
            return np.zeros(out, dtype=np.float32)
        return i * (np.float32(size - 1) / np.float32(out - 1))
    if ctm == "pytorch_half_pixel" and out <= 1:
        return np.zeros(out, dtype=np.float32)
    if ctm in ("half_pixel", "pytorch_half_pixel"):
        return (i + np.float32(0.5)) * scale - np.float32(0.5)
    raise ValueError(f"unknown coordinate_transformation_mode {ctm!r} (expected one of {_CTMS})")


def _nearest_index(src: np.ndarray, size: int, nearest_mode: str, ctm: str) -> np.ndarray:
    if nearest_mode == "auto":
        nearest_mode = "round_half_away" if ctm == "align_corners" else "floor"
    if nearest_mode == "floor":
        idx = np.floor(src)
    elif nearest_mode == "ceil":
        idx = np.ceil(src)
    elif nearest_mode == "round_prefer_floor":
        idx = np.ceil(src - np.float32(0.5))
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(src + np.float32(0.5))
    elif nearest_mode == "round_half_away":
        idx = np.sign(src) * np.floor(np.abs(src) + np.float32(0.5))
    else:
        raise ValueError(f"unknown nearest_mode {nearest_mode!r} (expected one of {_NEAREST})")
    return np.clip(idx.astype(np.int64), 0, size - 1)


@register
class Resize(OpDef):
    name = "Resize"
    ATTRS = {"mode": "nearest", "scales": None, "size": None, "coordinate_transformation_mode": "half_pixel",
             "nearest_mode": "auto", "channels_last": False}

    @classmethod
    def _mode(cls, node) -> str:
        mode = cls.attr(node, "mode")
        mode = "bilinear" if mode == "linear" else mode
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"Resize mode must be nearest or bilinear, got {mode!r}")
        return mode

    @classmethod
    def _out_spatial(cls, node, shape) -> tuple[int, ...]:
        cl = bool(cls.attr(node, "channels_last"))
        sp = spatial_shape(shape, cl)
        size, scales = cls.attr(node, "size"), cls.attr(node, "scales")
        if size is not None:
            size = [int(s) for s in size]
            if len(size) == len(shape):
                size = list(spatial_shape(tuple(size), cl))
            if len(size) != len(sp):
                raise ValueError(f"Resize size {size} does not match spatial dims {sp}")
            return tuple(size)
        if scales is not None:
            scales = [float(s) for s in scales]
            if len(scales) == len(shape):
                scales = list(spatial_shape(tuple(scales), cl))
            if len(scales) != len(sp):
                raise ValueError(f"Resize scales {scales} do not match spatial dims {sp}")
            return tuple(int(np.floor(d * s)) for d, s in zip(sp, scales))
        raise ValueError("Resize needs a 'size' or 'scales' attribute")

    @classmethod
    def infer(cls, node, ins):
        shape = ins[0].shape
        if len(shape) not in (3, 4):
            raise ValueError(f"Resize expects a rank-3 or rank-4 input, got {shape}")
        cls._mode(node)
        out = cls._out_spatial(node, shape)
        if any(o <= 0 for o in out):
            raise ValueError(f"Resize output size {out} is empty")
        cl = bool(cls.attr(node, "channels_last"))
        c = shape[-1] if cl else shape[1]
        return [TensorSpec(make_shape(shape[0], out, c, cl), ins[0].dtype if ins[0].quant is None else "float32")]

    @classmethod
    def _nearest(cls, node, x_nhwc: np.ndarray, out) -> np.ndarray:
        ctm = cls.attr(node, "coordinate_transformation_mode")
        nearest_mode = cls.attr(node, "nearest_mode")
        for i, (size, o) in enumerate(zip(x_nhwc.shape[1:-1], out)):
            idx = _nearest_index(_source_coords(o, size, ctm), size, nearest_mode, ctm)
            x_nhwc = np.take(x_nhwc, idx, axis=1 + i)
        return x_nhwc

    @classmethod
    def run_float(cls, node, xs):
        cl = bool(cls.attr(node, "channels_last"))
        x = to_channels_last(xs[0].astype(np.float32), cl)
        out = cls._out_spatial(node, xs[0].shape)
        if cls._mode(node) == "nearest":
            return [from_channels_last(cls._nearest(node, x, out), cl)]
        ctm = cls.attr(node, "coordinate_transformation_mode")
        y = x.astype(np.float64)
        for i, (size, o) in enumerate(zip(x.shape[1:-1], out)):
            src = np.maximum(_source_coords(o, size, ctm).astype(np.float64), 0.0)
            i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
            i1 = np.minimum(i0 + 1, size - 1)
            w1 = src - i0
            shp = [1] * y.ndim
            shp[1 + i] = -1
            w1 = w1.reshape(shp)
            y = np.take(y, i0, axis=1 + i) * (1.0 - w1) + np.take(y, i1, axis=1 + i) * w1
        return [from_channels_last(y.astype(np.float32), cl)]

    @classmethod
    def run_int(cls, node, xs, ctx):
        cl = bool(cls.attr(node, "channels_last"))
        x = to_channels_last(np.asarray(xs[0], dtype=np.int64), cl)
        out = cls._out_spatial(node, xs[0].shape)
        if cls._mode(node) == "nearest":
            y = cls._nearest(node, x, out)
        else:
            y = _bilinear_int(node, x, out, cls.attr(node, "coordinate_transformation_mode"))
        return [from_channels_last(requantize_to_output(ctx, y), cl)]


def _bilinear_axis(size: int, out: int, align_corners: bool, half_pixel: bool):
    """TFLite ComputeInterpolationValuesInteger for every output index: (input_10, lo, hi)."""
    if align_corners and out > 1:
        scale_10 = ((1 << 10) * (size - 1) + (out - 1) // 2) // (out - 1)
    else:
        scale_10 = ((1 << 10) * size + out // 2) // out
    v = np.arange(out, dtype=np.int64) * scale_10
    if half_pixel:
        v = v + scale_10 // 2 - (1 << 9)
    lo = np.maximum(trunc_div(v, 1 << 10), 0)
    hi = np.minimum(trunc_div(v + (1 << 10) - 1, 1 << 10), size - 1)
    return v, lo, hi


def _bilinear_int(node, x: np.ndarray, out, ctm: str) -> np.ndarray:
    """TFLite ResizeBilinearInteger on N,H,W,C (or N,W,C) integers."""
    if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
        raise QtcError(f"integer bilinear Resize does not support coordinate_transformation_mode {ctm!r}",
                       where=f"node {node.name}", hint="use half_pixel, align_corners or asymmetric")
    squeeze = x.ndim == 3
    if squeeze:
        x, out = x[:, None], (1, *out)
    align, half = ctm == "align_corners", ctm in ("half_pixel", "pytorch_half_pixel")
    (in_h, in_w), (out_h, out_w) = x.shape[1:3], out
    vy, y0, y1 = _bilinear_axis(in_h, out_h, align, half)
    vx, x0, x1 = _bilinear_axis(in_w, out_w, align, half)
    one = 1 << 10
    dy = (vy - one * y0)[None, :, None, None]
    dx = (vx - one * x0)[None, None, :, None]
    def at(ys, xs_):
        return x[:, ys][:, :, xs_]

    acc = (at(y0, x0) * (one - dy) * (one - dx) + at(y1, x0) * dy * (one - dx)
           + at(y0, x1) * (one - dy) * dx + at(y1, x1) * dy * dx)
    y = trunc_div(acc + np.where(acc > 0, 1 << 19, -(1 << 19)), 1 << 20)
    return y[:, 0] if squeeze else y
