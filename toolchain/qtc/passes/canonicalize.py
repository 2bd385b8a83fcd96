"""``canonicalize``: the standard clean-up every imported graph goes through.

Order: dead-node removal → constant folding → BatchNorm folding → activation
fusion → (optionally) channels-last conversion → constant folding, dead-node
removal and Transpose/Reshape clean-up again.  Each step keeps the float output identical (to
float32 rounding); the result is validated.
"""
from __future__ import annotations

from ..ir.graph import Graph
from ..ir.validate import validate
from .const_fold import fold_constants
from .dce import remove_dead_nodes
from .fold_bn import fold_batchnorm
from .fuse_activation import fuse_activations
from .layout import cancel_transposes, to_channels_last


def canonicalize(g: Graph, channels_last: bool = False, keep_io_layout: bool = True) -> Graph:
    """Return a canonical copy of ``g`` (see the module docstring)."""
    g = remove_dead_nodes(g)
    g = fold_constants(g)
    g = fold_batchnorm(g)
    g = fuse_activations(g)
    if channels_last:
        g = to_channels_last(g, keep_io_layout=keep_io_layout)
    g = fold_constants(g)
    g = remove_dead_nodes(g)
    g = cancel_transposes(g)
    validate(g)
    return g
