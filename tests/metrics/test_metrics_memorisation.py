"""Memorisation: copies are flagged, fresh samples are not, the pairs image is written."""

from __future__ import annotations

import torch
from PIL import Image

from augment.metrics.memorisation import memorisation, nearest_neighbours, save_pairs_image


def blobs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)


def test_copies_of_training_images_are_near_copies() -> None:
    train, heldout = blobs(80, 0), blobs(80, 1)
    out = memorisation(train[:20].clone(), train, heldout, top=5)
    assert out["near_copy_fraction"] == 1.0
    assert out["synthetic_nn_median"] == 0.0 and out["median_ratio"] == 0.0
    assert [p["train"] for p in out["closest_pairs"]] == [p["synthetic"] for p in out["closest_pairs"]]


def test_fresh_samples_are_not_near_copies() -> None:
    train, heldout, fresh = blobs(200, 2), blobs(200, 3), blobs(200, 4)
    labels = torch.arange(200) % 2
    out = memorisation(fresh, train, heldout, labels, ["a", "b"], quantile=0.05)
    assert out["near_copy_fraction"] < 0.2
    assert out["heldout_below_threshold"] <= 0.06
    assert 0.8 < out["median_ratio"] < 1.2
    assert set(out["per_class"]) == {"a", "b"}


def test_per_class_thresholds_do_not_flag_sparse_classes() -> None:
    """A mostly-dark class sits close to everything in pixel space; its own held-out images set its bar."""
    g = torch.Generator().manual_seed(7)

    def make(n: int, every: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (torch.arange(n) % every == 0).long()  # 1 in `every` images is of class 1
        x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
        x[labels == 1] //= 16  # class 1: dark and sparse
        return x, labels

    # Few dark held-out images: the global 5% quantile comes from the bright class.
    (train, _), (heldout, h_labels), (fresh, f_labels) = make(200), make(2000, every=40), make(200)
    # Raw intensities, where darkness alone brings images together: the per-class bar must absorb it.
    flat = memorisation(fresh, train, heldout, f_labels, ["bright", "dark"], standardise=False)
    per = memorisation(fresh, train, heldout, f_labels, ["bright", "dark"], heldout_labels=h_labels, standardise=False)
    assert flat["per_class"]["dark"]["near_copy_fraction"] > 0.5  # one global bar: every dark image "copies"
    assert per["threshold_per_class"] and per["per_class"]["dark"]["near_copy_fraction"] < 0.2
    assert per["near_copy_fraction"] < 0.2


def test_nearest_neighbour_distance_is_rms_of_unit_intensities() -> None:
    black = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    white = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    d, idx = nearest_neighbours(white, torch.cat([black, white]), standardise=False)
    assert float(d) == 0.0 and int(idx) == 1
    d, _ = nearest_neighbours(white, black, standardise=False)
    assert float(d) == 1.0


def test_standardised_distances_ignore_brightness_but_not_structure() -> None:
    g = torch.Generator().manual_seed(9)
    shape = torch.randint(0, 200, (1, 1, 8, 8), generator=g, dtype=torch.uint8)
    dim_copy = (shape // 4).to(torch.uint8)  # the same structure, much darker
    other = torch.randint(0, 50, (1, 1, 8, 8), generator=g, dtype=torch.uint8)  # dark, unrelated
    bank = torch.cat([shape, other])
    d, idx = nearest_neighbours(dim_copy, bank)
    assert int(idx) == 0 and float(d) < 0.05
    d_raw, idx_raw = nearest_neighbours(dim_copy, bank, standardise=False)
    assert int(idx_raw) == 1  # raw intensities pair the dim copy with the unrelated dark image


def test_pairs_image(tmp_path) -> None:
    train = blobs(10, 5)
    out = memorisation(train[:4].clone(), train, blobs(10, 6), top=4)
    path = save_pairs_image(tmp_path / "pairs.png", train[:4], train, out["closest_pairs"], title="t")
    with Image.open(path) as img:
        assert img.size[0] > img.size[1] > 50
