"""``qtc verify`` and ``qtc size`` (and the printing ``qtc compile --backend tflite`` uses).

``register(cli)`` adds both commands to the main ``qtc`` group.  Exit codes:
0 ok, 1 the numerics differ (verify), 2 a user error (bad file, unsupported op).
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ...errors import QtcError


def _read_bytes(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise QtcError("file does not exist" if not p.exists() else "not a file", where=path,
                       hint="pass a .tflite file")
    return p.read_bytes()


def read_samples(path: str, input_names: list[str]) -> list[np.ndarray]:
    """--data: a .npy (one input; samples on axis 0) or a .npz keyed by input name (or in input order)."""
    p = Path(path)
    if not p.is_file():
        raise QtcError("data file does not exist", where=path, hint="pass a .npy or .npz of samples")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise QtcError(f"cannot read the samples ({' '.join(str(exc).split())})", where=path,
                       hint="save them with numpy.save / numpy.savez") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        if len(input_names) != 1:
            raise QtcError(f"the model has {len(input_names)} inputs, a .npy holds one array", where=path,
                           hint=f"use a .npz keyed by input name: {input_names}")
        return [data]
    with data:
        keys = list(data.files)
        if all(n in keys for n in input_names):
            return [data[n] for n in input_names]
        if len(keys) == len(input_names):
            return [data[k] for k in keys]
    raise QtcError(f"npz keys {keys} do not name the model inputs {input_names}", where=path,
                   hint="key each array by its input name")


def compile_for_cli(graph, output, *, io_dtype: str = "int8", emit_c: str | None = None) -> str:
    """What ``qtc compile MODEL.qir --backend tflite -o OUT.tflite [--io-dtype float32] [--emit-c DIR]`` does:
    write the file (atomically) and, with ``emit_c``, model_data.c/.h with the measured TFLM arena.
    Returns the text to print; raises QtcError."""
    from .embed import write_model_data
    from .writer import compile_tflite

    info = compile_tflite(graph, output, io_dtype=io_dtype)
    text = format_compile(info)
    if emit_c:
        c = write_model_data(Path(output).read_bytes(), emit_c)
        text += f"\n  wrote {', '.join(c['files'])} (QTC_TFLM_ARENA_BYTES {c['arena_bytes']:,})"
    return text


def format_compile(info: dict) -> str:
    """What ``qtc compile --backend tflite`` prints after :func:`compile_tflite`."""
    ops = ", ".join(f"{k} x{v}" for k, v in info["op_counts"].items())
    return (f"wrote {info['path']}: {info['bytes']:,} B ({info['weight_bytes']:,} B weights), {info['ops']} ops "
            f"[{ops}], I/O {info['io_dtype']}\n  sha256 {info['sha256']}")


@click.command("verify", epilog="\b\nExamples:\n"
               "  qtc verify model.tflite --against model_int8.qir --data eval.npy\n"
               "  qtc verify model.tflite --against model_int8.qir --data eval.npz --per-layer --json v.json")
@click.argument("model", type=click.Path())
@click.option("--against", "qir", required=True, type=click.Path(), help="The .qir graph the file was compiled from.")
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Samples: .npy (one input) or .npz keyed by input name; float (quantized with the graph's "
                   "input params) or integer.")
@click.option("--per-layer", is_flag=True, help="Also find the first op whose output differs (all tensors kept).")
@click.option("--samples", "limit", type=click.IntRange(1), default=None, help="Use only the first N samples.")
@click.option("--json", "json_out", type=click.Path(), default=None, help="Write the full report as JSON.")
@click.pass_context
def verify_cmd(ctx, model, qir, data_path, per_layer, limit, json_out):
    """Check MODEL (.tflite) against qtc's interpreter on LiteRT-ref, XNNPACK and TFLM."""
    from ...atomic import save_json
    from ...ir import load
    from .verify import format_verify, verify

    try:
        data = _read_bytes(model)
        g = load(qir)
        xs = read_samples(data_path, g.inputs)
        if limit:
            xs = [x[:limit] for x in xs]
        report = verify(data, g, xs, per_layer=per_layer)
    except QtcError as exc:
        click.echo(f"error: {exc.line()}", err=True)
        ctx.exit(exc.exit_code)
        return
    click.echo(format_verify(report))
    if json_out:
        save_json(json_out, report)
    ctx.exit(0 if report["ok"] else 1)


@click.command("size", epilog="\b\nExamples:\n  qtc size model.tflite\n"
               "  qtc size model.tflite --emit-c build/fw/ --json size.json")
@click.argument("model", type=click.Path())
@click.option("--arena/--no-arena", default=True, show_default=True,
              help="Measure the TFLM arena by running TFLM (binary search + print_allocations).")
@click.option("--emit-c", "emit_dir", type=click.Path(), default=None,
              help="Also write model_data.c/.h (16-byte aligned array, QTC_TFLM_ARENA_BYTES) into this folder.")
@click.option("--symbol", default="qtc_model_tflite", show_default=True, help="C name of the array (--emit-c).")
@click.option("--json", "json_out", type=click.Path(), default=None, help="Write the numbers as JSON.")
@click.pass_context
def size_cmd(ctx, model, arena, emit_dir, symbol, json_out):
    """Flatbuffer, weight and TFLM arena bytes of MODEL (.tflite)."""
    from ...atomic import save_json
    from .embed import write_model_data
    from .size import format_size, size_report

    try:
        data = _read_bytes(model)
        rep = size_report(data, arena=arena or bool(emit_dir))
        if emit_dir:
            rep["emitted"] = write_model_data(data, emit_dir, symbol=symbol, arena_bytes=rep["arena_bytes"],
                                              arena_how=f"smallest arena_size that allocates and invokes; "
                                                        f"print_allocations total {rep['recorded_total']} B")
    except QtcError as exc:
        click.echo(f"error: {exc.line()}", err=True)
        ctx.exit(exc.exit_code)
        return
    click.echo(format_size(rep, Path(model).name))
    if emit_dir:
        click.echo(f"wrote {', '.join(rep['emitted']['files'])}")
    if json_out:
        save_json(json_out, rep)


def register(cli: click.Group) -> None:
    cli.add_command(verify_cmd, "verify")
    cli.add_command(size_cmd, "size")


def _main() -> None:  # `python -m qtc.backends.tflite.cli verify ...` before the lead wires the commands
    group = click.Group(commands={"verify": verify_cmd, "size": size_cmd})
    group(prog_name="qtc")


if __name__ == "__main__":
    _main()
