"""The sample_use pick against the classic baseline over several GAN trainings of one profile.

Each input is a ``benchmarks/sample_use.py`` JSON of one training (another ``train.seed``, the same data
draw and classifier seeds). Per training it takes the test split's paired deltas over the classifier
seeds (the pick minus the baseline at its own best budget on dev, and at the pick's budget); then
the mean over trainings with its 95% interval over trainings and classifier seeds
(:func:`augment.metrics.verdict.crossed_ci`, as ``augment spread`` and ``gan_seed_spread.py``), and the
same mean with a t-interval over the trainings' means alone. Where the trainings' baselines differ
(another precision or budget), the crossed interval's shared-baseline model is an approximation and
the table says so. ``--baseline`` (one ``classic_selection.py --test`` JSON per result) pairs each pick
against a classic baseline ranked on dev too, where the validation pick may be a weaker one::

    .venv/bin/python benchmarks/sample_use_spread.py \\
        benchmarks/results/sample_use_longtail_train_seed{0,1,2,3}_steps.json [--baseline B.json ...]

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


def spread(results: list[dict[str, Any]], baselines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per delta: each training's paired interval, the crossed interval and the over-means one.

    ``baselines`` (one per result, in order): ``classic_selection.py --test`` results; each training's
    pick is then also paired against its baseline's test cells (:data:`GIVEN`).
    """
    if len(results) < 2:
        raise SystemExit("error: give at least two sample_use JSONs, one per train.seed")
    seeds = [r["classifier"]["seeds"] for r in results]
    if any(s != seeds[0] for s in seeds):
        raise SystemExit(f"error: the classifier seeds differ ({seeds}): the deltas are paired by seed")
    stored = [r["test"]["baseline_values_by_steps"] for r in results]
    out: dict[str, Any] = {"shared_baseline": all(b == stored[0] for b in stored), "deltas": {}}
    for key in DELTAS:
        values = [r["test"][key]["values"] for r in results]
        out["deltas"][key] = {
            "per_training": [r["test"][key] for r in results],
            "crossed": crossed_ci(values),
            "over_means": mean_ci([sum(v) / len(v) for v in values]),
        }
    if baselines is not None:
        out["given_baselines"] = [_given(r, b) for r, b in zip(results, baselines, strict=True)]
        given = [g["values"] for g in out["given_baselines"]]
        out["shared_baseline"] = out["shared_baseline"] and all(v == given[0] for v in given)
        values = [
            [100 * (p - b) for p, b in zip(r["test"]["pick"], g["values"], strict=True)]
            for r, g in zip(results, out["given_baselines"], strict=True)
        ]
        out["deltas"][GIVEN] = {
            "per_training": [mean_ci(v) for v in values],
            "crossed": crossed_ci(values),
            "over_means": mean_ci([sum(v) / len(v) for v in values]),
        }
    return out


#: The pick against a classic baseline ranked on dev by ``classic_selection.py`` (``--baseline``).
GIVEN = "pick_vs_given_baseline"


def _given(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The test cells of ``baseline`` (a classic_selection JSON) checked against one sample_use result."""
    if "test" not in baseline:
        raise SystemExit("error: a --baseline JSON must come from classic_selection.py --test")
    t = baseline["test"]
    if t["seeds"] != result["classifier"]["seeds"]:
        raise SystemExit(
            f"error: the baseline's seeds {t['seeds']} are not the result's {result['classifier']['seeds']}"
        )
    recorded = result["classifier"].get("precision")
    if recorded is not None and recorded != t["precision"]:
        raise SystemExit(f"error: the baseline's cells are {t['precision']}, the result's {recorded}")
    return {k: t[k] for k in ("label", "steps", "precision", "values")}


def table(out: dict[str, Any], names: list[str]) -> str:
    lines = [
        f"| test delta, points | {' | '.join(names)} | over trainings (trainings x seeds) | over their means |",
        "|---" * (len(names) + 3) + "|",
    ]
    for key, d in out["deltas"].items():
        cells = [_ci(c) for c in d["per_training"]]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {_ci(d['crossed'])} | {_ci(d['over_means'])} |")
    for i, g in enumerate(out.get("given_baselines", [])):
        lines.append(f"\n{GIVEN}, {names[i]}: {g['label']} at {g['steps']} steps ({g['precision']}), ranked on dev.")
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
    ap.add_argument(
        "--baseline",
        action="append",
        type=Path,
        default=None,
        help="classic_selection.py --test JSON, one per result in order: pair the picks against its test cells too",
    )
    args = ap.parse_args(argv)
    paths = args.results
    if args.baseline is not None and len(args.baseline) != len(paths):
        ap.error(f"give one --baseline per result ({len(paths)}), or none")
    baselines = None if args.baseline is None else [json.loads(p.read_text()) for p in args.baseline]
    out = spread([json.loads(p.read_text()) for p in paths], baselines)
    print(table(out, [p.stem for p in paths]), flush=True)
    return out


if __name__ == "__main__":
    main()
