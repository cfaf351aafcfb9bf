"""GanAugmenter: loading, class of replaced images, type/range preservation, datasets, determinism, errors.

Class checks use a generator whose weights are set by hand so that class ``c`` comes out as one known
constant image (``VALUES[c]`` in every pixel, exactly); determinism checks use the trained tiny run,
whose images differ by index.
"""

from __future__ import annotations

import math
import pickle
import types
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

import augment
from augment import AugmentedDataset, BalancedDataset, GanAugmenter, SyntheticDataset
from augment.augmenter import GanAlbumentations, GanTransform
from augment.checkpoint import Snapshot, load_snapshot, save
from augment.errors import CheckpointError
from augment.generate import sample, to_uint8
from augment.models import ConditionalGenerator

VALUES = [40, 128, 220]  # class c -> this uint8 value in every pixel (channel k adds 10 * k)
REAL = 7  # the value of every "real" image in the toy datasets


def constant_snapshot(channels: int = 1, size: int = 8) -> Snapshot:
    """A 3-class generator that draws class c as the constant VALUES[c] + 10 * channel, whatever z is."""
    kw = dict(num_classes=3, image_size=size, channels=channels, z_dim=4, width=4)
    G = ConditionalGenerator(**kw)
    with torch.no_grad():
        last = G.blocks[-1].norm
        last.gamma.weight.zero_()  # last features = relu(beta[class]): constant over space and z
        last.beta.weight.zero_()
        G.to_img.weight.zero_()
        G.to_img.bias.fill_(-3.0)
        for ch in range(channels):
            G.to_img.weight[ch, ch, 1, 1] = 1.0  # centre tap only: no zero-padding edge effects
            for c, v in enumerate(VALUES):
                x = (v + 10 * ch) / 127.5 - 1.0
                last.beta.weight[c, ch] = math.atanh(x) + 3.0
    return Snapshot(G.state_dict(), kw, ["a", "b", "c"], [5, 2, 1], {}, 0.0, "constant")


def const(c: int, ch: int = 0) -> int:
    return VALUES[c] + 10 * ch


@pytest.fixture(scope="module")
def gray() -> Snapshot:
    return constant_snapshot(1)


@pytest.fixture(scope="module")
def rgb() -> Snapshot:
    return constant_snapshot(3)


def pixels(img) -> np.ndarray:
    """Any supported image as uint8-valued (H, W, C) numpy."""
    if isinstance(img, Image.Image):
        arr = np.asarray(img)
        return arr[:, :, None] if arr.ndim == 2 else arr
    if isinstance(img, torch.Tensor):
        t = img.as_subclass(torch.Tensor)
        t = t if t.dtype == torch.uint8 else (t.double() * 255).round()
        return t.permute(1, 2, 0).numpy().astype(np.int64)
    arr = img if img.dtype == np.uint8 else np.round(img.astype(np.float64) * 255)
    return (arr[:, :, None] if arr.ndim == 2 else arr).astype(np.int64)


def is_class(img, c: int) -> bool:
    arr = pixels(img)
    return all((arr[:, :, ch] == const(c, ch)).all() for ch in range(arr.shape[2]))


class ToyDataset(Dataset):
    """uint8 images filled with REAL, labels as given; items as PIL, tensor or numpy."""

    def __init__(self, labels, kind: str = "uint8", tensor_labels: bool = False, channels: int = 1):
        self.targets = list(labels)
        self.kind, self.tensor_labels, self.channels = kind, tensor_labels, channels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        arr = np.full((8, 8, self.channels), REAL, np.uint8)
        img = {
            "uint8": lambda: torch.from_numpy(arr).permute(2, 0, 1).contiguous(),
            "float": lambda: torch.from_numpy(arr).permute(2, 0, 1).float() / 255,
            "pil": lambda: Image.fromarray(arr[:, :, 0] if self.channels == 1 else arr),
        }[self.kind]()
        label = self.targets[i]
        return img, (torch.tensor(label) if self.tensor_labels else label)


# --- loading ---------------------------------------------------------------------------------------


def test_from_checkpoint_run_dir_or_file_loads_ema_generator(tiny_run: Path) -> None:
    by_dir = GanAugmenter.from_checkpoint(tiny_run)
    by_file = GanAugmenter.from_checkpoint(tiny_run / "network-final.pt", device="cpu", dtype=torch.float32)
    snap = load_snapshot(tiny_run / "network-final.pt")
    assert by_dir.class_names == by_file.class_names == snap.class_names == ["0", "1", "2"]
    assert (by_dir.image_size, by_dir.channels, by_dir.num_classes) == (8, 1, 3)
    G = by_file.generator()
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    for name, tensor in G.state_dict().items():  # the EMA weights the snapshot carries
        assert torch.equal(tensor, snap.generator_state[name]), name


