"""``qtc calibrate``, ``qtc quantize`` and ``qtc check``: click commands (wired into qtc.cli).

    qtc calibrate model.qir --data X.npz --calib-count 200 --eval-count 500 --seed 0 -o data/
    qtc quantize model.qir --target esp32 --method entropy --calib data/quant_dataset_x.npy -o model_q.qir
    qtc check model_q.qir --target ti-npu        # exit 0 clean, 1 with violations
"""
from __future__ import annotations

import sys
import warnings

import click

from .errors import QtcError


def _load_model(path: str):
    """A .qir directory, or any model file the front ends read (ONNX, .tflite, Keras)."""
    from .frontends import load_model

    return load_model(path)


@click.command("calibrate")
@click.argument("model", type=click.Path(exists=True))
@click.option("--data", "data", required=True,
              help="X.npy | X.npz | folder of images | file.csv | module:function")
@click.option("--calib-count", type=int, default=None, help="calibration samples (default min(200, N))")
@click.option("--eval-count", type=int, default=None, help="eval samples, disjoint (default min(200, rest))")
@click.option("--seed", type=int, default=0, show_default=True, help="split seed")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for quant_dataset_*.npy, quant_eval_*.npy, quant_eval_scenarios.json")
@click.option("--quiet", is_flag=True, help="no progress bar")
def calibrate_cmd(model, data, calib_count, eval_count, seed, out_dir, quiet):
    """Freeze a calibration split and an eval split of DATA (plus float reference outputs)."""
    from .passes.quantize.dataset import make_dataset

    g = _load_model(model)
    rec = make_dataset(g, data, out_dir, calib_count=calib_count, eval_count=eval_count, seed=seed,
                       progress=not quiet)
    click.echo(f"calibration: {rec['calib_count']} samples, eval: {rec['eval_count']} samples "
               f"(seed {rec['seed']}) -> {out_dir}")
    for fname in sorted(rec["files"]):
        f = rec["files"][fname]
        click.echo(f"  {fname}  {tuple(f['shape'])} {f['dtype']}")


@click.command("quantize")
@click.argument("model", type=click.Path(exists=True))
@click.option("--target", "target", default="host", show_default=True, help="target name or YAML file")
@click.option("--method", type=click.Choice(["minmax", "ema", "percentile", "entropy", "mse"]), default="minmax",
              show_default=True, help="activation calibration method")
@click.option("--percentile", type=float, default=None, help="percentile for --method percentile (default 99.99)")
@click.option("--wbits", type=click.IntRange(2, 8), default=None, help="weight bits 8/4/2 (default: target's)")
@click.option("--abits", type=click.IntRange(4, 8), default=None, help="activation bits 8/4 (default: target's)")
@click.option("--mode", type=click.Choice(["static", "dynamic", "mixed"]), default="static", show_default=True)
@click.option("--keep-float", "keep_float", multiple=True, help="node name or scope prefix to keep in float (repeat)")
@click.option("--int16", "int16", multiple=True, help="node/tensor to quantize to int16 activations (repeat)")
@click.option("--per-channel/--per-tensor", "per_channel", default=None, help="weights granularity (default: target's)")
@click.option("--weight-method", type=click.Choice(["minmax", "mse"]), default="minmax", show_default=True)
@click.option("--calib", "calib", multiple=True, type=click.Path(exists=True),
              help="quant_dataset_<input>.npy (one per input) or the calibrate output folder")
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="output .qir directory")
@click.option("--quiet", is_flag=True, help="no progress bar")
def quantize_cmd(model, target, method, percentile, wbits, abits, mode, keep_float, int16, per_channel,
                 weight_method, calib, out, quiet):
    """Post-training quantization of MODEL for --target (TFLite int8 scheme under the target's rules)."""
    from .ir.serialize import save
    from .passes.quantize import quantize
    from .passes.quantize.dataset import load_calibration

    g = _load_model(model)
    calib_arrays, record = (None, None)
    if calib:
        calib_arrays, record = load_calibration(list(calib), g)
    elif mode != "dynamic":
        raise QtcError("static/mixed quantization needs --calib", hint="run 'qtc calibrate' and pass "
                                                                      "--calib DIR/quant_dataset_<input>.npy")
    settings = {}
    if percentile is not None:
        if method != "percentile":
            raise QtcError("--percentile only applies to --method percentile", hint="drop --percentile")
        settings["percentile"] = percentile
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qg = quantize(g, calib_arrays, target=target, method=method, wbits=wbits, abits=abits, mode=mode,
                      keep_float=list(keep_float), int16=list(int16), per_channel=per_channel,
                      observer_settings=settings, weight_method=weight_method,
                      seed=(record or {}).get("seed"), progress=not quiet)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    meta = qg.metadata["quantization"]
    if record is not None:
        meta["calibration"]["dataset"] = {k: record.get(k) for k in ("seed", "calib_count", "eval_count", "source")}
    save(qg, out)
    nf = len(meta["float_nodes"])
    click.echo(f"quantized {g.name}: {meta['mode']} W{meta['wbits']}A{meta['abits']} {meta['method']} "
               f"for {meta['target']['target']}, {meta['calibration']['samples']} calibration samples"
               + (f", {nf} node(s) kept float" if nf else "") + f" -> {out}")
    for f in meta["float_nodes"]:
        click.echo(f"  float: {f['node']} ({f['op']}): {f['reason']}")


@click.command("check")
@click.argument("model", type=click.Path(exists=True))
@click.option("--target", "target", required=True, help="target name or YAML file")
def check_cmd(model, target):
    """List every constraint violation of a quantized MODEL on --target (exit 1 if any)."""
    from .passes.quantize.constraints import check

    g = _load_model(model)
    violations = check(g, target)
    for v in violations:
        click.echo(v.line())
    if violations:
        click.echo(f"{len(violations)} violation(s) of target {target}", err=True)
        sys.exit(1)
    click.echo(f"{g.name}: no violations of target {target}")


COMMANDS = [calibrate_cmd, quantize_cmd, check_cmd]


def register(group: click.Group) -> None:
    """Add calibrate / quantize / check to the qtc command group."""
    for cmd in COMMANDS:
        group.add_command(cmd)
