"""The quantize pass: a float graph → a TFLite-int8-spec graph under a target's rules.

Scheme (docs/ir.md; TFLite ``quantization_spec.md``):

* activations int8 asymmetric per-tensor (symmetric, zero point 0, on
  symmetric targets); the graph's inputs and outputs become int8 tensors with
  params, as TF's converter with ``inference_input_type=int8``;
* weights of Conv1D/Conv2D/ConvTranspose2D/FullyConnected symmetric narrow
  range ``[-(2^(b-1)-1), 2^(b-1)-1]``, per-channel along axis 0 (or
  per-tensor); sub-byte weights stay unpacked in int8 with ``bits`` 4 or 2;
* bias int32 with scale ``s_in * s_w[c]``, zero point 0, checked against the
  target's bias width (clipped with a warning, recorded in metadata);
* fixed output params: Softmax/Sigmoid (1/256, -128), Tanh (1/128, 0);
* same-params ops (Reshape, Flatten, Squeeze, Unsqueeze, Transpose, MaxPool,
  AvgPool, Pad, Slice, Split, ReduceMax, Resize) keep their input's params;
  Concat's output params come from its observed range and inputs with other
  params are requantized (int8→int8 Quantize), as the TFLite converter does;
* power-of-two targets round every scale up to a power of two.

Modes: ``static`` (everything integer that has an integer kernel),
``dynamic`` (int8 weights + Dequantize into float ops, float activations; no
calibration needed),
``mixed`` (as static, with the ``keep_float`` layers left in float between
Dequantize/Quantize bridges, and the ``int16`` ones given int16 activations).
Nodes with no integer kernel, ops the target runs in float (``float_ops``)
and fixed-zero-point ops on symmetric targets stay float in every mode; each
is listed with its reason in the metadata.

``method="auto"`` picks each activation tensor's range method by the
quantized outputs' error on the calibration samples (:mod:`.select`).
Optional refinements (better than min-max): cross-layer equalization of the
float graph before calibration (:mod:`.equalize`); AdaRound and bias
correction on the built graph, layer by layer (:mod:`.refine`).
"""
from __future__ import annotations

import copy
from typing import Iterable

import numpy as np

from ... import __version__
from ...errors import QtcError
from ...ir.boundary import META_KEY as BOUNDARY_KEY
from ...ir.boundary import quant_to_json
from ...ir.graph import Graph
from ...ir.tensor import QuantParams
from ...ir.validate import validate
from ...ops.registry import get_op, has_op
from .adaround import AdaRoundConfig
from .block_recon import find_block, learn_input_params, reconstruct
from .builder import FIXED_OUTPUT, SAME_PARAMS_OPS, Builder, QuantizeWarning  # noqa: F401 - re-exported
from .calibrate import _layout, calibration_hash, run_calibration
from .constraints import WEIGHTED_OPS, QuantSpec, spec_for
from .equalize import equalize as _equalize
from .input_features import eligible as _pfi_eligible
from .input_features import per_feature_inputs
from .observers import HISTOGRAM_METHODS, METHODS, Observer, RangeSpec, make_observer
from .params import activation_params
from .refine import refine
from .select import WEIGHT_METHODS, select

MODES = ("static", "dynamic", "mixed")
AUTO = "auto"
_SEPARATORS = "/.:"


def _match(name: str, pattern: str) -> bool:
    """Exact name, or a scope prefix ending at a separator ('enc' matches 'enc/conv1').

    A pattern starting with ``=`` matches only the exact name that follows.
    """
    if pattern.startswith("="):
        return name == pattern[1:]
    if name == pattern:
        return True
    if not name.startswith(pattern):
        return False
    return pattern[-1] in _SEPARATORS or name[len(pattern)] in _SEPARATORS


def _select(g: Graph, patterns: Iterable[str], what: str) -> set[str]:
    """Node names matched by ``patterns`` (node names, output tensor names or scope prefixes).

    A pattern naming a graph input matches no node but is not an error (``--int16 x``).
    """
    chosen: set[str] = set()
    for p in patterns:
        hit = {n.name for n in g.nodes if _match(n.name, p) or any(_match(o, p) for o in n.outputs)}
        if not hit and p.lstrip("=") in g.inputs:
            continue
        if not hit:
            raise QtcError(f"{what} {p!r} matches no node of the (canonicalized) graph", where=f"graph {g.name}",
                           hint="use 'qtc show' to list node names; a scope prefix like 'encoder' matches 'encoder/…'")
        chosen |= hit
    return chosen


