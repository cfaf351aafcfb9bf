"""Do a generator's samples carry their class? Per-class GAN-test with a classifier trained on held-out
real images, and what the downstream classifier gains when that classifier filters or relabels the pool.

A diagnostic, not a product option: the product has no held-out images to train such a judge. It asks
where the long tail's GAN gain is lost. On the Fashion-MNIST long tail real+gan+classic gains in the tail
classes and loses in the head ones that share their shapes (T-shirt/top, Pullover against Shirt;
``benchmarks/RESULTS.md``). Two readings fit: the classifier learns a "looks synthetic" cue, or the
generator's tail samples carry the wrong class (a synthetic Shirt that is a T-shirt). This measures the
second one.

``--dev-per-class`` real images per class that the run's data limit left out (the dev split of
``sample_use.py``: after the test split's images, disjoint from train, val and test) are cut in two:
the first ``--judge-per-class`` of each class train the **judge** (``--judge-seeds`` SmallCNNs with the
classic baseline's policy, their softmax averaged); the rest score the downstream cells. Reported:

* per class, the judge's GAN-test (the share of class c's synthetic images it calls c; Shmelkov et al.
  2018) beside its accuracy on the run's real train images of class c (the floor of what the judge
  recognises), and where the rest of class c's samples go;
* downstream on the scoring half, paired per classifier seed with the baseline (``real+classic`` as the
  product chooses it): the run's default use, the pool filtered to the samples the judge gives their own
  class at least ``--threshold``, and the pool trained against the judge's probabilities (soft labels).
  The last two are upper bounds of a label-faithful generator, not uses a user can have.

The test split is not read. ::

    .venv/bin/python benchmarks/label_fidelity.py RUN_DIR --json /tmp/label_fidelity.json

Prints markdown tables; nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment import rundir  # noqa: E402
from augment.checkpoint import find_snapshot, load_snapshot  # noqa: E402
from augment.data import ImageSet, load_data  # noqa: E402
from augment.metrics import downstream  # noqa: E402
from augment.metrics.classifier_training import predict_proba, train_classifier  # noqa: E402
from augment.metrics.evaluate import generate_uint8  # noqa: E402
from augment.metrics.regimes import BASELINE  # noqa: E402
from augment.metrics.verdict import mean_ci  # noqa: E402
from benchmarks.common import command, git_commit, machine, run_cli  # noqa: E402
from benchmarks.limited_data import make_executor  # noqa: E402
from benchmarks.sample_use import _ci, candidate_plan, cells, dev_split, paired, per_class_delta  # noqa: E402


def halves(dev: ImageSet, num_classes: int, first: int) -> tuple[ImageSet, ImageSet]:
    """``dev`` cut class by class: its first ``first`` images of each class, and the rest.

    Raises:
        ValueError: a class has ``first`` images or fewer (nothing would be left to score on).
    """
    head, rest = [], []
    for c in range(num_classes):
        rows = torch.nonzero(dev.labels == c).flatten()
        if len(rows) <= first:
            raise ValueError(f"class {c} has {len(rows)} dev images; the judge takes {first}, none would be left")
        head.append(rows[:first])
        rest.append(rows[first:])

    def take(rows: list[torch.Tensor]) -> ImageSet:
        idx = torch.cat(rows).sort().values
        return ImageSet(dev.images[idx], dev.labels[idx], [dev.ids[i] for i in idx.tolist()])

    return take(head), take(rest)


def ensemble_probs(spec: downstream.Plan, regime: str, seeds: list[int], images: list[torch.Tensor]) -> list:
    """The mean softmax of ``len(seeds)`` classifiers trained on ``spec`` under ``regime`` over each of ``images``:
    the held-out judge (``real+classic`` on the held-out images) or the self judge (``real+gan+classic`` on the run)."""
    out = [torch.zeros(len(x), spec.num_classes) for x in images]
    for seed in seeds:
        model, _ = train_classifier(spec, regime, seed)
        for acc, x in zip(out, images, strict=True):
            acc += predict_proba(model, x) / len(seeds)
    return out


def per_class_fidelity(probs: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per class: the share the judge calls by its own class, and the class most of the rest go to."""
    pred = probs.argmax(dim=1)
    out = {}
    for c, name in enumerate(names):
        mine = pred[labels == c]
        if len(mine) == 0:
            continue
        counts = torch.bincount(mine, minlength=len(names)).double()
        own = float(counts[c] / counts.sum())
        counts[c] = 0
        other = int(counts.argmax())
        out[name] = {
            "own": round(own, 3),
            "top_other": names[other] if counts.sum() > 0 else None,
            "top_other_share": round(float(counts[other] / len(mine)), 3),
            "n": len(mine),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    sets = [f"evaluate.seeds={args.seeds}", "evaluate.tune=false", "evaluate.threads=1"]
    if args.steps:
        sets.append(f"evaluate.steps={args.steps}")
    cfg = rundir.run_config(args.run_dir, sets)
    ev = cfg.evaluate
    data = load_data(cfg.data, cfg.seed)
    dev = dev_split(cfg, data, args.dev_per_class)
    judge, scoring = halves(dev, data.num_classes, args.judge_per_class)
    snap_path = find_snapshot(args.run_dir)
    snap = load_snapshot(snap_path)
    rundir.check_data_matches(snap_path, snap.class_names, snap.data_fingerprint, data)
    G = snap.generator("cpu")
    pool, labels = generate_uint8(G, [args.pool] * data.num_classes, cfg.generate.seed)
    # The self judge has seen the pool: it scores the next images of each class instead (a fresh pool).
    fresh = generate_uint8(G, [args.pool] * data.num_classes, cfg.generate.seed, start=args.pool)[0]
    names = list(data.class_names)
    executor = make_executor(args.workers)
    map_fn = map if executor is None else (lambda fn, items: executor.map(fn, items))
    t0 = time.time()
    try:
        plan = downstream.prepare(data, pool, labels, ev, seed=cfg.seed, map_fn=map_fn)
        judge_seeds = list(range(args.judge_seeds))
        if args.judge == "held-out":
            judged, regime = pool, BASELINE
            spec = dataclasses.replace(plan, train_images=judge.images, train_labels=judge.labels, threads=None)
        else:  # the run's own classifiers; they have seen the pool, so they judge the fresh one
            judged, regime = fresh, "real+gan+classic"
            spec = dataclasses.replace(plan, threads=None)
        syn_p, train_p, scoring_p = ensemble_probs(
            spec, regime, judge_seeds, [judged, data.train.images, scoring.images]
        )
        judge_s = time.time() - t0
        judge_acc = float((scoring_p.argmax(dim=1) == scoring.labels).double().mean())
        conf = syn_p.gather(1, labels[:, None]).flatten()
        judged_plan = dataclasses.replace(
            plan, synthetic_images=judged, synthetic_probs=syn_p, synthetic_confidence=conf
        )
        default = {
            "pool": args.pool,
            "synthetic_share": ev.synthetic_share,
            "synthetic_sampling": ev.synthetic_sampling,
            "confidence_threshold": None,
            "soft_labels": False,
            "synthetic_until": ev.synthetic_until,
            "synthetic_bn": ev.synthetic_bn,
            "steps": ev.steps,
        }
        uses = {"default": (plan, default)}
        if args.judge == "self":
            uses["fresh pool"] = (judged_plan, default)
        uses[f"judge filter {args.threshold:g}"] = (judged_plan, {**default, "confidence_threshold": args.threshold})
        uses["judge soft labels"] = (judged_plan, {**default, "soft_labels": True})
        if args.real_transfer:
            # The control: the run's real train images in the synthetic share's place, so the judge's
            # probabilities reach the classifier through the real images alone (the same batch composition).
            real_plan = dataclasses.replace(
                plan,
                synthetic_images=data.train.images,
                synthetic_labels=data.train.labels,
                synthetic_probs=train_p,
                synthetic_confidence=None,
            )
            most = int(data.train.labels.bincount().max())
            uses["real images as the pool"] = (real_plan, {**default, "pool": most})
            uses["real images as the pool, judge soft labels"] = (
                real_plan,
                {**default, "pool": most, "soft_labels": True},
            )
        t1 = time.time()
        base = cells(candidate_plan(plan, default, scoring), BASELINE, map_fn)
        got = {name: cells(candidate_plan(p, cand, scoring), args.regime, map_fn) for name, (p, cand) in uses.items()}
        cells_s = time.time() - t1
    finally:
        if executor is not None:
            executor.shutdown()
    kept = conf >= args.threshold

    def pool_kind(p: downstream.Plan) -> str:
        if p.synthetic_images is data.train.images:
            return "real train images"
        return "fresh" if p is judged_plan and judged is fresh else "default"

    return {
        "benchmark": "label_fidelity",
        "run_dir": str(args.run_dir),
        "snapshot": {"path": str(snap_path), "kimg": snap.kimg, "member_kimg": list(snap.member_kimg)},
        "regime": args.regime,
        "sizes": {"judge": len(judge), "scoring": len(scoring), "pool_per_class": args.pool},
        "judge": {
            "kind": args.judge,
            "seeds": judge_seeds,
            "classic": plan.classic,
            "steps": plan.steps,
            "scoring_accuracy": round(judge_acc, 4),
            "seconds": round(judge_s, 1),
        },
        "synthetic": per_class_fidelity(syn_p, labels, names),
        "real_train": per_class_fidelity(train_p, data.train.labels, names),
        "train_counts": dict(zip(names, data.train.labels.bincount(minlength=len(names)).tolist(), strict=True)),
        "threshold": args.threshold,
        "kept_per_class": dict(zip(names, [int(kept[labels == c].sum()) for c in range(len(names))], strict=True)),
        "baseline": {"classic": plan.classic, "classic_sampling": plan.classic_sampling},
        "uses": {
            name: {
                "settings": uses[name][1],
                "pool": pool_kind(uses[name][0]),
                "vs_baseline": paired(rows, base),
                "accuracy": mean_ci([100 * c["balanced_accuracy"] for c in rows]),
                "values": [c["balanced_accuracy"] for c in rows],
                "per_class_vs_baseline": per_class_delta(rows, base, names),
            }
            for name, rows in got.items()
        },
        "baseline_values": [c["balanced_accuracy"] for c in base],
        "seconds": {"judge": round(judge_s, 1), "cells": round(cells_s, 1)},
        "machine": machine(),
        "commit": git_commit(),
        "command": command(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def render(res: dict[str, Any]) -> str:
    names = list(res["train_counts"])
    j = res["judge"]
    on = (
        f"{res['sizes']['judge']} held-out real images ({j['classic']}"
        if j.get("kind", "held-out") == "held-out"
        else f"the run's train split and pool (real+gan+classic, {j['classic']}"
    )
    lines = [
        f"Judge: {len(j['seeds'])} SmallCNNs on {on}, {j['steps']} steps), accuracy on the "
        f"{res['sizes']['scoring']} scoring images {100 * j['scoring_accuracy']:.1f}%.",
        "",
        "| class | train images | judge on real train images | GAN-test (own class) | most of the rest to | "
        f"kept at {res['threshold']:g} |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for n in names:
        s, r = res["synthetic"][n], res["real_train"][n]
        lines.append(
            f"| {n} | {res['train_counts'][n]} | {r['own']:.2f} | {s['own']:.2f} | {s['top_other']} "
            f"({s['top_other_share']:.2f}) | {res['kept_per_class'][n]} |"
        )
    lines += ["", f"| use ({res['regime']}) | Δ vs baseline, pts | " + " | ".join(names) + " |"]
    lines.append("|---|---|" + "---:|" * len(names))
    for name, u in res["uses"].items():
        per = u["per_class_vs_baseline"]
        lines.append(f"| {name} | {_ci(u['vs_baseline'])} | " + " | ".join(f"{per[n]:+.1f}" for n in names) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--dev-per-class", type=int, default=500, help="held-out real images per class (default 500)")
    ap.add_argument("--judge-per-class", type=int, default=250, help="of which train the judge (default 250)")
    ap.add_argument("--judge-seeds", type=int, default=3, help="judge classifiers averaged (default 3)")
    ap.add_argument(
        "--judge",
        default="held-out",
        choices=["held-out", "self"],
        help="held-out: trained on the dev split's first images (default); self: real+gan+classic classifiers on "
        "the run's own train split and pool, judging the next --pool images of each class (a fresh pool)",
    )
    ap.add_argument("--pool", type=int, default=300, help="synthetic images per class (default 300)")
    ap.add_argument("--threshold", type=float, default=0.5, help="the filter: judge's own-class probability")
    ap.add_argument(
        "--real-transfer",
        action="store_true",
        help="add the control: the real train images in the pool's place, with hard labels and with the judge's",
    )
    ap.add_argument("--steps", type=int, default=None, help="classifier steps (default: the run's)")
    ap.add_argument("--regime", default="real+gan+classic", choices=["real+gan+classic", "real+gan"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="single-threaded cell processes (default 2)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if min(args.pool, args.judge_per_class, args.judge_seeds, args.seeds, args.steps or 1) < 1:
        ap.error("--pool, --judge-per-class, --judge-seeds, --seeds and --steps are 1 or more")
    if args.dev_per_class <= args.judge_per_class:
        ap.error("--dev-per-class must exceed --judge-per-class (the rest scores the cells)")
    if not 0.0 <= args.threshold <= 1.0:
        ap.error("--threshold is in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli(run, render, parse_args(argv))


if __name__ == "__main__":
    main()
