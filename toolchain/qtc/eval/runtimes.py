"""Run a .tflite model on the reference runtimes and compare with qtc, bit for bit.

* :func:`run_litert` — LiteRT's Python interpreter: reference kernels
  (``BUILTIN_REF``), or the optimized kernels with (default, XNNPACK) or
  without delegates;
* :func:`run_tflm` — the TFLite Micro Python interpreter;
* :func:`run_qtc` — qtc's interpreter (exact integer kernels, TFLM numerics);
* :func:`compare_bitexact` — end-to-end: every sample through the runtimes and
  through qtc; exact-match counts and max LSB differences per output;
* :func:`compare_layerwise` — op by op against LiteRT's reference kernels:
  each qtc op is fed LiteRT's own input tensors, so a difference is that op's.

Inputs are one array per model input holding a batch of samples on axis 0;
each sample runs on its own (the model's batch is 1) and outputs are stacked
back on axis 0.

Known, by-design deviations (checked by the tests, reported in ``notes``):

* LiteRT's *reference* FULLY_CONNECTED (int8/int16, per-tensor and
  per-channel) requantizes in double, ``round(acc * s_in*s_w/s_out)``, while
  TFLM, LiteRT's optimized kernels and qtc use the integer multiplier
  (MultiplyByQuantizedMultiplier): rare 1-LSB differences.
  :func:`compare_layerwise` checks those FC outputs against that formula.
* XNNPACK rounds differently by design (recorded, never expected exact).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import QtcError, ShapeError
from ..ir.boundary import quantize_input

RUNTIMES = ("litert_ref", "litert_builtin", "litert_xnnpack", "tflm")
# the qtc numerics each runtime is built with (interp/numerics/): LiteRT's reference
# FULLY_CONNECTED rescales in double, everything else is TFLite's integer arithmetic
NUMERICS_FOR = {"litert_ref": "litert_ref", "litert_builtin": "tflite", "litert_xnnpack": "tflite", "tflm": "tflite"}

FC_NOTE = ("LiteRT BUILTIN_REF FULLY_CONNECTED requantizes in double (round(acc*s_in*s_w/s_out)); it is "
           "compared with qtc's 'litert_ref' numerics, TFLM with the default 'tflite' numerics")
XNN_NOTE = "XNNPACK uses its own requantization; LSB differences are recorded, not expected to be 0"


# --------------------------------------------------------------------------- inputs
def _as_list(inputs) -> list[np.ndarray]:
    if isinstance(inputs, np.ndarray):
        return [inputs]
    return [np.asarray(a) for a in inputs]


def _split_samples(inputs: list[np.ndarray], shapes: list[tuple[int, ...]], dtypes: list) -> tuple[int, list]:
    """Check a batch of samples against the model's input shapes; returns (count, per-input arrays)."""
    if len(inputs) != len(shapes):
        raise ShapeError(f"model has {len(shapes)} inputs, got {len(inputs)} arrays", where="runtimes",
                         hint="pass one array (batch of samples on axis 0) per model input")
    n = None
    inputs = list(inputs)
    for k, (x, shp, dt) in enumerate(zip(inputs, shapes, dtypes)):
        shp = tuple(int(d) for d in shp)
        if shp and shp[0] == 1 and tuple(x.shape[1:]) == shp[1:]:
            count = x.shape[0]
        elif tuple(x.shape) == shp:
            count = 1
            inputs[k] = x[None]
        else:
            raise ShapeError(f"input {k} has shape {tuple(x.shape)}, the model expects samples of {shp}",
                             where="runtimes", hint="stack single samples along axis 0")
        if np.issubdtype(np.dtype(dt), np.integer) and not np.issubdtype(x.dtype, np.integer):
            raise ShapeError(f"input {k} is {x.dtype} but the model input is {np.dtype(dt).name}", where="runtimes",
                             hint="quantize the samples with the input's scale/zero point (quantize_samples)")
        if n is not None and count != n:
            raise ShapeError(f"inputs hold different sample counts ({n} vs {count})", where="runtimes",
                             hint="give every input the same number of samples")
        n = count
    return int(n or 0), inputs


