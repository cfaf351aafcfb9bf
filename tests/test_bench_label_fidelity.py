"""benchmarks/label_fidelity.py: the dev split cut in two, per-class GAN-test, and the judged uses' cells."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from augment import rundir
from augment.checkpoint import find_snapshot, load_snapshot
from augment.data import ImageSet, load_data
from augment.metrics import downstream
from augment.metrics.evaluate import generate_uint8
from conftest import copy_run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import label_fidelity, sample_use  # noqa: E402


@pytest.fixture(scope="module")
def judged_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(tiny_run, tmp_path_factory.mktemp("judge") / "run", "evaluate.classic=['crop']")


def test_the_dev_split_is_cut_class_by_class_into_judge_and_scoring_images() -> None:
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 2, 2, 2])
    dev = ImageSet(torch.arange(11, dtype=torch.uint8).view(11, 1, 1, 1), labels, [f"d{i}" for i in range(11)])
    judge, rest = label_fidelity.halves(dev, 3, 2)
    assert judge.ids == ["d0", "d1", "d2", "d3", "d8", "d9"]  # the first two of each class, in dev order
    assert rest.ids == ["d4", "d5", "d6", "d7", "d10"]
    assert torch.equal(judge.images.flatten(), torch.tensor([0, 1, 2, 3, 8, 9], dtype=torch.uint8))
    with pytest.raises(ValueError, match="class 2 has 3 dev images"):
        label_fidelity.halves(dev, 3, 3)


def test_per_class_fidelity_counts_the_judges_calls() -> None:
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    labels = torch.tensor([0, 1, 1, 1, 2])  # class 1: called 1, 0, 2; class 2: called 0
    got = label_fidelity.per_class_fidelity(probs, labels, ["a", "b", "c"])
    assert got["a"] == {"own": 1.0, "top_other": None, "top_other_share": 0.0, "n": 1}
    assert got["b"]["own"] == pytest.approx(1 / 3, abs=1e-3) and got["b"]["n"] == 3
    assert got["b"]["top_other"] in ("a", "c") and got["b"]["top_other_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert got["c"] == {"own": 0.0, "top_other": "a", "top_other_share": 1.0, "n": 1}


def test_the_judged_uses_train_on_the_scoring_half_and_move_the_cells(judged_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "lf.json"
    argv = [str(judged_run), "--dev-per-class", "6", "--judge-per-class", "3", "--judge-seeds", "1", "--pool", "4"]
    argv += [
        "--seeds",
        "2",
        "--workers",
        "1",
        "--steps",
        "20",
        "--threshold",
        "0.5",
        "--real-transfer",
        "--json",
        str(out),
    ]
    res = label_fidelity.main(argv)
    assert json.loads(out.read_text())["uses"].keys() == res["uses"].keys()
    assert res["sizes"] == {"judge": 9, "scoring": 9, "pool_per_class": 4}
    real = ["real images as the pool", "real images as the pool, judge soft labels"]
    assert list(res["uses"]) == ["default", "judge filter 0.5", "judge soft labels", *real]
    # The held-out judge scores the pool itself; the control puts the real train images in its place, all of them.
    assert [u["pool"] for u in res["uses"].values()] == ["default"] * 3 + ["real train images"] * 2
    assert res["uses"][real[1]]["settings"]["soft_labels"] and not res["uses"][real[0]]["settings"]["soft_labels"]
    assert res["uses"][real[0]]["settings"]["pool"] == max(res["train_counts"].values())
    # GAN-test per class from the judge; the kept counts are the samples whose own-class probability >= 0.5.
    assert set(res["synthetic"]) == set(res["real_train"]) == set(res["train_counts"])
    assert all(row["n"] == 4 for row in res["synthetic"].values())
    assert all(0 <= n <= 4 for n in res["kept_per_class"].values())
    # The default use is the one sample_use scores, on the same scoring images and seeds.
    cfg = rundir.run_config(
        judged_run, ["evaluate.seeds=2", "evaluate.tune=false", "evaluate.threads=1", "evaluate.steps=20"]
    )
    data = load_data(cfg.data, cfg.seed)
    _, scoring = label_fidelity.halves(sample_use.dev_split(cfg, data, 6), data.num_classes, 3)
    pool, labels = generate_uint8(load_snapshot(find_snapshot(judged_run)).generator("cpu"), [4] * 3, cfg.generate.seed)
    plan = downstream.prepare(data, pool, labels, cfg.evaluate, seed=cfg.seed, map_fn=map)
    want = sample_use.cells(
        sample_use.candidate_plan(plan, res["uses"]["default"]["settings"], scoring), "real+gan+classic", map
    )
    assert res["uses"]["default"]["values"] == [c["balanced_accuracy"] for c in want]
    # Soft labels from the judge change what the classifier trains on.
    soft = res["uses"]["judge soft labels"]
    assert soft["settings"]["soft_labels"] is True and len(soft["values"]) == 2
    table = label_fidelity.render(res)
    assert "GAN-test" in table and all(name in table for name in res["train_counts"])


def test_a_self_judge_scores_a_fresh_pool_from_the_runs_own_classifiers(judged_run: Path) -> None:
    argv = [str(judged_run), "--dev-per-class", "6", "--judge-per-class", "3", "--judge-seeds", "1", "--pool", "4"]
    argv += ["--seeds", "2", "--workers", "1", "--steps", "20", "--judge", "self", "--threshold", "0"]
    res = label_fidelity.main(argv)
    assert res["judge"]["kind"] == "self"
    assert list(res["uses"]) == ["default", "fresh pool", "judge filter 0", "judge soft labels"]
    # A filter at 0 keeps every image: the fresh pool's cells exactly.
    assert res["uses"]["judge filter 0"]["values"] == res["uses"]["fresh pool"]["values"]
    assert [u["pool"] for u in res["uses"].values()] == ["default", "fresh", "fresh", "fresh"]
    # A fresh pool is other images: the same settings, other cells.
    assert res["uses"]["fresh pool"]["settings"] == res["uses"]["default"]["settings"]
    assert res["uses"]["fresh pool"]["values"] != res["uses"]["default"]["values"]
    assert "the run's train split and pool" in label_fidelity.render(res)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        label_fidelity.parse_args(["run", "--dev-per-class", "10", "--judge-per-class", "10"])
    with pytest.raises(SystemExit):
        label_fidelity.parse_args(["run", "--threshold", "1.5"])
