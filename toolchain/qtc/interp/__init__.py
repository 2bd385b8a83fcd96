"""The reference interpreter (float and exact integer), the oracle for every back end."""
from .runner import run, run_float, run_quantized

__all__ = ["run", "run_float", "run_quantized"]
