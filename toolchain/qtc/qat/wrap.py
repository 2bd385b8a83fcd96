"""The QAT model: the canonical float graph run in torch, with fake quantization exactly where PTQ quantizes.

:func:`prepare_qat` imports a torch module (or takes a qtc float graph), folds
BatchNorm (:mod:`.bn`), runs qtc's PTQ (:func:`qtc.passes.quantize.quantize`)
on calibration data, and builds a :class:`QatModel` from the two graphs:

* every Conv1D / Conv2D / ConvTranspose2D / FullyConnected weight and bias of
  the float graph becomes an ``nn.Parameter`` (IR layout, folded BatchNorm);
* an integer layer of the PTQ graph gets a :class:`~.fakequant.WeightFakeQuant`
  on its weight (initial steps = PTQ's weight scales) and a fake-quantized bias
  (``s_in·s_w`` scale, the target's bias width);
* every tensor the PTQ graph holds as integers gets an
  :class:`~.fakequant.ActFakeQuant` (initial step / zero point = PTQ's params):
  graph inputs, outputs of integer nodes (after their fused activation), and the
  Quantize bridges from float producers into integer consumers.  Outputs with
  fixed params (Softmax, Sigmoid, Tanh) get a fixed quantizer; ops that keep
  their input's params (MaxPool, Reshape, AvgPool, ...) share the input's
  quantizer, as the integer graph does;
* float nodes (no integer kernel, the target's float ops, ``keep_float``) run in
  float, reading dequantized values, as the integer graph's Dequantize bridges do;
* other constants (shape-free per-channel Mul/Add from an unfoldable BatchNorm,
  MatMul's constant B) are frozen at their PTQ-quantized values.

So the placement of every quantizer is PTQ's own (:mod:`qtc.passes.quantize.builder`),
and :func:`qtc.qat.export.qat_to_ir` rebuilds the integer graph from the same
float graph with the learned values.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import QtcError
from ..ir.graph import Graph, Node
from ..passes.quantize.builder import FIXED_OUTPUT, SAME_PARAMS_OPS
from ..passes.quantize.constraints import WEIGHTED_OPS, QuantSpec, spec_for
from .bn import fold_for_qat
from ..ir.boundary import META_KEY as BOUNDARY_KEY
from ..ir.boundary import quant_from_json
from .fakequant import (ActFakeQuant, FeatureInputQuant, FixedFakeQuant, WeightFakeQuant, fake_bias,
                        requant_pre_step)
from .torch_ops import OpContext, torch_op

INT_DTYPES = ("int8", "int16", "int32", "uint8")
# same-params ops whose output is not an exact copy of input values: round again to the grid
_REQUANT_SAME_PARAMS = ("AvgPool", "Resize")


@dataclass
class _Step:
    node: Node
    inputs: list[tuple[str, str]]     # (kind, ref): none / act / bridge / param / const
    outputs_q: list[str | None]       # quantizer key per output (None: float output)
    requant: list[bool]               # apply the output quantizer (False: exact copy of an int input)
    ctx: OpContext
    weight_q: str | None = None       # WeightFakeQuant key
    in_q: str | None = None           # quantizer of input 0's integer version (bias scale)
    feature_in: str | None = None     # FeatureInputQuant key when input 0 is a per-feature graph input
    fn: object = field(default=None, repr=False)


def _is_int_tensor(g: Graph, name: str) -> bool:
    t = g.tensors.get(name)
    return t is not None and t.quant is not None and t.dtype in INT_DTYPES


def _key(prefix: str, i: int) -> str:
    return f"{prefix}{i}"


class QatModel(nn.Module):
    """A float graph with LSQ fake quantization at the PTQ graph's quantization points.

    ``forward(*inputs)`` takes the graph inputs (torch tensors, any batch size) and
    returns the output (a tuple for several).  ``quantize_enabled = False`` runs
    the float graph (the same weights, no rounding).
    """

    def __init__(self, float_graph: Graph, ptq_graph: Graph, spec: QuantSpec, *, learn_zero_point: bool = True,
                 double_rounding: bool = True, info: dict | None = None):
        super().__init__()
        self.graph = float_graph
        self.spec = spec
        self.info = dict(info or {})
        self.quantize_enabled = True
        # emulate TFLite's double-rounding requantization of Conv/FC outputs (the targets' reference numerics)
        self.double_rounding = bool(double_rounding)
        g, qg = float_graph, ptq_graph
        self.batch = int(g.tensors[g.inputs[0]].shape[0]) if g.tensors[g.inputs[0]].shape else 1
        qnodes = {n.name: n for n in qg.nodes}
        self.int_nodes = sorted(n.name for n in g.nodes
                                if n.name in qnodes and _is_int_tensor(qg, qnodes[n.name].outputs[0]))
        int_nodes = set(self.int_nodes)
        bridges = {n.inputs[0]: n.outputs[0] for n in qg.nodes if n.op == "Quantize" and n.inputs[0] in g.tensors}

        self.weights = nn.ParameterDict()
        self.act_q = nn.ModuleDict()
        self.weight_q = nn.ModuleDict()
        self.feature_q = nn.ModuleDict()      # per-feature graph inputs (learned S_i, Z_i)
        self.feature_of: dict[str, str] = {}  # graph input name -> feature_q key
        self.param_of: dict[str, str] = {}    # float tensor name -> ParameterDict key
        self.int_q: dict[str, str] = {}       # tensor name -> quantizer of its integer version
        self._consts: dict[str, str] = {}     # (node, input) marker -> buffer name
        self._produced_int: set[str] = set()

        def act_quantizer(qp, numel: int) -> str:
            k = _key("a", len(self.act_q))
            self.act_q[k] = ActFakeQuant(float(qp.scale[0]), int(qp.zero_point[0]), bits=qp.bits,
                                         symmetric=spec.act_symmetric, power_of_two=spec.power_of_two,
                                         numel=numel, learn_zero_point=learn_zero_point)
            return k

        def per_sample(name: str) -> int:
            shape = g.tensors[name].shape
            return int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape or (1,)))

        boundary = qg.metadata.get(BOUNDARY_KEY) or {}
        for x in g.inputs:
            if _is_int_tensor(qg, x) and x in boundary:  # per-feature: fixed (s, 0) inside, learned S_i, Z_i outside
                bq = quant_from_json(boundary[x])
                k = _key("f", len(self.act_q))
                self.act_q[k] = FixedFakeQuant(qg.tensors[x].quant)
                self.int_q[x] = k
                fk = _key("i", len(self.feature_q))
                self.feature_q[fk] = FeatureInputQuant(bq.scale, bq.zero_point, bits=bq.bits,
                                                       symmetric=spec.act_symmetric and not bq.zero_point.any(),
                                                       power_of_two=bq.power_of_two)
                self.feature_of[x] = fk
                self._produced_int.add(x)
            elif _is_int_tensor(qg, x):
                self.int_q[x] = act_quantizer(qg.tensors[x].quant, per_sample(x))
                self._produced_int.add(x)

        self._plan: list[_Step] = []
        for n in g.nodes:
            is_int = n.name in int_nodes
            qn = qnodes.get(n.name)
            ins: list[tuple[str, str]] = []
            for i, name in enumerate(n.inputs):
                t = g.tensors.get(name) if name else None
                if t is None:
                    ins.append(("none", ""))
                elif t.is_const:
                    ins.append(self._const_input(n, i, name, is_int, qg, qn))
                elif is_int and name not in self._produced_int:
                    if name not in self.int_q:
                        if name not in bridges:
                            raise QtcError(f"no integer version of {name!r} in the PTQ graph", where=f"node {n.name}",
                                           hint="this is a qtc bug: PTQ should have bridged it")
                        self.int_q[name] = act_quantizer(qg.tensors[bridges[name]].quant, per_sample(name))
                    ins.append(("bridge", name))
                else:
                    ins.append(("act", name))
            outs_q: list[str | None] = []
            requant: list[bool] = []
            for o in n.outputs:
                if not is_int:
                    outs_q.append(None)
                    requant.append(False)
                    continue
                if n.op in FIXED_OUTPUT:
                    k = _key("f", len(self.act_q))
                    self.act_q[k] = FixedFakeQuant(qg.tensors[o].quant)
                    outs_q.append(k)
                    requant.append(True)
                elif n.op in SAME_PARAMS_OPS:
                    outs_q.append(self.int_q[n.inputs[0]])
                    requant.append(n.op in _REQUANT_SAME_PARAMS)
                else:
                    outs_q.append(act_quantizer(qg.tensors[o].quant, per_sample(o)))
                    requant.append(True)
                self.int_q[o] = outs_q[-1]
                self._produced_int.add(o)
            step = _Step(n, ins, outs_q, requant,
                         OpContext([g.tensors[i].shape if i and i in g.tensors else None for i in n.inputs],
                                   [g.tensors[o].shape for o in n.outputs], self.batch))
            step.fn = torch_op(n)
            if is_int and n.op in WEIGHTED_OPS:
                wq = qg.tensors[qn.inputs[1]].quant
                k = _key("w", len(self.weight_q))
                self.weight_q[k] = WeightFakeQuant(wq.scale, bits=spec.wbits, per_channel=wq.per_channel,
                                                   power_of_two=spec.power_of_two, rounding=spec.rounding,
                                                   shape=g.tensors[n.inputs[1]].shape)
                step.weight_q = k
                step.in_q = self.int_q[n.inputs[0]]
                if n.inputs[0] in self.feature_of:
                    if n.op != "FullyConnected" or len(n.inputs) < 3 or not n.inputs[2]:
                        raise QtcError(f"per-feature input {n.inputs[0]!r} feeds {n.op} node {n.name!r} without a "
                                       "bias", where=f"graph {g.name}",
                                       hint="this is a qtc bug: prepare_qat gives such layers a zero bias")
                    step.feature_in = self.feature_of[n.inputs[0]]
            self._plan.append(step)

    # ------------------------------------------------------------ building
    def _const_input(self, n: Node, i: int, name: str, is_int: bool, qg: Graph, qn: Node | None):
        t = self.graph.tensors[name]
        if n.op in WEIGHTED_OPS and i in (1, 2) and np.issubdtype(t.data.dtype, np.floating):
            if name not in self.param_of:
                k = _key("p", len(self.weights))
                self.weights[k] = nn.Parameter(torch.from_numpy(np.array(t.data, dtype=np.float32)))
                self.param_of[name] = k
            return ("param", self.param_of[name])
        data = t.data
        if is_int and qn is not None and np.issubdtype(t.data.dtype, np.floating):
            qt = qg.tensors[qn.inputs[i]]
            if qt.quant is not None:  # the constant as the integer graph holds it
                data = qt.quant.dequantize(qt.data)
        buf = f"c{len(self._consts)}"
        arr = np.array(data)
        self.register_buffer(buf, torch.from_numpy(arr.astype(np.float32) if arr.dtype.kind == "f" else arr))
        self._consts[f"{n.name}:{i}"] = buf
        return ("const", buf)

    # ------------------------------------------------------------- running
    def forward(self, *inputs: torch.Tensor):
        g = self.graph
        if len(inputs) != len(g.inputs):
            raise QtcError(f"the QAT model takes {len(g.inputs)} input(s), got {len(inputs)}",
                           where=f"graph {g.name}", hint=f"pass tensors for {g.inputs}")
        q = self.quantize_enabled
        env: dict[str, torch.Tensor] = {}
        bridged: dict[str, torch.Tensor] = {}
        for name, x in zip(g.inputs, inputs):
            x = torch.as_tensor(x, dtype=torch.float32)
            if q and name in self.feature_of:
                env[name] = self.feature_q[self.feature_of[name]](x)
            else:
                env[name] = self.act_q[self.int_q[name]](x) if (q and name in self._produced_int) else x
        for st in self._plan:
            xs: list[torch.Tensor | None] = []
            for kind, ref in st.inputs:
                if kind == "none":
                    xs.append(None)
                elif kind == "param":
                    xs.append(self.weights[ref])
                elif kind == "const":
                    xs.append(getattr(self, ref))
                elif kind == "bridge" and q:
                    if ref not in bridged:
                        bridged[ref] = self.act_q[self.int_q[ref]](env[ref])
                    xs.append(bridged[ref])
                else:
                    xs.append(env[ref])
            if q and st.weight_q is not None:
                xs[1], bias = self.folded(st, xs[1], xs[2] if len(xs) > 2 else None)
                if bias is not None:
                    xs[2] = fake_bias(bias, self.act_q[st.in_q].scale(), self.weight_q[st.weight_q].scale(),
                                      bits=self.spec.bias_bits, rounding=self.spec.rounding)
            ys = st.fn(st.node, xs, st.ctx)
            if q and st.weight_q is not None and self.double_rounding:
                out_q = self.act_q[st.outputs_q[0]]
                env[st.node.outputs[0]] = out_q(ys[0], self._pre_step(st, ys[0], out_q))
                continue
            if q and st.node.op == "AvgPool" and st.outputs_q[0] is not None:
                env[st.node.outputs[0]] = self._int_avg_pool(st, xs[0], ys[0])
                continue
            for o, y, k, rq in zip(st.node.outputs, ys, st.outputs_q, st.requant):
                env[o] = self.act_q[k](y) if (q and k is not None and rq) else y
        outs = tuple(env[o] for o in g.outputs)
        return outs[0] if len(outs) == 1 else outs

    def folded(self, st: _Step, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fake-quantized weight and the float bias (before its own rounding) of a weighted step;
        for a per-feature input's consumer, ``Q(W·diag(S/s))`` and ``b - s·Q(W')·Z``."""
        wq = self.weight_q[st.weight_q]
        if st.feature_in is None:
            return wq(w), b
        fq = self.feature_q[st.feature_in]
        w_q = wq(fq.fold_weight(w))
        return w_q, fq.fold_bias(b, w_q)

    def _pre_step(self, st: _Step, y: torch.Tensor, out_q) -> torch.Tensor:
        step = requant_pre_step(self.act_q[st.in_q].scale(), self.weight_q[st.weight_q].scale(), out_q.scale())
        shape = [1] * y.dim()
        channels_last = st.node.op == "FullyConnected" or bool(st.node.attrs.get("channels_last", False))
        shape[-1 if channels_last else 1] = -1
        return step.reshape(shape) if step.numel() > 1 else step.reshape(())

    def _int_avg_pool(self, st: _Step, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """AvgPool as TFLite's integer kernel rounds it: the mean of the raw codes (zero point
        included) rounded half away from zero, in float64 so the frequent exact ties stay exact.
        The value is the integer result; the gradient is the float mean's (STE)."""
        qz = self.act_q[st.outputs_q[0]]
        s, z = qz.scale().detach().double(), qz.zp().detach().double()
        codes = torch.round(x.detach().double() / s)  # q - z, exact: x is on the input's grid
        v = st.fn(st.node, [codes], st.ctx)[0] + z
        v = v + torch.sign(v) * 1e-9  # means are multiples of 1/n: nudge ties, move nothing else
        qv = torch.clamp(torch.sign(v) * torch.floor(torch.abs(v) + 0.5), qz.qmin, qz.qmax)
        exact = ((qv - z) * s).to(y.dtype)
        return y + (exact - y).detach()

    # ------------------------------------------------------------- helpers
    def float_copy(self) -> "QatModel":
        """A frozen copy running the float graph (no fake quantization): the distillation teacher."""
        import copy

        t = copy.deepcopy(self)
        t.quantize_enabled = False
        for p in t.parameters():
            p.requires_grad_(False)
        return t.eval()

    def quantizer_params(self) -> list[nn.Parameter]:
        return [p for m in (self.act_q, self.weight_q, self.feature_q) for p in m.parameters()]

    def weight_params(self) -> list[nn.Parameter]:
        return list(self.weights.parameters())

    @torch.no_grad()
    def predict(self, *arrays: np.ndarray, batch: int = 512) -> np.ndarray | tuple:
        """Run on numpy arrays (stacked samples) in chunks; numpy output(s)."""
        was = self.training
        self.eval()
        n = len(arrays[0])
        chunks = []
        for i in range(0, n, batch):
            out = self(*(torch.from_numpy(np.asarray(a[i:i + batch], dtype=np.float32)) for a in arrays))
            chunks.append(out if isinstance(out, tuple) else (out,))
        self.train(was)
        res = tuple(torch.cat([c[k] for c in chunks]).numpy() for k in range(len(chunks[0])))
        return res[0] if len(res) == 1 else res


def _calib_dict(g: Graph, calib) -> dict[str, np.ndarray]:
    if isinstance(calib, dict):
        missing = [k for k in g.inputs if k not in calib]
        if missing:
            raise QtcError(f"calibration data has no array for input {missing[0]!r}", where=f"graph {g.name}",
                           hint=f"give arrays for {g.inputs}")
        return {k: np.asarray(calib[k], dtype=np.float32) for k in g.inputs}
    arrays = list(calib) if isinstance(calib, (tuple, list)) else [calib]
    if len(arrays) != len(g.inputs):
        raise QtcError(f"got {len(arrays)} calibration array(s) for {len(g.inputs)} input(s)", where=f"graph {g.name}",
                       hint=f"give one array per input, in the order {g.inputs}")
    return {k: np.asarray(a.numpy() if isinstance(a, torch.Tensor) else a, dtype=np.float32)
            for k, a in zip(g.inputs, arrays)}


def prepare_qat(model, calib, target="host", wbits: int = 8, abits: int = 8, *, example_inputs=None,
                method: str = "mse", weight_method: str = "mse", keep_float=(), per_channel: bool | None = None,
                learn_zero_point: bool = True, per_feature_input: bool | str = False,
                progress: bool = False) -> QatModel:
    """Build the :class:`QatModel` of ``model`` for ``target`` at ``wbits``/``abits``.

    ``model``: a torch ``nn.Module`` (exported with ``torch.export`` on
    ``example_inputs``, default: the first calibration sample) or a qtc float
    :class:`~qtc.ir.graph.Graph` (from any front end).  ``calib``: calibration
    samples stacked on axis 0 (an array, a tuple per input, or a dict by input
    name); PTQ with ``method`` / ``weight_method`` on them gives the initial
    step sizes and zero points.

    ``per_feature_input``: ``True`` (every graph input must qualify), ``"auto"``
    (every input that qualifies: read only by FullyConnected layers) or
    ``False``.  Such an input gets one learned scale and zero point per feature
    (:class:`~.fakequant.FeatureInputQuant`, initialised from each feature's
    calibration range), folded exactly into its FullyConnected consumers; the
    exported graph records them in ``metadata["input_quant"]`` as PTQ's
    per-feature inputs do.  At 2- and 4-bit first-layer weights this gives every
    input column its own scale, and it is where QAT recovers most.
    """
    from ..passes.quantize import quantize

    if isinstance(model, Graph):
        graph = model
    elif isinstance(model, nn.Module):
        from ..frontends.torch import from_torch

        if example_inputs is None:
            arrays = list(calib.values()) if isinstance(calib, dict) else (
                list(calib) if isinstance(calib, (tuple, list)) else [calib])
            example_inputs = tuple(torch.as_tensor(np.asarray(a[:1], dtype=np.float32)) for a in arrays)
        graph = from_torch(model, tuple(example_inputs) if isinstance(example_inputs, (tuple, list))
                           else (example_inputs,))
    else:
        raise QtcError(f"QAT takes a torch nn.Module or a qtc Graph, got {type(model).__name__}",
                       hint="pass the float torch model (or a graph from qtc.frontends.load_model)")
    spec = spec_for(target, wbits=wbits, abits=abits, per_channel=per_channel)
    fg, bn_report = fold_for_qat(graph)
    calib_d = _calib_dict(fg, calib)
    pfi = _per_feature_arg(per_feature_input)
    if pfi:
        fg = _with_zero_biases(fg)
    import warnings

    from ..passes.quantize import QuantizeWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizeWarning)  # bias clipping is modelled (and reported) by QAT
        qg = quantize(fg, calib_d, target=target, method=method, wbits=wbits, abits=abits, keep_float=keep_float,
                      per_channel=per_channel, weight_method=weight_method, canonicalize=False, progress=progress,
                      per_feature_input=pfi)
    info = {"target": spec.target, "wbits": spec.wbits, "abits": spec.abits, "init_method": method,
            "init_weight_method": weight_method, "keep_float": list(keep_float), "batchnorm": bn_report,
            "float_nodes": qg.metadata["quantization"]["float_nodes"], "learn_zero_point": bool(learn_zero_point),
            "per_feature_input": sorted((qg.metadata.get(BOUNDARY_KEY) or {}))}
    from ..target import load_target

    numerics = (load_target(target) if isinstance(target, str) else target).numerics
    return QatModel(fg, qg, spec, learn_zero_point=learn_zero_point, double_rounding=numerics == "tflite", info=info)


