"""Time to quality: ``fd_domain`` of the EMA generator against kimg and wall time, with its floor.

Trains a config under a wall-clock budget (``train.max_minutes``), evaluating ``fd_domain`` every
``--eval-kimg`` (the training loop's best-snapshot metric: the run's domain CNN, reference = real
train+val). Training seconds exclude the evaluations themselves. The floor is the same distance
between the reference and as many held-out real test images per class (same extractor, same
counts): a generator cannot be told apart from real data below it.

Prints a table and the headline numbers (best value and when it was reached; first time within
``--within`` of the best; value after 1 minute), writes a plot to ``docs/`` and appends to
``benchmarks/RESULTS.md``::

    .venv/bin/python benchmarks/time_to_quality.py --config configs/fashion_mnist.yaml --minutes 20 --eval-kimg 4
    python benchmarks/time_to_quality.py --config configs/fashion_mnist.yaml --label longtail \\
        --set data.per_class=null --set "data.imbalance={ratio: 0.1, max_per_class: 100}" \\
        --minutes 3 --eval-kimg 150    # on a GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from augment.config import load_config  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.devices import resolve_device  # noqa: E402
from augment.metrics.evaluate import (
    best_snapshot_metric,  # noqa: E402
    per_class_subset,  # noqa: E402
)
from augment.metrics.extractor import load_or_train_extractor  # noqa: E402
from augment.metrics.frechet import frechet_distance  # noqa: E402
from augment.train import loop_kwargs, train  # noqa: E402
from augment.train_options import flat_options  # noqa: E402
from benchmarks.common import append_results  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"


def floor_value(data, cfg, cache_dir: Path, device) -> float:
    """fd_domain between the reference (train+val) and held-out test images, at the metric's counts."""
    ev = cfg.evaluate
    ext = load_or_train_extractor(data, ev, cache_dir=cache_dir, seed=cfg.seed, device=device)  # the cached one
    ref_labels = torch.cat([data.train.labels, data.val.labels])
    ref = ext.features(torch.cat([data.train.images, data.val.images]))
    counts = [min(ev.samples_per_class, n) for n in torch.bincount(ref_labels, minlength=data.num_classes).tolist()]
    test_counts = data.test.counts(data.num_classes)
    if any(t < c for t, c in zip(test_counts, counts, strict=True)):
        raise SystemExit(f"the test split has {test_counts} images per class, the metric uses {counts}")
    idx = per_class_subset(data.test.labels, counts, cfg.seed + 7)
    return frechet_distance(ref, ext.features(data.test.images[idx]))


def plot(rows: list[dict], floor: float, best: float, within: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, key, label in (
        (axes[0], "kimg", "kimg (real images shown, thousands)"),
        (axes[1], "train_s", "training wall time, s (evaluations excluded)"),
    ):
        ax.plot([r[key] for r in rows], [r["fd_domain"] for r in rows], "o-", ms=3, label="fd_domain (EMA G)")
        ax.axhline(floor, color="grey", ls="--", label=f"real-vs-real floor {floor:.2f}")
        ax.axhline(best * within, color="tab:green", ls=":", label=f"{within}x best ({best:.2f})")
        ax.set_xlabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fd_domain (lower is better)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/fashion_mnist.yaml")
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    ap.add_argument("--label", default=None, help="name of the profile in the table and plot file")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget (train.max_minutes)")
    ap.add_argument("--eval-kimg", type=float, default=4.0, help="fd_domain every this many kimg")
    ap.add_argument("--within", type=float, default=1.2, help="report the first time within this factor of best")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default: a temporary one)")
    ap.add_argument("--no-results", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    sets = [
        *args.set,
        "train.kimg=1000000",
        f"train.max_minutes={args.minutes}",
        f"train.eval_kimg={args.eval_kimg}",
        f"train.snapshot_kimg={args.eval_kimg * 1000}",
        "tracking.enabled=false",
    ]
    cfg = load_config(args.config, sets)
    device = resolve_device(cfg.train.device)
    label = args.label or cfg.name
    data = load_data(cfg.data, cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.out or Path(tmp) / "run"
        train(cfg, out=run_dir, progress=False, data=data, metric_factory=best_snapshot_metric)
        rows = [json.loads(line) for line in (run_dir / "metrics-train.jsonl").read_text().splitlines()]
        floor = floor_value(data, cfg, cfg.evaluate.cache_dir or run_dir / "cache", device)
    best_row = min(rows, key=lambda r: r["fd_domain"])
    best = best_row["fd_domain"]
    first_within = next(r for r in rows if r["fd_domain"] <= args.within * best)
    # The value after 1 minute only where training ran past it (a shorter run has no such value).
    at_minute = [r for r in rows if r["train_s"] <= 60] if rows[-1]["train_s"] >= 60 else []
    kw = flat_options(loop_kwargs(cfg, device))
    mode = f" ({kw['compile_mode']})" if kw["compile_mode"] != "default" else ""
    settings = (
        f"batch {kw['batch_size']}, {kw['precision']}, channels_last {kw['channels_last']}, compile "
        f"{kw['compile']}{mode}, R1 every {kw['r1_interval']}, lr G/D {kw['lr_g']}/{kw['lr_d']}"
    )
    lines = [
        f"config `{args.config}` {' '.join(args.set)} ({label}); {device.type}; {settings}; "
        f"train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}; budget {args.minutes} min, "
        f"fd_domain every {args.eval_kimg} kimg",
        "",
        f"- best fd_domain **{best:.2f}** at {best_row['kimg']:.0f} kimg, {best_row['train_s']:.0f} s of training "
        f"(real-vs-real floor {floor:.2f}); {len(rows)} evaluations, {rows[-1]['kimg']:.0f} kimg in all",
        f"- first within {args.within}x of the best: {first_within['fd_domain']:.2f} at {first_within['kimg']:.0f} "
        f"kimg, **{first_within['train_s']:.0f} s** of training ({first_within['elapsed_s']:.0f} s wall with "
        "evaluations)",
    ]
    if at_minute:
        m = at_minute[-1]
        lines.append(
            f"- after 1 minute of training ({m['train_s']:.0f} s, {m['kimg']:.0f} kimg): {m['fd_domain']:.2f} "
            f"= **{m['fd_domain'] / best:.2f}x** the best"
        )
    lines += ["", "| kimg | training s | wall s | fd_domain | / best |", "|---|---|---|---|---|"]
    step = max(1, len(rows) // 20)
    shown = sorted({*range(0, len(rows), step), len(rows) - 1, rows.index(best_row), rows.index(first_within)})
    for i in shown:
        r = rows[i]
        lines.append(
            f"| {r['kimg']:.0f} | {r['train_s']:.0f} | {r['elapsed_s']:.0f} | {r['fd_domain']:.2f} | "
            f"{r['fd_domain'] / best:.2f} |"
        )
    png = DOCS / f"time_to_quality_{label}_{device.type}.png"
    plot(rows, floor, best, args.within, f"{label} on {device.type}: {settings}", png)
    lines += ["", f"curve: `docs/{png.name}`"]
    table = "\n".join(lines)
    print(table)
    (Path(__file__).resolve().parent / "results").mkdir(exist_ok=True)
    (Path(__file__).resolve().parent / "results" / f"time_to_quality_{label}_{device.type}.json").write_text(
        json.dumps({"settings": settings, "floor": floor, "rows": rows}, indent=1)
    )
    if not args.no_results:
        append_results(f"time_to_quality: {label} on {device.type}", table)


if __name__ == "__main__":
    main()
