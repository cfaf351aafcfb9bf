"""Is the classic baseline's choice on the validation split a choice or a coin? Measured on a dev split.

``augment evaluate`` picks the verdict's classic baseline among ``evaluate.classic`` x
``evaluate.classic_sampling`` by the best mean validation balanced accuracy over
``evaluate.select_seeds`` classifier seeds. On the Fashion-MNIST long tail that split is 42 images (the
rarest class has one or two), so the pick may be noise, and a noisy pick is a weaker baseline than the
candidates allow. This benchmark trains every candidate of the library's defaults (whatever the profile's
config narrows them to) with ``--seeds`` selection seeds (the product's
own: ``seed + 100, + 101, ...``, so the first is bit for bit the cell ``augment evaluate`` trains) and
scores each classifier on the validation split and on a **dev split** of ``--dev-per-class`` real images
per class the data limit left out (disjoint from train, val and test, as ``sample_use.py`` takes it). The
ranking never loads the test split.

Then it replays selection rules on those numbers: for every subset of ``k`` seeds, the rule picks on the
subset's validation scores and the pick is judged by its dev accuracy on the *other* seeds (fresh
classifiers, as the verdict trains): how often the rule finds the dev-best candidate and its mean
regret (dev-best minus the pick, in points). Rules: ``argmax`` (the product's: the best validation
mean) and ``one-se`` (the first candidate, in the product's order from simple to rich, whose validation
mean is within one binomial standard error of the best, the Breiman et al. rule). Classic cells do not
depend on a generator, so no run directory is needed::

    .venv/bin/python benchmarks/classic_selection.py --profile longtail --seeds 6 --dev-per-class 500 \\
        --workers 2 --json /tmp/classic_selection.json [--set evaluate.precision=fp32] [--test]

With ``--test`` (``--ranked JSON`` reuses a ranking), the dev-best candidate alone is then trained on the
verdict's classifier seeds and scored on the test split: the classic baseline that stored GAN cells can
be paired against (``sample_use_spread.py --baseline``), chosen without reading the test split.

Prints markdown tables; ``--json`` writes the numbers; nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment.config import Config, EvaluateConfig, load_config  # noqa: E402
from augment.data import PreparedData, load_data  # noqa: E402
from augment.errors import ConfigError  # noqa: E402
from augment.metrics import downstream  # noqa: E402
from augment.metrics.classic import classic_label  # noqa: E402
from augment.metrics.classifier_training import (  # noqa: E402
    balanced_accuracy_se,
    predict_proba,
    score,
    torch_threads,
    train_classifier,
)
from augment.metrics.regimes import BASELINE  # noqa: E402
from augment.metrics.verdict import mean_ci  # noqa: E402
from benchmarks.common import command, git_commit, machine, run_cli  # noqa: E402
from benchmarks.limited_data import PROFILES, make_executor  # noqa: E402
from benchmarks.sample_use import dev_split  # noqa: E402

#: argmax: the product's (best mean val balanced accuracy); one-se: the first candidate within one standard
#: error of it; min-nll / max-prob: the best class-balanced val log-likelihood / true-class probability.
RULES = ("argmax", "one-se", "min-nll", "max-prob")


def cell(plan: downstream.Plan, scored: str, item: tuple[str, str, int]) -> dict[str, Any]:
    """Train the baseline regime with one candidate's policy and sampling; its val scores and those on
    ``plan.test_images``, named ``scored``: "dev" (the ranking: the dev split is there) or "test"."""
    policy, sampling, seed = item
    p = dataclasses.replace(plan, classic=policy, classic_sampling=sampling)
    model, _ = train_classifier(p, BASELINE, seed)
    out: dict[str, Any] = {"policy": policy, "sampling": sampling, "seed": seed}
    with torch_threads(p.threads or 1):
        for split, images, labels in (("val", p.val_images, p.val_labels), (scored, p.test_images, p.test_labels)):
            probs = predict_proba(model, images)
            s = score(labels, probs.argmax(dim=1), p.num_classes)
            out[split] = s["balanced_accuracy"]
            out[f"{split}_recall"] = s["per_class_recall"]
            out[f"{split}_nll"], out[f"{split}_prob"] = balanced_soft_scores(probs, labels, p.num_classes)
    return out


def balanced_soft_scores(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """Class-balanced mean negative log-likelihood and mean probability of the true class: the
    balanced accuracy's smooth siblings (each image counts by how sure, not only whether, it is right)."""
    p_true = probs.gather(1, labels[:, None]).flatten().double()
    nll = -torch.log(p_true.clamp_min(1e-12))
    present = [c for c in range(num_classes) if (labels == c).any()]
    return (
        float(np.mean([nll[labels == c].mean().item() for c in present])),
        float(np.mean([p_true[labels == c].mean().item() for c in present])),
    )


