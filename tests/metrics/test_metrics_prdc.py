"""Precision/recall/density/coverage on constructed point sets and against the reference package."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from augment.metrics import prdc as prdc_mod
from augment.metrics.prdc import kth_neighbour_radii, prdc, prdc_report


def test_hand_computed_one_dimensional_case() -> None:
    # Real points 0..4 with k=1: every real ball has radius 1. Fake points 0.5 and 10:
    # precision 1/2 (0.5 is inside the balls of 0 and 1, 10 is nowhere), density (2 + 0) / 2 / k = 1,
    # coverage 2/5 (only 0 and 1 have a fake inside their ball), recall 1 (the fake balls have
    # radius 9.5, so every real point lies inside the ball of 0.5).
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    fake = torch.tensor([[0.5], [10.0]])
    out = prdc(real, fake, nearest_k=1)
    assert out == {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.4}


def test_identical_and_disjoint_sets() -> None:
    x = torch.randn(100, 5, generator=torch.Generator().manual_seed(0))
    same = prdc(x, x.clone(), nearest_k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(x, x + 1000.0, nearest_k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_matches_the_reference_implementation() -> None:
    from prdc import compute_prdc

    g = torch.Generator().manual_seed(1)
    real = torch.randn(300, 10, generator=g, dtype=torch.float64)
    fake = torch.randn(250, 10, generator=g, dtype=torch.float64) * 1.3 + 0.4
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its sample counts
        ref = compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    ours = prdc(real, fake, nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-12), key


def test_chunking_gives_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(130, 4, generator=g), torch.randn(90, 4, generator=g) + 0.5
    whole = prdc(real, fake)
    monkeypatch.setattr(prdc_mod, "_CHUNK", 16)
    assert prdc(real, fake) == whole
    assert torch.equal(kth_neighbour_radii(real, 5), kth_neighbour_radii(real, 5))


def test_radii_need_more_than_k_samples() -> None:
    with pytest.raises(ValueError, match="k=5"):
        kth_neighbour_radii(torch.zeros(5, 2), 5)


def test_report_has_floor_and_per_class_values() -> None:
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(60, 3, generator=g)
    real = torch.randn(60, 3, generator=g)
    fake = torch.randn(60, 3, generator=g) + 5.0
    labels = torch.arange(60) % 3
    out = prdc_report(ref, labels, fake, labels, real, labels, ["a", "b", "c"])
    assert out["synthetic"]["precision"] < 0.1 < 0.8 < out["floor"]["precision"]
    assert set(out["per_class"]) == {"a", "b", "c"}
    tiny = prdc_report(ref[:4], labels[:4], fake[:4], labels[:4], real[:4], labels[:4], ["a", "b", "c"])
    assert tiny["per_class"]["a"]["synthetic"] is None  # too few samples for k-NN radii
    assert np.isclose(out["nearest_k"], 5)
