"""ONNX front end: ``load_onnx(path_or_model, input_shapes=None, name=None) -> Graph``.

Opsets 11–21 of the default domain.  Activations stay channels-first
(``channels_last=False``); Conv weights are converted OIHW → OHWI (docs/ir.md).

Exporters wrap static shapes in ``Shape / Gather / Concat / Reshape`` chains.
Once every graph input has a static shape (``input_shapes`` fixes dynamic dims,
the CLI's ``--input-shape``), every node whose inputs are all known constants
is evaluated here with ONNX's reference implementation and disappears; only
the real computation reaches the IR.  Decomposed GELU / LayerNorm patterns
are fused first (:mod:`.onnx_patterns`); the per-op lowering lives in
:mod:`.onnx_ops`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError, ShapeError, UnsupportedOpError
from ..ir.graph import Graph
from ..ir.validate import validate
from ._builder import GraphBuilder, clean_name, to_ir_array
from .onnx_patterns import FUSED_DOMAIN, fuse_patterns

MIN_OPSET, MAX_OPSET = 11, 21

# never constant-folded: their meaning is more than their float value
_NO_FOLD = {"QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomUniform",
            "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
_ALIAS = {"Identity", "Dropout"}

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                10: "float16", 11: "float32"}


def load_onnx(path_or_model, input_shapes: dict[str, tuple] | None = None, name: str | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``) into the qtc IR."""
    model, src_file, digest = _read(path_or_model)
    where = Path(src_file).name if src_file else (model.graph.name or "onnx model")
    imp = _Importer(model, dict(input_shapes or {}), name, where)
    g = imp.run()
    g.metadata.update({
        "source_format": "onnx",
        "source_file": Path(src_file).name if src_file else None,
        "source_sha256": digest,
        "onnx_opset": imp.opset,
        "onnx_producer": f"{model.producer_name} {model.producer_version}".strip(),
    })
    validate(g)
    return g


# ------------------------------------------------------------------ reading
def _read(src):
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(src, onnx.ModelProto):
        data = src.SerializeToString()
        return src, None, hashlib.sha256(data).hexdigest()
    if isinstance(src, (bytes, bytearray)):
        data, path = bytes(src), None
    else:
        path = Path(os.fspath(src))
        if not path.is_file():
            raise ModelFormatError("file not found", where=str(path), hint="check the path to the .onnx file")
        data = path.read_bytes()
    where = str(path) if path else "onnx bytes"
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"not a valid ONNX model; the file is truncated or corrupt ({exc})", where=where,
                               hint="re-export the model (torch.onnx.export / tf2onnx) and copy it again") from None
    if not model.HasField("graph") or len(model.graph.node) == 0 or len(model.graph.output) == 0:
        raise ModelFormatError("not a valid ONNX model (no graph, nodes or outputs); the file is truncated or corrupt",
                               where=where, hint="re-export the model and copy it again")
    if path is not None and _uses_external_data(model):
        from onnx.external_data_helper import load_external_data_for_model
        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"cannot read the model's external weight data ({exc})", where=where,
                                   hint="keep the .onnx file next to its external data files") from None
    _check_structure(model, where)
    return model, path, hashlib.sha256(data).hexdigest()


def _uses_external_data(model) -> bool:
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def _check_structure(model, where: str) -> None:
    """Every referenced tensor must be produced somewhere: catches truncated files."""
    g = model.graph
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    for n in g.node:
        for x in n.input:
            if x not in known:
                raise ModelFormatError(f"node {n.name or n.op_type!r} reads {x!r}, which nothing produces "
                                       "(the file is truncated or corrupt, or nodes are out of order)",
                                       where=where, hint="re-export the model; run onnx.checker.check_model on it")
        known.update(n.output)
    missing = [o.name for o in g.output if o.name not in known]
    if missing:
        raise ModelFormatError(f"graph output(s) {missing[:3]} are never produced (truncated or corrupt file)",
                               where=where, hint="re-export the model and copy it again")