_WHERE_ELIGIBLE = "where-eligible"  # internal: per-feature params on every input that can take them


def _choose_per_feature(graph: Graph, calib: dict[str, np.ndarray], kw: dict) -> Graph:
    """``per_feature_input="auto"``: with and without, the lower output error on the calibration samples."""
    from .collect import collect
    from .select import CRITERION, output_error, scoring_samples

    with_pf = quantize(graph, calib, per_feature_input=_WHERE_ELIGIBLE, **kw)
    if not with_pf.metadata["quantization"]["per_feature_input"]:
        with_pf.metadata["quantization"]["per_feature_choice"] = None  # no input can take them
        return with_pf
    without = quantize(graph, calib, per_feature_input=False, **kw)
    fg = _canonical(graph) if kw.get("canonicalize", True) else graph
    data = scoring_samples(fg, calib)
    ref = collect(fg, data, fg.outputs)

    def error(q: Graph) -> float:
        out = collect(q, data, q.outputs)
        return output_error({f: out[o] for f, o in zip(fg.outputs, q.outputs)}, ref)

    errs = {"per_feature": error(with_pf), "per_tensor": error(without)}
    chosen = with_pf if errs["per_feature"] <= errs["per_tensor"] else without
    chosen.metadata["quantization"]["per_feature_choice"] = {
        "chosen": "per_feature" if chosen is with_pf else "per_tensor", "criterion": CRITERION,
        "error": {k: float(f"{v:.6g}") for k, v in errs.items()}}
    return chosen


def _layer_wbits(g: Graph, layer_wbits: dict[str, int] | None) -> dict[str, int]:
    """{weight-layer node name: bits} from ``{name or scope prefix: bits}`` (later patterns win)."""
    out: dict[str, int] = {}
    weighted = {n.name for n in g.nodes if n.op in (*WEIGHTED_OPS, "MatMul")}
    for pattern, bits in (layer_wbits or {}).items():
        if int(bits) not in (2, 4, 8):
            raise QtcError(f"--layer-wbits {pattern}={bits}: weight bits must be 8, 4 or 2",
                           hint="e.g. --layer-wbits fc1=8")
        hit = _select(g, [pattern], "--layer-wbits") & weighted
        if not hit:
            raise QtcError(f"--layer-wbits {pattern!r} matches no weight layer", where=f"graph {g.name}",
                           hint="name a Conv/FullyConnected/MatMul node or a scope prefix ('qtc show' lists them)")
        out.update({name: int(bits) for name in hit})
    return out


def _canonical(g: Graph) -> Graph:
    from .. import canonicalize as _canonicalize  # noqa: PLC0415 - written alongside this pass

    out = _canonicalize(g, channels_last=False)
    return g if out is None else out


def _placement(g: Graph, spec: QuantSpec, mode: str, keep_float: set[str]) -> tuple[set[str], list[dict]]:
    """(names of the integer nodes, [{node, op, reason}] for the float ones)."""
    int_nodes, floats = set(), []
    for n in g.nodes:
        reason = None
        if mode == "dynamic":
            reason = "dynamic mode"
        elif n.name in keep_float:
            reason = "keep_float"
        elif not has_op(n.op) or not get_op(n.op).has_int:
            reason = "op has no integer kernel"
        elif n.op in WEIGHTED_OPS and not g.tensors[n.inputs[1]].is_const:
            reason = "weight is not a constant"
        elif n.op in spec.float_ops:
            reason = f"target {spec.target} runs {n.op} in float"
        elif spec.act_symmetric and n.op in FIXED_OUTPUT and FIXED_OUTPUT[n.op][1] != 0:
            reason = f"fixed output zero point {FIXED_OUTPUT[n.op][1]} needs asymmetric activations"
        if reason is None:
            int_nodes.add(n.name)
        elif mode != "dynamic":
            floats.append({"node": n.name, "op": n.op, "reason": reason})
    return int_nodes, floats


