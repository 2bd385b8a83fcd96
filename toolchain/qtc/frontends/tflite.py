"""TFLite front end: a .tflite flatbuffer (float or already quantized) → qtc IR.

The flatbuffer is parsed with the generated schema module a TFLite runtime
package ships (``ai_edge_litert``, else ``tflite_micro``, else
``tensorflow.lite``): no hand-rolled byte parsing.

What is imported exactly as stored:

* quant params: float32 scales, int64 zero points, ``quantized_dimension`` as
  the per-channel axis (per-tensor when there is a single scale);
* int8 / int16 activations, int8 (and packed int4) weights, int32 biases.

Layout: TFLite activations are NHWC, so layout-sensitive IR ops get
``channels_last=True``.  SAME/VALID padding becomes explicit ``pads``
(TFLite's SAME rule: the odd pad goes at the end).  Fused activations become
the ``activation`` attribute; ops without one get a separate clamp node.
A DEQUANTIZE of a constant (fp16 or int8 weights) folds into a float constant.
MAXIMUM / MINIMUM with a constant scalar are clamps (Clip).

After the ops are read, :mod:`.tflite_fold` undoes the writers' expansions:
1-D convs/pools run as 2-D ops on a view become Conv1D / 1-D pools, clamp
pairs one Clip, a MEAN over the spatial axes a GlobalAvgPool.  A file written
by qtc carries ``qtc_quant`` (the quant flags TFLite has no field for) and
``qtc_ir`` (node names, lossy op forms, the writer's temps) metadata, so it
imports as exactly the IR it was written from; otherwise the flags are
inferred (zero point 0 → symmetric; int8/int4 constants within ±qmax →
narrow_range; power-of-two scales → power_of_two).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from typing import Callable

import numpy as np

from ..errors import ModelFormatError, QtcError, ShapeError, UnsupportedOpError
from ..ir.graph import Graph
from ..ir.tensor import QuantParams
from ..ir.validate import infer_shapes, validate
from ..ops._util import same_pads
from ._builder import clean_name
from .tflite_fold import apply_hints, fold_1d, fold_causal_pads, fold_fused, fold_requant, merge_clips

_SCHEMA_MODULES = (
    "ai_edge_litert.schema_py_generated",
    "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
)

_FUSED = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_FUSED_NAMES = {4: "TANH", 5: "SIGN_BIT"}
_SAME, _VALID = 0, 1


def schema():
    """The generated TFLite flatbuffer schema module from an installed package."""
    for mod in _SCHEMA_MODULES:
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    raise QtcError("no TFLite flatbuffer schema module is installed",
                   hint="pip install ai-edge-litert (or tflite-micro, or tensorflow)")


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


# --------------------------------------------------------------------------- entry point
def load_tflite(path_or_bytes, name: str | None = None) -> Graph:
    """Import a .tflite model (path, bytes or bytearray) into a validated qtc Graph."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        buf = bytes(path_or_bytes)
        fname = "<bytes>"
        default_name = "model"
    else:
        path = os.fspath(path_or_bytes)
        fname = os.path.basename(path)
        default_name = os.path.splitext(fname)[0] or "model"
        try:
            with open(path, "rb") as f:
                buf = f.read()
        except OSError as exc:
            raise ModelFormatError(f"cannot read the model file: {exc.strerror}", where=path,
                                   hint="check the path") from None
    model = _parse(buf, fname)
    g = _Importer(model, buf, fname, name or default_name).run()
    g.metadata.update({
        "source_format": "tflite",
        "source_file": fname,
        "source_sha256": hashlib.sha256(buf).hexdigest(),
        "tflite_schema_version": int(model.version),
    })
    return g


def _parse(buf: bytes, fname: str):
    fb = schema()
    hint = "re-export the .tflite file (it is truncated, corrupt or not a TFLite model)"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelFormatError("not a TFLite flatbuffer (no 'TFL3' identifier)", where=fname, hint=hint)
    try:
        model = fb.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        raise ModelFormatError(f"cannot parse the flatbuffer ({type(exc).__name__}: {exc})", where=fname,
                               hint=hint) from None
    if not model.subgraphs:
        raise ModelFormatError("the model has no subgraph", where=fname, hint=hint)
    return model


def _metadata(model, fname: str) -> dict:
    """The JSON metadata entries qtc's writer adds (``qtc_quant``, ``qtc_ir``), decoded; {} when absent."""
    out = {}
    for md in model.metadata or []:
        name = md.name.decode("utf-8", "replace") if md.name else ""
        if name not in ("qtc_quant", "qtc_ir", "qtc_input_quant"):
            continue
        try:
            raw = bytes(np.asarray(model.buffers[md.buffer].data if model.buffers[md.buffer].data is not None
                                   else [], dtype=np.uint8))
            value = json.loads(raw.decode("utf-8"))
        except (IndexError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"metadata entry {name!r} is not valid JSON ({type(exc).__name__})", where=fname,
                                   hint="the file is corrupt; re-export it with qtc") from None
        kinds = _IR_KINDS if name == "qtc_ir" else {}
        if not isinstance(value, dict) or any(not isinstance(value.get(k, t()), t) for k, t in kinds.items()) \
                or (name == "qtc_quant" and not all(isinstance(v, str) for v in value.values())):
            raise ModelFormatError(f"metadata entry {name!r} is not what qtc writes", where=fname,
                                   hint="the file is corrupt; re-export it with qtc")
        out[name] = value
    return out


_IR_KINDS = {"names": dict, "ops": dict, "views": dict, "1d": list, "requant": list, "fused": list, "synthetic": list}


