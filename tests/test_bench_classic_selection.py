"""benchmarks/classic_selection.py: the product's own selection cells, and the rules replayed on them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from augment.config import load_config
from augment.data import load_data
from augment.metrics import downstream

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import classic_selection  # noqa: E402
from benchmarks.limited_data import PROFILES  # noqa: E402

STEPS = "evaluate.steps=15"


def test_its_first_seed_is_the_products_selection_and_the_rules_replay(tmp_path: Path, capsys) -> None:
    out = classic_selection.main(
        ["--profile", "digits", "--seeds", "3", "--dev-per-class", "10", "--workers", "1", "--set", STEPS]
    )
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
        ("argmax", 1, 3),
        ("argmax", 2, 3),
        ("one-se", 1, 3),
        ("one-se", 2, 3),
    ]
    for r in out["rules"]:
        assert sum(r["pick_counts"]) == r["subsets"] and 0 <= r["hit_rate"] <= 1 and r["mean_regret_pts"] >= 0
    assert "| argmax | 1 | 3 |" in capsys.readouterr().out


def test_argmax_and_one_se_picks_and_their_regret() -> None:
    # 3 seeds x 3 candidates; candidate 2 is best on val by a hair, candidate 0 (simpler) is within one SE.
    val = np.array([[0.70, 0.60, 0.72], [0.70, 0.60, 0.72], [0.70, 0.60, 0.72]])
    dev = np.array([[0.80, 0.70, 0.75], [0.82, 0.70, 0.75], [0.78, 0.70, 0.75]])
    recall = np.full((3, 3, 2), 0.7)
    counts = [10, 10]
    assert classic_selection.pick("argmax", val, recall, counts) == 2
    se = classic_selection.balanced_accuracy_se([0.7, 0.7], counts)
    p = (0.7 * 10 + 1) / 12
    assert se == pytest.approx(np.sqrt(2 * p * (1 - p) / 10) / 2)
    assert se > 0.02  # so one SE below 0.72 reaches candidate 0's 0.70
    assert classic_selection.pick("one-se", val, recall, counts) == 0
    # A class of one image right or wrong is not known exactly: Laplace's rule keeps its SE above 0.
    assert classic_selection.balanced_accuracy_se([1.0], [1]) > 0.4
    with pytest.raises(ValueError, match="unknown rule"):
        classic_selection.pick("vote", val, recall, counts)

    arg = classic_selection.replay("argmax", 1, val, dev, recall, counts)
    # Always candidate 2, whose dev mean on the other two seeds is 0.75 against candidate 0's (0.80 on average).
    assert arg["pick_counts"] == [0, 0, 3] and arg["hit_rate"] == 0.0
    regrets = [100 * (np.mean([dev[s, 0] for s in range(3) if s != k]) - 0.75) for k in range(3)]
    assert arg["mean_regret_pts"] == pytest.approx(np.mean(regrets)) and arg["max_regret_pts"] == pytest.approx(
        max(regrets)
    )
    one = classic_selection.replay("one-se", 2, val, dev, recall, counts)
    assert one["pick_counts"] == [3, 0, 0] and one["hit_rate"] == 1.0 and one["mean_regret_pts"] == 0.0


def test_fewer_than_two_seeds_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        classic_selection.parse_args(["--seeds", "1"])
    assert exc.value.code == 2
