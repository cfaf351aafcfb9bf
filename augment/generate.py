"""Per-class, per-seed reproducible sampling; PNG files, ``manifest.csv`` and a sample grid.

Sample ``i`` of class ``c`` depends only on ``(seed, c, i)``: its latent comes from a
``torch.Generator`` seeded by a hash of that triple (as EDM seeds one generator per image), so
the batch size, the device's batch composition or the order of requests never change an image.

Example:
    >>> counts_to_generate([5, 3, 1], target="balance")
    [0, 2, 4]
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from augment.checkpoint import Snapshot
from augment.errors import ConfigError, OutputError
from augment.io import atomic_save, ensure_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ["path", "label", "class_name", "seed", "index"]


def counts_to_generate(
    class_counts: list[int], target: str = "balance", per_class: int | None = None, total: int | None = None
) -> list[int]:
    """How many synthetic images each class gets.

    ``balance`` tops every class up to the largest; ``per_class`` gives each class N; ``total``
    splits a budget evenly (the first classes take the remainder).
    """
    k = len(class_counts)
    if target == "balance":
        top = max(class_counts)
        return [top - n for n in class_counts]
    if target == "per_class":
        if per_class is None or per_class < 1:
            raise ConfigError(f"per_class target needs a positive count, got {per_class!r}")
        return [per_class] * k
    if target == "total":
        if total is None or total < 1:
            raise ConfigError(f"total target needs a positive budget, got {total!r}")
        return [total // k + (1 if c < total % k else 0) for c in range(k)]
    raise ConfigError(f"unknown generate target {target!r} (balance, per_class or total)")


def sample_seed(seed: int, label: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of class ``label`` (blake2b of the triple)."""
    digest = hashlib.blake2b(f"{seed}:{label}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def latents(seed: int, labels: torch.Tensor, indices: torch.Tensor, z_dim: int) -> torch.Tensor:
    """Latent vectors ``(N, z_dim)`` on the CPU, row n a function of ``(seed, labels[n], indices[n])``."""
    out = torch.empty(len(labels), z_dim)
    g = torch.Generator()
    for n, (c, i) in enumerate(zip(labels.tolist(), indices.tolist(), strict=True)):
        g.manual_seed(sample_seed(seed, c, i))
        torch.randn(z_dim, generator=g, out=out[n])
    return out


@torch.no_grad()
def sample(
    G: torch.nn.Module,
    labels: torch.Tensor,
    indices: torch.Tensor,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Images in [-1, 1], ``(N, C, H, W)`` on the CPU, for each ``(label, index)`` pair."""
    device = next(G.parameters()).device
    out = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        z = latents(seed, y, indices[start : start + batch_size], G.z_dim)
        out.append(G(z.to(device), y.to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, G.channels, G.image_size, G.image_size)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float ``(N, C, H, W)`` -> uint8 ``(N, H, W, C)``."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _png_bytes(arr: np.ndarray) -> bytes:
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def class_dirname(label: int, name: str) -> str:
    return f"{label:03d}-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class")


def write_samples(
    snapshot: Snapshot,
    out_dir: Path,
    counts: list[int],
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Write ``counts[c]`` images of every class, ``manifest.csv`` and ``grid.png`` to ``out_dir``.

    The set is built in a temporary sibling folder and renamed into place when complete, so an
    interrupted generation never leaves a folder that looks finished.
    """
    out_dir = Path(out_dir)
    if len(counts) != len(snapshot.class_names):
        raise ConfigError(f"{len(counts)} class counts for {len(snapshot.class_names)} classes")
    parent = ensure_dir(out_dir.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=parent))
    except OSError as err:
        raise OutputError(f"cannot write to {parent}: {err.strerror or err}") from None
    try:
        G = snapshot.generator(device)
        labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
        indices = torch.cat([torch.arange(n, dtype=torch.int64) for n in counts])
        rows = []
        for c, name in enumerate(snapshot.class_names):
            (tmp / "images" / class_dirname(c, name)).mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(labels), unit="img", disable=not progress, desc="generate")
        for start in range(0, len(labels), batch_size):
            y, idx = labels[start : start + batch_size], indices[start : start + batch_size]
            arrays = to_uint8(sample(G, y, idx, seed, batch_size))
            for arr, c, i in zip(arrays, y.tolist(), idx.tolist(), strict=True):
                rel = f"images/{class_dirname(c, snapshot.class_names[c])}/{seed:04d}-{i:06d}.png"
                (tmp / rel).write_bytes(_png_bytes(arr))
                rows.append({"path": rel, "label": c, "class_name": snapshot.class_names[c], "seed": seed, "index": i})
            bar.update(len(y))
        bar.close()
        with open(tmp / MANIFEST, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        save_class_grid(G, tmp / "grid.png", len(snapshot.class_names), seed)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d images to %s", sum(counts), out_dir)
    return out_dir / MANIFEST


def save_class_grid(G: torch.nn.Module, path: Path, num_classes: int, seed: int = 0, per_row: int = 10) -> None:
    """A grid PNG with one row per class (samples 0..per_row-1 of each class)."""
    from torchvision.utils import save_image

    labels = torch.arange(num_classes).repeat_interleave(per_row)
    indices = torch.arange(per_row).repeat(num_classes)
    imgs = sample(G, labels, indices, seed)
    atomic_save(Path(path), lambda tmp: save_image(imgs * 0.5 + 0.5, tmp, nrow=per_row, padding=1, format="png"))


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