def test_from_checkpoint_refuses_pickled_objects_and_checks_arguments(tmp_path: Path, gray: Snapshot) -> None:
    bad = gray.to_dict()
    bad["config"] = {"evil": types.SimpleNamespace(x=1)}  # not loadable with weights_only=True
    save(bad, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        GanAugmenter.from_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="no generator checkpoint"):
        GanAugmenter.from_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="p must be"):
        GanAugmenter(gray, p=1.5)
    with pytest.raises(ValueError, match="dtype"):
        GanAugmenter(gray, dtype=torch.int64)


def test_images_are_the_generate_images_of_the_same_seed(tiny_run: Path) -> None:
    aug = GanAugmenter.from_checkpoint(tiny_run, seed=5, batch_size=16)
    labels, idx = torch.tensor([0, 2, 1, 2]), torch.tensor([0, 3, 17, 40])
    expected = to_uint8(sample(load_snapshot(tiny_run / "network-final.pt").generator(), labels, idx, seed=5))
    got = aug.images(labels, idx).permute(0, 2, 3, 1).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert (got == expected).mean() > 0.99
    assert len({got[k].tobytes() for k in range(4)}) == 4


# --- the dataset-level transform -------------------------------------------------------------------


def test_replaced_image_is_of_the_target_class(gray: Snapshot) -> None:
    aug = GanAugmenter(gray, p=1.0, pool_size=4, batch_size=4)
    real = torch.full((1, 8, 8), REAL, dtype=torch.uint8)
    for c in range(3):
        for target in (c, torch.tensor(c), np.int64(c)):
            img, out_target = aug(real, target)
            assert out_target is target and is_class(img, c)
    assert aug(real, 1)[0] is not real


@pytest.mark.parametrize("kind", ["uint8", "float", "numpy", "pil"])
def test_returned_images_are_copies_the_caller_may_change(gray, kind) -> None:
    aug = GanAugmenter(gray, p=1.0, pool_size=1, batch_size=4)
    x = {"uint8": torch.zeros(1, 8, 8, dtype=torch.uint8), "float": torch.zeros(1, 8, 8),
         "numpy": np.zeros((8, 8), np.uint8), "pil": Image.new("L", (8, 8))}[kind]  # fmt: skip
    first, _ = aug(x, 0)
    if kind == "pil":
        first.paste(0, (0, 0, 8, 8))
    else:
        first[...] = 0
    assert is_class(aug(x, 0)[0], 0) and is_class(aug.images([0], [0])[0], 0)


def test_p_zero_keeps_the_input_and_p_half_replaces_about_half(gray: Snapshot) -> None:
    real = torch.full((1, 8, 8), REAL, dtype=torch.uint8)
    assert GanAugmenter(gray, p=0.0)(real, 1)[0] is real
    aug = GanAugmenter(gray, p=0.5, pool_size=4, batch_size=4)
    torch.manual_seed(0)
    replaced = [is_class(aug(real, 1)[0], 1) for _ in range(400)]
    assert 0.42 < np.mean(replaced) < 0.58
    torch.manual_seed(0)
    assert [is_class(aug(real, 1)[0], 1) for _ in range(400)] == replaced  # torch's RNG decides


CASES = {
    "pil-L": (lambda: Image.new("L", (8, 8), REAL), 1),
    "pil-RGB": (lambda: Image.new("RGB", (8, 8), (REAL,) * 3), 3),
    "uint8": (lambda: torch.full((1, 8, 8), REAL, dtype=torch.uint8), 1),
    "uint8-rgb": (lambda: torch.full((3, 8, 8), REAL, dtype=torch.uint8), 3),
    "float32": (lambda: torch.full((1, 8, 8), REAL / 255), 1),
    "float64-rgb": (lambda: torch.full((3, 8, 8), REAL / 255, dtype=torch.float64), 3),
    "tv-image": (lambda: tv_tensors.Image(torch.full((1, 8, 8), REAL, dtype=torch.uint8)), 1),
    "numpy-hwc": (lambda: np.full((8, 8, 3), REAL, np.uint8), 3),
    "numpy-hw": (lambda: np.full((8, 8), REAL, np.uint8), 1),
    "numpy-float": (lambda: np.full((8, 8, 1), REAL / 255, np.float32), 1),
}


