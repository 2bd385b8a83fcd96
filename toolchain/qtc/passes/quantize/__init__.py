"""Post-training quantization: calibration data, streaming observers, the quantize pass (``method="auto"``
chooses ranges per tensor on the calibration data), target checks,
better-than-min-max refinements (CLE, bias correction, AdaRound) and per-layer sensitivity.

Public API::

    from qtc.passes.quantize import quantize, check, make_dataset, rank_layers, propose
    qg = quantize(g, {"x": calib}, target="esp32", method="entropy")
    qg = quantize(g, {"x": calib}, method="auto", weight_method="auto", adaround=True)  # qtc's best W8A8 recipe
    qg = quantize(g, {"x": calib}, wbits=4, equalize=True, bias_correction=True, adaround={"iters": 1000})
    for v in check(qg, "ti-npu"): print(v.line())
    cg, ranking = rank_layers(g, {"x": calib}, wbits=4)
    plan = propose(cg, {"x": calib}, ranking, budget_sqnr=30.0)
    qg = quantize(g, {"x": calib}, wbits=4, mode="mixed", keep_float=plan["keep_float"])
"""
from .adaround import AdaRoundConfig
from .constraints import QuantSpec, Violation, check, spec_for
from .dataset import load_calibration, make_dataset
from .equalize import equalize
from .observers import (EntropyObserver, MinMaxObserver, MovingAverageMinMaxObserver, MSEObserver,
                        PercentileObserver, RangeSpec, make_observer)
from .builder import QuantizeWarning
from .quantizer import quantize
from .sensitivity import propose, rank_layers, sqnr_db

__all__ = ["quantize", "QuantizeWarning", "check", "spec_for", "QuantSpec", "Violation", "make_dataset", "load_calibration",
           "make_observer", "RangeSpec", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
           "EntropyObserver", "MSEObserver", "AdaRoundConfig", "equalize", "rank_layers", "propose", "sqnr_db"]
