"""Per-class, per-seed reproducible sampling; PNG files, ``manifest.csv`` and a sample grid.

Sample ``i`` of class ``c`` depends only on ``(seed, c, i)``: its latent comes from a
``torch.Generator`` seeded by a hash of that triple (as EDM seeds one generator per image), so
the batch size, the device's batch composition or the order of requests never change an image.

Example:
    >>> counts_to_generate([5, 3, 1], target="balance")
    [0, 2, 4]
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import glob
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from augment.checkpoint import Snapshot
from augment.devices import keep_freed_memory
from augment.errors import ConfigError, OutputError
from augment.io import atomic_save, ensure_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ["path", "label", "class_name", "seed", "index"]
#: Written into every folder generation creates: the only folders it will ever replace.
MARKER = ".gan-augment-generated"
#: What a generated folder holds (folders written before the marker existed are recognised by it).
GENERATED_ENTRIES = frozenset({MANIFEST, "grid.png", "images", MARKER})
#: Staging folders are ``.NAME.partial-XXXXXXXX`` beside the output folder ``NAME``.
PARTIAL_INFIX = ".partial-"
LOCK_SIGNATURE = b"gan-augment generate lock\n"


def check_replaceable(out_dir: Path) -> None:
    """Refuse an output folder that generation did not write itself (it will replace it whole).

    A folder is replaceable when it does not exist yet, or holds the generation marker, or holds a
    manifest and nothing but what generation writes. Anything else (a user's folder, ``.``, a run
    directory with its snapshots, a file, a symlink) is an :class:`OutputError` naming it.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        raise OutputError(f"{out_dir}: is a symlink; give generate a folder of its own (--out)")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is a file, not a folder; give generate a folder of its own (--out)")
    names = {p.name for p in out_dir.iterdir()}
    if not names or MARKER in names or (MANIFEST in names and names <= GENERATED_ENTRIES):
        return
    raise OutputError(
        f"{out_dir.resolve()}: not a folder generate wrote (it holds {len(names)} other entries, e.g. "
        f"{sorted(names)[0]!r}); generation replaces only its own output: give an empty or new folder (--out)"
    )


def lock_path(out_dir: Path) -> Path:
    """The lock file of output folder ``out_dir``: ``.NAME.lock`` beside it (it exists only while a generation runs)."""
    return Path(out_dir).parent / f".{Path(out_dir).name}.lock"


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on :func:`lock_path` while one generation writes ``out_dir``.

    A second generation into the same folder is refused at once (an :class:`OutputError` naming
    the folder) instead of racing the first one's swap. The kernel drops the lock when its
    process dies, SIGKILL included, so a stale lock file never blocks a later run. The file is
    removed on release; a waiter that opened the removed file notices (another inode) and retries.
    """
    path = lock_path(out_dir)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise
            raise OutputError(f"cannot write to {path.parent}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"{out_dir}: another augment generate is writing this folder now (it holds {path}); "
                "wait for it to finish, or give another --out"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
    # Signed, so a file of the user's that happens to bear the name is refused, never removed.
    held = os.read(fd, len(LOCK_SIGNATURE) + 1)
    if held not in (b"", LOCK_SIGNATURE):
        os.close(fd)
        raise OutputError(f"{path}: exists and is not generate's lock file; move it, or give another --out")
    if not held:
        os.write(fd, LOCK_SIGNATURE)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiter then sees another inode
        os.close(fd)


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Remove the staging folders an interrupted generation of ``out_dir`` left behind; returns them.

    Call it only while holding :func:`output_lock` (no live generation owns one then). A folder
    is removed only when it is named ``.NAME.partial-*`` and carries :data:`MARKER` (or is empty:
    killed between its creation and its marker), so nothing else of the user's is ever touched.
    """
    out_dir = Path(out_dir)
    removed = []
    for path in sorted(out_dir.parent.glob(f".{glob.escape(out_dir.name)}{PARTIAL_INFIX}*")):
        if path.is_symlink() or not path.is_dir():
            continue
        if (path / MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)
        elif not any(path.iterdir()):
            path.rmdir()
        else:
            continue
        log.info("removed %s, left by an interrupted generation", path)
        removed.append(path)
    return removed


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


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 ``(N, C, H, W)``: the pixels a user would save as PNG."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float ``(N, C, H, W)`` -> contiguous uint8 ``(N, H, W, C)`` (the PNG layout)."""
    return quantize(images).permute(0, 2, 3, 1).contiguous().numpy()


def _png_bytes(arr: np.ndarray) -> bytes:
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def class_dirname(label: int, name: str) -> str:
    return f"{label:03d}-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class")


