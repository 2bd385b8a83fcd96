"""``qtc calibrate``, ``qtc quantize``, ``qtc sensitivity`` and ``qtc check``: click commands (wired into qtc.cli).

    qtc calibrate model.qir --data X.npz --calib-count 200 --eval-count 500 --seed 0 -o data/
    qtc quantize model.qir --target esp32 --method entropy --calib data/quant_dataset_x.npy -o model_q.qir
    qtc quantize model.qir --wbits 4 --adaround --bias-correction --equalize --calib data/ -o model_w4.qir
    qtc sensitivity model.qir --calib data/ --wbits 4 --budget-drop 1% --eval data/ -o proposal.json
    qtc quantize model.qir --wbits 4 --calib data/ --apply-proposal proposal.json -o model_mixed.qir
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
@click.option("--method", type=click.Choice(["minmax", "ema", "percentile", "entropy", "mse", "auto"]), default="minmax",
              show_default=True, help="activation calibration method (auto: per tensor, scored on the calibration split)")
@click.option("--percentile", type=float, default=None, help="percentile for --method percentile (default 99.99)")
@click.option("--wbits", type=click.IntRange(2, 8), default=None, help="weight bits 8/4/2 (default: target's)")
@click.option("--abits", type=click.IntRange(4, 8), default=None, help="activation bits 8/4 (default: target's)")
@click.option("--mode", type=click.Choice(["static", "dynamic", "mixed"]), default="static", show_default=True)
@click.option("--keep-float", "keep_float", multiple=True, help="node name or scope prefix to keep in float (repeat)")
@click.option("--int16", "int16", multiple=True, help="node/tensor to quantize to int16 activations (repeat)")
@click.option("--per-channel/--per-tensor", "per_channel", default=None, help="weights granularity (default: target's)")
@click.option("--weight-method", type=click.Choice(["minmax", "mse", "auto"]), default="minmax", show_default=True)
@click.option("--calib", "calib", multiple=True, type=click.Path(exists=True),
              help="quant_dataset_<input>.npy (one per input) or the calibrate output folder")
@click.option("--equalize", is_flag=True, help="cross-layer equalization of the float model first (DFQ)")
@click.option("--bias-correction", "bias_correction", is_flag=True,
              help="empirical bias correction of every weight layer (DFQ)")
@click.option("--adaround", is_flag=True, help="learn the weights' rounding (AdaRound) on the calibration data")
@click.option("--adaround-iters", type=click.IntRange(1, 100000), default=None,
              help="AdaRound iterations per layer (default 1000)")
@click.option("--adaround-seed", type=int, default=None, help="AdaRound seed (default 0)")
@click.option("--block-reconstruction", "block", is_flag=True,
              help="with --adaround and --per-feature-input: learn the input's per-feature scales and round the "
                   "FullyConnected block reading it jointly against the block's float output")
@click.option("--layer-wbits", "layer_wbits", multiple=True, metavar="NAME=BITS",
              help="weight bits 8/4/2 for one layer or scope prefix, e.g. fc1=8 with --wbits 4 (repeat)")
@click.option("--per-feature-input", "per_feature_input", is_flag=True,
              help="one scale/zero point per input feature, folded into the first FullyConnected layers "
                   "(for inputs whose features have different ranges; the params go to the model's metadata)")
@click.option("--apply-proposal", "proposal", type=click.Path(exists=True, dir_okay=False),
              help="proposal.json from 'qtc sensitivity': keep its layers at high precision")
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="output .qir directory")
@click.option("--quiet", is_flag=True, help="no progress bar")
def quantize_cmd(model, target, method, percentile, wbits, abits, mode, keep_float, int16, per_channel,
                 weight_method, calib, equalize, bias_correction, adaround, adaround_iters, adaround_seed, block,
                 layer_wbits, per_feature_input, proposal, out, quiet):
    """Post-training quantization of MODEL for --target (TFLite int8 scheme under the target's rules)."""
    from .ir.serialize import save
    from .passes.quantize import quantize
    from .passes.quantize.dataset import load_calibration
    from .passes.quantize.mixed import apply_proposal, load_proposal, setting_mismatches

    g = _load_model(model)
    keep_float, int16 = list(keep_float), list(int16)
    proposal_wbits: dict[str, int] = {}
    if proposal:
        prop = load_proposal(proposal)
        for m in setting_mismatches(prop, _effective_settings(target, method, wbits, abits, per_channel,
                                                              weight_method)):
            click.echo(f"warning: {proposal}: measured with other settings ({m})", err=True)
        mode, keep_float, int16 = apply_proposal(prop, mode, keep_float, int16)
        proposal_wbits = dict(prop.get("layer_wbits") or {})
    ada = None
    if adaround or adaround_iters is not None or adaround_seed is not None or block:
        if not adaround:
            raise QtcError("--adaround-iters/--adaround-seed/--block-reconstruction need --adaround",
                           hint="add --adaround")
        if block and not per_feature_input:
            raise QtcError("--block-reconstruction works on an input with per-feature params",
                           hint="add --per-feature-input")
        ada = {k: v for k, v in (("iters", adaround_iters), ("seed", adaround_seed)) if v is not None}
        if block:
            ada["block"] = True
    calib_arrays, record = (None, None)
    if calib:
        calib_arrays, record = load_calibration(list(calib), g)
    elif mode != "dynamic":
        raise QtcError("static/mixed quantization needs --calib", hint="run 'qtc calibrate' and pass "
                                                                      "--calib DIR/quant_dataset_<input>.npy")
    elif ada is not None or bias_correction:
        raise QtcError("--adaround/--bias-correction need --calib", hint="run 'qtc calibrate' and pass --calib DIR")
    settings = {}
    if percentile is not None:
        if method != "percentile":
            raise QtcError("--percentile only applies to --method percentile", hint="drop --percentile")
        settings["percentile"] = percentile
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qg = quantize(g, calib_arrays, target=target, method=method, wbits=wbits, abits=abits, mode=mode,
                      keep_float=keep_float, int16=int16, per_channel=per_channel,
                      observer_settings=settings, weight_method=weight_method,
                      seed=(record or {}).get("seed"), progress=not quiet, equalize=equalize,
                      bias_correction=bias_correction, adaround=False if ada is None else ada,
                      per_feature_input=per_feature_input,
                      layer_wbits={**proposal_wbits, **_layer_bits(layer_wbits)})
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
    if meta.get("equalization"):
        click.echo(f"  equalized {len(meta['equalization']['pairs'])} layer pair(s)")
    if meta.get("adaround"):
        changed = sum(r["changed"] for r in meta["adaround"]["layers"])
        click.echo(f"  adaround: {len(meta['adaround']['layers'])} layer(s), {changed} weight(s) rounded the other way")
    for blk in meta.get("block_reconstruction") or []:
        click.echo(f"  block reconstruction at {blk.get('input')}: {', '.join(blk.get('nodes') or [])}"
                   + (f" (not applied: {blk.get('reason')})" if not blk.get("applied")
                      else " (kept nearest rounding: no gain)" if blk.get("kept_nearest") else ""))
    if meta.get("bias_correction"):
        click.echo(f"  bias correction: {len(meta['bias_correction']['layers'])} layer(s)")
    if meta.get("layer_wbits"):
        click.echo("  weight bits per layer: " + ", ".join(f"{k}={v}" for k, v in meta["layer_wbits"].items()))
    for name, pf in (meta.get("per_feature_input") or {}).items():
        click.echo(f"  input {name}: per-feature params for {pf['features']} features "
                   f"(quantize it with metadata input_quant, not the tensor's params)")


def _layer_bits(items) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, bits = item.rpartition("=")
        if not sep or not name or not bits.strip().isdigit():
            raise QtcError(f"--layer-wbits {item!r} is not NAME=BITS", hint="e.g. --layer-wbits fc1=8")
        out[name] = int(bits)
    return out


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


def _effective_settings(target, method, wbits, abits, per_channel, weight_method) -> dict:
    """The settings a quantization really uses (target defaults filled in), as a proposal records them."""
    from .passes.quantize.constraints import spec_for

    spec = spec_for(target, wbits=wbits, abits=abits, per_channel=per_channel)
    return {"target": spec.target, "method": method, "wbits": spec.wbits, "abits": spec.abits,
            "per_channel": spec.per_channel, "weight_method": weight_method}


def _fraction(text: str) -> float:
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise QtcError(f"cannot read accuracy drop {text!r}",
                       hint="give a fraction (0.01) or a percentage (1%)") from None
    if not 0.0 <= value < 1.0:
        raise QtcError(f"accuracy drop {text!r} is not below 100%", hint="give a fraction (0.01) or a percentage (1%)")
    return value


@click.command("sensitivity")
@click.argument("model", type=click.Path(exists=True))
@click.option("--calib", "calib", multiple=True, required=True, type=click.Path(exists=True),
              help="quant_dataset_<input>.npy (one per input) or the calibrate output folder")
@click.option("--target", "target", default="host", show_default=True, help="target name or YAML file")
@click.option("--method", type=click.Choice(["minmax", "ema", "percentile", "entropy", "mse"]), default="minmax",
              show_default=True, help="activation calibration method (auto: per tensor, scored on the calibration split)")
@click.option("--wbits", type=click.IntRange(2, 8), default=None, help="weight bits 8/4/2 (default: target's)")
@click.option("--abits", type=click.IntRange(4, 8), default=None, help="activation bits 8/4 (default: target's)")
@click.option("--per-channel/--per-tensor", "per_channel", default=None, help="weights granularity (default: target's)")
@click.option("--weight-method", type=click.Choice(["minmax", "mse"]), default="minmax", show_default=True)
@click.option("--budget-sqnr", type=float, default=None, help="minimum output SQNR (dB) on the calibration set")
@click.option("--budget-drop", default=None, help="maximum top-1 accuracy drop: 0.01 or 1% (needs --eval, --labels)")
@click.option("--eval", "eval_paths", multiple=True, type=click.Path(exists=True),
              help="quant_eval_<input>.npy (one per input) or the calibrate output folder")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="labels .npy (default: quant_eval_labels.npy in the --eval folder)")
