"""QAT under torchrun: two gloo ranks on CPU train with DistributedDataParallel and end identical."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_torchrun_two_ranks_identical(tmp_path):
    from qtc.frontends.torch import from_torch
    from qtc.interp.runner import run_quantized
    from qtc.ir.serialize import load, save
    from qtc.passes.quantize import check
    from qtc.qat.train import load_checkpoint

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 16, 3)).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (256, 2, 16)).astype(np.float32)
    y = (x[:, 0, :8].mean(1) > 0).astype(np.int64) + (x[:, 1].std(1) > 1).astype(np.int64)
    save(from_torch(net, (torch.from_numpy(x[:1]),)), tmp_path / "model.qir")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_eval=x[:64], y_eval=y[:64])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "toolchain"), str(ROOT)]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "qtc.qat.ddp", "--model", str(tmp_path / "model.qir"), "--data", str(tmp_path / "data.npz"),
           "--target", "esp32", "--wbits", "4", "--abits", "8", "--epochs", "2", "--batch-size", "32",
           "--lr", "3e-3", "--out", str(out), "--no-progress"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "qat_summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], "ranks diverged: gradients were not all-reduced"
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    ck = load_checkpoint(out / "qat_last.pt")
    assert ck["epoch"] == 2 and ck["config"]["world_size"] == 2
    g = load(out / "model.qir")
    assert check(g, "esp32") == []
    assert run_quantized(g, {g.inputs[0]: x[:1]})[g.outputs[0]].shape == (1, 3)
