"""Child process for bench/c_vs_tflm.py: run a .tflite model with TFLM's Python
runtime on int8 inputs and print each output as one line ``Y v0 v1 ...``.

    python tflm_invoke.py MODEL.tflite INPUTS.npy

INPUTS.npy holds N int8 inputs (N x input shape).  The bench runs this under
``valgrind --tool=callgrind --toggle-collect=<MicroInterpreter::Invoke()>``, so
only the N ``invoke()`` calls are counted.  Imports only numpy and tflite_micro.
"""
import sys

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def main(model_path: str, inputs_path: str) -> int:
    with open(model_path, "rb") as f:
        data = f.read()
    xs = np.load(inputs_path)
    it = runtime.Interpreter.from_bytes(data, arena_size=max(len(data) * 4, 1 << 20))
    for x in xs:
        it.set_input(np.ascontiguousarray(x, dtype=np.int8), 0)
        it.invoke()
        y = np.asarray(it.get_output(0)).astype(np.int64).reshape(-1)
        print("Y " + " ".join(str(int(v)) for v in y))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
