"""IR rewrites after a .tflite import: undo what TFLite writers expand.

* :func:`fold_1d` — TFLite has no 1-D conv or pool: TF's converter and qtc's
  writer run them as CONV_2D / DEPTHWISE_CONV_2D / MAX_POOL_2D /
  AVERAGE_POOL_2D on an ``[N, 1, L, C]`` (or ``[N, L, 1, C]``) view, with
  EXPAND_DIMS / RESHAPE / SQUEEZE around them.  Each closed region of such
  views becomes Conv1D / 1-D pools on ``[N, L, C]`` again (the Keras front
  end's form): weight ``[O, 1, K, I]`` → ``[O, K, I]``, per-channel axis kept.
* :func:`fold_causal_pads` — (files not written by qtc) a zero PAD before a
  Conv1D joins the conv's pads, as the Keras front end imports causal padding.
* :func:`merge_clips` — MAXIMUM and MINIMUM with constant bounds (imported as
  one-sided Clips) in a row → one Clip.
* :func:`fold_fused` — an explicit PAD before a conv/pool, or a SLICE after a
  transposed conv, that qtc's writer split off an IR op joins it again.
* :func:`fold_requant` — a QUANTIZE the qtc writer added because an IR op
  requantizes (a copy op, Clip or Concat input whose params differ) folds back
  into that op.
* :func:`apply_hints` — names, lossy op forms and added zero biases from the
  writer's ``qtc_ir`` metadata entry.
"""
from __future__ import annotations

import copy

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.tensor import QuantParams

SHAPE_OPS = ("Reshape", "Unsqueeze", "Squeeze", "Flatten")
WINDOW_OPS = ("Conv2D", "MaxPool", "AvgPool")
# (imported op, IR op) pairs a qtc_ir hint may turn one into the other (same integer semantics)
HINT_SUBSTITUTES = {("Reshape", "Flatten"), ("Reshape", "Unsqueeze"), ("Reshape", "Squeeze"),
                    ("Mean", "GlobalAvgPool"), ("GlobalAvgPool", "Mean"), ("Relu", "Clip"), ("Relu6", "Clip")}


def _flat3(shape) -> tuple[int, ...] | None:
    """The [N, L, C] a rank-3 tensor or a 4-D view with a unit spatial dim stands for."""
    if len(shape) == 3:
        return tuple(shape)
    if len(shape) == 4 and (shape[1] == 1 or shape[2] == 1):
        return (shape[0], shape[1] * shape[2], shape[3])
    return None


def _same_quant(a: QuantParams | None, b: QuantParams | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.axis == b.axis and np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point)


# ------------------------------------------------------------------ 1-D ops
def _view_copy(g: Graph, n: Node) -> bool:
    """A shape op that only moves between [N, L, C] and one of its 4-D views (no requantization)."""
    if n.op not in SHAPE_OPS or len(n.inputs) != 1:
        return False
    x, y = g.tensors[n.inputs[0]], g.tensors[n.outputs[0]]
    fx, fy = _flat3(x.shape), _flat3(y.shape)
    return (fx is not None and fx == fy and 4 in (len(x.shape), len(y.shape)) and x.dtype == y.dtype
            and _same_quant(x.quant, y.quant))


def _window_axis(g: Graph, n: Node) -> int | None:
    """The unit spatial axis (1 = H, 2 = W) along which a 2-D conv/pool is really 1-D, or None."""
    if n.op not in WINDOW_OPS or not n.attrs.get("channels_last", False):
        return None
    x, y = g.tensors[n.inputs[0]], g.tensors[n.outputs[0]]
    if len(x.shape) != 4 or len(y.shape) != 4:
        return None
    if n.op == "Conv2D":
        w = g.tensors[n.inputs[1]]
        if not w.is_const or len(w.shape) != 4:
            return None
        kernel = list(w.shape[1:3])
        strides = list(n.attrs.get("strides") or [1, 1])
    else:
        kernel = list(n.attrs.get("kernel") or [])
        strides = list(n.attrs.get("strides") or kernel)
        if len(kernel) != 2 or n.attrs.get("ceil_mode", False):
            return None
    dil = list(n.attrs.get("dilations") or [1, 1])
    pads = list(n.attrs.get("pads") or [0, 0, 0, 0])
    for a in (1, 2):
        i = a - 1
        if (x.shape[a] == 1 and y.shape[a] == 1 and kernel[i] == 1 and strides[i] == 1 and dil[i] == 1
                and pads[i] == 0 and pads[i + 2] == 0):
            return a
    return None