def pick(rule: str, val: dict[str, np.ndarray], counts: list[int]) -> int:
    """The candidate ``rule`` picks from validation scores ``val[name][seed, candidate]`` (ties: the earlier).

    ``val`` holds ``acc`` (balanced accuracy), ``nll`` and ``prob`` (:func:`balanced_soft_scores`) and
    ``recall[seed, candidate, class]`` (``one-se``'s standard error: the best's mean recalls).
    """
    if rule == "min-nll":
        return int(np.argmin(val["nll"].mean(axis=0)))
    if rule == "max-prob":
        return int(np.argmax(val["prob"].mean(axis=0)))
    means = val["acc"].mean(axis=0)
    best = int(np.argmax(means))  # the first maximum: the product's tie rule
    if rule == "argmax":
        return best
    if rule == "one-se":
        se = balanced_accuracy_se(val["recall"][:, best].mean(axis=0).tolist(), counts)
        return int(np.flatnonzero(means >= means[best] - se - 1e-12)[0])
    raise ValueError(f"unknown rule {rule!r} (one of {RULES})")


def replay(rule: str, k: int, val: dict[str, np.ndarray], dev: np.ndarray, counts: list[int]) -> dict[str, Any]:
    """``rule`` on every ``k``-subset of the seeds, judged on the dev accuracy of the other seeds."""
    n_seeds, n_cand = dev.shape
    picks, hits, regrets = [], [], []
    for subset in itertools.combinations(range(n_seeds), k):
        rest = [s for s in range(n_seeds) if s not in subset]
        truth = dev[rest].mean(axis=0)
        chosen = pick(rule, {name: v[list(subset)] for name, v in val.items()}, counts)
        picks.append(chosen)
        hits.append(chosen == int(np.argmax(truth)))
        regrets.append(100 * float(truth.max() - truth[chosen]))
    return {
        "rule": rule,
        "k": k,
        "subsets": len(picks),
        "hit_rate": float(np.mean(hits)),
        "mean_regret_pts": float(np.mean(regrets)),
        "max_regret_pts": float(np.max(regrets)),
        "pick_counts": np.bincount(picks, minlength=n_cand).tolist(),
    }


def only(candidates: list[tuple[str, str]], labels: list[str] | None) -> list[tuple[str, str]]:
    """The candidates named in ``labels`` (:func:`classic_label` spelling), in the product's order."""
    if not labels:
        return candidates
    known = {classic_label(pol, samp): (pol, samp) for pol, samp in candidates}
    unknown = [lab for lab in labels if lab not in known]
    if unknown:
        raise ConfigError(f"--only: unknown candidate(s) {unknown} (one of {list(known)})")
    return [pair for lab, pair in known.items() if lab in labels]


def _cells(plan: downstream.Plan, scored: str, items: list[tuple[str, str, int]], workers: int) -> list[dict]:
    executor = make_executor(workers)
    try:
        out = []
        for c in (map if executor is None else executor.map)(functools.partial(cell, plan, scored), items):
            out.append(c)
            label = classic_label(c["policy"], c["sampling"])
            print(f"{label} seed {c['seed']}: val {c['val']:.3f} {scored} {c[scored]:.3f}", flush=True)
        return out
    finally:
        if executor is not None:
            executor.shutdown()


