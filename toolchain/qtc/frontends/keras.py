"""tf_keras front end: a Sequential or Functional model → qtc IR (float, channels-last).

Weights are re-laid out to the IR's fixed layouts:

* Dense kernel ``[I, O]`` → FullyConnected w ``[O, I]``;
* Conv2D kernel ``[KH, KW, I/g, O]`` → w ``[O, KH, KW, I/g]`` (Conv1D likewise);
* DepthwiseConv2D kernel ``[KH, KW, C, M]`` → w ``[C*M, KH, KW, 1]``, ``groups = C``;
* SeparableConv2D → a depthwise Conv2D followed by a 1x1 Conv2D.

BatchNormalization becomes an IR ``BatchNorm`` node (a canonicalization pass
folds it).  Dropout-like layers are identities and vanish.  The batch
dimension is fixed to ``batch_size`` (1 by default).  A ``relu``/``relu6``
activation kwarg is fused into the op that supports it; other activations
become their own node.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable

import numpy as np

from ..errors import ModelFormatError, QtcError, ShapeError, UnsupportedOpError
from ..ir.graph import Graph
from ..ir.validate import infer_shapes, validate
from ..ops._util import same_pads

_FUSABLE = {"Conv1D", "Conv2D", "FullyConnected", "Add", "Sub", "Mul", "MaxPool", "AvgPool"}
_IDENTITY_LAYERS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                    "GaussianDropout", "AlphaDropout", "ActivityRegularization"}


def _keras():
    try:
        import tf_keras
    except ImportError:
        raise QtcError("tf_keras is not installed", hint="pip install tf-keras (matching your TensorFlow)") from None
    return tf_keras


def load_keras(path, batch_size: int = 1, name: str | None = None) -> Graph:
    """Load a saved tf_keras model (.keras, .h5 or SavedModel dir) and import it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFormatError("model file does not exist", where=path, hint="check the path")
    keras = _keras()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is a format problem for the user
        raise ModelFormatError(f"tf_keras cannot load the model ({type(exc).__name__}: {str(exc)[:200]})",
                               where=path, hint="save it with tf_keras (model.save('m.keras')), not Keras 3") from None
    g = from_keras(model, batch_size=batch_size, name=name or os.path.splitext(os.path.basename(path))[0])
    g.metadata["source_file"] = os.path.basename(path)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            g.metadata["source_sha256"] = hashlib.sha256(f.read()).hexdigest()
    return g


def from_keras(model, batch_size: int = 1, name: str | None = None) -> Graph:
    """Import a built tf_keras Sequential/Functional model into a validated float Graph."""
    keras = _keras()
    if not isinstance(model, keras.Model):
        raise UnsupportedOpError(f"expected a tf_keras Model, got {type(model).__module__}.{type(model).__name__}",
                                 where="from_keras", hint="build the model with tf_keras (import tf_keras as keras)")
    if not getattr(model, "_is_graph_network", False) or not model.inputs:
        raise UnsupportedOpError(f"model {model.name!r} is subclassed or not built", where="from_keras",
                                 hint="use a Sequential/Functional model and give it an input shape")
    imp = _KerasImporter(Graph(name=name or model.name), int(batch_size))
    in_names = []
    for t in model.inputs:
        shape = [int(batch_size)] + list(t.shape[1:])
        if any(d is None for d in shape):
            raise ShapeError(f"model input {t.name!r} has dynamic dims {tuple(t.shape)}", where=f"model {model.name}",
                             hint="rebuild the model with a fully static input shape")
        nm = imp.g.unique_name(t.name.split(":")[0])
        imp.g.add_tensor(nm, shape, "float32")
        in_names.append(nm)
    imp.g.inputs = list(in_names)
    outs = imp.import_model(model, in_names, prefix="")
    imp.g.outputs = list(dict.fromkeys(outs))
    g = imp.g
    g.remove_unused_tensors()
    infer_shapes(g)
    for o, kshape in zip(outs, _output_shapes(model)):
        want = (int(batch_size), *[int(d) for d in kshape[1:]])
        if g.tensors[o].shape != want:
            raise ShapeError(f"output {o!r}: qtc infers {g.tensors[o].shape}, Keras gives {want}",
                             where=f"model {model.name}", hint="report this as an importer bug")
    validate(g)
    g.metadata.update({"source_format": "keras", "keras_model": model.name, "batch_size": int(batch_size)})
    return g