@dataclass(frozen=True)
class ShardSpec:
    """One unit of generation work: samples ``start .. stop-1`` of class ``label`` into ``staging``.

    Picklable (plain fields and the snapshot's tensors), so a Dask worker can take it. ``count`` is
    the class's total: the batch an image is computed in is its class's aligned block
    ``[k * batch_size, min((k + 1) * batch_size, count))``, never the shard's own range, so a shard
    writes bit for bit the PNGs an unsharded run writes, whatever the shard boundaries.
    """

    snapshot: Snapshot
    staging: Path
    label: int
    start: int
    stop: int
    count: int
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"

    @property
    def name(self) -> str:
        return f"shard-{self.label:03d}-{self.start:06d}-{self.stop:06d}"


def plan_shards(
    snapshot: Snapshot,
    staging: Path,
    counts: list[int],
    shard_size: int,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> list[ShardSpec]:
    """Contiguous index ranges of ``shard_size`` images (the last of a class may be shorter), class by class.

    Example:
        >>> [(s.label, s.start, s.stop) for s in plan_shards(None, Path("x"), [5, 0, 2], 3)]
        [(0, 0, 3), (0, 3, 5), (2, 0, 2)]
    """
    if shard_size < 1:
        raise ConfigError(f"generate.shard_size must be >= 1, got {shard_size}")
    if batch_size < 1:
        raise ConfigError(f"generate.batch_size must be >= 1, got {batch_size}")
    return [
        ShardSpec(snapshot, Path(staging), c, start, min(start + shard_size, n), n, seed, batch_size, str(device))
        for c, n in enumerate(counts)
        for start in range(0, n, shard_size)
    ]


def _rel_path(label: int, class_name: str, seed: int, index: int) -> str:
    return f"images/{class_dirname(label, class_name)}/{seed:04d}-{index:06d}.png"


def write_shard(spec: ShardSpec) -> list[dict[str, Any]]:
    """Write the shard's PNGs into ``spec.staging``; returns its manifest rows in index order.

    The class folders must exist already (:func:`write_samples` makes them): a worker that does
    not see them is on another filesystem, which is an error, never a silent write elsewhere.
    """
    if torch.device(spec.device).type == "cpu":
        # Each batch's activations (25 MiB at 28 px, batch 256) would otherwise be fresh mmap pages,
        # faulted in again batch after batch, worst in a Dask worker (its nanny pins glibc's mmap
        # threshold at 128 KiB): the forward passes of a 2048-image Fashion-MNIST shard took 2.8 s
        # there and 1.5 s in a plain process, against 0.9 s with this (benchmarks/shard_heap.py).
        keep_freed_memory()
    name = spec.snapshot.class_names[spec.label]
    folder = spec.staging / "images" / class_dirname(spec.label, name)
    if not folder.is_dir():
        raise OutputError(
            f"{folder}: staging folder not found on this worker (generation workers must share the output filesystem)"
        )
    rows = []
    for idx, images in shard_batches(spec, spec.snapshot.generator(spec.device)):
        for arr, i in zip(to_uint8(images), idx.tolist(), strict=True):
            rel = _rel_path(spec.label, name, spec.seed, i)
            (spec.staging / rel).write_bytes(_png_bytes(arr))
            rows.append({"path": rel, "label": spec.label, "class_name": name, "seed": spec.seed, "index": i})
    return rows


def shard_batches(spec: ShardSpec, G: torch.nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The shard's ``(indices, images in [-1, 1])``, batch by batch.

    Each image is computed in its class's aligned batch (see :class:`ShardSpec`): a batch's
    composition changes the last bits of a convolution's output (and, rarely, a PNG pixel), so
    a shard that starts or ends inside a batch computes the whole batch and keeps its part.
    """
    bs = spec.batch_size
    for block in range(spec.start // bs * bs, spec.stop, bs):
        idx = torch.arange(block, min(block + bs, spec.count), dtype=torch.int64)
        images = sample(G, torch.full_like(idx, spec.label), idx, spec.seed, bs)
        keep = (idx >= spec.start) & (idx < spec.stop)
        yield idx[keep], images[keep]


def write_samples(
    snapshot: Snapshot,
    out_dir: Path,
    counts: list[int],
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
    shard_size: int | None = None,
    map_fn: Callable[..., Iterable[list[dict[str, Any]]]] = map,
) -> Path:
    """Write ``counts[c]`` images of every class, ``manifest.csv`` and ``grid.png`` to ``out_dir``.

    The set is built in a temporary sibling folder (``.NAME.partial-*``, marked) and renamed into
    place when complete, so an interrupted generation never leaves a folder that looks finished;
    the next generation into ``out_dir`` removes such leftovers. One generation at a time writes
    ``out_dir`` (:func:`output_lock`); a full disk is an :class:`OutputError` naming it. The
    work is cut into shards of ``shard_size`` images (``None``: one per class) that
    ``map_fn(write_shard, shards)`` runs: the builtin ``map`` in this process, or a parallel map
    (Prefect tasks on Dask: ``flows/generate.py``) whose workers see the staging folder. The
    output is the same bytes for every shard size and map. ``map_fn`` should return only after
    every call has ended (or the cleanup of a failed run may race with running shards).

    Example:
        >>> snap = load_snapshot("runs/00000-digits/network-final.pt")  # doctest: +SKIP
        >>> write_samples(snap, "runs/00000-digits/generated", [0, 6, 3], shard_size=4)  # doctest: +SKIP
        PosixPath('runs/00000-digits/generated/manifest.csv')
    """
    out_dir = Path(out_dir)
    if len(counts) != len(snapshot.class_names):
        raise ConfigError(f"{len(counts)} class counts for {len(snapshot.class_names)} classes")
    check_replaceable(out_dir)  # before any work: never delete a folder that is not generation's own
    # Built and planned before anything is written or shown: a checkpoint of another architecture or
    # a bad shard_size fails with its one error, no progress bar and no folder.
    G = snapshot.generator(device)
    shards = plan_shards(
        snapshot, out_dir, counts, max([*counts, 1]) if shard_size is None else shard_size, seed, batch_size, device
    )
    # Absolute: Dask workers (of another working directory) write into the staging folder.
    parent = ensure_dir(out_dir.parent).absolute()
    try:
        with output_lock(out_dir):
            remove_stale_partials(out_dir)
            _write_staged(snapshot, G, out_dir, parent, counts, shards, seed, progress, map_fn)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OutputError(f"no space left on device: {out_dir}") from None
        raise
    log.info("wrote %d images to %s (%d shards)", sum(counts), out_dir, len(shards))
    return out_dir / MANIFEST


def _write_staged(
    snapshot: Snapshot,
    G: torch.nn.Module,
    out_dir: Path,
    parent: Path,
    counts: list[int],
    shards: list[ShardSpec],
    seed: int,
    progress: bool,
    map_fn: Callable[..., Iterable[list[dict[str, Any]]]],
) -> None:
    """Build the set in a marked staging folder beside ``out_dir``, then swap it in (the caller holds the lock)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{PARTIAL_INFIX}", dir=parent))
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise
        raise OutputError(f"cannot write to {parent}: {err.strerror or err}") from None
    try:
        # Marked first: a staging folder left by SIGKILL is recognised as generation's own and removed.
        (tmp / MARKER).write_text("written by gan-augment's generate; it replaces this folder whole\n")
        shards = [replace(s, staging=tmp) for s in shards]
        for c, name in enumerate(snapshot.class_names):
            (tmp / "images" / class_dirname(c, name)).mkdir(parents=True, exist_ok=True)
        rows = []
        bar = tqdm(total=sum(counts), unit="img", disable=not progress, desc="generate")
        for shard_rows in map_fn(write_shard, shards):
            rows.extend(shard_rows)
            bar.update(len(shard_rows))
        bar.close()
        # Shards may finish in any order: the manifest is sorted by (class, index), as one pass writes it.
        rows.sort(key=lambda r: (r["label"], r["index"]))
        expected = ((c, i) for c, n in enumerate(counts) for i in range(n))
        if len(rows) != sum(counts) or any((r["label"], r["index"]) != e for r, e in zip(rows, expected, strict=True)):
            raise RuntimeError(f"the shards returned {len(rows)} manifest rows for {sum(counts)} images, not each once")
        with open(tmp / MANIFEST, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        save_class_grid(G, tmp / "grid.png", len(snapshot.class_names), seed)
        check_replaceable(out_dir)  # again: the folder may have changed while the shards ran
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


#: A grid PNG is at least this wide: one 28 px image per column would otherwise be too small to see.
GRID_MIN_WIDTH_PX = 400


def save_class_grid(G: torch.nn.Module, path: Path, num_classes: int, seed: int = 0, per_row: int = 10) -> None:
    """A grid PNG with one row per class (samples 0..per_row-1 of each class).

    The grid is enlarged by a whole factor, each pixel repeated (nearest neighbour, no smoothing),
    until it is at least :data:`GRID_MIN_WIDTH_PX` wide; the generated sample PNGs keep their size.
    """
    from torchvision.utils import make_grid, save_image

    labels = torch.arange(num_classes).repeat_interleave(per_row)
    indices = torch.arange(per_row).repeat(num_classes)
    imgs = sample(G, labels, indices, seed)
    grid = make_grid(imgs * 0.5 + 0.5, nrow=per_row, padding=1)
    factor = max(1, -(-GRID_MIN_WIDTH_PX // grid.shape[-1]))
    grid = grid.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    atomic_save(Path(path), lambda tmp: save_image(grid, tmp, format="png"))