# ---------------------------------------------------------------- importing
class _Importer:
    def __init__(self, model, input_shapes: dict, name: str | None, where: str):
        self.model = model
        self.where = where
        self.opset = _default_opset(model, where)
        gname = clean_name(name or model.graph.name or "model", "model")
        self.b = GraphBuilder(gname, where)
        self.input_shapes = input_shapes
        self.vals: dict[str, tuple[str, object]] = {}  # onnx name → ("c", array) | ("t", ir name)
        self.const_ir: dict[str, str] = {}
        g = model.graph
        self.reserved = {clean_name(x) for x in [*(i.name for i in g.input), *(o.name for o in g.output),
                                                 *(o for n in g.node for o in n.output)]}

    # -------------------------------------------------------------- values
    def c(self, name: str):
        """Constant value of ``name`` (numpy) or None if it is computed at run time."""
        if not name:
            return None
        kind, v = self.vals[name]
        return v if kind == "c" else None

    def is_const(self, name: str) -> bool:
        return bool(name) and self.vals[name][0] == "c"

    def t(self, name: str) -> str:
        """The IR tensor for ``name``; constants become IR constant tensors on first use."""
        if not name:
            return ""
        kind, v = self.vals[name]
        if kind == "t":
            return v
        if name not in self.const_ir:
            self.const_ir[name] = self.b.const(name, v)
        return self.const_ir[name]

    def bind(self, onnx_name: str, ir_name: str) -> None:
        self.vals[onnx_name] = ("t", ir_name)

    def bind_const(self, onnx_name: str, value) -> None:
        self.vals[onnx_name] = ("c", np.asarray(value))

    def shape(self, name: str) -> tuple[int, ...]:
        kind, v = self.vals[name]
        return tuple(np.shape(v)) if kind == "c" else self.b.shape(v)

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def node_where(self, node) -> str:
        return f"{self.where}: node {node.name or node.output[0]!r} ({node.op_type})"

    def need_const(self, node, idx: int, what: str):
        name = node.input[idx] if idx < len(node.input) else ""
        v = self.c(name)
        if v is None:
            raise ShapeError(f"{what} ({name!r}) is computed at run time; qtc needs it to be a constant",
                             where=self.node_where(node),
                             hint="fix the input shapes with --input-shape name=1,3,224,224 so shape subgraphs "
                                  "fold, or re-export with static shapes")
        return v

    def emit(self, op: str, inputs: list[str], node, out: int | None = 0, suffix: str = "", **attrs) -> str:
        """Add an IR node; ``out`` = index of the ONNX output it defines (None: intermediate)."""
        base = node.name or (node.output[0] if node.output else node.op_type)
        if out is not None:
            outputs = [node.output[out]]
        else:  # an intermediate never takes a name the ONNX graph uses elsewhere
            stem = clean_name(f"{node.output[0] if node.output else base}{suffix or '_' + op.lower()}")
            name, i = stem, 1
            while name in self.reserved or name in self.b.g.tensors:
                name, i = f"{stem}_{i}", i + 1
            outputs = [name]
        ir = self.b.node1(op, inputs, f"{base}{suffix}", outputs=outputs, src=self.node_where(node), **attrs)
        if out is not None:
            self.bind(node.output[out], ir)
        return ir

    # ----------------------------------------------------------------- run
    def run(self) -> Graph:
        from onnx import numpy_helper

        g = self.model.graph
        for init in g.initializer:
            self.bind_const(init.name, numpy_helper.to_array(init))
        inits = {t.name for t in g.initializer}
        real_inputs = [i for i in g.input if i.name not in inits]
        unknown = sorted(set(self.input_shapes) - {i.name for i in real_inputs})
        if unknown:
            raise ShapeError(f"--input-shape names {unknown}, which is not a model input", where=self.where,
                             hint=f"the model's inputs are {[i.name for i in real_inputs]}")
        for inp in real_inputs:
            self._add_input(inp)
        nodes = list(g.node)
        for n in nodes:  # evaluate Constant nodes early so patterns can see their values
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                self._fold(n)
        consts = {k: v for k, (kind, v) in self.vals.items() if kind == "c"}
        nodes = fuse_patterns(nodes, consts, {o.name for o in g.output})
        for n in nodes:
            if n.op_type == "Constant" and n.output[0] in self.vals:
                continue
            self._visit(n)
        outputs = []
        for o in g.output:
            ir = self.t(o.name)
            outputs.append(ir)
        gr = self.b.finish(outputs)
        _rename_outputs(gr, [o.name for o in g.output])
        return gr

    def _add_input(self, inp) -> None:
        tt = inp.type.tensor_type
        dtype = _ONNX_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise UnsupportedOpError(f"input {inp.name!r} has ONNX element type {tt.elem_type}, which qtc "
                                     "does not take", where=self.where, hint="export the model with float32 inputs")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                for d in tt.shape.dim]
        given = self.input_shapes.get(inp.name)
        if given is not None:
            given = tuple(int(d) for d in given)
            ok = len(given) == len(dims) and all(isinstance(d, str) or d == s for d, s in zip(dims, given))
            if not ok or any(s <= 0 for s in given):
                raise ShapeError(f"--input-shape {inp.name}={','.join(map(str, given))} does not fit the model's "
                                 f"input shape {dims}", where=self.where,
                                 hint=f"give {len(dims)} positive dims that agree with the static ones")
            shape = given
        else:
            if any(isinstance(d, str) for d in dims):
                example = ",".join(str(d) if not isinstance(d, str) else "1" for d in dims)
                raise ShapeError(f"input {inp.name!r} has dynamic dims {dims}; qtc needs static shapes",
                                 where=self.where,
                                 hint=f"pass --input-shape {inp.name}={example} "
                                      f"(input_shapes={{'{inp.name}': ({example},)}})")
            shape = tuple(dims)
        if dtype == "float16":
            dtype = "float32"
        self.bind(inp.name, self.b.input(inp.name, shape, dtype))

    def _visit(self, node) -> None:
        from . import onnx_ops

        dom = node.domain or ""
        if dom == FUSED_DOMAIN:
            onnx_ops.FUSED[node.op_type](self, node)
            return
        if dom not in ("", "ai.onnx"):
            raise UnsupportedOpError(f"custom-domain op {dom}::{node.op_type} is not supported",
                                     where=self.node_where(node),
                                     hint="export with standard ONNX ops only (no custom/contrib ops)")
        op = node.op_type
        if op in _ALIAS:
            self.vals[node.output[0]] = self.vals[node.input[0]]
            return
        if op in ("Shape", "Size") and node.input[0] and not self.is_const(node.input[0]):
            self._shape_of(node)
            return
        if op not in _NO_FOLD and all(self.is_const(i) for i in node.input if i) and self._fold(node):
            return
        handler = onnx_ops.HANDLERS.get(op)
        if handler is None:
            raise UnsupportedOpError(f"ONNX op {op} is not supported", where=self.node_where(node),
                                     hint="qtc imports: " + ", ".join(sorted(onnx_ops.HANDLERS)) +
                                          "; replace the op in the model or export without it")
        handler(self, node)

    def _shape_of(self, node) -> None:
        shape = np.asarray(self.shape(node.input[0]), dtype=np.int64)
        if node.op_type == "Size":
            self.bind_const(node.output[0], np.asarray(int(np.prod(shape)), dtype=np.int64))
            return
        at = attrs(node)
        r = len(shape)
        start, end = int(at.get("start", 0)), int(at.get("end", r))
        start = min(max(start + r if start < 0 else start, 0), r)
        end = min(max(end + r if end < 0 else end, 0), r)
        self.bind_const(node.output[0], shape[start:end])

    def _fold(self, node) -> bool:
        """Evaluate a node whose inputs are all constants; False if the reference evaluator cannot."""
        from onnx.reference import ReferenceEvaluator

        feeds = {i: self.c(i) for i in node.input if i}
        try:
            ref = ReferenceEvaluator(node, opsets={"": self.opset})
            outs = ref.run(None, feeds)
        except Exception:  # noqa: BLE001 - the evaluator cannot: lower the op instead
            return False
        for name, v in zip(node.output, outs):
            if name:
                self.bind_const(name, to_ir_array(v) if isinstance(v, np.ndarray) else np.asarray(v))
        return True


def attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode("utf-8") for x in v]
        out[a.name] = v
    return out


def _default_opset(model, where: str) -> int:
    ops = {(o.domain or ""): o.version for o in model.opset_import}
    v = ops.get("", ops.get("ai.onnx"))
    if v is None:
        raise ModelFormatError("model declares no default-domain opset", where=where,
                               hint="re-export the model with a standard ONNX opset (11-21)")
    if not MIN_OPSET <= v <= MAX_OPSET:
        raise UnsupportedOpError(f"ONNX opset {v} is outside the supported range {MIN_OPSET}-{MAX_OPSET}",
                                 where=where, hint="re-export with opset_version=17 (or convert with "
                                                   "onnx.version_converter)")
    return int(v)


def _rename_outputs(g: Graph, wanted: list[str]) -> None:
    """Give graph outputs their ONNX names when an Identity/Dropout made them aliases."""
    producers = g.producers()
    for i, (cur, want) in enumerate(zip(list(g.outputs), wanted)):
        want = clean_name(want)
        if cur == want or want in g.tensors or cur not in producers or cur in g.inputs:
            continue
        if g.outputs.count(cur) > 1:
            continue
        t = g.tensors.pop(cur)
        t.name = want
        g.tensors[want] = t
        for n in g.nodes:
            n.inputs = [want if x == cur else x for x in n.inputs]
            n.outputs = [want if x == cur else x for x in n.outputs]
        g.outputs[i] = want


__all__ = ["load_onnx"]