# per-element ops that may sit between 1-D ops on a view (a folded batch norm, an activation); a
# binary one's other operand must be a constant of rank <= 1, which broadcasts the same on [N, L, C]
UNARY_OPS = ("Relu", "Relu6", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Gelu", "Silu",
             "Quantize", "Dequantize")
BINARY_OPS = ("Add", "Sub", "Mul", "Div")


def _pad_axis(g: Graph, n: Node) -> int | None:
    """The unit axis of a 4-D view that a constant PAD pads only along the other spatial axis, or None."""
    if n.op != "Pad" or n.attrs.get("mode", "constant") != "constant":
        return None
    x, y = g.tensors[n.inputs[0]], g.tensors[n.outputs[0]]
    pads = [int(v) for v in n.attrs.get("pads") or []]
    if len(x.shape) != 4 or len(pads) != 8 or pads[0] or pads[3] or pads[4] or pads[7] or min(pads) < 0:
        return None
    for a in (1, 2):
        if x.shape[a] == 1 and y.shape[a] == 1 and pads[a] == 0 and pads[a + 4] == 0:
            return a
    return None


def _elementwise_input(g: Graph, n: Node) -> int | None:
    """Index of the data input of a per-element op on a 4-D view, or None."""
    if n.op in UNARY_OPS:
        k = 0
    elif n.op in BINARY_OPS and len(n.inputs) == 2:
        consts = [i for i, t in enumerate(n.inputs) if g.tensors[t].is_const and len(g.tensors[t].shape) <= 1]
        if len(consts) != 1:
            return None
        k = 1 - consts[0]
    else:
        return None
    x, y = g.tensors[n.inputs[k]], g.tensors[n.outputs[0]]
    return k if len(x.shape) == 4 and _flat3(x.shape) is not None and x.shape == y.shape else None


def fold_1d(g: Graph, views: dict[str, str] | None = None, only: set[str] | None = None) -> int:
    """Rewrite every closed region of 1-D-as-2-D convs/pools as Conv1D / 1-D pools; returns how many.

    A region is the 1-D ops, view copies (EXPAND_DIMS / RESHAPE / SQUEEZE
    between ``[N, L, C]`` and a view), per-element ops and PADs along L
    connected through 4-D views; it is folded only when every view is made and
    read inside it.
    ``views`` maps a 4-D tensor to the name of the 3-D tensor it replaced in
    the file (the qtc writer's ``qtc_ir`` entry); otherwise such a 3-D tensor
    takes the 4-D tensor's name.  With ``only`` (the writer's list of 1-D op
    outputs) a region folds only if each of its convs/pools was a 1-D op.
    """
    views = views or {}
    axis: dict[int, int] = {}
    data_in: dict[int, int] = {}
    for n in g.nodes:
        a = _window_axis(g, n)
        if a is None:
            a = _pad_axis(g, n)
        if a is not None:
            axis[id(n)], data_in[id(n)] = a, 0
        elif _view_copy(g, n):
            data_in[id(n)] = 0
        else:
            k = _elementwise_input(g, n)
            if k is not None:
                data_in[id(n)] = k
    cand = [n for n in g.nodes if id(n) in data_in]
    by_tensor: dict[str, list[Node]] = {}
    for n in cand:
        for t in (n.inputs[data_in[id(n)]], n.outputs[0]):
            if len(g.tensors[t].shape) == 4:
                by_tensor.setdefault(t, []).append(n)
    parent = {id(n): id(n) for n in cand}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for nodes in by_tensor.values():
        for n in nodes[1:]:
            parent[find(id(n))] = find(id(nodes[0]))
    regions: dict[int, list[Node]] = {}
    for n in cand:
        regions.setdefault(find(id(n)), []).append(n)
    folded = 0
    for nodes in regions.values():
        if any(id(n) in axis and n.op != "Pad" for n in nodes):
            folded += _fold_region(g, nodes, axis, data_in, views, only)
    return folded


