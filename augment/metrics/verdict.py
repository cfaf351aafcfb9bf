"""The downstream verdict: intervals over seeds, paired deltas, the plain answer and what to deploy.

:func:`summarize` turns the cells of a downstream grid (:mod:`augment.metrics.downstream`) into
means with 95% t-intervals per regime, deltas against ``real+classic`` (and ``real``) paired by
seed, per-class recall and summed confusion matrices; :func:`verdict` says in words whether a GAN
regime helped; :func:`deployment` gives the line of code to copy only where a deployed regime
measurably beat both baselines.

Example:
    >>> summary = summarize(plan, cells)  # doctest: +SKIP
    >>> summary["verdict"]["text"]  # doctest: +SKIP
    'No measurable benefit: ...'
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from augment.metrics.classic import classic_label
from augment.metrics.classifier_training import balanced_topup, per_class_synthetic_share
from augment.metrics.regimes import BASELINE, DEPLOYED_REGIMES, GAN_REGIMES, MIN_VERDICT_SEEDS, VERDICT_METRIC

if TYPE_CHECKING:
    from augment.metrics.downstream import Plan

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and the t-distribution interval of the mean (None with fewer than 2 values)."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"mean": float(arr.mean()) if len(arr) else None, "n": len(arr), "values": arr.tolist()}
    if len(arr) >= 2:
        half = float(stats.t.ppf(0.5 + level / 2, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
        out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    else:
        out.update(ci_low=None, ci_high=None)
    return out


def crossed_ci(values: list[list[float]], level: float = 0.95) -> dict[str, Any]:
    """Mean and interval of paired deltas measured on every (training, classifier seed) cell.

    ``values[t][s]``: training ``t``'s paired delta on classifier seed ``s`` (the same seeds, hence the
    same baseline cells, in every training). The trainings and the seeds are crossed random effects
    (two-way ANOVA without replication): the grand mean's variance is (MS_T + MS_S - MS_E) / (T S),
    with Satterthwaite's degrees of freedom. MS_S carries the seeds' noise that every training shares
    through the one baseline, which the spread of the per-training means alone (:func:`mean_ci` over
    them) cannot see; the variance is never taken below that spread's (MS_T / (T S), T - 1 degrees of
    freedom). ``n`` is the number of trainings, ``values`` their means, ``df`` the degrees of freedom.
    With one seed this is :func:`mean_ci` over the trainings.

    Example:
        >>> ci = crossed_ci([[0.01, 0.02, 0.03], [0.02, 0.03, 0.04], [0.00, 0.02, 0.01]])
        >>> ci["n"], round(ci["mean"], 3), round(ci["ci_low"], 3), round(ci["ci_high"], 3), round(ci["df"], 1)
        (3, 0.02, -0.002, 0.042, 3.4)
    """
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.shape[0] < 2:
        out = mean_ci(arr.mean(axis=1).tolist() if arr.ndim == 2 else arr.tolist(), level)
        out["df"] = out["n"] - 1 if out["ci_low"] is not None else None
        return out
    t, s = arr.shape
    grand, rows, cols = arr.mean(), arr.mean(axis=1), arr.mean(axis=0)
    ms_t = s * float(((rows - grand) ** 2).sum()) / (t - 1)
    ms_s = t * float(((cols - grand) ** 2).sum()) / (s - 1)
    resid = arr - rows[:, None] - cols[None, :] + grand
    ms_e = float((resid**2).sum()) / ((t - 1) * (s - 1))
    combined = ms_t + ms_s - ms_e
    if combined > ms_t:
        var = combined / (t * s)
        df = combined**2 / (ms_t**2 / (t - 1) + ms_s**2 / (s - 1) + ms_e**2 / ((t - 1) * (s - 1)))
    else:  # the seeds add nothing measurable: the spread over trainings alone
        var, df = ms_t / (t * s), float(t - 1)
    half = float(stats.t.ppf(0.5 + level / 2, df) * math.sqrt(var))
    mean = float(grand)
    return {
        "mean": mean,
        "n": t,
        "values": rows.tolist(),
        "seeds": s,
        "df": df,
        "ci_low": mean - half,
        "ci_high": mean + half,
    }


def judge(ci: dict[str, Any], too_few: str = "not enough seeds for an interval") -> str:
    """ "helped" / "hurt" / "no measurable benefit" by where the 95% interval of a delta lies, or
    ``too_few`` with fewer than :data:`MIN_VERDICT_SEEDS` values (seeds here, trainings in :mod:`.spread`)."""
    if ci["ci_low"] is None or ci["n"] < MIN_VERDICT_SEEDS:
        return too_few
    if ci["ci_low"] > 0:
        return "helped"
    if ci["ci_high"] < 0:
        return "hurt"
    return "no measurable benefit"


def pts(x: float) -> str:
    """A fraction as signed points: 0.0123 -> '+1.2'."""
    return f"{100 * x:+.1f}"


def _summary_share_per_class(plan: Plan) -> dict[str, float] | None:
    """:func:`per_class_synthetic_share` where the grid mixes synthetic and real images; None
    without such a regime, or for a plan re-summarising stored cells without its images
    (``benchmarks/evaluate_fashion.py``): the batch composition is unknown there, not zero."""
    if not any(r in plan.regimes for r in GAN_REGIMES):
        return None
    if len(plan.train_labels) == 0 or len(plan.synthetic_pool()[1]) == 0:
        return None
    return per_class_synthetic_share(plan)


def _summary_topup(plan: Plan) -> dict[str, int] | None:
    """Synthetic images per class that the balanced-dataset regime adds (None where not in the grid)."""
    if "balanced-dataset" not in plan.regimes or len(plan.train_labels) == 0:
        return None
    added = plan.synthetic_labels[balanced_topup(plan)].bincount(minlength=plan.num_classes).tolist()
    return dict(zip(plan.class_names, added, strict=True))


def summarize(plan: Plan, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate the grid: per regime mean/CI, paired deltas vs ``real+classic``, the verdict."""
    names = plan.class_names
    by: dict[str, dict[int, dict]] = {}
    for cell in cells:
        by.setdefault(cell["regime"], {})[cell["seed"]] = cell
    regimes: dict[str, Any] = {}
    for regime in [r for r in plan.regimes if r in by]:
        rows = [by[regime][s] for s in sorted(by[regime])]
        recall = np.array([r["per_class_recall"] for r in rows])
        regimes[regime] = {
            "seeds": [r["seed"] for r in rows],
            **{m: mean_ci([r[m] for r in rows]) for m in METRICS},
            "per_class_recall": dict(zip(names, recall.mean(axis=0).tolist(), strict=True)),
            "confusion": np.sum([r["confusion"] for r in rows], axis=0).tolist(),
            "steps": rows[0]["steps"],
            "batch_size": rows[0]["batch_size"],
            # Mean over seeds: the deployed regimes' real/synthetic mix varies with the draws.
            "images_real": round(float(np.mean([r["images_real"] for r in rows]))),
            "images_synthetic": round(float(np.mean([r["images_synthetic"] for r in rows]))),
        }
    baseline = BASELINE if BASELINE in regimes else ("real" if "real" in regimes else None)
    deltas: dict[str, Any] = {}
    if baseline is not None:
        for regime in regimes:
            if regime == baseline:
                continue
            seeds = sorted(set(by[regime]) & set(by[baseline]))  # paired by seed
            d = {m: mean_ci([by[regime][s][m] - by[baseline][s][m] for s in seeds]) for m in METRICS}
            rec = np.array(
                [np.subtract(by[regime][s]["per_class_recall"], by[baseline][s]["per_class_recall"]) for s in seeds]
            )
            d["per_class_recall"] = {n: mean_ci(rec[:, c].tolist()) for c, n in enumerate(names)}
            deltas[regime] = d
    # The GAN regimes against real-only training too: the verdict's guard against a weak baseline.
    deltas_vs_real: dict[str, Any] = {}
    if baseline == BASELINE and "real" in regimes:
        for regime in [r for r in GAN_REGIMES if r in regimes]:
            seeds = sorted(set(by[regime]) & set(by["real"]))
            deltas_vs_real[regime] = {m: mean_ci([by[regime][s][m] - by["real"][s][m] for s in seeds]) for m in METRICS}
    out = {
        "baseline": baseline,
        "classic_policy": plan.classic,
        "classic_sampling": plan.classic_sampling,
        "classic_backend": plan.classic_backend,
        "synthetic_share": plan.synthetic_share,
        "synthetic_sampling": plan.synthetic_sampling,
        "gan_real_sampling": plan.gan_real_sampling,
        "classic_on_synthetic": plan.classic_on_synthetic,
        "synthetic_until": plan.synthetic_until,
        "synthetic_bn": plan.synthetic_bn,
        "confidence_threshold": plan.confidence_threshold,
        "soft_labels": plan.soft_labels,
        "synthetic_share_per_class": _summary_share_per_class(plan),
        "skipped_regimes": dict(plan.skipped_regimes),
        "balanced_topup": _summary_topup(plan),
        "classifier": plan.classifier,
        "steps": plan.steps,
        "batch_size": plan.batch_size,
        "precision": plan.precision,
        "seeds": plan.seeds,
        "n_test": len(plan.test_labels),
        "selection": plan.selection,
        "regimes": regimes,
        "deltas": deltas,
        "deltas_vs_real": deltas_vs_real,
    }
    out["verdict"] = verdict(out)
    return out


