"""Mixed-precision proposals: the file ``qtc sensitivity`` writes and ``qtc quantize --apply-proposal`` reads.

A proposal is JSON::

    {"format": "qtc-precision-proposal/1", "model": ..., "settings": {target, method, wbits, abits, ...},
     "calibration": {"samples", "sha256"}, "ranking": [{rank, layer, op, sqnr_db, params, quantized}],
     "budget": {...} | null, "met": bool | null, "precision": "float" | "int16" | "w8",
     "layers": [names kept at high precision],
     "keep_float": ["=name", ...], "int16": ["=name", ...], "layer_wbits": {"=name": 8, ...},
     "steps": [...]}

``keep_float``/``int16`` hold exact-name patterns (``=name``) so applying a
proposal selects exactly the layers it names, never a whole scope.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...atomic import save_json
from ...errors import QtcError

FORMAT = "qtc-precision-proposal/1"


def make_proposal(model: str, settings: dict, calibration: dict, ranking: list[dict], plan: dict | None) -> dict:
    plan = plan or {}
    return {"format": FORMAT, "model": model, "settings": settings, "calibration": calibration,
            "ranking": ranking, "budget": plan.get("budget"), "met": plan.get("met"),
            "precision": plan.get("precision", "float"), "layers": plan.get("layers", []),
            "keep_float": plan.get("keep_float", []), "int16": plan.get("int16", []),
            "layer_wbits": plan.get("layer_wbits", {}), "steps": plan.get("steps", [])}


def write_proposal(path, proposal: dict) -> Path:
    return save_json(path, proposal)


def load_proposal(path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise QtcError(f"cannot read proposal: {exc}", where=str(p),
                       hint="pass the proposal.json 'qtc sensitivity' wrote") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise QtcError(f"not a precision proposal (format {data.get('format') if isinstance(data, dict) else None!r})",
                       where=str(p), hint=f"expected format {FORMAT!r} from 'qtc sensitivity -o'")
    for key in ("keep_float", "int16"):
        v = data.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise QtcError(f"proposal field {key!r} must be a list of names", where=str(p),
                           hint="re-run 'qtc sensitivity' to regenerate it")
    lw = data.get("layer_wbits", {})
    if not isinstance(lw, dict) or not all(isinstance(k, str) and v in (2, 4, 8) for k, v in lw.items()):
        raise QtcError("proposal field 'layer_wbits' must map names to 8, 4 or 2", where=str(p),
                       hint="re-run 'qtc sensitivity' to regenerate it")
    return data


def apply_proposal(proposal: dict, mode: str, keep_float: list[str],
                   int16: list[str]) -> tuple[str, list[str], list[str]]:
    """(mode, keep_float, int16) with the proposal's layers added; static becomes mixed when it names any."""
    kf = list(dict.fromkeys([*keep_float, *proposal.get("keep_float", [])]))
    i16 = list(dict.fromkeys([*int16, *proposal.get("int16", [])]))
    if mode == "dynamic" and proposal.get("int16"):
        raise QtcError("the proposal keeps layers in int16, which dynamic mode cannot do",
                       hint="use --mode mixed with --apply-proposal")
    if mode == "static" and (kf or i16):
        mode = "mixed"
    return mode, kf, i16


def setting_mismatches(proposal: dict, settings: dict) -> list[str]:
    """Settings given now that differ from the ones the proposal was measured with."""
    old = proposal.get("settings") or {}
    return [f"{k}: proposal {old[k]!r}, now {v!r}" for k, v in settings.items()
            if k in old and v is not None and old[k] != v]
