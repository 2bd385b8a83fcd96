"""ONNX Runtime's static PTQ as a peer: QDQ, per-channel, S8S8 (int8 activations and weights).

``quantize_ort(onnx_path, calib, out_path, method)`` with method ``minmax``,
``percentile`` (ORT defaults: 2048 bins, 99.999th percentile, symmetric) or
``entropy``.

Entropy is not run through ``quantize_static``'s own calibration: there only
five calibration keys pass through and ``num_bins``/``num_quantized_bins``
stay 128/128, with which ORT's KL search tests a single candidate (the full
range), so "Entropy" silently equals MinMax (``entropy_default`` reproduces
that).  Instead the calibrator is built directly,
``create_calibrator(..., CalibrationMethod.Entropy, extra_options={"num_bins": 2048,
"num_quantized_bins": 128})``, its ``compute_data()`` ranges are taken, and
they are handed to ``quantize_static``:

* ``via="cache"`` (default where ``quantize_static`` has
  ``calibration_cache_path``): the ranges are saved with ORT's own
  ``save_tensors_data`` and ``quantize_static(calibrate_method=Entropy,
  calibration_cache_path=...)`` reads them: ORT's usual range adjustments
  (Relu/Clip inputs take their output's range, Softmax 0..1) then apply;
* ``via="overrides"``: every range goes in ``TensorQuantOverrides``
  (``rmin``/``rmax``) over a MinMax calibration; an explicit override wins
  over ORT's adjustments, so the Relu/Clip rule is applied to the ranges here
  first, the same way.

Models are evaluated with ``onnxruntime.InferenceSession`` on the CPU provider
(its int8 QDQ kernels), one sample at a time (the exported models have batch 1).
"""
from __future__ import annotations

import inspect
import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from qtc.errors import QtcError

METHODS = ("minmax", "percentile", "entropy", "entropy_default")
ENTROPY_OPTIONS = {"num_bins": 2048, "num_quantized_bins": 128}


def _ort():
    try:
        import onnxruntime
        from onnxruntime import quantization
    except ImportError:
        raise QtcError("onnxruntime is not installed", where="bench/peers/ort",
                       hint="pip install onnxruntime (the [runtimes] extra)") from None
    return onnxruntime, quantization


class CalibReader:
    """An ORT CalibrationDataReader over samples stacked on axis 0 (fed one at a time)."""

    def __init__(self, input_name: str, samples: np.ndarray):
        self.input_name = input_name
        self.samples = np.asarray(samples, dtype=np.float32)
        self.start, self.end = 0, len(self.samples)
        self.pos = 0

    def get_next(self):
        if self.start + self.pos >= self.end:
            return None
        i = self.start + self.pos
        self.pos += 1
        return {self.input_name: self.samples[i:i + 1]}

    def rewind(self):
        self.pos = 0

    def __len__(self):
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int):
        self.start, self.end, self.pos = start_index, min(end_index, len(self.samples)), 0


def input_name(onnx_path) -> str:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    if len(names) != 1:
        raise QtcError(f"the ONNX peer handles one-input models; this one has {names}", where=str(onnx_path),
                       hint="benchmark single-input models")
    return names[0]


def entropy_ranges(onnx_path, calib: np.ndarray, workdir: Path, options: dict | None = None):
    """TensorsData from ORT's Entropy calibrator with ``options`` (default 2048 / 128 bins)."""
    _ort()
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    cal = create_calibrator(Path(onnx_path), None, augmented_model_path=str(workdir / "augmented.onnx"),
                            calibrate_method=CalibrationMethod.Entropy,
                            extra_options=dict(ENTROPY_OPTIONS if options is None else options))
    cal.collect_data(CalibReader(input_name(onnx_path), calib))
    data = cal.compute_data()
    del cal
    return data


def minmax_ranges(onnx_path, calib: np.ndarray, workdir: Path):
    _ort()
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    cal = create_calibrator(Path(onnx_path), None, augmented_model_path=str(workdir / "augmented_mm.onnx"),
                            calibrate_method=CalibrationMethod.MinMax)
    cal.collect_data(CalibReader(input_name(onnx_path), calib))
    return cal.compute_data()


