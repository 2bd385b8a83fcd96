"""Keras QAT with tensorflow-model-optimization (tfmot), brought back into qtc's IR.

The extra QAT candidate of the dual track, as the users' plan writes it
("Apply QAT wrappers (``tfmot.quantization.keras``); train on the quant dataset
with distillation loss; export INT8 .tflite"):

1. load the tf_keras twin (``build/models/<name>/<name>.keras``) and rebuild it
   as a batch-free layer chain, folding each BatchNormalization (and a plain
   ReLU after it) into the Conv1D/Conv2D/Dense in front of it, so the deployed
   conv weights are the ones QAT rounds;
2. ``quantize_apply`` with tfmot's default 8-bit scheme (per-axis symmetric
   conv weights, per-tensor symmetric Dense weights, asymmetric activations);
3. fine-tune a few epochs on the quant dataset against the float model's own
   outputs (distillation: MSE on logits / embeddings; the quant dataset has no
   labels);
4. convert with TF's converter to a full-int8 .tflite (int8 in/out);
5. import it with :func:`qtc.frontends.tflite.load_tflite`, so qtc's integer
   interpreter, back ends and bench handle it like any other candidate.

**tfmot's Conv1D gap.** tfmot 0.8 has no quantize config for ``Conv1D`` (its
registry comments it out; "pass a QuantizeConfig", tensorflow/tensorflow#58783)
nor ``MaxPooling1D``.  :class:`Conv1DQuantizeConfig` fills the first: kernel
fake-quantized **per tensor** (symmetric, narrow range) and the activation
output asymmetric per tensor.  Per-axis is not possible here: tfmot's
``LastValueQuantize`` only handles rank-2/4 weights per axis, and reshaping the
rank-3 kernel around it makes TF's converter fail (``tfl.reshape`` /
``tfl.transpose`` "mismatched quantized axes").  :class:`PassThroughQuantizeConfig`
covers ``MaxPooling1D``: max pooling keeps its input's params.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import QtcError

FOLDABLE = ("Conv1D", "Conv2D", "Dense")


def import_tf():
    """TensorFlow, tf_keras and tfmot, quiet and CPU-only (tfmot needs tf_keras, not Keras 3)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras
    except ModuleNotFoundError as exc:
        raise QtcError(f"Keras QAT needs the Python package {exc.name!r}", where="dualtrack qat_keras",
                       hint="pip install 'qtc[tf]' (tensorflow-cpu, tf-keras, tensorflow-model-optimization)") from None
    return tf, keras, tfmot


