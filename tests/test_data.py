"""Data: sources, limiting, long tail, splits, fingerprint, and every bad input named."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augment.config import DataConfig
from augment.data import find_fashion_mnist_dir, load_data, load_source
from augment.data.sources import FASHION_CLASSES, read_idx
from augment.errors import ConfigError, DataError


def _ids(split) -> set[str]:
    return set(split.ids)


def test_digits_limit_and_split_are_stratified_and_disjoint() -> None:
    data = load_data(DataConfig(source="digits", per_class=50, split={"val": 0.1, "test": 0.2}), seed=0)
    counts = data.counts()
    assert all(v == 35 for v in counts["train"].values())
    assert all(v == 5 for v in counts["val"].values())
    assert all(v == 10 for v in counts["test"].values())
    assert not (_ids(data.train) & _ids(data.test)) and not (_ids(data.train) & _ids(data.val))
    assert data.train.images.dtype.__str__() == "torch.uint8" and data.train.images.shape[1:] == (1, 8, 8)
    assert int(data.train.images.max()) == 255


def test_selection_is_seeded_and_fingerprinted() -> None:
    cfg = DataConfig(source="digits", per_class=20)
    a, b, c = load_data(cfg, 0), load_data(cfg, 0), load_data(cfg, 1)
    assert a.train.ids == b.train.ids and a.fingerprint == b.fingerprint
    assert a.train.ids != c.train.ids and a.fingerprint != c.fingerprint


def test_long_tail_profile_and_disjoint_test_pool() -> None:
    cfg = DataConfig(
        source="digits",
        imbalance={"ratio": 0.1, "max_per_class": 100},
        split={"val": 0.0, "test": 0.0, "test_per_class": 30},
    )
    data = load_data(cfg, seed=0)
    train = list(data.counts()["train"].values())
    assert train[0] == 100 and train[-1] == 10
    assert train == sorted(train, reverse=True)
    assert set(data.counts()["test"].values()) == {30}
    assert not (_ids(data.train) & _ids(data.test))


def test_per_class_dict_and_classes_subset() -> None:
    cfg = DataConfig(source="digits", classes=["3", "7"], per_class={"3": 10}, split={"val": 0.0, "test": 0.0})
    data = load_data(cfg, 0)
    assert data.class_names == ["3", "7"]
    assert data.counts()["train"]["3"] == 10 and data.counts()["train"]["7"] > 100


@pytest.mark.parametrize(
    ("cfg", "match", "err"),
    [
        (dict(per_class=500), "has 1.. images but the limit asks for 500", DataError),
        (dict(per_class={"zebra": 3}), "not one of", ConfigError),
        (dict(classes=["0", "zebra"]), "zebra", DataError),
        (dict(per_class=2, split={"val": 0.4, "test": 0.4}), "none left for training", DataError),
        (dict(image_size=16), "8x8 images .* data.image_size=16", DataError),
    ],
)
def test_bad_limits_are_named(cfg: dict, match: str, err: type) -> None:
    with pytest.raises(err, match=match):
        load_data(DataConfig(source="digits", **cfg), 0)


# --- Fashion-MNIST IDX ------------------------------------------------------------------------


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def _fake_fashion(root: Path, n: int = 40) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for part in ("train", "t10k"):
        _write_idx(root / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{part}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_fashion_mnist_reads_idx_files(tmp_path: Path) -> None:
    _fake_fashion(tmp_path / "fm")
    cfg = DataConfig(source="fashion_mnist", root=tmp_path / "fm", image_size=28, per_class=6)
    data = load_data(cfg, 0)
    assert data.class_names == FASHION_CLASSES
    assert sum(data.counts()["train"].values()) == 10 * 4
    raw = read_idx(tmp_path / "fm" / "train-images-idx3-ubyte.gz")
    assert raw.shape == (40, 28, 28)


def test_fashion_mnist_errors_name_the_package_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_source(DataConfig(source="fashion_mnist", root=tmp_path / "nowhere", image_size=28))
    _fake_fashion(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_source(DataConfig(source="fashion_mnist", root=tmp_path / "fm", image_size=28))
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(struct.pack(">BBBBI", 0, 0, 8, 1, 100) + b"\x00" * 10)
    with pytest.raises(DataError, match="header says 100"):
        read_idx(bad)
    _fake_fashion(tmp_path / "fm2")
    with pytest.raises(DataError, match="28x28 .* data.image_size=8"):
        load_source(DataConfig(source="fashion_mnist", root=tmp_path / "fm2", image_size=8))


@pytest.mark.skipif(find_fashion_mnist_dir() is None, reason="Debian's dataset-fashion-mnist is not installed")
def test_installed_fashion_mnist_is_found_with_dpkg() -> None:
    data = load_data(DataConfig(source="fashion_mnist", image_size=28, per_class=10), 0)
    assert len(data.train) == 10 * 7 and data.train.images.shape[1:] == (1, 28, 28)


# --- image folders and CSV manifests ----------------------------------------------------------


def _png(path: Path, value: int, size: int = 8, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=None).convert(mode).save(path)


def _folder(root: Path, per_class: int = 5) -> Path:
    for c, name in enumerate(["cat", "dog"]):
        for i in range(per_class):
            _png(root / name / f"{i}.png", 50 + 100 * c)
    return root


def test_imagefolder_loads_pixels_and_labels(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    Image.fromarray(np.full((8, 8), 150, dtype=np.uint8)).save(root / "dog" / "extra.jpg", quality=100)
    data = load_data(DataConfig(source="imagefolder", root=root, split={"val": 0.0, "test": 0.0}), 0)
    assert data.class_names == ["cat", "dog"]
    assert data.counts()["train"] == {"cat": 5, "dog": 6}
    cats = data.train.images[data.train.labels == 0]
    assert int(cats.min()) == int(cats.max()) == 50


def test_csv_manifest_loads(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    (root / "m.csv").write_text(
        "path,label\n" + "".join(f"{n}/{i}.png,{n}\n" for n in ("cat", "dog") for i in range(5))
    )
    data = load_data(DataConfig(source="csv", root=root / "m.csv", split={"val": 0.0, "test": 0.2}), 0)
    assert data.counts()["train"] == {"cat": 4, "dog": 4}
    assert int(data.train.images[data.train.labels == 1].float().mean()) == 150


def _corrupt(root: Path) -> str:
    (root / "cat" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return "0.png: corrupt"


def _truncated(root: Path) -> str:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)).save(root / "cat" / "0.png")
    data = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "0.png").write_bytes(data[: len(data) // 2])
    return "0.png: corrupt"


def _non_image(root: Path) -> str:
    (root / "cat" / "notes.txt").write_text("hello")
    return "notes.txt: not an image file"


def _empty_class(root: Path) -> str:
    (root / "bird").mkdir()
    return "class 'bird' is empty"


def _wrong_size(root: Path) -> str:
    _png(root / "dog" / "big.png", 10, size=16)
    return "big.png: image is 16x16 but data.image_size=8"


def _mode_mix(root: Path) -> str:
    _png(root / "dog" / "rgb.png", 10, mode="RGB")
    return "rgb.png: image mode RGB but data.channels=1"


@pytest.mark.parametrize("make_bad", [_corrupt, _truncated, _non_image, _empty_class, _wrong_size, _mode_mix])
def test_imagefolder_bad_inputs(tmp_path: Path, make_bad) -> None:
    root = _folder(tmp_path / "imgs")
    match = make_bad(root)
    with pytest.raises(DataError) as err:
        load_data(DataConfig(source="imagefolder", root=root), 0)
    assert match in str(err.value)


def test_mode_mix_converts_when_configured(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    _mode_mix(root)
    data = load_data(DataConfig(source="imagefolder", root=root, convert="L", split={"val": 0, "test": 0}), 0)
    assert data.counts()["train"]["dog"] == 6


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ("cat/0.png,cat\ncat/1.png,bird\n", "line 3: label 'bird' is not one of"),
        ("cat/0.png,cat\ncat/missing.png,cat\n", "line 3: file 'cat/missing.png' does not exist"),
        ("cat/0.png,cat\n../outside.png,cat\n", "points outside the manifest's folder"),
        ("cat/0.png\n", "expected 'path,label'"),
    ],
)
def test_csv_bad_inputs(tmp_path: Path, lines: str, match: str) -> None:
    root = _folder(tmp_path / "imgs")
    _png(tmp_path / "outside.png", 1)
    (root / "m.csv").write_text("path,label\n" + lines)
    with pytest.raises(DataError, match=match):
        load_data(DataConfig(source="csv", root=root / "m.csv", classes=["cat"], split={"val": 0, "test": 0}), 0)


def test_csv_needs_header(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("a.png,cat\n")
    with pytest.raises(DataError, match="header 'path,label'"):
        load_data(DataConfig(source="csv", root=tmp_path / "m.csv"), 0)


def test_csv_path_with_nul_byte_is_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    (root / "m.csv").write_text("path,label\ncat/0.png,cat\nbad\x00name.png,cat\n")
    with pytest.raises(DataError, match="line 3: path .* is not a valid file name"):
        load_data(DataConfig(source="csv", root=root / "m.csv", split={"val": 0, "test": 0}), 0)


def test_a_manifest_that_lists_a_file_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    rows = "".join(f"{n}/{i}.png,{n}\n" for n in ("cat", "dog") for i in range(5))
    (root / "dup.csv").write_text("path,label\n" + rows + "cat/1.png,cat\n")  # line 12 repeats line 3
    with pytest.raises(DataError, match=r"lines 3 and 12: file 'cat/1.png' is listed again"):
        load_data(DataConfig(source="csv", root=root / "dup.csv"), 0)
    (root / "two.csv").write_text("path,label\n" + rows + "./cat/2.png,dog\n")  # the same file, another label
    with pytest.raises(DataError, match=r"lines 4 and 12: file './cat/2.png' is listed under label 'dog'"):
        load_data(DataConfig(source="csv", root=root / "two.csv"), 0)


def test_a_manifest_saved_by_excel_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    text = "path,label\n" + "".join(f"{n}/{i}.png,{n}\n" for n in ("cat", "dog") for i in range(5))
    (root / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    data = load_data(DataConfig(source="csv", root=root / "bom.csv", split={"val": 0.0, "test": 0.0}), 0)
    assert data.counts()["train"] == {"cat": 5, "dog": 5}


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for c, name in enumerate(["dark", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 20000 + 40000 * c, dtype=np.uint16)).save(root / name / f"{i}.png")
    with Image.open(root / "dark" / "0.png") as img:
        assert img.mode.startswith("I")  # what PIL makes of a 16-bit PNG
    with pytest.raises(DataError, match="set data.convert: L"):
        load_data(DataConfig(source="imagefolder", root=root, split={"val": 0.0, "test": 0.0}), 0)
    data = load_data(DataConfig(source="imagefolder", root=root, convert="L", split={"val": 0.0, "test": 0.0}), 0)
    dark = data.train.images[data.train.labels == 0]
    light = data.train.images[data.train.labels == 1]
    assert int(dark.max()) == round(20000 * 255 / 65535) == 78  # not 255: PIL's convert would clip it
    assert int(light.max()) == round(60000 * 255 / 65535) == 233
