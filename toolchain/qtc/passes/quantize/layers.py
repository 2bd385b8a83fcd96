"""Weight layers as matrices: the common view AdaRound and bias correction work on.

Every weight layer (Conv1D, Conv2D, FullyConnected, MatMul with a constant
rank-2 B) is, per group, a matrix product of input *rows* and a weight matrix:

* weights ``[groups, og, K]``: Conv ``w[O, *k, I/g]`` → ``[g, O/g, prod(k)·I/g]``;
  FullyConnected ``w[O, I]`` → ``[1, O, I]``; MatMul ``B[K, N]`` → ``[1, N, K]``
  (``B[N, K]`` with ``transpose_b``);
* rows ``[R, groups, K]``: one im2col patch per output position (padding
  contributes 0, as the integer kernels pad with the zero point), or one input
  vector per row for FullyConnected/MatMul;
* ``y[r, g·og + j] = Σ_k rows[r, g, k] · W[g, j, k] + b[g·og + j]``.

:func:`weight_layers` lists the layers of a quantized graph whose weights are
integer constants: integer nodes (static/mixed) and float nodes fed by a
Dequantize of an integer weight (dynamic mode), with the float weights and
bias from the float graph they were quantized from.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Node
from ...ops._util import pad_nhwc, to_channels_last, windows

LAYER_OPS = ("Conv1D", "Conv2D", "FullyConnected", "MatMul")


@dataclass
class WeightLayer:
    node: str
    op: str
    x_float: str          # the layer's activation input in the float graph
    x_quant: str          # ... and in the quantized graph (integer, or float in dynamic mode)
    w_float: np.ndarray   # float weight, IR layout
    b_float: np.ndarray | None
    w_int: str            # the integer weight constant in the quantized graph
    bias: str             # the bias tensor in the quantized graph ('' when absent)
    attrs: dict
    dynamic: bool         # float node reading Dequantize(w_int)

    @property
    def groups(self) -> int:
        return int(self.attrs.get("groups", 1) or 1) if self.op in ("Conv1D", "Conv2D") else 1

    @property
    def activation(self) -> str:
        return str(self.attrs.get("activation", "none") or "none")

    # ------------------------------------------------------------ matrices
    def to_matrix(self, w: np.ndarray) -> np.ndarray:
        """IR-layout weight (or anything of its shape) → ``[groups, og, K]``."""
        if self.op == "MatMul":
            m = w if self.attrs.get("transpose_b") else w.T
            return m[None]
        return w.reshape(self.groups, w.shape[0] // self.groups, -1)

    def from_matrix(self, m: np.ndarray) -> np.ndarray:
        if self.op == "MatMul":
            return m[0] if self.attrs.get("transpose_b") else m[0].T
        return m.reshape(self.w_float.shape)

    def bias_vector(self) -> np.ndarray:
        out = self.to_matrix(self.w_float).shape
        n = out[0] * out[1]
        return np.zeros(n) if self.b_float is None else np.asarray(self.b_float, np.float64).reshape(n)

    # ---------------------------------------------------------------- rows
    def _conv_view(self, x: np.ndarray) -> np.ndarray:
        """N,*O,C,*k windows of the zero-padded channels-last input (a view)."""
        a = self.attrs
        nsp = 2 if self.op == "Conv2D" else 1
        strides = tuple(a.get("strides") or (1,) * nsp)
        dil = tuple(a.get("dilations") or (1,) * nsp)
        pads = list(a.get("pads") or [0] * (2 * nsp))
        xl = pad_nhwc(to_channels_last(np.asarray(x, np.float32), bool(a.get("channels_last", False))), pads, 0.0)
        return windows(xl, tuple(self.w_float.shape[1:1 + nsp]), strides, dil)

    def _vectors(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.op == "MatMul" and self.attrs.get("transpose_a"):
            x = np.swapaxes(x, -1, -2)
        return x.reshape(-1, x.shape[-1])

    def row_count(self, x: np.ndarray) -> int:
        if self.op in ("Conv1D", "Conv2D"):
            win = self._conv_view(x)  # N,*O,C,*k
            nsp = (win.ndim - 2) // 2
            return int(np.prod(win.shape[:1 + nsp]))
        return int(self._vectors(x).shape[0])

    def rows(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """``[R, groups, K]`` float64 rows of input ``x`` (all, or the flat row ``index``)."""
        if self.op not in ("Conv1D", "Conv2D"):
            v = self._vectors(x)
            v = v if index is None else v[index]
            return v.astype(np.float64)[:, None, :]
        win = self._conv_view(x)  # N,*O,C,*k
        nsp = (win.ndim - 2) // 2
        lead = win.shape[:1 + nsp]
        if index is None:
            index = np.arange(int(np.prod(lead)))
        picked = win[np.unravel_index(index, lead)]  # R,C,*k
        g = self.groups
        r, c = picked.shape[0], picked.shape[1]
        picked = picked.reshape(r, g, c // g, *picked.shape[2:])
        picked = np.moveaxis(picked, 2, -1)  # R,g,*k,ig (the weight's [*k, ig] order)
        return picked.reshape(r, g, -1).astype(np.float64)

    def mean_row(self, x: np.ndarray) -> np.ndarray:
        """The mean row ``[groups, K]`` over every output position of every sample."""
        if self.op not in ("Conv1D", "Conv2D"):
            return self._vectors(x).astype(np.float64).mean(axis=0)[None, :]
        win = self._conv_view(x)
        nsp = (win.ndim - 2) // 2
        m = win.mean(axis=tuple(range(1 + nsp)), dtype=np.float64)  # C,*k
        g = self.groups
        m = m.reshape(g, m.shape[0] // g, *m.shape[1:])
        return np.moveaxis(m, 1, -1).reshape(g, -1)


def apply_rows(rows: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """``[R, g, K] x [g, og, K] → [R, g·og]`` (no bias)."""
    return np.einsum("rgk,gjk->rgj", rows, wm).reshape(rows.shape[0], -1)


def _dequant_source(qg: Graph, name: str, producers: dict[str, Node]) -> str | None:
    """The integer constant behind weight input ``name`` (itself, or Dequantize's input)."""
    t = qg.tensors.get(name)
    if t is None:
        return None
    if t.is_const:
        return name if t.quant is not None else None
    p = producers.get(name)
    if p is not None and p.op == "Dequantize":
        src = qg.tensors.get(p.inputs[0])
        if src is not None and src.is_const and src.quant is not None:
            return p.inputs[0]
    return None


def weight_layers(qg: Graph, fg: Graph) -> list[WeightLayer]:
    """The layers of ``qg`` with integer weights, in graph order (float facts from ``fg``)."""
    producers = qg.producers()
    fnodes = {n.name: n for n in fg.nodes}
    out: list[WeightLayer] = []
    for n in qg.nodes:
        if n.op not in LAYER_OPS or n.name not in fnodes or len(n.inputs) < 2:
            continue
        fn = fnodes[n.name]
        w_int = _dequant_source(qg, n.inputs[1], producers)
        wf = fg.tensors[fn.inputs[1]]
        if w_int is None or not wf.is_const:
            continue
        if n.op == "MatMul" and wf.data.ndim != 2:
            continue
        dynamic = not qg.tensors[n.inputs[1]].is_const
        if not dynamic and qg.tensors[n.outputs[0]].quant is None:
            continue
        bias = n.inputs[2] if len(n.inputs) > 2 else ""
        b_float = fg.tensors[fn.inputs[2]].data if len(fn.inputs) > 2 and fn.inputs[2] else None
        out.append(WeightLayer(n.name, n.op, fn.inputs[0], n.inputs[0], wf.data.astype(np.float64),
                               None if b_float is None else b_float.astype(np.float64), w_int, bias,
                               dict(n.attrs), dynamic))
    return out