def _sample(x: np.ndarray, i: int, shape, dtype) -> np.ndarray:
    return np.ascontiguousarray(x[i].reshape(shape).astype(dtype))


def _stack(samples: list[np.ndarray]) -> np.ndarray:
    if not samples:
        return np.zeros((0,))
    if samples[0].ndim and samples[0].shape[0] == 1:
        return np.concatenate(samples, axis=0)
    return np.stack(samples, axis=0)


def quantize_samples(graph, samples) -> list[np.ndarray]:
    """Float samples → the integers the graph's quantized inputs expect; integer samples pass through."""
    xs = _as_list(samples)
    out = []
    for name, x in zip(graph.inputs, xs):
        t = graph.tensors[name]
        if t.quant is not None and np.issubdtype(np.dtype(t.dtype), np.integer) \
                and not np.issubdtype(x.dtype, np.integer):
            x = quantize_input(graph, name, x).astype(t.dtype)
        out.append(x)
    return out


# --------------------------------------------------------------------------- runtimes
def _litert_interpreter(tflite_bytes: bytes, resolver: str, preserve: bool = False, num_threads: int = 1):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise QtcError("LiteRT is not installed", hint="pip install ai-edge-litert") from None
    kinds = {"ref": OpResolverType.BUILTIN_REF, "xnnpack": OpResolverType.AUTO,
             "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    try:
        it = Interpreter(model_content=bytes(tflite_bytes), experimental_op_resolver_type=kinds[resolver],
                         num_threads=num_threads, experimental_preserve_all_tensors=preserve)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QtcError(f"LiteRT cannot load the model: {first}", where="run_litert",
                       hint="check the .tflite file with 'qtc show'") from None
    return it


def run_litert(tflite_bytes: bytes, inputs, reference_kernels: bool = True, *, delegates: bool = True,
               num_threads: int = 1) -> list[np.ndarray]:
    """Run each sample through LiteRT: BUILTIN_REF kernels, else optimized (XNNPACK unless ``delegates=False``)."""
    resolver = "ref" if reference_kernels else ("xnnpack" if delegates else "builtin")
    it = _litert_interpreter(tflite_bytes, resolver, num_threads=num_threads)
    ind, outd = it.get_input_details(), it.get_output_details()
    shapes = [tuple(d["shape"]) for d in ind]
    dtypes = [d["dtype"] for d in ind]
    n, xs = _split_samples(_as_list(inputs), shapes, dtypes)
    outs: list[list[np.ndarray]] = [[] for _ in outd]
    for i in range(n):
        for d, x, shp, dt in zip(ind, xs, shapes, dtypes):
            it.set_tensor(d["index"], _sample(x, i, shp, dt))
        it.invoke()
        for k, d in enumerate(outd):
            outs[k].append(np.array(it.get_tensor(d["index"])))
    return [_stack(o) for o in outs]


def _io_counts(data: bytes) -> tuple[int, int]:
    """Number of inputs/outputs of the main subgraph, read with the flatbuffer schema."""
    from ..frontends.tflite import schema

    sg = schema().Model.GetRootAs(data, 0).Subgraphs(0)
    return sg.InputsLength(), sg.OutputsLength()


def run_tflm(tflite_bytes: bytes, inputs, arena_size: int | None = None) -> list[np.ndarray]:
    """Run each sample through the TFLite Micro interpreter (its reference kernels)."""
    try:
        from tflite_micro import runtime as tflm
    except ImportError:
        raise QtcError("TFLite Micro is not installed", hint="pip install tflite-micro") from None
    data = bytes(tflite_bytes)
    arena = arena_size or max(len(data) * 10, 1 << 20)
    try:
        it = tflm.Interpreter.from_bytes(data, arena_size=arena)
    except (ValueError, RuntimeError) as exc:
        raise QtcError(f"TFLM cannot load the model: {exc}", where="run_tflm",
                       hint="every op needs a TFLM kernel (TFLM prints which one is missing) and the arena "
                            "must be big enough") from None
    n_in, n_out = _io_counts(data)
    ind = [it.get_input_details(k) for k in range(n_in)]
    shapes = [tuple(int(s) for s in d["shape"]) for d in ind]
    dtypes = [d["dtype"] for d in ind]
    n, xs = _split_samples(_as_list(inputs), shapes, dtypes)
    outs: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for i in range(n):
        for k, (x, shp, dt) in enumerate(zip(xs, shapes, dtypes)):
            it.set_input(_sample(x, i, shp, dt), k)
        it.invoke()
        for k in range(n_out):
            outs[k].append(np.array(it.get_output(k)))
    return [_stack(o) for o in outs]


def run_qtc(graph, inputs, numerics: str = "tflite") -> list[np.ndarray]:
    """Run each sample through qtc's interpreter (integer kernels for quantized graphs)."""
    from ..interp import run

    shapes = [graph.tensors[n].shape for n in graph.inputs]
    dtypes = [graph.tensors[n].dtype for n in graph.inputs]
    n, xs = _split_samples(_as_list(inputs), shapes, dtypes)
    outs: list[list[np.ndarray]] = [[] for _ in graph.outputs]
    for i in range(n):
        feeds = {nm: _sample(x, i, shp, dt) for nm, x, shp, dt in zip(graph.inputs, xs, shapes, dtypes)}
        res = run(graph, feeds, numerics=numerics)
        for k, o in enumerate(graph.outputs):
            outs[k].append(np.asarray(res[o]))
    return [_stack(o) for o in outs]


# --------------------------------------------------------------------------- end to end
def _diff_stats(ref: np.ndarray, got: np.ndarray) -> dict:
    if ref.shape != got.shape:
        return {"shape_mismatch": [list(ref.shape), list(got.shape)]}
    n = ref.shape[0] if ref.ndim else 1
    is_int = np.issubdtype(ref.dtype, np.integer)
    d = np.abs(ref.astype(np.int64 if is_int else np.float64) - got.astype(np.int64 if is_int else np.float64))
    per_sample = d.reshape(n, -1).max(axis=1) if d.size else np.zeros(n)
    stats = {"samples": int(n), "exact_samples": int((per_sample == 0).sum()),
             "exact_elements": int((d == 0).sum()), "elements": int(d.size)}
    if is_int:
        stats["max_lsb_diff"] = int(d.max()) if d.size else 0
        stats["lsb_histogram"] = {int(k): int(v) for k, v in zip(*np.unique(d, return_counts=True))}
    else:
        stats["max_abs_diff"] = float(d.max()) if d.size else 0.0
    return stats


def compare_bitexact(graph, tflite_bytes: bytes, samples, runtimes: Sequence[str] = RUNTIMES) -> dict:
    """Compare qtc's interpreter on ``graph`` with the runtimes running ``tflite_bytes``, end to end.

    ``samples``: one array per model input (float samples are quantized with the
    graph's input params; integer samples are used as they are).  Returns
    ``{"samples", "outputs", "runtimes": {rt: {output: stats} | {"error": line}}, "notes"}``;
    stats hold ``exact_samples``, ``exact_elements``, ``max_lsb_diff`` and an LSB histogram.
    """
    xs = quantize_samples(graph, samples)
    ours_by_numerics: dict[str, list[np.ndarray]] = {}

    def ours_for(rt: str) -> list[np.ndarray]:
        num = NUMERICS_FOR.get(rt, "tflite")
        if num not in ours_by_numerics:
            ours_by_numerics[num] = run_qtc(graph, [x.copy() for x in xs], numerics=num)
        return ours_by_numerics[num]

    ours = ours_for("tflm")
    runners = {
        "litert_ref": lambda: run_litert(tflite_bytes, [x.copy() for x in xs], reference_kernels=True),
        "litert_builtin": lambda: run_litert(tflite_bytes, [x.copy() for x in xs], False, delegates=False),
        "litert_xnnpack": lambda: run_litert(tflite_bytes, [x.copy() for x in xs], False, delegates=True),
        "tflm": lambda: run_tflm(tflite_bytes, [x.copy() for x in xs]),
    }
    report: dict = {"samples": int(ours[0].shape[0]) if ours else 0, "outputs": list(graph.outputs),
                    "runtimes": {}, "notes": []}
    for rt in runtimes:
        if rt not in runners:
            raise QtcError(f"unknown runtime {rt!r}", where="compare_bitexact", hint=f"use some of {RUNTIMES}")
        try:
            theirs = runners[rt]()
        except QtcError as exc:
            report["runtimes"][rt] = {"error": exc.line()}
            continue
        mine = ours_for(rt)
        report["runtimes"][rt] = {name: _diff_stats(ref, mine[k]) for k, (name, ref) in
                                  enumerate(zip(graph.outputs, theirs))}
        report.setdefault("numerics", {})[rt] = NUMERICS_FOR.get(rt, "tflite")
    if graph.is_quantized and any(n.op == "FullyConnected" for n in graph.nodes) and "litert_ref" in runtimes:
        report["notes"].append(FC_NOTE)
    if "litert_xnnpack" in runtimes:
        report["notes"].append(XNN_NOTE)
    return report


# --------------------------------------------------------------------------- op by op
def _node_graph(graph, node):
    """A one-node graph sharing ``node``'s tensors (activations become its inputs)."""
    from ..ir.graph import Graph

    sub = Graph(name=node.name)
    for i in node.inputs:
        if i:
            sub.tensors[i] = graph.tensors[i]
    for o in node.outputs:
        sub.tensors[o] = graph.tensors[o]
    sub.nodes = [node]
    sub.inputs = list(dict.fromkeys(i for i in node.inputs if i and not graph.tensors[i].is_const))
    sub.outputs = list(node.outputs)
    return sub


def litert_ref_fully_connected(graph, node, x: np.ndarray) -> np.ndarray:
    """LiteRT BUILTIN_REF FULLY_CONNECTED on integers: y = round(acc * double(s_in*s_w/s_out)) + zp, clamped."""
    from ..interp.runner import get_numerics

    xt, wt, ot = graph.tensors[node.inputs[0]], graph.tensors[node.inputs[1]], graph.tensors[node.outputs[0]]
    bias = graph.tensors[node.inputs[2]].data if len(node.inputs) > 2 and node.inputs[2] else None
    iq, wq, oq = xt.quant, wt.quant, ot.quant
    w = wt.data.astype(np.int64) - (wq.zero_point.reshape(-1, 1) if wq.axis is None else 0)
    acc = (np.asarray(x, np.int64) - int(iq.zero_point[0])) @ w.T
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    eff = float(np.float32(iq.scale[0])) * wq.scale.astype(np.float64) / float(np.float32(oq.scale[0]))
    v = acc.astype(np.float64) * eff
    scaled = np.sign(v) * np.floor(np.abs(v) + 0.5)  # C round(): half away from zero
    info = np.iinfo(np.dtype(ot.dtype))
    lo, hi = get_numerics("tflite").quantized_activation_range(
        node.attrs.get("activation", "none"), float(oq.scale[0]), int(oq.zero_point[0]),
        max(int(info.min), oq.qmin), min(int(info.max), oq.qmax))
    return np.clip(scaled.astype(np.int64) + int(oq.zero_point[0]), lo, hi)


def compare_layerwise(graph, tflite_bytes: bytes, samples, model_litert_fc: bool = True) -> dict:
    """Op-by-op comparison with LiteRT BUILTIN_REF (needs a graph imported by ``load_tflite`` from these bytes).

    Every qtc node runs on LiteRT's own values of its input tensors, so each
    difference belongs to that op.  With ``model_litert_fc`` the int8/int16
    FullyConnected outputs are checked against LiteRT's double-precision
    requantization (:func:`litert_ref_fully_connected`) instead of qtc's.
    Returns ``{node name: {"op", "reference", "samples", "exact_samples", "max_lsb_diff",
    "qtc_max_lsb_diff"}}`` for every node whose output LiteRT exposes.
    """
    import hashlib

    from ..interp import run

    index = graph.metadata.get("tflite_tensor_index")
    if not index or graph.metadata.get("source_sha256") != hashlib.sha256(bytes(tflite_bytes)).hexdigest():
        raise QtcError("the graph was not imported from this .tflite file", where="compare_layerwise",
                       hint="import it with qtc.frontends.tflite.load_tflite(the same bytes)")
    it = _litert_interpreter(tflite_bytes, "ref", preserve=True)
    ind = it.get_input_details()
    xs = quantize_samples(graph, samples)
    n, xs = _split_samples(xs, [tuple(d["shape"]) for d in ind], [d["dtype"] for d in ind])
    subs = {node.name: _node_graph(graph, node) for node in graph.nodes}
    report: dict[str, dict] = {}
    for i in range(n):
        for d, x in zip(ind, xs):
            it.set_tensor(d["index"], _sample(x, i, tuple(d["shape"]), d["dtype"]))
        it.invoke()
        env = {nm: _sample(x, i, graph.tensors[nm].shape, graph.tensors[nm].dtype)
               for nm, x in zip(graph.inputs, xs)}
        for node in graph.nodes:
            sub = subs[node.name]
            ys = run(sub, {k: env[k] for k in sub.inputs})
            for o in node.outputs:
                if o not in index:
                    env[o] = ys[o]
                    continue
                theirs = np.asarray(it.get_tensor(index[o]))
                t = graph.tensors[o]
                fc = model_litert_fc and node.op == "FullyConnected" and t.quant is not None \
                    and np.issubdtype(np.dtype(t.dtype), np.integer)
                expect = litert_ref_fully_connected(graph, node, env[node.inputs[0]]) if fc else ys[o]
                r = report.setdefault(node.name, {"op": node.op, "reference": "litert_fc_model" if fc else "qtc",
                                                  "samples": 0, "exact_samples": 0, "max_lsb_diff": 0,
                                                  "qtc_max_lsb_diff": 0})
                diff = max_abs_diff(theirs, expect)
                r["samples"] += 1
                r["exact_samples"] += int(diff == 0)
                r["max_lsb_diff"] = max(r["max_lsb_diff"], diff)
                r["qtc_max_lsb_diff"] = max(r["qtc_max_lsb_diff"], max_abs_diff(theirs, ys[o]))
                env[o] = theirs.astype(t.dtype) if t.quant is not None else theirs
    return report


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max()) if a.size else 0
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


# --------------------------------------------------------------------------- text
def format_report(report: dict) -> str:
    """One line per runtime and output, for logs and test output."""
    lines = [f"bit-exact comparison over {report['samples']} samples"]
    for rt, per_out in report["runtimes"].items():
        if "error" in per_out:
            lines.append(f"  {rt}: {per_out['error']}")
            continue
        for name, s in per_out.items():
            if "shape_mismatch" in s:
                lines.append(f"  {rt} {name}: shape mismatch {s['shape_mismatch']}")
            else:
                diff = s.get("max_lsb_diff", s.get("max_abs_diff"))
                lines.append(f"  {rt} {name}: exact {s['exact_samples']}/{s['samples']} samples, "
                             f"{s['exact_elements']}/{s['elements']} elements, max diff {diff}")
    lines += [f"  note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)


def format_layerwise(report: dict) -> str:
    lines = []
    for name, r in report.items():
        flag = "" if r["max_lsb_diff"] == 0 else "  <-- differs"
        lines.append(f"  {name} ({r['op']}, vs {r['reference']}): exact {r['exact_samples']}/{r['samples']}, "
                     f"max {r['max_lsb_diff']} LSB (qtc {r['qtc_max_lsb_diff']}){flag}")
    return "\n".join(lines)
