"""LSQ fake quantizers: learned step sizes, straight-through rounding, the target's rules.

Each quantizer rounds in the forward exactly as the integer graph will
(:mod:`qtc.passes.quantize.params`), and lets gradients through the rounding
(straight-through estimator, STE).  Step sizes are learned as in LSQ (Esser et
al. 2020, "Learned Step Size Quantization"):

* the gradient of ``x̂ = clamp(round(x/s), qmin, qmax)·s`` with respect to ``s``
  is ``round(x/s) - x/s`` inside the range and ``qmin`` / ``qmax`` outside;
* the step-size gradient is scaled by ``g = 1/sqrt(N·Qp)`` (N elements per
  channel for weights, per sample for activations; Qp the positive levels).

The step is stored as ``log2(s)`` (as TQT does), so Adam moves it by relative
amounts and it stays positive; a power-of-two target rounds ``log2(s)`` in the
forward (STE), so every scale the forward uses is an exact power of two.

* :class:`WeightFakeQuant`: symmetric, narrow range ``[-(2^(b-1)-1), 2^(b-1)-1]``,
  per output channel (axis 0) or per tensor, 8/4/2 bits; codes computed in
  float64 with the target's rounding, bit-identical to ``quantize_weight``.
* :class:`ActFakeQuant`: per tensor, asymmetric (learned zero point, LSQ+) or
  symmetric (zero point 0), 8/4 bits, rounding half away from zero as TFLite's
  AffineQuantize.
* :class:`FixedFakeQuant`: fixed params (Softmax/Sigmoid/Tanh outputs).
* :func:`fake_bias`: the int32 (or narrower) bias with scale ``s_in·s_w[c]``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..ir.tensor import QuantParams

ROUNDINGS = ("half_away", "half_up", "half_even")
_LOG2_MIN, _LOG2_MAX = -60.0, 30.0  # keeps 2^t a normal, finite float32


def round_with(x: torch.Tensor, rounding: str = "half_away") -> torch.Tensor:
    """Round to integers the way :func:`qtc.passes.quantize.params.round_with` does."""
    if rounding == "half_away":
        return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)
    if rounding == "half_up":
        return torch.floor(x + 0.5)
    if rounding == "half_even":
        return torch.round(x)
    raise ValueError(f"unknown rounding {rounding!r}; use one of {ROUNDINGS}")


def round_ste(x: torch.Tensor, rounding: str = "half_away") -> torch.Tensor:
    """Rounded value in the forward, identity gradient in the backward."""
    return x + (round_with(x, rounding) - x).detach()


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` in the forward; its gradient multiplied by ``g`` in the backward."""
    return (x - x * g).detach() + x * g


def _log2(scale) -> torch.Tensor:
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"quantization scales must be positive and finite, got {s.tolist()[:4]}")
    return torch.tensor(np.log2(s), dtype=torch.float32)


class _LearnedStep(nn.Module):
    """The learned ``log2(s)``; ``scale()`` is ``2^t`` (``2^round(t)`` on power-of-two targets)."""

    def __init__(self, scale, power_of_two: bool, grad_factor: float):
        super().__init__()
        t = _log2(scale)
        if power_of_two:
            t = torch.round(t)
        self.log2_scale = nn.Parameter(t)
        self.power_of_two = bool(power_of_two)
        self.grad_factor = float(grad_factor)

    def scale(self) -> torch.Tensor:
        t = grad_scale(self.log2_scale, self.grad_factor).clamp(_LOG2_MIN, _LOG2_MAX)
        if self.power_of_two:
            t = round_ste(t, "half_even")
        return torch.exp2(t)


class _ZeroPointMixin:
    """The zero point(s) the forward uses: 0 when symmetric, else learned and rounded (STE, LSQ+)."""

    def zp(self) -> torch.Tensor:
        if self.symmetric:
            return self.zero_point.detach()
        z = grad_scale(self.zero_point, self.grad_factor)
        return torch.clamp(round_ste(z, "half_even"), self.qmin, self.qmax)


