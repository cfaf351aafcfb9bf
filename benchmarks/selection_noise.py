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

``--per-class`` adds, per snapshot, each class's recall and coverage (k = 5) of the same samples against
train+val, the mean over the latent draws: what a per-class selection check could see (the test split's
per-class recall is in the evaluation's report, for comparison only).
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
from augment.generate import quantize, sample  # noqa: E402
from augment.metrics.evaluate import best_snapshot_metric, selection_latents, selection_reference  # noqa: E402
from augment.metrics.extractor import load_or_train_extractor  # noqa: E402
from augment.metrics.prdc import prdc_report  # noqa: E402
from augment.models import SnapshotEnsemble  # noqa: E402

#: The per-class columns of ``--per-class``.
CLASS_METRICS = ("recall", "coverage")


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


def class_scores(
    run_dir: Path, names: list[str], seeds: int, oversample: int
) -> dict[str, dict[str, dict[str, float]]]:
    """``{snapshot: {metric: {class: mean over generate.seed = 0..seeds-1}}}``: each class's recall and
    coverage of the check's samples (the same latents) against train+val in the run's extractor."""
    cfg = load_config(run_dir / rundir.CONFIG, [])
    data = load_data(cfg.data, cfg.seed)
    ext = load_or_train_extractor(
        data, cfg.evaluate, cache_dir=cfg.evaluate.cache_dir or run_dir / rundir.CACHE, seed=cfg.seed
    )
    ref_images, ref_labels = selection_reference(data)
    ref = ext.features(ref_images)
    labels, indices = selection_latents(ref_labels, data.num_classes, cfg.evaluate.samples_per_class, oversample)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        G = load_snapshot(run_dir / name).generator()
        sums: dict[str, dict[str, float]] = {m: {} for m in CLASS_METRICS}
        for seed in range(seeds):
            fake = ext.features(quantize(sample(G, labels, indices, seed)))
            per_class = prdc_report(ref, ref_labels, fake, labels, ref, ref_labels, data.class_names)["per_class"]
            for c, v in per_class.items():
                for m in CLASS_METRICS if v["synthetic"] is not None else ():
                    sums[m][c] = sums[m].get(c, 0.0) + v["synthetic"][m] / seeds
        out[name] = sums
    return out


def class_table(values: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per snapshot and metric, a column per class (classes too small for k-NN radii left out)."""
    classes = list(dict.fromkeys(c for v in values.values() for m in v.values() for c in m))
    lines = ["| snapshot | metric | " + " | ".join(classes) + " |", "|---" * (len(classes) + 2) + "|"]
    for name, v in values.items():
        for m in CLASS_METRICS:
            lines.append(
                f"| {name} | {m} | " + " | ".join(f"{v[m][c]:.2f}" if c in v[m] else "" for c in classes) + " |"
            )
    return "\n".join(lines)


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
    ap.add_argument("--per-class", action="store_true", help="each class's recall and coverage against train+val too")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mixes = [m.split(",") for m in args.mix]
    results = {}
    for k in args.oversample:
        results[k] = scores(args.run_dir, args.snapshots, mixes, args.seeds, k)
        print(f"\n`train.eval_oversample={k}`, `{args.run_dir}`:\n\n{table(results[k])}\n", flush=True)
        if args.per_class:
            per_class = class_scores(args.run_dir, args.snapshots, args.seeds, k)
            print(f"per class against train+val:\n\n{class_table(per_class)}\n", flush=True)
    return results


if __name__ == "__main__":
    main()
