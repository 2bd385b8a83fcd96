"""The dual track: PTQ and QAT from one float checkpoint, one decision rule under the target's budgets.

    from qtc.dualtrack import load_config, run_dualtrack
    doc = run_dualtrack(load_config("configs/deepsets_esp32.yaml"))
    doc["decision"]["winner"]

See docs/dualtrack.md; the command is ``qtc dualtrack CONFIG``.
"""
from .config import DualTrackConfig, load_config, parse_config
from .decide import check_budgets, decide
from .run import run_dualtrack

__all__ = ["DualTrackConfig", "load_config", "parse_config", "run_dualtrack", "decide", "check_budgets"]
