"""benchmarks/selection_noise.py: re-scores a run's snapshots as its training's check did, per class too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from augment.checkpoint import load_snapshot
from augment.metrics.evaluate import best_snapshot_metric
from augment.train import train
from conftest import tiny_config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import selection_noise  # noqa: E402


@pytest.fixture(scope="module")
def checked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("checked")
    cfg = tiny_config(tmp, "train.eval_kimg=0.128", "evaluate.extractor_steps=30")
    run_dir, _ = train(cfg, out=tmp / "run", progress=False, metric_factory=best_snapshot_metric)
    return run_dir


def test_latent_draw_zero_reproduces_the_trainings_own_check(checked_run: Path) -> None:
    """generate.seed 0 at oversample 1 is the check training ran: the same fd_domain to the last digit."""
    recorded = load_snapshot(checked_run / "network-best.pt").metrics["fd_domain"]
    scores = selection_noise.scores(checked_run, ["network-best.pt"], [], seeds=2, oversample=1)["network-best.pt"]
    assert scores[0] == recorded
    assert scores[1] != scores[0]  # another latent draw, another value


def test_per_class_recall_and_coverage_against_train_val(checked_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = selection_noise.class_scores(checked_run, ["network-best.pt"], seeds=2, oversample=2)["network-best.pt"]
    assert set(values) == {"recall", "coverage"}
    assert set(values["recall"]) == {"0", "1", "2"}  # every class has more than k = 5 train+val images
    assert all(0.0 <= v <= 1.0 for m in values.values() for v in m.values())
    assert values["coverage"] != values["recall"]
    text = selection_noise.class_table({"network-best.pt": values})
    assert text.splitlines()[0] == "| snapshot | metric | 0 | 1 | 2 |"
    assert text.splitlines()[2].startswith("| network-best.pt | recall | ")