@pytest.mark.parametrize("case", CASES)
def test_output_type_dtype_range_size_and_channels_match_the_input(case, gray, rgb) -> None:
    make, channels = CASES[case]
    aug = GanAugmenter(gray if channels == 1 else rgb, p=1.0, pool_size=4, batch_size=4)
    x = make()
    y, _ = aug(x, 2)
    assert type(y) is type(x)
    if isinstance(x, Image.Image):
        assert (y.mode, y.size) == (x.mode, x.size)
    else:
        assert y.dtype == x.dtype and tuple(y.shape) == tuple(x.shape)
        if y.dtype not in (torch.uint8, np.uint8):
            assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert is_class(y, 2)


@pytest.mark.parametrize(
    "img, target, match",
    [
        (torch.zeros(1, 16, 16, dtype=torch.uint8), 0, r"\(1, 16, 16\).*8x8 images with 1 channel"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), 0, r"\(3, 8, 8\).*1 channel"),
        (torch.zeros(8, 8, dtype=torch.uint8), 0, r"\(8, 8\).*expected \(C, H, W\)"),
        (Image.new("RGB", (8, 8)), 0, "mode RGB.*PIL mode L"),
        (Image.new("L", (7, 8)), 0, "7x8.*8x8"),
        (np.zeros((8, 8, 3), np.uint8), 0, r"\(8, 8, 3\).*1 channel"),
        (torch.full((1, 8, 8), 2.0), 0, r"values in \[2, 2\].*\[0, 1\].*before Normalize"),
        (torch.zeros(1, 8, 8, dtype=torch.int32), 0, "dtype torch.int32"),
        (torch.zeros(1, 8, 8, dtype=torch.uint8), 3, r"label 3 .*3 classes: \['a', 'b', 'c'\]"),
        (torch.zeros(1, 8, 8, dtype=torch.uint8), -1, "label -1"),
        (torch.zeros(1, 8, 8, dtype=torch.uint8), torch.tensor([1, 2]), "shape \\(2,\\)"),
        (torch.zeros(1, 8, 8, dtype=torch.uint8), 1.0, "integer class index, got float"),
        (torch.zeros(1, 8, 8, dtype=torch.uint8), True, "got bool"),
    ],
)
def test_mismatch_raises_value_error_naming_both_sides(gray, img, target, match) -> None:
    aug = GanAugmenter(gray, p=0.0)  # checked even when the draw would keep the image
    with pytest.raises(ValueError, match=match):
        aug(img, target)


def test_dataset_class_names_map_onto_generator_classes(gray) -> None:
    aug = GanAugmenter(gray, p=1.0, classes=["c", "a"], pool_size=4, batch_size=4)
    x = torch.zeros(1, 8, 8, dtype=torch.uint8)
    assert is_class(aug(x, 0)[0], 2) and is_class(aug(x, 1)[0], 0)
    with pytest.raises(ValueError, match=r"label 2 is not one of the dataset's 2 classes \['c', 'a'\]"):
        aug(x, 2)
    with pytest.raises(ValueError, match=r"dataset class 'z' .*generator classes \['a', 'b', 'c'\]"):
        GanAugmenter(gray, classes=["a", "z"])


def test_augmented_dataset_brings_the_augmenter_to_torchvision_image_folder(rgb, tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8), (REAL,) * 3).save(tmp_path / name / "x.png")
    folder = ImageFolder(str(tmp_path))
    aug = GanAugmenter(rgb, p=1.0, classes=folder.classes, pool_size=4, batch_size=4)
    wrapped = AugmentedDataset(folder, aug)
    for i in range(3):
        img, label = wrapped[i]
        assert isinstance(img, Image.Image) and img.mode == "RGB" and label == i and is_class(img, i)
    with pytest.raises(ValueError, match="callable"):
        AugmentedDataset(folder, None)


def test_transform_draws_from_a_fixed_pool_and_epochs_change_it(tiny_run: Path) -> None:
    aug = GanAugmenter.from_checkpoint(tiny_run, p=1.0, pool_size=6, batch_size=4)
    pool = {aug.images([1] * 6, range(6))[k].numpy().tobytes() for k in range(6)}
    assert len(pool) == 6
    x = torch.zeros(1, 8, 8, dtype=torch.uint8)
    torch.manual_seed(1)
    seen = [aug(x, 1)[0].numpy().tobytes() for _ in range(60)]
    assert set(seen) == pool  # every draw is a pool image, and 60 draws cover the 6 of them
    aug.set_epoch(1)
    fresh = {aug(x, 1)[0].numpy().tobytes() for _ in range(30)}
    assert not fresh & pool
    aug.set_epoch(0)
    assert {aug(x, 1)[0].numpy().tobytes() for _ in range(10)} <= pool


