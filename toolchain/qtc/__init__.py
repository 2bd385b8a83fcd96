"""qtc: a quantization compiler for embedded and edge targets."""
__version__ = "0.1.0"