def _per_feature_arg(value) -> bool | str:
    """prepare_qat's ``per_feature_input`` as quantize() takes it."""
    from ..passes.quantize.quantizer import _WHERE_ELIGIBLE

    if value in (False, None, "off", "false"):
        return False
    if value is True or value in ("on", "true"):
        return True
    if value == "auto":
        return _WHERE_ELIGIBLE
    raise QtcError(f"per_feature_input must be True, False or 'auto', got {value!r}",
                   hint="'auto' learns per-feature params on every input read only by FullyConnected layers")


def _with_zero_biases(g: Graph) -> Graph:
    """``g`` (a copy when changed) where every FullyConnected layer reading a graph input has a bias:
    a per-feature input's zero points fold into it."""
    need = {n.name for n in g.nodes if n.op == "FullyConnected" and n.inputs[0] in g.inputs
            and (len(n.inputs) < 3 or not n.inputs[2]) and g.tensors[n.inputs[1]].is_const}
    if not need:
        return g
    g = g.copy()
    for n in g.nodes:
        if n.name in need:
            out_ch = int(g.tensors[n.inputs[1]].shape[0])
            b = g.add_const(f"{n.name}_bias", np.zeros(out_ch, dtype=np.float32))
            n.inputs = [n.inputs[0], n.inputs[1], b.name]
    return g