def test_images_do_not_depend_on_request_order_pool_eviction_or_pickling(tiny_run: Path) -> None:
    labels, idx = [0, 1, 2, 2, 0], [70, 3, 0, 129, 5]
    ref = GanAugmenter.from_checkpoint(tiny_run, batch_size=8).images(labels, idx)
    tiny_cache = GanAugmenter.from_checkpoint(tiny_run, batch_size=8, cache_mb=1e-4)  # one chunk at a time
    backwards = torch.stack([tiny_cache.images([t], [i])[0] for t, i in reversed(list(zip(labels, idx, strict=True)))])
    assert torch.equal(backwards.flip(0), ref)
    assert len(tiny_cache._pool) == 1
    aug = GanAugmenter.from_checkpoint(tiny_run, batch_size=8)
    aug.prefill(16)
    clone = pickle.loads(pickle.dumps(aug))
    assert clone._G is None and len(clone._pool) == 3 * 2  # the pool travels, the module is rebuilt
    assert torch.equal(clone.images(labels, idx), ref)


def test_prefill_generates_whole_chunks_per_label_once(gray) -> None:
    aug = GanAugmenter(gray, batch_size=4, pool_size=6)
    aug.prefill([4, 0, 5])
    assert sorted(aug._pool) == [(0, 0, 0), (0, 2, 0), (0, 2, 1)]  # (seed, class, chunk of 4 images)
    aug.prefill()  # the transform's pool: 6 images (2 chunks) of every class, the existing ones kept
    assert sorted(aug._pool) == [(0, c, k) for c in range(3) for k in range(2)]
    aug.prefill(1, epoch=2)
    assert len(aug._pool) == 9
    with pytest.raises(ValueError, match="2 counts for 3 labels"):
        aug.prefill([1, 2])


def test_pickled_augmenter_carries_tensors_not_modules(gray) -> None:
    aug = GanAugmenter(gray, p=1.0, pool_size=4, batch_size=4)
    aug.generator()
    blob = pickle.dumps(aug)
    assert b"ConditionalGenerator" not in blob
    clone = pickle.loads(blob)
    assert is_class(clone(torch.zeros(1, 8, 8, dtype=torch.uint8), 1)[0], 1)


# --- torchvision v2 and albumentations -------------------------------------------------------------


