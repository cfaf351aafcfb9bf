"""How often the interval over GAN trainings covers the true delta: simulated trainings x classifier seeds.

``augment spread`` / ``augment run --trainings`` pool evaluated runs whose deltas are paired by
classifier seed against one shared baseline. This simulates such deltas as crossed random effects,
``d[t, s] = training_t + seed_s + cell_ts`` (true mean 0), and counts how often each interval holds 0:

* ``crossed``: :func:`augment.metrics.verdict.crossed_ci` (trainings and seeds crossed, Satterthwaite df),
  what the verdict over trainings uses;
* ``per-training means``: the t-interval of the T per-training means (what ``spread`` used before
  2026-12-05): blind to the seed noise every training shares through the baseline.

::

    .venv/bin/python benchmarks/interval_coverage.py --reps 4000

Prints a markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from augment.metrics.verdict import crossed_ci, mean_ci  # noqa: E402

#: (sd of the training effect, sd of the seed effect, sd of the cell noise), in points.
SETTINGS = ((1.0, 1.0, 0.5), (1.0, 0.1, 0.5), (0.2, 1.0, 0.3), (1.0, 0.0, 0.2), (0.5, 0.3, 0.4))


def coverage(t: int, s: int, sds: tuple[float, float, float], reps: int, seed: int = 0) -> tuple[float, float, float]:
    """(crossed coverage, per-training-means coverage, mean crossed width / mean per-training width)."""
    rng = np.random.default_rng(seed)
    covered = naive = 0
    widths = []
    for _ in range(reps):
        d = rng.normal(0, sds[0], (t, 1)) + rng.normal(0, sds[1], (1, s)) + rng.normal(0, sds[2], (t, s))
        ci, own = crossed_ci(d.tolist()), mean_ci(d.mean(axis=1).tolist())
        covered += ci["ci_low"] <= 0 <= ci["ci_high"]
        naive += own["ci_low"] <= 0 <= own["ci_high"]
        widths.append((ci["ci_high"] - ci["ci_low"]) / (own["ci_high"] - own["ci_low"]))
    return covered / reps, naive / reps, float(np.median(widths))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--trainings", type=int, nargs="+", default=[3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    args = ap.parse_args(argv)
    print(
        "| trainings x seeds | sd training / seed / cell | crossed: coverage | per-training means: coverage "
        "| median width, crossed / per-training |"
    )
    print("|---|---|---|---|---|")
    for t in args.trainings:
        for s in args.seeds:
            for sds in SETTINGS:
                cov, naive, ratio = coverage(t, s, sds, args.reps)
                print(f"| {t} x {s} | {sds[0]} / {sds[1]} / {sds[2]} | {cov:.3f} | {naive:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
