"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", §4.1).

For two consecutive weight layers ``y = W2 · f(W1 x + b1)`` with ``f``
positive homogeneous (``f(x/s) = f(x)/s`` for ``s > 0``: identity, ReLU,
LeakyReLU, max/avg pooling, zero padding, flatten), scaling output channel
``i`` of the first layer by ``1/s_i`` and the matching input channel of the
second by ``s_i`` leaves the function unchanged.  With per-channel ranges
``r1_i = max|W1[i, :]|`` and ``r2_i = max|W2[:, i]|``, the choice

    s_i = sqrt(r1_i · r2_i) / r2_i        (= sqrt(r1_i / r2_i))

makes both ranges ``sqrt(r1_i · r2_i)``, so per-tensor weight quantization
no longer wastes levels on a few wide channels.  Chains (a layer that is
the second of one pair and the first of the next) are swept until the
scales settle (DFQ's iterative procedure).

Pairs found: Conv1D/Conv2D/FullyConnected → [Relu, LeakyRelu, MaxPool,
AvgPool, GlobalAvgPool, Pad(0), Flatten into a FullyConnected] → Conv1D/Conv2D/
FullyConnected, where every tensor in between has that single consumer and
is not a graph output, the fused activations are ``none``/``relu`` (ReLU6
clips at 6 and is *not* positive homogeneous: convert it to ReLU first, as
DFQ and ESP-DL advise), and both weights are constants no other node reads.
Grouped and depthwise convolutions are handled on either side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Node

WEIGHT_OPS = ("Conv1D", "Conv2D", "FullyConnected")
HOMOGENEOUS_OPS = ("Relu", "LeakyRelu", "MaxPool", "AvgPool", "GlobalAvgPool", "Pad", "Flatten")
OK_ACTIVATIONS = ("none", "relu", "", None)


@dataclass
class Pair:
    first: Node
    second: Node
    through: list[str]
    columns: list[np.ndarray] | None  # FC input columns of each channel after a Flatten, else None


def _positive_homogeneous(n: Node) -> bool:
    if n.op not in HOMOGENEOUS_OPS:
        return False
    if n.op == "Pad" and float(n.attrs.get("value", 0.0) or 0.0) != 0.0:
        return False
    if n.op in ("MaxPool", "AvgPool") and n.attrs.get("activation", "none") not in OK_ACTIVATIONS:
        return False
    if n.op == "LeakyRelu" and float(n.attrs.get("alpha", 0.01)) < 0:
        return False
    return True


def _flatten_columns(g: Graph, first: Node, before_flatten: str) -> list[np.ndarray] | None:
    """FC input columns holding each channel of ``before_flatten`` (Flatten axis=1)."""
    shape = g.tensors[before_flatten].shape
    channels = g.tensors[first.inputs[1]].shape[0]
    if len(shape) <= 2:
        return [np.array([c]) for c in range(channels)]
    cl = bool(first.attrs.get("channels_last", False))
    spatial = int(np.prod(shape[1:-1] if cl else shape[2:]))
    if (shape[-1] if cl else shape[1]) != channels:
        return None
    if cl:
        return [np.arange(spatial) * channels + c for c in range(channels)]
    return [c * spatial + np.arange(spatial) for c in range(channels)]


def find_pairs(g: Graph) -> tuple[list[Pair], list[dict]]:
    cons = g.consumers()
    uses: dict[str, int] = {}
    for n in g.nodes:
        for i in n.inputs:
            if i:
                uses[i] = uses.get(i, 0) + 1
    pairs, skipped = [], []

    def own_const(name: str) -> bool:
        return bool(name) and g.tensors[name].is_const and uses.get(name, 0) == 1 and name not in g.outputs

    for n in g.nodes:
        if n.op not in WEIGHT_OPS or not own_const(n.inputs[1]):
            continue
        if len(n.inputs) > 2 and n.inputs[2] and not own_const(n.inputs[2]):
            continue
        t, through, columns, reason = n.outputs[0], [], None, None
        if n.attrs.get("activation", "none") not in OK_ACTIVATIONS:
            reason = f"fused {n.attrs.get('activation')} is not positive homogeneous"
        while reason is None:
            users = cons.get(t, [])
            if t in g.outputs or len(users) != 1:
                reason = f"tensor {t!r} has {len(users)} consumers" if t not in g.outputs else "graph output"
                break
            c = users[0]
            if c.op in WEIGHT_OPS and c.inputs[0] == t:
                if not own_const(c.inputs[1]):
                    reason = f"{c.name}'s weight is shared or not constant"
                elif (c.op == "FullyConnected" and columns is None and n.op != "FullyConnected"
                      and not n.attrs.get("channels_last", False)):
                    reason = "FullyConnected reads a channels-first tensor's last (spatial) axis"
                else:
                    pairs.append(Pair(n, c, through, columns))
                break
            if c.op == "Flatten" and int(c.attrs.get("axis", 1)) == 1:
                columns = _flatten_columns(g, n, t)
                if columns is None:
                    reason = "cannot map channels through Flatten"
                    break
            elif not _positive_homogeneous(c):
                reason = f"{c.op} {c.name!r} is not positive homogeneous"
                break
            through.append(c.name)
            t = c.outputs[0]
        if reason is not None:
            skipped.append({"node": n.name, "reason": reason})
    return pairs, skipped


def _in_channel_index(second: Node, w2: np.ndarray, channel: int, columns) -> tuple:
    """Index of W2's entries that multiply input channel ``channel``."""
    if second.op == "FullyConnected":
        cols = np.array([channel]) if columns is None else columns[channel]
        return (slice(None), cols)
    groups = int(second.attrs.get("groups", 1) or 1)
    ig = w2.shape[-1]
    og = w2.shape[0] // groups
    grp = channel // ig
    return (slice(grp * og, (grp + 1) * og), Ellipsis, channel % ig)


def equalize(g: Graph, *, max_sweeps: int = 20, tol: float = 1e-4) -> tuple[Graph, dict]:
    """Return an equalized copy of float graph ``g`` and a metadata record."""
    g = g.copy()
    pairs, skipped = find_pairs(g)
    total = [np.ones(g.tensors[p.first.inputs[1]].shape[0]) for p in pairs]
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        worst = 0.0
        for k, p in enumerate(pairs):
            w1 = g.tensors[p.first.inputs[1]].data.astype(np.float64)
            w2 = g.tensors[p.second.inputs[1]].data.astype(np.float64)
            r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
            idx = [_in_channel_index(p.second, w2, c, p.columns) for c in range(w1.shape[0])]
            r2 = np.array([np.abs(w2[i]).max() for i in idx])
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
            w1 = w1 / s.reshape((-1,) + (1,) * (w1.ndim - 1))
            for c, i in enumerate(idx):
                w2[i] = w2[i] * s[c]
            g.tensors[p.first.inputs[1]].data = w1.astype(np.float32)
            g.tensors[p.second.inputs[1]].data = w2.astype(np.float32)
            if len(p.first.inputs) > 2 and p.first.inputs[2]:
                bt = g.tensors[p.first.inputs[2]]
                bt.data = (bt.data.astype(np.float64) / s).astype(np.float32)
            total[k] *= s
            worst = max(worst, float(np.max(np.abs(np.log(s)))) if s.size else 0.0)
        if worst < tol:
            break
    record = {"pairs": [{"first": p.first.name, "second": p.second.name, "through": p.through,
                         "scale_min": round(float(t.min()), 6), "scale_max": round(float(t.max()), 6)}
                        for p, t in zip(pairs, total)],
              "sweeps": sweeps if pairs else 0, "skipped": skipped}
    return g, record