@pytest.mark.parametrize("label", [2, torch.tensor(2)], ids=["int", "tensor"])
@pytest.mark.parametrize("kind", ["pil", "uint8"])
def test_v2_transform_picks_up_the_label_and_passes_it_through(gray, label, kind) -> None:
    aug = GanAugmenter(gray, p=1.0, pool_size=4, batch_size=4)
    x = Image.new("L", (8, 8), REAL) if kind == "pil" else torch.full((1, 8, 8), REAL, dtype=torch.uint8)
    pipeline = v2.Compose([aug.v2(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    img, out_label = pipeline(x, label)
    assert out_label is label
    assert isinstance(img, tv_tensors.Image) and img.dtype == torch.float32 and img.shape == (1, 8, 8)
    assert torch.allclose(img, torch.full_like(img, const(2) / 255))
    # in a dict sample too; p=0 keeps the image
    out = GanTransform(aug, p=0.0)({"image": x, "label": label})
    assert out["image"] is x and out["label"] is label


def test_v2_transform_params_are_drawn_then_applied_and_errors_are_loud(gray) -> None:
    aug = GanAugmenter(gray, pool_size=4, batch_size=4)
    t = GanTransform(aug, p=1.0)
    x = torch.zeros(1, 8, 8, dtype=torch.uint8)
    params = t.make_params([x, 1])
    assert params["replace"] and params["class"] == 1 and 0 <= params["index"] < 4
    assert is_class(t.transform(x, params), 1) and t.transform(1, params) == 1
    with pytest.raises(ValueError, match="one image and one integer label"):
        t(x)
    with pytest.raises(ValueError, match="label 5"):
        t(x, 5)
    with pytest.raises(ValueError, match="16x16|16, 16"):
        t(torch.zeros(1, 16, 16, dtype=torch.uint8), 0)
    with pytest.raises(ValueError, match="p must be"):
        GanTransform(aug, p=-0.1)


def test_albumentations_transform_takes_the_class_from_label(rgb) -> None:
    aug = GanAugmenter(rgb, pool_size=4, batch_size=4)
    pipeline = A.Compose([GanAlbumentations(aug, p=1.0), A.HorizontalFlip(p=0.5)], seed=3)
    for c in range(3):
        out = pipeline(image=np.full((8, 8, 3), REAL, np.uint8), label=c)
        assert out["label"] == c and out["image"].dtype == np.uint8 and is_class(out["image"], c)
    out = A.Compose([aug.albumentations(p=1.0)])(image=np.full((8, 8, 3), 0.5, np.float32), label=1)
    assert out["image"].dtype == np.float32 and is_class(out["image"], 1)
    kept = A.Compose([aug.albumentations(p=0.0)])(image=np.full((8, 8, 3), REAL, np.uint8), label=1)
    assert (kept["image"] == REAL).all()
    with pytest.raises(ValueError, match="label"):
        A.Compose([aug.albumentations(p=1.0)])(image=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="label 9"):
        A.Compose([aug.albumentations(p=1.0)])(image=np.zeros((8, 8, 3), np.uint8), label=9)


def test_albumentations_draws_follow_the_compose_seed(tiny_run: Path) -> None:
    aug = GanAugmenter.from_checkpoint(tiny_run, pool_size=32, batch_size=16)

    def run(seed: int) -> list[bytes]:
        pipeline = A.Compose([aug.albumentations(p=0.5)], seed=seed)
        return [pipeline(image=np.zeros((8, 8), np.uint8), label=k % 3)["image"].tobytes() for k in range(40)]

    first = run(7)
    assert first == run(7) and first != run(8)
    assert 10 < sum(b != bytes(64) for b in first) < 30


# --- datasets --------------------------------------------------------------------------------------


def test_balanced_dataset_tops_every_class_up_to_the_largest(gray) -> None:
    base = ToyDataset([0, 0, 1, 0, 2, 0, 1, 0])  # counts 5, 2, 1
    ds = BalancedDataset(base, GanAugmenter(gray, batch_size=4))
    assert (ds.real_counts, ds.synthetic_counts, ds.counts, len(ds)) == ([5, 2, 1], [0, 3, 4], [5, 5, 5], 15)
    items = [ds[i] for i in range(len(ds))]
    assert [label for _, label in items].count(1) == 5 and [label for _, label in items].count(2) == 5
    for i, (img, label) in enumerate(items):
        if ds.is_synthetic(i):
            assert is_class(img, label) and img.dtype == torch.uint8 and img.shape == (1, 8, 8)
        else:
            assert (img == REAL).all() and label == base.targets[i]
    with pytest.raises(IndexError):
        ds[15]


def test_balanced_dataset_never_adds_a_class_the_dataset_does_not_hold(gray) -> None:
    ds = BalancedDataset(ToyDataset([0, 0, 0, 1]), GanAugmenter(gray, batch_size=4))  # no class 2
    assert (ds.real_counts, ds.synthetic_counts, len(ds)) == ([3, 1, 0], [0, 2, 0], 6)
    assert {ds[i][1] for i in range(len(ds))} == {0, 1}
    assert BalancedDataset(ToyDataset([0, 1]), GanAugmenter(gray, batch_size=4), target=3).synthetic_counts == [2, 2, 0]


def test_balanced_dataset_to_a_given_count_matches_item_and_label_types(gray) -> None:
    base = ToyDataset([0, 0, 0, 1, 2], kind="pil", tensor_labels=True)
    ds = BalancedDataset(base, GanAugmenter(gray, batch_size=4), target=2, transform=lambda im: np.asarray(im))
    assert ds.synthetic_counts == [0, 1, 1] and ds.counts == [3, 2, 2]  # real items are never dropped
    img, label = ds[5]
    assert isinstance(img, np.ndarray) and isinstance(label, torch.Tensor) and label.ndim == 0
    assert label.item() == 1 and (img == const(1)).all()  # synthetic PIL, then the shared transform
    assert (ds[0][0] == REAL).all()
    floats = BalancedDataset(ToyDataset([0, 1, 1, 2], kind="float"), GanAugmenter(gray, batch_size=4))
    assert floats.synthetic_counts == [1, 0, 1]
    img, label = floats[5]
    assert img.dtype == torch.float32 and label == 2 and torch.allclose(img, torch.full_like(img, const(2) / 255))


def test_balanced_dataset_errors_name_the_problem(gray) -> None:
    aug = GanAugmenter(gray, batch_size=4)
    with pytest.raises(ValueError, match="target must be 'max' or a positive count"):
        BalancedDataset(ToyDataset([0, 1]), aug, target=0)
    with pytest.raises(ValueError, match=r"dataset label 3 is not one of the augmenter's 3 classes"):
        BalancedDataset(ToyDataset([0, 3]), aug)
    with pytest.raises(ValueError, match=r"\(3, 8, 8\).*1 channel"):
        BalancedDataset(ToyDataset([0, 1], channels=3), aug)
    with pytest.raises(ValueError, match="2 labels for a dataset of 3"):
        BalancedDataset(ToyDataset([0, 1, 2]), aug, labels=[0, 1])


def test_synthetic_dataset_is_fixed_per_index_and_fresh_per_epoch_on_request(tiny_run: Path) -> None:
    aug = GanAugmenter.from_checkpoint(tiny_run, batch_size=4)
    ds = SyntheticDataset(aug, per_class=[3, 0, 2], output="float")
    assert len(ds) == 5 and [ds[i][1] for i in range(5)] == [0, 0, 0, 2, 2]
    first = torch.stack([ds[i][0] for i in range(5)])
    assert first.dtype == torch.float32 and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, torch.stack([ds[i][0] for i in range(5)]))  # same every pass
    assert torch.equal((first * 255).round().to(torch.uint8), aug.images([0, 0, 0, 2, 2], [0, 1, 2, 0, 1]))
    ds.set_epoch(1)
    second = torch.stack([ds[i][0] for i in range(5)])
    assert all(not torch.equal(a, b) for a, b in zip(first, second, strict=True))
    ds.set_epoch(0)
    assert torch.equal(first, torch.stack([ds[i][0] for i in range(5)]))
    pil = SyntheticDataset(aug, per_class=1, output="pil")
    assert isinstance(pil[2][0], Image.Image) and pil[2][1] == 2
    with pytest.raises(ValueError, match="per_class"):
        SyntheticDataset(aug, per_class=[1, 2])
    with pytest.raises(ValueError, match="output must be one of"):
        SyntheticDataset(aug, per_class=1, output="jpeg")


def test_datasets_give_the_same_images_in_two_workers_and_every_epoch(tiny_run: Path) -> None:
    aug = GanAugmenter.from_checkpoint(tiny_run, batch_size=8)
    base = ToyDataset([0] * 12 + [1] * 3 + [2])
    for prefill in (True, False):  # without prefill every worker generates what it needs itself
        ds = BalancedDataset(base, GanAugmenter.from_checkpoint(tiny_run, batch_size=8), prefill=prefill)
        direct = torch.stack([ds[i][0] for i in range(len(ds))])
        for _epoch in range(2):
            loaded = torch.cat([x for x, _ in DataLoader(ds, batch_size=5, num_workers=2)])
            assert torch.equal(loaded, direct)
    ds = BalancedDataset(base, aug)
    ds.set_epoch(3)
    loaded = torch.cat([x for x, _ in DataLoader(ds, batch_size=5, num_workers=2)])
    assert torch.equal(loaded[:16], direct[:16]) and not torch.equal(loaded[16:], direct[16:])
    assert torch.equal(loaded, torch.stack([ds[i][0] for i in range(len(ds))]))


def test_public_api_exports() -> None:
    for name in ("GanAugmenter", "BalancedDataset", "SyntheticDataset", "AugmentedDataset", "GanTransform"):
        assert name in augment.__all__ and getattr(augment, name) is not None
    assert "GanAlbumentations" in augment.__all__


@pytest.mark.parametrize("which", ["digits-run", "missing"])
def test_the_example_pointed_at_a_run_it_cannot_use_says_what_it_needs(tiny_run: Path, tmp_path: Path, which: str):
    import subprocess
    import sys

    target = tiny_run if which == "digits-run" else tmp_path / "nope"
    script = Path(__file__).resolve().parent.parent / "examples" / "train_fashion_with_augmenter.py"
    out = subprocess.run([sys.executable, str(script), str(target)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-1500:]
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {target}: ") and "a run trained on Fashion-MNIST at 28x28" in line
    if which == "digits-run":
        assert "8x8x1 images of classes ['0', '1', '2']" in line
