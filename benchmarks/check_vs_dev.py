"""Does a lower selection check mean a more useful generator? Switches against one reference training.

Each row is a generator recipe trained on the same data and training seed: its ``limited_data.py --screen``
JSON (the selection curve: ``fd_domain`` of the EMA generator against train+val at every check) and its
``sample_use.py`` JSON (real+gan+classic on the 5000-image dev split, per classifier seed). The first row
is the reference. Per row: the kimg reached, the best check, the mean of the second half's checks, and the
dev accuracy minus the reference's, paired over the classifier seeds (mean and 95% t-interval); then
Spearman's rank correlation between the best check and the dev delta over all rows, and a scatter plot
(``--plot``)::

    cd benchmarks/results && ../../.venv/bin/python ../check_vs_dev.py \\
        shipped=limited_data_longtail_train_seed3_screen_xeon.json,sample_use_longtail_train_seed3_xeon.json \\
        rpgan=limited_data_longtail_rpgan_17min_train_seed3_screen.json,sample_use_longtail_rpgan_train_seed3.json \\
        ... --plot ../../docs/check_vs_dev_longtail_seed3.png  # the full command: benchmarks/RESULTS.md

Prints a markdown table; nothing is appended anywhere. No test-split number is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scipy import stats  # noqa: E402

from augment.metrics.verdict import mean_ci  # noqa: E402


def row(name: str, screen: dict[str, Any], use: dict[str, Any], ref_use: dict[str, Any]) -> dict[str, Any]:
    """One recipe's selection numbers and its paired dev delta (points) against the reference."""
    train = screen["rows"][0]
    curve = train["train_curve"]
    half = [c["fd_domain"] for c in curve if c["kimg"] >= train["kimg"] / 2]
    seeds, ref_seeds = use["classifier"]["seeds"], ref_use["classifier"]["seeds"]
    if seeds != ref_seeds:
        raise SystemExit(f"error: {name}: classifier seeds {seeds} differ from the reference's {ref_seeds}")
    mine, ref = use["candidates"][0]["dev_values"], ref_use["candidates"][0]["dev_values"]
    return {
        "name": name,
        "kimg": train["kimg"],
        "best_check": min(c["fd_domain"] for c in curve),
        "second_half_mean": sum(half) / len(half),
        "dev": 100 * sum(mine) / len(mine),
        "dev_delta": mean_ci([100 * (a - b) for a, b in zip(mine, ref, strict=True)]),
    }


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (scipy's: average ranks for ties)."""
    return float(stats.spearmanr(x, y).statistic)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| recipe | kimg | best check | second-half mean | real+gan+classic on dev (%) "
        + "| minus the reference (pts, 95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["dev_delta"]
        delta = "reference" if r is rows[0] else f"{d['mean']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]"
        cells = [r["name"], f"{r['kimg']:.0f}", f"{r['best_check']:.3f}", f"{r['second_half_mean']:.3f}"]
        cells.append(f"{r['dev']:.2f}")
        lines.append("| " + " | ".join([*cells, delta]) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    markers = "osD^vP*Xph"
    for i, r in enumerate(rows):  # a marker and colour per row, named in the legend (labels would collide)
        d = r["dev_delta"]
        err = [[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]] if r is not rows[0] else None
        color = "k" if r is rows[0] else f"C{i % 10}"
        ax.errorbar(
            r["best_check"], d["mean"], yerr=err, fmt=markers[i % len(markers)], color=color, capsize=3, label=r["name"]
        )
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("best selection check (fd_domain against train+val; lower = closer)")
    ax.set_ylabel(f"real+gan+classic on dev minus {rows[0]['name']} (pts)")
    ax.set_title("A lower best check has not meant a more useful generator", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+", help="NAME=SCREEN_JSON,SAMPLE_USE_JSON; the first is the reference")
    ap.add_argument("--plot", type=Path, default=None, help="write the scatter plot here (PNG)")
    args = ap.parse_args(argv)
    if len(args.rows) < 3:
        raise SystemExit("error: give the reference and at least two recipes")
    specs = []
    for spec in args.rows:
        name, _, files = spec.partition("=")
        paths = files.split(",")
        if not name or len(paths) != 2:
            raise SystemExit(f"error: {spec!r}: expected NAME=SCREEN_JSON,SAMPLE_USE_JSON")
        specs.append((name, *(json.loads(Path(p).read_text()) for p in paths)))
    ref_use = specs[0][2]
    rows = [row(name, screen, use, ref_use) for name, screen, use in specs]
    rho = spearman([r["best_check"] for r in rows], [r["dev_delta"]["mean"] for r in rows])
    print(table(rows))
    print(f"\nSpearman's rank correlation, best check against the dev delta, {len(rows)} rows: {rho:+.2f}", flush=True)
    if args.plot is not None:
        plot(rows, args.plot)
    return {"rows": rows, "spearman": rho}


if __name__ == "__main__":
    main()
