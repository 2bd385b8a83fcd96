"""TensorFlow's TFLite converter as a peer: full-integer int8 from the model's tf_keras twin.

``convert_int8(keras_path, calib_nhwc)`` loads the ``.keras`` twin and converts
it with ``optimizations=[DEFAULT]``, a representative dataset that yields every
calibration sample once, in order (the same samples qtc calibrates on, in the
Keras layout), ``TFLITE_BUILTINS_INT8`` only and int8 input/output, which is
how ``models.train_all`` makes ``<name>_int8.tflite``.

``litert_predict(tflite_bytes)`` runs the result with LiteRT's reference
kernels (``OpResolverType.BUILTIN_REF``), one sample at a time: float inputs
are quantized with the input tensor's params (round half away from zero,
saturate), int8 outputs dequantized.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import numpy as np

from qtc.errors import QtcError


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    try:
        import tensorflow as tf
        import tf_keras as keras
    except ImportError:
        raise QtcError("TensorFlow / tf_keras is not installed", where="bench/peers/tflite",
                       hint="pip install the [tf] extra, or skip this peer with --peers ort") from None
    return tf, keras


def versions() -> dict:
    tf, _ = _tf()
    out = {"tensorflow": tf.__version__}
    try:
        import ai_edge_litert

        out["ai_edge_litert"] = getattr(ai_edge_litert, "__version__", "unknown")
    except ImportError:
        pass
    return out


def convert_int8(keras_path, calib: np.ndarray) -> bytes:
    """Full-integer conversion of a single-input tf_keras model with ``calib`` as representative data."""
    tf, keras = _tf()
    model = keras.models.load_model(str(keras_path), compile=False)
    calib = np.asarray(calib, dtype=np.float32)

    def representative():
        for i in range(len(calib)):
            yield [calib[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return conv.convert()


def _round_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def litert_predict(tflite_bytes: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """numpy float in (samples on axis 0) → first output, float, via LiteRT BUILTIN_REF kernels."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise QtcError("LiteRT is not installed", where="bench/peers/tflite",
                       hint="pip install ai-edge-litert") from None
    it = Interpreter(model_content=bytes(tflite_bytes), num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1:
        raise QtcError(f"the TFLite peer handles one-input models; this one has {len(ins)}",
                       where="bench/peers/tflite", hint="benchmark single-input models")
    din, dout = ins[0], outs[0]

    def to_input(x: np.ndarray) -> np.ndarray:
        if din["dtype"] == np.float32:
            return x.astype(np.float32)
        scale, zp = din["quantization"]
        info = np.iinfo(din["dtype"])
        q = _round_away(x.astype(np.float32) / np.float32(scale)) + zp
        return np.clip(q, info.min, info.max).astype(din["dtype"])

    def from_output(y: np.ndarray) -> np.ndarray:
        if dout["dtype"] == np.float32:
            return y
        scale, zp = dout["quantization"]
        return ((y.astype(np.int64) - zp).astype(np.float32) * np.float32(scale)).astype(np.float32)

    def predict(x: np.ndarray) -> np.ndarray:
        res = []
        for i in range(len(x)):
            it.set_tensor(din["index"], to_input(np.asarray(x[i:i + 1])))
            it.invoke()
            res.append(from_output(np.array(it.get_tensor(dout["index"]))))
        return np.concatenate(res)

    return predict
