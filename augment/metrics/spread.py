"""The downstream verdict over several GAN trainings of one dataset: is the gain the recipe's or one training's?

One evaluation's intervals hold the classifier seeds' noise around *one* trained generator. Training
the GAN again (``train.seed``) moves the answer too: on the Fashion-MNIST long tail the same recipe
read +2.1, +1.0 and +1.5 pts over the classic baseline on three trainings, each "helped" by its own
interval (benchmarks/RESULTS.md). :func:`spread` pools evaluated runs that differ only in the
training's seed: per training the paired mean delta against ``real+classic`` (and ``real``), then
the mean over trainings with its 95% interval over trainings *and* classifier seeds
(:func:`augment.metrics.verdict.crossed_ci`: every training shares the baseline's seeds, whose noise
the spread of the per-training means cannot show), and the verdict's rule on that interval:
"helped" only where it is above 0 against both baselines, with :data:`MIN_VERDICT_SEEDS` trainings
at least. Per class the same, on the recall changes.

Example:
    >>> out = spread_runs(["runs/00001-a", "runs/00002-a-seed1", "runs/00003-a-seed2"])  # doctest: +SKIP
    >>> out["verdict"]["text"]  # doctest: +SKIP
    'Over 3 trainings of the generator, GAN augmentation helped: real+gan+classic beat ... by +1.5 pts (95% CI ...'
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from augment.errors import AugmentError
from augment.metrics.regimes import BASELINE, GAN_REGIMES, MIN_VERDICT_SEEDS, REGIMES, VERDICT_METRIC
from augment.metrics.result import read_evaluation
from augment.metrics.verdict import baseline_label, crossed_ci, judge, pick, pts

#: The cells that do not depend on the generator: equal in every training of one dataset.
GAN_FREE = ("real", BASELINE)
#: Settings that may differ between the trainings of one recipe (they change where and how fast it
#: trains, or its random stream, not what it is).
TRAINING_FREE = {"seed", "device", "threads", "compile", "compile_mode", "channels_last", "cuda"}
#: Evaluation settings that say where the cells run or files live, not what they measure.
EVALUATION_FREE = {"inception_weights", "cache_dir", "threads", "stack_cells", "device", "workers", "dask_address"}


def _cells(down: dict[str, Any], regime: str) -> dict[Any, float]:
    r = down["regimes"][regime]
    return dict(zip(r["seeds"], r[VERDICT_METRIC]["values"], strict=True))


TOO_FEW = "too few trainings"


def _judge(ci: dict[str, Any]) -> str:
    return judge(ci, too_few=TOO_FEW)


def spread(downs: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The verdict over trainings from each training's downstream summary (``metrics.json["downstream"]``).

    Raises:
        AugmentError: fewer than two trainings, no ``real+classic`` regime, or GAN-free cells that differ
            (another dataset, split or classifier budget: not trainings of one dataset).
    """
    if len(downs) < 2:
        raise AugmentError("give at least two evaluated trainings of one dataset (other train.seed)")
    first = downs[0]
    for name, down in zip(names, downs, strict=True):
        if BASELINE not in down.get("regimes", {}):
            raise AugmentError(f"{name}: its evaluation has no {BASELINE} regime to compare against")
        other_baseline = ""
        if baseline_label(down) != baseline_label(first):
            other_baseline = (
                f"its classic baseline ({baseline_label(down)}) differs from {names[0]}'s ({baseline_label(first)}): "
                "evaluated with other settings or code; re-evaluate both with `augment evaluate`"
            )
        for regime in [r for r in GAN_FREE if r in first["regimes"] or r in down["regimes"]]:
            if (
                regime not in first["regimes"]
                or regime not in down["regimes"]
                or _cells(down, regime) != _cells(first, regime)
            ):
                also = f"; or {other_baseline}" if other_baseline else ""
                raise AugmentError(
                    f"{name}: its {regime} cells differ from {names[0]}'s: "
                    f"not the same data, split and classifier budget{also}"
                )
        if other_baseline:
            raise AugmentError(f"{name}: {other_baseline}")
        if down.get("seeds") != first.get("seeds"):
            raise AugmentError(
                f"{name}: classifier seeds {down.get('seeds')}, {names[0]}'s {first.get('seeds')}: "
                "the deltas are paired by seed, so every training needs the same seeds"
            )
    regimes: dict[str, Any] = {}
    for regime in [r for r in REGIMES if r not in GAN_FREE and all(r in d.get("deltas", {}) for d in downs)]:
        over = crossed_ci([d["deltas"][regime][VERDICT_METRIC]["values"] for d in downs])
        vs_real = None
        if all(regime in d.get("deltas_vs_real", {}) for d in downs):
            vs_real = crossed_ci([d["deltas_vs_real"][regime][VERDICT_METRIC]["values"] for d in downs])
        classes = first["deltas"][regime]["per_class_recall"]
        regimes[regime] = {
            "per_training": over["values"],  # each training's paired mean over the seeds
            "over_trainings": over,
            "sd": statistics.stdev(over["values"]),
            "vs_real": vs_real,
            "per_class_recall": {
                c: crossed_ci([d["deltas"][regime]["per_class_recall"][c]["values"] for d in downs]) for c in classes
            },
        }
    out = {
        "trainings": list(names),
        "metric": VERDICT_METRIC,
        "baseline": BASELINE,
        "classic_policy": first.get("classic_policy"),
        "classic_sampling": first.get("classic_sampling", "natural"),
        "seeds": first.get("seeds"),
        "regimes": regimes,
    }
    out["verdict"] = verdict(out)
    return out


