"""Data-parallel training with torchrun + DistributedDataParallel, on CPU: gloo, 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from augment.checkpoint import FINAL_SNAPSHOT, TRAINING_STATE, load, load_snapshot
from conftest import REPO, TINY


def torchrun(tmp_path: Path, out: Path, *extra: str, resume: bool = False) -> subprocess.CompletedProcess:
    sets = [*TINY, "train.threads=1", f"output.root={tmp_path / 'runs'}", *extra]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "flows.ddp",
        str(REPO / "configs" / "digits.yaml"),
        "--out",
        str(out),
    ]
    cmd += ["--resume"] if resume else []
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_two_gloo_processes_train_one_model_in_sync(tmp_path: Path):
    out = tmp_path / "ddp"
    result = torchrun(tmp_path, out)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "ddp.json").read_text())
    assert info["world_size"] == 2 and info["backend"] == "gloo"
    # DDP averaged the gradients, so both ranks end with identical G and D.
    assert info["digests"][0] == info["digests"][1]
    assert set(info["digests"][0]) == {"ConditionalGenerator", "ProjectionDiscriminator"}
    # A step shows train.batch_size images in total (16 per rank): 0.256 kimg = 8 steps, ticks per 128.
    ticks = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [t["kimg"] for t in ticks] == [0.128, 0.256], "only rank 0 writes, images counted over ranks"
    snap = load_snapshot(out / FINAL_SNAPSHOT)
    assert snap.kimg == pytest.approx(0.256)
    state = load(out / TRAINING_STATE)
    assert state["cur_nimg"] == 256
    # The snapshot holds the unwrapped generator: it loads and samples without torch.distributed.
    G = snap.generator()
    assert G(torch.randn(2, G.z_dim), torch.tensor([0, 1])).shape == (2, 1, 8, 8)

    # Resume continues the run from the saved state to a longer budget.
    again = torchrun(tmp_path, out, "train.kimg=0.384", resume=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert load(out / TRAINING_STATE)["cur_nimg"] == 384
    assert "Resuming from" in again.stderr
    info = json.loads((out / "ddp.json").read_text())
    assert info["digests"][0] == info["digests"][1]


def test_batch_size_must_split_evenly_over_processes(tmp_path: Path):
    result = torchrun(tmp_path, tmp_path / "bad", "train.batch_size=31")
    assert result.returncode != 0
    assert "error: train.batch_size 31 is not divisible by 2 processes" in result.stderr