def _fold_region(g: Graph, nodes: list[Node], axis: dict[int, int], data_in: dict[int, int],
                 views: dict[str, str], only: set[str] | None) -> int:
    if only is not None and any(n.outputs[0] not in only for n in nodes if id(n) in axis and n.op != "Pad"):
        return 0  # the IR had 2-D ops here
    members = {id(n) for n in nodes}
    copies = {id(n) for n in nodes if n.op in SHAPE_OPS}
    producers, consumers = g.producers(), g.consumers()
    io = set(g.inputs) | set(g.outputs)
    ends = {id(n): (n.inputs[data_in[id(n)]], n.outputs[0]) for n in nodes}
    t4 = {t for pair in ends.values() for t in pair if len(g.tensors[t].shape) == 4}
    for t in t4:  # closed: every 4-D view is made and read only inside the region, as the data input
        p = producers.get(t)
        if t in io or p is None or id(p) not in members:
            return 0
        for c in consumers.get(t, []):
            if id(c) not in members or c.inputs.count(t) != 1 or ends[id(c)][0] != t:
                return 0
    # value classes: a view copy's input and output are the same [N, L, C] value
    cls = {t: t for pair in ends.values() for t in pair}

    def root(t):
        while cls[t] != t:
            t = cls[t]
        return t

    for n in nodes:
        if id(n) in copies:
            a, b = root(ends[id(n)][0]), root(ends[id(n)][1])
            if a != b:
                cls[b] = a
    groups: dict[str, list[str]] = {}
    for t in cls:
        groups.setdefault(root(t), []).append(t)
    name_of: dict[str, str] = {}
    for members3 in groups.values():
        rank3 = [t for t in members3 if len(g.tensors[t].shape) == 3]
        if len(rank3) > 1:
            return 0  # two 3-D names for one value: leave the region as it is
        made = [t for t in members3 if len(g.tensors[t].shape) == 4 and id(producers[t]) not in copies]
        if rank3:
            name = rank3[0]
        elif made and made[0] in views and views[made[0]] not in g.tensors:
            name = views[made[0]]
        elif made:
            name = made[0]
        else:
            return 0
        for t in members3:
            name_of[t] = name
    # rewrite: 3-D tensors, 1-D ops, no view copies
    old = {t: g.tensors.pop(t) for t in t4}
    for t, name in name_of.items():
        if name not in g.tensors:
            src = old[t] if t in old else g.tensors[t]
            g.add_tensor(name, _flat3(src.shape), src.dtype, None, copy.deepcopy(src.quant))
    uses = g.consumers()
    kept = []
    for n in g.nodes:
        if id(n) not in members:
            kept.append(n)
        elif id(n) not in copies:
            k = data_in[id(n)]
            n.inputs[k] = name_of[n.inputs[k]]
            n.outputs[0] = name_of[n.outputs[0]]
            n.name = n.outputs[0]
            if id(n) in axis:
                _to_1d(g, n, axis[id(n)], uses)
            kept.append(n)
    g.nodes = kept
    return sum(1 for n in nodes if id(n) in axis and n.op != "Pad")


def _pick(values, a: int, nsp_pads: bool = False) -> list[int]:
    """The entries of a 2-D attribute along the spatial axis that is not ``a``."""
    i = 2 - a  # a = 1 (H unit) keeps W (index 1); a = 2 keeps H (index 0)
    if nsp_pads:
        return [int(values[i]), int(values[i + 2])]
    return [int(values[i])]


def _to_1d(g: Graph, n: Node, a: int, uses) -> None:
    """A 2-D conv/pool/pad with unit axis ``a`` (inputs/outputs already renamed) as its 1-D op."""
    if n.op == "Pad":  # [N, H, W, C] pads → [N, L, C] pads along the other spatial axis
        p, k = [int(v) for v in n.attrs["pads"]], 3 - a
        n.attrs["pads"] = [0, p[k], 0, 0, p[k + 4], 0]
        return
    pads = list(n.attrs.get("pads") or [0, 0, 0, 0])
    if n.op == "Conv2D":
        w_name = n.inputs[1]
        w = g.tensors[w_name]
        data = np.ascontiguousarray(w.data.reshape(w.shape[0], -1, w.shape[3]))
        q = copy.deepcopy(w.quant)
        if q is not None and q.axis is not None:
            q.axis = q.axis if q.axis < a else q.axis - 1
        if len(uses.get(w_name, [])) > 1:  # shared with another node: a 3-D copy
            w_name = g.add_const(f"{w_name}/1d", data, q).name
            n.inputs[1] = w_name
        else:
            w.data, w.shape, w.quant = data, data.shape, q
        n.op = "Conv1D"
        n.attrs.update(strides=_pick(n.attrs.get("strides") or [1, 1], a),
                       dilations=_pick(n.attrs.get("dilations") or [1, 1], a),
                       pads=_pick(pads, a, True))
    else:
        kernel = n.attrs["kernel"]
        n.attrs.update(kernel=_pick(kernel, a), strides=_pick(n.attrs.get("strides") or kernel, a),
                       pads=_pick(pads, a, True))


