"""Harness pieces for bench/c_vs_tflm.py: the C driver of the generated model
(c_vs_tflm_main.c, qtc_layer_profile.h), the TFLM child process
(tflm_invoke.py) and TFLM's reachable code size (tflm_code.py)."""
