"""The ``qtc`` command line: import, show, layers, run, ops.

Errors: a :class:`qtc.errors.QtcError` prints one line ``error: …`` on stderr
and exits 2; any other exception prints one line ``internal error: …`` and
exits 1 (``QTC_DEBUG=1`` prints the traceback too).  Every file or folder the
CLI writes goes to a temp path first and is renamed into place, so a failed
command leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import re
import sys
import traceback
from pathlib import Path

import click
import numpy as np

# quiet TensorFlow/absl (imported lazily by the Keras/TFLite paths) and never touch a GPU here
for _k, _v in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("TF_ENABLE_ONEDNN_OPTS", "0"), ("GRPC_VERBOSITY", "ERROR")):
    os.environ.setdefault(_k, _v)

from . import __version__
from .errors import QtcError, ShapeError

DEBUG_ENV = "QTC_DEBUG"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class QtcGroup(click.Group):
    """A click group that turns exceptions into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # e.g. `qtc ops | head`: the reader left; stop quietly
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            ctx.exit(141)  # 128 + SIGPIPE, as a shell tool killed by SIGPIPE reports
        except QtcError as exc:
            if _debug():
                traceback.print_exc()
            click.echo(f"error: {exc.line()}", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if _debug():
                traceback.print_exc()
            click.echo(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                       f"(re-run with {DEBUG_ENV}=1 for the traceback)", err=True)
            ctx.exit(1)


# ------------------------------------------------------------------ parsing
def parse_shape(text: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,x×]", text.strip()) if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape; write it as 1,3,32,32") from None
    if not shape or any(d <= 0 for d in shape):
        raise click.BadParameter(f"{text!r}: a shape needs one or more positive dims, e.g. 1,3,32,32")
    return shape


def parse_input_shapes(specs: tuple[str, ...]) -> dict[str, tuple[int, ...]] | None:
    if not specs:
        return None
    out = {}
    for spec in specs:
        name, sep, shape = spec.rpartition("=")
        if not sep or not name:
            raise click.BadParameter(f"{spec!r}: write it as NAME=1,3,32,32 (NAME is the model input's name; "
                                     "'qtc show' lists them)", param_hint="--input-shape")
        out[name] = parse_shape(shape)
    return out


def model_options(f):
    """Options every command that reads a model file takes."""
    f = click.option("--format", "fmt", type=click.Choice(["onnx", "tflite", "keras", "torch", "qir"]),
                     default=None, help="Skip format detection.")(f)
    f = click.option("--model-class", metavar="PKG.MOD:CLASS", default=None,
                     help="The nn.Module class a .pt/.pth state dict belongs to.")(f)
    f = click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D0,D1,..",
                     help="Fix an input's shape (ONNX/torch); repeat for several inputs.")(f)
    return f


def _load(model: str, input_shapes, model_class, fmt, channels_last: bool = False):
    """The graph ``qtc import`` would write: front end, then canonicalize (a .qir is read as is,
    unless it is to be converted to channels-last)."""
    import importlib.util

    from .frontends import detect_format, load_model

    fmt = fmt or detect_format(model)
    g = load_model(model, input_shapes=parse_input_shapes(input_shapes), model_class=model_class, fmt=fmt)
    if fmt == "qir" and not channels_last:
        return g  # already canonical
    if importlib.util.find_spec("qtc.passes.canonicalize") is not None:
        from .passes.canonicalize import canonicalize

        g = canonicalize(g, channels_last=channels_last)
    elif channels_last:
        raise QtcError("--channels-last needs the canonicalize pass, which this qtc build lacks",
                       hint="drop --channels-last")
    return g