def _observed_tensors(g: Graph, int_nodes: set[str]) -> list[str]:
    """Activation tensors whose range decides params: inputs and outputs of integer nodes."""
    names: list[str] = []
    seen: set[str] = set()
    for n in g.nodes:
        if n.name not in int_nodes:
            continue
        for name in [*n.inputs, *n.outputs]:
            if name and name not in seen and not g.tensors[name].is_const:
                seen.add(name)
                names.append(name)
    return names


def _adaround_config(adaround) -> AdaRoundConfig | None:
    if adaround is None or adaround is False:
        return None
    if adaround is True:
        cfg = AdaRoundConfig()
    elif isinstance(adaround, AdaRoundConfig):
        cfg = adaround
    elif isinstance(adaround, dict):
        try:
            cfg = AdaRoundConfig(**adaround)
        except TypeError as exc:
            raise QtcError(f"bad AdaRound settings: {exc}",
                           hint=f"use keys of {sorted(AdaRoundConfig().__dict__)}") from None
    else:
        raise QtcError(f"adaround must be a bool, dict or AdaRoundConfig, got {type(adaround).__name__}")
    if cfg.inputs not in ("quantized", "float"):
        raise QtcError(f"AdaRound inputs {cfg.inputs!r} unknown", hint="use 'quantized' (sequential) or 'float'")
    if cfg.iters < 0 or cfg.batch < 1 or cfg.max_rows < 1:
        raise QtcError("AdaRound iters must be >= 0, batch and max_rows >= 1", hint="fix the adaround settings")
    if not isinstance(cfg.block, bool) or not isinstance(cfg.block_layers, int) or not 1 <= cfg.block_layers <= 3 \
            or cfg.block_iters < 0 or cfg.block_scale_iters < 0 or cfg.block_scale_lr <= 0 or cfg.block_tune_lr <= 0:
        raise QtcError(f"bad block reconstruction settings (block={cfg.block!r}, block_layers={cfg.block_layers}, "
                       f"block_iters={cfg.block_iters}, block_scale_iters={cfg.block_scale_iters})",
                       where="adaround", hint="block is True/False, block_layers 1-3, iters >= 0, learning rates > 0")
    return cfg


def _param_fn(observers: dict[str, Observer], spec: QuantSpec, int16_tensors: set[str], graph_name: str,
              fixed: dict[str, QuantParams] | None = None):
    """Tensor name → a copy of its activation params from its observer (cached); ``fixed`` params win."""
    cache: dict[str, QuantParams] = dict(fixed or {})

    def act_params(name: str) -> QuantParams:
        if name not in cache:
            obs = observers.get(name)
            if obs is None:
                raise QtcError(f"no observed range for tensor {name!r}", where=f"graph {graph_name}",
                               hint="this is a qtc bug: the tensor should have been calibrated")
            if name in int16_tensors:
                lo, hi = obs.range(RangeSpec(16, True, spec.power_of_two))
                cache[name] = activation_params(lo, hi, bits=16, symmetric=True, power_of_two=spec.power_of_two)
            else:
                rs = RangeSpec(spec.abits, spec.act_symmetric, spec.power_of_two)
                lo, hi = obs.range(rs)
                cache[name] = activation_params(lo, hi, bits=spec.abits, symmetric=spec.act_symmetric,
                                                power_of_two=spec.power_of_two)
        return copy.deepcopy(cache[name])

    return act_params


def _build(g: Graph, spec: QuantSpec, act_params, int_nodes: set[str], dynamic_nodes: set[str],
           weight_method: str, layer_wbits: dict[str, int] | None = None) -> tuple[Graph, Builder]:
    """The quantized graph built from a copy of float graph ``g`` (``g`` is not modified)."""
    qg = g.copy()
    b = Builder(qg, spec, act_params, int_nodes, dynamic_nodes, weight_method, layer_wbits)
    b.inputs()
    for n in list(qg.nodes):
        b.node(n)
    qg.nodes = b.nodes
    qg.remove_unused_tensors()
    validate(qg)
    return qg, b


