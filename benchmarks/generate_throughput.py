"""Generation throughput: seeded latents vs the generator's forward, and PNG writing.

Measures, in one process on this machine:

1. ``augment.generate.sample`` (images/s) at several batch sizes, split into its two parts:
   (a) ``augment.generate.latents``: one seeded ``torch.Generator`` per sample, on the CPU (what
   makes sample ``i`` of class ``c`` depend only on ``(seed, c, i)``), and (b) the network forward on
   the device, inputs already there; the rest of ``sample()`` is host<->device copies. The table
   says which part dominates.
2. ``augment.generate.write_samples`` (images/s) into a temporary folder: sampling, PNG encoding,
   one file per image, ``manifest.csv``, the grid and the atomic rename; beside it the raw PIL PNG
   encode rate (in memory) and encode + one ``write_bytes`` per image, for comparison.

Times are medians of ``--repeats`` runs after one warm-up run; CUDA is timed with
``torch.cuda.synchronize()`` on both sides. The generator is the snapshot of ``--run RUN_DIR``
(``find_snapshot``: best, else final, else latest) or, by default, an untrained one with the
architecture of ``--config`` (speed does not depend on the weights). Imports only ``augment``
modules that need neither Prefect nor MLflow (``import augment`` loads the albumentations adapter
only on first use), so it runs on a box with only torch, torchvision, pydantic, PyYAML, tqdm, numpy and Pillow. Run it
alone on the machine (``flock /tmp/bench.lock ...``):

    .venv/bin/python benchmarks/generate_throughput.py --config configs/digits.yaml --device cpu
    .venv/bin/python benchmarks/generate_throughput.py --config configs/fashion_mnist.yaml --device cpu
    python benchmarks/generate_throughput.py --config configs/fashion_mnist.yaml --device cuda \
        --batch-sizes 64 256 1024 4096
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from augment.checkpoint import Snapshot, find_snapshot, load_snapshot  # noqa: E402
from augment.config import config_from_dict, load_config  # noqa: E402
from augment.generate import counts_to_generate, latents, sample, to_uint8, write_samples  # noqa: E402
from augment.models import ConditionalGenerator  # noqa: E402
from benchmarks.common import publish  # noqa: E402


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    return torch.device(name)


def untrained_snapshot(cfg) -> tuple[Snapshot, str]:
    """A snapshot with random weights and the architecture ``cfg`` trains (class names from its data)."""
    try:
        from augment.data import load_data

        data = load_data(cfg.data, cfg.seed)
        names, counts = list(data.class_names), data.train.counts(data.num_classes)
        where = f"{len(names)} classes from the config's data"
    except ImportError as err:  # e.g. scikit-learn missing for the digits source: the class count is all we need
        names = list(cfg.data.classes or [str(c) for c in range(10)])
        counts = [0] * len(names)
        where = f"{len(names)} classes assumed (data not loaded: {err})"
    kwargs = dict(
        num_classes=len(names),
        image_size=cfg.data.image_size,
        channels=cfg.data.channels,
        z_dim=cfg.model.z_dim,
        width=cfg.model.g_channels,
        max_mult=cfg.model.max_mult,
    )
    torch.manual_seed(cfg.seed)
    G = ConditionalGenerator(**kwargs)
    snap = Snapshot(
        generator_state=G.state_dict(),
        generator_kwargs=kwargs,
        class_names=names,
        class_counts=counts,
        config=cfg.to_dict(),
        kimg=0.0,
        data_fingerprint="untrained",
    )
    return snap, where


def timed(fn: Callable[[], object], repeats: int, cuda: bool, setup: Callable[[], None] | None = None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run (CUDA synchronised)."""
    times = []
    for r in range(repeats + 1):
        if setup is not None:
            setup()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if r > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def png_bytes(arr) -> bytes:
    """PIL's PNG encoding of one ``(H, W, C)`` uint8 image, as ``write_samples`` does it."""
    from PIL import Image

    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def fmt_rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/digits.yaml", help="architecture of the untrained generator")
    ap.add_argument("--set", action="append", default=[], help="config overrides (model.g_channels=..., ...)")
    ap.add_argument("--run", type=Path, default=None, help="measure this run directory's snapshot instead")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (after one warm-up)")
    ap.add_argument("--png-images", type=int, default=2000, help="images per write_samples run")
    ap.add_argument("--png-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    ap.add_argument("--no-results", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if args.run is not None:
        snap_path = find_snapshot(args.run)
        snap = load_snapshot(snap_path)
        cfg = config_from_dict(snap.config, source=str(snap_path))
        what = f"snapshot `{snap_path}` ({snap.kimg:g} kimg)"
        label = cfg.name
    else:
        cfg = load_config(args.config, args.set)
        snap, where = untrained_snapshot(cfg)
        sets = "".join(f" --set {s}" for s in args.set)
        what = f"untrained generator with the architecture of `{args.config}`{sets} ({where})"
        label = cfg.name
    G = snap.generator(device)
    kw = snap.generator_kwargs
    k, z_dim, seed = len(snap.class_names), G.z_dim, cfg.generate.seed
    params = sum(p.numel() for p in G.parameters())
    load_start = os.getloadavg()[0]

    # 1. sample() = latents (CPU, one generator per sample) + forward (device) + copies.
    rows = []
    for b in args.batch_sizes:
        labels = torch.arange(b, dtype=torch.int64) % k
        indices = torch.arange(b, dtype=torch.int64)
        t_lat = timed(lambda labels=labels, indices=indices: latents(seed, labels, indices, z_dim), args.repeats, cuda)
        z, y = latents(seed, labels, indices, z_dim).to(device), labels.to(device)

        def forward(z=z, y=y):
            with torch.no_grad():
                return G(z, y)

        t_fwd = timed(forward, args.repeats, cuda)
        t_all = timed(
            lambda labels=labels, indices=indices, b=b: sample(G, labels, indices, seed, b), args.repeats, cuda
        )
        rows.append((b, t_lat, t_fwd, t_all))

    # 2. write_samples: PNGs, manifest, grid, atomic rename; raw PIL encoding for comparison.
    n = args.png_images
    counts = counts_to_generate([0] * k, "total", total=n)
    png_batch = cfg.generate.batch_size
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        tmp = Path(tmp)
        runs = iter(range(10**6))
        state = {}

        def fresh_dir():
            state["out"] = tmp / f"gen{next(runs)}"

        def write():
            write_samples(snap, state["out"], counts, seed=seed, batch_size=png_batch, device=device, progress=False)

        t_write = timed(write, args.png_repeats, cuda, setup=fresh_dir)
        files = sum(1 for _ in (state["out"] / "images").rglob("*.png"))
        png_size = sum(p.stat().st_size for p in (state["out"] / "images").rglob("*.png")) / max(files, 1)
        labels = torch.cat([torch.full((c,), i, dtype=torch.int64) for i, c in enumerate(counts)])
        indices = torch.cat([torch.arange(c, dtype=torch.int64) for c in counts])
        t_sample = timed(lambda: sample(G, labels, indices, seed, png_batch), args.png_repeats, cuda)
        arrays = to_uint8(sample(G, labels, indices, seed, png_batch))
        t_encode = timed(lambda: [png_bytes(a) for a in arrays], args.png_repeats, False)

        def fresh_raw_dir():  # new files each run, as write_samples writes them (overwriting costs more)
            state["raw"] = tmp / f"raw{next(runs)}"
            state["raw"].mkdir()

        def encode_and_write():
            for i, a in enumerate(arrays):
                (state["raw"] / f"{i:06d}.png").write_bytes(png_bytes(a))

        t_enc_write = timed(encode_and_write, args.png_repeats, False, setup=fresh_raw_dir)
    load_end = os.getloadavg()[0]

    gpu = f" ({torch.cuda.get_device_name(device)})" if cuda else ""
    lines = [
        f"{what}: {kw['image_size']}x{kw['image_size']}x{kw['channels']}, {k} classes, z_dim {z_dim}, "
        f"width {kw['width']}, {params / 1e6:.2f}M parameters; device {device}{gpu}, {torch.get_num_threads()} "
        f"torch threads; median of {args.repeats} runs after a warm-up (PNG rows: {args.png_repeats}). "
        f"1-minute load average at start / end: {load_start:.1f} / {load_end:.1f} "
        f"({len(os.sched_getaffinity(0))} cores: above that, other jobs shared the CPU).",
        "",
        "| batch | (a) latents, CPU: ms / images/s | (b) forward on the device: ms / images/s | "
        "`sample()` (a + b + copies): ms / images/s | latents' share of `sample()` |",
        "|---:|---:|---:|---:|---:|",
    ]
    for b, t_lat, t_fwd, t_all in rows:
        lines.append(
            f"| {b} | {t_lat * 1e3:.2f} / {fmt_rate(b, t_lat)} | {t_fwd * 1e3:.2f} / {fmt_rate(b, t_fwd)} | "
            f"{t_all * 1e3:.2f} / {fmt_rate(b, t_all)} | {t_lat / t_all:.0%} |"
        )
    lines += [
        "",
        f"Writing {n} images ({png_batch} per batch, `generate.batch_size`; {png_size:.0f} bytes per PNG on average):",
        "",
        "| what | seconds | images/s |",
        "|---|---:|---:|",
        f"| `write_samples` (sample + PNG + one file each + manifest + grid + rename) | {t_write:.3f} | "
        f"{fmt_rate(n, t_write)} |",
        f"| of which `sample()` of the same images | {t_sample:.3f} | {fmt_rate(n, t_sample)} |",
        f"| PIL PNG encode only, in memory | {t_encode:.3f} | {fmt_rate(n, t_encode)} |",
        f"| PIL PNG encode + `write_bytes` to one file each | {t_enc_write:.3f} | {fmt_rate(n, t_enc_write)} |",
    ]
    publish(f"generate_throughput: {label}, {device.type}", lines, dry_run=args.no_results)


if __name__ == "__main__":
    main()