# --------------------------------------------------------------------------- importer
class _Importer:
    def __init__(self, model, buf: bytes, fname: str, name: str):
        self.fb = schema()
        self.model = model
        self.buf = buf
        self.fname = fname
        self.sg = model.subgraphs[0]
        self.g = Graph(name=name)
        self.op_names = _enum_names(self.fb.BuiltinOperator)
        self.type_names = _enum_names(self.fb.TensorType)
        self.names: dict[int, str] = {}       # TFLite tensor index → IR tensor name
        self.folded: dict[int, np.ndarray] = {}  # constant DEQUANTIZE outputs
        self.file_shapes: dict[str, tuple[int, ...]] = {}
        self.op_index = -1
        self.op_name = ""
        self.op = None
        self.readers: dict[int, int] = {}  # TFLite tensor index → how many operator inputs read it
        meta = _metadata(model, fname)
        self.qflags: dict | None = meta.get("qtc_quant")  # written by qtc: the exact quant flags
        self.hints: dict = meta.get("qtc_ir") or {}
        self.input_quant: dict = meta.get("qtc_input_quant") or {}

    # ------------------------------------------------------------ tensors
    def _tensor(self, idx: int):
        try:
            return self.sg.tensors[idx]
        except (IndexError, TypeError):
            raise ModelFormatError(f"tensor index {idx} out of range", where=self.where(),
                                   hint="the file is corrupt; re-export it") from None

    def tname(self, idx: int) -> str:
        t = self._tensor(idx)
        raw = t.name.decode("utf-8", "replace") if t.name else ""
        return clean_name(raw.split(";")[0], f"t{idx}")

    def shape(self, idx: int) -> tuple[int, ...]:
        if idx in self.folded:
            return tuple(self.folded[idx].shape)
        t = self._tensor(idx)
        return tuple(int(d) for d in (t.shape if t.shape is not None else []))

    def dtype(self, idx: int) -> str:
        t = self._tensor(idx)
        tn = self.type_names.get(t.type, str(t.type))
        mapping = {"FLOAT32": "float32", "FLOAT16": "float16", "INT32": "int32", "UINT8": "uint8",
                   "INT64": "int64", "BOOL": "bool", "INT16": "int16", "INT8": "int8", "INT4": "int8"}
        if tn not in mapping:
            raise UnsupportedOpError(f"tensor {self.tname(idx)!r} has type {tn}, which qtc does not import",
                                     where=self.where(), hint="convert the model with int8/int16/float32 tensors")
        return mapping[tn]

    def quant(self, idx: int, const: bool) -> QuantParams | None:
        t = self._tensor(idx)
        q = t.quantization
        dt = self.dtype(idx)
        if q is None or q.scale is None or len(q.scale) == 0 or dt in ("float32", "float16", "bool"):
            return None
        scale = np.asarray(q.scale, dtype=np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros_like(scale), dtype=np.int64)
        if zp.size == 0:
            zp = np.zeros(scale.size, dtype=np.int64)
        axis = int(q.quantizedDimension) if scale.size > 1 else None
        is_int4 = self.type_names.get(t.type) == "INT4"
        # an int64 tensor with params is a 16x8 bias: a 32-bit bias widened (as qtc's with_int64_bias)
        bits = 4 if is_int4 else {"int8": 8, "uint8": 8, "int16": 16, "int32": 32, "int64": 32}.get(dt)
        if bits is None:
            return None
        raw = t.name.decode("utf-8", "replace") if t.name else ""
        if self.qflags is not None:  # qtc's own file: the flags as the IR had them
            flags = str(self.qflags.get(raw, ""))
            if flags == "-":
                return None
            flags, _, wbits = flags.partition(":")
            if wbits:
                if wbits not in ("2", "4", "8", "16", "32"):
                    raise ModelFormatError(f"qtc_quant gives tensor {raw!r} {wbits!r} bits", where=self.fname,
                                           hint="the file is corrupt; re-export it with qtc")
                bits = int(wbits)
            return QuantParams(scale, zp, axis=axis, bits=bits, signed=dt != "uint8",
                               narrow_range="n" in flags, symmetric="s" in flags, power_of_two="p" in flags)
        symmetric = bool(np.all(zp == 0))
        narrow = False
        if const and symmetric and dt == "int8":  # weights in [-qmax, qmax]: narrow range, as TFLite's
            data = self.const_data(idx)
            narrow = data is not None and (data.size == 0 or int(data.min()) >= -((1 << (bits - 1)) - 1))
        mant, _ = np.frexp(scale)
        return QuantParams(scale, zp, axis=axis, bits=bits, signed=dt != "uint8", narrow_range=narrow,
                           symmetric=symmetric, power_of_two=bool(np.all(mant == 0.5)))

    def const_data(self, idx: int) -> np.ndarray | None:
        """The constant value of a tensor (None for activations)."""
        if idx in self.folded:
            return self.folded[idx]
        t = self._tensor(idx)
        if t.isVariable:
            raise UnsupportedOpError(f"variable tensor {self.tname(idx)!r} is not supported", where=self.where(),
                                     hint="export a model without resource/variable tensors")
        if getattr(t, "externalBuffer", 0):
            raise UnsupportedOpError(f"tensor {self.tname(idx)!r} uses an external buffer", where=self.where(),
                                     hint="re-export the model with weights embedded in the .tflite file")
        if t.sparsity is not None:
            raise UnsupportedOpError(f"tensor {self.tname(idx)!r} is sparse", where=self.where(),
                                     hint="re-export the model with dense weights")
        try:
            b = self.model.buffers[t.buffer]
        except (IndexError, TypeError):
            raise ModelFormatError(f"tensor {self.tname(idx)!r} names buffer {t.buffer}, which does not exist",
                                   where=self.fname, hint="the file is corrupt; re-export it") from None
        raw = None
        if b.data is not None and len(b.data):
            raw = np.asarray(b.data, dtype=np.uint8).tobytes()
        elif getattr(b, "offset", 0) > 1 and getattr(b, "size", 0) > 0:
            if b.offset + b.size > len(self.buf):
                raise ModelFormatError(f"buffer of tensor {self.tname(idx)!r} runs past the end of the file",
                                       where=self.fname, hint="the file is truncated; re-export it")
            raw = self.buf[b.offset:b.offset + b.size]
        if raw is None:
            return None
        shape = self.shape(idx)
        count = int(np.prod(shape)) if shape else 1
        if self.type_names.get(t.type) == "INT4":
            packed = np.frombuffer(raw, dtype=np.uint8)
            lo = ((packed << 4).astype(np.int8) >> 4)
            hi = (packed.astype(np.int8) >> 4)
            vals = np.stack([lo, hi], axis=1).reshape(-1)
            if vals.size < count:
                raise ModelFormatError(f"int4 buffer of {self.tname(idx)!r} is too short", where=self.fname,
                                       hint="the file is corrupt; re-export it")
            return vals[:count].astype(np.int8).reshape(shape)
        dt = np.dtype(self.dtype(idx)).newbyteorder("<")
        if len(raw) != count * dt.itemsize:
            raise ModelFormatError(f"buffer of tensor {self.tname(idx)!r} has {len(raw)} bytes, its shape {shape} "
                                   f"needs {count * dt.itemsize}", where=self.fname,
                                   hint="the file is truncated or corrupt; re-export it")
        return np.frombuffer(raw, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))

    def is_const(self, idx: int) -> bool:
        return idx >= 0 and self.const_data(idx) is not None

    def ensure(self, idx: int) -> str:
        """The IR name of TFLite tensor ``idx``, creating the IR tensor on first use."""
        if idx < 0:
            return ""
        if idx in self.names:
            return self.names[idx]
        data = self.const_data(idx)
        name = self.g.unique_name(self.tname(idx))
        if data is not None:
            self.g.add_tensor(name, data.shape, str(data.dtype), data,
                              None if idx in self.folded else self.quant(idx, const=True))
        else:
            shp = self.shape(idx)
            self.g.add_tensor(name, shp, self.dtype(idx), None, self.quant(idx, const=False))
            self.file_shapes[name] = shp
        self.names[idx] = name
        return name

    def inp(self, k: int) -> str:
        ins = self.op.inputs if self.op.inputs is not None else []
        return self.ensure(int(ins[k])) if k < len(ins) else ""

    def in_idx(self, k: int) -> int:
        ins = self.op.inputs if self.op.inputs is not None else []
        return int(ins[k]) if k < len(ins) else -1

    def out(self, k: int = 0) -> str:
        return self.ensure(int(self.op.outputs[k]))

    def out_idx(self, k: int = 0) -> int:
        return int(self.op.outputs[k])

    def const_in(self, k: int, what: str) -> np.ndarray:
        idx = self.in_idx(k)
        data = self.const_data(idx) if idx >= 0 else None
        if data is None:
            raise UnsupportedOpError(f"{self.op_name} needs a constant {what} (input {k}), got a runtime tensor",
                                     where=self.where(), hint="freeze the model so this input is a constant")
        return data

    def derived_const(self, k: int, suffix: str, data: np.ndarray, axis: int | None) -> str:
        """A transformed copy of constant input ``k`` (e.g. a re-laid-out weight); it keeps the
        constant's name when this op is its only reader (the original then leaves the graph)."""
        idx = self.in_idx(k)
        q = None if idx in self.folded else self.quant(idx, const=True)
        if q is not None and q.axis is not None:
            q.axis = axis
        only = self.readers.get(idx, 0) == 1 and idx not in self.names
        name = self.g.unique_name(self.tname(idx) if only else f"{self.tname(idx)}{suffix}")
        self.g.add_tensor(name, data.shape, str(data.dtype), np.ascontiguousarray(data), q)
        return name

    def tmp_like(self, idx: int, suffix: str) -> str:
        """A new intermediate activation with the dtype and quant params of TFLite tensor ``idx``."""
        name = self.g.unique_name(f"{self.tname(idx)}{suffix}")
        self.g.add_tensor(name, (), self.dtype(idx), None, self.quant(idx, const=False))
        return name

    def emit(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        base = outputs[0] if outputs else f"{op}_{self.op_index}"
        self.g.add_node(op, inputs, outputs, name=base, **attrs)

    def emit_with_act(self, op: str, inputs: list[str], fused: int, **attrs) -> None:
        """Emit ``op`` whose TFLite form has a fused activation but the IR op has none."""
        act = self.fused(fused)
        out = self.out()
        if act == "none":
            self.emit(op, inputs, [out], **attrs)
            return
        mid = self.tmp_like(self.out_idx(), "/pre_act")
        self.emit(op, inputs, [mid], **attrs)
        self.emit_clamp(act, mid, out)

    def emit_clamp(self, act: str, src: str, dst: str) -> None:
        if act == "relu":
            self.emit("Relu", [src], [dst])
        elif act == "relu6":
            self.emit("Relu6", [src], [dst])
        else:
            self.emit("Clip", [src], [dst], min=-1.0, max=1.0)

    def fused(self, code: int) -> str:
        code = int(code or 0)
        if code not in _FUSED:
            raise UnsupportedOpError(f"fused activation {_FUSED_NAMES.get(code, code)} is not supported",
                                     where=self.where(), hint="export the model without this fused activation")
        return _FUSED[code]

    def where(self) -> str:
        if self.op_index < 0:
            return self.fname
        return f"{self.fname}: op #{self.op_index} ({self.op_name})"

    def same_pads(self, in_sp, kernel, strides, dilations, padding: int) -> list[int]:
        """ONNX-ordered pads [b0, b1, ..., e0, e1, ...] for TFLite SAME/VALID."""
        n = len(in_sp)
        if padding == _VALID:
            return [0] * (2 * n)
        return same_pads(in_sp, kernel, strides, dilations)

    # ------------------------------------------------------------ graph
    def run(self) -> Graph:
        sg = self.sg
        if len(self.model.subgraphs) > 1:
            self.g.metadata["tflite_ignored_subgraphs"] = len(self.model.subgraphs) - 1
        ops = list(sg.operators or [])
        for op in ops:
            for t in (op.inputs if op.inputs is not None else []):
                self.readers[int(t)] = self.readers.get(int(t), 0) + 1
        # fold DEQUANTIZE of constants (fp16 / int8 weights) into float constants first
        for i, op in enumerate(ops):
            self._enter(i, op)
            if self.op_name == "DEQUANTIZE" and self.is_const(self.in_idx(0)):
                self.folded[self.out_idx()] = self._dequant_const(self.in_idx(0))
        for idx in (sg.inputs if sg.inputs is not None else []):
            self.g.inputs.append(self.ensure(int(idx)))
        chains = _find_dilated_chains(self, ops)
        skip = {i for chain in chains.values() for i in chain[1:]}
        for i, op in enumerate(ops):
            self._enter(i, op)
            if self.op_name == "DEQUANTIZE" and self.out_idx() in self.folded:
                continue
            if i in skip:
                continue
            if i in chains:
                _emit_dilated_chain(self, ops, chains[i])
                continue
            conv = _CONVERTERS.get(self.op_name)
            if conv is None:
                raise UnsupportedOpError(
                    f"TFLite op {self.op_name} is not supported by qtc's importer", where=self.where(),
                    hint="see 'qtc ops' for supported ops; re-export the model without it or ask for it to be added")
            conv(self, op.builtinOptions)
        self.op_index, self.op_name = -1, ""
        for idx in (sg.outputs if sg.outputs is not None else []):
            self.g.outputs.append(self.ensure(int(idx)))
        self.g.remove_unused_tensors()
        infer_shapes(self.g)
        for name, shp in self.file_shapes.items():
            t = self.g.tensors.get(name)
            if t is not None and t.shape != shp:
                raise ShapeError(f"tensor {name!r}: qtc infers shape {t.shape}, the file declares {shp}",
                                 where=self.fname, hint="report this as an importer bug with the model attached")
        # undo the writers' expansions: 1-D ops on 2-D views, MAXIMUM/MINIMUM pairs, qtc's requantizing temps
        qtc = bool(self.hints)  # written by qtc: undo exactly its expansions, nothing else
        fused = self.hints.get("fused", [])
        fold_fused(self.g, fused, self.hints.get("ops", {}))
        fold_1d(self.g, self.hints.get("views"), only=set(self.hints.get("1d", [])) if qtc else None)
        if not qtc:  # the Keras front end's form of a causal Conv1D
            fold_causal_pads(self.g)
        merge_clips(self.g, only=set(fused) if qtc else None)
        fold_requant(self.g, self.hints.get("requant", []))
        infer_shapes(self.g)
        shapes = {k: t.shape for k, t in self.g.tensors.items()}
        apply_hints(self.g, self.hints)
        self.g.remove_unused_tensors()
        infer_shapes(self.g)
        changed = [k for k, t in self.g.tensors.items() if k in shapes and t.shape != shapes[k]]
        if changed:
            raise ModelFormatError(f"the qtc_ir metadata changes the shape of tensor {changed[0]!r}", where=self.fname,
                                   hint="the file was edited after qtc wrote it; re-export it with qtc")
        validate(self.g)
        self._input_quant()
        # IR activation name → TFLite tensor index (same shape), for layer-wise comparisons with the runtimes
        self.g.metadata["tflite_tensor_index"] = {
            n: i for i, n in sorted(self.names.items())
            if n in self.g.tensors and not self.g.tensors[n].is_const and self.g.tensors[n].shape == self.shape(i)}
        return self.g

    def _input_quant(self) -> None:
        """Per-feature params of the graph inputs (qtc_input_quant) back into the metadata, checked."""
        if not self.input_quant:
            return
        from ..ir.boundary import META_KEY, quant_from_json

        for name, doc in self.input_quant.items():
            t = self.g.tensors.get(name)
            try:
                q = quant_from_json(doc)
                ok = name in self.g.inputs and t.quant is not None and q.scale.size == t.shape[-1]
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise ModelFormatError(f"metadata qtc_input_quant does not fit input {name!r}", where=self.fname,
                                       hint="the file was edited after qtc wrote it; re-export it with qtc")
        self.g.metadata[META_KEY] = dict(sorted(self.input_quant.items()))

    def _enter(self, i: int, op) -> None:
        self.op_index, self.op = i, op
        try:
            oc = self.model.operatorCodes[op.opcodeIndex]
        except (IndexError, TypeError):
            raise ModelFormatError(f"op #{i} names operator code {op.opcodeIndex}, which does not exist",
                                   where=self.fname, hint="the file is corrupt; re-export it") from None
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        name = self.op_names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            cc = oc.customCode.decode("utf-8", "replace") if oc.customCode else "?"
            name = f"CUSTOM({cc})"
        self.op_name = name

    def _dequant_const(self, idx: int) -> np.ndarray:
        data = self.const_data(idx)
        q = self.quant(idx, const=True)
        if q is None:
            return data.astype(np.float32)
        return q.dequantize(data)


# --------------------------------------------------------------------------- converters
def _conv2d(imp: _Importer, o, x: str | None = None, out: str | None = None, dil=None, pads=None) -> None:
    """CONV_2D; ``x``/``out``/``dil``/``pads`` override the op's own (dilated-conv chains)."""
    xs, ws = imp.shape(imp.in_idx(0)), imp.shape(imp.in_idx(1))
    strides = [o.strideH, o.strideW]
    dil = dil or [o.dilationHFactor, o.dilationWFactor]
    pads = pads or imp.same_pads(xs[1:3], ws[1:3], strides, dil, o.padding)
    groups = xs[3] // ws[3] if ws[3] else 1
    imp.emit("Conv2D", [x or imp.inp(0), imp.inp(1), imp.inp(2)], [out or imp.out()], strides=strides,
             dilations=dil, pads=pads, groups=groups, channels_last=True,
             activation=imp.fused(o.fusedActivationFunction))


def _depthwise(imp: _Importer, o, x: str | None = None, out: str | None = None, dil=None, pads=None) -> None:
    xs = imp.shape(imp.in_idx(0))
    w = imp.const_in(1, "depthwise filter")  # [1, KH, KW, C*M]
    kh, kw = w.shape[1], w.shape[2]
    w_ir = w.transpose(3, 1, 2, 0)  # [C*M, KH, KW, 1]
    w_name = imp.derived_const(1, "/ohwi", w_ir, axis=0)
    strides = [o.strideH, o.strideW]
    dil = dil or [o.dilationHFactor, o.dilationWFactor]
    pads = pads or imp.same_pads(xs[1:3], (kh, kw), strides, dil, o.padding)
    imp.emit("Conv2D", [x or imp.inp(0), w_name, imp.inp(2)], [out or imp.out()], strides=strides,
             dilations=dil, pads=pads, groups=xs[3], channels_last=True,
             activation=imp.fused(o.fusedActivationFunction))


# TF lowers a dilated conv it cannot fuse (e.g. a dilated Conv1D) to
#   SPACE_TO_BATCH_ND → [EXPAND_DIMS] → CONV_2D (VALID, stride 1) → [RESHAPE|SQUEEZE] → BATCH_TO_SPACE_ND.
# With block d, paddings (p0, p1) and crops (c0, c1) this equals one conv with
# dilation d and pads (p0 - c0, p1 - c1) on the un-batched input.
_CHAIN_MIDDLE = ("EXPAND_DIMS", "RESHAPE", "SQUEEZE")


def _find_dilated_chains(imp: _Importer, ops) -> dict[int, list[int]]:
    """SPACE_TO_BATCH_ND op index → the op indices of its dilated-conv chain (S2B first, B2S last)."""
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        for t in (op.inputs if op.inputs is not None else []):
            consumers.setdefault(int(t), []).append(i)
    graph_outs = {int(t) for t in (imp.sg.outputs if imp.sg.outputs is not None else [])}
    chains = {}
    for i, op in enumerate(ops):
        imp._enter(i, op)
        if imp.op_name != "SPACE_TO_BATCH_ND":
            continue
        chain, cur = [i], i
        while True:
            out_t = int(ops[cur].outputs[0])
            nxt = consumers.get(out_t, [])
            if len(nxt) != 1 or out_t in graph_outs:
                break
            cur = nxt[0]
            imp._enter(cur, ops[cur])
            chain.append(cur)
            if imp.op_name == "BATCH_TO_SPACE_ND" or (imp.op_name not in _CHAIN_MIDDLE
                                                     and imp.op_name not in ("CONV_2D", "DEPTHWISE_CONV_2D")):
                break
        names = []
        for j in chain:
            imp._enter(j, ops[j])
            names.append(imp.op_name)
        convs = [j for j, n in zip(chain, names) if n in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        if names[-1] == "BATCH_TO_SPACE_ND" and len(convs) == 1 \
                and all(n in _CHAIN_MIDDLE for n, j in zip(names[1:-1], chain[1:-1]) if j != convs[0]):
            chains[i] = chain
    return chains


def _emit_dilated_chain(imp: _Importer, ops, chain: list[int]) -> None:
    s2b, b2s = chain[0], chain[-1]
    conv_i = next(j for j in chain if j not in (s2b, b2s) and _op_name_of(imp, ops, j).endswith("CONV_2D"))
    imp._enter(s2b, ops[s2b])
    x_idx = imp.in_idx(0)
    block = [int(v) for v in np.asarray(imp.const_in(1, "block shape")).reshape(-1)]
    paddings = np.asarray(imp.const_in(2, "paddings")).reshape(-1, 2)
    imp._enter(b2s, ops[b2s])
    crops = np.asarray(imp.const_in(2, "crops")).reshape(-1, 2)
    if [int(v) for v in np.asarray(imp.const_in(1, "block shape")).reshape(-1)] != block:
        raise UnsupportedOpError("SPACE_TO_BATCH_ND and BATCH_TO_SPACE_ND use different block shapes",
                                 where=imp.where(), hint="only TF's dilated-conv lowering is supported")
    out_name, out_idx = imp.out(), imp.out_idx()
    xs = imp.shape(x_idx)
    nsp = len(block)
    if xs[0] != 1 or nsp not in (1, 2) or len(xs) != nsp + 2:
        raise UnsupportedOpError(f"SPACE_TO_BATCH_ND on shape {xs} with block {block} is not supported",
                                 where=imp.where(), hint="only batch-1 dilated 1-D/2-D convs are supported")
    imp._enter(conv_i, ops[conv_i])
    o = ops[conv_i].builtinOptions
    if (o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor) != (1, 1, 1, 1) or o.padding != _VALID:
        raise UnsupportedOpError("the conv inside a SPACE_TO_BATCH_ND/BATCH_TO_SPACE_ND pair is not a VALID "
                                 "stride-1 conv", where=imp.where(), hint="only TF's dilated-conv lowering is supported")
    begins = [int(paddings[k, 0] - crops[k, 0]) for k in range(nsp)]
    ends = [int(paddings[k, 1] - crops[k, 1]) for k in range(nsp)]
    if min(begins + ends) < 0:
        raise UnsupportedOpError("dilated-conv lowering crops more than it pads", where=imp.where(),
                                 hint="re-export the model with SAME or VALID padding")
    x = imp.ensure(x_idx)
    conv_in = imp.shape(imp.in_idx(0))
    if nsp == 1:
        # the 1-D signal sits on H or W of the 4-D conv input; the other spatial dim is 1
        axis = 2 if conv_in[1] == 1 and conv_in[2] != 1 else 1
        x4 = imp.tmp_like(x_idx, "/as4d")
        imp.emit("Unsqueeze", [x], [x4], axes=[3 - axis])
        dil = [1, block[0]] if axis == 2 else [block[0], 1]
        pads = [0, begins[0], 0, ends[0]] if axis == 2 else [begins[0], 0, ends[0], 0]
        y4 = imp.tmp_like(imp.out_idx(), "/dilated")
        conv = _conv2d if _op_name_of(imp, ops, conv_i) == "CONV_2D" else _depthwise
        conv(imp, o, x=x4, out=y4, dil=dil, pads=pads)
        imp.emit("Reshape", [y4], [out_name], shape=list(imp.shape(out_idx)))
    else:
        conv = _conv2d if _op_name_of(imp, ops, conv_i) == "CONV_2D" else _depthwise
        conv(imp, o, x=x, out=out_name, dil=block, pads=begins + ends)


def _op_name_of(imp: _Importer, ops, j: int) -> str:
    imp._enter(j, ops[j])
    return imp.op_name


def _fully_connected(imp: _Importer, o) -> None:
    if int(o.weightsFormat or 0) != 0:
        raise UnsupportedOpError("FULLY_CONNECTED with shuffled weights is not supported", where=imp.where(),
                                 hint="export with the default weights format")
    xs, ws = imp.shape(imp.in_idx(0)), imp.shape(imp.in_idx(1))
    x = imp.inp(0)
    if not o.keepNumDims and len(xs) != 2:
        n_in = ws[1]
        total = int(np.prod(xs))
        flat = imp.tmp_like(imp.in_idx(0), "/flat")
        imp.emit("Reshape", [x], [flat], shape=[total // n_in, n_in])
        x = flat
    imp.emit("FullyConnected", [x, imp.inp(1), imp.inp(2)], [imp.out()],
             activation=imp.fused(o.fusedActivationFunction))


def _transpose_conv(imp: _Importer, o) -> None:
    out_shape = [int(v) for v in imp.const_in(0, "output shape")]
    ws = imp.shape(imp.in_idx(1))  # [O, KH, KW, I]
    xs = imp.shape(imp.in_idx(2))
    strides = [o.strideH, o.strideW]
    # TFLite computes the padding as for a forward conv from the output size
    fwd = imp.same_pads(out_shape[1:3], ws[1:3], strides, [1, 1], o.padding)
    pads, out_pad = [], []
    for i in range(2):
        full = (xs[1 + i] - 1) * strides[i] + ws[1 + i]
        end = full - fwd[i] - out_shape[1 + i]
        pads.append(end)
        out_pad.append(max(-end, 0))
    pads = [fwd[0], fwd[1], max(pads[0], 0), max(pads[1], 0)]
    imp.emit("ConvTranspose2D", [imp.inp(2), imp.inp(1), imp.inp(3)], [imp.out()], strides=strides,
             pads=pads, output_padding=out_pad, dilations=[1, 1], channels_last=True,
             activation=imp.fused(getattr(o, "fusedActivationFunction", 0)))


def _binary(op: str) -> Callable:
    def conv(imp: _Importer, o) -> None:
        act = imp.fused(getattr(o, "fusedActivationFunction", 0) if o is not None else 0)
        imp.emit(op, [imp.inp(0), imp.inp(1)], [imp.out()], activation=act)
    return conv


def _div(imp: _Importer, o) -> None:
    imp.emit_with_act("Div", [imp.inp(0), imp.inp(1)], o.fusedActivationFunction if o is not None else 0)


def _pool(op: str) -> Callable:
    def conv(imp: _Importer, o) -> None:
        xs = imp.shape(imp.in_idx(0))
        kernel, strides = [o.filterHeight, o.filterWidth], [o.strideH, o.strideW]
        pads = imp.same_pads(xs[1:3], kernel, strides, [1, 1], o.padding)
        imp.emit(op, [imp.inp(0)], [imp.out()], kernel=kernel, strides=strides, pads=pads, channels_last=True,
                 activation=imp.fused(o.fusedActivationFunction))
    return conv


def _reduce(op: str) -> Callable:
    def conv(imp: _Importer, o) -> None:
        axes = [int(a) for a in np.asarray(imp.const_in(1, "axis")).reshape(-1)]
        keep = bool(o.keepDims) if o is not None else False
        rank = len(imp.shape(imp.in_idx(0)))
        if op == "Mean" and rank in (3, 4) and sorted(a % rank for a in axes) == list(range(1, rank - 1)):
            # a mean over every spatial axis of an NHWC/NWC tensor: Keras' global average pooling
            imp.emit("GlobalAvgPool", [imp.inp(0)], [imp.out()], channels_last=True, keepdims=keep)
            return
        imp.emit(op, [imp.inp(0)], [imp.out()], axes=axes, keepdims=keep)
    return conv


def _min_max(bound: str) -> Callable:
    """MAXIMUM / MINIMUM with a constant one-element operand: a one-sided Clip (merged later)."""
    def conv(imp: _Importer, o) -> None:
        k = next((k for k in (1, 0) if imp.is_const(imp.in_idx(k))
                  and np.asarray(imp.const_data(imp.in_idx(k))).size == 1), None)
        if k is None:
            raise UnsupportedOpError(f"{imp.op_name} of two runtime tensors has no qtc IR op", where=imp.where(),
                                     hint="only MAXIMUM/MINIMUM with a constant scalar (a clamp) are imported")
        x_idx, c_idx, y_idx = imp.in_idx(1 - k), imp.in_idx(k), imp.out_idx()
        c = np.asarray(imp.const_data(c_idx)).reshape(-1)
        qs = [imp.quant(i, const=i == c_idx) for i in (x_idx, c_idx, y_idx)]
        qx, qc = qs[0], qs[1]
        if any(q is not None for q in qs):
            same = all(q is not None and q.scale.size == 1 for q in qs) and all(
                np.array_equal(q.scale, qx.scale) and np.array_equal(q.zero_point, qx.zero_point) for q in qs)
            if not same:
                raise UnsupportedOpError(f"quantized {imp.op_name} whose operands and output have different "
                                         "params has no qtc IR form", where=imp.where(),
                                         hint="give the clamp's input, bound and output the same params")
            value = float(qc.dequantize(c)[0])
        else:
            value = float(c[0])
        imp.emit("Clip", [imp.ensure(x_idx)], [imp.out()], **{bound: value, ("max" if bound == "min" else "min"): None})
    return conv


def _reshape(imp: _Importer, o) -> None:
    imp.emit("Reshape", [imp.inp(0)], [imp.out()], shape=list(imp.shape(imp.out_idx())))


def _squeeze(imp: _Importer, o) -> None:
    xs = imp.shape(imp.in_idx(0))
    dims = list(o.squeezeDims) if o is not None and o.squeezeDims is not None else []
    axes = [int(a) % len(xs) for a in dims] if len(dims) else [i for i, d in enumerate(xs) if d == 1]
    imp.emit("Squeeze", [imp.inp(0)], [imp.out()], axes=sorted(axes))


def _expand_dims(imp: _Importer, o) -> None:
    rank = len(imp.shape(imp.in_idx(0)))
    axis = int(np.asarray(imp.const_in(1, "axis")).reshape(-1)[0])
    imp.emit("Unsqueeze", [imp.inp(0)], [imp.out()], axes=[axis % (rank + 1)])


def _concat(imp: _Importer, o) -> None:
    ins = [imp.ensure(int(i)) for i in imp.op.inputs]
    imp.emit_with_act("Concat", ins, o.fusedActivationFunction, axis=int(o.axis))


def _split_outputs(imp: _Importer) -> list[str]:
    return [imp.ensure(int(i)) for i in imp.op.outputs]


def _split(imp: _Importer, o) -> None:
    axis = int(np.asarray(imp.const_in(0, "axis")).reshape(-1)[0])
    xs = imp.shape(imp.in_idx(1))
    n = int(o.numSplits)
    axis %= len(xs)
    imp.emit("Split", [imp.inp(1)], _split_outputs(imp), axis=axis, sizes=[xs[axis] // n] * n)


def _split_v(imp: _Importer, o) -> None:
    xs = imp.shape(imp.in_idx(0))
    sizes = [int(s) for s in np.asarray(imp.const_in(1, "size_splits")).reshape(-1)]
    axis = int(np.asarray(imp.const_in(2, "axis")).reshape(-1)[0]) % len(xs)
    if -1 in sizes:
        sizes[sizes.index(-1)] = xs[axis] - (sum(sizes) + 1)
    imp.emit("Split", [imp.inp(0)], _split_outputs(imp), axis=axis, sizes=sizes)


def _slice(imp: _Importer, o) -> None:
    xs = imp.shape(imp.in_idx(0))
    begin = [int(b) for b in np.asarray(imp.const_in(1, "begin")).reshape(-1)]
    size = [int(s) for s in np.asarray(imp.const_in(2, "size")).reshape(-1)]
    ends = [xs[i] if s == -1 else b + s for i, (b, s) in enumerate(zip(begin, size))]
    imp.emit("Slice", [imp.inp(0)], [imp.out()], starts=begin, ends=ends, axes=list(range(len(xs))),
             steps=[1] * len(xs))


def _strided_slice(imp: _Importer, o) -> None:
    xs = imp.shape(imp.in_idx(0))
    if o.ellipsisMask or o.newAxisMask:
        raise UnsupportedOpError("STRIDED_SLICE with ellipsis or new-axis masks is not supported", where=imp.where(),
                                 hint="use plain slicing (no '...' or None) in the model")
    begin = [int(v) for v in np.asarray(imp.const_in(1, "begin")).reshape(-1)]
    end = [int(v) for v in np.asarray(imp.const_in(2, "end")).reshape(-1)]
    strides = [int(v) for v in np.asarray(imp.const_in(3, "strides")).reshape(-1)]
    starts, ends = [], []
    for i, dim in enumerate(xs):
        if i >= len(begin):
            starts.append(0)
            ends.append(dim)
            continue
        if strides[i] <= 0:
            raise UnsupportedOpError("STRIDED_SLICE with a negative or zero stride is not supported",
                                     where=imp.where(), hint="reverse the tensor another way")
        b = 0 if (o.beginMask >> i) & 1 else begin[i]
        b = min(max(b + dim if b < 0 else b, 0), dim)
        if (o.shrinkAxisMask >> i) & 1:
            e = b + 1
        elif o.offset:
            e = b + end[i]
        elif (o.endMask >> i) & 1:
            e = dim
        else:
            e = end[i] + dim if end[i] < 0 else end[i]
        starts.append(b)
        ends.append(min(max(e, b), dim))
    steps = (strides + [1] * len(xs))[:len(xs)]
    if o.shrinkAxisMask:
        mid = imp.tmp_like(imp.out_idx(), "/unshrunk")
        imp.emit("Slice", [imp.inp(0)], [mid], starts=starts, ends=ends, axes=list(range(len(xs))), steps=steps)
        imp.emit("Reshape", [mid], [imp.out()], shape=list(imp.shape(imp.out_idx())))
    else:
        imp.emit("Slice", [imp.inp(0)], [imp.out()], starts=starts, ends=ends, axes=list(range(len(xs))),
                 steps=steps)


def _pad(imp: _Importer, o) -> None:
    p = np.asarray(imp.const_in(1, "paddings")).reshape(-1, 2)
    pads = [int(v) for v in p[:, 0]] + [int(v) for v in p[:, 1]]
    value = 0.0
    if imp.in_idx(2) >= 0:
        idx = imp.in_idx(2)
        cv = imp.const_in(2, "pad value")
        q = imp.quant(idx, const=True)
        value = float(q.dequantize(cv).reshape(-1)[0]) if q is not None else float(np.asarray(cv).reshape(-1)[0])
    imp.emit("Pad", [imp.inp(0)], [imp.out()], pads=pads, value=value)


def _transpose(imp: _Importer, o) -> None:
    perm = [int(v) for v in np.asarray(imp.const_in(1, "perm")).reshape(-1)]
    imp.emit("Transpose", [imp.inp(0)], [imp.out()], perm=perm)


def _unary(op: str, **attrs) -> Callable:
    def conv(imp: _Importer, o) -> None:
        imp.emit(op, [imp.inp(0)], [imp.out()], **attrs)
    return conv


def _softmax(imp: _Importer, o) -> None:
    imp.emit("Softmax", [imp.inp(0)], [imp.out()], axis=-1, beta=float(o.beta) if o is not None else 1.0)


def _leaky_relu(imp: _Importer, o) -> None:
    imp.emit("LeakyRelu", [imp.inp(0)], [imp.out()], alpha=float(np.float32(o.alpha)))


def _gelu(imp: _Importer, o) -> None:
    approx = bool(o.approximate) if o is not None else False
    imp.emit("Gelu", [imp.inp(0)], [imp.out()], approximate="tanh" if approx else "none")


def _batch_matmul(imp: _Importer, o) -> None:
    imp.emit("MatMul", [imp.inp(0), imp.inp(1)], [imp.out()], transpose_a=bool(o.adjX), transpose_b=bool(o.adjY))


def _resize(mode: str) -> Callable:
    def conv(imp: _Importer, o) -> None:
        size = [int(v) for v in np.asarray(imp.const_in(1, "size")).reshape(-1)]
        if o is not None and o.alignCorners:
            ctm = "align_corners"
        elif o is not None and o.halfPixelCenters:
            ctm = "half_pixel" if mode == "bilinear" else "tf_half_pixel_for_nn"
        else:
            ctm = "asymmetric"
        imp.emit("Resize", [imp.inp(0)], [imp.out()], mode=mode, size=size, coordinate_transformation_mode=ctm,
                 channels_last=True)
    return conv


def _quantize(imp: _Importer, o) -> None:
    imp.emit("Quantize", [imp.inp(0)], [imp.out()], dtype=imp.dtype(imp.out_idx()))


def _dequantize(imp: _Importer, o) -> None:
    imp.emit("Dequantize", [imp.inp(0)], [imp.out()])


_CONVERTERS: dict[str, Callable] = {
    "CONV_2D": _conv2d,
    "DEPTHWISE_CONV_2D": _depthwise,
    "FULLY_CONNECTED": _fully_connected,
    "TRANSPOSE_CONV": _transpose_conv,
    "ADD": _binary("Add"),
    "SUB": _binary("Sub"),
    "MUL": _binary("Mul"),
    "DIV": _div,
    "MAX_POOL_2D": _pool("MaxPool"),
    "AVERAGE_POOL_2D": _pool("AvgPool"),
    "MEAN": _reduce("Mean"),
    "SUM": _reduce("ReduceSum"),
    "REDUCE_MAX": _reduce("ReduceMax"),
    "RESHAPE": _reshape,
    "SQUEEZE": _squeeze,
    "EXPAND_DIMS": _expand_dims,
    "CONCATENATION": _concat,
    "SPLIT": _split,
    "SPLIT_V": _split_v,
    "SLICE": _slice,
    "STRIDED_SLICE": _strided_slice,
    "PAD": _pad,
    "PADV2": _pad,
    "TRANSPOSE": _transpose,
    "SOFTMAX": _softmax,
    "LOGISTIC": _unary("Sigmoid"),
    "TANH": _unary("Tanh"),
    "RELU": _unary("Relu"),
    "RELU6": _unary("Relu6"),
    "RELU_N1_TO_1": _unary("Clip", min=-1.0, max=1.0),
    "RELU_0_TO_1": _unary("Clip", min=0.0, max=1.0),
    "MAXIMUM": _min_max("min"),
    "MINIMUM": _min_max("max"),
    "LEAKY_RELU": _leaky_relu,
    "HARD_SWISH": _unary("HardSwish"),
    "GELU": _gelu,
    "BATCH_MATMUL": _batch_matmul,
    "RESIZE_NEAREST_NEIGHBOR": _resize("nearest"),
    "RESIZE_BILINEAR": _resize("bilinear"),
    "QUANTIZE": _quantize,
    "DEQUANTIZE": _dequantize,
}


def supported_ops() -> list[str]:
    """TFLite builtin op names this importer converts."""
    return sorted(_CONVERTERS)
