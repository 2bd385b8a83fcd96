"""Front ends: load a model file into a :class:`qtc.ir.Graph`.

:func:`load_model` detects the format from the extension and the file's magic
bytes, then calls the matching front end (imported lazily: torch and
TensorFlow take seconds to import):

=========  ===========================  ====================================
format     files                        front end
=========  ===========================  ====================================
onnx       ``*.onnx`` (protobuf)        :func:`qtc.frontends.onnx.load_onnx`
tflite     ``*.tflite`` ("TFL3" @4..8)  :func:`qtc.frontends.tflite.load_tflite`
keras      ``*.keras`` (zip), ``*.h5``, :func:`qtc.frontends.keras.load_keras`
           SavedModel folder
torch      ``*.pt`` / ``*.pth``         :func:`qtc.frontends.torch.load_torch`
           (state dict; needs ``model_class``)
qir        ``*.qir/`` directory         :func:`qtc.ir.load`
=========  ===========================  ====================================
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelFormatError, QtcError
from ..ir.graph import Graph

FORMATS = ("onnx", "tflite", "keras", "torch", "qir")
FORMATS_HINT = ("qtc reads .onnx, .tflite, .keras/.h5 (tf_keras), .pt/.pth (torch state dict + "
                "--model-class pkg.mod:Class) and .qir directories")

_EXT = {
    ".onnx": "onnx",
    ".tflite": "tflite",
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
    ".pt": "torch",
    ".pth": "torch",
    ".qir": "qir",
}

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TFLITE_IDENT = b"TFL3"
PICKLE_PROTO = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _zip_kind(path: Path) -> str | None:
    """'keras' or 'torch' for a zip archive, from the entries inside; None if unsure."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if "config.json" in names or "metadata.json" in names or "model.weights.h5" in names:
        return "keras"
    return None


def _looks_like_onnx(head: bytes) -> bool:
    """ONNX ModelProto starts with a protobuf field tag (usually 0x08: ir_version, a varint)."""
    if not head:
        return False
    if head[0] & 0x80:  # a multi-byte tag (field number >= 16)
        return True
    field, wire = head[0] >> 3, head[0] & 7
    return field >= 1 and wire in (0, 2)


def _sniff(path: Path, head: bytes) -> str | None:
    if len(head) >= 8 and head[4:8] == TFLITE_IDENT:
        return "tflite"
    if head.startswith(HDF5_MAGIC):
        return "keras"
    if head.startswith(ZIP_MAGIC):
        return _zip_kind(path)
    if head[:2] in PICKLE_PROTO:
        return "torch"
    return None


