"""Image sources: scikit-learn's digits, Fashion-MNIST IDX files, an image folder, a CSV manifest.

A source returns every image it has as one ``uint8`` tensor ``(N, C, H, W)`` with integer labels,
stable ids (index or relative path) and class names. Sizes and channels must match the config:
nothing is resized or converted unless the config says how (``data.convert``).
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
import shutil
import struct
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from augment.config import DataConfig
from augment.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class SourceData:
    """Everything a source holds, before limiting and splitting."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    ids: list[str]
    class_names: list[str]


def load_source(cfg: DataConfig) -> SourceData:
    """Load every image of the configured source (checks size and channels)."""
    loaders = {
        "digits": _load_digits,
        "fashion_mnist": _load_fashion_mnist,
        "imagefolder": _load_imagefolder,
        "csv": _load_csv,
    }
    data = loaders[cfg.source](cfg)
    _check_shape(data.images, cfg, where=f"source {cfg.source!r}")
    return _select_classes(data, cfg)


def _check_shape(images: torch.Tensor, cfg: DataConfig, where: str) -> None:
    c, h, w = images.shape[1:]
    if (c, h, w) != (cfg.channels, cfg.image_size, cfg.image_size):
        raise DataError(
            f"{where} has {h}x{w} images with {c} channel(s) but the config says "
            f"data.image_size={cfg.image_size}, data.channels={cfg.channels} (no silent resize)"
        )


def _select_classes(data: SourceData, cfg: DataConfig) -> SourceData:
    if cfg.classes is None:
        return data
    unknown = [c for c in cfg.classes if c not in data.class_names]
    if unknown:
        raise DataError(f"data.classes names {unknown[0]!r}, which is not a class of the source {data.class_names}")
    old = [data.class_names.index(c) for c in cfg.classes]
    remap = torch.full((len(data.class_names),), -1, dtype=torch.int64)
    remap[old] = torch.arange(len(old))
    new_labels = remap[data.labels]
    keep = (new_labels >= 0).nonzero().squeeze(1)
    return SourceData(
        images=data.images[keep],
        labels=new_labels[keep],
        ids=[data.ids[i] for i in keep.tolist()],
        class_names=list(cfg.classes),
    )


# --- digits -----------------------------------------------------------------------------------


def _load_digits(cfg: DataConfig) -> SourceData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 intensities 0..16 -> 0..255.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return SourceData(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(digits.target.astype(np.int64)),
        ids=[f"digits:{i}" for i in range(len(images))],
        class_names=[str(i) for i in range(10)],
    )


# --- Fashion-MNIST (IDX) ----------------------------------------------------------------------


