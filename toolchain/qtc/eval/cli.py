"""``qtc compare``: float vs quantized on a frozen eval split → eval_<variant>.json + Markdown report + plot.

    qtc compare model.qir model_q.qir --data data/ -o reports/            # a 'qtc calibrate' folder
    qtc compare model.onnx model_q.qir --data x_eval.npy --labels y_eval.npy --variant ptq -o reports/
    qtc compare model.onnx --variant float --data data.npz:x_eval --labels data.npz:y_eval -o reports/
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import QtcError
from .compare import METRICS


def _read(spec: str, what: str):
    """FILE.npy → array; FILE.npz → {key: array}; FILE.npz:KEY → array."""
    path, key = spec, None
    if ".npz:" in spec:
        path, _, key = spec.rpartition(":")
    p = Path(path)
    if not p.is_file():
        raise QtcError(f"{what} file not found", where=path, hint="give an existing .npy or .npz file")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if key is not None:
                    if key not in z.files:
                        raise QtcError(f"no array {key!r} in the npz", where=path,
                                       hint=f"its arrays are {', '.join(z.files)}")
                    return z[key]
                return {k: z[k] for k in z.files}
        return np.load(p, allow_pickle=False)
    except QtcError:
        raise
    except (ValueError, OSError) as exc:
        raise QtcError(f"cannot read {what}: {exc}", where=path, hint="save it with numpy.save / numpy.savez") from None


def read_eval_data(specs: tuple[str, ...], g) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    """--data values → ({input: samples}, labels found beside them or None, a short data name)."""
    from ..passes.quantize.dataset import LABEL_KEYS, safe_name

    inputs: dict[str, np.ndarray] = {}
    labels = None
    names = []
    for spec in specs:
        names.append(Path(spec.rpartition(":")[0] if ".npz:" in spec else spec).name
                     + (":" + spec.rpartition(":")[2] if ".npz:" in spec else ""))
        if Path(spec).is_dir():
            d = Path(spec)
            for name in g.inputs:
                f = d / f"quant_eval_{safe_name(name)}.npy"
                if not f.is_file():
                    raise QtcError(f"no eval split for input {name!r} ({f.name})", where=spec,
                                   hint="point --data at a 'qtc calibrate' output folder or at .npy files")
                inputs[name] = np.load(f, allow_pickle=False)
            if (d / "quant_eval_labels.npy").is_file():
                labels = np.load(d / "quant_eval_labels.npy", allow_pickle=False)
            continue
        name, sep, path = spec.partition("=")
        if not sep or name not in g.inputs:
            name, path = None, spec
        data = _read(path, "eval data")
        if isinstance(data, dict):
            found = {k: v for k, v in data.items() if k in g.inputs}
            if not found:
                arrays = {k: v for k, v in data.items() if k not in LABEL_KEYS}
                if len(arrays) == 1 and len(g.inputs) == 1:
                    found = {g.inputs[0]: next(iter(arrays.values()))}
                else:
                    raise QtcError(f"npz keys {sorted(data)} are not the model's inputs", where=path,
                                   hint=f"pick one with FILE.npz:KEY; the inputs are {g.inputs}")
            inputs.update(found)
            for k in LABEL_KEYS:
                if k in data and labels is None:
                    labels = data[k]
            continue
        if name is None:
            if len(g.inputs) != 1:
                raise QtcError(f"the model has {len(g.inputs)} inputs; say which one {path} is",
                               hint=f"use --data NAME={path}; the inputs are {g.inputs}")
            name = g.inputs[0]
        inputs[name] = data
    missing = [n for n in g.inputs if n not in inputs]
    if missing:
        raise QtcError(f"no eval data for input(s) {missing}", hint="add --data NAME=x.npy for each input")
    return inputs, labels, ", ".join(names)


def _load(path: str):
    from ..cli import _load as load_canonical

    return load_canonical(path, (), None, None)


def _take(inputs: dict, labels, count: int | None):
    if count is None:
        return inputs, labels
    if count <= 0:
        raise QtcError("--count must be positive", hint="e.g. --count 200")
    return {k: v[:count] for k, v in inputs.items()}, (None if labels is None else labels[:count])


@click.command("compare", epilog="\b\nExamples:\n"
               "  qtc compare model.qir model_q.qir --data data/ -o reports/\n"
               "  qtc compare model.onnx model_q.qir --data x_eval.npy --labels y_eval.npy -o reports/\n"
               "  qtc compare model.onnx --variant float --data data.npz:x_eval --labels data.npz:y_eval")
@click.argument("float_model", type=click.Path(exists=True))
@click.argument("quant_model", type=click.Path(exists=True), required=False)
@click.option("--data", "data", multiple=True, required=True, metavar="[NAME=]FILE|FILE.npz[:KEY]|DIR",
              help="Eval samples (axis 0): .npy, .npz (keys = input names, or :KEY), or a 'qtc calibrate' folder.")
@click.option("--labels", default=None, metavar="FILE.npy|FILE.npz:KEY",
              help="Labels (integer: accuracy) or regression targets (float: MSE).")
@click.option("--metric", type=click.Choice(METRICS), default="auto", show_default=True,
              help="Task metric; auto = accuracy for integer labels, mse for float targets.")
@click.option("--variant", default="ptq", show_default=True,
              help="Name of the quantized variant (eval_<variant>.json); 'float' evaluates FLOAT_MODEL alone.")
@click.option("--with-float", is_flag=True, help="Also write eval_float.json (the float model's metric).")
@click.option("--count", type=int, default=None, help="Use only the first N eval samples.")
@click.option("--layer-samples", type=int, default=None,
              help="Samples for the per-layer SQNR table (default: all).")
@click.option("--numerics", default="tflite", show_default=True, help="Integer numerics to emulate.")
@click.option("--no-plot", is_flag=True, help="Skip the PNG plot.")
@click.option("-o", "--output-dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder for eval_<variant>.json, report_<variant>.md and the plot.")
def compare_cmd(float_model, quant_model, data, labels, metric, variant, with_float, count, layer_samples,
                numerics, no_plot, output_dir):
    """Compare FLOAT_MODEL with its quantized QUANT_MODEL on the same eval samples.

    Reports the task metric of both, output error (MSE, max/mean/p99 |err|,
    cosine, NaN/Inf) with the guide's verdict (MSE < 0.001 negligible,
    0.001-0.01 acceptable, above significant) and per-layer SQNR.
    """
    from . import report
    from .compare import compare, evaluate_float

    if variant == "float" and quant_model is not None:
        raise click.UsageError("--variant float evaluates FLOAT_MODEL alone; drop QUANT_MODEL")
    if variant != "float" and quant_model is None:
        raise click.UsageError("give QUANT_MODEL to compare with (or --variant float for the float model alone)")
    fg = _load(float_model)
    inputs, found_labels, data_name = read_eval_data(data, fg)
    y = _read(labels, "labels") if labels else found_labels
    if isinstance(y, dict):
        if len(y) != 1:
            raise QtcError(f"the labels npz holds {sorted(y)}", where=labels, hint="pick one with FILE.npz:KEY")
        y = next(iter(y.values()))
    inputs, y = _take(inputs, y, count)
    fname = Path(float_model).name
    written = []
    if variant == "float" or with_float:
        fdoc = evaluate_float(fg, inputs, y, metric if metric not in ("agreement", "cosine") else "auto",
                              model_name=fname, data_name=data_name)
        written += report.write(fdoc, output_dir).values()
        m = fdoc["metric"]
        click.echo(f"float {fname}: {m['name']} {m['value'] if m['value'] is not None else '-'} "
                   f"on {fdoc['eval']['samples']} samples")
    if variant != "float":
        qg = _load(quant_model)
        doc = compare(fg, qg, inputs, y, metric=metric, variant=variant, numerics=numerics,
                      layer_samples=layer_samples, float_name=fname, quant_name=Path(quant_model).name,
                      data_name=data_name)
        written += report.write(doc, output_dir, plot=not no_plot).values()
        s, m = doc["summary"], doc["metric"]
        if m["name"] != "none":
            click.echo(f"{m['name']}: float {m['float']:.6g}, quantized {m['quant']:.6g} "
                       f"(change {m['delta']:+.6g})")
        click.echo(f"output MSE {s['mse']:.6g} -> {s['verdict']}; mean max |err| "
                   f"{s['mean_sample_max_abs_err']:.6g} -> {s['max_error_verdict']}; p99 |err| "
                   f"{s['p99_abs_err']:.6g}; cosine {s['cosine']:.6f}"
                   + ("" if s["finite"] else "; NaN/Inf in the quantized outputs!"))
        if doc["layers"]:
            finite = [r for r in doc["layers"] if r["sqnr_db"] is not None and r["op"] != "(input)"]
            if finite:
                w = min(finite, key=lambda r: r["sqnr_db"])
                click.echo(f"{len(doc['layers'])} layers compared, lowest SQNR {w['sqnr_db']:.1f} dB at "
                           f"{w['node']} ({w['op']}); {len(doc['skipped_layers'])} skipped")
    for p in written:
        click.echo(f"wrote {p}")


def register(group: click.Group) -> None:
    """Add ``compare`` to the qtc command group."""
    group.add_command(compare_cmd)
