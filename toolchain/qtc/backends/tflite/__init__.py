"""The TFLite back end: qtc IR → .tflite flatbuffers that LiteRT and TFLM run bit-exactly.

* :func:`compile_tflite` / :func:`tflite_bytes` — the writer (:mod:`.writer`);
* :mod:`.verify` — runs LiteRT (reference kernels, XNNPACK) and TFLM against
  qtc's interpreter; :mod:`.size` — flatbuffer/weight bytes and the TFLM arena
  measured by TFLM itself; :mod:`.embed` — ``model_data.c/.h`` for firmware;
* :mod:`.cli` — the ``qtc verify`` and ``qtc size`` commands.
"""
from .prepare import with_int64_bias
from .writer import build, compile_tflite, tflite_bytes

__all__ = ["compile_tflite", "tflite_bytes", "build", "with_int64_bias"]
