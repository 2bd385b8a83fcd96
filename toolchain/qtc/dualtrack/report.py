"""The dual track's report: ``dualtrack.json`` + ``dualtrack.md`` + ``accuracy_vs_size.png``.

The Markdown names the winner and why, then shows every candidate with its
numbers, including those that fail a budget (and which).  The plot puts every
candidate (and the float model) at its largest sub-model size vs its eval
metric: green passes every budget, red fails one, the winner is a star.  The
PNG carries no software/date metadata, so the same run gives the same bytes.
"""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_file, save_json
from ..eval.report import clean_json
from .decide import BUDGET_LABELS

PLOT_NAME = "accuracy_vs_size.png"


def _f(x, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def _limit(budget: str, v) -> str:
    if v is None:
        return "n/a"
    if budget.endswith("_bytes"):
        return f"{int(round(v)):,} B"
    if budget == "latency_ms":
        return f"{v:.3f} ms"
    return f"{v:.4f}"


def _size_cell(c: dict) -> str:
    parts = []
    for name, s in c["sub_models"].items():
        basis = {"tflite": ".tflite", "c_weights": "C weights", "float32_weights": "fp32 weights"}.get(
            s.get("size_basis"), s.get("size_basis") or "?")
        parts.append(f"{name} {_f(s.get('size_bytes'))} B ({basis})")
    return "<br>".join(parts)


def _verdict(c: dict) -> str:
    if c.get("passes"):
        return "meets every budget"
    return "fails: " + ", ".join(f"{BUDGET_LABELS[b]} ({c['checks'][b]['status']}: "
                                 f"{_limit(b, c['checks'][b]['value'])} vs {_limit(b, c['checks'][b]['limit'])})"
                                 for b in c["failed_budgets"])


def _latency_cell(c: dict) -> str:
    lat = c.get("latency")
    if not lat or lat.get("end_to_end_ms") is None:
        return "not measured" if not lat else f"not measured ({lat.get('reason', '')})"
    return f"{lat['end_to_end_ms']:.3f} ({lat.get('where_short', '?')})"


def plot(doc: dict, path) -> Path:
    """Accuracy (the decision metric) vs size, one point per candidate (+ the float model)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    metric = doc["decision"]["metric"]
    winner = doc["decision"]["winner"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    points = []
    fl = doc.get("float") or {}
    fsize = max((s.get("size_bytes") or 0 for s in (fl.get("sub_models") or {}).values()), default=0)
    if fl.get("metrics", {}).get(metric) is not None and fsize:
        points.append(("float (fp32)", fsize, fl["metrics"][metric], "#8c8c8c", "s", False))
    for c in doc["candidates"]:
        sizes = [s.get("size_bytes") for s in c["sub_models"].values()]
        val = (c.get("metrics") or {}).get(metric)
        if None in sizes or val is None:
            continue
        color = "#55a868" if c.get("passes") else "#c44e52"
        points.append((c["name"], max(sizes), val, color, "*" if c["name"] == winner else "o", c["name"] == winner))
    for label, x, y, color, marker, win in points:
        ax.scatter([x / 1024.0], [y], c=color, marker=marker, s=260 if win else 70, zorder=3,
                   edgecolors="black", linewidths=0.6)
        ax.annotate(label, (x / 1024.0, y), textcoords="offset points", xytext=(7, 5), fontsize=8)
    budgets = doc.get("budgets") or {}
    if "model_bytes" in budgets:
        ax.axvline(budgets["model_bytes"] / 1024.0, color="#c44e52", linestyle="--", linewidth=1.0)
        ax.annotate("size budget", (budgets["model_bytes"] / 1024.0, ax.get_ylim()[0]), textcoords="offset points",
                    xytext=(-60, 6), fontsize=7, color="#c44e52")
    fval = (fl.get("metrics") or {}).get(metric)
    if fval is not None:
        ax.axhline(fval, color="#8c8c8c", linestyle=":", linewidth=1.0)
    ax.set_xscale("log")
    ax.set_xlabel("largest sub-model size (KiB, log scale; basis per candidate in the report)", fontsize=9)
    ax.set_ylabel(f"{metric} on the frozen eval set", fontsize=9)
    ax.set_title(f"{doc['name']}: {metric} vs size (green meets every budget, red fails one; star = winner)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def markdown(doc: dict, plot_name: str | None) -> str:
    d = doc["decision"]
    metric = d["metric"]
    cfg = doc["config"]
    lines = [f"# Dual-track quantization: {doc['name']} on {doc['target']}", ""]
    if d["winner"]:
        lines.append(f"**Winner: {d['winner']}**: {d['why']}.")
    else:
        lines.append(f"**No winner**: {d['why']}. No candidate is picked; relax a budget, change the bit widths "
                     "or train longer.")
    fl = doc["float"]["metrics"]
    also = "" if metric == "accuracy" else f", accuracy {_f(fl.get('accuracy'))}"
    lines += ["", f"Float baseline: {metric} {_f(fl.get(metric))}{also} "
              f"on {fl.get('n_eval')} eval {'scenes' if doc['pair'] else 'samples'}.", ""]
    lines += ["## Budgets", "", "| budget | limit | from |", "|---|---:|---|"]
    for b, v in doc["budgets"].items():
        lines.append(f"| {BUDGET_LABELS[b]} (`{b}`) | {_limit(b, v)} | {doc['budget_sources'].get(b, '?')} |")
    if not doc["budgets"]:
        lines.append("| (none) | | |")
    lines += ["", f"Size basis: {doc['size_note']}", "", f"Latency: {doc['latency_note']}", ""]
    acc_col = metric != "accuracy"
    lines += ["## Candidates", "",
              f"| candidate | track | setting | {metric} |" + (" accuracy |" if acc_col else "")
              + " drop vs float | size per sub-model | latency ms | verdict |",
              "|---|---|---|---:|" + ("---:|" if acc_col else "") + "---:|---|---:|---|"]
    for c in doc["candidates"]:
        m = c["metrics"]
        drop = c["checks"].get("accuracy_drop", {}).get("value")
        if drop is None and fl.get("accuracy") is not None and m.get("accuracy") is not None:
            drop = fl["accuracy"] - m["accuracy"]
        name = f"**{c['name']}**" if c["name"] == d["winner"] else c["name"]
        lines.append(f"| {name} | {c['track']} | {c['setting']} | {_f(m.get(metric))} |"
                     + (f" {_f(m.get('accuracy'))} |" if acc_col else "")
                     + f" {_f(drop)} | {_size_cell(c)} | {_latency_cell(c)} | {_verdict(c)} |")
    if plot_name:
        lines += ["", f"![{metric} vs size]({plot_name})"]
    lines += ["", "## Candidate details", ""]
    for c in doc["candidates"]:
        lines.append(f"### {c['name']}")
        lines.append("")
        lines.append(f"- eval: `{c['eval_json']}`" + (f"; notes: {'; '.join(c['notes'])}" if c.get("notes") else ""))
        for name, s in c["sub_models"].items():
            if "qir" not in s:  # the float model (quantization: 0)
                lines.append(f"- {name}: float32 weights {_f(s.get('size_bytes'))} B")
                continue
            tfl = (f"`{s['tflite']}` {_f(s['tflite_bytes'])} B" if s.get("tflite")
                   else f"no .tflite ({s.get('tflite_error')})")
            lines.append(f"- {name}: `{s['qir']}`; {tfl}; C `{s['c_dir']}`: weights {_f(s.get('c_weight_bytes'))} B, "
                         f"arena {_f(s.get('c_arena_bytes'))} B, {_f(s.get('macs'))} MACs"
                         + (f"; bench median {s['bench']['median_us']:.1f} µs" if s.get("bench") else ""))
        for name, hist in (c.get("history") or {}).items():
            steps = []
            for h in hist:
                parts = [f"loss {h['loss']:.4g}"] if "loss" in h else []
                if "metric" in h:
                    parts.append(f"fake-quant accuracy {h['metric']:.4f}")
                steps.append(f"epoch {h['epoch']}{' (PTQ init)' if h['epoch'] == 0 else ''}: "
                             + (", ".join(parts) or "-"))
            lines.append(f"- QAT {name}: " + "; ".join(steps))
        lat = c.get("latency")
        if lat and lat.get("end_to_end_ms") is not None:
            lines.append(f"- latency: {lat['formula']} = {lat['end_to_end_ms']:.3f} ms ({lat['where']})")
        lines.append("")
    if doc.get("ptq_search"):
        lines += ["## PTQ search (the PTQ candidate is the best of these)", "",
                  f"| activations | weights | AdaRound | {metric} |" + (" accuracy |" if acc_col else ""),
                  "|---|---|---|---:|" + ("---:|" if acc_col else "")]
        for r in doc["ptq_search"]:
            lines.append(f"| {r['method']} | {r.get('weight_method', 'minmax')} | {_f(r['adaround'])} | "
                         f"{_f(r['metrics'].get(metric))} |"
                         + (f" {_f(r['metrics'].get('accuracy'))} |" if acc_col else ""))
        lines.append("")
    if doc.get("skipped"):
        lines += ["## Tracks not run", ""] + [f"- {s['track']}: {s['reason']}" for s in doc["skipped"]] + [""]
    q = doc["quantization"]
    lines += ["## Setup", "",
              f"- target {doc['target']}; quantization mode {q['mode']} ({q['mode_label']}); "
              f"W{q['wbits']}A{q['abits']}; tracks {', '.join(cfg['tracks']) or 'none (float only)'}",
              "- quant dataset: "
              + ", ".join(f"{k} {v} samples" for k, v in doc["quant_dataset"]["calibration"].items())
              + f" (`{doc['quant_dataset']['file']}`); eval: {doc['eval']['kind']} `{doc['eval']['file']}`, "
              f"sha256 {doc['eval']['sha256'][:16]}…",
              f"- seed {cfg['seed']}; config `{cfg['source'] or 'in memory'}`"]
    if q.get("tensorlab"):
        lines.append("- Tensorlab keys: " + ", ".join(f"{k}={v}" for k, v in q["tensorlab"].items()))
    if cfg.get("ignored"):
        lines.append("- Tensorlab keys recorded, not used by qtc: " + ", ".join(cfg["ignored"]))
    lines.append("")
    return "\n".join(lines)


def write_report(doc: dict, out_dir) -> dict[str, Path]:
    """Write dualtrack.json, dualtrack.md and the plot into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    has_points = any(c.get("metrics") for c in doc["candidates"]) or doc.get("float")
    if has_points:
        paths["plot"] = plot(doc, out / PLOT_NAME)
    paths["report"] = out / "dualtrack.md"
    with atomic_file(paths["report"]) as tmp:
        tmp.write_text(markdown(doc, PLOT_NAME if "plot" in paths else None), encoding="utf-8")
    paths["json"] = save_json(out / "dualtrack.json", clean_json(doc))
    return paths
