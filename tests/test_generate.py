"""Generation: balanced counts, images fixed by (seed, class, index), manifest, grid, atomic output."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from augment.checkpoint import load_snapshot
from augment.errors import ConfigError
from augment.generate import counts_to_generate, latents, read_generated, sample, write_samples


def test_counts_balance_per_class_total() -> None:
    assert counts_to_generate([10, 4, 7], "balance") == [0, 6, 3]
    assert counts_to_generate([10, 4, 7], "per_class", per_class=5) == [5, 5, 5]
    assert counts_to_generate([10, 4, 7], "total", total=10) == [4, 3, 3]
    with pytest.raises(ConfigError):
        counts_to_generate([1, 2], "total")


def test_latent_depends_only_on_seed_class_index() -> None:
    a = latents(0, torch.tensor([0, 1, 1]), torch.tensor([5, 5, 6]), 8)
    b = latents(0, torch.tensor([1]), torch.tensor([5]), 8)
    assert torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    assert not torch.equal(latents(1, torch.tensor([1]), torch.tensor([5]), 8), b)


def test_batch_size_never_changes_an_image(tiny_run: Path) -> None:
    G = load_snapshot(tiny_run / "network-final.pt").generator()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    idx = torch.tensor([0, 0, 0, 1, 1, 1, 9])
    one = sample(G, labels, idx, seed=3, batch_size=1)
    big = sample(G, labels, idx, seed=3, batch_size=7)
    three = sample(G, labels, idx, seed=3, batch_size=3)
    torch.testing.assert_close(one, big, atol=1e-5, rtol=0)
    torch.testing.assert_close(three, big, atol=1e-5, rtol=0)
    # asked alone, in another order, sample (class 2, index 9) is the same image
    alone = sample(G, torch.tensor([2]), torch.tensor([9]), seed=3)
    torch.testing.assert_close(alone[0], big[6], atol=1e-5, rtol=0)


def test_write_samples_manifest_pngs_and_grid(tiny_run: Path, tmp_path: Path) -> None:
    snap = load_snapshot(tiny_run / "network-final.pt")
    manifest = write_samples(snap, tmp_path / "gen", [3, 0, 2], seed=1, batch_size=2, progress=False)
    rows = list(csv.DictReader(open(manifest)))
    assert [(r["label"], r["index"]) for r in rows] == [("0", "0"), ("0", "1"), ("0", "2"), ("2", "0"), ("2", "1")]
    assert {r["class_name"] for r in rows} == {"0", "2"} and {r["seed"] for r in rows} == {"1"}
    with Image.open(tmp_path / "gen" / rows[0]["path"]) as img:
        assert img.size == (8, 8) and img.mode == "L"
    with Image.open(tmp_path / "gen" / "grid.png") as grid:
        # one row per class (3 rows), 10 samples per row, 1-pixel padding
        assert grid.size == (10 * 9 + 1, 3 * 9 + 1)
    images, labels = read_generated(tmp_path / "gen")
    assert images.shape == (5, 1, 8, 8) and labels.tolist() == [0, 0, 0, 2, 2]
    # the PNGs hold exactly the sampled images
    direct = sample(snap.generator(), torch.tensor([0]), torch.tensor([2]), seed=1)
    expected = ((direct.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert np.abs(images[2].numpy().astype(int) - expected[0].numpy().astype(int)).max() <= 1
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]  # no temporary folder left behind


def test_interrupted_generation_leaves_previous_output(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    snap = load_snapshot(tiny_run / "network-final.pt")
    write_samples(snap, tmp_path / "gen", [1, 1, 1], progress=False)
    import augment.generate as gen_mod

    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(gen_mod, "save_class_grid", boom)
    with pytest.raises(RuntimeError, match="killed"):
        write_samples(snap, tmp_path / "gen", [5, 5, 5], progress=False)
    assert len(list(csv.DictReader(open(tmp_path / "gen" / "manifest.csv")))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]
