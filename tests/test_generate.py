"""Generation: balanced counts, images fixed by (seed, class, index), manifest, grid, atomic output,
shards that write the same bytes as one pass and never leave a set a later run would trust."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from augment.checkpoint import load_snapshot
from augment.errors import ConfigError, OutputError
from augment.generate import (
    MANIFEST,
    class_dirname,
    counts_to_generate,
    latents,
    plan_shards,
    sample,
    shard_batches,
    write_samples,
)


def read_generated(out_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a generated set back as ``(uint8 images (N, C, H, W), labels)`` from its manifest."""
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        raise OutputError(f"{out_dir}: no {MANIFEST} (generation missing or incomplete)")
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    arrays, labels = [], []
    for row in rows:
        with Image.open(out_dir / row["path"]) as img:
            arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        labels.append(int(row["label"]))
    if not arrays:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    return torch.from_numpy(np.stack(arrays)), torch.tensor(labels)


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
    with Image.open(tmp_path / "gen" / "grid.png") as img:
        grid = np.asarray(img.convert("L"), dtype=int)
    # One row per class (3 rows) of 10 samples with 1-pixel padding (91 px wide), every pixel
    # repeated 5x5 so the grid is at least 400 px wide; the blocks are whole (no smoothing).
    assert grid.shape == (5 * (3 * 9 + 1), 5 * (10 * 9 + 1))
    small = grid[::5, ::5]
    assert np.array_equal(np.repeat(np.repeat(small, 5, axis=0), 5, axis=1), grid)
    images, labels = read_generated(tmp_path / "gen")
    assert images.shape == (5, 1, 8, 8) and labels.tolist() == [0, 0, 0, 2, 2]
    # the PNGs hold exactly the sampled images, and the grid shows them (class 0, sample 2) at their size
    direct = sample(snap.generator(), torch.tensor([0]), torch.tensor([2]), seed=1)
    expected = ((direct.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert np.abs(images[2].numpy().astype(int) - expected[0].numpy().astype(int)).max() <= 1
    assert np.abs(small[1:9, 1 + 2 * 9 : 9 + 2 * 9] - expected[0, 0].numpy().astype(int)).max() <= 1
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


def test_generation_replaces_only_a_folder_it_wrote(tiny_run: Path, tmp_path: Path) -> None:
    from augment.generate import MARKER

    snap = load_snapshot(tiny_run / "network-final.pt")
    out = tmp_path / "gen"
    write_samples(snap, out, [1, 1, 1], progress=False)
    assert (out / MARKER).is_file()
    write_samples(snap, out, [2, 0, 0], progress=False)  # its own folder: replaced whole
    assert len(list(csv.DictReader(open(out / "manifest.csv")))) == 2
    (out / MARKER).unlink()  # a folder of an older version: recognised by its layout
    write_samples(snap, out, [1, 0, 0], progress=False)
    (out / "my-notes.txt").write_text("the user's file, in a generated folder without its marker")
    (out / MARKER).unlink()
    with pytest.raises(OutputError, match="not a folder generate wrote"):
        write_samples(snap, out, [1, 0, 0], progress=False)
    assert (out / "my-notes.txt").read_text().startswith("the user's file")
    empty = tmp_path / "empty"
    empty.mkdir()
    write_samples(snap, empty, [1, 0, 0], progress=False)  # an empty folder is fine
    assert (empty / "manifest.csv").is_file()


# --- shards ---------------------------------------------------------------------------------------


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_shards_are_contiguous_index_ranges_of_one_class() -> None:
    shards = plan_shards(None, Path("staging"), [7, 0, 5], shard_size=3, seed=2, batch_size=4)
    assert [(s.label, s.start, s.stop, s.count) for s in shards] == [
        (0, 0, 3, 7),
        (0, 3, 6, 7),
        (0, 6, 7, 7),
        (2, 0, 3, 5),
        (2, 3, 5, 5),
    ]
    assert shards[1].name == "shard-000-000003-000006" and {(s.seed, s.batch_size) for s in shards} == {(2, 4)}
    with pytest.raises(ConfigError, match="shard_size"):
        plan_shards(None, Path("staging"), [7], shard_size=0)


def test_a_shard_computes_every_image_in_its_unsharded_batch() -> None:
    """Bit-exact floats, not only equal PNGs: the last bits of a convolution depend on the batch's
    composition (a shard computing only its own range differs by ~1e-7 here), which would flip a
    pixel now and then at scale."""
    from augment.checkpoint import Snapshot
    from augment.models.generator import ConditionalGenerator

    torch.manual_seed(0)
    kwargs = dict(num_classes=2, image_size=8, channels=1, z_dim=64, width=64)
    G = ConditionalGenerator(**kwargs).eval()
    for m in G.modules():  # trained-looking normalisation statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    snap = Snapshot(G.state_dict(), kwargs, ["a", "b"], [1, 1], {}, 0.0, "none")

    def images(shard_size: int) -> torch.Tensor:
        shards = plan_shards(snap, Path("unused"), [23, 9], shard_size, seed=5, batch_size=8)
        return torch.cat([x for s in shards for _, x in shard_batches(s, G)])

    whole = images(23)
    assert whole.shape == (32, 1, 8, 8)
    for shard_size in (1, 3, 5, 8):
        assert torch.equal(images(shard_size), whole), shard_size


def test_sharded_generation_writes_the_unsharded_bytes(tiny_run: Path, tmp_path: Path) -> None:
    snap = load_snapshot(tiny_run / "network-final.pt")
    counts = [7, 0, 5]  # an empty class; batch 4 and shards of 3 or 5 cut the classes at other places
    kw = dict(seed=1, batch_size=4, progress=False)
    reference = files(write_samples(snap, tmp_path / "one", counts, **kw).parent)
    assert len([f for f in reference if f.endswith(".png")]) == 12 + 1  # 12 samples and the grid
    for shard_size in (1, 3, 5, 100):
        out = tmp_path / f"shards-{shard_size}"
        assert files(write_samples(snap, out, counts, shard_size=shard_size, **kw).parent) == reference, shard_size

    # shards that finish in reverse order (as on a cluster) give the same manifest
    def reverse_map(fn, shards):
        return reversed([fn(s) for s in shards])

    out = tmp_path / "reversed"
    assert files(write_samples(snap, out, counts, shard_size=2, map_fn=reverse_map, **kw).parent) == reference
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_interrupted_sharded_generation_is_never_trusted(tiny_run: Path, tmp_path: Path) -> None:
    snap = load_snapshot(tiny_run / "network-final.pt")

    def map_losing_a_folder(fn, shards):
        """Two shards write their PNGs, then the third runs where the staging folder is gone (a worker
        without the shared filesystem) and raises, as any failing shard does."""
        shards = list(shards)
        rows = [fn(s) for s in shards[:2]]
        third = shards[2]
        shutil.rmtree(third.staging / "images" / class_dirname(third.label, snap.class_names[third.label]))
        return [*rows, fn(third), *(fn(s) for s in shards[3:])]

    # No earlier set: nothing appears that looks finished, and reading it says so.
    out = tmp_path / "gen"
    with pytest.raises(OutputError, match="must share the output filesystem"):
        write_samples(snap, out, [4, 4, 4], shard_size=2, map_fn=map_losing_a_folder, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="no manifest.csv"):
        read_generated(out)

    # An earlier set: it stays, byte for byte.
    earlier = files(write_samples(snap, out, [1, 2, 1], progress=False).parent)
    with pytest.raises(OutputError):
        write_samples(snap, out, [4, 4, 4], shard_size=2, map_fn=map_losing_a_folder, progress=False)
    assert files(out) == earlier and [p.name for p in tmp_path.iterdir()] == ["gen"]

    # The next complete run replaces it.
    write_samples(snap, out, [4, 4, 4], shard_size=2, progress=False)
    assert read_generated(out)[1].tolist() == [0] * 4 + [1] * 4 + [2] * 4


SHARD_HEAP_PROBE = """
import sys, tempfile, torch
from pathlib import Path
from augment.checkpoint import Snapshot
from augment.generate import class_dirname, plan_shards, write_shard
from augment.models.generator import ConditionalGenerator
kwargs = dict(num_classes=1, image_size=8, channels=1, z_dim=8, width=8)
snap = Snapshot(ConditionalGenerator(**kwargs).state_dict(), kwargs, ["a"], [1], {}, 0.0, "none")
with tempfile.TemporaryDirectory() as tmp:
    (Path(tmp) / "images" / class_dirname(0, "a")).mkdir(parents=True)
    (shard,) = plan_shards(snap, Path(tmp), [3], 3, batch_size=3)
    assert len(write_shard(shard)) == 3
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_cpu_shard_keeps_freed_activations_in_the_heap_under_dasks_malloc_setting() -> None:
    """Under a Dask nanny's MALLOC_TRIM_THRESHOLD_=65536 every large activation is a fresh mmap
    (page faults each batch: a Fashion-MNIST shard's forward passes ran 2.7x slower). A CPU shard
    undoes that for its process, so a 24 MiB block afterwards comes from the heap. Runs in a fresh
    interpreter with the worker's environment (the setting is process-wide)."""
    from conftest import DASK_MALLOC, where_a_24mib_block_lands

    assert where_a_24mib_block_lands(SHARD_HEAP_PROBE, env=DASK_MALLOC) == "[heap]"


def test_augmenter_epoch_0_serves_the_images_generate_writes_to_one_intensity_level(
    tiny_run: Path, tmp_path: Path
) -> None:
    """The README's promise, measured: epoch 0 of ``GanAugmenter(seed=s)`` is the set ``augment generate
    --seed s`` writes. Both run G on the same latents; they batch it differently (the augmenter by chunks
    of one class, generate by shards), and a convolution's last float bits depend on the batch, so a pixel
    that lands on a rounding boundary may differ by one level of 255: never more."""
    from augment import GanAugmenter

    snap = load_snapshot(tiny_run / "network-final.pt")
    manifest = write_samples(snap, tmp_path / "gen", [12, 12, 12], seed=4, batch_size=5, progress=False)
    rows = list(csv.DictReader(open(manifest)))
    written = torch.stack([torch.from_numpy(np.array(Image.open(tmp_path / "gen" / r["path"]))) for r in rows])
    aug = GanAugmenter.from_checkpoint(tiny_run, seed=4, batch_size=8)
    served = aug.images([int(r["label"]) for r in rows], [int(r["index"]) for r in rows])[:, 0]
    diff = (written.int() - served.int()).abs()
    assert diff.max() <= 1
    assert (diff == 0).float().mean() > 0.95  # the same images, not merely similar ones
    other = GanAugmenter.from_checkpoint(tiny_run, seed=5, batch_size=8)
    assert (other.images([0], [0])[0, 0].int() - written[0].int()).abs().max() > 1  # the seed matters
