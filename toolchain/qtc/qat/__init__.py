"""Quantization-aware training (QAT) for PyTorch models, converted back to qtc's integer IR.

    from qtc.qat import train_qat, qat_to_ir, accuracy_eval
    qat, history = train_qat(model, (x_train, y_train), accuracy_eval(x_eval, y_eval), target="esp32",
                             wbits=4, abits=4, epochs=4, lr=1e-3, distill_alpha=0.5, checkpoint_dir="build/qat")
    qg = qat_to_ir(qat)            # the integer graph with the learned params

Modules: :mod:`.fakequant` (LSQ quantizers), :mod:`.wrap` (the QAT model at PTQ's
quantization points), :mod:`.bn` (BatchNorm folding), :mod:`.train` (the loop),
:mod:`.export` (back to the IR), :mod:`.ddp` (torchrun).  See docs/qat.md.
"""
from .export import qat_to_ir
from .train import accuracy_eval, train_qat
from .wrap import QatModel, prepare_qat

__all__ = ["train_qat", "qat_to_ir", "prepare_qat", "accuracy_eval", "QatModel"]
