"""How many optimizer steps the downstream classifiers need: validation accuracy against steps.

`evaluate.steps` sets the cost of every cell of the verdict's grid. This trains the grid's regimes for
several step counts (stacked, as `augment evaluate` does) and scores every cell on the *validation*
split, never the test split, so the step count of a config can be chosen on it. Reports, per step
count and regime, the mean balanced accuracy on val with its 95% t-interval over the seeds, and the
wall time of the stacked grid.

    flock /tmp/bench.lock .venv/bin/python benchmarks/downstream_steps.py --config configs/digits.yaml \\
        --run-dir runs/00000-digits --steps 125 250 500
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from augment.metrics.stacked import fit_score_many  # noqa: E402
from augment.metrics.verdict import mean_ci  # noqa: E402
from benchmarks.common import append_results, grid_plan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/digits.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--run-dir", type=Path, default=None, help="a trained run (default: train --kimg here)")
    ap.add_argument("--kimg", type=float, default=20.0, help="GAN budget when training here")
    ap.add_argument("--steps", type=int, nargs="+", default=[125, 250, 500])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--regimes", nargs="+", default=["real", "real+classic", "real+gan"])
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()

    cfg, data, snap, plan, args.run_dir = grid_plan(
        args.config, args.overrides, args.run_dir, args.kimg, "steps-bench-"
    )
    ev = cfg.evaluate
    seeds = [cfg.seed + 200 + i for i in range(args.seeds)]  # neither the grid's nor the selection's seeds

    rows, times = {}, {}
    for steps in args.steps:
        p = dataclasses.replace(plan, steps=steps)
        start = time.perf_counter()
        cells = fit_score_many([(p, r, s, "val") for r in args.regimes for s in seeds], progress=True, desc=f"{steps}")
        times[steps] = time.perf_counter() - start
        for r in args.regimes:
            rows[steps, r] = mean_ci([c["balanced_accuracy"] for c in cells if c["regime"] == r])

    def fmt(ci: dict) -> str:
        return f"{100 * ci['mean']:.1f} [{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]"

    table = "\n".join(
        f"| {steps} | " + " | ".join(fmt(rows[steps, r]) for r in args.regimes) + f" | {times[steps]:.1f} |"
        for steps in args.steps
    )
    body = (
        f"`{args.config}` {' '.join('--set ' + o for o in args.overrides)}: {len(data.val)} validation images, "
        f"classic baseline {plan.classic} (chosen on val), batch {ev.batch_size}, {args.seeds} seeds "
        f"({seeds[0]}..{seeds[-1]}), generator `{args.run_dir}` ({snap.kimg:.0f} kimg). Balanced accuracy on the "
        "validation split (%), mean and 95% t-interval over the seeds; wall time of the stacked cells.\n\n"
        "| evaluate.steps | "
        + " | ".join(args.regimes)
        + " | seconds |\n|---:|"
        + "---|" * len(args.regimes)
        + "---:|\n"
        + table
        + "\n"
    )
    print(body)
    if not args.no_save:
        append_results("downstream_steps: validation accuracy against evaluate.steps", body)


if __name__ == "__main__":
    main()