def detect_format(path: str | os.PathLike) -> str:
    """The format name (one of :data:`FORMATS`) of ``path``, or a ModelFormatError."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise ModelFormatError("no such file or directory", where=where, hint="check the path")
    if path.is_dir():
        if (path / "graph.json").exists():
            return "qir"
        if (path / "saved_model.pb").exists():
            return "keras"  # a tf_keras SavedModel folder
        raise ModelFormatError("is a directory but not a qtc IR (no graph.json inside)", where=where,
                               hint=FORMATS_HINT)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise ModelFormatError(f"cannot read the file ({exc.strerror})", where=where,
                               hint="check the file's permissions") from None
    if not head:
        raise ModelFormatError("the file is empty", where=where, hint="re-export the model")
    ext = path.suffix.lower()
    by_ext = _EXT.get(ext)
    sniffed = _sniff(path, head)
    if by_ext is None:
        if sniffed is not None:
            return sniffed
        if _looks_like_onnx(head) and _onnx_parses(path):
            return "onnx"
        raise ModelFormatError(f"unknown model format (extension {ext or 'none'!r}, "
                               f"first bytes {head[:8].hex()})", where=where, hint=FORMATS_HINT)
    _check_magic(by_ext, path, head, sniffed)
    return by_ext


def _onnx_parses(path: Path) -> bool:
    try:
        import onnx

        onnx.load(str(path), load_external_data=False)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ONNX" while sniffing
        return False


def _check_magic(fmt: str, path: Path, head: bytes, sniffed: str | None) -> None:
    """The extension says ``fmt``: check the bytes agree, or say what the file really is."""
    where = str(path)
    mismatch = sniffed is not None and sniffed != fmt

    def fail(what: str) -> None:
        also = f"; it looks like a {sniffed} file" if mismatch else ""
        raise ModelFormatError(what + also, where=where,
                               hint=f"re-export the model, or rename it to the right extension ({FORMATS_HINT})")

    if mismatch:
        fail(f"the extension says {fmt} but the contents do not match")
    if fmt == "qir":
        fail("a .qir model is a folder (graph.json + weights.npz), this is a file")
    if fmt == "tflite" and head[4:8] != TFLITE_IDENT:
        fail("not a TFLite flatbuffer (no 'TFL3' identifier at bytes 4..8)")
    if fmt == "keras":
        if path.suffix.lower() == ".keras" and not head.startswith(ZIP_MAGIC):
            fail("not a .keras archive (no zip header)")
        if path.suffix.lower() in (".h5", ".hdf5") and not head.startswith(HDF5_MAGIC):
            fail("not an HDF5 file (no HDF5 signature)")
    if fmt == "torch" and not (head.startswith(ZIP_MAGIC) or head[:2] in PICKLE_PROTO):
        fail("not a torch.save file (neither a zip archive nor a pickle)")
    if fmt == "onnx" and not _looks_like_onnx(head):
        fail("not an ONNX protobuf")


def parse_model_class(spec: str | type | Callable[..., Any]) -> Any:
    """Resolve ``pkg.mod:Class`` (or ``path/to/file.py:Class``) to the class object."""
    if not isinstance(spec, str):
        return spec
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise QtcError(f"--model-class {spec!r} is not of the form pkg.module:ClassName",
                       hint="e.g. --model-class models.peer_encoder:PeerEncoder")
    try:
        if mod_name.endswith(".py"):
            file = Path(mod_name)
            if not file.exists():
                raise QtcError(f"model class file {mod_name} does not exist", hint="check the path")
            mspec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(mspec)
            sys.modules[file.stem] = module
            mspec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # like `python -m`: modules beside you import
            module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise QtcError(f"cannot import module {mod_name!r} for --model-class ({exc})",
                       hint="run qtc from the folder that contains the package, or set PYTHONPATH") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise QtcError(f"module {mod_name!r} has no attribute {attr!r}", hint="check the class name")
        obj = getattr(obj, part)
    return obj


def _decode_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'this file cannot be decoded' (truncated/corrupt), from any reader."""
    types: list[type[BaseException]] = [zipfile.BadZipFile, pickle.UnpicklingError, EOFError, UnicodeDecodeError]
    try:
        from google.protobuf.message import DecodeError

        types.append(DecodeError)
    except ImportError:  # pragma: no cover - onnx always brings protobuf
        pass
    return tuple(types)


def load_model(path: str | os.PathLike, *, input_shapes: dict[str, tuple[int, ...]] | None = None,
               model_class: str | type | None = None, fmt: str | None = None) -> Graph:
    """Load any supported model file into a Graph (see the module docstring)."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise ModelFormatError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    fmt = fmt or detect_format(path)
    where = str(path)
    if fmt == "torch" and model_class is None:
        raise QtcError("a torch checkpoint needs the model's class to rebuild it", where=where,
                       hint="pass --model-class pkg.module:ClassName (the nn.Module the state dict belongs to)")
    if input_shapes and fmt in ("tflite", "keras", "qir"):
        raise QtcError(f"--input-shape applies to ONNX and torch models; {fmt} models have fixed shapes",
                       where=where, hint="drop --input-shape")
    try:
        if fmt == "qir":
            from ..ir.serialize import load

            return load(path)
        if fmt == "onnx":
            from .onnx import load_onnx

            return load_onnx(path, input_shapes=input_shapes)
        if fmt == "tflite":
            from .tflite import load_tflite

            return load_tflite(path)
        if fmt == "keras":
            from .keras import load_keras

            return load_keras(path)
        cls = parse_model_class(model_class)  # fail fast, before importing torch
        from .torch import load_torch

        # the torch front end takes "module:Qualname"; a class from a .py file is in sys.modules by now
        return load_torch(path, f"{cls.__module__}:{cls.__qualname__}", input_shapes=input_shapes)
    except QtcError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("qtc.frontends"):
            raise QtcError(f"the {fmt} front end is not available in this qtc build", where=where,
                           hint="convert the model to ONNX or .tflite") from None
        raise QtcError(f"reading a {fmt} model needs the Python package {exc.name!r}", where=where,
                       hint=f"pip install {exc.name} (or the qtc extras: pip install 'qtc[torch,tf]')") from None
    except _decode_error_types() as exc:
        raise ModelFormatError(f"cannot decode the {fmt} file, it is corrupt or truncated "
                               f"({type(exc).__name__}: {exc})", where=where,
                               hint="re-export the model; check the copy is complete") from None
