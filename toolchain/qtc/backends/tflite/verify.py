"""``qtc verify``: a .tflite file against the qtc graph it was compiled from, bit for bit.

The same samples run through

* LiteRT with its reference kernels (``BUILTIN_REF``) — must equal qtc's
  interpreter under the ``litert_ref`` numerics (LiteRT's reference
  FULLY_CONNECTED rescales in double);
* TFLM (``tflite_micro.runtime``) — must equal qtc's default ``tflite``
  numerics, the ones devices use;
* LiteRT's default kernels with XNNPACK — recorded, never required (it
  rounds differently by design).

Any difference on LiteRT-ref or TFLM fails, naming the op that produced the
output, except a LiteRT-ref difference that starts at an op whose LiteRT
reference kernel is known to be wrong (:data:`KNOWN_LITERT_REF_BUGS`) while TFLM
is exact: that is reported as a known deviation.  With ``per_layer`` the first op whose output differs is found by
running the runtime with every tensor preserved (TFLM ``kPreserveAllTensors``,
LiteRT ``experimental_preserve_all_tensors``) and comparing each tensor with
the interpreter's, matched by name (the writer keeps IR tensor names).
"""
from __future__ import annotations

import numpy as np

from ...errors import QtcError
from ...eval.runtimes import NUMERICS_FOR, compare_bitexact, max_abs_diff, quantize_samples
from ...frontends.tflite import schema
from ...ir.graph import Graph
from .prepare import INT_ACT, prepare

REQUIRED = ("litert_ref", "tflm")
RECORDED = ("litert_xnnpack",)
# LiteRT BUILTIN_REF kernels measured to be wrong (TFLM and qtc agree with each other and the float op)
KNOWN_LITERT_REF_BUGS = {
    "ReduceSum": "LiteRT's reference SUM int8 kernel returns values off by up to ~250 LSB (ai-edge-litert 2.3.0); "
                 "TFLM runs it exactly",
}


def tensor_index(data: bytes) -> dict[str, int]:
    """TFLite tensor name → index in the main subgraph."""
    sg = schema().Model.GetRootAs(data, 0).Subgraphs(0)
    return {sg.Tensors(i).Name().decode("utf-8", "replace"): i for i in range(sg.TensorsLength())}


def _float_inputs(data: bytes) -> bool:
    fbs = schema()
    sg = fbs.Model.GetRootAs(data, 0).Subgraphs(0)
    return any(sg.Tensors(sg.Inputs(i)).Type() == fbs.TensorType.FLOAT32 for i in range(sg.InputsLength()))


def reference_graph(graph: Graph, data: bytes) -> Graph:
    """The graph as the writer lowered it for this file (channels-last; float I/O if the file has it)."""
    int_io = any(graph.tensors[n].dtype in INT_ACT and graph.tensors[n].quant is not None
                 for n in [*graph.inputs, *graph.outputs])
    return prepare(graph, "float32" if int_io and _float_inputs(data) else "int8")


def verify(data: bytes, graph: Graph, samples, *, per_layer: bool = False,
           runtimes=REQUIRED + RECORDED, max_layer_samples: int = 8) -> dict:
    """Run ``samples`` (one array per input, samples on axis 0) through the runtimes and qtc.

    Returns the :func:`~qtc.eval.runtimes.compare_bitexact` report plus ``ok``,
    ``failures`` (runtime, output, producing op, max diff) and, with
    ``per_layer``, ``first_diff`` per failing runtime.
    """
    data = bytes(data)
    g = reference_graph(graph, data)
    report = compare_bitexact(g, data, samples, runtimes=runtimes)
    producers = g.producers()
    failures = []
    for rt in [r for r in REQUIRED if r in runtimes]:
        per = report["runtimes"][rt]
        if "error" in per:
            failures.append({"runtime": rt, "error": per["error"]})
            continue
        for out, s in per.items():
            if "shape_mismatch" in s or s["exact_samples"] != s["samples"]:
                node = producers.get(out)
                failures.append({"runtime": rt, "output": out, "node": node.name if node else None,
                                 "op": node.op if node else None,
                                 "max_diff": s.get("max_lsb_diff", s.get("max_abs_diff")),
                                 "exact": f"{s.get('exact_samples')}/{s.get('samples')}"})
    report["known_deviations"] = _known_deviations(g, data, samples, failures, max_layer_samples)
    failures = [f for f in failures if not any(f is k["failure"] for k in report["known_deviations"])]
    for k in report["known_deviations"]:
        k.pop("failure")
    report["ok"] = not failures
    report["failures"] = failures
    if per_layer:
        report["first_diff"] = {}
        for rt in [r for r in REQUIRED if r in runtimes]:
            if "error" not in report["runtimes"][rt]:
                report["first_diff"][rt] = first_difference(g, data, samples, rt, max_layer_samples)
    return report


def _known_deviations(g: Graph, data: bytes, samples, failures: list[dict], max_samples: int) -> list[dict]:
    """LiteRT-ref differences whose first differing op is a known LiteRT reference-kernel bug, when TFLM is exact."""
    ref = [f for f in failures if f["runtime"] == "litert_ref" and "error" not in f]
    if not ref or any(f["runtime"] == "tflm" for f in failures):
        return []
    first = first_difference(g, data, samples, "litert_ref", max_samples)
    if first is None or first["op"] not in KNOWN_LITERT_REF_BUGS:
        return []
    return [{"runtime": "litert_ref", "output": f["output"], "first_op": first["node"], "op": first["op"],
             "why": KNOWN_LITERT_REF_BUGS[first["op"]], "failure": f} for f in ref]