def fold_causal_pads(g: Graph) -> int:
    """A zero PAD along L of an [N, L, C] tensor read only by a Conv1D → the conv's ``pads``
    (TF's converter writes Keras' causal Conv1D padding as a PAD); returns how many."""
    done = 0
    for p in list(g.nodes):
        if p.op != "Pad" or p.attrs.get("mode", "constant") != "constant" or float(p.attrs.get("value", 0.0)):
            continue
        x, t = p.inputs[0], p.outputs[0]
        cs = g.consumers().get(t, [])
        pads = [int(v) for v in p.attrs.get("pads") or []]
        if (len(g.tensors[x].shape) != 3 or len(pads) != 6 or pads[0] or pads[2] or pads[3] or pads[5]
                or min(pads) < 0 or t in g.outputs or len(cs) != 1 or cs[0].op != "Conv1D" or cs[0].inputs[0] != t
                or not cs[0].attrs.get("channels_last") or not _same_quant(g.tensors[x].quant, g.tensors[t].quant)):
            continue
        c = cs[0]
        cp = [int(v) for v in (c.attrs.get("pads") or [0, 0])]
        c.attrs["pads"] = [cp[0] + pads[1], cp[1] + pads[4]]
        c.inputs[0] = x
        g.nodes.remove(p)
        del g.tensors[t]
        done += 1
    return done


# ------------------------------------------------------------------ clips
def merge_clips(g: Graph, only: set[str] | None = None) -> int:
    """One-sided Clip → t → Clip bounding the other side, ``t`` read once, same params → one Clip
    (MAXIMUM → MINIMUM as qtc writes a Clip, MINIMUM → MAXIMUM as TF converts clip_by_value); returns
    how many.  With ``only``, ``t`` must be one of these (the qtc writer's MAXIMUM → MINIMUM temps)."""
    merged = 0
    changed = True
    while changed:
        changed = False
        producers, consumers = g.producers(), g.consumers()
        for n in g.nodes:
            p = producers.get(n.inputs[0]) if n.op == "Clip" else None
            if p is None or p.op != "Clip":
                continue
            t = n.inputs[0]
            lo = p.attrs.get("min") if n.attrs.get("min") is None else n.attrs.get("min")
            hi = p.attrs.get("max") if n.attrs.get("max") is None else n.attrs.get("max")
            one_each = [p.attrs.get("min") is None, p.attrs.get("max") is None] == \
                [n.attrs.get("max") is None, n.attrs.get("min") is None]
            if not one_each or lo is None or hi is None or float(lo) > float(hi):
                continue
            if t in g.outputs or len(consumers.get(t, [])) != 1 or (only is not None and t not in only):
                continue
            if not _same_quant(g.tensors[t].quant, g.tensors[n.outputs[0]].quant):
                continue
            n.inputs[0] = p.inputs[0]
            n.attrs["min"], n.attrs["max"] = lo, hi
            g.nodes.remove(p)
            del g.tensors[t]
            merged += 1
            changed = True
            break
    return merged


# ------------------------------------------------------------------ requantization
def fold_requant(g: Graph, temps) -> int:
    """Fold the writer's requantizing QUANTIZE around temp tensor ``t`` back into the IR op; returns how many.

    ``op → t → QUANTIZE → y`` (a copy op whose output params differ) becomes ``op → y``;
    ``x → QUANTIZE → t → op`` (a Clip / Relu / Concat input with other params) becomes ``x → op``.
    """
    done = 0
    for t in temps:
        if t not in g.tensors or t in g.inputs or t in g.outputs:
            continue
        producers, consumers = g.producers(), g.consumers()
        p, cs = producers.get(t), consumers.get(t, [])
        if p is None or len(cs) != 1:
            continue
        c = cs[0]
        if c.op == "Quantize" and p.op != "Quantize":
            p.outputs[p.outputs.index(t)] = c.outputs[0]
            if p.name == t:
                p.name = c.outputs[0]
            g.nodes.remove(c)
        elif p.op == "Quantize" and c.op != "Quantize":
            c.inputs = [p.inputs[0] if i == t else i for i in c.inputs]
            g.nodes.remove(p)
        else:
            continue
        del g.tensors[t]
        done += 1
    return done


