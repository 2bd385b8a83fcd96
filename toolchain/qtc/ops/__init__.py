"""Op definitions: each op once (shape rule, float semantics, integer semantics)."""
from .registry import all_ops, get_op, has_op, register

__all__ = ["all_ops", "get_op", "has_op", "register"]