def ranges_dict(tensors_data) -> dict[str, tuple[float, float]]:
    out = {}
    for name in tensors_data.keys():
        lo, hi = tensors_data[name].range_value
        out[name] = (float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0]))
    return out


def _relu_adjusted(onnx_path, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """ORT's adjust_tensor_ranges rule: a Relu/Clip input read only by it takes the output's range."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    readers: dict[str, int] = {}
    for n in m.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    out = dict(ranges)
    for n in m.graph.node:
        if n.op_type in ("Relu", "Clip") and readers.get(n.input[0]) == 1 and n.input[0] in out and n.output[0] in out:
            out[n.input[0]] = out[n.output[0]]
    return out


def quantize_ort(onnx_path, calib: np.ndarray, out_path, method: str, *, via: str | None = None) -> dict:
    """Write ORT's QDQ S8S8 per-channel model to ``out_path``; returns what was done (for the JSON)."""
    ort, _ = _ort()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    if method not in METHODS:
        raise QtcError(f"unknown ORT method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    has_cache = "calibration_cache_path" in inspect.signature(quantize_static).parameters
    via = via or ("cache" if has_cache else "overrides")
    if via == "cache" and not has_cache:
        raise QtcError("this onnxruntime's quantize_static has no calibration_cache_path", hint="use via='overrides'")
    name = input_name(onnx_path)
    kw = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
              weight_type=QuantType.QInt8, extra_options={})
    record = {"format": "QDQ", "per_channel": True, "activations": "int8 asymmetric", "weights": "int8 symmetric",
              "onnxruntime": ort.__version__}
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # "please consider pre-processing" on every call
    try:
        with tempfile.TemporaryDirectory(prefix="qtc-ort-") as tmp:
            tmp = Path(tmp)
            if method == "minmax":
                quantize_static(str(onnx_path), str(out_path), CalibReader(name, calib),
                                calibrate_method=CalibrationMethod.MinMax, **kw)
                record["calibration"] = "quantize_static MinMax"
            elif method == "percentile":
                quantize_static(str(onnx_path), str(out_path), CalibReader(name, calib),
                                calibrate_method=CalibrationMethod.Percentile, **kw)
                record["calibration"] = "quantize_static Percentile (defaults: 2048 bins, 99.999, symmetric)"
            elif method == "entropy_default":
                quantize_static(str(onnx_path), str(out_path), CalibReader(name, calib),
                                calibrate_method=CalibrationMethod.Entropy, **kw)
                record["calibration"] = "quantize_static Entropy (its fixed 128/128 bins)"
            else:
                data = entropy_ranges(onnx_path, calib, tmp)
                if via == "cache":
                    cache = tmp / "entropy_ranges.json"
                    save_tensors_data(data, cache)
                    quantize_static(str(onnx_path), str(out_path), None, calibrate_method=CalibrationMethod.Entropy,
                                    calibration_cache_path=str(cache), **kw)
                else:
                    ranges = _relu_adjusted(onnx_path, ranges_dict(data))
                    kw["extra_options"] = {"TensorQuantOverrides": {
                        t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items()}}
                    quantize_static(str(onnx_path), str(out_path), CalibReader(name, calib),
                                    calibrate_method=CalibrationMethod.MinMax, **kw)
                record["calibration"] = (f"create_calibrator(Entropy, {ENTROPY_OPTIONS}).compute_data() ranges fed "
                                         + ("via calibration_cache_path" if via == "cache"
                                            else "via TensorQuantOverrides rmin/rmax"))
    finally:
        logger.setLevel(level)
    return record


def ort_predict(model_path) -> Callable[[np.ndarray], np.ndarray]:
    """numpy in (samples on axis 0) → first output stacked, via an ORT CPU session, one sample per run."""
    ort, _ = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])

    return predict
