"""``qtc dualtrack CONFIG``: PTQ and QAT side by side, the winner under the target's budgets."""
from __future__ import annotations

import click


@click.command("dualtrack", epilog="\b\nExamples:\n"
               "  qtc dualtrack configs/deepsets_esp32.yaml\n"
               "  qtc dualtrack configs/ts_cnn_tinpu.yaml -o build/dualtrack/ts\n"
               "  make dualtrack MODEL=ts_cnn CONFIG=configs/ts_cnn_tinpu.yaml")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("-m", "--model", default=None, help="model name (a models/zoo.py name, or 'deepsets'); "
              "replaces the config's model")
@click.option("-t", "--target", default=None, help="target (targets/*.yaml); replaces the config's")
@click.option("--models-dir", default=None, help="where `make models` wrote the checkpoints (default build/models)")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
              help="output folder (default: the config's, else build/dualtrack/<name>)")
@click.option("--check", "check_only", is_flag=True, help="validate the config, print what would run, and stop")
def dualtrack_cmd(config, model, target, models_dir, output, check_only):
    """Run PTQ and QAT from the same float checkpoint and pick the best under the budgets.

    CONFIG is a YAML file with qtc's keys and/or TI Tiny ML Tensorlab's
    training keys (quantization: 0|1|2, quantization_method: PTQ|QAT,
    quantization_weight_bitwidth, quantization_activation_bitwidth).  Writes
    eval_float.json, eval_<candidate>.json, every candidate's .qir/.tflite/C,
    and dualtrack.json + dualtrack.md + accuracy_vs_size.png.  The winner is the
    best eval metric among the candidates meeting every budget; with none, the
    report says which budget stopped each and no winner is picked.
    """
    import json

    from .config import load_config
    from .run import run_dualtrack

    cfg = load_config(config, overrides={"model": model, "target": target, "models_dir": models_dir,
                                         "output": output})
    if check_only:
        click.echo(json.dumps(cfg.to_json(), indent=1, sort_keys=True))
        return
    run_dualtrack(cfg)


def register(group: click.Group) -> None:
    """Add ``dualtrack`` to the qtc command group."""
    group.add_command(dualtrack_cmd)