def baseline_label(summary: dict[str, Any]) -> str:
    """The classic baseline of a downstream summary as reports name it (policy, and class-balanced
    resampling where val chose it; summaries written before ``classic_sampling`` read as natural), and
    "distilled from the teacher" where ``evaluate.teacher`` labelled its share of real images."""
    label = classic_label(summary.get("classic_policy") or "?", summary.get("classic_sampling") or "natural")
    if (summary.get("selection") or {}).get("teacher"):
        label += ", distilled from the teacher"
    return label


def _ci_text(d: dict[str, Any]) -> str:
    ci = f"95% CI [{pts(d['ci_low'])}, {pts(d['ci_high'])}] pts" if d["ci_low"] is not None else "no interval"
    return f"{pts(d['mean'])} pts ({ci}, {d['n']} seeds)"


def pick(
    candidates: list[str],
    delta: dict[str, dict[str, Any]],
    vs_real: dict[str, dict[str, Any]],
    too_few: str = "not enough seeds for an interval",
) -> tuple[str, str, bool]:
    """The verdict's rule: ``(best regime, status, weak_baseline)``.

    The best regime is the one with the highest mean among those that helped against the classic
    baseline *and* against real-only training (where ``vs_real`` has it), else among all
    ``candidates``; the status is :func:`judge` of its interval against the baseline, except that a
    regime which beat the baseline but not real-only training is "no measurable benefit" with
    ``weak_baseline`` True (the classic baseline chosen on validation is weak on the data).
    """
    winners = [
        r
        for r in candidates
        if judge(delta[r], too_few) == "helped" and (r not in vs_real or judge(vs_real[r], too_few) == "helped")
    ]
    best = max(winners or candidates, key=lambda r: delta[r]["mean"])
    status = judge(delta[best], too_few)
    weak_baseline = status == "helped" and not winners
    return best, "no measurable benefit" if weak_baseline else status, weak_baseline


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """The plain answer: did a GAN regime beat the classic baseline, by how much, for which classes.

    "Helped" needs the paired interval against ``real+classic`` above zero *and*, when the grid
    has ``real``, the interval against ``real`` above zero too: a classic baseline that the small
    validation split chose badly must not flatter the GAN (the real-only regime is the check).
    """
    base, m = summary["baseline"], VERDICT_METRIC
    deltas, vs_real = summary["deltas"], summary.get("deltas_vs_real", {})
    candidates = [r for r in GAN_REGIMES if r in deltas]
    if base != BASELINE or not candidates:
        return {"status": "not evaluated", "text": "No verdict: the grid needs real+classic and a real+gan regime."}

    best, status, weak_baseline = pick(
        candidates, {r: deltas[r][m] for r in candidates}, {r: vs_real[r][m] for r in vs_real}
    )
    d = deltas[best][m]
    base_desc = f"the classic baseline ({BASELINE} with {baseline_label(summary)})"
    metric_name = m.replace("_", " ")
    real_note = f" and real-only training by {_ci_text(vs_real[best][m])}" if best in vs_real else ""
    if weak_baseline:
        real_vs_base = ""
        if "real" in deltas:
            real_vs_base = f" (real-only vs the classic baseline: {_ci_text(deltas['real'][m])})"
        text = (
            f"No measurable benefit: {best} beat {base_desc} by {_ci_text(d)} {metric_name}, but not real-only "
            f"training ({_ci_text(vs_real[best][m])}), so the gain is no evidence for the GAN: the classic "
            f"baseline chosen on the validation split is weak on this data{real_vs_base}."
        )
    elif status == "helped":
        text = f"GAN augmentation helped: {best} beat {base_desc} by {_ci_text(d)} {metric_name}{real_note}."
    elif status == "hurt":
        text = (
            f"GAN augmentation hurt: the best GAN regime, {best}, scored {_ci_text(d)} {metric_name} "
            f"against {base_desc}."
        )
    elif status == "no measurable benefit":
        text = (
            f"No measurable benefit: the best GAN regime, {best}, differs from {base_desc} by {_ci_text(d)} "
            f"{metric_name}; the interval includes 0."
        )
    else:
        text = (
            f"Not enough seeds for a verdict (needs {MIN_VERDICT_SEEDS}, evaluate.seeds): {best} vs {base_desc}: "
            f"{_ci_text(d)} {metric_name}."
        )
    per_class = deltas[best]["per_class_recall"]
    helped = [c for c, v in per_class.items() if judge(v) == "helped"]
    hurt = [c for c, v in per_class.items() if judge(v) == "hurt"]
    if helped:
        text += (
            f" Classes whose recall rose against {BASELINE} (interval above 0): "
            + ", ".join(f"{c} {pts(per_class[c]['mean'])}" for c in helped)
            + "."
        )
    if hurt:
        text += (
            f" Classes whose recall fell against {BASELINE} (interval below 0): "
            + ", ".join(f"{c} {pts(per_class[c]['mean'])}" for c in hurt)
            + "."
        )
    if not helped and not hurt and status != "not enough seeds for an interval":
        text += " No class's recall changed measurably."
    if status in ("helped", "hurt") and not weak_baseline:
        # The interval holds classifier seeds around this one generator; a reseeded training moved the
        # answer by about a point on Fashion-MNIST (benchmarks/RESULTS.md).
        text += (
            " That is one training of the GAN: `augment run CONFIG --trainings 3` tells whether it "
            f"{status} across trainings."
        )
    return {
        "status": status,
        "metric": m,
        "regime": best,
        "baseline": BASELINE,
        "classic_policy": summary["classic_policy"],
        "classic_sampling": summary.get("classic_sampling", "natural"),
        "delta": d,
        "delta_vs_real": vs_real.get(best, {}).get(m),
        "classes_helped": helped,
        "classes_hurt": hurt,
        "text": text,
    }


