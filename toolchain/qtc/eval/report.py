"""Write a comparison as ``eval_<variant>.json`` + ``report_<variant>.md`` + a per-layer SQNR plot.

The plot is a horizontal bar chart, one bar per layer in graph order, drawn
with matplotlib's Agg backend; the PNG carries no software/date metadata, so
the same comparison gives a byte-identical file.  Every file is written to a
temp path and renamed into place.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import atomic_file, save_json
from ..errors import QtcError
from . import metrics as M

MAX_PLOT_LAYERS = 120
VERDICT_LINE = {
    "negligible": "negligible accuracy loss",
    "acceptable": "minor accuracy loss (acceptable)",
    "significant": "significant accuracy loss: consider more or more diverse calibration data, "
                   "another calibration method, or keeping sensitive layers in float (--mode mixed)",
}


def clean_json(doc):
    """Replace non-finite floats with None, recursively (JSON has no inf/NaN)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: clean_json(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [clean_json(v) for v in doc]
    return doc


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e5 else f"{x:.{digits}f}"


def _sqnr_cell(x) -> str:
    return "∞ (exact)" if x is None else f"{x:.1f}"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _cap(text: str, width: int = 44) -> str:
    text = str(text)
    return text if len(text) <= width else "…" + text[-(width - 1):]


# --------------------------------------------------------------------------- plot
def plot_sqnr(layers: list[dict], path, title: str, abits: int | None = None) -> Path:
    """Bar chart of per-layer SQNR (dB) to ``path`` (PNG). Exact layers (no error) get a hatched bar."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    shown = layers[:MAX_PLOT_LAYERS]
    if not shown:
        raise QtcError("no matched layers to plot", where="report", hint="see skipped_layers in the eval JSON")
    finite = [r["sqnr_db"] for r in shown if r["sqnr_db"] is not None]
    top = max(finite + [10.0])
    cap = top * 1.15 + 5.0
    labels = [_cap(f"{r['tensor']} (graph input)" if r["op"] == "(input)" else f"{r['node']} ({r['op']})")
              for r in shown]
    values = [cap if r["sqnr_db"] is None else r["sqnr_db"] for r in shown]
    ys = list(range(len(shown)))
    fig_h = 1.4 + 0.28 * len(shown)
    fig, ax = plt.subplots(figsize=(9.0, fig_h), dpi=110)
    kept_float = [r["op"] != "(input)" and r.get("dtype") == "float32" for r in shown]
    colors = ["#8c8c8c" if r["sqnr_db"] is None else ("#dd8452" if f else "#4c72b0")
              for r, f in zip(shown, kept_float)]
    bars = ax.barh(ys, values, color=colors, height=0.7)
    for bar, r in zip(bars, shown):
        if r["sqnr_db"] is None:
            bar.set_hatch("//")
        text = "exact" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        x = bar.get_width()
        inside = x > 0.12 * cap
        ax.text(x - 0.01 * cap if inside else max(x, 0) + 0.01 * cap, bar.get_y() + bar.get_height() / 2, text,
                va="center", ha="right" if inside else "left", fontsize=8, color="white" if inside else "black")
    xlabel = "SQNR (dB), higher is better" + ("; orange: layer kept in float" if any(kept_float) else "")
    if abits:
        ideal = 6.02 * abits + 1.76
        ax.axvline(ideal, color="#c44e52", linestyle="--", linewidth=1.0)
        xlabel += f"; dashed: ideal {abits}-bit uniform quantizer, {ideal:.1f} dB"
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)  # graph order, top to bottom, no empty margin
    ax.set_xlim(min([0.0] + values) * 1.1, cap * 1.05 if not abits else max(cap, 6.02 * abits + 8) * 1.05)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- markdown
def markdown(doc: dict, plot_name: str | None) -> str:
    s, m = doc["summary"], doc["metric"]
    q = doc.get("quantization") or {}
    lines = [f"# Quantization report: {doc['float_model']} vs {doc['quant_model']} ({doc['variant']})", ""]
    lines.append(f"**Verdict: {s['verdict']}**: {VERDICT_LINE[s['verdict']]} (output MSE {_fmt(s['mse'])}; "
                 f"bands: < {M.MSE_NEGLIGIBLE} negligible, {M.MSE_NEGLIGIBLE}–{M.MSE_ACCEPTABLE} acceptable, "
                 "above significant).")
    lines.append(f"Max error: **{s['max_error_verdict']}** (mean per-sample max |err| "
                 f"{_fmt(s['mean_sample_max_abs_err'])}; < {M.MAXERR_GOOD} good, {M.MAXERR_GOOD}–"
                 f"{M.MAXERR_ACCEPTABLE} acceptable, above poor).")
    if not s["finite"]:
        lines.append("**The quantized outputs contain NaN or Inf.**")
    lines += ["", "## Task metric", ""]
    if m["name"] == "none":
        lines.append("No labels were given: only output error is reported (pass --labels for accuracy).")
    else:
        lines += ["| metric | float | quantized | change |", "|---|---:|---:|---:|",
                  f"| {m['name']} | {_fmt(m['float'])} | {_fmt(m['quant'])} | {_fmt(m['delta'])} |"]
    if "top1_agreement" in m:
        lines += ["", f"Top-1 agreement (same argmax as the float model): {_fmt(m['top1_agreement'])}"]
    lines += ["", "## Output error (quantized vs float)", "",
              "| output | MSE | max \\|err\\| | mean sample max \\|err\\| | mean \\|err\\| | p99 \\|err\\| | cosine "
              "| SQNR dB | NaN/Inf | verdict |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, o in doc["outputs"].items():
        lines.append(f"| {_md_escape(name)} | {_fmt(o['mse'])} | {_fmt(o['max_abs_err'])} | "
                     f"{_fmt(o['mean_sample_max_abs_err'])} | {_fmt(o['mean_abs_err'])} | {_fmt(o['p99_abs_err'])} | "
                     f"{_fmt(o['cosine'], 6)} | {_sqnr_cell(o['sqnr_db'])} | {o['nan']}/{o['inf']} | "
                     f"{o['mse_verdict']} |")
    lines += ["", "## Per-layer SQNR", ""]
    layers = doc["layers"]
    ev = doc["eval"]
    if layers:
        lines.append(f"Each quantized layer's output (dequantized) against the float model's tensor, over "
                     f"{ev['layer_samples']} sample(s). Low SQNR marks where error enters.")
        if plot_name:
            lines += ["", f"![SQNR per layer]({plot_name})"]
        lines += ["", "| # | node | op | tensor | dtype | SQNR dB | MSE | matched by |",
                  "|---:|---|---|---|---|---:|---:|---|"]
        for k, r in enumerate(layers):
            lines.append(f"| {k} | {_md_escape(r['node'])} | {r['op']} | {_md_escape(r['tensor'])} | {r['dtype']} | "
                         f"{_sqnr_cell(r['sqnr_db'])} | {_fmt(r['mse'])} | {r['matched_by']} |")
        finite = [r for r in layers if r["sqnr_db"] is not None and r["op"] != "(input)"]
        if finite:
            worst = min(finite, key=lambda r: r["sqnr_db"])
            lines += ["", f"Lowest SQNR: {_md_escape(worst['node'])} ({worst['op']}), {worst['sqnr_db']:.1f} dB."]
    else:
        lines.append("No layer of the quantized model matched a float tensor (see the skipped list).")
    if doc["skipped_layers"]:
        lines += ["", f"Skipped ({len(doc['skipped_layers'])}, no float counterpart):", ""]
        lines += [f"- {_md_escape(r['node'])} ({r['op']}) `{_md_escape(r['tensor'])}`: {r['reason']}"
                  for r in doc["skipped_layers"]]
    lines += ["", "## Setup", "",
              f"- eval samples: {ev['samples']} (data {ev.get('data') or 'in memory'}, sha256 {ev['sha256'][:16]}…)",
              "- quantization: " + (f"{q.get('mode')} W{q.get('wbits')}A{q.get('abits')} {q.get('method')} "
                                    f"for {q.get('target')}, per-channel {q.get('per_channel')}, "
                                    f"{q.get('float_nodes')} float node(s)" if q.get("method")
                                    else "not recorded (the model was not quantized by qtc)"),
              f"- integer numerics: {doc['numerics']}; qtc {doc['qtc_version']}", ""]
    return "\n".join(lines)


def markdown_float(doc: dict) -> str:
    m = doc["metric"]
    lines = [f"# Float baseline: {doc['model']}", "",
             f"- metric: {m['name']} = {_fmt(m['value'])}",
             f"- eval samples: {doc['eval']['samples']} (sha256 {doc['eval']['sha256'][:16]}…)"]
    for name, o in doc["outputs"].items():
        lines.append(f"- output {name}: shape {o['shape']}, NaN {o['nan']}, Inf {o['inf']}")
    return "\n".join(lines) + "\n"


def write(doc: dict, out_dir, plot: bool = True) -> dict[str, Path]:
    """Write ``eval_<variant>.json`` (+ ``report_<variant>.md`` and its PNG) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variant = doc["variant"]
    if not variant or any(c in variant for c in "/\\") or variant.startswith("."):
        raise QtcError(f"bad variant name {variant!r}", hint="use a plain word such as ptq, qat, float")
    paths = {"json": out / f"eval_{variant}.json"}
    if variant == "float" and "summary" not in doc:
        paths["report"] = out / "report_float.md"
        with atomic_file(paths["report"]) as tmp:
            tmp.write_text(markdown_float(doc), encoding="utf-8")
    else:
        plot_name = None
        if plot and doc["layers"]:
            plot_name = f"report_{variant}_sqnr.png"
            q = doc.get("quantization") or {}
            title = f"{doc['quant_model']}: per-layer SQNR vs {doc['float_model']}"
            paths["plot"] = plot_sqnr(doc["layers"], out / plot_name, title, q.get("abits"))
        paths["report"] = out / f"report_{variant}.md"
        with atomic_file(paths["report"]) as tmp:
            tmp.write_text(markdown(doc, plot_name), encoding="utf-8")
    save_json(paths["json"], clean_json(doc))
    return paths


def read(path) -> dict:
    return json.loads(Path(path).read_text())