def _output_shapes(model) -> list[tuple]:
    return [tuple(t.shape) for t in model.outputs]


class _KerasImporter:
    def __init__(self, g: Graph, batch: int):
        self.g = g
        self.batch = batch
        self.layer = None

    # ------------------------------------------------------------ helpers
    def where(self) -> str:
        return f"layer {self.layer.name!r} ({type(self.layer).__name__})" if self.layer is not None else "model"

    def shape(self, name: str) -> tuple[int, ...]:
        return self.g.tensors[name].shape

    def const(self, base: str, arr: np.ndarray) -> str:
        return self.g.add_const(base, np.ascontiguousarray(np.asarray(arr, dtype=np.float32))).name

    def emit(self, op: str, inputs: list[str], base: str, n_out: int = 1, **attrs) -> list[str]:
        """Add a node and its output tensors (shapes from the op's own rule)."""
        from ..ops.registry import get_op, has_op

        if not has_op(op):
            raise UnsupportedOpError(f"IR op {op} is not available in this qtc build", where=self.where(),
                                     hint="update qtc; the op registry lacks it")
        outs = [self.g.unique_name(base if n_out == 1 else f"{base}:{i}") for i in range(n_out)]
        for o in outs:
            self.g.add_tensor(o, (), "float32")
        node = self.g.add_node(op, inputs, outs, name=base, **attrs)
        ins = [self.g.tensors[i] if i else None for i in inputs]
        try:
            specs = get_op(op).infer(node, ins)
        except (ValueError, IndexError) as exc:
            raise ShapeError(f"{op}: {exc}", where=self.where(), hint="check the layer's input shapes") from None
        for o, spec in zip(outs, specs):
            self.g.tensors[o].shape = tuple(int(d) for d in spec.shape)
            self.g.tensors[o].dtype = spec.dtype
        return outs

    def emit1(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        return self.emit(op, inputs, base, **attrs)[0]

    def activation(self, act, x: str, base: str, fuse_node: bool = False) -> str:
        """Apply a Keras activation (name string) to ``x``; fuse relu/relu6 into the producer if allowed."""
        act = _act_name(act)
        if act in ("linear", None, ""):
            return x
        if fuse_node and act in ("relu", "relu6"):
            node = self.g.nodes[-1]
            if node.outputs == [x] and node.op in _FUSABLE and node.attrs.get("activation", "none") == "none":
                node.attrs["activation"] = act
                return x
        spec = _ACTIVATIONS.get(act)
        if spec is None:
            raise UnsupportedOpError(f"activation {act!r} is not supported", where=self.where(),
                                     hint=f"use one of: {', '.join(sorted(_ACTIVATIONS))}")
        op, attrs = spec
        return self.emit1(op, [x], f"{base}/{act}", **attrs)

    # ------------------------------------------------------------ model walk
    def import_model(self, model, in_names: list[str], prefix: str) -> list[str]:
        """Walk the model's live layer graph (deepest nodes first); returns the output tensor names."""
        import tensorflow as tf

        env: dict = {}  # KerasTensor ref → IR tensor name
        for t, nm in zip(model.inputs, in_names):
            env[t.ref()] = nm
        calls_per_layer: dict[int, int] = {}
        nodes = [n for d in sorted(model._nodes_by_depth, reverse=True) for n in model._nodes_by_depth[d]
                 if not n.is_input]
        for n in nodes:
            calls_per_layer[id(n.layer)] = calls_per_layer.get(id(n.layer), 0) + 1
        seen: dict[int, int] = {}
        for node in nodes:
            layer = node.layer
            args = list(node.keras_inputs)
            missing = [t for t in args if t.ref() not in env]
            if missing:
                raise UnsupportedOpError(f"input {missing[0].name!r} of layer {layer.name!r} is not computed from "
                                         f"the model inputs", where=f"model {model.name}",
                                         hint="every layer input must come from a keras.Input of the model")
            k = seen.get(id(layer), 0)
            seen[id(layer)] = k + 1
            base = prefix + (layer.name if calls_per_layer[id(layer)] == 1 else f"{layer.name}_{k}")
            outs = self.import_layer(layer, [env[t.ref()] for t in args], base)
            node_outs = tf.nest.flatten(node.outputs)
            if len(node_outs) != len(outs):
                raise UnsupportedOpError(f"layer {layer.name!r} gives {len(node_outs)} outputs, qtc made {len(outs)}",
                                         where=f"model {model.name}", hint="report this as an importer bug")
            for t, o in zip(node_outs, outs):
                env[t.ref()] = o
        outs = []
        for t in model.outputs:
            if t.ref() not in env:
                raise UnsupportedOpError(f"model output {t.name!r} is not computed from the inputs",
                                         where=f"model {model.name}", hint="check the model's outputs")
            outs.append(env[t.ref()])
        return outs

    def import_layer(self, layer, inputs: list[str], base: str) -> list[str]:
        keras = _keras()
        if isinstance(layer, keras.Model):
            return self.import_model(layer, inputs, prefix=base + "/")
        kind = type(layer).__name__
        if kind in _IDENTITY_LAYERS:
            return list(inputs)
        if kind == "InputLayer":
            return list(inputs)
        conv = _LAYERS.get(kind)
        if conv is None:
            raise UnsupportedOpError(f"Keras layer {kind} is not supported", where=f"layer {layer.name!r} ({kind})",
                                     hint=f"supported layers: {', '.join(sorted(_LAYERS))}")
        cfg = layer.get_config()
        fmt = cfg.get("data_format")
        if fmt not in (None, "channels_last"):
            raise UnsupportedOpError(f"data_format={fmt} is not supported", where=f"layer {layer.name!r} ({kind})",
                                     hint="build the model channels_last (the Keras default)")
        self.layer = layer
        out = conv(self, layer, cfg, inputs, base)
        self.layer = None
        return out if isinstance(out, list) else [out]


def _act_name(act) -> str | None:
    if act is None:
        return None
    if isinstance(act, str):
        return act
    if isinstance(act, dict):
        return act.get("config", act).get("name", act.get("class_name"))
    return getattr(act, "__name__", str(act))


_ACTIVATIONS: dict[str, tuple[str, dict]] = {
    "relu": ("Relu", {}),
    "relu6": ("Relu6", {}),
    "sigmoid": ("Sigmoid", {}),
    "tanh": ("Tanh", {}),
    "softmax": ("Softmax", {"axis": -1}),
    "gelu": ("Gelu", {"approximate": "none"}),
    "swish": ("Silu", {}),
    "silu": ("Silu", {}),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
    "hard_swish": ("HardSwish", {}),
    "hard_silu": ("HardSwish", {}),
}


# --------------------------------------------------------------------------- layer converters
def _same_pads(in_sp, kernel, strides, dilations, padding: str) -> list[int]:
    """TF padding rule as explicit ONNX-ordered pads."""
    n = len(in_sp)
    if padding == "valid":
        return [0] * (2 * n)
    if padding == "causal":
        return [(kernel[0] - 1) * dilations[0], 0]
    return same_pads(in_sp, kernel, strides, dilations)


def _tuple(v, n: int) -> list[int]:
    if isinstance(v, (int, np.integer)):
        return [int(v)] * n
    return [int(a) for a in v]


def _dense(imp: _KerasImporter, layer, cfg, ins, base):
    w = layer.kernel.numpy().T
    b = layer.bias.numpy() if cfg.get("use_bias", True) else None
    args = [ins[0], imp.const(f"{base}/w", w), imp.const(f"{base}/b", b) if b is not None else ""]
    y = imp.emit1("FullyConnected", args, base)
    return imp.activation(cfg.get("activation"), y, base, fuse_node=True)


def _conv_common(imp, cfg, ins, base, w_ir, bias, groups, nsp, activation=None, strides=None, dil=None,
                 padding=None):
    x = ins[0]
    strides = strides or _tuple(cfg["strides"], nsp)
    dil = dil or _tuple(cfg.get("dilation_rate", 1), nsp)
    kernel = list(w_ir.shape[1:1 + nsp])
    pads = _same_pads(imp.shape(x)[1:1 + nsp], kernel, strides, dil, padding or cfg["padding"])
    args = [x, imp.const(f"{base}/w", w_ir), imp.const(f"{base}/b", bias) if bias is not None else ""]
    y = imp.emit1("Conv2D" if nsp == 2 else "Conv1D", args, base, strides=strides, dilations=dil, pads=pads,
                  groups=groups, channels_last=True)
    return imp.activation(activation, y, base, fuse_node=True)


def _conv(imp, layer, cfg, ins, base):
    nsp = layer.kernel.shape.rank - 2
    k = layer.kernel.numpy()  # [*K, I/g, O]
    w = np.moveaxis(k, -1, 0)  # [O, *K, I/g]
    b = layer.bias.numpy() if cfg.get("use_bias", True) else None
    return _conv_common(imp, cfg, ins, base, w, b, int(cfg.get("groups", 1)), nsp, cfg.get("activation"))


def _depthwise_weight(k: np.ndarray) -> np.ndarray:
    """[*K, C, M] → [C*M, *K, 1] with output channel c*M + m (TF's order)."""
    nsp = k.ndim - 2
    flat = k.reshape(*k.shape[:nsp], -1)  # [*K, C*M]
    return np.moveaxis(flat, -1, 0)[..., None]


def _depthwise(imp, layer, cfg, ins, base):
    k = layer.depthwise_kernel.numpy()
    nsp = k.ndim - 2
    b = layer.bias.numpy() if cfg.get("use_bias", True) else None
    return _conv_common(imp, cfg, ins, base, _depthwise_weight(k), b, k.shape[-2], nsp, cfg.get("activation"))


def _separable(imp, layer, cfg, ins, base):
    dk = layer.depthwise_kernel.numpy()
    nsp = dk.ndim - 2
    dw = _conv_common(imp, cfg, ins, f"{base}/depthwise", _depthwise_weight(dk), None, dk.shape[-2], nsp)
    pk = layer.pointwise_kernel.numpy()  # [1.., C*M, O]
    b = layer.bias.numpy() if cfg.get("use_bias", True) else None
    return _conv_common(imp, cfg, [dw], base, np.moveaxis(pk, -1, 0), b, 1, nsp, cfg.get("activation"),
                        strides=[1] * nsp, dil=[1] * nsp, padding="valid")


def _batchnorm(imp, layer, cfg, ins, base):
    x = ins[0]
    rank = len(imp.shape(x))
    axis = cfg["axis"]
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if not isinstance(axis, int) or axis % rank != rank - 1:
        raise UnsupportedOpError(f"BatchNormalization over axis {axis} is not supported", where=imp.where(),
                                 hint="normalize over the last (channel) axis")
    c = imp.shape(x)[-1]
    gamma = layer.gamma.numpy() if layer.gamma is not None else np.ones(c, np.float32)
    beta = layer.beta.numpy() if layer.beta is not None else np.zeros(c, np.float32)
    args = [x, imp.const(f"{base}/gamma", gamma), imp.const(f"{base}/beta", beta),
            imp.const(f"{base}/mean", layer.moving_mean.numpy()), imp.const(f"{base}/var", layer.moving_variance.numpy())]
    return imp.emit1("BatchNorm", args, base, epsilon=float(cfg["epsilon"]), channels_last=True)


def _layernorm(imp, layer, cfg, ins, base):
    x = ins[0]
    rank = len(imp.shape(x))
    axis = cfg["axis"]
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if len(axes) != 1 or axes[0] % rank != rank - 1:
        raise UnsupportedOpError(f"LayerNormalization over axes {axes} is not supported", where=imp.where(),
                                 hint="normalize over the last axis only")
    c = imp.shape(x)[-1]
    gamma = layer.gamma.numpy() if layer.gamma is not None else np.ones(c, np.float32)
    beta = layer.beta.numpy() if layer.beta is not None else np.zeros(c, np.float32)
    args = [x, imp.const(f"{base}/gamma", gamma), imp.const(f"{base}/beta", beta)]
    return imp.emit1("LayerNorm", args, base, axis=-1, epsilon=float(cfg["epsilon"]))


def _activation_layer(imp, layer, cfg, ins, base):
    return imp.activation(cfg["activation"], ins[0], base)


def _relu_layer(imp, layer, cfg, ins, base):
    mx = cfg.get("max_value")
    mx = None if mx is None else float(mx)
    slope = float(cfg.get("negative_slope", 0.0) or 0.0)
    thr = float(cfg.get("threshold", 0.0) or 0.0)
    if thr != 0.0:
        raise UnsupportedOpError("ReLU with a threshold is not supported", where=imp.where(),
                                 hint="use threshold=0")
    if slope != 0.0:
        if mx is not None:
            raise UnsupportedOpError("ReLU with both max_value and negative_slope is not supported",
                                     where=imp.where(), hint="use LeakyReLU or a plain clipped ReLU")
        return imp.emit1("LeakyRelu", [ins[0]], base, alpha=slope)
    if mx is None:
        return imp.emit1("Relu", [ins[0]], base)
    if mx == 6.0:
        return imp.emit1("Relu6", [ins[0]], base)
    return imp.emit1("Clip", [ins[0]], base, min=0.0, max=mx)


def _leaky_relu(imp, layer, cfg, ins, base):
    return imp.emit1("LeakyRelu", [ins[0]], base, alpha=float(cfg.get("alpha", 0.3)))


def _softmax(imp, layer, cfg, ins, base):
    axis = cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise UnsupportedOpError(f"Softmax over axes {axis} is not supported", where=imp.where(),
                                     hint="use a single axis")
        axis = axis[0]
    return imp.emit1("Softmax", [ins[0]], base, axis=int(axis))


def _pool(op: str, nsp: int) -> Callable:
    def conv(imp, layer, cfg, ins, base):
        kernel = _tuple(cfg["pool_size"], nsp)
        strides = _tuple(cfg["strides"] if cfg.get("strides") is not None else kernel, nsp)
        pads = _same_pads(imp.shape(ins[0])[1:1 + nsp], kernel, strides, [1] * nsp, cfg["padding"])
        return imp.emit1(op, [ins[0]], base, kernel=kernel, strides=strides, pads=pads, channels_last=True)
    return conv


def _global_avg(imp, layer, cfg, ins, base):
    return imp.emit1("GlobalAvgPool", [ins[0]], base, channels_last=True, keepdims=bool(cfg.get("keepdims", False)))


def _global_max(imp, layer, cfg, ins, base):
    rank = len(imp.shape(ins[0]))
    return imp.emit1("ReduceMax", [ins[0]], base, axes=list(range(1, rank - 1)),
                     keepdims=bool(cfg.get("keepdims", False)))


def _flatten(imp, layer, cfg, ins, base):
    shp = imp.shape(ins[0])
    return imp.emit1("Reshape", [ins[0]], base, shape=[shp[0], int(np.prod(shp[1:]))])


def _reshape(imp, layer, cfg, ins, base):
    shp = imp.shape(ins[0])
    target = [int(d) for d in cfg["target_shape"]]
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target[target.index(-1)] = int(np.prod(shp[1:])) // known
    return imp.emit1("Reshape", [ins[0]], base, shape=[shp[0], *target])


def _nary(op: str) -> Callable:
    def conv(imp, layer, cfg, ins, base):
        if len(ins) < 2:
            raise UnsupportedOpError(f"{type(layer).__name__} needs at least 2 inputs", where=imp.where(),
                                     hint="check the model")
        y = ins[0]
        for i, other in enumerate(ins[1:]):
            y = imp.emit1(op, [y, other], base if i == len(ins) - 2 else f"{base}/{i}")
        return y
    return conv


def _subtract(imp, layer, cfg, ins, base):
    return imp.emit1("Sub", [ins[0], ins[1]], base)


def _concat(imp, layer, cfg, ins, base):
    return imp.emit1("Concat", list(ins), base, axis=int(cfg.get("axis", -1)))


def _zero_pad(nsp: int) -> Callable:
    def conv(imp, layer, cfg, ins, base):
        p = cfg["padding"]
        if nsp == 1:
            pairs = [tuple(p)] if isinstance(p, (list, tuple)) else [(p, p)]
        else:
            pairs = [tuple(q) if isinstance(q, (list, tuple)) else (q, q) for q in p]
        begins = [0] + [int(a) for a, _ in pairs] + [0]
        ends = [0] + [int(b) for _, b in pairs] + [0]
        return imp.emit1("Pad", [ins[0]], base, pads=begins + ends, value=0.0)
    return conv


def _upsample2d(imp, layer, cfg, ins, base):
    sh, sw = _tuple(cfg["size"], 2)
    interp = cfg.get("interpolation", "nearest")
    if interp not in ("nearest", "bilinear"):
        raise UnsupportedOpError(f"UpSampling2D interpolation {interp!r} is not supported", where=imp.where(),
                                 hint="use 'nearest' or 'bilinear'")
    _, h, w, _ = imp.shape(ins[0])
    # Keras resizes with tf.image.resize: half-pixel centres for bilinear;
    # for nearest with an integer factor every coordinate mode gives the same result.
    ctm = "half_pixel" if interp == "bilinear" else "asymmetric"
    return imp.emit1("Resize", [ins[0]], base, mode=interp, size=[h * sh, w * sw],
                     coordinate_transformation_mode=ctm, channels_last=True)


_LAYERS: dict[str, Callable] = {
    "Dense": _dense,
    "Conv1D": _conv,
    "Conv2D": _conv,
    "DepthwiseConv1D": _depthwise,
    "DepthwiseConv2D": _depthwise,
    "SeparableConv1D": _separable,
    "SeparableConv2D": _separable,
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "Activation": _activation_layer,
    "ReLU": _relu_layer,
    "LeakyReLU": _leaky_relu,
    "Softmax": _softmax,
    "MaxPooling1D": _pool("MaxPool", 1),
    "MaxPooling2D": _pool("MaxPool", 2),
    "AveragePooling1D": _pool("AvgPool", 1),
    "AveragePooling2D": _pool("AvgPool", 2),
    "GlobalAveragePooling1D": _global_avg,
    "GlobalAveragePooling2D": _global_avg,
    "GlobalMaxPooling1D": _global_max,
    "GlobalMaxPooling2D": _global_max,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Add": _nary("Add"),
    "Multiply": _nary("Mul"),
    "Subtract": _subtract,
    "Concatenate": _concat,
    "ZeroPadding1D": _zero_pad(1),
    "ZeroPadding2D": _zero_pad(2),
    "UpSampling2D": _upsample2d,
}


def supported_layers() -> list[str]:
    """Keras layer class names this importer converts."""
    return sorted(set(_LAYERS) | _IDENTITY_LAYERS)