# ------------------------------------------------------------------------ per layer
class _Preserved:
    """A runtime that keeps every tensor, fed one sample at a time."""

    def __init__(self, data: bytes, runtime: str):
        self.runtime = runtime
        if runtime == "tflm":
            from tflite_micro import runtime as tflm

            arena = 16 * len(data) + (8 << 20)
            try:
                self.it = tflm.Interpreter.from_bytes(data, arena_size=arena,
                                                      intrepreter_config=tflm.InterpreterConfig.kPreserveAllTensors)
            except (RuntimeError, ValueError) as exc:
                raise QtcError(f"TFLM cannot load the model with all tensors preserved: {exc}",
                               where="verify --per-layer", hint="run without --per-layer") from None
        else:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            kind = OpResolverType.BUILTIN_REF if runtime == "litert_ref" else OpResolverType.AUTO
            self.it = Interpreter(model_content=data, experimental_op_resolver_type=kind, num_threads=1,
                                  experimental_preserve_all_tensors=True)
            self.it.allocate_tensors()

    def run(self, xs: list[np.ndarray]) -> None:
        if self.runtime == "tflm":
            for k, x in enumerate(xs):
                self.it.set_input(x, k)
        else:
            for d, x in zip(self.it.get_input_details(), xs):
                self.it.set_tensor(d["index"], x)
        self.it.invoke()

    def get(self, index: int) -> np.ndarray:
        if self.runtime == "tflm":
            t = self.it.GetTensor(index, 0)  # {"dtype", "shape", "tensor_data"}
            return np.array(t["tensor_data"] if isinstance(t, dict) else t)
        return np.array(self.it.get_tensor(index))


def first_difference(g: Graph, data: bytes, samples, runtime: str, max_samples: int = 8) -> dict | None:
    """The first node (in graph order) whose output differs from the runtime's, over the first samples.

    Returns ``{"node", "op", "tensor", "sample", "max_diff", "equal_before"}``
    (tensors compared equal before it) or None when every compared tensor is equal.
    """
    from ...interp import run

    index = tensor_index(data)
    rt = _Preserved(data, runtime)
    xs = quantize_samples(g, samples if isinstance(samples, (list, tuple)) else [samples])
    shapes = [g.tensors[n].shape for n in g.inputs]
    n = min(int(xs[0].shape[0]), max_samples)  # samples on axis 0, each reshaped to the input's shape
    numerics = NUMERICS_FOR.get(runtime, "tflite")
    compared = 0
    for i in range(n):
        feeds = [np.ascontiguousarray(x[i].reshape(s).astype(g.tensors[name].dtype))
                 for x, s, name in zip(xs, shapes, g.inputs)]
        rt.run(feeds)
        env = run(g, dict(zip(g.inputs, feeds)), numerics=numerics, keep=True)
        for node in g.nodes:
            for o in node.outputs:
                if o not in index or o not in env:
                    continue
                ours, theirs = np.asarray(env[o]), rt.get(index[o])
                if ours.shape != theirs.shape:
                    raise QtcError(f"tensor {o!r} has shape {theirs.shape} in the .tflite file, {ours.shape} in the "
                                   "graph", where="verify --per-layer",
                                   hint="verify a file against the graph it was compiled from")
                compared += 1
                diff = max_abs_diff(ours, theirs)
                if diff:
                    return {"node": node.name, "op": node.op, "tensor": o, "sample": i, "max_diff": diff,
                            "equal_before": compared - 1}
    return None


def format_verify(report: dict) -> str:
    lines = [f"verify over {report['samples']} samples"]
    for rt, per in report["runtimes"].items():
        role = "must match" if rt in REQUIRED else "recorded"
        if "error" in per:
            lines.append(f"  {rt:<15} ({role}): {per['error']}")
            continue
        for out, s in per.items():
            if "shape_mismatch" in s:
                lines.append(f"  {rt:<15} ({role}) {out}: shape mismatch {s['shape_mismatch']}")
                continue
            diff = s.get("max_lsb_diff", s.get("max_abs_diff"))
            unit = " LSB" if "max_lsb_diff" in s else ""
            lines.append(f"  {rt:<15} ({role}) {out}: exact {s['exact_samples']}/{s['samples']} samples, "
                         f"{s['exact_elements']}/{s['elements']} elements, max |diff| {diff}{unit}")
    for f in report["failures"]:
        if "error" in f:
            lines.append(f"FAIL {f['runtime']}: {f['error']}")
        else:
            lines.append(f"FAIL {f['runtime']}: output {f['output']!r} (from node {f['node']} ({f['op']})) differs: "
                         f"{f['exact']} samples exact, max |diff| {f['max_diff']}")
    for k in report.get("known_deviations", []):
        lines.append(f"KNOWN {k['runtime']}: output {k['output']!r} differs from node {k['first_op']} ({k['op']}) on: "
                     f"{k['why']} (ops after it are checked on TFLM only)")
    for rt, d in (report.get("first_diff") or {}).items():
        if d is None:
            lines.append(f"  per-layer {rt}: every compared tensor is equal")
        else:
            lines.append(f"  per-layer {rt}: first difference at node {d['node']} ({d['op']}), tensor {d['tensor']!r}, "
                         f"sample {d['sample']}: max |diff| {d['max_diff']} (after {d['equal_before']} equal tensors)")
    lines.append("OK: LiteRT reference kernels and TFLM match qtc bit for bit" if report["ok"] else
                 "FAILED: the integer numerics differ")
    return "\n".join(lines)