class WeightFakeQuant(_LearnedStep):
    """Symmetric narrow-range weights along axis 0 (or per tensor), LSQ step per channel."""

    def __init__(self, scale, *, bits: int, per_channel: bool, power_of_two: bool, rounding: str,
                 shape: tuple[int, ...]):
        if bits not in (2, 4, 8):
            raise ValueError(f"weight bits must be 8, 4 or 2, got {bits}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}")
        self.qmax = (1 << (bits - 1)) - 1
        n = int(np.prod(shape[1:])) if per_channel else int(np.prod(shape))
        super().__init__(scale, power_of_two, 1.0 / math.sqrt(max(n, 1) * self.qmax))
        self.bits, self.per_channel, self.rounding = int(bits), bool(per_channel), rounding

    def _shaped(self, s: torch.Tensor, ndim: int) -> torch.Tensor:
        return s.reshape((-1,) + (1,) * (ndim - 1)) if self.per_channel else s.reshape((1,) * ndim)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self._shaped(self.scale(), w.dim()).double()
        q = torch.clamp(round_ste(w.double() / s, self.rounding), -self.qmax, self.qmax)
        return (q * s).float()

    @torch.no_grad()
    def codes(self, w: torch.Tensor) -> np.ndarray:
        """The integer weights the forward uses (int8 array)."""
        s = self._shaped(self.scale(), w.dim()).double()
        q = torch.clamp(round_with(w.double() / s, self.rounding), -self.qmax, self.qmax)
        return q.numpy().astype(np.int8)

    @torch.no_grad()
    def export_params(self) -> QuantParams:
        s = self.scale().numpy().astype(np.float32)
        return QuantParams(s, np.zeros(s.size, dtype=np.int64), axis=0 if self.per_channel else None,
                           bits=self.bits, narrow_range=True, symmetric=True, power_of_two=self.power_of_two)


class ActFakeQuant(_ZeroPointMixin, _LearnedStep):
    """Per-tensor activations: learned step, learned (asymmetric) or zero (symmetric) zero point."""

    def __init__(self, scale: float, zero_point: int, *, bits: int, symmetric: bool, power_of_two: bool,
                 numel: int, learn_zero_point: bool = True):
        if bits not in (4, 8):
            raise ValueError(f"activation bits must be 8 or 4, got {bits}")
        self.qmin, self.qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        levels = self.qmax if symmetric else self.qmax - self.qmin
        super().__init__([scale], power_of_two, 1.0 / math.sqrt(max(numel, 1) * levels))
        self.bits, self.symmetric = int(bits), bool(symmetric)
        zp = torch.tensor([0.0 if symmetric else float(zero_point)])
        if symmetric or not learn_zero_point:
            self.register_buffer("zero_point", zp)
        else:
            self.zero_point = nn.Parameter(zp)

    def forward(self, x: torch.Tensor, pre_step: torch.Tensor | None = None) -> torch.Tensor:
        """Fake-quantize ``x``.  ``pre_step`` (powers of two < 1, broadcast over ``x``): round ``x/s``
        to that grid first, as TFLite's double-rounding requantization does (see :func:`requant_pre_step`)."""
        s, z = self.scale(), self.zp()
        if pre_step is None:
            u = x / s
        else:  # float64 keeps the grid points (and their ties) exact
            u = x.double() / s.double()
            u = round_ste(u / pre_step, "half_up") * pre_step  # gemmlowp SaturatingRoundingDoublingHighMul
        q = torch.clamp(round_ste(u, "half_away") + z, self.qmin, self.qmax)
        return ((q - z) * s).to(x.dtype)

    @torch.no_grad()
    def export_params(self) -> QuantParams:
        s = self.scale().numpy().astype(np.float32)
        return QuantParams(s, np.asarray([int(self.zp().item())], dtype=np.int64), bits=self.bits,
                           symmetric=self.symmetric, power_of_two=self.power_of_two)


