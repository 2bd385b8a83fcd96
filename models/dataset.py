"""Export an example model's frozen data as ``{input_name: samples}`` for ``qtc calibrate``.

``python -m models.dataset NAME --models-dir build/models -o data.npz [--layout keras|torch]``
writes one array per model input (calibration split first, then the eval
split), keyed by the input name the chosen layout's model uses.
"""
from __future__ import annotations

import argparse

import numpy as np

from models.zoo import load_data, load_meta


def qtc_dataset(name: str, models_dir, layout: str = "keras") -> dict[str, np.ndarray]:
    meta = load_meta(name, models_dir)
    data = load_data(name, models_dir)
    inputs = meta["keras"]["inputs"] if layout == "keras" and "keras" in meta else meta["inputs"]
    return {i["name"]: np.concatenate([data[i["calib_key"]], data[i["eval_key"]]]).astype(np.float32)
            for i in inputs}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--models-dir", default="build/models")
    ap.add_argument("--layout", choices=("keras", "torch"), default="keras")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    from qtc.atomic import save_npz

    arrays = qtc_dataset(a.name, a.models_dir, a.layout)
    save_npz(a.output, arrays)
    print(f"wrote {a.output}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
