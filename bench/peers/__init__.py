"""Peer PTQ toolchains the benchmark compares qtc against: ONNX Runtime and the TFLite converter."""