def run(args: argparse.Namespace) -> dict[str, Any]:
    profile = PROFILES[args.profile]
    sets = [*profile.overrides, *args.set, "evaluate.threads=1", "evaluate.tune=false"]
    cfg = load_config(REPO / profile.config, sets)
    ev = cfg.evaluate
    data = load_data(cfg.data, cfg.seed)
    c, h, w = data.train.images.shape[1:]
    no_images, no_labels = torch.empty((0, c, h, w), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    # one policy and sampling, no tuning: prepare() trains no selection cell, the candidates below are the selection
    base = ev.model_copy(
        update={"regimes": [BASELINE], "classic": ev.classic[:1], "classic_sampling": ev.classic_sampling[:1]}
    )
    plan = downstream.prepare(data, no_images, no_labels, base, seed=cfg.seed)
    if args.ranked is not None:
        res = json.loads(args.ranked.read_text())
        if (res["profile"], res["sets"], res["classifier"]["precision"]) != (args.profile, args.set, plan.precision):
            raise ConfigError(f"{args.ranked}: ranked for another profile, config or precision than asked")
        if args.only:  # the same cells, fewer candidates: the replay as if the product offered only these
            ranked = [(c["policy"], c["sampling"]) for c in res["candidates"]]
            counts = list(res["val_counts"].values())
            res = {
                **res,
                "only": args.only,
                **tabulate(res["cells"], only(ranked, args.only), res["classifier"]["seeds"], counts),
            }
    else:
        res = rank(args, cfg, data, plan)
    if args.test:
        res["test"] = test_dev_best(res, plan, cfg.seed, args.test_seeds or ev.seeds, args.workers)
    return res


def rank(args: argparse.Namespace, cfg: Config, data: PreparedData, plan: downstream.Plan) -> dict[str, Any]:
    """Every candidate x ``--seeds`` selection seeds on val and dev; the rules replayed."""
    ev = cfg.evaluate
    dev = dev_split(cfg, data, args.dev_per_class)
    plan = dataclasses.replace(plan, test_images=dev.images, test_labels=dev.labels)
    # The library's candidates (what augment evaluate chooses among unless a config narrows them), in its order.
    policies, samplings = (
        EvaluateConfig().classic,
        downstream.classic_samplings(plan, EvaluateConfig().classic_sampling),
    )
    candidates = only([(pol, samp) for samp in samplings for pol in policies], args.only)
    seeds = [cfg.seed + downstream.SELECT_SEED_OFFSET + i for i in range(args.seeds)]
    items = [(pol, samp, s) for s in seeds for pol, samp in candidates]
    print(
        f"{len(candidates)} candidates x {len(seeds)} seeds, {ev.steps} steps ({plan.precision}); "
        f"val {len(data.val)} images, dev {len(dev)}",
        flush=True,
    )
    t0 = time.time()
    cells = _cells(plan, "dev", items, args.workers)
    seconds = time.time() - t0
    counts = torch.bincount(plan.val_labels, minlength=plan.num_classes).tolist()
    return {
        "benchmark": "classic_selection",
        "profile": args.profile,
        "sets": args.set,
        "only": args.only,
        "sizes": {"train": len(data.train), "val": len(data.val), "dev": len(dev)},
        "val_counts": dict(zip(plan.class_names, counts, strict=True)),
        "classifier": {
            "name": ev.classifier,
            "steps": ev.steps,
            "batch_size": ev.batch_size,
            "precision": plan.precision,
            "seeds": seeds,
        },
        **tabulate(cells, candidates, seeds, counts),
        "cells": cells,
        "seconds": seconds,
        "machine": machine(),
        "commit": git_commit(),
        "command": command(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def tabulate(
    cells: list[dict[str, Any]], candidates: list[tuple[str, str]], seeds: list[int], counts: list[int]
) -> dict[str, Any]:
    """The candidates' val and dev means, the dev best and the rules replayed, from the cells of
    ``candidates`` x ``seeds`` (any other cell is ignored)."""
    by_key = {(c["policy"], c["sampling"], c["seed"]): c for c in cells}
    grid = [[by_key[(pol, samp, s)] for pol, samp in candidates] for s in seeds]

    def matrix(key: str) -> np.ndarray:
        return np.array([[c[key] for c in row] for row in grid])

    val = {"acc": matrix("val"), "nll": matrix("val_nll"), "prob": matrix("val_prob"), "recall": matrix("val_recall")}
    dev_acc = matrix("dev")
    labels = [classic_label(pol, samp) for pol, samp in candidates]
    best_dev = int(np.argmax(dev_acc.mean(axis=0)))
    return {
        "candidates": [
            {
                "label": lab,
                "policy": candidates[j][0],
                "sampling": candidates[j][1],
                "val": mean_ci([100 * v for v in val["acc"][:, j]]),
                "val_nll": float(val["nll"][:, j].mean()),
                "dev": mean_ci([100 * v for v in dev_acc[:, j]]),
                "dev_regret_pts": 100 * float(dev_acc.mean(axis=0)[best_dev] - dev_acc[:, j].mean()),
            }
            for j, lab in enumerate(labels)
        ],
        "dev_best": labels[best_dev],
        "rules": [
            {**replay(rule, k, val, dev_acc, counts), "picks": labels} for rule in RULES for k in range(1, len(seeds))
        ],
    }


def test_dev_best(res: dict[str, Any], plan: downstream.Plan, seed: int, n_seeds: int, workers: int) -> dict:
    """The dev-best candidate trained on the verdict's classifier seeds and scored on the test split:
    the classic baseline a noisy validation pick would be judged against (the pick only: no other
    candidate is scored on test)."""
    best = next(c for c in res["candidates"] if c["label"] == res["dev_best"])
    seeds = [seed + i for i in range(n_seeds)]  # augment evaluate's grid seeds
    print(f"test: {best['label']} on seeds {seeds}", flush=True)
    cells = _cells(plan, "test", [(best["policy"], best["sampling"], s) for s in seeds], workers)
    return {
        "label": best["label"],
        "policy": best["policy"],
        "sampling": best["sampling"],
        "steps": res["classifier"]["steps"],
        "precision": res["classifier"]["precision"],
        "seeds": seeds,
        "values": [c["test"] for c in cells],
        "per_class_recall": [c["test_recall"] for c in cells],
    }


def _ci(d: dict[str, Any]) -> str:
    return f"{d['mean']:.1f} [{d['ci_low']:.1f}, {d['ci_high']:.1f}]"


def render(res: dict[str, Any]) -> str:
    cl, n = res["classifier"], res["sizes"]
    lines = [
        f"classic_selection: {res['profile']} {' '.join(res['sets'])}".rstrip()
        + (f"; candidates offered: {' / '.join(res['only'])}" if res.get("only") else ""),
        "",
        f"{cl['name']}, {cl['steps']} steps of batch {cl['batch_size']} ({cl['precision']}); selection seeds "
        f"{cl['seeds']}; train/val/dev {n['train']}/{n['val']}/{n['dev']} (val per class: "
        f"{', '.join(str(v) for v in res['val_counts'].values())}); {res['seconds']:.0f} s; "
        f"commit {res['commit']}; {res['date']}",
        "",
        "| candidate (product order) | val balanced accuracy % (mean [95% CI] over seeds) | val balanced NLL | dev % "
        "| dev regret (pts) |",
        "|---|---|---|---|---|",
    ]
    for cand in res["candidates"]:
        star = " **(dev best)**" if cand["label"] == res["dev_best"] else ""
        lines.append(
            f"| {cand['label']}{star} | {_ci(cand['val'])} | {cand['val_nll']:.3f} | {_ci(cand['dev'])} "
            f"| {cand['dev_regret_pts']:.1f} |"
        )
    lines += [
        "",
        "Selection rules replayed on every k-seed subset, each pick judged by the dev accuracy of the other seeds:",
        "",
        "| rule | k seeds | subsets | finds the dev best | mean regret (pts) | worst regret (pts) "
        "| picks (per candidate) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rules"]:
        lines.append(
            f"| {r['rule']} | {r['k']} | {r['subsets']} | {100 * r['hit_rate']:.0f}% | {r['mean_regret_pts']:.2f} | "
            f"{r['max_regret_pts']:.1f} | {' / '.join(str(x) for x in r['pick_counts'])} |"
        )
    if "test" in res:
        t = res["test"]
        lines += [
            "",
            f"Test split, the dev-best candidate only: **{t['label']}**, {t['steps']} steps ({t['precision']}), seeds "
            f"{t['seeds']}: balanced accuracy {_ci(mean_ci([100 * v for v in t['values']]))} % "
            "(pair it with GAN regimes' cells: `sample_use_spread.py --baseline`).",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="longtail", choices=list(PROFILES))
    ap.add_argument("--seeds", type=int, default=6, help="selection seeds per candidate (>= 2: one is left for dev)")
    ap.add_argument("--dev-per-class", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2, help="single-threaded cell processes (1: in this process)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument(
        "--test",
        action="store_true",
        help="then train the dev-best candidate on the verdict's seeds and score it on the test split",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="LABEL",
        help="rank only these candidates (repeatable; as printed, e.g. 'crop+flip, class-balanced'); "
        "with --ranked, replay the stored cells as if the product offered only these",
    )
    ap.add_argument(
        "--test-seeds",
        type=int,
        default=None,
        help="classifier seeds of --test (default: evaluate.seeds; sample_use.py's --seeds to pair with its results)",
    )
    ap.add_argument("--ranked", type=Path, default=None, help="a ranking JSON of this script: skip the ranking")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error("--seeds must be at least 2: the rules pick on some seeds and are judged on the others")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli(run, render, parse_args(argv))


if __name__ == "__main__":
    main()
