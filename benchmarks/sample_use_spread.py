"""The sample_use pick against the classic baseline over several GAN trainings of one profile.

Each input is a ``benchmarks/sample_use.py`` JSON of one training (another ``train.seed``, the same data
draw and classifier seeds). Per training it takes the test split's paired deltas over the classifier
seeds (the pick minus the baseline at its own best budget on dev, and at the pick's budget); then
the mean over trainings with its 95% interval over trainings and classifier seeds
(:func:`augment.metrics.verdict.crossed_ci`, as ``augment spread`` and ``gan_seed_spread.py``), and the
same mean with a t-interval over the trainings' means alone. Where the trainings' baselines differ
(another precision or budget), the crossed interval's shared-baseline model is an approximation and
the table says so::

    .venv/bin/python benchmarks/sample_use_spread.py \\
        benchmarks/results/sample_use_longtail_train_seed{0,1,2,3}_steps.json

Prints a markdown table; nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment.metrics.verdict import crossed_ci, mean_ci  # noqa: E402

#: The test deltas pooled: the pick against the baseline at its best dev budget, and at the pick's.
DELTAS = ("pick_vs_best_baseline", "pick_vs_baseline")


def _ci(ci: dict[str, Any]) -> str:
    return f"{ci['mean']:+.1f} [{ci['ci_low']:+.1f}, {ci['ci_high']:+.1f}]"


def spread(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per delta: each training's paired interval, the crossed interval and the over-means one."""
    if len(results) < 2:
        raise SystemExit("error: give at least two sample_use JSONs, one per train.seed")
    seeds = [r["classifier"]["seeds"] for r in results]
    if any(s != seeds[0] for s in seeds):
        raise SystemExit(f"error: the classifier seeds differ ({seeds}): the deltas are paired by seed")
    baselines = [r["test"]["baseline_values_by_steps"] for r in results]
    out: dict[str, Any] = {"shared_baseline": all(b == baselines[0] for b in baselines), "deltas": {}}
    for key in DELTAS:
        values = [r["test"][key]["values"] for r in results]
        out["deltas"][key] = {
            "per_training": [r["test"][key] for r in results],
            "crossed": crossed_ci(values),
            "over_means": mean_ci([sum(v) / len(v) for v in values]),
        }
    return out


def table(out: dict[str, Any], names: list[str]) -> str:
    lines = [
        f"| test delta, points | {' | '.join(names)} | over trainings (trainings x seeds) | over their means |",
        "|---" * (len(names) + 3) + "|",
    ]
    for key, d in out["deltas"].items():
        cells = [_ci(c) for c in d["per_training"]]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {_ci(d['crossed'])} | {_ci(d['over_means'])} |")
    if not out["shared_baseline"]:
        lines.append("")
        lines.append(
            "The trainings' baseline cells differ (another precision or budget): the crossed interval assumes one "
            "shared baseline and is an approximation; the interval over the trainings' means does not assume it."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="sample_use JSON, one per train.seed")
    paths = ap.parse_args(argv).results
    out = spread([json.loads(p.read_text()) for p in paths])
    print(table(out, [p.stem for p in paths]), flush=True)
    return out


if __name__ == "__main__":
    main()
