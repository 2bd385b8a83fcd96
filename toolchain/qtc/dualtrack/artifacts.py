"""Each candidate's deployable artifacts, their sizes and their measured latency.

For every quantized sub-model :func:`emit` writes, under the candidate's folder:

* ``<name>_<variant>.qir/``: the quantized IR;
* ``<name>_<variant>_int8.tflite``: qtc's TFLite back end (LiteRT/TFLM), or the
  TF converter's file for the Keras QAT candidate; when the back end refuses
  the graph (2-bit weights, 4-bit activations, per-channel int4 FULLY_CONNECTED)
  the reason is recorded and there is no .tflite;
* ``c_<name>/``: qtc's C back end (generated C + kernels + test vectors from
  the quant dataset).

**Size** (what ``model_bytes`` checks) has a basis, stated per sub-model:
``tflite`` = bytes of the ``.tflite`` flatbuffer (weights + graph, what TFLM
maps from flash); ``c_weights`` = the C back end's constant weight arrays
(weights, biases, requant multipliers; sub-byte weights stay unpacked in int8,
the kernels' code is shared and not counted).  A candidate with no .tflite
falls back to ``c_weights`` and says so.

**Latency** comes from :func:`qtc.device.bench.run_bench`: with no board the
same C runs on the emulated board (QEMU RV32, latency = retired instructions
at its nominal clock, labelled emulated); with ``bench.port`` a real board.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import QtcError
from ..ir.boundary import quantize_input

TEST_VECTORS = 3


def test_inputs(graph, calib: np.ndarray, count: int = TEST_VECTORS) -> list[np.ndarray]:
    """int8 test vectors for the C back end: the first quant-dataset samples, quantized."""
    name = graph.inputs[0]
    t = graph.tensors[name]
    return [np.asarray(quantize_input(graph, name, calib[i:i + 1].reshape(t.shape)), dtype=np.int8)
            for i in range(min(count, len(calib)))]


def emit(graph, out_dir: Path, name: str, stem: str, calib: np.ndarray, *, size_basis: str,
         tflite_file: Path | None = None) -> dict:
    """Write ``<stem>.qir``, ``<stem>_int8.tflite`` and ``c_<name>/`` of one quantized sub-model;
    returns its size record."""
    from ..backends.c import compile_c
    from ..backends.tflite import compile_tflite
    from ..ir import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec: dict = {"qir": f"{stem}.qir"}
    save(graph, out_dir / rec["qir"])
    if tflite_file is not None:  # the TF converter's own file (Keras QAT)
        rec.update(tflite=tflite_file.name, tflite_bytes=tflite_file.stat().st_size, tflite_error=None,
                   tflite_writer="TF converter (tf.lite.TFLiteConverter)")
    else:
        path = out_dir / f"{stem}_int8.tflite"
        try:
            info = compile_tflite(graph, path)
            rec.update(tflite=path.name, tflite_bytes=int(info["bytes"]), tflite_error=None,
                       tflite_writer="qtc TFLite back end")
        except QtcError as exc:
            rec.update(tflite=None, tflite_bytes=None, tflite_error=exc.line())
    c_dir = out_dir / f"c_{name}"
    try:
        info = compile_c(graph, c_dir, model_name=name, test_inputs=test_inputs(graph, calib))
        rec.update(c_dir=c_dir.name, c_weight_bytes=int(info["weight_bytes"]), c_arena_bytes=int(info["arena_bytes"]),
                   macs=int(info["macs"]), c_error=None)
    except QtcError as exc:
        rec.update(c_dir=None, c_weight_bytes=None, c_arena_bytes=None, macs=None, c_error=exc.line())
    if size_basis == "tflite" and rec["tflite_bytes"] is not None:
        rec.update(size_bytes=rec["tflite_bytes"], size_basis="tflite")
    elif rec["c_weight_bytes"] is not None:
        rec.update(size_bytes=rec["c_weight_bytes"], size_basis="c_weights")
        if size_basis == "tflite":
            rec["size_note"] = "no .tflite (see tflite_error): C weight bytes instead"
    else:
        rec.update(size_bytes=None, size_basis=None)
    return rec


def float_size(graph) -> int:
    """Bytes of the float model's float32 constants (its weights), for the plot's float point."""
    return int(sum(t.data.nbytes for t in graph.tensors.values()
                   if t.data is not None and t.dtype == "float32"))


def pool_graph(n_peers: int, dim: int):
    """The Deep Sets pooling on the device: int8 mean over ``n_peers`` encoder outputs (float graph)."""
    from ..ir.graph import Graph

    g = Graph(name="deepsets_pool")
    g.add_tensor("x", (1, n_peers, dim))
    g.add_tensor("y", (1, dim))
    g.add_node("Mean", ["x"], ["y"], name="pool", axes=[1], keepdims=False)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def bench(c_dir: Path, dev_dir: Path, *, runs: int, port: str | None, target: str) -> dict:
    """Run the C model folder on the board (emulated without a port); a short latency record."""
    from ..device.bench import run_bench

    if port in (None, "", "qemu"):
        doc, path = run_bench(target="qemu-rv32", port="qemu", model_dir=str(c_dir), runs=runs, out_dir=str(dev_dir))
    else:
        doc, path = run_bench(target=target, port=port, model_dir=str(c_dir), runs=runs, out_dir=str(dev_dir))
    w = doc["where"]
    return {"median_us": float(doc["latency_us"]["median"]), "min_us": float(doc["latency_us"]["min"]),
            "where": w["kind"], "label": f"{w['label']} at {w['cpu_mhz']:g} MHz"
                                         + (" nominal" if w["kind"] == "emulated" else ""),
            "bit_exact": bool(doc["outputs"]["bit_exact"]), "runs": int(doc["runs"]),
            "report": f"{Path(dev_dir).name}/{Path(path).name}"}
