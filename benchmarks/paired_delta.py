"""Paired downstream deltas between two evaluations of the same data: A minus B, per regime.

Two generators evaluated with the same data, classifier budget and seeds (two rows of
``benchmarks/limited_data.py``, or a row and a ``--uses`` evaluation of another snapshot of the same
run) differ cell by cell only through their synthetic images: the difference of balanced accuracy
per classifier seed, its mean and 95% t-interval, is the comparison with the seed-to-seed noise taken
out. Each side is an ``eval/metrics.json`` of a run or a limited_data JSON (its first row, or ``FILE:NAME``
for the row or ``--uses`` entry named NAME)::

    .venv/bin/python benchmarks/paired_delta.py benchmarks/results/limited_data_longtail_ensemble3_640kimg.json \\
        benchmarks/results/limited_data_longtail_mode_seeking_0.2_640kimg.json

Prints a markdown table (regime, A, B, A - B in points with the interval); nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment.metrics.regimes import REGIMES  # noqa: E402
from augment.metrics.verdict import mean_ci  # noqa: E402


def downstream(spec: str) -> dict[str, Any]:
    """The downstream section of one side (see the module docstring)."""
    path, _, name = spec.partition(":")
    doc = json.loads(Path(path).read_text())
    if "downstream" in doc:  # an evaluation's metrics.json
        down = doc["downstream"]
    else:
        entries = [*doc.get("rows", []), *doc.get("uses", [])]
        picked = [e for e in entries if name in (e.get("recipe"), e.get("use"))] if name else entries[:1]
        if not picked:
            raise SystemExit(f"error: {path}: no row or use named {name!r}")
        raw = picked[0].get("raw") or {}
        if not raw.get("downstream"):
            raise SystemExit(f"error: {spec}: no per-seed cells (written before limited_data kept them for --uses)")
        down = raw["downstream"]
    return down


def regimes(spec: str) -> dict[str, dict[str, Any]]:
    """``{regime: {seed: balanced accuracy}}`` of one side."""
    out: dict[str, dict[str, Any]] = {}
    for regime, r in downstream(spec)["regimes"].items():
        out[regime] = dict(zip(r["seeds"], r["balanced_accuracy"]["values"], strict=True))
    return out


def paired(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per regime both sides ran, on the seeds both ran."""
    rows = []
    for regime in [r for r in REGIMES if r in a and r in b]:
        seeds = [s for s in a[regime] if s in b[regime]]
        delta = mean_ci([a[regime][s] - b[regime][s] for s in seeds])
        mean = {side: sum(x[regime][s] for s in seeds) / len(seeds) for side, x in (("a", a), ("b", b))}
        rows.append({"regime": regime, "seeds": seeds, "a": mean["a"], "b": mean["b"], "delta": delta})
    return rows


def per_class(a: str, b: str, regime: str = "real+gan+classic") -> dict[str, float]:
    """A minus B of each class's test recall in ``regime``, mean over the seeds (only the means are
    saved per class, so there is no interval)."""
    ra, rb = (downstream(spec)["regimes"][regime]["per_class_recall"] for spec in (a, b))
    return {c: ra[c] - rb[c] for c in ra if c in rb}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| regime | A (%) | B (%) | A - B (pts, 95% CI) | seeds |", "|---|---|---|---|---|"]
    for r in rows:
        d = r["delta"]
        ci = "" if d["ci_low"] is None else f" [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
        cells = [
            r["regime"],
            f"{100 * r['a']:.1f}",
            f"{100 * r['b']:.1f}",
            f"{100 * d['mean']:+.1f}{ci}",
            len(r["seeds"]),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="eval/metrics.json or limited_data JSON[:NAME]")
    ap.add_argument("b", help="the same for the other side")
    args = ap.parse_args(argv)
    rows = paired(regimes(args.a), regimes(args.b))
    print(table(rows), flush=True)
    if any(r["regime"] == "real+gan+classic" for r in rows):
        diffs = sorted(per_class(args.a, args.b).items(), key=lambda kv: -abs(kv[1]))
        print(
            "\nper class, real+gan+classic test recall, A - B (pts): "
            + ", ".join(f"{c} {100 * d:+.1f}" for c, d in diffs)
        )
    return rows


if __name__ == "__main__":
    main()
