"""Example models for qtc: small, seeded, CPU-trainable in seconds.

``python -m models.train_all --out DIR`` trains them and writes, per model,
``DIR/NAME/{NAME.pt, NAME.onnx, NAME.keras, NAME_float.tflite,
NAME_int8.tflite, data.npz, meta.json}``.  :mod:`models.zoo` is the Python API
(``MODELS``, ``build_torch``, ``load_data``).  Nothing trained is kept in the
source tree: every artifact is produced into ``DIR``.
"""
