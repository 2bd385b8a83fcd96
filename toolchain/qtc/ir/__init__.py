"""The qtc IR: tensors with quant params, nodes, graphs; save/load; validation."""
from .graph import Graph, Node
from .serialize import load, save
from .tensor import QuantParams, Tensor
from .validate import infer_shapes, validate, with_batch

__all__ = ["Graph", "Node", "QuantParams", "Tensor", "load", "save", "infer_shapes", "validate", "with_batch"]
