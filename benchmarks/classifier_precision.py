"""The downstream classifiers' precision: seconds per cell and accuracy on a dev split.

Every verdict trains a grid of small classifiers; on a 2-core CPU they are most of an ``augment run``'s
wall time. ``evaluate.precision: bf16`` (autocast of the training steps' convolutions and matmuls;
weights, optimizer, loss and predictions fp32) is a speed switch; this benchmark measures what it
saves in seconds and what it does to the numbers the verdict compares.

For one finished run (``RUN_DIR``), each arm (``--arms``: ``fp32``, the precision before the switch;
``bf16``) trains ``--seeds`` classifiers of each ``--regimes`` regime with the run's evaluate settings
and one fixed classic policy (``--classic``, no selection on val, so the arms differ in the switch
only) and scores them on a **dev split** of real images the data limit left out
(``sample_use.dev_split``; disjoint from train, val and test; the test split is not read).
Cells run one by one on ``--workers`` single-threaded processes, as ``augment evaluate`` runs them on
a CPU with ``workers: auto``; arms run one after another.

Reported per arm: seconds per cell (mean over its cells), balanced accuracy on dev per regime, the
GAN regime minus the baseline paired by seed, and each regime's difference from the ``fp32`` arm,
paired by seed (the same initial weights and batches: what differs is rounding, and what rounding
does to a trajectory)::

    .venv/bin/python benchmarks/classifier_precision.py runs/00001-fashion_mnist --json /tmp/prec.json

Prints a markdown table; nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment import rundir  # noqa: E402
from augment.checkpoint import find_snapshot, load_snapshot  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.metrics import downstream  # noqa: E402
from augment.metrics.evaluate import generate_uint8  # noqa: E402
from augment.metrics.regimes import BASELINE  # noqa: E402
from augment.metrics.verdict import mean_ci  # noqa: E402
from benchmarks.common import command, git_commit, machine, run_cli  # noqa: E402
from benchmarks.limited_data import make_executor  # noqa: E402
from benchmarks.sample_use import cells, dev_split, paired  # noqa: E402

#: Arm name -> evaluate.precision.
ARMS = {"fp32": "fp32", "bf16": "bf16"}
#: The arm the others are paired with: the precision before the switch existed.
REFERENCE = "fp32"


def run(args: argparse.Namespace) -> dict[str, Any]:
    sets = [f"evaluate.seeds={args.seeds}", "evaluate.tune=false", "evaluate.threads=1"]  # lone cells: one thread each
    if args.steps is not None:
        sets.append(f"evaluate.steps={args.steps}")
    cfg = rundir.run_config(args.run_dir, sets)
    data = load_data(cfg.data, cfg.seed)
    dev = dev_split(cfg, data, args.dev_per_class)
    snap_path = find_snapshot(args.run_dir)
    snap = load_snapshot(snap_path)
    rundir.check_data_matches(snap_path, snap.class_names, snap.data_fingerprint, data)
    ev = cfg.evaluate
    pool, labels = generate_uint8(snap.generator("cpu"), [ev.synthetic_per_class] * data.num_classes, cfg.generate.seed)
    executor = make_executor(args.workers)
    map_fn = map if executor is None else (lambda fn, items: executor.map(fn, items))
    arms: dict[str, dict[str, Any]] = {}
    try:
        for arm in args.arms:
            arm_ev = ev.model_copy(
                update={
                    "precision": ARMS[arm],
                    "classic": [args.classic],
                    "classic_sampling": ["natural"],
                }
            )
            plan = downstream.prepare(data, pool, labels, arm_ev, seed=cfg.seed, map_fn=map_fn)
            on_dev = dataclasses.replace(plan, test_images=dev.images, test_labels=dev.labels)
            t0 = time.time()
            got = {regime: cells(on_dev, regime, map_fn) for regime in args.regimes}
            arms[arm] = {
                "precision": plan.precision,
                "wall_s": time.time() - t0,
                "cells": got,
            }
            print(
                f"{arm}: {np.mean([c['seconds'] for v in got.values() for c in v]):.0f} s per cell, "
                + ", ".join(f"{r} {100 * np.mean([c['balanced_accuracy'] for c in v]):.2f}" for r, v in got.items()),
                flush=True,
            )
    finally:
        if executor is not None:
            executor.shutdown()
    gan = [r for r in args.regimes if r != BASELINE]
    rows = {}
    for arm, a in arms.items():
        got = a["cells"]
        rows[arm] = {
            "precision": a["precision"],
            "seconds_per_cell": float(np.mean([c["seconds"] for v in got.values() for c in v])),
            "wall_s": a["wall_s"],
            "dev_accuracy": {r: mean_ci([100 * c["balanced_accuracy"] for c in v]) for r, v in got.items()},
            "gan_minus_baseline": {r: paired(got[r], got[BASELINE]) for r in gan if BASELINE in got},
            "minus_reference": (
                {r: paired(v, arms[REFERENCE]["cells"][r]) for r, v in got.items()}
                if REFERENCE in arms and arm != REFERENCE
                else {}
            ),
        }
    return {
        "benchmark": "classifier_precision",
        "run_dir": str(args.run_dir),
        "snapshot": {"path": str(snap_path), "kimg": snap.kimg},
        "sizes": {"train": len(data.train), "dev": len(dev), "pool_per_class": ev.synthetic_per_class},
        "classifier": {"name": ev.classifier, "steps": ev.steps, "batch_size": ev.batch_size, "classic": args.classic},
        "seeds": list(range(cfg.seed, cfg.seed + args.seeds)),
        "workers": args.workers,
        "arms": rows,
        "machine": machine(),
        "commit": git_commit(),
        "command": command(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _ci(d: dict[str, Any], signed: bool = True) -> str:
    f = "{:+.2f}" if signed else "{:.2f}"
    return f"{f.format(d['mean'])} [{f.format(d['ci_low'])}, {f.format(d['ci_high'])}]"


def render(res: dict[str, Any]) -> str:
    c = res["classifier"]
    arms = res["arms"]
    regimes = list(next(iter(arms.values()))["dev_accuracy"])
    lines = [
        f"{c['name']} {c['steps']} steps x {c['batch_size']}, classic `{c['classic']}`, seeds {res['seeds']}, "
        f"{res['workers']} single-threaded workers; balanced accuracy on {res['sizes']['dev']} dev images (%), "
        f"95% t-intervals; differences paired by seed, in points.",
        "",
        "| arm | s per cell | "
        + " | ".join(f"{r} on dev" for r in regimes)
        + " | "
        + " | ".join(f"{r} minus {BASELINE}" for r in regimes if r != BASELINE)
        + " | "
        + " | ".join(f"{r} minus `{REFERENCE}`" for r in regimes)
        + " |",
        "|---|---|" + "---|" * (2 * len(regimes) + len(regimes) - 1),
    ]
    ref_s = arms[REFERENCE]["seconds_per_cell"] if REFERENCE in arms else None
    for arm, row in arms.items():
        speed = f"{row['seconds_per_cell']:.0f}"
        if ref_s and arm != REFERENCE:
            speed += f" ({ref_s / row['seconds_per_cell']:.2f}x)"
        cols = [_ci(row["dev_accuracy"][r], signed=False) for r in regimes]
        cols += [_ci(row["gan_minus_baseline"][r]) for r in regimes if r != BASELINE]
        cols += [_ci(row["minus_reference"][r]) if row["minus_reference"] else "" for r in regimes]
        lines.append(f"| `{arm}` | {speed} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--regimes", nargs="+", default=[BASELINE, "real+gan+classic"])
    ap.add_argument("--classic", default="crop", help="the classic policy of every arm (default crop)")
    ap.add_argument("--dev-per-class", type=int, default=500, help="dev images per class (default 500)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="classifier steps (default: the run's evaluate.steps)")
    ap.add_argument("--workers", type=int, default=2, help="single-threaded cell processes (default 2)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if BASELINE not in args.regimes:
        ap.error(f"--regimes must include the baseline {BASELINE}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli(run, render, parse_args(argv))


if __name__ == "__main__":
    main()
