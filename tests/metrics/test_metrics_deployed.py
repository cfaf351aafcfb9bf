"""The deployed regimes: the verdict measures what users put in their code (issue #21, item 2).

``gan-augmenter`` is ``AugmentedDataset(train, GanAugmenter(p))`` and ``balanced-dataset`` is
``BalancedDataset(train, augmenter)``; the report prints the line of code of what it measured.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from augment import BalancedDataset, GanAugmenter
from augment.metrics import downstream, verdict
from augment.metrics.classifier_training import _Batches, balanced_topup
from augment.metrics.downstream import prepare, run_cell
from augment.metrics.report import render_markdown
from augment.metrics.stacked import StackedBatches, fit_score_many
from augment.metrics.verdict import deployment, mean_ci, summarize
from test_metrics_downstream import ev, long_tail, make_data, synthetic

DEPLOYED = ("gan-augmenter", "balanced-dataset")


def tail_plan(**kw) -> downstream.Plan:
    """Train counts 12 / 6 / 3; real pixels < 255, synthetic pixels all 255 (told apart in a batch)."""
    data = long_tail(make_data(n_train=36), [12, 6, 3])
    data.train.images.clamp_(max=250)
    return prepare(data, *synthetic(per_class=10), ev(**{"batch_size": 16, **kw}))


def drawn(plan: downstream.Plan, regime: str, batches: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Per class: (synthetic images, all images) over ``batches`` drawn batches."""
    draws = _Batches(plan, regime, torch.Generator().manual_seed(0))
    syn, total = np.zeros(plan.num_classes), np.zeros(plan.num_classes)
    for _ in range(batches):
        x, y = draws()
        assert len(y) == plan.batch_size
        is_syn = (x == 1.0).flatten(1).all(dim=1).numpy()
        np.add.at(total, y.numpy(), 1)
        np.add.at(syn, y.numpy()[is_syn], 1)
    return syn, total


def test_gan_augmenter_swaps_each_image_with_probability_p_for_one_of_its_class() -> None:
    plan = tail_plan(synthetic_share=0.3)
    syn, total = drawn(plan, "gan-augmenter")
    n = total.sum()
    # The swap keeps the real class frequencies (12 : 6 : 3), unlike real+gan's balancing top-up.
    assert (total / n).tolist() == pytest.approx([12 / 21, 6 / 21, 3 / 21], abs=0.02)
    # About p of the images are synthetic, in every class alike (3-sigma of a binomial).
    assert abs(syn.sum() / n - 0.3) < 3 * np.sqrt(0.3 * 0.7 / n)
    assert (syn / total).tolist() == pytest.approx([0.3] * 3, abs=0.05)
    balanced_syn, balanced_total = drawn(plan, "real+gan")
    assert balanced_syn[2] / balanced_total[2] > 0.6  # real+gan does raise the tail; the augmenter does not


def test_balanced_dataset_tops_every_class_up_to_the_largest_as_the_dataset_does(tiny_run: Path) -> None:
    plan = tail_plan()
    rows = balanced_topup(plan)
    added = plan.synthetic_labels[rows].bincount(minlength=3).tolist()
    assert added == [0, 6, 9]
    # The same counts as the BalancedDataset users build on these labels.
    aug = GanAugmenter.from_checkpoint(tiny_run)
    images = torch.zeros(len(plan.train_labels), 1, aug.image_size, aug.image_size, dtype=torch.uint8)
    users = BalancedDataset(TensorDataset(images, plan.train_labels), aug)
    assert users.synthetic_counts == added and len(users) == 36
    # Drawn uniformly from the 21 real + 15 synthetic items: every class a third of the images,
    # class 2 with 9 of its 12 synthetic.
    syn, total = drawn(plan, "balanced-dataset")
    assert (total / total.sum()).tolist() == pytest.approx([1 / 3] * 3, abs=0.02)
    assert (syn / total).tolist() == pytest.approx([0.0, 0.5, 0.75], abs=0.04)
    # A class needing more images than the pool holds repeats the pool's images, keeping the counts.
    small = dataclasses.replace(
        plan, synthetic_images=plan.synthetic_images[::5], synthetic_labels=plan.synthetic_labels[::5]
    )
    assert small.synthetic_labels[balanced_topup(small)].bincount(minlength=3).tolist() == [0, 6, 9]


def test_deployed_regimes_ignore_the_filter_and_soft_labels() -> None:
    plan = tail_plan(synthetic_share=0.5)
    # A filter that rejects every synthetic image of class 2 and soft labels that say "class 0".
    plan = dataclasses.replace(
        plan,
        synthetic_confidence=(plan.synthetic_labels != 2).float(),
        confidence_threshold=0.5,
        soft_labels=True,
        synthetic_probs=torch.eye(3)[torch.zeros(len(plan.synthetic_labels), dtype=torch.int64)],
    )
    for regime in DEPLOYED:
        syn, _ = drawn(plan, regime, batches=100)
        assert syn[2] > 0, regime  # the augmenter has no filter: class 2 still gets synthetic images
        x, y = _Batches(plan, regime, torch.Generator().manual_seed(1))()
        assert y.dtype == torch.int64 and y.shape == (16,), regime  # hard labels
        cell = run_cell(dataclasses.replace(plan, steps=2), regime, 0)
        assert cell["confidence_threshold"] is None and cell["soft_labels"] is None
    assert run_cell(dataclasses.replace(plan, steps=2), "gan-augmenter", 0)["synthetic_share"] == 0.5


