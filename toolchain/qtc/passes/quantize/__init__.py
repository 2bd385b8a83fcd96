"""Post-training quantization: calibration data, streaming observers, the quantize pass, target checks.

Public API::

    from qtc.passes.quantize import quantize, check, make_dataset
    qg = quantize(g, {"x": calib}, target="esp32", method="entropy")
    for v in check(qg, "ti-npu"): print(v.line())
"""
from .constraints import QuantSpec, Violation, check, spec_for
from .dataset import load_calibration, make_dataset
from .observers import (EntropyObserver, MinMaxObserver, MovingAverageMinMaxObserver, MSEObserver,
                        PercentileObserver, RangeSpec, make_observer)
from .builder import QuantizeWarning
from .quantizer import quantize

__all__ = ["quantize", "QuantizeWarning", "check", "spec_for", "QuantSpec", "Violation", "make_dataset", "load_calibration",
           "make_observer", "RangeSpec", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
           "EntropyObserver", "MSEObserver"]