@click.option("--precision", type=click.Choice(["float", "int16", "w8"]), default="float", show_default=True,
              help="what 'high precision' means for the proposed layers (w8: 8-bit weights in a low-bit run)")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None, help="write proposal.json")
@click.option("--quiet", is_flag=True, help="no progress bar")
def sensitivity_cmd(model, calib, target, method, wbits, abits, per_channel, weight_method, budget_sqnr, budget_drop,
                    eval_paths, labels, precision, out, quiet):
    """Rank MODEL's weight layers by the error each adds when quantized alone; propose layers to keep precise."""
    from pathlib import Path

    import numpy as np

    from .passes.quantize.calibrate import calibration_hash
    from .passes.quantize.dataset import load_calibration
    from .passes.quantize.mixed import make_proposal, write_proposal
    from .passes.quantize.sensitivity import propose, rank_layers

    g = _load_model(model)
    calib_arrays, _ = load_calibration(list(calib), g)
    if budget_sqnr is not None and budget_drop is not None:
        raise QtcError("give one budget, not both", hint="--budget-sqnr DB or --budget-drop X")
    qargs = {"target": target, "method": method, "wbits": wbits, "abits": abits, "per_channel": per_channel,
             "weight_method": weight_method}
    if precision == "w8" and _effective_settings(target, method, wbits, abits, per_channel, weight_method)["wbits"] == 8:
        raise QtcError("--precision w8 keeps layers at 8-bit weights; the run already has 8-bit weights",
                       hint="use --wbits 4 or 2 with --precision w8, or --precision float/int16")
    cg, ranking = rank_layers(g, calib_arrays, progress=not quiet, **qargs)
    click.echo(f"{'rank':>4}  {'layer':<32} {'op':<16} {'SQNR dB':>9} {'params':>9}")
    for r in ranking:
        note = "" if r["quantized"] else "  (target keeps it float)"
        click.echo(f"{r['rank']:>4}  {r['layer']:<32} {r['op']:<16} {r['sqnr_db']:>9.2f} {r['params']:>9}{note}")
    plan = None
    if budget_sqnr is not None or budget_drop is not None:
        eval_data = label_arr = None
        drop = None
        if budget_drop is not None:
            drop = _fraction(budget_drop)
            if not eval_paths:
                raise QtcError("--budget-drop needs --eval", hint="pass --eval DIR (from 'qtc calibrate') and --labels")
            eval_data, _ = load_calibration(list(eval_paths), g, prefix="quant_eval")
            if labels is None:
                guess = [Path(p) / "quant_eval_labels.npy" for p in eval_paths if Path(p).is_dir()]
                guess += [Path(p).parent / "quant_eval_labels.npy" for p in eval_paths if not Path(p).is_dir()]
                labels = next((str(p) for p in guess if p.exists()), None)
                if labels is None:
                    raise QtcError("--budget-drop needs labels", hint="pass --labels Y.npy")
            label_arr = np.load(labels, allow_pickle=False)
        plan = propose(cg, calib_arrays, ranking, budget_sqnr=budget_sqnr, budget_drop=drop, eval_data=eval_data,
                       labels=label_arr, precision=precision, progress=not quiet, **qargs)
        for st in plan["steps"]:
            what = "SQNR dB" if plan["budget"]["kind"] == "sqnr_db" else "accuracy"
            click.echo(f"  {precision} {st['high_precision'] or '[]'}: {what} {st['value']:.4f}")
        verdict = "met" if plan["met"] else "NOT met even with every layer at high precision"
        click.echo(f"budget {verdict}: keep {len(plan['layers'])} layer(s) at {precision}: {plan['layers']}")
    if out:
        settings = _effective_settings(target, method, wbits, abits, per_channel, weight_method)
        calibration = {"samples": int(next(iter(calib_arrays.values())).shape[0]),
                       "sha256": calibration_hash(calib_arrays)}
        write_proposal(out, make_proposal(cg.name, settings, calibration, ranking, plan))
        click.echo(f"proposal -> {out}")


COMMANDS = [calibrate_cmd, quantize_cmd, sensitivity_cmd, check_cmd]


def register(group: click.Group) -> None:
    """Add calibrate / quantize / sensitivity / check to the qtc command group."""
    for cmd in COMMANDS:
        group.add_command(cmd)
