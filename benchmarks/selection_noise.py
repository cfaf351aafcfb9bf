"""How noisy is the best-snapshot metric? Train-time ``fd_domain`` of saved snapshots (and of their
mixtures) under several latent draws.

Training scores each check on one fixed set of latents (``generate.seed``), as many synthetic
images per class as train+val has real ones (times ``train.eval_oversample``). This re-scores
snapshots of a finished run with ``generate.seed`` = 0..N-1, so the spread of one snapshot's
values is the sampling noise of the choice training made::

    .venv/bin/python benchmarks/selection_noise.py RUN_DIR network-best.pt network-snapshot-000500.pt \\
        --mix network-best.pt,network-snapshot-000500.pt --seeds 5 --oversample 1 4

Prints a markdown table (one row per latent draw, a mean row); nothing is appended anywhere. The
extractor is the run's own (``evaluate.cache_dir`` of its config, else ``RUN_DIR/cache``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment import rundir  # noqa: E402
from augment.checkpoint import load_snapshot  # noqa: E402
from augment.config import load_config  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.metrics.evaluate import best_snapshot_metric  # noqa: E402
from augment.models import SnapshotEnsemble  # noqa: E402


def scores(
    run_dir: Path, names: list[str], mixes: list[list[str]], seeds: int, oversample: int
) -> dict[str, list[float]]:
    """``{column: [fd_domain for generate.seed = 0..seeds-1]}``; a column per snapshot and per mixture."""
    base = load_config(run_dir / rundir.CONFIG, [])
    data = load_data(base.data, base.seed)
    gens = {n: load_snapshot(run_dir / n).generator() for n in {*names, *(m for mix in mixes for m in mix)}}
    columns = {n: gens[n] for n in names} | {"+".join(mix): SnapshotEnsemble([gens[m] for m in mix]) for mix in mixes}
    out: dict[str, list[float]] = {c: [] for c in columns}
    for seed in range(seeds):
        cfg = load_config(run_dir / rundir.CONFIG, [f"generate.seed={seed}", f"train.eval_oversample={oversample}"])
        fn = best_snapshot_metric(data, cfg, run_dir)
        for c, G in columns.items():
            out[c].append(fn(G)["fd_domain"])
    return out


def table(values: dict[str, list[float]]) -> str:
    cols = list(values)
    lines = ["| latents (`generate.seed`) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for i in range(len(values[cols[0]])):
        lines.append(f"| {i} | " + " | ".join(f"{values[c][i]:.3f}" for c in cols) + " |")
    lines.append("| mean (sd) | " + " | ".join(_mean_sd(values[c]) for c in cols) + " |")
    return "\n".join(lines)


def _mean_sd(v: list[float]) -> str:
    return f"{statistics.mean(v):.3f} ({statistics.stdev(v):.3f})" if len(v) > 1 else f"{v[0]:.3f}"


def main(argv: list[str] | None = None) -> dict[int, dict[str, list[float]]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("snapshots", nargs="+", help="snapshot files in RUN_DIR")
    ap.add_argument("--mix", action="append", default=[], help="comma-separated snapshots scored as one mixture")
    ap.add_argument("--seeds", type=int, default=5, help="latent draws (generate.seed = 0..N-1)")
    ap.add_argument("--oversample", type=int, nargs="+", default=[1], help="train.eval_oversample values")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mixes = [m.split(",") for m in args.mix]
    results = {}
    for k in args.oversample:
        results[k] = scores(args.run_dir, args.snapshots, mixes, args.seeds, k)
        print(f"\n`train.eval_oversample={k}`, `{args.run_dir}`:\n\n{table(results[k])}\n", flush=True)
    return results


if __name__ == "__main__":
    main()
