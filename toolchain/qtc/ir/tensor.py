"""Tensors and their quantization parameters: plain data, easy to print."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# dtype names are numpy's names. Sub-byte weights are stored unpacked in an
# int8 array; QuantParams.bits says how many bits are meaningful.
DTYPES = ("float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")


@dataclass
class QuantParams:
    """Affine quantization: real = scale * (q - zero_point).

    ``scale`` is stored as float32 (as TFLite stores it) and ``zero_point`` as
    int64; both are 1-D arrays of length 1 (per-tensor, ``axis is None``) or
    of the channel count along ``axis`` (per-channel).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    bits: int = 8
    signed: bool = True
    narrow_range: bool = False
    symmetric: bool = False
    power_of_two: bool = False

    def __post_init__(self):
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float32)).reshape(-1)
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64)).reshape(-1)
        if self.zero_point.size == 1 and self.scale.size > 1:
            self.zero_point = np.repeat(self.zero_point, self.scale.size)
        if self.bits not in (2, 4, 8, 16, 32):
            raise ValueError(f"quant bits must be 2/4/8/16/32, got {self.bits}")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def qmin(self) -> int:
        if self.signed:
            return -(1 << (self.bits - 1)) + (1 if self.narrow_range else 0)
        return 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def broadcast_shape(self, rank: int) -> tuple[int, ...]:
        """Shape to reshape scale/zero_point to so they broadcast over a tensor."""
        if self.axis is None:
            return (1,) * rank
        shape = [1] * rank
        shape[self.axis % rank] = -1
        return tuple(shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """float → int, TFLite's AffineQuantize: round half away from zero, saturate."""
        x = np.asarray(x, dtype=np.float32)
        shp = self.broadcast_shape(x.ndim)
        s = self.scale.reshape(shp)
        zp = self.zero_point.reshape(shp)
        q = _round_away(x / s)  # float32 division, as TFLite does
        q = q.astype(np.int64) + zp
        return np.clip(q, self.qmin, self.qmax)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.int64)
        shp = self.broadcast_shape(q.ndim)
        return ((q - self.zero_point.reshape(shp)).astype(np.float32) * self.scale.reshape(shp)).astype(np.float32)

    def equals(self, other: "QuantParams | None") -> bool:
        if other is None:
            return False
        return (
            np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
            and self.axis == other.axis
            and self.bits == other.bits
            and self.signed == other.signed
            and self.narrow_range == other.narrow_range
            and self.symmetric == other.symmetric
            and self.power_of_two == other.power_of_two
        )

    def to_json(self) -> dict:
        return {
            "axis": self.axis,
            "bits": self.bits,
            "signed": self.signed,
            "narrow_range": self.narrow_range,
            "symmetric": self.symmetric,
            "power_of_two": self.power_of_two,
        }

    def short(self) -> str:
        kind = f"{'s' if self.signed else 'u'}{self.bits}"
        if self.axis is None:
            return f"{kind} s={float(self.scale[0]):.4g} zp={int(self.zero_point[0])}" + (" pot" if self.power_of_two else "")
        return f"{kind} per-ch[{self.axis}]x{self.scale.size}" + (" pot" if self.power_of_two else "")


def _round_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's round / TfLiteRound)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None
    quant: QuantParams | None = None

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: unknown dtype {self.dtype!r}")
        if self.data is not None:
            self.data = np.asarray(self.data)
            if str(self.data.dtype) != self.dtype:
                self.data = self.data.astype(self.dtype)

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= max(d, 0)
        return n

    @property
    def nbytes(self) -> int:
        """Bytes this tensor takes as stored on a device (sub-byte weights packed)."""
        if self.quant is not None and self.quant.bits < 8:
            return (self.size * self.quant.bits + 7) // 8
        return self.size * np.dtype(self.dtype).itemsize
