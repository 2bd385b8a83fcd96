"""``qtc compare`` reports of qtc's best W8A8 recipe on the deployed example models.

    make TARGET=esp32 MODEL=digits_cnn && make TARGET=esp32 MODEL=peer_encoder    # float .qir + calib/
    python -m bench.compare_reports [--models digits_cnn,peer_encoder] [--build build]
                                    [--out bench/results/compare]

For each model this takes what ``make TARGET=esp32 MODEL=<model>`` left in
``build/<model>/``: the imported float model ``<model>.qir`` and the frozen
``qtc calibrate`` split in ``calib/``.  It quantizes the float model for
esp32 with the bench's W8A8 recipe (:data:`bench.ptq_vs_peers.BEST`:
``method="auto", weight_method="auto", adaround=True`` with
``per_feature_input="auto"``, which gives peer_encoder's input per-feature params) on
``calib/quant_dataset_*.npy``, saves it as ``<model>_best_w8a8.qir`` in a
temporary folder, and runs the users' guide command on the eval split::

    qtc compare <model>.qir <model>_best_w8a8.qir --data build/<model>/calib --metric M --variant ptq -o OUT/<model>

The split holds no labels, so the task metric is label-free: top-1
agreement with the float model for the classifier (digits_cnn), cosine
similarity to the float embeddings for peer_encoder.  ``OUT/<model>`` gets
``eval_ptq.json``, ``report_ptq.md`` and the plot (re-saved with a 64-colour
palette to keep the committed file small); ``OUT/<model>/quantization.json``
records the recipe's choices (the quantized model's metadata).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

from qtc.errors import QtcError

MODELS = {"digits_cnn": "agreement", "peer_encoder": "cosine"}
RECIPE = {"method": "auto", "weight_method": "auto", "adaround": True, "per_feature_input": "auto"}
TARGET = "esp32"


def best_w8a8(float_qir: Path, calib_dir: Path, out_qir: Path) -> dict:
    """Quantize ``float_qir`` with the recipe on the calibration split; returns its quantization metadata."""
    from qtc.ir.serialize import load, save
    from qtc.passes.quantize import quantize
    from qtc.passes.quantize.dataset import load_calibration

    fg = load(str(float_qir))
    calib, record = load_calibration([str(calib_dir)], fg)
    record = record or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qg = quantize(fg, calib, target=TARGET, wbits=8, abits=8, seed=record.get("seed"), progress=False,
                      **RECIPE)
    meta = qg.metadata["quantization"]
    meta["calibration"]["dataset"] = {k: record.get(k) for k in ("seed", "calib_count", "eval_count", "source")}
    save(qg, str(out_qir))
    return meta


def shrink_png(path: Path, colors: int = 64) -> None:
    """Re-save a chart with a small palette (the reports are committed; a bar chart needs few colours)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        rgb = Image.new("RGB", im.size, "white")
        rgb.paste(im, mask=im.getchannel("A") if im.mode == "RGBA" else None)
    pal = rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    tmp = path.with_suffix(".tmp.png")
    pal.save(tmp, format="PNG", optimize=True)
    tmp.replace(path)


def report(model: str, build: Path, out: Path) -> Path:
    from click.testing import CliRunner

    from qtc.atomic import save_json
    from qtc.cli import cli as qtc_main
    from qtc.eval.report import clean_json

    d = build / model
    float_qir, calib = d / f"{model}.qir", d / "calib"
    if not float_qir.is_dir() or not calib.is_dir():
        raise QtcError(f"{model}: no {float_qir} or {calib}", where="bench/compare_reports",
                       hint=f"run 'make TARGET={TARGET} MODEL={model}' first")
    dest = out / model
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qtc-compare-") as tmp:
        qir = Path(tmp) / f"{model}_best_w8a8.qir"
        meta = best_w8a8(float_qir, calib, qir)
        args = ["compare", str(float_qir), str(qir), "--data", str(calib), "--metric", MODELS[model],
                "--variant", "ptq", "-o", str(dest)]
        res = CliRunner().invoke(qtc_main, args, catch_exceptions=False)
        print(f"$ qtc {' '.join(args)}\n{res.output}", end="")
        if res.exit_code != 0:
            raise QtcError(f"qtc compare failed for {model} (exit {res.exit_code})", where="bench/compare_reports",
                           hint="see the output above")
    for png in dest.glob("*.png"):
        shrink_png(png)
    keep = ("method", "weight_method", "wbits", "abits", "target", "auto", "adaround", "calibration")
    save_json(dest / "quantization.json", clean_json({k: meta.get(k) for k in keep}))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare_reports", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--build", type=Path, default=Path("build"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/compare"))
    args = ap.parse_args(argv)
    try:
        for m in [x for x in args.models.split(",") if x]:
            if m not in MODELS:
                raise QtcError(f"no compare report set up for {m!r}", hint=f"use {', '.join(MODELS)}")
            report(m, args.build, args.out)
    except QtcError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
