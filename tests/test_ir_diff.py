"""ir_diff: every kind of difference between two graphs is reported; spelling-only differences are not."""
from __future__ import annotations

import numpy as np
import pytest

from qtc.ir import Graph, QuantParams, infer_shapes
from qtc.ir.diff import canonical_attrs, ir_diff


def small() -> Graph:
    g = Graph(name="small")
    g.add_tensor("x", (1, 6, 6, 2), "int8", quant=QuantParams(0.05, -3))
    g.add_const("w", np.arange(36, dtype=np.int8).reshape(2, 3, 3, 2) - 18,
                QuantParams([0.01, 0.02], [0, 0], axis=0, narrow_range=True, symmetric=True))
    g.add_const("b", np.array([5, -7], dtype=np.int32), QuantParams([5e-4, 1e-3], [0, 0], axis=0, bits=32))
    g.add_tensor("y", (1, 6, 6, 2), "int8", quant=QuantParams(0.1, 4))
    g.add_tensor("p", (1, 3, 3, 2), "int8", quant=QuantParams(0.1, 4))
    g.add_node("Conv2D", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], channels_last=True)
    g.add_node("MaxPool", ["y"], ["p"], name="pool", kernel=[2, 2], channels_last=True)
    g.inputs, g.outputs = ["x"], ["p"]
    return infer_shapes(g)


def test_identical_and_spelling_only_differences():
    a, b = small(), small()
    assert ir_diff(a, b) == []
    # absent attribute == its default; None strides/dilations == the neutral list; a pool's strides == kernel
    b.node("conv").attrs.update(strides=[1, 1], dilations=(1, 1), groups=1, activation="none")
    b.node("pool").attrs.update(strides=[2, 2], pads=[0, 0, 0, 0])
    assert ir_diff(a, b) == []
    assert canonical_attrs(a.node("pool"))["strides"] == [2, 2]


@pytest.mark.parametrize("field,value", [("scale", [0.01, 0.03]), ("zero_point", [0, 1]), ("axis", None),
                                         ("bits", 4), ("signed", False), ("narrow_range", False),
                                         ("symmetric", False), ("power_of_two", True)])
def test_every_quant_field_is_compared(field, value):
    a, b = small(), small()
    q = b.tensors["w"].quant
    setattr(q, field, np.asarray(value, dtype=q.scale.dtype if field == "scale" else np.int64)
            if field in ("scale", "zero_point") else value)
    d = ir_diff(a, b)
    assert len(d) == 1 and d[0].startswith(f"tensor 'w': quant.{field}"), d


def test_tensor_node_and_io_differences():
    a = small()
    cases = {
        "data": (lambda g: g.tensors["w"].data.__setitem__((0, 0, 0, 0), 7), "tensor 'w': data differs (1 of 36"),
        "dtype": (lambda g: setattr(g.tensors["b"], "dtype", "int64"), "tensor 'b': dtype int32 != int64"),
        "shape": (lambda g: setattr(g.tensors["p"], "shape", (1, 9, 2)), "tensor 'p': shape"),
        "no quant": (lambda g: setattr(g.tensors["y"], "quant", None), "tensor 'y': quant params only in the first"),
        "extra tensor": (lambda g: g.add_tensor("z", (1,)), "tensor 'z': only in the second graph"),
        "attr": (lambda g: g.node("conv").attrs.update(activation="relu"), "node 'conv': attr activation"),
        "op": (lambda g: setattr(g.node("pool"), "op", "AvgPool"), "node 'pool': op MaxPool != AvgPool"),
        "inputs": (lambda g: g.node("conv").inputs.pop(), "node 'conv': inputs"),
        "name": (lambda g: setattr(g.node("pool"), "name", "pool2"), "node 'pool2' (MaxPool): only in the second"),
        "order": (lambda g: g.nodes.reverse(), "node order differs"),
        "outputs": (lambda g: g.outputs.append("y"), "graph outputs"),
    }
    for label, (mutate, words) in cases.items():
        b = small()
        mutate(b)
        d = ir_diff(a, b)
        assert any(words in line for line in d), (label, d)


def test_node_names_optional():
    a, b = small(), small()
    b.node("pool").name = "p"
    assert len(ir_diff(a, b)) == 2
    assert ir_diff(a, b, node_names=False) == []
