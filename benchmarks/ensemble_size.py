"""How many checks should the handed-on mixture have? Re-select a finished run's snapshot ensemble
with other sizes, without training again.

A run trained with ``train.ensemble: K`` keeps its ``3 K`` best checks' EMA weights in
``training-state.pt`` (``ensemble_pool``). This rebuilds the best snapshot from that pool for each
``--k`` with the same greedy choice and the same train+val ``fd_domain`` training used
(:func:`augment.train_parts.ensemble_snapshot`), and writes each as a copy of the run
(``OUT/ensemble_<k>``: config, data split, logs and the new ``network-best.pt``; no training state),
ready for ``augment evaluate`` or ``benchmarks/limited_data.py --uses fixed --uses-run``::

    .venv/bin/python benchmarks/ensemble_size.py RUN_DIR --k 1 5 --out /tmp/ens_size

A size above the run's ``K`` chooses among the ``3 K`` checks the run kept, not the ``3 k`` a run
trained with ``k`` would keep: a lower bound on what that setting would do. Prints a markdown table
(k, the checks chosen, the mixture's ``fd_domain`` against train+val); nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment import checkpoint, rundir  # noqa: E402
from augment.config import load_config  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.errors import AugmentError  # noqa: E402
from augment.metrics.evaluate import best_snapshot_metric  # noqa: E402
from augment.train_parts import MetricFn, ensemble_snapshot  # noqa: E402

SKIP = (rundir.TRAINING_STATE, rundir.SNAPSHOT_GLOB, rundir.EVAL)


def reselect(run_dir: Path, sizes: list[int], out: Path, metric_fn: MetricFn | None = None) -> list[dict]:
    """Write ``out/ensemble_<k>`` for each size; returns one row per size. ``metric_fn`` (default: the
    run's train+val ``fd_domain``, as training scored it) returns ``{"fd_domain": value}``."""
    state = checkpoint.load(run_dir / rundir.TRAINING_STATE)
    pool = state.get("ensemble_pool") or []
    if not pool:
        raise AugmentError(f"{run_dir} kept no ensemble pool: train it with train.ensemble > 1")
    if metric_fn is None:  # the factory training used, on the run's own config and extractor
        cfg = load_config(run_dir / rundir.CONFIG, [])
        metric_fn = best_snapshot_metric(load_data(cfg.data, cfg.seed), cfg, run_dir)
    best = checkpoint.load_snapshot(run_dir / rundir.BEST_SNAPSHOT)
    rows = []
    for k in sizes:
        snap = ensemble_snapshot(best, pool, k, metric_fn, "fd_domain")
        dest = out / f"ensemble_{k}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns(*SKIP))
        checkpoint.save_snapshot(snap, dest / rundir.BEST_SNAPSHOT)
        rows.append(
            {
                "k": k,
                "kimg": [snap.kimg, *snap.member_kimg],
                "fd_domain": snap.metrics["fd_domain"],
                "fd_domain_single": pool[0]["value"],
                "run": str(dest),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| k | checks (kimg) | fd_domain, train+val (best check alone) | run |", "|---|---|---|---|"]
    for r in rows:
        checks = ", ".join(f"{v:g}" for v in r["kimg"])
        lines.append(f"| {r['k']} | {checks} | {r['fd_domain']:.3f} ({r['fd_domain_single']:.3f}) | `{r['run']}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--k", type=int, nargs="+", required=True, help="mixture sizes (1 = the best check alone)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if min(args.k) < 1:
        ap.error("--k: sizes are 1 or more")
    try:
        rows = reselect(args.run_dir, args.k, args.out)
    except AugmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(table(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