# ------------------------------------------------------------------ commands
@click.group(cls=QtcGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nExample:\n  qtc import model.onnx -o model.qir && qtc show model.qir")
@click.version_option(__version__, "--version", prog_name="qtc", message="%(prog)s %(version)s")
def cli():
    """qtc: a quantization compiler for embedded and edge targets.

    Reads ONNX, .tflite, tf_keras and torch models into one IR (a .qir
    folder), shows and runs it with a reference interpreter (float, or exact
    TFLite integer arithmetic).
    """


@cli.command("import", epilog="\b\nExamples:\n"
             "  qtc import model.onnx -o model.qir --input-shape input=1,3,32,32\n"
             "  qtc import net.pth --model-class mypkg.nets:Net --input-shape x=1,8 -o net.qir\n"
             "  qtc import model.tflite -o model.qir")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The .qir folder to write.")
@click.option("--channels-last/--keep-layout", default=False,
              help="Convert activations to NHWC while canonicalizing (default: keep the source layout).")
@model_options
def import_cmd(model, output, channels_last, input_shapes, model_class, fmt):
    """Import MODEL (.onnx/.tflite/.keras/.h5/.pt/.pth/.qir) into a .qir IR folder.

    The front end's graph is canonicalized (BatchNorm folded, activations
    fused, dead nodes removed) and validated before it is written.
    """
    import hashlib

    from .frontends import detect_format
    from .ir import save, validate

    fmt = fmt or detect_format(model)
    g = _load(model, input_shapes, model_class, fmt, channels_last=channels_last)
    validate(g)
    src = Path(model)
    if fmt != "qir":  # a re-imported .qir keeps its original source
        g.metadata.setdefault("source_format", fmt)
        g.metadata["source_file"] = src.name  # the name only: no machine paths in artifacts
        if src.is_file():
            g.metadata.setdefault("source_sha256", hashlib.sha256(src.read_bytes()).hexdigest())
    save(g, output)
    from .ir.summary import summarize

    t = summarize(g).totals
    click.echo(f"wrote {output}: {t.nodes} nodes, {t.params:,} params, {t.macs:,} MACs")


@cli.command("show", epilog="\b\nExamples:\n  qtc show model.qir\n  qtc show model.onnx --json > summary.json")
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@model_options
def show_cmd(model, as_json, input_shapes, model_class, fmt):
    """Print MODEL's layers (shapes, params, MACs, quant params) and totals.

    A model file is shown as 'qtc import' would write it (canonicalized).
    """
    from .ir.summary import format_summary, summarize

    s = summarize(_load(model, input_shapes, model_class, fmt))
    click.echo(json.dumps(s.to_json(), indent=1) if as_json else format_summary(s))


WEIGHT_OPS = ("Conv1D", "Conv2D", "ConvTranspose2D", "FullyConnected", "MatMul")
OP_ALIASES = {
    "conv": ("Conv1D", "Conv2D"),
    "convtranspose": ("ConvTranspose2D",),
    "deconv": ("ConvTranspose2D",),
    "fc": ("FullyConnected",),
    "linear": ("FullyConnected",),
    "gemm": ("FullyConnected",),
    "dense": ("FullyConnected",),
}


def resolve_op_types(names: tuple[str, ...]) -> set[str]:
    from .ops import all_ops

    known = {k.lower(): k for k in all_ops()}
    out: set[str] = set()
    for name in names:
        key = name.lower()
        if key in OP_ALIASES:
            out.update(OP_ALIASES[key])
        elif key in known:
            out.add(known[key])
        else:
            raise QtcError(f"unknown op type {name!r}",
                           hint=f"use an op from 'qtc ops' or one of: {', '.join(sorted(OP_ALIASES))}")
    return out


def _norm_scope(name: str) -> str:
    return name.replace("/", ".").strip(".")


def in_scope(node_name: str, scopes: tuple[str, ...]) -> bool:
    """Prefix match; '/' and '.' are treated alike (ONNX '/enc/fc1' matches torch 'enc.fc1')."""
    if not scopes:
        return True
    return any(node_name.startswith(p) or _norm_scope(node_name).startswith(_norm_scope(p)) for p in scopes)


@cli.command("layers", epilog="\b\nExamples:\n"
             "  qtc layers model.qir                      # every Conv/FC/MatMul/ConvTranspose with weights\n"
             "  qtc layers model.qir --scope encoder. --op FC\n"
             "  qtc layers model.onnx --op Conv --op MatMul")
@click.argument("model", type=click.Path())
@click.option("--scope", "scopes", multiple=True, metavar="PREFIX",
              help="Only nodes whose name starts with PREFIX ('/' and '.' alike); repeatable.")
@click.option("--op", "ops", multiple=True, metavar="TYPE",
              help="Only these op types (Conv, FC, MatMul, ConvTranspose or any 'qtc ops' name); repeatable.")
@model_options
def layers_cmd(model, scopes, ops, input_shapes, model_class, fmt):
    """Dry run: list the layers a quantization config with these filters would touch.

    By default the weight-bearing layers: Conv1D/Conv2D, ConvTranspose2D,
    FullyConnected and MatMul with a constant operand.  Nothing is changed.
    """
    from .ir.summary import fmt_shape, node_macs, node_params, table

    g = _load(model, input_shapes, model_class, fmt)
    explicit = resolve_op_types(ops) if ops else None
    total_params = sum(t.size for t in g.tensors.values() if t.is_const and t.dtype != "int64")
    rows, n_params = [], 0
    for idx, node in enumerate(g.nodes):
        consts = [g.tensors[i] for i in node.inputs if i and i in g.tensors and g.tensors[i].is_const]
        if explicit is not None:
            if node.op not in explicit:
                continue
        elif node.op not in WEIGHT_OPS or not any(len(t.shape) >= 2 for t in consts):
            continue
        if not in_scope(node.name, scopes):
            continue
        weight = next((t for t in consts if len(t.shape) >= 2), None)
        p = node_params(g, node)
        n_params += p
        macs = node_macs(g, node)
        rows.append([str(idx), node.name, node.op, fmt_shape(weight.shape) if weight else "-",
                     fmt_shape(g.tensors[node.outputs[0]].shape), f"{p:,}", "?" if macs is None else f"{macs:,}"])
    if rows:
        click.echo(table(["#", "node", "op", "weight", "output", "params", "MACs"], rows, right={0, 5, 6}))
    share = f", {100.0 * n_params / total_params:.1f}% of the model's" if total_params else ""
    filters = []
    if scopes:
        filters.append("scope " + " | ".join(scopes))
    filters.append("op " + (" | ".join(sorted(explicit)) if explicit is not None else "weight-bearing (default)"))
    click.echo(f"{len(rows)} layers matched of {len(g.nodes)} nodes ({n_params:,} params{share}); "
               f"filters: {'; '.join(filters)}")


@cli.command("ops", epilog="\b\nExample:\n  qtc ops")
def ops_cmd():
    """List the ops qtc knows, and which have exact integer semantics."""
    from .ir.summary import table
    from .ops import all_ops

    ops = all_ops()
    rows = []
    for name in sorted(ops):
        op = ops[name]
        lo, hi = op.NUM_INPUTS
        n_in = str(lo) if hi == lo else f"{lo}..{'n' if hi is None else hi}"
        rows.append([name, "yes" if op.has_int else "no", n_in, ", ".join(op.ATTRS) or "-"])
    click.echo(table(["op", "integer", "inputs", "attrs"], rows))
    n_int = sum(op.has_int for op in ops.values())
    click.echo(f"{len(ops)} ops, {n_int} with integer semantics (the rest run in float only)")


# ------------------------------------------------------------------ run
def _read_array(path: str) -> np.ndarray | dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise QtcError("input file does not exist" if not p.exists() else "input is not a file", where=path,
                       hint="pass a .npy (or .npz) file")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise QtcError(f"cannot read the input array ({_one_line(exc)})", where=path,
                       hint="save it with numpy.save (a .npy) or numpy.savez (a .npz keyed by input name)") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return {k: data[k] for k in data.files}
    return data


def collect_feeds(g, specs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """--input x.npy | NAME=x.npy | x.npz (keys are input names) → {input name: array}."""
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or name not in g.inputs:
            name, path = None, spec
        data = _read_array(path)
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(g.inputs))
            if unknown:
                raise QtcError(f"npz keys {unknown} are not graph inputs", where=path,
                               hint=f"the graph's inputs are {g.inputs}")
            feeds.update(data)
            continue
        if name is None:
            if len(g.inputs) != 1:
                raise QtcError(f"the model has {len(g.inputs)} inputs; say which one {path} is",
                               hint=f"use --input NAME={path}; the inputs are {g.inputs}")
            name = g.inputs[0]
        feeds[name] = data
    missing = [n for n in g.inputs if n not in feeds]
    if missing:
        raise ShapeError(f"no value given for graph input(s) {missing}", where=f"graph {g.name}",
                         hint="add --input NAME=x.npy for each")
    return feeds


def integer_feeds(g, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Quantize float arrays with the graph input's params (per feature where the quantizer chose so);
    check integer arrays fit."""
    from .ir.boundary import INT_DTYPES, quantize_input

    out = {}
    for name, x in feeds.items():
        t = g.tensors[name]
        x = np.asarray(x)
        if t.quant is None or t.dtype not in INT_DTYPES:
            out[name] = x
        elif np.issubdtype(x.dtype, np.integer):
            lo, hi = max(t.quant.qmin, int(np.iinfo(t.dtype).min)), min(t.quant.qmax, int(np.iinfo(t.dtype).max))
            if x.size and (x.min() < lo or x.max() > hi):
                raise ShapeError(f"input {name!r} has integers in [{x.min()}, {x.max()}], outside {t.dtype} "
                                 f"range [{lo}, {hi}]", where=f"graph {g.name}",
                                 hint="pass float data to have qtc quantize it, or integers in range")
            out[name] = x.astype(np.int64)
        elif np.issubdtype(x.dtype, np.floating):
            if tuple(x.shape) != t.shape:
                out[name] = x  # the runner reports the shape mismatch
            else:
                out[name] = quantize_input(g, name, x)
        else:
            raise ShapeError(f"input {name!r} has dtype {x.dtype}", where=f"graph {g.name}",
                             hint="pass float or integer data")
    return out


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "tensor"


def write_dump(dump_dir: str, g, env: dict[str, np.ndarray], mode: str) -> int:
    """Every activation tensor as DIR/<tensor>.npy + DIR/manifest.json, written atomically."""
    from .atomic import atomic_dir

    target = Path(dump_dir)
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / "manifest.json").exists())):
        raise QtcError("the dump folder exists and is not an earlier qtc dump", where=dump_dir,
                       hint="pick a new or empty folder")
    producers = {o: n.name for n in g.nodes for o in n.outputs}
    order = list(g.inputs) + [o for n in g.nodes for o in n.outputs]
    entries, taken = [], set()
    with atomic_dir(target) as tmp:
        for name in order:
            if name not in env or env[name] is None or name in taken:
                continue
            base = _safe_name(name)
            fname, k = f"{base}.npy", 1
            while fname.lower() in {e["file"].lower() for e in entries}:
                fname, k = f"{base}_{k}.npy", k + 1
            taken.add(name)
            arr = np.asarray(env[name])
            np.save(tmp / fname, arr, allow_pickle=False)
            t = g.tensors[name]
            entry = {"tensor": name, "file": fname, "shape": list(arr.shape), "dtype": str(arr.dtype),
                     "producer": producers.get(name, "(graph input)")}
            if t.quant is not None and np.issubdtype(arr.dtype, np.integer):
                entry["quant"] = {"scale": [float(s) for s in t.quant.scale],
                                  "zero_point": [int(z) for z in t.quant.zero_point], "axis": t.quant.axis}
            entries.append(entry)
        rows = ",\n".join("  " + json.dumps(e) for e in entries)  # one tensor per line
        head = f'{{"model": {json.dumps(g.name)}, "mode": {json.dumps(mode)}, "tensors": [\n'
        (tmp / "manifest.json").write_text(head + rows + "\n]}\n")
    return len(entries)


@cli.command("run", epilog="\b\nExamples:\n"
             "  qtc run model.qir --input x.npy -o y.npy\n"
             "  qtc run model_int8.qir --input x.npy --integer -o y.npy        # float in/out, integer inside\n"
             "  qtc run model_int8.qir --input x.npy --integer --raw -o yq.npy # int8 out\n"
             "  qtc run model.qir --input a=a.npy --input b=b.npy --dump-dir dump/ -o out.npz")
@click.argument("model", type=click.Path())
@click.option("--input", "-i", "inputs", multiple=True, required=True, metavar="[NAME=]FILE",
              help="Input array (.npy; NAME= for multi-input models, or one .npz keyed by input name).")
@click.option("--integer", is_flag=True, help="Exact integer arithmetic on a quantized graph.")
@click.option("--raw", is_flag=True, help="With --integer: keep outputs as integers (no dequantize).")
@click.option("--numerics", default="tflite", show_default=True, help="Integer numerics to emulate.")
@click.option("--dump-dir", type=click.Path(), default=None,
              help="Write every intermediate tensor to DIR/<tensor>.npy plus DIR/manifest.json.")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Where to save the output (.npy; .npz for several outputs).")
@model_options
def run_cmd(model, inputs, integer, raw, numerics, dump_dir, output, input_shapes, model_class, fmt):
    """Run MODEL on input arrays with the reference interpreter (float by default)."""
    from .atomic import save_npy, save_npz
    from .interp.runner import INT_DTYPES, run

    if raw and not integer:
        raise click.UsageError("--raw only applies with --integer")
    g = _load(model, input_shapes, model_class, fmt)
    if output is not None and len(g.outputs) > 1 and not output.endswith(".npz"):
        raise QtcError(f"the model has {len(g.outputs)} outputs {g.outputs}; they go in one .npz",
                       where=output, hint="name the output file something.npz")
    if integer and not g.is_quantized:
        raise QtcError("--integer needs a quantized graph; this one is float", where=model,
                       hint="drop --integer, or quantize the model first")
    if not integer and g.is_quantized:
        raise QtcError("the graph is quantized; its integer tensors only run with integer arithmetic",
                       where=model, hint="add --integer (and --raw to keep integer outputs)")
    feeds = collect_feeds(g, inputs)
    if integer:
        feeds = integer_feeds(g, feeds)
    env = run(g, feeds, numerics=numerics, keep=dump_dir is not None)
    results = {}
    for name in g.outputs:
        v = env[name]
        t = g.tensors[name]
        if integer and not raw and t.quant is not None and t.dtype in INT_DTYPES:
            v = t.quant.dequantize(v)
        results[name] = v
    if dump_dir is not None:
        n = write_dump(dump_dir, g, env, "integer" if integer else "float")
        click.echo(f"dumped {n} tensors to {dump_dir}")
    for name, v in results.items():
        stats = ""
        if v.size:
            vf = v.astype(np.float64)
            stats = f" min {vf.min():.6g} max {vf.max():.6g} mean {vf.mean():.6g}"
        click.echo(f"{name}: {'x'.join(map(str, v.shape))} {v.dtype}{stats}")
    if output is not None:
        if output.endswith(".npz"):
            save_npz(output, results)
        else:
            save_npy(output, next(iter(results.values())))
        click.echo(f"wrote {output}")


def _register_subcommands() -> None:
    """Commands that live beside their subsystem (PTQ, back ends, device loop)."""
    import importlib

    from . import pipeline, quant_cli

    quant_cli.register(cli)
    pipeline.register(cli)
    for mod, names in (("qtc.backends.cli", ("compile",)),
                       ("qtc.backends.tflite.cli", ("verify", "size")),
                       ("qtc.device.cli", ("build", "flash", "bench")),
                       ("qtc.eval.cli", ("compare",)), ("qtc.dualtrack.cli", ("dualtrack",))):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError:
            continue
        if hasattr(m, "register"):
            m.register(cli)
            continue
        for n in names:
            cmd = getattr(m, n, None) or getattr(m, f"{n}_cmd", None)
            if isinstance(cmd, click.Command):
                cli.add_command(cmd, n)


_register_subcommands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``qtc = qtc.cli:main``)."""
    cli.main(args=argv, prog_name="qtc")


if __name__ == "__main__":
    main()