# ------------------------------------------------------------------------------------------------
# deployment: the verdict as a line of code the user can copy.

DEPLOY_IMPORT = "from augment import AugmentedDataset, BalancedDataset, GanAugmenter"


def deploy_code(regime: str, run_dir: str, p: float) -> str:
    """The line that gives a user's ``train_set`` what the deployed ``regime`` trained on."""
    if regime == "gan-augmenter":
        return f'train_set = AugmentedDataset(train_set, GanAugmenter.from_checkpoint("{run_dir}", p={p:g}))'
    if regime == "balanced-dataset":
        return f'train_set = BalancedDataset(train_set, GanAugmenter.from_checkpoint("{run_dir}"))'
    raise ValueError(f"{regime!r} is not a deployed regime ({DEPLOYED_REGIMES})")


def deployment(summary: dict[str, Any], run_dir: str) -> dict[str, Any] | None:
    """What to put in training code, from the deployed regimes' test results (None: none in the grid).

    A deployed regime is recommended only by the verdict's rule: its paired interval against the
    classic baseline above 0 and, where the grid has ``real``, against real-only training too.
    Otherwise the text says not to deploy, and every measured line is still given with its delta.
    """
    m, deltas, vs_real = VERDICT_METRIC, summary.get("deltas", {}), summary.get("deltas_vs_real", {})
    rows: dict[str, Any] = {}
    for r in DEPLOYED_REGIMES:
        if r not in deltas:
            continue
        d, vr = deltas[r][m], vs_real.get(r, {}).get(m)
        helped = judge(d) == "helped" and (vr is None or judge(vr) == "helped")
        code = deploy_code(r, run_dir, summary["synthetic_share"])
        rows[r] = {"code": code, "delta": d, "delta_vs_real": vr, "helped": helped}
    if not rows:
        return None
    winners = [r for r in rows if rows[r]["helped"]]
    best = max(winners, key=lambda r: rows[r]["delta"]["mean"]) if winners else None
    base = f"{BASELINE} with {baseline_label(summary)}"

    def measured(r: str) -> str:
        real = f", vs real-only {_ci_text(rows[r]['delta_vs_real'])}" if rows[r]["delta_vs_real"] else ""
        return f"{r} {_ci_text(rows[r]['delta'])} vs {base}{real}"

    if best is not None:
        text = f"Deploy it as measured ({measured(best)}): `{rows[best]['code']}`."
    else:
        text = (
            "Do not deploy it on this evidence: no way users deploy the generator measurably beat "
            f"{base} and real-only training ({'; '.join(measured(r) for r in rows)}). "
            "Keep training without it; the lines measured are below."
        )
    return {"recommended": best, "import": DEPLOY_IMPORT, "regimes": rows, "text": text}
