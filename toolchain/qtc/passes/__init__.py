"""Graph → graph passes.  Each is a pure function: it returns a new graph and
records what it did in ``graph.metadata['passes']``."""
from .canonicalize import canonicalize
from .const_fold import fold_constants
from .dce import remove_dead_nodes
from .fold_bn import fold_batchnorm
from .fuse_activation import fuse_activations
from .layout import cancel_transposes, to_channels_last

__all__ = ["canonicalize", "fold_constants", "remove_dead_nodes", "fold_batchnorm", "fuse_activations",
           "to_channels_last", "cancel_transposes"]
