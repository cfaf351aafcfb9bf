"""How far one recipe's downstream deltas move with the GAN training's own randomness.

Each input is a limited_data JSON (its first row, or ``FILE:NAME``) or an ``eval/metrics.json`` of the same
profile and data draw, trained with another ``train.seed``. Per run and regime with synthetic images it
takes the paired mean over the classifier seeds of (regime minus real+classic, the val-chosen classic
baseline); then the mean over runs, its 95% interval over runs and classifier seeds (crossed random
effects: :func:`augment.metrics.verdict.crossed_ci`) and the runs' standard deviation
(:func:`augment.metrics.spread.spread`, what ``augment spread`` computes on run directories).
A limited_data table's interval holds the classifier seeds' noise of one GAN training; this one holds
the training's as well. Runs whose GAN-free cells differ (another data draw or classifier budget) are
refused::

    .venv/bin/python benchmarks/gan_seed_spread.py benchmarks/results/limited_data_longtail_ensemble3_640kimg.json \\
        benchmarks/results/limited_data_longtail_train_seed1_640kimg.json

Prints a markdown table and the verdict over runs; nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment.errors import AugmentError  # noqa: E402
from augment.metrics.spread import spread, table  # noqa: E402
from benchmarks.paired_delta import downstream  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="limited_data JSON[:NAME] or eval/metrics.json, one per train.seed")
    specs = ap.parse_args(argv).runs
    try:
        out = spread([downstream(spec) for spec in specs], specs)
    except AugmentError as err:
        raise SystemExit(f"error: {err}") from None
    print(table(out), flush=True)
    print(out["verdict"]["text"], flush=True)
    return out


if __name__ == "__main__":
    main()