def test_a_balanced_split_leaves_balanced_dataset_out_and_says_why() -> None:
    plan = prepare(make_data(), *synthetic(), ev())
    assert "balanced-dataset" not in plan.regimes and "gan-augmenter" in plan.regimes
    assert "would add no image" in plan.skipped_regimes["balanced-dataset"]
    assert "balanced-dataset" in tail_plan().regimes


def test_deployed_cells_in_a_stack_are_the_lone_cells() -> None:
    plan = dataclasses.replace(tail_plan(synthetic_share=0.4), steps=30, threads=1)
    jobs = [(plan, regime, seed, "test") for regime in (*DEPLOYED, "real") for seed in (0, 1)]
    both = StackedBatches(jobs, torch.device("cpu"))
    lone = [_Batches(p, regime, torch.Generator().manual_seed(seed)) for p, regime, seed, _ in jobs]
    for _ in range(3):
        x, targets = both()
        for g, draws in enumerate(lone):
            want_x, want_y = draws()
            assert torch.equal(x[:, g : g + 1], want_x) and torch.equal(targets[g], want_y), jobs[g][1]
    stacked = fit_score_many(jobs)
    for row, (p, regime, seed, _) in zip(stacked, jobs, strict=True):
        alone = run_cell(p, regime, seed)
        assert row["accuracy"] == alone["accuracy"] and row["confusion"] == alone["confusion"], regime
        assert (row["images_real"], row["images_synthetic"]) == (alone["images_real"], alone["images_synthetic"])
        assert row["images_real"] + row["images_synthetic"] == 30 * 16


def fake(deltas: dict[str, list[float]], vs_real: dict[str, list[float]]) -> dict:
    return {
        "baseline": "real+classic",
        "classic_policy": "crop",
        "synthetic_share": 0.25,
        "deltas": {r: {"balanced_accuracy": mean_ci(v)} for r, v in deltas.items()},
        "deltas_vs_real": {r: {"balanced_accuracy": mean_ci(v)} for r, v in vs_real.items()},
    }


def test_deployment_recommends_a_line_only_when_it_beat_both_baselines() -> None:
    up, flat = [0.03, 0.04, 0.035], [0.01, -0.01, 0.0]
    d = deployment(
        fake({"gan-augmenter": up, "balanced-dataset": up}, {"gan-augmenter": up, "balanced-dataset": flat}), "runs/x"
    )
    assert d["recommended"] == "gan-augmenter"
    assert d["regimes"]["gan-augmenter"]["code"] == (
        'train_set = AugmentedDataset(train_set, GanAugmenter.from_checkpoint("runs/x", p=0.25))'
    )
    assert d["text"].startswith("Deploy it as measured (gan-augmenter +3.5 pts")
    d = deployment(fake({"gan-augmenter": flat, "balanced-dataset": up}, {"balanced-dataset": flat}), "runs/x")
    assert d["recommended"] is None and d["text"].startswith("Do not deploy it on this evidence")
    assert "balanced-dataset +3.5 pts" in d["text"] and "vs real-only +0.0 pts" in d["text"]
    assert deployment(fake({"real+gan": up}, {}), "runs/x") is None


def test_the_report_prints_code_that_builds_the_dataset_it_measured(tiny_run: Path) -> None:
    plan = dataclasses.replace(tail_plan(regimes=["real", "real+classic", *DEPLOYED]), steps=4, seeds=[0, 1, 2])
    cells = [run_cell(plan, r, s) for r in plan.regimes for s in plan.seeds]
    down = summarize(plan, cells)
    down["deploy"] = deployment(down, str(tiny_run))
    result = {
        "run_dir": str(tiny_run),
        "class_names": plan.class_names,
        "sizes": {"train": 21, "val": 6, "test": 12},
        "snapshot": {"path": "network-final.pt", "kimg": 1.0},
        "data_fingerprint": "fp",
        "downstream": down,
        "counts": {s: dict.fromkeys(plan.class_names, 1) for s in ("train", "val", "test")},
    }
    text = render_markdown(result, {})
    assert (
        "**In your code.**" in text
        and "balanced-dataset adds synthetic images up to the largest class: 1 6, 2 9" in text
    )
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.startswith(verdict.DEPLOY_IMPORT)
    # Run the printed lines on a user's train set of the run's size: each builds a dataset.
    aug = GanAugmenter.from_checkpoint(tiny_run)
    images = torch.zeros(21, 1, aug.image_size, aug.image_size, dtype=torch.uint8)
    for line in code.strip().splitlines()[1:]:
        scope = {"train_set": TensorDataset(images, plan.train_labels)}
        exec(verdict.DEPLOY_IMPORT + "\n" + line, scope)
        img, label = scope["train_set"][20]
        assert tuple(img.shape) == (1, aug.image_size, aug.image_size) and int(label) == 2
    assert "Do not deploy it on this evidence" in text or "Deploy it as measured" in text
