"""The report's pictures, read through matplotlib's objects before saving: labels, 95% intervals,
colorbar, counts, the gap between real and synthetic images, and nothing drawn outside the figure;
and the report's plain sentence when real-only training beat every augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from augment.metrics.plots import (
    confusion_figure,
    pairs_figure,
    per_class_recall_figure,
    plot_samples,
    samples_figure,
)
from augment.metrics.report import _real_only_lines, real_only_gaps
from augment.metrics.verdict import mean_ci

CLASSES = ["zero", "one", "two"]
TEST_PER_CLASS = 20
#: Per-class recall of each seed's classifier (seeds 0, 1, 2), per regime.
RECALL = {
    "real": [[0.90, 0.60, 0.80], [0.85, 0.65, 0.70], [0.95, 0.55, 0.75]],
    "real+classic": [[0.85, 0.55, 0.70], [0.80, 0.60, 0.65], [0.90, 0.50, 0.75]],
    "real+gan": [[0.80, 0.70, 0.60], [0.75, 0.65, 0.70], [0.85, 0.75, 0.65]],
}


def confusion(recall: list[float], n: list[int]) -> list[list[int]]:
    """Rows: true class. The correct share on the diagonal, the misses on the next class."""
    k = len(recall)
    cm = np.zeros((k, k), dtype=np.int64)
    for c, r in enumerate(recall):
        cm[c, c] = round(r * n[c])
        cm[c, (c + 1) % k] = n[c] - cm[c, c]
    return cm.tolist()


def summary(recall: dict[str, list[list[float]]] = RECALL, n: list[int] | None = None) -> dict:
    """A downstream summary of the shape ``augment.metrics.verdict.summarize`` returns, with its cells."""
    n = n or [TEST_PER_CLASS] * len(CLASSES)
    present = [c for c in range(len(CLASSES)) if n[c] > 0]
    cells, regimes = [], {}
    for r, rows in recall.items():
        mine = []
        for seed, rec in enumerate(rows):
            cm = confusion(rec, n)
            bal = float(np.mean([rec[c] for c in present]))
            mine.append({"regime": r, "seed": seed, "per_class_recall": rec, "balanced_accuracy": bal, "confusion": cm})
        cells += mine
        regimes[r] = {
            "balanced_accuracy": mean_ci([c["balanced_accuracy"] for c in mine]),
            "per_class_recall": dict(zip(CLASSES, np.mean(rows, axis=0).tolist(), strict=True)),
            "confusion": np.sum([c["confusion"] for c in mine], axis=0).tolist(),
        }
    return {
        "baseline": "real+classic",
        "regimes": regimes,
        "cells": cells,
        "seeds": [0, 1, 2],
        "n_test": sum(n),
        "verdict": {"regime": "real+gan", "status": "no measurable benefit"},
    }


def assert_inside(fig) -> None:
    """Everything drawn (texts, legends, colorbars) lies inside the figure: the PNG clips nothing."""
    fig.canvas.draw()
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, the artists actually drawn
    box = fig.bbox_inches
    tol = 0.01
    assert box.x0 - tol <= drawn.x0 and drawn.x1 <= box.x1 + tol, (drawn, box)
    assert box.y0 - tol <= drawn.y0 and drawn.y1 <= box.y1 + tol, (drawn, box)


def test_per_class_recall_shows_each_regimes_mean_and_interval_over_seeds() -> None:
    down = summary()
    fig = per_class_recall_figure(down, CLASSES)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "class"
    assert ax.get_ylabel() == "recall on the real test split (n=60)"
    assert ax.get_title() == "Per-class recall by regime: mean over 3 seeds and 95% CI"
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(RECALL)
    bars = [c for c in ax.containers if getattr(c, "has_yerr", False)]
    assert len(bars) == 3  # one errorbar set per regime
    # real+gan (the third set), class "one": the dot at the mean of the seeds, the bar the 95% t-interval.
    ci = mean_ci([0.70, 0.65, 0.75])
    dots = bars[2].lines[0]
    assert dots.get_ydata()[1] == pytest.approx(ci["mean"])
    seg = bars[2].lines[2][0].get_segments()[1]
    assert (seg[0][1], seg[1][1]) == pytest.approx((ci["ci_low"], ci["ci_high"]))
    assert ci["ci_high"] - ci["ci_low"] > 0.1  # three seeds this far apart give a wide interval
    assert_inside(fig)


def test_a_class_without_test_images_gets_no_recall_dot_and_says_so() -> None:
    down = summary(n=[TEST_PER_CLASS, TEST_PER_CLASS, 0])
    fig = per_class_recall_figure(down, CLASSES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][2] == "two\n(no test images)"
    for bars in [c for c in ax.containers if getattr(c, "has_yerr", False)]:
        assert len(bars.lines[0].get_xdata()) == 2  # classes zero and one only


def test_one_seed_draws_hollow_dots_and_says_there_is_no_interval() -> None:
    down = summary({r: rows[:1] for r, rows in RECALL.items()})
    down["seeds"] = [0]
    ax = per_class_recall_figure(down, CLASSES).axes[0]
    assert not [c for c in ax.containers if getattr(c, "has_yerr", False)]
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "real (no interval)"


def test_confusion_matrix_prints_counts_and_has_axis_names_and_a_colorbar() -> None:
    down = summary()
    fig = confusion_figure(down, CLASSES)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["real+classic (3 seeds summed)", "real+gan (3 seeds summed)"]
    for ax, regime in zip(panels, ("real+classic", "real+gan"), strict=True):
        assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
        assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
        counts = np.asarray(down["regimes"][regime]["confusion"])
        assert counts.sum() == 3 * 60  # three seeds of 60 test images
        shown = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
        assert shown == {(i, j): str(n) for (i, j), n in np.ndenumerate(counts)}
        assert ax.images[0].get_clim() == (0, 1)  # one colour scale for both panels
    bars = [im.colorbar for ax in panels for im in ax.images if im.colorbar is not None]
    assert len(bars) == 1 and bars[0].ax.get_ylabel() == "share of the true class's test images"
    assert (bars[0].vmin, bars[0].vmax) == (0, 1)
    assert_inside(fig)


def images(n: int, value: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(value)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(n) % classes


def test_samples_put_a_labelled_gap_between_real_and_synthetic(tmp_path: Path) -> None:
    real, real_y = images(24, 1)
    fake, fake_y = images(24, 2)
    fig = samples_figure(real, real_y, fake, fake_y, CLASSES, per_class=8)
    left, right = fig.subfigs
    assert left._suptitle.get_text() == "real (train split)"
    assert right._suptitle.get_text() == "synthetic (generator)"
    assert [ax.get_ylabel() for ax in left.axes[::8]] == CLASSES  # the first image of each row names its class
    assert sum(len(ax.images) for ax in left.axes) == sum(len(ax.images) for ax in right.axes) == 24
    fig.canvas.draw()
    left_edge = max(ax.get_window_extent().x1 for ax in left.axes)  # pixels
    right_edge = min(ax.get_window_extent().x0 for ax in right.axes)
    step = left.axes[1].get_window_extent().x0 - left.axes[0].get_window_extent().x1  # between two images
    assert right_edge - left_edge > 4 * step > 0
    assert_inside(fig)
    path = plot_samples(tmp_path / "samples.png", real, real_y, fake, fake_y, CLASSES)
    with Image.open(path) as img:
        assert img.size[0] > 900  # 16 images of 28 px with room to see them


def test_nearest_pairs_keep_their_labels_and_title_inside_the_picture() -> None:
    syn, _ = images(4, 3)
    train, _ = images(10, 4)
    pairs = [{"synthetic": i, "train": 2 * i, "distance": 0.1 * (i + 1)} for i in range(4)]
    title = "closest synthetic/train pairs (RMS pixel distance); near-copy threshold 0.123"
    fig = pairs_figure(syn, train, pairs, title=title)
    assert fig._suptitle.get_text().replace("\n", " ") == title
    top = fig.axes[:4]
    assert [ax.get_title() for ax in top] == ["0.100", "0.200", "0.300", "0.400"]
    assert fig.axes[0].get_ylabel() == "synthetic" and fig.axes[4].get_ylabel() == "nearest train"
    assert_inside(fig)


def test_the_report_says_plainly_when_real_only_training_beat_every_augmentation() -> None:
    down = summary()  # real has the highest balanced accuracy of the three regimes
    gaps = real_only_gaps(down)
    assert set(gaps) == {"real+classic", "real+gan"}
    expected = mean_ci([np.mean(a) - np.mean(b) for a, b in zip(RECALL["real+gan"], RECALL["real"], strict=True)])
    assert gaps["real+gan"]["mean"] == pytest.approx(expected["mean"])
    assert gaps["real+gan"]["ci_low"] == pytest.approx(expected["ci_low"])
    text = " ".join(_real_only_lines(down))
    assert text.startswith("**Real-only training beat every augmentation.**")
    assert f"real+classic {100 * gaps['real+classic']['mean']:+.1f} [" in text
    # Every real+classic seed is 5-7 pts below real: measurable; real+gan's interval includes 0.
    assert gaps["real+classic"]["ci_high"] < 0 < gaps["real+gan"]["ci_high"]
    assert "Measurable (interval below 0) for real+classic; the others' intervals include 0." in text
    better = {**RECALL, "real+gan": [[0.95, 0.70, 0.80]] * 3}
    assert real_only_gaps(summary(better)) is None and _real_only_lines(summary(better)) == []
    no_real = {r: v for r, v in RECALL.items() if r != "real"}
    assert _real_only_lines(summary(no_real)) == []