class FeatureInputQuant(_ZeroPointMixin, _LearnedStep):
    """Per-feature params of a graph input read only by FullyConnected layers, learned (LSQ per feature).

    The user's float feature ``x_i`` becomes ``q_i = clamp(round(x_i / S_i) + Z_i)``
    (:meth:`qtc.ir.tensor.QuantParams.quantize`: float32 division, half away
    from zero); inside the graph the input is per-tensor ``(s, 0)`` with
    ``s = 2^-(bits-1)`` and the same integers (:mod:`qtc.passes.quantize.input_features`).
    :meth:`forward` returns those in-graph values ``s·q``; :meth:`fold` gives the
    consumer's weight and bias on them: ``W' = W·diag(S/s)`` and
    ``b' = b - s·Q(W')·Z`` (the zero-point term with the *quantized* weight, so the
    integer layer computes ``Q(W')·s·(q - Z) + b`` exactly as the forward does).
    Learning ``S`` gives every input column of the low-bit first layer its own
    scale next to the per-output-channel weight steps.
    """

    def __init__(self, scale, zero_point, *, bits: int, symmetric: bool, power_of_two: bool):
        if bits not in (4, 8):
            raise ValueError(f"per-feature input bits must be 8 or 4, got {bits}")
        self.qmin, self.qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        levels = self.qmax if symmetric else self.qmax - self.qmin
        super().__init__(scale, power_of_two, 1.0 / math.sqrt(levels))
        self.bits, self.symmetric = int(bits), bool(symmetric)
        self.inner = float(2.0 ** -(bits - 1))
        zp = torch.tensor(np.asarray(zero_point, dtype=np.float64).reshape(-1), dtype=torch.float32)
        if symmetric:
            self.register_buffer("zero_point", torch.zeros_like(zp))
        else:
            self.zero_point = nn.Parameter(zp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The in-graph input values ``s·q`` (float32 division and rounding as the boundary quantizes)."""
        q = torch.clamp(round_ste(x / self.scale(), "half_away") + self.zp(), self.qmin, self.qmax)
        return q * self.inner

    def fold_weight(self, w: torch.Tensor) -> torch.Tensor:
        """``W' = W·diag(S/s)`` (weights ``[out, features]``)."""
        return w * (self.scale() / self.inner)[None, :]

    def fold_bias(self, b: torch.Tensor | None, w_quant: torch.Tensor) -> torch.Tensor:
        """``b' = b - s·Q(W')·Z`` from the fake-quantized folded weight."""
        corr = (w_quant.double() @ self.zp().double()) * self.inner
        return (corr.neg() if b is None else b.double() - corr).float()

    @torch.no_grad()
    def export_params(self) -> QuantParams:
        """The per-axis boundary params ``(S_i, Z_i)`` (``graph.metadata["input_quant"]``)."""
        s = self.scale().numpy().astype(np.float32)
        z = self.zp().numpy().astype(np.int64)
        return QuantParams(s, z, axis=-1, bits=self.bits, symmetric=not z.any(), power_of_two=self.power_of_two)


class FixedFakeQuant(nn.Module):
    """Fixed params (no learning): the outputs TFLite pins (Softmax 1/256, -128; Tanh 1/128, 0)."""

    def __init__(self, qp: QuantParams):
        super().__init__()
        self.qp = qp
        self.qmin, self.qmax = qp.qmin, qp.qmax
        self.register_buffer("s", torch.tensor(float(qp.scale[0]), dtype=torch.float32))
        self.z = float(qp.zero_point[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(round_ste(x / self.s, "half_away") + self.z, self.qmin, self.qmax)
        return (q - self.z) * self.s

    def scale(self) -> torch.Tensor:
        return self.s

    def zp(self) -> torch.Tensor:
        return torch.tensor(self.z)

    def export_params(self) -> QuantParams:
        return QuantParams(self.qp.scale.copy(), self.qp.zero_point.copy(), axis=self.qp.axis, bits=self.qp.bits,
                           symmetric=self.qp.symmetric, power_of_two=self.qp.power_of_two)


def requant_pre_step(s_in: torch.Tensor, s_w: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
    """The first rounding grid of TFLite's requantization, per output channel (float64).

    ``MultiplyByQuantizedMultiplier`` with ``M = s_in·s_w/s_out = m·2^e`` (m in [0.5, 1))
    rounds ``acc·m`` to an integer (half up: SaturatingRoundingDoublingHighMul) and
    then divides by ``2^-e`` (half away from zero: RoundingDivideByPOT): for ``e < 0``
    the value ``u = acc·M`` is first rounded to multiples of ``2^e``.  Ties in the
    first rounding are common with power-of-two scales (``m = 0.5``).
    Emulating it makes the fake-quant outputs match the integer kernels far
    more often at low bit widths (large multipliers, few shift bits).
    """
    m = (s_in.detach().double().reshape(()) * s_w.detach().float().double().reshape(-1)
         / s_out.detach().double().reshape(()))
    e = torch.frexp(m).exponent
    return torch.exp2(torch.clamp(e, max=0).double())  # e >= 0: one rounding, half up (grid 1)


def bias_scale(s_in: torch.Tensor, s_w: torch.Tensor) -> torch.Tensor:
    """``s_in·s_w[c]`` as a float32 product, as ``quantize_bias`` stores it."""
    return s_in.detach().float().reshape(()) * s_w.detach().float().reshape(-1)


def fake_bias(b: torch.Tensor, s_in: torch.Tensor, s_w: torch.Tensor, *, bits: int, rounding: str) -> torch.Tensor:
    """Bias rounded to ``bits``-bit integers of scale ``s_in·s_w[c]`` and clipped (STE to ``b``)."""
    scale = bias_scale(s_in, s_w).double()
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = torch.clamp(round_ste(b.double() / scale, rounding), lo, hi)
    return (q * scale).float()
