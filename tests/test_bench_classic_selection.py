"""benchmarks/classic_selection.py: the product's own selection cells, and the rules replayed on them."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from augment.config import load_config
from augment.data import load_data
from augment.metrics import downstream
from augment.metrics.classifier_training import balanced_accuracy_se

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import classic_selection  # noqa: E402
from benchmarks.limited_data import PROFILES  # noqa: E402

STEPS = "evaluate.steps=15"


def test_its_first_seed_is_the_products_selection_and_the_rules_replay(tmp_path: Path, capsys) -> None:
    args = ["--profile", "digits", "--seeds", "3", "--dev-per-class", "10", "--workers", "1", "--set", STEPS]
    out = classic_selection.main([*args, "--json", str(tmp_path / "ranked.json")])
    labels = [c["label"] for c in out["candidates"]]
    # The digits profile's long tail keeps class-balanced draws: 3 policies x 2 samplings, the product's order.
    assert labels[:3] == ["crop", "crop+flip", "crop+flip+affine"] and len(labels) == 6
    assert out["sizes"]["dev"] == 30 and out["classifier"]["seeds"] == [100, 101, 102]

    # augment evaluate's own selection on the same config: its scores are the benchmark's first seed, bit for bit.
    profile = PROFILES["digits"]
    cfg = load_config(REPO / profile.config, [*profile.overrides, STEPS, "evaluate.threads=1", "evaluate.tune=false"])
    data = load_data(cfg.data, cfg.seed)
    c, h, w = data.train.images.shape[1:]
    plan = downstream.prepare(
        data,
        torch.empty((0, c, h, w), dtype=torch.uint8),
        torch.empty(0, dtype=torch.int64),
        cfg.evaluate.model_copy(update={"regimes": ["real+classic"]}),
        seed=cfg.seed,
        map_fn=map,
    )
    first = {f"{x['policy']}|{x['sampling']}": x["val"] for x in out["cells"] if x["seed"] == 100}
    product = plan.selection["classic"]["scores"]
    assert {c["label"]: first[f"{c['policy']}|{c['sampling']}"] for c in out["candidates"]} == product
    assert {x["seed"] for x in out["cells"]} == {100, 101, 102} and len(out["cells"]) == 18

    # Every k < seeds, both rules; each k-subset judged on the other seeds.
    assert [(r["rule"], r["k"], r["subsets"]) for r in out["rules"]] == [
        (rule, k, 3) for rule in ("argmax", "one-se", "min-nll", "max-prob") for k in (1, 2)
    ]
    for r in out["rules"]:
        assert sum(r["pick_counts"]) == r["subsets"] and 0 <= r["hit_rate"] <= 1 and r["mean_regret_pts"] >= 0
    assert "| argmax | 1 | 3 |" in capsys.readouterr().out
    assert "test" not in out  # the test split only with --test

    # --test on the stored ranking: the dev-best alone, on the verdict's seeds, scored on the test split.
    tested = classic_selection.main([*args, "--ranked", str(tmp_path / "ranked.json"), "--test", "--test-seeds", "2"])
    t = tested["test"]
    assert t["label"] == out["dev_best"] and t["seeds"] == [cfg.seed, cfg.seed + 1]
    best = next(c for c in out["candidates"] if c["label"] == out["dev_best"])
    grid = downstream.run_grid(
        dataclasses.replace(plan, classic=best["policy"], classic_sampling=best["sampling"], seeds=t["seeds"])
    )
    assert t["values"] == [c["balanced_accuracy"] for c in grid]  # augment evaluate's own test cells
    assert "Test split, the dev-best candidate only" in capsys.readouterr().out
    # --only replays the stored cells as if the product offered fewer candidates (no training).
    two = classic_selection.main(
        [*args, "--ranked", str(tmp_path / "ranked.json"), "--only", "crop+flip", "--only", "crop"]
    )
    assert [c["label"] for c in two["candidates"]] == ["crop", "crop+flip"]  # the product's order
    assert [c["val"] for c in two["candidates"]] == [c["val"] for c in out["candidates"][:2]]
    assert all(len(r["pick_counts"]) == 2 for r in two["rules"]) and two["only"] == ["crop+flip", "crop"]
    with pytest.raises(SystemExit) as exc:
        classic_selection.main([*args, "--ranked", str(tmp_path / "ranked.json"), "--only", "crop+blur"])
    assert exc.value.code == 2 and "unknown candidate" in capsys.readouterr().err
    # A ranking of another config is refused: one line, exit 2.
    with pytest.raises(SystemExit) as exc:
        classic_selection.main([*args[:-1], "evaluate.steps=16", "--ranked", str(tmp_path / "ranked.json"), "--test"])
    assert exc.value.code == 2 and "ranked for another" in capsys.readouterr().err


def test_the_rules_picks_and_their_regret() -> None:
    # 3 seeds x 3 candidates; candidate 2 is best on val accuracy by a hair, candidate 0 (simpler) within one SE,
    # candidate 1 the most likely on val (lowest NLL, highest true-class probability).
    val = {
        "acc": np.array([[0.70, 0.60, 0.72]] * 3),
        "nll": np.array([[0.9, 0.5, 0.8]] * 3),
        "prob": np.array([[0.5, 0.7, 0.6]] * 3),
        "recall": np.full((3, 3, 2), 0.7),
    }
    dev = np.array([[0.80, 0.70, 0.75], [0.82, 0.70, 0.75], [0.78, 0.70, 0.75]])
    counts = [10, 10]
    assert classic_selection.pick("argmax", val, counts) == 2
    se = balanced_accuracy_se([0.7, 0.7], counts)
    p = (0.7 * 10 + 1) / 12
    assert se == pytest.approx(np.sqrt(2 * p * (1 - p) / 10) / 2)
    assert se > 0.02  # so one SE below 0.72 reaches candidate 0's 0.70
    assert classic_selection.pick("one-se", val, counts) == 0
    assert classic_selection.pick("min-nll", val, counts) == 1 and classic_selection.pick("max-prob", val, counts) == 1
    # A class of one image right or wrong is not known exactly: Laplace's rule keeps its SE above 0.
    assert balanced_accuracy_se([1.0], [1]) > 0.4
    with pytest.raises(ValueError, match="unknown rule"):
        classic_selection.pick("vote", val, counts)

    arg = classic_selection.replay("argmax", 1, val, dev, counts)
    # Always candidate 2, whose dev mean on the other two seeds is 0.75 against candidate 0's (0.80 on average).
    assert arg["pick_counts"] == [0, 0, 3] and arg["hit_rate"] == 0.0
    regrets = [100 * (np.mean([dev[s, 0] for s in range(3) if s != k]) - 0.75) for k in range(3)]
    assert arg["mean_regret_pts"] == pytest.approx(np.mean(regrets))
    assert arg["max_regret_pts"] == pytest.approx(max(regrets))
    one = classic_selection.replay("one-se", 2, val, dev, counts)
    assert one["pick_counts"] == [3, 0, 0] and one["hit_rate"] == 1.0 and one["mean_regret_pts"] == 0.0


def test_balanced_soft_scores_weigh_each_class_equally() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 0, 1])
    nll, prob = classic_selection.balanced_soft_scores(probs, labels, 3)  # class 2 absent: not counted
    assert prob == pytest.approx(((0.9 + 0.5 + 0.5) / 3 + 0.8) / 2)
    assert nll == pytest.approx(((-np.log(0.9) - 2 * np.log(0.5)) / 3 - np.log(0.8)) / 2)


def test_fewer_than_two_seeds_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        classic_selection.parse_args(["--seeds", "1"])
    assert exc.value.code == 2
