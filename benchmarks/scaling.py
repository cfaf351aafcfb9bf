"""How cost grows: training seconds per kimg and evaluation time against images per class, image
size and number of classes. Writes a log-log plot and the fitted exponents (slope of log cost
against log size) to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/scaling.py            # about 15 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from augment.config import load_config  # noqa: E402
from augment.data import ImageSet, PreparedData, load_data  # noqa: E402
from augment.data.sources import FASHION_CLASSES  # noqa: E402
from augment.metrics.evaluate import best_snapshot_metric  # noqa: E402
from augment.train import NetworkOptions, ScheduleOptions, set_threads, train, training_loop  # noqa: E402
from benchmarks.common import append_results  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def seconds_per_kimg(data: PreparedData, kimg: float, width: int = 32) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        training_loop(
            run_dir=Path(tmp),
            data=data,
            config={},
            networks=NetworkOptions(g_channels=width, d_channels=width),
            schedule=ScheduleOptions(total_kimg=kimg, snapshot_kimg=kimg * 10),
            progress=False,
        )
        ticks = [json.loads(line) for line in (Path(tmp) / "stats.jsonl").read_text().splitlines()]
    rates = sorted(t["images_per_s"] for t in (ticks[1:] or ticks))
    return 1000.0 / rates[len(rates) // 2]


def random_data(num_classes: int, per_class: int, size: int, channels: int) -> PreparedData:
    g = torch.Generator().manual_seed(0)
    n = num_classes * per_class
    imgs = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    part = ImageSet(imgs, labels, [str(i) for i in range(n)])
    empty = ImageSet(imgs[:0], labels[:0], [])
    return PreparedData([str(c) for c in range(num_classes)], part, empty, empty, f"random-{size}")


def evaluate_seconds(overrides: list[str]) -> float:
    """Wall time of `augment evaluate` on a briefly trained run (the cost of evaluation, not GAN quality)."""
    from augment.metrics.evaluate import evaluate_run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            "configs/fashion_mnist.yaml",
            [
                *overrides,
                "train.kimg=0.256",
                f"output.root={tmp}",
                "evaluate.seeds=1",
                "evaluate.regimes=[real,real+gan]",
                "evaluate.classic=[crop]",
            ],
        )
        run_dir, _ = train(cfg, progress=False, metric_factory=best_snapshot_metric)
        start = time.perf_counter()
        evaluate_run(run_dir, progress=False)
        return time.perf_counter() - start


def fit(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kimg", type=float, default=1.0)
    ap.add_argument("--per-class", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--classes", type=int, nargs="+", default=[2, 5, 10])
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    set_threads(None)
    rows: dict[str, list[tuple[int, float, float | None]]] = {"images per class": [], "image size": [], "classes": []}
    base = ["data.split.test_per_class=200", "data.split.val=0.1"]
    for n in args.per_class:
        data = load_data(load_config("configs/fashion_mnist.yaml", [f"data.per_class={n}", *base]).data, 0)
        ev = None if args.skip_eval else evaluate_seconds([f"data.per_class={n}", *base])
        rows["images per class"].append((n, seconds_per_kimg(data, args.kimg), ev))
        print(rows["images per class"][-1], flush=True)
    for size in args.sizes:
        rows["image size"].append((size, seconds_per_kimg(random_data(10, 100, size, 3), args.kimg), None))
        print(rows["image size"][-1], flush=True)
    for k in args.classes:
        sets = ["data.per_class=100", f"data.classes={json.dumps(FASHION_CLASSES[:k])}", *base]
        data = load_data(load_config("configs/fashion_mnist.yaml", sets).data, 0)
        ev = None if args.skip_eval else evaluate_seconds(sets)
        rows["classes"].append((k, seconds_per_kimg(data, args.kimg), ev))
        print(rows["classes"][-1], flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    lines = ["| axis | values | train s/kimg | exponent | evaluate s | exponent |", "|---|---|---|---|---|---|"]
    for ax, (axis, pts) in zip(axes, rows.items(), strict=True):
        xs = [p[0] for p in pts]
        tr = [p[1] for p in pts]
        ev = [p[2] for p in pts if p[2] is not None]
        ax.loglog(xs, tr, "o-", label=f"train s/kimg (slope {fit(xs, tr):.2f})")
        ev_txt = ev_exp = "-"
        if len(ev) == len(xs):
            ax.loglog(xs, ev, "s--", label=f"evaluate s (slope {fit(xs, ev):.2f})")
            ev_txt, ev_exp = ", ".join(f"{v:.1f}" for v in ev), f"{fit(xs, ev):.2f}"
        ax.set_xlabel(axis)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        lines.append(
            f"| {axis} | {', '.join(map(str, xs))} | {', '.join(f'{v:.2f}' for v in tr)} | "
            f"{fit(xs, tr):.2f} | {ev_txt} | {ev_exp} |"
        )
    fig.suptitle("gan-augment cost scaling (log-log)")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    png = Path(__file__).resolve().parent / "scaling.png"
    fig.savefig(png, dpi=110)
    table = "\n".join(lines) + (
        f"\n\nExponent: slope of log cost against log size (least squares). Plot: `benchmarks/{png.name}`. "
        f"Widths 32/32, batch 64, {args.kimg} kimg per training point; image-size rows use random 3-channel data "
        "(10 classes x 100); evaluation: 1 seed, regimes real and real+gan, classic crop only."
    )
    print(table)
    append_results("scaling", table)


if __name__ == "__main__":
    main()
