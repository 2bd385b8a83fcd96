"""``qtc compile MODEL.qir --backend c -o OUTDIR``: a quantized graph → deployable sources.

The command object is wired into the main ``qtc`` group by ``qtc/cli.py``.
It prints the memory plan (arena, weights, MACs) that the back end computed
at compile time.  The output folder is written to a temp folder and renamed
into place; a failure leaves nothing behind.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import QtcError

BACKENDS = ("c", "tflite")


def _fmt_bytes(n: int) -> str:
    return f"{n:,} B" if n < 10240 else f"{n:,} B ({n / 1024:.1f} KiB)"


@click.command("compile", epilog="\b\nExamples:\n"
               "  qtc compile model_int8.qir --backend c -o build/model_c\n"
               "  qtc compile model_int8.qir -o build/model_c --target esp32s3 --esp-nn --test-vectors 8\n"
               "  qtc compile model_int8.qir --backend tflite -o model.tflite --emit-c build/model_data")
@click.argument("model", type=click.Path(exists=True))
@click.option("--backend", default="c", show_default=True, help=f"Code generator: {', '.join(BACKENDS)}.")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="c: the folder to write (replaced); tflite: the .tflite file.")
@click.option("--target", default=None, help="Target YAML name or path (checks the back end and op list).")
@click.option("--name", "model_name", default=None, help="C name of the model (default: the file's stem).")
@click.option("--esp-nn/--no-esp-nn", default=False, show_default=True,
              help="Also emit ESP-NN calls, used when compiled with -DQTC_USE_ESP_NN.")
@click.option("--test-vectors", "n_vectors", type=click.IntRange(0, 4096), default=0, show_default=True,
              help="Write qtc_model_testvec.h with this many random inputs and the interpreter's outputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --test-vectors.")
@click.option("--plan/--no-plan", "show_plan", default=False, help="Print every tensor's arena offset.")
@click.option("--io-dtype", type=click.Choice(["int8", "float32"]), default="int8", show_default=True,
              help="tflite: model input/output type (float32 adds QUANTIZE/DEQUANTIZE at the edges).")
@click.option("--emit-c", type=click.Path(file_okay=False), default=None,
              help="tflite: also write model_data.c/.h (aligned array + measured TFLM arena) to this folder.")
@click.pass_context
def compile(ctx, model, backend, output, target, model_name, esp_nn, n_vectors, seed, show_plan,  # noqa: A001
            io_dtype, emit_c):
    """Compile a quantized MODEL (.qir) for a device: C sources (--backend c) or a .tflite (--backend tflite)."""
    if backend == "tflite":
        from ..ir import load
        from .tflite.cli import compile_for_cli

        click.echo(compile_for_cli(load(model), output, io_dtype=io_dtype, emit_c=emit_c))
        return
    try:
        info = _compile(model, backend, output, target, model_name, esp_nn, n_vectors, seed)
    except QtcError as exc:
        click.echo(f"error: {exc.line()}", err=True)
        ctx.exit(exc.exit_code)
        return
    click.echo(f"wrote {info['dir']}: qtc_{info['model']}.c/.h, qtc_model.h, "
               f"{len(info['kernel_files'])} kernel files" + (", qtc_model_testvec.h" if info["testvec_h"] else ""))
    click.echo(f"memory plan: arena {_fmt_bytes(info['arena_bytes'])} (static, peak) "
               f"+ scratch {_fmt_bytes(info.get('scratch_bytes', 0))}, "
               f"weights {_fmt_bytes(info['weight_bytes'])} (const), "
               f"input {info['input_bytes']} B, output {info['output_bytes']} B, {info['macs']:,} MACs")
    if esp_nn:
        click.echo(f"esp-nn: calls emitted under QTC_USE_ESP_NN (scratch {_fmt_bytes(info['esp_nn_scratch_bytes'])})")
    if show_plan:
        for name, t in info["plan"]["tensors"].items():
            where = t["storage"] if t["storage"] != "arena" else f"arena+{t['offset']}"
            click.echo(f"  {where:<14} {t['bytes']:>8} B  live {t['first']}..{t['last']}  {name}")


def _compile(model, backend, output, target, model_name, esp_nn, n_vectors, seed) -> dict:
    from ..ir import load

    if backend not in BACKENDS:
        raise QtcError(f"back end {backend!r} is not available from 'qtc compile'",
                       hint=f"use one of: {', '.join(BACKENDS)}")
    numerics = "tflite"
    if target:
        from ..target import load_target

        t = load_target(target)
        if t.backend and backend not in t.backend:
            raise QtcError(f"target {t.name} does not take the {backend!r} back end", where=f"target {t.name}",
                           hint=f"its back ends: {', '.join(t.backend)}")
        numerics = t.numerics
    g = load(model)
    if target and t.supported_ops:
        missing = sorted({n.op for n in g.nodes} - set(t.supported_ops))
        if missing:
            raise QtcError(f"ops {missing} are not in target {t.name}'s op list", where=f"graph {g.name}",
                           hint="replace them, or pick another --target")
    tests = None
    if n_vectors:
        x = g.tensors[g.inputs[0]] if len(g.inputs) == 1 else None
        shape = x.shape if x is not None else ()
        rng = np.random.default_rng(seed)
        tests = [rng.integers(-128, 128, shape).astype(np.int8) for _ in range(n_vectors)]
    from .c import compile_c

    return compile_c(g, Path(output), model_name=model_name or Path(model).stem.replace(".qir", ""),
                     test_inputs=tests, esp_nn=esp_nn, numerics=numerics)


compile_cmd = compile  # the name qtc/cli.py may import without shadowing the builtin
