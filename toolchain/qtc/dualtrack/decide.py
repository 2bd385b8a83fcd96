"""The decision rule: the best eval metric among the candidates that meet every budget.

The users' plan: "Pick the model with the best eval success rate that meets
size + latency constraints", with "accuracy drop <= 10% vs float".  Each
candidate is a dict with (see :mod:`.run`)::

  {"name", "track", "metrics": {metric: value, "accuracy": ...},
   "sub_models": {name: {"size_bytes", "size_basis", "c_arena_bytes", ...}},
   "latency": {"end_to_end_ms": float | None, "where": ..., ...} | None}

:func:`check_budgets` gives every budget's verdict for one candidate:

* ``model_bytes``: the largest sub-model's size on the candidate's size basis
  (``.tflite`` flatbuffer bytes, or the C back end's constant weight bytes);
* ``flash_bytes``: the sum of the sub-models' sizes;
* ``ram_bytes``: the largest C tensor arena (the sub-models run one at a time);
* ``latency_ms``: end-to-end latency from the bench loop;
* ``accuracy_drop``: float accuracy minus the candidate's (absolute fraction).

A budget whose value was not measured fails with status ``"not measured"``:
a candidate is never picked on an unverified budget.  :func:`decide` ranks the
passing candidates by the metric (higher is better), then accuracy, then the
smaller model, then the lower latency, then track order; with no passing
candidate there is no winner and the result says which budget stopped each.
"""
from __future__ import annotations

BUDGET_LABELS = {
    "model_bytes": "model size per sub-model",
    "flash_bytes": "total model size",
    "ram_bytes": "tensor arena",
    "latency_ms": "end-to-end latency",
    "accuracy_drop": "accuracy drop vs float",
}


def _value(budget: str, cand: dict, float_accuracy: float | None):
    subs = list((cand.get("sub_models") or {}).values())
    if budget == "model_bytes":
        sizes = [s.get("size_bytes") for s in subs]
        return None if not sizes or None in sizes else max(sizes)
    if budget == "flash_bytes":
        sizes = [s.get("size_bytes") for s in subs]
        return None if not sizes or None in sizes else sum(sizes)
    if budget == "ram_bytes":
        arenas = [s.get("c_arena_bytes") for s in subs]
        return None if not arenas or None in arenas else max(arenas)
    if budget == "latency_ms":
        lat = cand.get("latency") or {}
        return lat.get("end_to_end_ms")
    if budget == "accuracy_drop":
        acc = (cand.get("metrics") or {}).get("accuracy")
        return None if acc is None or float_accuracy is None else float_accuracy - acc
    raise ValueError(f"unknown budget {budget!r}")


def check_budgets(cand: dict, budgets: dict[str, float], float_accuracy: float | None) -> dict[str, dict]:
    """``{budget: {"limit", "value", "status": "pass" | "fail" | "not measured", "label"}}``."""
    out = {}
    for budget, limit in budgets.items():
        value = _value(budget, cand, float_accuracy)
        if value is None:
            status = "not measured"
        else:
            status = "pass" if value <= limit + 1e-12 else "fail"
        out[budget] = {"limit": limit, "value": value, "status": status, "label": BUDGET_LABELS[budget]}
    return out


def _rank_key(cand: dict, metric: str, order: dict[str, int]):
    m = cand.get("metrics") or {}
    sizes = [s.get("size_bytes") or 0 for s in (cand.get("sub_models") or {}).values()]
    lat = (cand.get("latency") or {}).get("end_to_end_ms")
    return (-(m.get(metric) if m.get(metric) is not None else float("-inf")),
            -(m.get("accuracy") if m.get("accuracy") is not None else float("-inf")),
            max(sizes) if sizes else 0, lat if lat is not None else float("inf"), order.get(cand["name"], 99))


def decide(candidates: list[dict], budgets: dict[str, float], metric: str,
           float_accuracy: float | None) -> dict:
    """Check every candidate against ``budgets`` and pick the winner (or none).

    Adds ``checks`` and ``passes`` to each candidate dict (in place) and
    returns ``{"winner", "metric", "ranking", "why", "failed": {name: [budgets]}}``.
    """
    order = {c["name"]: i for i, c in enumerate(candidates)}
    for c in candidates:
        c["checks"] = check_budgets(c, budgets, float_accuracy)
        c["passes"] = all(v["status"] == "pass" for v in c["checks"].values())
        c["failed_budgets"] = [b for b, v in c["checks"].items() if v["status"] != "pass"]
    eligible = sorted((c for c in candidates if c["passes"]), key=lambda c: _rank_key(c, metric, order))
    ranking = [c["name"] for c in eligible]
    failed = {c["name"]: c["failed_budgets"] for c in candidates if not c["passes"]}
    if not candidates:
        return {"winner": None, "metric": metric, "ranking": [], "failed": {},
                "why": "no quantized candidate was produced"}
    if not eligible:
        parts = [f"{name}: " + ", ".join(f"{BUDGET_LABELS[b]} {candidates[order[name]]['checks'][b]['status']}"
                                         for b in bs) for name, bs in failed.items()]
        return {"winner": None, "metric": metric, "ranking": [], "failed": failed,
                "why": "no candidate meets every budget (" + "; ".join(parts) + ")"}
    win = eligible[0]
    value = win["metrics"].get(metric)
    why = (f"{win['name']} has the best {metric} ({value:.4f}) of the {len(eligible)} candidate(s) meeting every "
           f"budget ({', '.join(BUDGET_LABELS[b] for b in budgets) or 'no budgets set'})")
    if len(eligible) > 1:
        runner = eligible[1]
        rv = runner["metrics"].get(metric)
        if rv == value:
            why += f"; tied with {runner['name']} on {metric}, ahead on accuracy, then size, latency, track order"
        else:
            why += f"; next: {runner['name']} at {rv:.4f}"
    if failed:
        why += "; failing a budget: " + ", ".join(f"{n} ({', '.join(bs)})" for n, bs in failed.items())
    return {"winner": win["name"], "metric": metric, "ranking": ranking, "failed": failed, "why": why}