# ------------------------------------------------------------------ explicit pads / crops
def fold_fused(g: Graph, temps, ops_hints: dict) -> int:
    """Join the qtc writer's explicit PAD → conv/pool and TRANSPOSE_CONV → SLICE back into one op.

    A PAD's H/W padding goes into the conv's / pool's ``pads`` (an average pool
    then counts the padding, as the PAD made it); a transposed conv takes its
    SLICE's output, and its attributes from the ``qtc_ir`` ops entry (required).
    """
    done = 0
    for t in temps:
        if t not in g.tensors or t in g.inputs or t in g.outputs:
            continue
        p, cs = g.producers().get(t), g.consumers().get(t, [])
        if p is None or len(cs) != 1:
            continue
        c = cs[0]
        if p.op == "Pad" and c.op in ("Conv2D", "MaxPool", "AvgPool") and c.inputs[0] == t \
                and len(g.tensors[t].shape) == 4:
            pp = [int(v) for v in p.attrs["pads"]]  # NHWC: H = dim 1, W = dim 2
            if pp[0] or pp[3] or pp[4] or pp[7]:
                continue
            cp = [int(v) for v in (c.attrs.get("pads") or [0, 0, 0, 0])]
            c.attrs["pads"] = [cp[0] + pp[1], cp[1] + pp[2], cp[2] + pp[5], cp[3] + pp[6]]
            if c.op == "AvgPool":
                c.attrs["count_include_pad"] = True
            c.inputs[0] = p.inputs[0]
            g.nodes.remove(p)
        elif p.op == "ConvTranspose2D" and c.op == "Slice" and ops_hints.get(c.outputs[0], {}).get("op") == p.op:
            p.outputs[0] = c.outputs[0]
            p.name = c.outputs[0]
            p.attrs = dict(ops_hints[c.outputs[0]].get("attrs", {}))  # the IR's pads: the crop
            g.nodes.remove(c)
        else:
            continue
        del g.tensors[t]
        done += 1
    return done


# ------------------------------------------------------------------ qtc_ir hints
def apply_hints(g: Graph, hints: dict) -> None:
    """Apply the writer's ``qtc_ir`` entry: drop added zero biases, restore lossy op forms and node names."""
    synthetic = set(hints.get("synthetic", []))
    for n in g.nodes:
        if n.inputs and n.inputs[-1] in synthetic:
            n.inputs = n.inputs[:-1]
    ops = hints.get("ops", {})
    for n in g.nodes:
        h = ops.get(n.outputs[0]) if n.outputs else None
        if h is None or not isinstance(h, dict):
            continue
        op, attrs = h.get("op"), h.get("attrs", {})
        if (op == n.op or (n.op, op) in HINT_SUBSTITUTES) and _hint_agrees(g, n, op, attrs):
            n.op, n.attrs = op, dict(attrs)
    names = hints.get("names", {})
    wanted = [names.get(n.outputs[0], n.name) if n.outputs else n.name for n in g.nodes]
    seen: set[str] = set()
    for n, name in zip(g.nodes, wanted):
        base, k = name, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        n.name = name


def _hint_agrees(g: Graph, n: Node, op: str, attrs: dict) -> bool:
    """A Clip hint's float bounds must give the clamp the file stores (else the file was edited)."""
    if op != "Clip":
        return True
    out = g.tensors[n.outputs[0]]
    have = {"min": n.attrs.get("min"), "max": n.attrs.get("max")}
    if n.op == "Relu":
        have = {"min": 0.0, "max": None}
    elif n.op == "Relu6":
        have = {"min": 0.0, "max": 6.0}
    for k in ("min", "max"):
        a, b = attrs.get(k), have[k]
        if (a is None) != (b is None):
            return False
        if a is None:
            continue
        if out.quant is None or out.dtype not in ("int8", "int16", "uint8"):
            if np.float32(a) != np.float32(b):
                return False
        elif not np.array_equal(out.quant.quantize(np.float32(a)), out.quant.quantize(np.float32(b))):
            return False
    return True
