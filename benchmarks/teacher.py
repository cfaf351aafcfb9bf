"""``evaluate.teacher`` end to end: a run's verdict without a teacher and with one, on the real test split.

The teacher is what the label-fidelity diagnostic found the long tail's missing points to be: a classifier
that saw more labelled images than the GAN did. It is trained here on ``--teacher-per-class`` real images per
class that the run's data limit left out (the first ones of ``sample_use.py``'s dev split, after the test
split's images: disjoint from train, val and test, which ``evaluate.teacher`` checks by pixel digests), as
``--members`` SmallCNNs with the run's classic baseline, and written with ``save_teacher``. Then
``evaluate_run`` runs twice on copies of the run directory, with the same seeds:

* **plain**: the run's own evaluation (``real+classic`` the classic baseline);
* **teacher**: ``evaluate.teacher`` + ``soft_labels``: the synthetic images trained against the teacher's
  probabilities, and ``real+classic`` distilled the same way (its teacher-labelled share from the real images).

Reported, paired by classifier seed: the two verdicts (each regime against its own baseline); the distilled
baseline against the plain one (what the teacher gives without synthetic images); the teacher's GAN regime
against the plain baseline (both together); ``real``, which neither changes, as a check. Nothing is chosen
here, so the test split is read once per evaluation, as ``augment evaluate`` reads it. ::

    .venv/bin/python benchmarks/teacher.py RUN_DIR --json /tmp/teacher.json

Prints markdown tables; nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment import rundir  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.metrics.evaluate import evaluate_run  # noqa: E402
from augment.metrics.regimes import BASELINE  # noqa: E402
from augment.metrics.teacher import baseline_plan, load_teacher, save_teacher, train_teacher  # noqa: E402
from augment.metrics.verdict import mean_ci  # noqa: E402
from benchmarks.common import command, git_commit, machine, run_cli  # noqa: E402
from benchmarks.label_fidelity import halves  # noqa: E402
from benchmarks.limited_data import make_executor  # noqa: E402
from benchmarks.sample_use import _ci, dev_split  # noqa: E402


def by_seed(cells: list[dict[str, Any]], regime: str) -> dict[int, dict[str, Any]]:
    return {c["seed"]: c for c in cells if c["regime"] == regime}


def paired_pts(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """``a`` - ``b`` in balanced-accuracy points, paired by seed, with its 95% interval and per-class means."""
    seeds = sorted(set(a) & set(b))
    out = mean_ci([100 * (a[s]["balanced_accuracy"] - b[s]["balanced_accuracy"]) for s in seeds])
    out["per_class"] = {
        n: round(sum(100 * (a[s]["per_class_recall"][c] - b[s]["per_class_recall"][c]) for s in seeds) / len(seeds), 2)
        for c, n in enumerate(names)
    }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    sets = [f"evaluate.seeds={args.seeds}", "evaluate.threads=1", f"evaluate.regimes=[{','.join(args.regimes)}]"]
    sets.append(f"evaluate.cache_dir={args.out / 'cache'}")  # one domain extractor for both evaluations
    if args.steps:
        sets.append(f"evaluate.steps={args.steps}")
    sets += args.set  # both evaluations, e.g. evaluate.synthetic_per_class=1000
    cfg = rundir.run_config(args.run_dir, sets)
    data = load_data(cfg.data, cfg.seed)
    dev = dev_split(cfg, data, args.dev_per_class)
    held, rest = halves(dev, data.num_classes, args.teacher_per_class)
    names = list(data.class_names)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher_path = args.out / "teacher.pt"
    executor = make_executor(args.workers)
    map_fn = None if executor is None else (lambda fn, items: executor.map(fn, items))
    t0 = time.time()
    try:
        # The teacher trains as the run's classic baseline would, on the held-out images.
        plan = baseline_plan(cfg, data)
        spec = dataclasses.replace(plan, train_images=held.images, train_labels=held.labels)
        models = train_teacher(spec, list(range(args.members)))
        info = {
            "images": len(held),
            "source": f"{args.teacher_per_class} per class of the run's dev split (left out by its limit)",
            "classic": plan.classic,
            "classic_sampling": plan.classic_sampling,
            "steps": plan.steps,
        }
        save_teacher(teacher_path, models, plan.classifier, names, held.images, info)
        teacher_s = time.time() - t0
        acc = float((load_teacher(teacher_path).probs(rest.images).argmax(dim=1) == rest.labels).double().mean())
        results = {}
        for name, extra in (
            ("plain", []),
            ("teacher", [f"evaluate.teacher={teacher_path}", "evaluate.soft_labels=true"]),
        ):
            run_dir = args.out / name
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(args.run_dir, run_dir, ignore=shutil.ignore_patterns("eval"))
            t1 = time.time()
            ev = evaluate_run(run_dir, overrides=[*sets, *extra], progress=False, map_fn=map_fn)
            results[name] = {"downstream": ev["downstream"], "seconds": round(time.time() - t1, 1)}
    finally:
        if executor is not None:
            executor.shutdown()
    plain, taught = (results[k]["downstream"]["cells"] for k in ("plain", "teacher"))
    gan = args.regimes[-1]
    comparisons = {
        "plain verdict: GAN regime vs the classic baseline": paired_pts(
            by_seed(plain, gan), by_seed(plain, BASELINE), names
        ),
        "teacher verdict: GAN regime vs the distilled baseline": paired_pts(
            by_seed(taught, gan), by_seed(taught, BASELINE), names
        ),
        "the teacher alone: distilled baseline vs the classic baseline": paired_pts(
            by_seed(taught, BASELINE), by_seed(plain, BASELINE), names
        ),
        "both: teacher GAN regime vs the classic baseline": paired_pts(
            by_seed(taught, gan), by_seed(plain, BASELINE), names
        ),
    }
    if "real" in args.regimes:
        comparisons["check: real, teacher run vs plain run"] = paired_pts(
            by_seed(taught, "real"), by_seed(plain, "real"), names
        )
    return {
        "benchmark": "teacher",
        "run_dir": str(args.run_dir),
        "regime": gan,
        "teacher": {
            "path": str(teacher_path),
            "members": args.members,
            "images": len(held),
            "accuracy_on_the_rest_of_dev": round(acc, 4),
            "rest_of_dev": len(rest),
            "seconds": round(teacher_s, 1),
            "selection": results["teacher"]["downstream"]["selection"].get("teacher"),
        },
        "verdicts": {k: v["downstream"]["verdict"]["text"] for k, v in results.items()},
        "accuracy": {
            k: {
                r: mean_ci([100 * c["balanced_accuracy"] for c in v["downstream"]["cells"] if c["regime"] == r])
                for r in args.regimes
            }
            for k, v in results.items()
        },
        "comparisons": comparisons,
        "seconds": {k: v["seconds"] for k, v in results.items()},
        "seeds": args.seeds,
        "overrides": args.set,
        "steps": results["plain"]["downstream"]["steps"],
        "n_test": results["plain"]["downstream"]["n_test"],
        "baseline": {"classic": plan.classic, "classic_sampling": plan.classic_sampling},
        "machine": machine(),
        "commit": git_commit(),
        "command": command(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def render(res: dict[str, Any]) -> str:
    t = res["teacher"]
    names = list(next(iter(res["comparisons"].values()))["per_class"])
    lines = [
        f"Teacher: {t['members']} SmallCNNs on {t['images']} held-out real images, "
        f"{100 * t['accuracy_on_the_rest_of_dev']:.1f}% "
        f"on the other {t['rest_of_dev']} dev images; {res['seeds']} classifier seeds x {res['steps']} steps, "
        f"scored on {res['n_test']} test images.",
        "",
        "| run | " + " | ".join(res["accuracy"]["plain"]) + " |",
        "|---|" + "---:|" * len(res["accuracy"]["plain"]),
    ]
    for run_name, accs in res["accuracy"].items():
        lines.append(f"| {run_name} | " + " | ".join(f"{a['mean']:.2f}" for a in accs.values()) + " |")
    lines += ["", f"| comparison ({res['regime']}) | Δ, pts | " + " | ".join(names) + " |"]
    lines.append("|---|---|" + "---:|" * len(names))
    for name, c in res["comparisons"].items():
        lines.append(f"| {name} | {_ci(c)} | " + " | ".join(f"{c['per_class'][n]:+.1f}" for n in names) + " |")
    lines += ["", *(f"- {k}: {v}" for k, v in res["verdicts"].items())]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder for the teacher file and the two run copies")
    ap.add_argument("--dev-per-class", type=int, default=500, help="left-out real images per class (default 500)")
    ap.add_argument("--teacher-per-class", type=int, default=250, help="of which train the teacher (default 250)")
    ap.add_argument("--members", type=int, default=3, help="teacher classifiers averaged (default 3)")
    ap.add_argument(
        "--regimes",
        type=lambda s: s.split(","),
        default=["real", "real+classic", "real+gan+classic"],
        help="the evaluations' regimes, the GAN regime last (default real,real+classic,real+gan+classic)",
    )
    ap.add_argument("--steps", type=int, default=None, help="classifier steps (default: the run's)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="single-threaded cell processes (default 2)")
    ap.add_argument(
        "--set", action="append", default=[], help="config override for both evaluations (repeatable), KEY=VALUE"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if BASELINE not in args.regimes or "gan" not in args.regimes[-1]:
        ap.error(f"--regimes must hold {BASELINE} and end with a GAN regime")
    if min(args.members, args.seeds, args.teacher_per_class, args.steps or 1) < 1:
        ap.error("--members, --seeds, --teacher-per-class and --steps are 1 or more")
    if args.dev_per_class <= args.teacher_per_class:
        ap.error("--dev-per-class must exceed --teacher-per-class (the rest scores the teacher)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli(run, render, parse_args(argv))


if __name__ == "__main__":
    main()