def _interval(ci: dict[str, Any]) -> str:
    """``+1.5 [+0.1, +3.0]`` (the mean alone without an interval)."""
    return pts(ci["mean"]) + ("" if ci["ci_low"] is None else f" [{pts(ci['ci_low'])}, {pts(ci['ci_high'])}]")


def _ci_text(ci: dict[str, Any]) -> str:
    if ci["ci_low"] is None:
        return f"{pts(ci['mean'])} pts (no interval)"
    return f"{pts(ci['mean'])} pts (95% CI over trainings and seeds [{pts(ci['ci_low'])}, {pts(ci['ci_high'])}])"


def verdict(out: dict[str, Any]) -> dict[str, Any]:
    """:func:`augment.metrics.verdict.verdict`'s rule, read on the intervals over trainings."""
    regimes = out["regimes"]
    candidates = [r for r in GAN_REGIMES if r in regimes]
    n = len(out["trainings"])
    if not candidates:
        return {"status": "not evaluated", "text": "No verdict: the evaluations have no real+gan regime."}

    best, status, weak_baseline = pick(
        candidates,
        {r: regimes[r]["over_trainings"] for r in candidates},
        {r: regimes[r]["vs_real"] for r in candidates if regimes[r]["vs_real"] is not None},
        too_few=TOO_FEW,
    )
    row = regimes[best]
    base = f"the classic baseline ({BASELINE} with {baseline_label(out)})"
    each = ", ".join(pts(v) for v in row["per_training"])
    head, over = f"Over {n} trainings of the generator", _ci_text(row["over_trainings"])
    if status == TOO_FEW:
        text = (
            f"{head}, not enough for a verdict (needs {MIN_VERDICT_SEEDS}): {best} vs {base}: "
            f"{pts(row['over_trainings']['mean'])} pts on average (per training {each})."
        )
    elif status == "helped":
        text = f"{head}, GAN augmentation helped: {best} beat {base} by {over}; per training {each}."
    elif status == "hurt":
        text = f"{head}, GAN augmentation hurt: {best} scored {over} against {base}; per training {each}."
    else:
        text = f"{head}, no measurable benefit: {best} differs from {base} by {over}; per training {each}."
        if weak_baseline:
            text += f" It did not beat real-only training over trainings ({_ci_text(row['vs_real'])})."
    per_class = row["per_class_recall"]
    rose = [c for c, ci in per_class.items() if _judge(ci) == "helped"]
    fell = [c for c, ci in per_class.items() if _judge(ci) == "hurt"]
    listed = [
        f"recall {word} against {BASELINE} (interval {side} 0) for "
        + ", ".join(f"{c} {pts(per_class[c]['mean'])}" for c in classes)
        for word, side, classes in (("rose", "above", rose), ("fell", "below", fell))
        if classes
    ]
    if listed:
        text += " Per class over trainings, " + "; ".join(listed) + "."
    return {
        "status": status,
        "regime": best,
        "metric": VERDICT_METRIC,
        "delta": row["over_trainings"],
        "delta_vs_real": row["vs_real"],
        "classes_helped": rose,
        "classes_hurt": fell,
        "text": text,
    }


def table(out: dict[str, Any]) -> str:
    """The markdown table: one line per GAN regime, per-training deltas, the interval over trainings."""
    lines = [
        f"| regime | minus {BASELINE}, per training (pts) | mean over trainings (95% CI, trainings x seeds) | sd "
        "| vs real-only (95% CI) |",
        "|---|---|---|---|---|",
    ]
    for regime, r in out["regimes"].items():
        real = "" if r["vs_real"] is None else _interval(r["vs_real"])
        per = ", ".join(pts(v) for v in r["per_training"])
        lines.append(f"| {regime} | {per} | {_interval(r['over_trainings'])} | {100 * r['sd']:.1f} | {real} |")
    return "\n".join(lines)


