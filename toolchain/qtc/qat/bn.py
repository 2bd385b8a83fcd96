"""BatchNorm before QAT: folded into the weights, so the fake-quant weights are the deployed ones.

QAT runs on qtc's canonical float graph, where :func:`qtc.passes.fold_bn.fold_batchnorm`
has already folded every inference BatchNorm into the Conv / FullyConnected in
front of it (``w' = w·γ/√(σ²+ε)``, ``b' = (b-μ)·γ/√(σ²+ε) + β``, running
statistics, as the model's eval mode uses them).  Fine-tuning then updates the
folded weights directly: the weights the LSQ quantizer rounds are exactly the
weights the integer model stores, and no statistics drift during training
(the BatchNorm is frozen by construction).

A BatchNorm that cannot fold (after a fused activation, a tensor with several
readers, ...) was rewritten as a per-channel ``Mul`` + ``Add`` of constants; QAT
keeps those constants frozen (they are quantized like any other constant
operand, as PTQ does).
"""
from __future__ import annotations

from ..errors import QtcError
from ..ir.graph import Graph
from ..passes.canonicalize import canonicalize


def fold_for_qat(g: Graph) -> tuple[Graph, dict]:
    """Canonical channels-first copy of float graph ``g`` with BatchNorm folded.

    Returns ``(graph, report)`` with ``report = {"folded": [...], "as_mul_add": [...]}``
    naming the BatchNorm nodes of ``g``.
    """
    if g.is_quantized or any(n.op in ("Quantize", "Dequantize") for n in g.nodes):
        raise QtcError("QAT needs the float model; this graph is already quantized", where=f"graph {g.name}",
                       hint="import the float model (torch module, .onnx, .keras) instead of the quantized one")
    out = canonicalize(g, channels_last=False)
    out = g if out is None else out
    left = [n.name for n in out.nodes if n.op == "BatchNorm"]
    if left:
        raise QtcError(f"BatchNorm {left[0]} could not be folded or rewritten", where=f"graph {g.name}",
                       hint="give the BatchNorm constant statistics (export the model in eval mode)")
    report = {"folded": [], "as_mul_add": []}
    for entry in out.metadata.get("passes", []):
        if entry.get("pass") == "fold_batchnorm":
            report["folded"] += list(entry.get("folded", []))
            report["as_mul_add"] += list(entry.get("as_mul_add", []))
    return out, report
