"""Building a TFLite flatbuffer with the schema's object API (``ModelT`` …).

:class:`ModelBuilder` collects tensors, constant buffers, operator codes and
operators for one subgraph, then packs them with ``flatbuffers.Builder``.
Buffer data vectors are written 16-byte aligned (the schema's
``force_align: 16``, which the generated Python code ignores), so TFLM can
use weights in place; the position of every buffer's data is a multiple of 16
in the output file.  Nothing depends on time or dict order beyond insertion:
the same calls give the same bytes.
"""
from __future__ import annotations

import numpy as np

from ...errors import QtcError
from ...frontends.tflite import schema

ALIGN = 16
_TYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "int32": "INT32", "uint8": "UINT8", "int64": "INT64",
          "bool": "BOOL", "int16": "INT16", "int8": "INT8"}
_FUSED = {"none": 0, "relu": 1, "relu_n1_to_1": 2, "relu6": 3}


def fused_code(activation: str | None, where: str) -> int:
    act = activation or "none"
    if act not in _FUSED:
        raise QtcError(f"fused activation {act!r} has no TFLite form", where=where,
                       hint=f"use one of {', '.join(_FUSED)}")
    return _FUSED[act]


def pack_int4(values: np.ndarray) -> bytes:
    """Two signed 4-bit values per byte, low nibble first (TFLite INT4); an odd tail leaves the high nibble 0."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    if v.size and (v.min() < -8 or v.max() > 7):
        raise ValueError(f"int4 values out of [-8, 7]: {int(v.min())}..{int(v.max())}")
    nib = (v & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def _aligned_buffer_type():
    fbs = schema()

    class AlignedBuffer(fbs.BufferT):
        """A BufferT whose data vector starts on a 16-byte boundary of the finished file."""

        def __init__(self, data: bytes | None = None):
            super().__init__()
            self.raw = data

        def Pack(self, builder):  # noqa: N802 - the object API's name
            vec = None
            if self.raw:
                n = len(self.raw)
                builder.StartVector(1, n, ALIGN)
                builder.head = builder.head - n
                builder.Bytes[builder.head:builder.head + n] = self.raw
                builder.vectorNumElems = n
                vec = builder.EndVector()
            fbs.BufferStart(builder)
            if vec is not None:
                fbs.BufferAddData(builder, vec)
            return fbs.BufferEnd(builder)

    return AlignedBuffer


class ModelBuilder:
    """One-subgraph TFLite model under construction."""

    def __init__(self, name: str = "main"):
        self.fbs = schema()
        self._Buffer = _aligned_buffer_type()
        self.name = name
        self.tensors: list = []
        self.index: dict[str, int] = {}   # tensor name → index
        self.buffers: list = [self._Buffer(None)]  # buffer 0: the empty sentinel
        self.opcodes: list = []
        self.opcode_index: dict[tuple[int, int], int] = {}
        self.operators: list = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.metadata: list[tuple[str, bytes]] = []
        self.weight_bytes = 0
        self.qparams: dict[str, object] = {}  # tensor name → the IR QuantParams it was written with
        self.views: dict[str, str] = {}       # a 4-D tensor → the 3-D IR tensor it stands for (peephole)

    # ----------------------------------------------------------------- tensors
    def has(self, name: str) -> bool:
        return name in self.index

    def tensor(self, name: str, shape, dtype: str, quant=None, data: bytes | None = None,
               int4: bool = False) -> int:
        """Add a tensor (with its constant bytes, if any); returns its index."""
        if name in self.index:
            raise QtcError(f"tensor {name!r} is written twice", where="tflite writer",
                           hint="this is a qtc bug: report it with the model")
        if dtype not in _TYPES:
            raise QtcError(f"tensor {name!r} has dtype {dtype}, which the TFLite writer does not handle",
                           where="tflite writer", hint="use float32/int8/int16/int32 tensors")
        t = self.fbs.TensorT()
        t.name = name.encode("utf-8")
        t.shape = [int(d) for d in shape]
        t.type = getattr(self.fbs.TensorType, "INT4" if int4 else _TYPES[dtype])
        t.quantization = self._quant(quant) if quant is not None else None
        if quant is not None:
            self.qparams[name] = quant
        if data is not None:
            t.buffer = len(self.buffers)
            self.buffers.append(self._Buffer(bytes(data)))
            self.weight_bytes += len(data)
        else:
            t.buffer = 0
        self.tensors.append(t)
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def const(self, name: str, array: np.ndarray, quant=None, int4: bool = False) -> int:
        """A constant tensor from a numpy array (little-endian bytes; int4 packed)."""
        a = np.ascontiguousarray(array)
        if int4:
            data = pack_int4(a)
        else:
            data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        return self.tensor(name, a.shape, str(a.dtype), quant, data, int4=int4)

    def _quant(self, q):
        p = self.fbs.QuantizationParametersT()
        p.scale = [float(s) for s in np.asarray(q.scale, dtype=np.float32)]
        p.zeroPoint = [int(z) for z in np.asarray(q.zero_point, dtype=np.int64)]
        p.quantizedDimension = int(q.axis) if q.axis is not None else 0
        return p

    # --------------------------------------------------------------- operators
    def op(self, code_name: str, inputs: list[int], outputs: list[int], options=None, version: int = 1) -> None:
        code = getattr(self.fbs.BuiltinOperator, code_name)
        key = (code, version)
        if key not in self.opcode_index:
            oc = self.fbs.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)  # 127 = PLACEHOLDER_FOR_GREATER_OP_CODES
            oc.version = version
            self.opcode_index[key] = len(self.opcodes)
            self.opcodes.append(oc)
        o = self.fbs.OperatorT()
        o.opcodeIndex = self.opcode_index[key]
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        if options is not None:
            kind = type(options).__name__[:-1]  # "Conv2DOptionsT" → "Conv2DOptions"
            o.builtinOptionsType = getattr(self.fbs.BuiltinOptions, kind)
            o.builtinOptions = options
        self.operators.append(o)

    def options(self, kind: str, **fields):
        opts = getattr(self.fbs, f"{kind}T")()
        for k, v in fields.items():
            if not hasattr(opts, k):
                raise AttributeError(f"{kind} has no field {k}")
            setattr(opts, k, v)
        return opts

    def add_metadata(self, name: str, value: bytes) -> None:
        self.metadata.append((name, value))

    # ------------------------------------------------------------------- bytes
    def to_bytes(self, description: str) -> bytes:
        import flatbuffers

        fbs = self.fbs
        sg = fbs.SubGraphT()
        sg.tensors = self.tensors
        sg.inputs = list(self.inputs)
        sg.outputs = list(self.outputs)
        sg.operators = self.operators
        sg.name = self.name.encode("utf-8")
        m = fbs.ModelT()
        m.version = 3
        m.description = description.encode("utf-8")
        m.operatorCodes = self.opcodes
        m.subgraphs = [sg]
        buffers = list(self.buffers)
        meta = []
        for name, value in self.metadata:
            md = fbs.MetadataT()
            md.name = name.encode("utf-8")
            md.buffer = len(buffers)
            buffers.append(self._Buffer(bytes(value)))
            meta.append(md)
        m.buffers = buffers
        m.metadata = meta or None
        b = flatbuffers.Builder(1024 + sum(len(x.raw or b"") for x in buffers) + 64 * len(self.tensors))
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())