def _recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """What must be equal across the trainings: the GAN recipe and what the evaluation measures
    (the data is compared by its fingerprint: the same images may live under another root)."""
    train = {k: v for k, v in cfg.get("train", {}).items() if k not in TRAINING_FREE}
    evaluate = {k: v for k, v in cfg.get("evaluate", {}).items() if k not in EVALUATION_FREE}
    return {"model": cfg.get("model"), "train": train, "evaluate": evaluate}


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else k)
    return f"{where} ({a!r} vs {b!r})"


def spread_runs(run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """:func:`spread` over evaluated run directories, after checking they are trainings of one recipe
    on one dataset that differ in their training seed (``train.seed``, else the top-level ``seed``)."""
    docs = [read_evaluation(d) for d in run_dirs]
    names = [str(d) for d in run_dirs]
    first = docs[0]
    seen: dict[int, str] = {}
    for name, doc in zip(names, docs, strict=True):
        if doc.get("data_fingerprint") != first.get("data_fingerprint"):
            raise AugmentError(
                f"{name}: trained on data {doc.get('data_fingerprint')}, "
                f"{names[0]} on {first.get('data_fingerprint')}: not one dataset"
            )
        a, b = _recipe(first["config"]), _recipe(doc["config"])
        if a != b:
            raise AugmentError(f"{name}: not the recipe of {names[0]}: {_first_difference(b, a)}")
        train_seed = doc["config"]["train"].get("seed")
        seed = doc["config"].get("seed") if train_seed is None else train_seed
        if seed in seen:
            raise AugmentError(
                f"{name}: the same training seed ({seed}) as {seen[seed]}: train the others with another train.seed"
            )
        seen[seed] = name
    out = spread([d["downstream"] for d in docs], names)
    out["train_seeds"] = list(seen)
    return out


def spread_figure(out: dict[str, Any]) -> Any:
    """Each GAN regime's delta per training (small dots) and their mean with the 95% interval over
    trainings (large dot, bar), against a zero line: right of it is better."""
    from augment.metrics.plots import _plt

    plt = _plt()
    regimes = list(out["regimes"])
    fig, ax = plt.subplots(figsize=(6.4, 1.3 + 0.45 * max(len(regimes), 1)))
    ax.axvline(0.0, color="0.3", linewidth=1, linestyle="--")
    for i, regime in enumerate(regimes):
        r = out["regimes"][regime]
        ax.plot([100 * v for v in r["per_training"]], [i + 0.2] * len(r["per_training"]), ".", color="0.5")
        c = r["over_trainings"]
        mean = 100 * c["mean"]
        if c["ci_low"] is None:
            ax.plot([mean], [i], "o", mfc="none", color="tab:orange")
            continue
        lo, hi = 100 * c["ci_low"], 100 * c["ci_high"]
        ax.errorbar([mean], [i], xerr=[[mean - lo], [hi - mean]], fmt="o", color="tab:orange", capsize=4)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="0.3", linestyle="--", label=f"no change vs {BASELINE}"),
        Line2D([], [], marker=".", linestyle="", color="0.5", label="one training"),
        Line2D([], [], marker="o", color="tab:orange", label="mean, 95% CI (trainings x seeds)"),
    ]
    ax.set_yticks(range(len(regimes)), regimes)
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ balanced accuracy vs {BASELINE} (pts), real test split")
    ax.set_title(f"Over {len(out['trainings'])} trainings: {out['verdict']['status']}", fontsize=9)
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, frameon=False)
    return fig


def report(out: dict[str, Any], name: str, runs: Sequence[tuple[int, str, str]]) -> str:
    """The markdown report of ``augment run --trainings``: the verdict over trainings, the table, and
    each training's run with its own verdict (``runs``: ``(train seed, run directory, status)``)."""
    seeds = out.get("seeds") or []
    lines = [
        f"# {name}: the verdict over {len(out['trainings'])} trainings of the generator",
        "",
        out["verdict"]["text"],
        "",
        f"Each training's delta is its paired mean over {len(seeds)} classifier seeds against {BASELINE} "
        f"({baseline_label(out)}), balanced accuracy on the real test split; the 95% interval counts both "
        "the trainings' spread and the classifier seeds' (trainings and seeds as crossed random effects); sd is "
        "the standard deviation of the per-training deltas.",
        "",
        table(out),
        "",
        "| training | train.seed | run directory | its own verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {i + 1} | {seed} | `{run_dir}` | {status} |" for i, (seed, run_dir, status) in enumerate(runs)]
    lines += ["", "![deltas per training](spread.png)", ""]
    return "\n".join(lines)