def _configs():
    """The two QuantizeConfig classes (defined lazily: they subclass a tfmot class)."""
    _, _, tfmot = import_tf()
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    Q = tfmot.quantization.keras

    class Conv1DQuantizeConfig(Q.QuantizeConfig):
        """Conv1D: per-tensor symmetric narrow-range 8-bit kernel, asymmetric 8-bit activation output."""

        def get_weights_and_quantizers(self, layer):
            return [(layer.kernel, quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True,
                                                                  narrow_range=True))]

        def get_activations_and_quantizers(self, layer):
            return [(layer.activation, quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False,
                                                                          symmetric=False, narrow_range=False))]

        def set_quantize_weights(self, layer, quantize_weights):
            layer.kernel = quantize_weights[0]

        def set_quantize_activations(self, layer, quantize_activations):
            layer.activation = quantize_activations[0]

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    class PassThroughQuantizeConfig(Q.QuantizeConfig):
        """A layer whose output keeps its input's params (MaxPooling1D)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    return Conv1DQuantizeConfig, PassThroughQuantizeConfig


# ------------------------------------------------------------------ BN folding
def _plain_relu(layer) -> bool:
    cfg = layer.get_config()
    return (type(layer).__name__ == "ReLU" and cfg.get("max_value") is None
            and not cfg.get("negative_slope") and not cfg.get("threshold"))


def fold_chain(model):
    """A batch-free copy of a layer-chain model with BatchNorm (+ a following ReLU) folded.

    Raises QtcError for a model that is not a single chain of layers.
    """
    _, keras, _ = import_tf()
    layers = [lay for lay in model.layers if type(lay).__name__ != "InputLayer"]
    cfg_layers = model.get_config().get("layers", [])
    prev = cfg_layers[0]["name"] if cfg_layers else None
    for entry in cfg_layers[1:]:
        sources = [t[0] for node in entry.get("inbound_nodes") or [] for t in node]
        if sources != [prev]:
            raise QtcError(f"Keras QAT takes a chain of single-input layers; layer {entry['name']!r} reads "
                           f"{sources}", where=f"model {model.name}", hint="drop qat_keras from tracks for this model")
        prev = entry["name"]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise QtcError("Keras QAT takes one input and one output", where=f"model {model.name}",
                       hint="drop qat_keras from tracks for this model")
    inp = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name=model.inputs[0].name.split(":")[0])
    x, i, folded = inp, 0, []
    while i < len(layers):
        lay = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if type(lay).__name__ in FOLDABLE and nxt is not None and type(nxt).__name__ == "BatchNormalization":
            cfg = dict(lay.get_config(), use_bias=True)
            j = i + 2
            if cfg.get("activation") in (None, "linear") and j < len(layers) and _plain_relu(layers[j]):
                cfg["activation"] = "relu"
                j += 1
            new = type(lay).from_config(cfg)
            x = new(x)
            w = lay.get_weights()
            kernel = w[0].astype(np.float64)
            bias = w[1].astype(np.float64) if len(w) > 1 else np.zeros(kernel.shape[-1])
            gamma, beta, mean, var = (a.astype(np.float64) for a in nxt.get_weights())
            s = gamma / np.sqrt(var + nxt.epsilon)
            new.set_weights([(kernel * s).astype(np.float32), ((bias - mean) * s + beta).astype(np.float32)])
            folded.append(f"{nxt.name} into {lay.name}" + (f" (+{layers[i + 2].name})" if j == i + 3 else ""))
            i = j
            continue
        new = type(lay).from_config(lay.get_config())
        x = new(x)
        if lay.get_weights():
            new.set_weights(lay.get_weights())
        i += 1
    return keras.Model(inp, x, name=model.name), folded


# ------------------------------------------------------------------ QAT
@dataclass
class KerasQatResult:
    tflite_path: Path
    tflite_bytes: int
    graph: object                      # qtc IR (int8), from load_tflite
    float_graph: object                # the Keras twin's float IR (same layout) for compare
    history: list[float] = field(default_factory=list)   # distillation loss per epoch
    folded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"tflite": self.tflite_path.name, "tflite_bytes": self.tflite_bytes,
                "loss_per_epoch": [float(v) for v in self.history], "folded_batchnorm": self.folded,
                "notes": self.notes}


def _annotate(model):
    _, keras, tfmot = import_tf()
    Q = tfmot.quantization.keras
    Conv1DConfig, PassConfig = _configs()
    notes: list[str] = []

    def annotate(layer):
        kind = type(layer).__name__
        try:
            if kind == "Conv1D":
                notes.append(f"{layer.name}: Conv1D quantized with qtc's Conv1DQuantizeConfig (per-tensor kernel)")
                return Q.quantize_annotate_layer(layer, Conv1DConfig())
            if kind == "MaxPooling1D":
                return Q.quantize_annotate_layer(layer, PassConfig())
            return Q.quantize_annotate_layer(layer)
        except (ValueError, RuntimeError) as exc:
            raise QtcError(f"tfmot cannot quantize layer {layer.name!r} ({kind}): {' '.join(str(exc).split())[:200]}",
                           where=f"model {model.name}", hint="drop qat_keras from tracks for this model") from None

    annotated = keras.models.clone_model(model, clone_function=annotate)
    with Q.quantize_scope({"Conv1DQuantizeConfig": Conv1DConfig, "PassThroughQuantizeConfig": PassConfig}):
        qmodel = Q.quantize_apply(annotated)
    return qmodel, notes


def _convert(tf, qmodel, calib: np.ndarray, rep_samples: int = 100) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(qmodel)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for i in range(min(rep_samples, len(calib))):
            yield [calib[i:i + 1].astype(np.float32)]

    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected" (QAT carries them)
        try:
            return conv.convert()
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            first = " ".join(str(exc).split())[:240]
            raise QtcError(f"TF's converter failed on the QAT model: {first}", where="dualtrack qat_keras",
                           hint="drop qat_keras from tracks for this model") from None


def keras_qat(keras_path, calib: np.ndarray, out_tflite, *, epochs: int = 2, lr: float = 5e-4,
              batch_size: int = 32, seed: int = 0, name: str | None = None) -> KerasQatResult:
    """tfmot QAT of the tf_keras model at ``keras_path`` (see the module docstring).

    ``calib`` holds the quant dataset in the Keras model's layout (samples on
    axis 0); the teacher is the float model itself.  Writes the int8 .tflite to
    ``out_tflite`` atomically and returns it imported into the qtc IR.
    """
    from ..atomic import save_bytes
    from ..frontends.keras import from_keras
    from ..frontends.tflite import load_tflite

    tf, keras, _ = import_tf()
    keras_path = Path(keras_path)
    if not keras_path.is_file():
        raise QtcError("no tf_keras twin for Keras QAT", where=str(keras_path),
                       hint="run `make models` (it writes <name>.keras), or drop qat_keras from tracks")
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
    base = keras.models.load_model(keras_path, compile=False)
    name = name or base.name
    float_graph = from_keras(base, name=name)
    model, folded = fold_chain(base)
    calib = np.ascontiguousarray(calib, dtype=np.float32)
    want = tuple(model.inputs[0].shape[1:])
    if tuple(calib.shape[1:]) != want:
        raise QtcError(f"quant dataset samples have shape {tuple(calib.shape[1:])}, the Keras model takes {want}",
                       where=str(keras_path), hint="give the quant dataset in the Keras (channels-last) layout")
    teacher = model.predict(calib, batch_size=256, verbose=0)
    qmodel, notes = _annotate(model)
    qmodel.compile(optimizer=keras.optimizers.Adam(float(lr)), loss="mse")
    hist = qmodel.fit(calib, teacher, epochs=int(epochs), batch_size=int(batch_size), shuffle=True, verbose=0)
    data = _convert(tf, qmodel, calib)
    out_tflite = Path(out_tflite)
    save_bytes(out_tflite, data)
    graph = load_tflite(data, name=name)
    return KerasQatResult(tflite_path=out_tflite, tflite_bytes=len(data), graph=graph, float_graph=float_graph,
                          history=list(hist.history.get("loss", [])), folded=folded, notes=notes)
