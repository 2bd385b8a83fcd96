"""PyTorch front end via ``torch.export``.

* ``from_torch(module, example_inputs, name=None) -> Graph`` exports the module
  in eval mode; if the exported program mutates anything or holds an ATen op
  this importer does not map directly, it is decomposed (functionalised, and
  every unmapped op lowered to core ATen) first.  The result is lowered to the
  qtc IR (channels-first, Conv weights OIHW → OHWI).
* ``load_torch(weights_path, model_class, example_inputs=None, input_shapes=None,
  class_kwargs=None) -> Graph`` builds ``model_class`` ("pkg.module:Class"),
  loads a **state dict** with ``torch.load(..., weights_only=True)`` (a pickled
  module is refused without running any of its code) and calls ``from_torch``.

Nodes whose inputs are all constants (weight permutes, shape arithmetic) are
evaluated with torch itself; the per-op lowering lives in :mod:`.torch_ops`.
"""
from __future__ import annotations

import hashlib
import importlib
import operator
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError, QtcError, ShapeError, UnsupportedOpError
from ..ir.graph import Graph
from ..ir.validate import validate
from ._builder import GraphBuilder, clean_name


class T:
    """A value computed at run time: the name of an IR tensor."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"T({self.name})"


def from_torch(module, example_inputs: tuple, name: str | None = None, *, input_names: list[str] | None = None,
               source: str | None = None) -> Graph:
    """Export ``module`` with torch.export and lower it to the qtc IR."""
    import torch

    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    gname = clean_name(name or type(module).__name__, "model")
    module = module.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(module, example_inputs)
    except Exception as exc:  # noqa: BLE001 - torch raises many types here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QtcError(f"torch.export could not trace the model: {first[:300]}", where=gname,
                       hint="make forward() traceable (no data-dependent Python control flow), "
                            "or export to ONNX and use load_onnx") from None
    if _needs_decomposition(ep):
        ep = ep.run_decompositions(_decomp_table())
    low = _Lowering(ep, gname, source or gname, input_names)
    g = low.run()
    g.metadata.update({
        "source_format": "torch",
        "source_file": None,
        "source_sha256": None,
        "torch_version": torch.__version__,
        "torch_class": f"{type(module).__module__}:{type(module).__qualname__}",
    })
    validate(g)
    return g


def _needs_decomposition(ep) -> bool:
    """False when every op is one we lower directly and nothing mutates (decomposing is slow)."""
    from torch.export.graph_signature import OutputKind

    from .torch_ops import HANDLERS

    if any(s.kind != OutputKind.USER_OUTPUT for s in ep.graph_signature.output_specs):
        return True
    for n in ep.graph.nodes:
        if n.op != "call_function" or n.target is operator.getitem:
            continue
        schema = getattr(n.target, "_schema", None)
        if schema is None or schema.is_mutable or _packet(n.target) not in HANDLERS:
            return True
    return False


def _decomp_table():
    """Core-ATen decompositions, minus every op we lower directly."""
    import torch

    from .torch_ops import HANDLERS

    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        packet = op.name().split("::")[-1].split(".")[0]
        if packet in HANDLERS:
            del table[op]
    return table


class _Lowering:
    def __init__(self, ep, name: str, where: str, input_names: list[str] | None):
        self.ep = ep
        self.b = GraphBuilder(name, where)
        self.where = where
        self.input_names = list(input_names or [])
        self.env: dict = {}
        self._const_cache: dict[tuple[int, str], tuple[object, str]] = {}
        self._const_names: dict[int, str] = {}  # id(parameter tensor) → its state-dict name
        self.reserved = {clean_name(n.name) for n in ep.graph.nodes}

    # --------------------------------------------------------------- values
    def t(self, v, like: str | None = None) -> str:
        """IR tensor name for a value; constants become IR constants (scalars take ``like``'s dtype)."""
        import torch

        if isinstance(v, T):
            return v.name
        if isinstance(v, torch.Tensor):
            arr = v.detach().cpu().numpy()
            if like is not None and arr.dtype.kind in "fiub" and self.b.dtype(like) == "float32":
                arr = arr.astype(np.float32)  # an operand of a float op
            key = (id(v), str(arr.dtype))
            if key not in self._const_cache:  # keeps ``v`` alive, so its id stays unique
                self._const_cache[key] = (v, self.b.const(self._const_names.get(id(v), "const"), arr))
            return self._const_cache[key][1]
        if isinstance(v, (bool, int, float)):
            dtype = self.b.dtype(like) if like is not None else "float32"
            return self.b.const("scalar", np.asarray(v, dtype=dtype if dtype != "bool" else "float32"))
        raise TypeError(f"cannot use {type(v).__name__} as a tensor")

    def name_of(self, v, fallback: str) -> str:
        """The state-dict name of a parameter (e.g. ``stem.weight``), else ``fallback``."""
        return self._const_names.get(id(v), fallback)

    def np(self, v):
        """Numpy value of a constant (torch tensor / number) or None for run-time tensors."""
        import torch

        if isinstance(v, T):
            return None
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().numpy()
        return np.asarray(v)

    def shape(self, v) -> tuple[int, ...]:
        return self.b.shape(v.name) if isinstance(v, T) else tuple(np.shape(self.np(v)))

    def rank(self, v) -> int:
        return len(self.shape(v))

    def node_where(self, n) -> str:
        stack = n.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return f"{self.where}: node {n.name}" + (f" (in module {path})" if path else "")

    def emit(self, op: str, inputs: list[str], n, final: bool = True, suffix: str = "", **attrs) -> T:
        if final:
            out = [n.name]
        else:  # an intermediate never takes the name of another fx node
            stem = clean_name(f"{n.name}{suffix or '_' + op.lower()}")
            name, i = stem, 1
            while name in self.reserved or name in self.b.g.tensors:
                name, i = f"{stem}_{i}", i + 1
            out = [name]
        name = self.b.node1(op, inputs, f"{n.name}{suffix}", outputs=out, src=self.node_where(n), **attrs)
        return T(name)

    # ------------------------------------------------------------------ run
    def run(self) -> Graph:
        import torch
        from torch.export.graph_signature import InputKind, OutputKind

        sig = self.ep.graph_signature
        specs = {s.arg.name: s for s in sig.input_specs if hasattr(s.arg, "name")}
        state, consts = self.ep.state_dict, self.ep.constants
        user_i = 0
        for n in self.ep.graph.nodes:
            if n.op == "placeholder":
                spec = specs.get(n.name)
                if spec is None or spec.kind == InputKind.USER_INPUT:
                    val = n.meta.get("val")
                    if not isinstance(val, torch.Tensor):
                        raise UnsupportedOpError(f"model input {n.name!r} is not a tensor", where=self.where,
                                                 hint="pass only tensors as example inputs")
                    iname = self.input_names[user_i] if user_i < len(self.input_names) else n.name
                    user_i += 1
                    self.env[n] = T(self.b.input(iname, tuple(int(d) for d in val.shape), _dtype(val.dtype)))
                else:
                    tgt = spec.target
                    val = state.get(tgt) if tgt in state else consts.get(tgt)
                    if val is None:
                        raise ModelFormatError(f"exported program lacks the value of {tgt!r}", where=self.where)
                    self.env[n] = val.detach()
                    self._const_names[id(self.env[n])] = tgt
            elif n.op == "call_function":
                self.env[n] = self._call(n)
            elif n.op == "output":
                user = {s.arg.name for s in sig.output_specs if s.kind == OutputKind.USER_OUTPUT}
                outs = []
                for a in _flat(n.args[0]):
                    if getattr(a, "name", None) in user:
                        outs.append(self.t(self.env[a]))
                return self.b.finish(outs)
        raise ModelFormatError("exported program has no output node", where=self.where)

    def _call(self, n):
        import torch
        from torch.fx.node import map_arg

        args = map_arg(n.args, lambda a: self.env[a])
        kwargs = map_arg(n.kwargs, lambda a: self.env[a])
        if n.target is operator.getitem:
            return args[0][args[1]]
        if not any(isinstance(v, T) for v in _flat((args, kwargs))):
            try:
                with torch.no_grad():
                    return n.target(*args, **kwargs)  # constant: evaluate with torch
            except Exception as exc:  # noqa: BLE001
                raise QtcError(f"could not evaluate constant expression {n.target}: {exc}",
                               where=self.node_where(n)) from None
        from .torch_ops import HANDLERS

        packet = _packet(n.target)
        h = HANDLERS.get(packet)
        if h is None:
            raise UnsupportedOpError(f"torch op {n.target} is not supported", where=self.node_where(n),
                                     hint="replace it with supported layers (see 'qtc ops') or export to ONNX")
        return h(self, n, list(args), dict(kwargs))


def _packet(target) -> str:
    name = target.name() if hasattr(target, "name") and callable(target.name) else str(target)
    return name.split("::")[-1].split(".")[0]


def _flat(x):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flat(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _flat(y)
    else:
        yield x


def _dtype(tdt) -> str:
    s = str(tdt).replace("torch.", "")
    if s in ("float32", "float16", "bfloat16", "float64"):
        return "float32"
    if s in ("int64", "int32", "int16", "int8", "uint8", "bool"):
        return s
    raise UnsupportedOpError(f"tensor dtype {s} is not supported", hint="use float32 inputs")


# ------------------------------------------------------------ load_torch
def load_torch(weights_path, model_class: str, example_inputs=None, input_shapes=None,
               class_kwargs: dict | None = None, name: str | None = None) -> Graph:
    """Build ``model_class`` ("pkg.module:Class"), load a state dict into it and import it."""
    import torch

    path = Path(weights_path)
    where = str(path)
    if not path.is_file():
        raise ModelFormatError("file not found", where=where, hint="check the path to the weights file")
    data = path.read_bytes()
    state = _load_state_dict(path, where)
    cls = _import_class(model_class)
    try:
        model = cls(**(class_kwargs or {}))
    except Exception as exc:  # noqa: BLE001
        raise QtcError(f"could not construct {model_class}: {type(exc).__name__}: {exc}", where=where,
                       hint="pass the constructor arguments (class_kwargs / --class-kwargs)") from None
    if not isinstance(model, torch.nn.Module):
        raise QtcError(f"{model_class} is not a torch.nn.Module", where=where, hint="name an nn.Module subclass")
    _load_into(model, state, where, model_class)
    inputs, names = _example_inputs(example_inputs, input_shapes, where)
    g = from_torch(model, inputs, name=name or cls.__name__, input_names=names, source=path.name)
    g.metadata.update({"source_file": path.name, "source_sha256": hashlib.sha256(data).hexdigest(),
                       "source_format": "torch"})
    return g


def _load_state_dict(path: Path, where: str) -> dict:
    import pickle

    import torch

    fix = "save model.state_dict() with torch.save(model.state_dict(), path) and load that"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise QtcError(f"{path.name} is a pickled module, not a state dict; qtc will not unpickle code",
                       where=where, hint=fix) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFormatError(f"cannot read the weights file, it is truncated or corrupt "
                               f"({str(exc).splitlines()[0][:200]})", where=where,
                               hint="save it again with torch.save(model.state_dict(), path)") from None
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping) and _is_state_dict(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise QtcError(f"{path.name} holds a {type(obj).__name__}, not a state dict of tensors", where=where,
                       hint=fix)
    return dict(obj)


def _is_state_dict(obj) -> bool:
    import torch

    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _import_class(spec: str):
    if not isinstance(spec, str) or ":" not in spec:
        raise QtcError(f"model class {spec!r} is not of the form 'pkg.module:Class'",
                       hint="e.g. --model-class mypkg.nets:TinyCNN")
    mod_name, _, qual = spec.partition(":")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise QtcError(f"cannot import module {mod_name!r}: {exc}",
                       hint="put the module on PYTHONPATH or install its package") from None
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise QtcError(f"module {mod_name!r} has no attribute {qual!r}", hint="check the class name")
    return obj


def _load_into(model, state: dict, where: str, model_class: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:4]}{' …' if len(missing) > 4 else ''} ({len(missing)} in all)")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:4]}{' …' if len(unexpected) > 4 else ''} "
                         f"({len(unexpected)} in all)")
        raise QtcError(f"state dict does not match {model_class}: " + "; ".join(parts), where=where,
                       hint="use the class (and class_kwargs) the weights were trained with")
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise QtcError(f"state dict shapes do not match {model_class}: {bad[:3]}", where=where,
                       hint="use the class_kwargs the weights were trained with")
    model.load_state_dict(state, strict=True)


def _example_inputs(example_inputs, input_shapes, where: str):
    import torch

    if example_inputs is not None:
        if not isinstance(example_inputs, (tuple, list)):
            example_inputs = (example_inputs,)
        return tuple(example_inputs), None
    if not input_shapes:
        raise ShapeError("no example inputs or input shapes given", where=where,
                         hint="pass --input-shape input=1,3,224,224 (input_shapes={'input': (1, 3, 224, 224)})")
    if isinstance(input_shapes, Mapping):
        names = list(input_shapes)
        shapes = [tuple(int(d) for d in input_shapes[k]) for k in names]
    else:
        names, shapes = None, [tuple(int(d) for d in s) for s in input_shapes]
    return tuple(torch.zeros(s, dtype=torch.float32) for s in shapes), names
