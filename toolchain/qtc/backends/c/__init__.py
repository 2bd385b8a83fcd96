"""The native C back end: generated C99 + hand-written int8 kernels + a static memory plan.

``compile_c(graph, out_dir, model_name=...)`` is the entry point (see
:mod:`qtc.backends.c.codegen`); ``docs/c-backend.md`` describes the output.
"""
from .codegen import compile_c, kernel_files

__all__ = ["compile_c", "kernel_files"]