def quantize(graph: Graph, calib_inputs: dict[str, np.ndarray] | None, target="host", method: str = "minmax",
             wbits: int = 8, abits: int = 8, mode: str = "static", keep_float: Iterable[str] = (),
             int16: Iterable[str] = (), per_channel: bool | None = None, *,
             observer_settings: dict | None = None, weight_method: str = "minmax", seed: int | None = None,
             canonicalize: bool = True, progress: bool = True, equalize: bool = False,
             bias_correction: bool = False, adaround=False, per_feature_input: bool | str = False,
             layer_wbits: dict[str, int] | None = None) -> Graph:
    """Post-training quantization of ``graph`` for ``target`` (see the module docstring).

    ``calib_inputs`` maps each graph input to its calibration samples, stacked
    on axis 0.  ``keep_float`` and ``int16`` take node names, output tensor
    names or scope prefixes (``=name`` for an exact name).  ``seed`` is
    recorded (the dataset's split seed).  The input graph is not modified.

    ``method="auto"`` chooses each activation tensor's range method (minmax,
    percentile, entropy or mse) and ``weight_method="auto"`` the weights'
    clipping (minmax or mse) by the error of the quantized model's outputs
    against the float model's on the calibration samples (:mod:`.select`);
    the choices are recorded in the metadata (``auto``).

    Better than min-max (each recorded in the metadata):
    ``equalize`` cross-layer equalization of the float graph first (:mod:`.equalize`);
    ``adaround`` learned rounding of the weights (True, a dict of
    :class:`AdaRoundConfig` fields, or a config; :mod:`.adaround`);
    ``bias_correction`` empirical bias correction (:mod:`.bias_correction`).
    AdaRound and bias correction run layer by layer on the calibration data
    (:mod:`.refine`), also in dynamic mode.
    With ``block=True`` in the AdaRound settings, the FullyConnected block
    reading a per-feature input gets learned input params and one joint
    AdaRound instead (:mod:`.block_recon`; ``metadata["quantization"]
    ["block_reconstruction"]``); the other layers stay layer by layer.

    ``per_feature_input``: one scale and zero point per feature for graph
    inputs read only by FullyConnected layers, folded into those layers
    (:mod:`.input_features`); True requires it of every input (an error
    names one that cannot); ``"auto"`` quantizes with and without it where
    it can apply and keeps the one with the lower output error on the
    calibration samples (the :mod:`.select` criterion; both errors go to
    ``metadata["quantization"]["per_feature_choice"]``).  The boundary params
    go to ``metadata["input_quant"]``.

    ``layer_wbits`` maps node names or scope prefixes to weight bits (8/4/2)
    for those layers (mixed-precision weights; the rest take ``wbits``); each
    layer's bias width follows the target's rule for its weight bits.
    """
    if mode not in MODES:
        raise QtcError(f"unknown mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    if method not in (*METHODS, AUTO):
        raise QtcError(f"unknown calibration method {method!r}", hint=f"use one of: {', '.join((*METHODS, AUTO))}")
    if weight_method not in (*WEIGHT_METHODS, AUTO):
        raise QtcError(f"unknown weight method {weight_method!r}", hint="use minmax, mse or auto")
    choosing = AUTO in (method, weight_method)
    if choosing and mode == "dynamic":
        raise QtcError("automatic method choice needs integer activations; dynamic mode has none",
                       hint="use --mode static or mixed, or name the methods")
    if choosing and method not in (*HISTOGRAM_METHODS, AUTO):
        raise QtcError(f"weight_method='auto' cannot be combined with method {method!r}",
                       hint=f"use one of: {', '.join((*HISTOGRAM_METHODS, AUTO))}")
    if method == AUTO and observer_settings and set(observer_settings) - {"bins"}:
        raise QtcError(f"observer settings {sorted(observer_settings)} need a named method, not 'auto'",
                       hint="drop the settings or pick the method (e.g. --method percentile --percentile 99.9)")
    if graph.is_quantized or any(n.op in ("Quantize", "Dequantize") for n in graph.nodes):
        raise QtcError("the graph is already quantized", where=f"graph {graph.name}",
                       hint="quantize the float model (re-import it without quantization)")
    keep_float, int16 = list(keep_float), list(int16)
    if mode == "dynamic" and int16:
        raise QtcError("--int16 needs integer activations; dynamic mode keeps every activation float",
                       hint="use --mode mixed (or static) with --int16")
    ada_cfg = _adaround_config(adaround)
    if ada_cfg is not None and ada_cfg.block and mode == "dynamic":
        raise QtcError("block reconstruction needs integer activations; dynamic mode has none",
                       where="adaround", hint="use --mode static or mixed, or drop block=True")
    if (ada_cfg is not None or bias_correction) and not calib_inputs:
        raise QtcError("AdaRound and bias correction need calibration data", where=f"graph {graph.name}",
                       hint="pass --calib quant_dataset_<input>.npy (from 'qtc calibrate')")
    spec = spec_for(target, wbits=wbits, abits=abits, per_channel=per_channel)
    g = graph.copy()
    if canonicalize:
        g = _canonical(g)
    eq_meta = None
    if equalize:
        g, eq_meta = _equalize(g)
    keep_nodes = _select(g, keep_float, "--keep-float")
    int16_nodes = _select(g, int16, "--int16")
    int16_tensors = {o for n in g.nodes if n.name in int16_nodes for o in n.outputs}
    int16_tensors |= {p.lstrip("=") for p in int16 if p.lstrip("=") in g.inputs}
    int_nodes, float_nodes = _placement(g, spec, mode, keep_nodes)
    wbits_of = _layer_wbits(g, layer_wbits)
    user_calib = calib_inputs  # hashed into the metadata as given (before any rewrite)
    pfi_fixed: dict[str, QuantParams] = {}
    pfi_boundary: dict[str, QuantParams] = {}
    blocks = []  # block reconstruction (block_recon.py)
    if per_feature_input not in (False, True, AUTO, _WHERE_ELIGIBLE):
        raise QtcError(f"per_feature_input must be True, False or 'auto', got {per_feature_input!r}")
    if per_feature_input == AUTO and mode != "dynamic" and calib_inputs:
        return _choose_per_feature(graph, calib_inputs, dict(
            target=target, method=method, wbits=wbits, abits=abits, mode=mode, keep_float=keep_float, int16=int16,
            per_channel=per_channel, observer_settings=observer_settings, weight_method=weight_method, seed=seed,
            canonicalize=canonicalize, progress=progress, equalize=equalize, bias_correction=bias_correction,
            adaround=adaround, layer_wbits=layer_wbits))
    if per_feature_input in (True, _WHERE_ELIGIBLE) and mode != "dynamic":
        if not calib_inputs:
            raise QtcError("per-feature input params need calibration data", where=f"graph {g.name}",
                           hint="pass --calib quant_dataset_<input>.npy (from 'qtc calibrate')")
        cons = g.consumers()
        pfi_names = [x for x in g.inputs if x not in int16_tensors
                     and all(c.name in int_nodes for c in cons.get(x, []))]
        if per_feature_input is True and len(pfi_names) < len(g.inputs):
            x = next(x for x in g.inputs if x not in pfi_names)
            raise QtcError(f"input {x!r} is int16 or read by a float layer; it cannot take per-feature params",
                           where=f"graph {g.name}", hint="drop --per-feature-input or the --int16/--keep-float choice")
        if per_feature_input == _WHERE_ELIGIBLE:
            pfi_names = [x for x in pfi_names if _pfi_eligible(g, x) is None]
        if pfi_names and ada_cfg is not None and ada_cfg.block:  # step 1 of block reconstruction
            for x in pfi_names:
                chain = find_block(g, x, int(ada_cfg.block_layers), int_nodes)
                if chain is not None:
                    blocks.append(learn_input_params(g, x, np.asarray(calib_inputs[x]), chain, spec,
                                                     wbits_of.get(chain[0].name, spec.wbits), ada_cfg))
        if pfi_names:
            g, calib_inputs, pfi_fixed, pfi_boundary = per_feature_inputs(
                g, calib_inputs, pfi_names, bits=spec.abits, power_of_two=spec.power_of_two,
                params={b.input: (b.scale, b.zero_point) for b in blocks})
    observer_settings = dict(observer_settings or {})

    dynamic_nodes = {n.name for n in g.nodes if n.name not in keep_nodes} if mode == "dynamic" else set()

    observers: dict[str, Observer] = {}
    calib_meta: dict = {"samples": 0}
    auto_meta = None
    if int_nodes:
        if not calib_inputs:
            raise QtcError("static quantization needs calibration data", where=f"graph {g.name}",
                           hint="pass --calib quant_dataset_<input>.npy (from 'qtc calibrate'), or use --mode dynamic")
        names = _observed_tensors(g, int_nodes)
        if choosing:
            observers, weight_method, calib_meta, auto_meta = select(
                g, calib_inputs, names, methods=HISTOGRAM_METHODS if method == AUTO else (method,),
                weight_methods=WEIGHT_METHODS if weight_method == AUTO else (weight_method,),
                settings=observer_settings, progress=progress,
                param_fn=lambda obs: _param_fn(obs, spec, int16_tensors, g.name, pfi_fixed),
                build=lambda params, wm: _build(g, spec, params, int_nodes, dynamic_nodes, wm, wbits_of)[0])
        else:
            observers = {name: make_observer(method, **observer_settings) for name in names}
            calib_meta = run_calibration(g, calib_inputs, observers, progress=progress)
        calib_meta["sha256"] = calibration_hash({k: np.asarray(user_calib[k]) for k in g.inputs})
    elif calib_inputs and (ada_cfg is not None or bias_correction):  # dynamic mode: refinement data only
        calib_meta = {"samples": int(_layout(g, calib_inputs)[0]),
                      "sha256": calibration_hash({k: np.asarray(user_calib[k]) for k in g.inputs})}

    if weight_method == AUTO:  # nothing was calibrated (no integer node): no weight to choose for
        weight_method = WEIGHT_METHODS[0]
    fg = g if (ada_cfg is not None or bias_correction) else None
    g, b = _build(g, spec, _param_fn(observers, spec, int16_tensors, g.name, pfi_fixed), int_nodes, dynamic_nodes,
                  weight_method, wbits_of)
    refine_meta = None
    block_meta = [reconstruct(g, blk, calib_inputs, np.asarray(user_calib[blk.input]), spec, ada_cfg)
                  for blk in blocks]
    done = frozenset(n for m in block_meta if m["applied"] and not m["kept_nearest"] for n in m["nodes"])
    if fg is not None:
        refine_meta = refine(g, fg, calib_inputs, spec, adaround_cfg=ada_cfg, bias_correction=bias_correction,
                             progress=progress, skip=done)
        g.remove_unused_tensors()
        validate(g)

    sample_obs = next(iter(observers.values()), None)
    g.metadata["quantization"] = {
        "qtc_version": __version__,
        "scheme": "tflite-int8" if mode != "dynamic" else "dynamic-int8-weights",
        "mode": mode,
        "method": method,
        "observer": sample_obs.settings() if sample_obs is not None and method != AUTO else None,
        "weight_method": weight_method,
        "wbits": spec.wbits,
        "abits": spec.abits,
        "per_channel": spec.per_channel,
        "target": spec.to_json(),
        "keep_float": list(keep_float),
        "int16": list(int16),
        "float_nodes": float_nodes,
        "bias_clipped": b.bias_clipped,
        "calibration": {**calib_meta, "seed": seed},
        "canonicalized": bool(canonicalize),
        "weights": "symmetric narrow-range, axis 0" if spec.per_channel else "symmetric narrow-range, per-tensor",
        "equalization": eq_meta,
        "layer_wbits": dict(sorted(wbits_of.items())) or None,
        "per_feature_input": {name: {"features": int(q.scale.size), "inner_scale": float(pfi_fixed[name].scale[0])}
                              for name, q in pfi_boundary.items()} or None,
        "auto": auto_meta,
        "adaround": None if ada_cfg is None else {**ada_cfg.to_json(), "layers": [
            {"node": r["node"], **r["adaround"]} for r in refine_meta["layers"] if "adaround" in r]},
        "block_reconstruction": None if ada_cfg is None or not ada_cfg.block else block_meta,
        "bias_correction": None if not bias_correction else {"layers": [
            {k: r[k] for k in ("node", "bias_shift_max", "bias_clipped") if k in r}
            for r in refine_meta["layers"] if "bias_shift_max" in r]},
    }
    live = {x for x in pfi_boundary if g.tensors[x].quant is not None}
    if live:
        g.metadata[BOUNDARY_KEY] = {x: quant_to_json(pfi_boundary[x]) for x in sorted(live)}
    return g
