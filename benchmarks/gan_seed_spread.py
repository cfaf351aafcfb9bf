"""How far one recipe's downstream deltas move with the GAN training's own randomness.

Each input is a limited_data JSON (its first row, or ``FILE:NAME``) or an ``eval/metrics.json`` of the same
profile and data draw, trained with another ``train.seed``. Per run and regime with synthetic images it
takes the paired mean over the classifier seeds of (regime minus real+classic, the val-chosen classic
baseline); then the mean over runs, its 95% t-interval over runs and the runs' standard deviation.
A limited_data table's interval holds the classifier seeds' noise of one GAN training; this one holds
the training's as well. Runs whose GAN-free cells differ (another data draw or classifier budget) are
refused::

    .venv/bin/python benchmarks/gan_seed_spread.py benchmarks/results/limited_data_longtail_ensemble3_640kimg.json \\
        benchmarks/results/limited_data_longtail_train_seed1_640kimg.json

Prints a markdown table; nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment.metrics.regimes import REGIMES  # noqa: E402
from augment.metrics.verdict import mean_ci  # noqa: E402
from benchmarks.paired_delta import regimes  # noqa: E402

BASELINE = "real+classic"
GAN_FREE = ("real", BASELINE)


def spread(specs: list[str]) -> list[dict[str, Any]]:
    """One row per regime with synthetic images that every run has: per-run deltas, their mean and interval."""
    if len(specs) < 2:
        raise SystemExit("error: give at least two runs (one recipe, one data draw, other train.seed)")
    runs = {spec: regimes(spec) for spec in specs}
    first = specs[0]
    for spec, run in runs.items():
        for regime in GAN_FREE:
            if run.get(regime) != runs[first].get(regime):
                raise SystemExit(
                    f"error: {spec}: its {regime} cells differ from {first}'s: not the same data draw and classifier"
                )
    rows = []
    for regime in [r for r in REGIMES if r not in GAN_FREE and all(r in run for run in runs.values())]:
        per_run = []
        for run in runs.values():
            base = run[BASELINE]
            per_run.append(statistics.fmean(run[regime][s] - base[s] for s in run[regime]))
        rows.append(
            {"regime": regime, "per_run": per_run, "over_runs": mean_ci(per_run), "sd": statistics.stdev(per_run)}
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"| regime | minus {BASELINE}, per run (pts) | mean over runs (95% CI over runs) | sd over runs | runs |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["over_runs"]
        per = ", ".join(f"{100 * v:+.1f}" for v in r["per_run"])
        mean = f"{100 * c['mean']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"
        lines.append(f"| {r['regime']} | {per} | {mean} | {100 * r['sd']:.1f} | {len(r['per_run'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="limited_data JSON[:NAME] or eval/metrics.json, one per train.seed")
    rows = spread(ap.parse_args(argv).runs)
    print(table(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
