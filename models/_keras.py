"""The tf_keras side: copy torch weights into a Keras twin, save it, convert to .tflite.

Layout rules when copying (torch -> Keras):
  Linear   weight [out, in]        -> Dense kernel [in, out]
  Conv2d   weight [O, I, KH, KW]   -> Conv2D kernel [KH, KW, I, O]
  Conv1d   weight [O, I, K]        -> Conv1D kernel [K, I, O]
  BatchNorm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance
A Linear that follows a torch (C, H, W) flatten gets its input columns reordered
to Keras' (H, W, C) flatten order (:func:`copy_dense_after_flatten`).
"""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from typing import Callable

import numpy as np
from torch import nn

from qtc.errors import QtcError

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def import_tf():
    """Import TensorFlow and tf_keras quietly, CPU only, without oneDNN reordering."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import tensorflow as tf
    import tf_keras as keras

    return tf, keras


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def copy_dense(layer, linear: nn.Linear) -> None:
    weights = [_np(linear.weight).T]
    if linear.bias is not None:
        weights.append(_np(linear.bias))
    layer.set_weights(weights)


def copy_dense_after_flatten(layer, linear: nn.Linear, chw: tuple[int, int, int]) -> None:
    """Copy a Linear whose input is a torch NCHW flatten into a Dense after a Keras NHWC flatten."""
    c, h, w = chw
    weight = _np(linear.weight).reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(linear.out_features, -1)
    weights = [weight.T]
    if linear.bias is not None:
        weights.append(_np(linear.bias))
    layer.set_weights(weights)


def copy_conv(layer, conv: nn.Conv1d | nn.Conv2d) -> None:
    w = _np(conv.weight)
    kernel = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.transpose(2, 1, 0)
    weights = [kernel]
    if conv.bias is not None:
        weights.append(_np(conv.bias))
    layer.set_weights(weights)


def copy_batchnorm(layer, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
    layer.set_weights([_np(bn.weight), _np(bn.bias), _np(bn.running_mean), _np(bn.running_var)])


def keras_predict(model, batch: int = 256) -> Callable[..., np.ndarray]:
    def predict(*arrays: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(arrays[0]), batch):
            args = [np.ascontiguousarray(a[i:i + batch]) for a in arrays]
            outs.append(np.asarray(model(args if len(args) > 1 else args[0], training=False)))
        return np.concatenate(outs)

    return predict


def check_twin(torch_out: np.ndarray, keras_out: np.ndarray, *, where: str, tol: float = 1e-5) -> float:
    """Raise unless the twin matches torch: |keras - torch| <= tol * max(1, |torch|) elementwise."""
    err = np.abs(keras_out.astype(np.float64) - torch_out.astype(np.float64))
    bound = tol * np.maximum(1.0, np.abs(torch_out.astype(np.float64)))
    if not np.all(err <= bound):
        raise QtcError(f"Keras twin differs from torch by up to {float(err.max()):.3g} (> {tol} relative)",
                       where=where, hint="check the weight layout copied into the Keras layers")
    return float(err.max())


def keras_bytes(model) -> bytes:
    """Save a tf_keras model as ``.keras`` with a fixed save date and zip timestamps.

    ``model.save`` stamps ``date_saved`` and the zip entries with the current
    time; everything else is deterministic, so pinning those makes the file
    byte-identical for identical weights.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with zipfile.ZipFile(path) as zin:
            entries = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zout:
        for name, blob in entries:
            if name == "metadata.json":
                meta = json.loads(blob)
                meta["date_saved"] = "1980-01-01@00:00:00"
                blob = json.dumps(meta).encode()
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            zout.writestr(info, blob)
    return buf.getvalue()


def tflite_float(model) -> bytes:
    tf, _ = import_tf()
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def tflite_int8(model, calib: list[np.ndarray]) -> bytes:
    """Full-integer conversion: int8 builtins only, int8 input and output.

    ``calib`` holds one channels-last array per model input; every sample is
    fed to the representative dataset, in order.
    """
    tf, _ = import_tf()

    def representative():
        for i in range(len(calib[0])):
            yield [a[i:i + 1].astype(np.float32) for a in calib]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings():  # "statistics for quantized inputs were expected": the converter sets them
        warnings.simplefilter("ignore", UserWarning)
        return conv.convert()


def tflite_predict(blob: bytes) -> Callable[..., np.ndarray]:
    """A numpy predictor over a .tflite flatbuffer (batch-1 loop; int8 I/O is (de)quantized)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - older environments
        tf, _ = import_tf()
        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_content=blob, num_threads=1)
    interp.allocate_tensors()
    ins = interp.get_input_details()
    out = interp.get_output_details()[0]
    if len(ins) != 1:
        raise QtcError("tflite_predict handles single-input models only", where="models._keras",
                       hint="feed multi-input .tflite models through the interpreter directly")

    def quant(x, det):
        if det["dtype"] == np.float32:
            return x.astype(np.float32)
        scale, zp = det["quantization"]
        info = np.iinfo(det["dtype"])
        return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(det["dtype"])

    def predict(*arrays: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(len(arrays[0])):
            for det, a in zip(ins, arrays):
                interp.set_tensor(det["index"], quant(a[i:i + 1], det))
            interp.invoke()
            y = interp.get_tensor(out["index"])
            if out["dtype"] != np.float32:
                scale, zp = out["quantization"]
                y = (y.astype(np.float32) - zp) * scale
            outs.append(y)
        return np.concatenate(outs)

    return predict