def find_fashion_mnist_dir() -> Path | None:
    """The folder Debian's dataset-fashion-mnist package installed, if any (found with dpkg -L)."""
    if shutil.which("dpkg"):
        try:
            out = subprocess.run(
                ["dpkg", "-L", FASHION_PACKAGE], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        for line in out.splitlines():
            if line.endswith("train-images-idx3-ubyte.gz"):
                return Path(line).parent
    return FASHION_DEFAULT_DIR if FASHION_DEFAULT_DIR.is_dir() else None


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}; install Debian's {FASHION_PACKAGE} package "
        f"(apt-get install -y {FASHION_PACKAGE}) or set data.root to a folder with the four IDX files"
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as a uint8 array; DataError when malformed."""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX file holds {len(raw) - header} bytes of data, its header says {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_fashion_mnist(cfg: DataConfig) -> SourceData:
    root = cfg.root if cfg.root is not None else find_fashion_mnist_dir()
    if root is None or not Path(root).is_dir():
        raise DataError(
            f"Fashion-MNIST not found{f' at {root}' if root else ''}: install Debian's {FASHION_PACKAGE} "
            f"package (apt-get install -y {FASHION_PACKAGE}) or set data.root to a folder with its IDX files"
        )
    root = Path(root)
    images, labels, ids = [], [], []
    for part, (img_stem, lbl_stem) in FASHION_FILES.items():
        x = read_idx(_idx_file(root, img_stem))
        y = read_idx(_idx_file(root, lbl_stem))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{root}: {img_stem} and {lbl_stem} do not match ({x.shape} vs {y.shape})")
        if y.max(initial=0) >= len(FASHION_CLASSES):
            raise DataError(f"{root}/{lbl_stem}: label {int(y.max())} outside the 10 Fashion-MNIST classes")
        images.append(x)
        labels.append(y)
        ids += [f"{part}:{i}" for i in range(len(x))]
    return SourceData(
        images=torch.from_numpy(np.concatenate(images)[:, None].copy()),
        labels=torch.from_numpy(np.concatenate(labels).astype(np.int64)),
        ids=ids,
        class_names=list(FASHION_CLASSES),
    )


# --- image files ------------------------------------------------------------------------------


def load_image(path: Path, cfg: DataConfig) -> np.ndarray:
    """Decode one image file to ``uint8 (C, H, W)``; DataError names the file and the problem."""
    want = "L" if cfg.channels == 1 else "RGB"
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it: any image over the limit is refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1))} pixels" if found else "too many pixels"
        raise DataError(
            f"{path}: image of {size} is over the data limit of {Image.MAX_IMAGE_PIXELS} pixels "
            "(a possible decompression bomb); refused without decoding it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unreadable image ({err})") from None
    if img.size != (cfg.image_size, cfg.image_size):  # from the header: a huge image is never decoded
        img.close()
        raise DataError(
            f"{path}: image is {img.size[0]}x{img.size[1]} but data.image_size={cfg.image_size} (no silent resize)"
        )
    try:
        with img:
            img.load()  # decodes fully: a truncated file fails here, not later
            if img.mode in ("I;16", "I;16L", "I;16B", "I") and want == "L" and cfg.convert == "L":
                # 16-bit grayscale: PIL's convert("L") clips every value above 255 to white; scale instead.
                wide = np.asarray(img, dtype=np.int64)
                if wide.min() < 0 or wide.max() > 65535:
                    raise DataError(f"{path}: {img.mode} image with values outside 0..65535; cannot scale to 8 bits")
                arr = ((wide * 255 + 32767) // 65535).astype(np.uint8)
            elif img.mode != want:
                if cfg.convert is None:
                    raise DataError(
                        f"{path}: image mode {img.mode} but data.channels={cfg.channels} expects {want}; "
                        f"set data.convert: {want} to convert"
                    )
                img = img.convert(cfg.convert)
                arr = np.asarray(img, dtype=np.uint8)
            else:
                arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: corrupt or unreadable image ({err})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[1:] != (cfg.image_size, cfg.image_size):
        raise DataError(
            f"{path}: image is {arr.shape[2]}x{arr.shape[1]} but data.image_size={cfg.image_size} (no silent resize)"
        )
    return np.ascontiguousarray(arr)


def _stack(paths: list[Path], labels: list[int], ids: list[str], names: list[str], cfg: DataConfig) -> SourceData:
    arrays = [load_image(p, cfg) for p in paths]
    if not arrays:
        raise DataError(f"{cfg.root}: no images found")
    return SourceData(
        images=torch.from_numpy(np.stack(arrays)),
        labels=torch.tensor(labels, dtype=torch.int64),
        ids=ids,
        class_names=names,
    )


def _load_imagefolder(cfg: DataConfig) -> SourceData:
    root = Path(cfg.root)  # validated non-None by DataConfig
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder (imagefolder expects one sub-folder per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = cfg.classes if cfg.classes is not None else [p.name for p in folders]
    if not names:
        raise DataError(f"{root}: no class folders found")
    paths: list[Path] = []
    labels: list[int] = []
    ids: list[str] = []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{root}: class {name!r} has no folder")
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        for p in files:
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
        if not files:
            raise DataError(f"{folder}: class {name!r} is empty")
        paths += files
        labels += [label] * len(files)
        ids += [str(p.relative_to(root)) for p in files]
    data = _stack(paths, labels, ids, list(names), cfg)
    # classes were chosen above; do not select again
    return data


def _load_csv(cfg: DataConfig) -> SourceData:
    manifest = Path(cfg.root)
    if not manifest.is_file():
        raise DataError(f"data.root {manifest} is not a CSV manifest file")
    base = manifest.parent.resolve()
    rows = read_manifest(manifest)
    names = list(cfg.classes) if cfg.classes is not None else sorted({label for _, label, _ in rows})
    index = {n: i for i, n in enumerate(names)}
    paths, labels, ids = [], [], []
    seen: dict[Path, tuple[int, str]] = {}  # resolved file -> (line, label) of its first row
    for rel, label, line in rows:
        if label not in index:
            raise DataError(f"{manifest} line {line}: label {label!r} is not one of the classes {names}")
        try:
            path = (base / rel).resolve()
        except (ValueError, OSError):  # e.g. an embedded NUL byte
            raise DataError(f"{manifest} line {line}: path {rel!r} is not a valid file name") from None
        if not path.is_relative_to(base):
            raise DataError(f"{manifest} line {line}: path {rel!r} points outside the manifest's folder {base}")
        if not path.is_file():
            raise DataError(f"{manifest} line {line}: file {rel!r} does not exist")
        if path in seen:  # it would land in two splits (train and test) or teach two classes
            first, first_label = seen[path]
            what = "again" if first_label == label else f"under label {label!r} and, on line {first}, {first_label!r}"
            raise DataError(f"{manifest} lines {first} and {line}: file {rel!r} is listed {what}; list each file once")
        seen[path] = (line, label)
        paths.append(path)
        labels.append(index[label])
        ids.append(rel)
    for name in names:
        if name not in {n for _, n, _ in rows}:
            raise DataError(f"{manifest}: class {name!r} has no images")
    return _stack(paths, labels, ids, names, cfg)


def read_manifest(path: Path) -> list[tuple[str, str, int]]:
    """Rows ``(path, label, line_number)`` of a ``path,label`` CSV manifest with a header."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError:
        raise DataError(f"{path}: manifest is not UTF-8 text") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read manifest ({err.strerror or err})") from None
    try:
        reader = csv.reader(text.splitlines())
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["path", "label"]:
            raise DataError(f"{path}: manifest must start with the header 'path,label'")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise DataError(f"{path} line {line}: expected 'path,label', got {','.join(row)!r}")
            rows.append((row[0].strip(), row[1].strip(), line))
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: manifest lists no images")
    return rows
