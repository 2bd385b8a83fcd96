"""The C back end's driver: quantized IR graph → a folder of C99 sources.

``compile_c(graph, out_dir, model_name=...)`` writes

* ``qtc_<model>.c`` / ``qtc_<model>.h``: const weights, folded biases and
  multipliers, one ``qtc_<model>_invoke(in, out)`` calling the kernels in
  node order over a static arena whose offsets were planned at compile time,
  and one scratch buffer (padded input rows of the conv layers that need them);
* ``qtc_model.h``: generic ``QTC_MODEL_*`` names, so one bench firmware
  serves every model;
* ``qtc_kernels.h``, ``qtc_kernels_conv.h`` + ``qtc_kernels_*.c``: copies of
  ``firmware/kernels`` (the conv/FC kernels are inline, specialised per layer);
* ``qtc_model_testvec.h`` (with ``test_inputs``): inputs and the int8 outputs
  of the reference interpreter for them.

Everything is written to a temp folder and renamed into place, so a failure
(e.g. an op with no C kernel) leaves nothing behind.  Same graph → same bytes.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from ...atomic import atomic_dir
from ...errors import QtcError, UnsupportedOpError
from ...interp.runner import get_numerics
from ...ir.graph import Graph
from ...ops.registry import get_op, has_op
from .cdata import CArray, c_float, c_ident, comment_text
from .lowering import Lowered, NodeCtx, load_lowerings
from .memplan import MemoryPlan, plan_memory



def resource_root() -> Path:
    """The folder holding ``templates/c`` and ``firmware/kernels`` (the repo root)."""
    env = os.environ.get("QTC_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[4]
    if not (root / "templates" / "c").is_dir() or not (root / "firmware" / "kernels").is_dir():
        raise QtcError(f"C back end resources not found under {root}", where="C back end",
                       hint="run qtc from its source checkout, or set QTC_ROOT to it")
    return root


def kernel_files() -> list[Path]:
    d = resource_root() / "firmware" / "kernels"
    return sorted([*d.glob("qtc_kernels*.h"), *d.glob("qtc_kernels*.c")], key=lambda p: p.name)


# ---------------------------------------------------------------------- checks
def _check_graph(g: Graph) -> None:
    from ...ir.validate import validate

    validate(g)
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise QtcError(f"graph has {len(g.inputs)} inputs and {len(g.outputs)} outputs; the C back end "
                       "takes exactly one of each for now", where=f"graph {g.name}",
                       hint="split the model, or compile it with the tflite back end")
    for role, name in (("input", g.inputs[0]), ("output", g.outputs[0])):
        t = g.tensors[name]
        if t.dtype != "int8" or t.quant is None:
            raise QtcError(f"graph {role} {name!r} is {t.dtype}{'' if t.quant else ' (not quantized)'}; "
                           "the C back end needs int8 I/O", where=f"graph {g.name}",
                           hint="quantize with int8 inputs/outputs (inference_input_type=int8)")
        if t.quant.scale.size != 1:
            raise QtcError(f"graph {role} {name!r} is quantized per channel", where=f"graph {g.name}",
                           hint="use per-tensor quantization for activations")


def _lower_all(g: Graph, num, esp_nn: bool) -> list[tuple[NodeCtx, Lowered]]:
    table = load_lowerings()
    out = []
    for i, node in enumerate(g.nodes):
        where = f"node {node.name} ({node.op})"
        if not has_op(node.op):
            raise UnsupportedOpError(f"op {node.op} is not a qtc op", where=where)
        fn = table.get(node.op)
        if fn is None:
            raise UnsupportedOpError(f"op {node.op} has no C kernel", where=where,
                                     hint=f"C kernels exist for: {', '.join(sorted(table))}")
        for o in node.outputs:
            t = g.tensors[o]
            if t.quant is None or t.dtype != "int8":
                raise UnsupportedOpError(f"output {o!r} is {t.dtype}{'' if t.quant else ' (not quantized)'}; "
                                         "the C back end runs int8 graphs", where=where,
                                         hint="quantize the whole graph to int8 first ('qtc quantize')")
        ctx = NodeCtx(g, node, i, num, esp_nn)
        try:
            low = fn(ctx)
        except QtcError:
            raise
        except Exception as exc:  # noqa: BLE001 - name the node in every failure
            raise QtcError(f"{type(exc).__name__}: {exc}", where=where, hint="check the node with 'qtc show'") from exc
        out.append((ctx, low))
    return out


# ------------------------------------------------------------------ planning
def _plan(g: Graph, lowered: list[tuple[NodeCtx, Lowered]]) -> tuple[MemoryPlan, dict[str, str]]:
    """Memory plan over activations; returns it and tensor → const-array name for const operands."""
    sizes: dict[str, int] = {}
    const_alias: dict[str, str] = {}
    for name in g.inputs:
        sizes[name] = g.tensors[name].nbytes
    steps, aliases, inplace = [], [], {}
    for i, (ctx, low) in enumerate(lowered):
        node = ctx.node
        ins = [t for t in node.inputs if t and not g.tensors[t].is_const and t not in const_alias]
        outs = list(node.outputs)
        if low.alias_of is not None:
            src = node.inputs[low.alias_of]
            if g.tensors[src].is_const or src in const_alias:
                const_alias[outs[0]] = const_alias.get(src, src)
                steps.append(([], []))
                continue
            aliases.append((src, outs[0]))
        for o in outs:
            sizes[o] = g.tensors[o].nbytes
        steps.append((ins, outs))
        if low.inplace:
            inplace[i] = [(node.inputs[a], node.outputs[b]) for a, b in low.inplace]
    if g.outputs[0] in const_alias:
        raise QtcError("the graph output is a constant", where=f"graph {g.name}")
    plan = plan_memory(steps, sizes, list(g.inputs), list(g.outputs), aliases, inplace)
    return plan, const_alias


def _pointer(plan: MemoryPlan, tensor: str) -> str:
    b = plan.buffer_of(tensor)
    if b.storage == "input":
        return "in"
    if b.storage == "output":
        return "out"
    return "arena" if b.offset == 0 else f"arena + {b.offset}"


_TOKEN = re.compile(r"\$([XY])(\d+)")


def _substitute(lines: list[str], node, ptr, scratch: str = "NULL") -> list[str]:
    def rep(m):
        names = node.inputs if m.group(1) == "X" else node.outputs
        return ptr(names[int(m.group(2))])

    return [_TOKEN.sub(rep, line).replace("$S", scratch) for line in lines]


# -------------------------------------------------------------------- public
def compile_c(graph: Graph, out_dir: str | os.PathLike, *, model_name: str,
              test_inputs: list[np.ndarray] | None = None, esp_nn: bool = False,
              numerics: str = "tflite") -> dict:
    """Compile a quantized graph to C in ``out_dir``; returns paths and the memory plan.

    Raises :class:`QtcError` (nothing written) for an op with no C kernel, float
    or multi-tensor I/O, or an invalid graph.
    """
    import jinja2

    g = graph
    model = c_ident(model_name)
    _check_graph(g)
    num = get_numerics(numerics)
    lowered = _lower_all(g, num, esp_nn)
    plan, const_alias = _plan(g, lowered)

    # const operands referenced as activations (e.g. Add with a constant) become arrays too
    const_arrays: dict[str, CArray] = {}

    def ptr(name: str) -> str:
        name = const_alias.get(name, name)
        t = g.tensors[name]
        if t.is_const:
            if t.dtype != "int8":
                raise QtcError(f"constant operand {name!r} is {t.dtype}", where="C back end",
                               hint="constant activation operands must be int8")
            if name not in const_arrays:
                const_arrays[name] = CArray(f"k{len(const_arrays)}", "int8_t", t.data.astype(np.int64),
                                            f"constant {name} {list(t.shape)}")
            return const_arrays[name].name
        return _pointer(plan, name)

    nodes, arrays, structs, macs, scratch_bytes = [], [], [], 0, 0
    esp_nn_scratch = 0
    for ctx, low in lowered:
        node = ctx.node
        ins = [g.tensors[i] if i else None for i in node.inputs]
        outs = [g.tensors[o] for o in node.outputs]
        macs += int(get_op(node.op).macs(node, ins, outs))
        shapes = " ".join(str(list(t.shape)) for t in ins if t is not None and not t.is_const)
        comment = comment_text(f"{ctx.prefix}: {node.name} ({node.op}) {shapes} -> {list(outs[0].shape)}")
        if low.alias_of is not None:
            nodes.append({"comment": comment + " : alias, no code", "code": [], "esp_nn_code": None,
                          "index": ctx.index})
            continue
        scratch = f"qtc_{model}_scratch" if low.scratch else "NULL"
        scratch_bytes = max(scratch_bytes, low.scratch)
        code = _substitute(low.code, node, ptr, scratch)
        esp_code = _substitute(low.esp_nn_code, node, ptr, scratch) if (esp_nn and low.esp_nn_code) else None
        nodes.append({"comment": comment, "code": code, "esp_nn_code": esp_code, "index": ctx.index})
        arrays.extend(ctx.arrays)
        structs.extend(ctx.structs)
        if low.needs_esp_nn_scratch and esp_code:
            esp_nn_scratch = max(esp_nn_scratch, _esp_nn_scratch_bound(ctx))
    arrays = list(const_arrays.values()) + arrays
    weight_bytes = sum(a.nbytes for a in arrays if a.guard != "QTC_USE_ESP_NN")

    x, y = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    io = {"input": {**_io_info(x), **_per_feature_info(g, g.inputs[0])}, "output": _io_info(y)}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_root() / "templates" / "c")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    ctx_vars = dict(model=model, MODEL=model.upper(), graph_name=comment_text(g.name), nodes=nodes,
                    arrays=[_render_array(a) for a in arrays], structs=structs, macs=macs,
                    weight_bytes=weight_bytes, arena_bytes=plan.arena_bytes, plan_rows=_plan_rows(plan),
                    scratch_bytes=scratch_bytes,
                    copy_io=plan.copy_input_to_output, esp_nn=esp_nn, esp_nn_scratch=esp_nn_scratch, **io)
    files = {
        f"qtc_{model}.c": env.get_template("model.c.j2").render(**ctx_vars),
        f"qtc_{model}.h": env.get_template("model.h.j2").render(**ctx_vars),
        "qtc_model.h": env.get_template("qtc_model.h.j2").render(**ctx_vars),
    }
    if test_inputs is not None:
        files["qtc_model_testvec.h"] = _testvec(env, g, model, test_inputs, numerics)

    out_dir = Path(out_dir)
    kernels = kernel_files()
    with atomic_dir(out_dir) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)
        for k in kernels:
            shutil.copyfile(k, tmp / k.name)
    sources = [out_dir / f"qtc_{model}.c"] + [out_dir / k.name for k in kernels if k.suffix == ".c"]
    return {
        "dir": str(out_dir),
        "model": model,
        "model_c": str(out_dir / f"qtc_{model}.c"),
        "model_h": str(out_dir / f"qtc_{model}.h"),
        "model_alias_h": str(out_dir / "qtc_model.h"),
        "testvec_h": str(out_dir / "qtc_model_testvec.h") if test_inputs is not None else None,
        "kernel_files": [str(out_dir / k.name) for k in kernels],
        "sources": [str(s) for s in sources],
        "arena_bytes": plan.arena_bytes,
        "scratch_bytes": scratch_bytes,
        "weight_bytes": weight_bytes,
        "macs": macs,
        "esp_nn": esp_nn,
        "esp_nn_scratch_bytes": esp_nn_scratch,
        "input_bytes": io["input"]["bytes"],
        "output_bytes": io["output"]["bytes"],
        "plan": plan.summary(),
    }


def _io_info(t) -> dict:
    return {"name": comment_text(t.name), "shape": list(t.shape), "rank": len(t.shape),
            "shape_c": "{" + ", ".join(str(d) for d in t.shape) + "}", "bytes": t.nbytes,
            "scale": c_float(t.quant.scale[0]), "zero_point": int(t.quant.zero_point[0])}


def _per_feature_info(g: Graph, name: str) -> dict:
    """The per-feature params the user quantizes input ``name`` with (:mod:`qtc.ir.boundary`), if any."""
    from ...ir.boundary import input_params, per_feature

    if not per_feature(g, name):
        return {}
    q = input_params(g, name)
    return {"features": int(q.scale.size),
            "feature_scales": "{" + ", ".join(c_float(v) for v in q.scale) + "}",
            "feature_zero_points": "{" + ", ".join(str(int(v)) for v in q.zero_point) + "}"}


def _render_array(a: CArray) -> str:
    text = a.render()
    if a.guard is None:
        return text
    if a.guard.startswith("!"):
        return f"#ifndef {a.guard[1:]}\n{text}\n#endif"
    return f"#ifdef {a.guard}\n{text}\n#endif"


def _plan_rows(plan: MemoryPlan) -> list[str]:
    rows = []
    order = sorted(plan.buffers, key=lambda b: ({"input": 0, "arena": 1, "output": 2}[b.storage], b.offset, b.id))
    for b in order:
        where = {"input": "in", "output": "out"}.get(b.storage, str(b.offset))
        live = f"{b.first}..{b.last}"
        names = comment_text(", ".join(b.tensors))
        rows.append(f"{where:<8}{b.size:>7}  {live:<10} {names}")
    return rows


def _esp_nn_scratch_bound(ctx: NodeCtx) -> int:
    """esp-nn's esp32s3 conv scratch rule: 2 * (filter + input + 8 * in_ch) + 32, plus slack."""
    x, w = ctx.tin(0), ctx.tin(1)
    in_size = int(np.prod(x.shape[1:]))
    in_c = x.shape[-1]
    return 2 * (int(w.size) + in_size + 16 * in_c) + 64


def _testvec(env, g: Graph, model: str, inputs: list[np.ndarray], numerics: str) -> str:
    from ...interp import run

    x, y = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    ins, outs = [], []
    for k, v in enumerate(inputs):
        v = np.asarray(v)
        if v.size != x.size or not np.issubdtype(v.dtype, np.integer) or v.min() < -128 or v.max() > 127:
            raise QtcError(f"test input {k} has {v.size} {v.dtype} values, the model takes {x.size} int8",
                           where="C back end", hint=f"pass int8 arrays of shape {list(x.shape)}")
        v = v.astype(np.int8).reshape(x.shape)
        r = run(g, {g.inputs[0]: v}, numerics=numerics)[g.outputs[0]]
        ins.append(_c_bytes(v))
        outs.append(_c_bytes(np.asarray(r).astype(np.int8)))
    return env.get_template("testvec.h.j2").render(model=model, count=len(inputs), inputs=ins, outputs=outs,
                                                   numerics=numerics)


def _c_bytes(v: np.ndarray) -> str:
    vals = [str(int(e)) for e in v.reshape(-1)]
    return "\n".join("        " + ", ".join(vals[i:i + 16]) + "," for i in range(0, len(vals), 16))
