"""The downstream grid: does GAN augmentation beat classic augmentation on a real test set?

A classifier is trained from scratch under each *regime* (:mod:`augment.metrics.classifier_training`
says what each regime's batches hold), with the same number of optimizer steps and the same batch
size in every regime, for several seeds, and scored on the real test split. The classic baseline
``real+classic`` uses the best of ``evaluate.classic`` x ``evaluate.classic_sampling`` on the
validation split (crop; crop+flip; crop+flip+affine; each drawing the real images uniformly or
class-balanced, so a long tail's GAN regimes, whose synthetic draws even out the classes, are not
judged against a baseline that never rebalances); ``balanced-dataset`` and class-balanced sampling
are left out where the train split is balanced (they would change nothing).

With ``soft_labels``, the synthetic images of a batch are trained against the probabilities the
confidence-filter classifier (real train split) gives them instead of their one-hot class: a
generated image of a class can look like another one, and a soft label says so instead of
teaching the classifier a confident wrong answer. With ``evaluate.teacher`` a user's classifier
(:mod:`augment.metrics.teacher`) gives those probabilities instead, and the classic baseline trains on the
same share of teacher-labelled images, real ones, so the verdict credits the synthetic images alone.

The work separates into picklable pieces so an orchestrator (Prefect/Dask) can run the
regime x seed grid as parallel tasks::

    plan = prepare(data, synthetic_images, synthetic_labels, cfg.evaluate, seed=cfg.seed)
    cells = [run_cell(plan, regime, seed) for regime in plan.regimes for seed in plan.seeds]
    result = summarize(plan, cells)

* ``prepare(data, synthetic_images, synthetic_labels, cfg, *, seed=0, map_fn=map) -> Plan``:
  copies what the cells need (uint8 tensors, no model), chooses the classic baseline and, with
  ``cfg.tune``, the synthetic share, confidence threshold and soft labels, *on the validation
  split only* (``map_fn`` runs those selection cells; pass a parallel map to spread them). Trains
  the confidence-filter classifier (real train split) when a threshold or soft labels are set or
  tuned.
* ``run_cell(plan, regime, seed) -> dict``: trains one classifier and scores it on the test
  split. Pure and deterministic given its arguments (CPU; parameter init, batch draws and
  augmentation all come from ``seed``). Returns plain JSON-able values.
* ``run_grid_item(plan, (regime, seed)) -> dict``: the same, for a ``map_fn`` over the grid's pairs
  (``evaluate_run(..., map_fn=...)`` maps it over ``[(regime, seed), ...]``).
* ``summarize(plan, cells) -> dict`` (:mod:`augment.metrics.verdict`): means with 95%
  t-intervals over seeds, paired deltas against ``real+classic``, per-class recall, summed
  confusion matrices and the plain-text verdict.

Example:
    >>> plan = prepare(data, syn_images, syn_labels, cfg.evaluate, seed=0)   # doctest: +SKIP
    >>> cells = [run_cell(plan, r, s) for r in plan.regimes for s in plan.seeds]  # doctest: +SKIP
    >>> summarize(plan, cells)["verdict"]["text"]  # doctest: +SKIP
    'No measurable benefit: ...'
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augment.config import EvaluateConfig
from augment.data import PreparedData
from augment.devices import resolve_precision
from augment.errors import ConfigError
from augment.metrics.classic import classic_label, parse_classic
from augment.metrics.classifier_training import (
    TrainSpec,
    balanced_accuracy_se,
    balanced_topup,
    predict_proba,
    score,
    torch_threads,
    train_classifier,
)
from augment.metrics.regimes import BASELINE, DEPLOYED_REGIMES, GAN_REGIMES, REGIMES, SHARE_REGIMES
from augment.metrics.teacher import Teacher, load_teacher

log = logging.getLogger(__name__)

#: Seeds of the validation-split selection cells start here, past any grid's ``seed, seed + 1, ...``.
SELECT_SEED_OFFSET = 100

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


@dataclass(kw_only=True)
class Plan(TrainSpec):
    """Everything a cell needs: a :class:`TrainSpec` (train split, synthetic pool, settings) plus
    the splits it is scored on, the grid and what selection chose (picklable)."""

    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    regimes: list[str]
    seeds: list[int]
    selection: dict[str, Any] = field(default_factory=dict)
    #: Most cells per stacked network (:mod:`augment.metrics.stacked`).
    stack_cells: int = 16
    data_fingerprint: str = ""
    #: Regimes of ``evaluate.regimes`` left out of the grid, and why (regime -> reason).
    skipped_regimes: dict[str, str] = field(default_factory=dict)


def _uses_pool_settings(regime: str) -> bool:
    """Whether a regime draws through the confidence filter and soft labels (not the deployed ones)."""
    return "gan" in regime and regime not in DEPLOYED_REGIMES


# ------------------------------------------------------------------------------------------------
# Cells: one classifier trained on the plan and scored on a split.


def split_of(plan: Plan, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of the split a cell is scored on: "val" (selection) or "test" (the grid)."""
    return (plan.val_images, plan.val_labels) if split == "val" else (plan.test_images, plan.test_labels)


#: A cell's timing keys: ``seconds`` (its share of the work: a stacked cell's is its stack's wall time
#: over the cells in it) and the wall-clock span it ran in (``started_at``/``ended_at``, seconds since
#: the epoch; a stack's cells share their stack's). Everything else in a cell is a function of its inputs.
TIMING_KEYS = ("seconds", "started_at", "ended_at")


def cell_result(
    plan: Plan,
    regime: str,
    seed: int,
    split: str,
    counters: dict[str, Any],
    preds: torch.Tensor,
    seconds: float,
    span: tuple[float, float],
) -> dict[str, Any]:
    """The JSON-able row of one trained cell: its settings, counters and scores on ``split``, and its
    timing (:data:`TIMING_KEYS`; ``span`` = (start, end) of the wall-clock interval it ran in)."""
    return {
        "regime": regime,
        "seed": seed,
        "split": split,
        **counters,
        **score(split_of(plan, split)[1], preds, plan.num_classes),
        "synthetic_share": plan.synthetic_share if "gan" in regime else None,  # gan-augmenter: its p
        "confidence_threshold": plan.confidence_threshold if _uses_pool_settings(regime) else None,
        "soft_labels": plan.soft_labels if _uses_pool_settings(regime) else None,
        "synthetic_until": plan.synthetic_until if regime in SHARE_REGIMES else None,
        "synthetic_bn": plan.synthetic_bn if regime in GAN_REGIMES else None,
        **_teacher_field(plan, regime),
        "seconds": seconds,
        "started_at": span[0],
        "ended_at": span[1],
    }


def _teacher_field(plan: Plan, regime: str) -> dict[str, bool]:
    """``{"teacher": True/False}`` in a cell row where the plan has a teacher (whether the cell trained on its
    probabilities: the baseline and the pool regimes), else nothing (rows without a teacher stay as they were)."""
    if plan.teacher_train_probs is None:
        return {}
    return {"teacher": regime == BASELINE or (_uses_pool_settings(regime) and plan.soft_labels)}


def _fit_score(plan: Plan, regime: str, seed: int, split: str) -> dict[str, Any]:
    start = time.time()
    model, counters = train_classifier(plan, regime, seed)
    with torch_threads(plan.threads or 1):
        preds = predict_proba(model, split_of(plan, split)[0]).argmax(dim=1)
    end = time.time()
    return cell_result(plan, regime, seed, split, counters, preds, end - start, (start, end))


def run_cell(plan: Plan, regime: str, seed: int) -> dict[str, Any]:
    """Train one classifier under ``regime`` with ``seed`` and score it on the real test split."""
    return _fit_score(plan, regime, seed, "test")


def run_grid_item(plan: Plan, item: tuple[str, int]) -> dict[str, Any]:
    """``run_cell(plan, *item)``: the form a ``map_fn`` over ``(regime, seed)`` pairs calls."""
    regime, seed = item
    return run_cell(plan, regime, seed)


def run_grid(plan: Plan, map_fn: MapFn | None = None, *, progress: bool = False) -> Iterable[dict[str, Any]]:
    """Every ``(regime, seed)`` cell of the plan on the test split, in grid order.

    ``map_fn=None`` trains the whole grid as stacked networks in this process
    (:func:`augment.metrics.stacked.fit_score_many`; ``progress`` shows a bar over its steps); a
    ``map_fn`` (builtin ``map``, Prefect tasks, Dask) runs :func:`run_grid_item` cell by cell, lazily
    where the map is.
    """
    grid = [(r, s) for r in plan.regimes for s in plan.seeds]
    if map_fn is None:
        from augment.metrics.stacked import fit_score_many

        return fit_score_many([(plan, r, s, "test") for r, s in grid], progress=progress, desc="downstream grid")
    return map_fn(functools.partial(run_grid_item, plan), grid)


def _selection_plan(plan: Plan, spec: dict[str, Any]) -> Plan | None:
    """The plan of a validation-split selection cell; None where a threshold lets no image through."""
    p = dataclasses.replace(plan, **spec["settings"])
    if "gan" in spec["regime"] and len(p.synthetic_pool()[1]) == 0:
        return None
    return p


def _selection_row(spec: dict[str, Any], out: dict[str, Any] | None) -> dict[str, Any]:
    if out is None:
        return {**spec, "balanced_accuracy": None, "accuracy": None, "skipped": "no synthetic image passes"}
    return {
        **spec,
        "balanced_accuracy": out["balanced_accuracy"],
        "accuracy": out["accuracy"],
        "per_class_recall": out["per_class_recall"],
    }


def _selection_cell(plan: Plan, spec: dict[str, Any]) -> dict[str, Any]:
    """A validation-split cell of the baseline choice or the tuning (never the test split)."""
    p = _selection_plan(plan, spec)
    return _selection_row(spec, None if p is None else _fit_score(p, spec["regime"], spec["seed"], "val"))


def _run_selection(plan: Plan, specs: list[dict[str, Any]], map_fn: MapFn | None) -> list[dict[str, Any]]:
    """The selection cells of ``specs`` on the validation split: stacked (``map_fn=None``) or mapped."""
    if map_fn is not None:
        return list(map_fn(functools.partial(_selection_cell, plan), specs))
    from augment.metrics.stacked import fit_score_many

    plans = [_selection_plan(plan, spec) for spec in specs]
    jobs = [(p, spec["regime"], spec["seed"], "val") for p, spec in zip(plans, specs, strict=True) if p is not None]
    outs = iter(fit_score_many(jobs, desc=f"selection ({specs[0]['stage']})" if specs else "selection"))
    return [_selection_row(spec, None if p is None else next(outs)) for p, spec in zip(plans, specs, strict=True)]


# ------------------------------------------------------------------------------------------------
# prepare: copy the data, choose the baseline and the GAN settings on the validation split.


def prepare(
    data: PreparedData,
    synthetic_images: torch.Tensor,
    synthetic_labels: torch.Tensor,
    cfg: EvaluateConfig,
    *,
    seed: int = 0,
    map_fn: MapFn | None = None,
    device: torch.device | str = "cpu",
) -> Plan:
    """Build the plan of the downstream grid; selection happens on the validation split only.

    Args:
        data: the run's splits; the GAN was trained on ``data.train`` only.
        synthetic_images: uint8 ``(N, C, H, W)`` from the run's generator; ``synthetic_labels`` int64.
        cfg: the ``evaluate`` section.
        seed: base seed; the grid's seeds are ``seed, seed + 1, ...``.
        map_fn: runs the selection cells one by one (builtin ``map``, a parallel map); None (the
            default) trains them as stacked networks here (:mod:`augment.metrics.stacked`).
        device: where the classifiers train ("cpu" or "cuda").
    """
    _check_inputs(data, synthetic_images, cfg)
    plan = _new_plan(data, synthetic_images, synthetic_labels, cfg, seed, device)
    select_seeds = [seed + SELECT_SEED_OFFSET + i for i in range(cfg.select_seeds)]
    samplings = classic_samplings(plan, cfg.classic_sampling)
    plan.classic_sampling = samplings[0]
    needs_val = len(cfg.classic) * len(samplings) > 1 or cfg.tune
    if needs_val and len(data.val) == 0:
        raise ConfigError(
            "evaluate: choosing the classic baseline or tuning needs a validation split "
            "(data.split.val > 0), or give a single evaluate.classic policy and classic_sampling, and tune: false"
        )
    selection: dict[str, Any] = {"split": "val", "n_val": len(data.val), "seeds": select_seeds}
    teacher = None
    if cfg.teacher is not None:  # before the baseline's selection: the baseline it chooses is the distilled one
        teacher = load_checked_teacher(cfg.teacher, data)
        plan.teacher_train_probs = teacher.probs(data.train.images, plan.threads or 1)
        selection["teacher"] = teacher_record(teacher, data)
    if samplings != list(cfg.classic_sampling):
        selection["classic_sampling_note"] = "class-balanced resampling left out: the train split is balanced"
    if len(cfg.classic) * len(samplings) > 1:
        selection["classic"] = _choose_classic(plan, cfg.classic, samplings, select_seeds, map_fn)
    thresholds = list(cfg.tune_thresholds) if cfg.tune else [cfg.confidence_threshold]
    softs = list(cfg.tune_soft_labels) if cfg.tune else [cfg.soft_labels]
    if any(t is not None for t in thresholds) or any(softs):
        selection["filter"] = score_pool(plan, select_seeds[0], teacher)
    plan.soft_labels = cfg.soft_labels
    if cfg.tune:
        selection["tune"] = _tune(plan, cfg, thresholds, softs, select_seeds, map_fn)
    if plan.synthetic_confidence is not None and plan.confidence_threshold is not None:
        kept = torch.bincount(plan.synthetic_pool()[1], minlength=plan.num_classes).tolist()
        selection["synthetic_kept"] = dict(zip(plan.class_names, kept, strict=True))
    plan.selection = selection
    return plan


def _check_inputs(data: PreparedData, synthetic_images: torch.Tensor, cfg: EvaluateConfig) -> None:
    """Known regimes and classic policies; synthetic images uint8 of the data's shape."""
    for regime in cfg.regimes:
        if regime not in REGIMES:
            raise ConfigError(f"evaluate.regimes: unknown regime {regime!r} (one of {REGIMES})")
    for policy in cfg.classic:
        parse_classic(policy)
    if synthetic_images.dtype != torch.uint8:
        raise ValueError(f"synthetic images must be uint8 (N, C, H, W), got {synthetic_images.dtype}")
    if synthetic_images.shape[1:] != data.train.images.shape[1:]:
        raise ValueError(
            f"synthetic images are {tuple(synthetic_images.shape[1:])}, the data {tuple(data.train.images.shape[1:])}"
        )


def _new_plan(
    data: PreparedData,
    synthetic_images: torch.Tensor,
    synthetic_labels: torch.Tensor,
    cfg: EvaluateConfig,
    seed: int,
    device: torch.device | str,
) -> Plan:
    """The plan with the configured settings, before any selection (the first classic policy)."""
    plan = Plan(
        class_names=list(data.class_names),
        train_images=data.train.images,
        train_labels=data.train.labels,
        val_images=data.val.images,
        val_labels=data.val.labels,
        test_images=data.test.images,
        test_labels=data.test.labels,
        synthetic_images=synthetic_images,
        synthetic_labels=synthetic_labels,
        regimes=list(cfg.regimes),
        seeds=[seed + i for i in range(cfg.seeds)],
        classifier=cfg.classifier,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        synthetic_share=cfg.synthetic_share,
        synthetic_sampling=cfg.synthetic_sampling,
        gan_real_sampling=cfg.gan_real_sampling,
        classic_on_synthetic=cfg.classic_on_synthetic,
        synthetic_until=cfg.synthetic_until,
        synthetic_bn=cfg.synthetic_bn,
        confidence_threshold=cfg.confidence_threshold,
        classic=cfg.classic[0],
        classic_backend=cfg.classic_backend,
        threads=cfg.threads,
        stack_cells=cfg.stack_cells,
        data_fingerprint=data.fingerprint,
        device=str(device),
        precision=resolve_precision(cfg.precision, device, "evaluate.precision"),
    )
    if "balanced-dataset" in plan.regimes and len(balanced_topup(plan)) == 0:
        plan.regimes.remove("balanced-dataset")
        plan.skipped_regimes["balanced-dataset"] = (
            "the train split is balanced: BalancedDataset would add no image (it is the real regime)"
        )
    return plan


def classic_samplings(plan: Plan, samplings: list[str]) -> list[str]:
    """The configured classic samplings, less ``balance`` where the train split's classes are even
    (resampling them would change nothing but the random draws)."""
    counts = [n for n in plan.train_labels.bincount(minlength=plan.num_classes).tolist() if n > 0]
    if "balance" in samplings and len(set(counts)) <= 1:
        return [s for s in samplings if s != "balance"] or ["natural"]
    return list(samplings)


def _choose_classic(
    plan: Plan, policies: list[str], samplings: list[str], select_seeds: list[int], map_fn: MapFn | None
) -> dict[str, Any]:
    """Set ``plan.classic`` and ``plan.classic_sampling`` to the pair with the best validation
    balanced accuracy; its record (scores keyed by :func:`classic_label`)."""
    pairs = [(pol, samp) for samp in samplings for pol in policies]
    specs = [
        {"stage": "classic", "regime": BASELINE, "seed": s, "settings": _settings(pol, samp)}
        for pol, samp in pairs
        for s in select_seeds
    ]
    rows = _run_selection(plan, specs, map_fn)
    scores = {
        pair: float(np.mean([r["balanced_accuracy"] for r in rows if r["settings"] == _settings(*pair)]))
        for pair in pairs
    }
    best = max(pairs, key=lambda pair: scores[pair])  # ties: the earlier (simpler)
    plan.classic, plan.classic_sampling = best
    chosen = classic_label(plan.classic, plan.classic_sampling)
    log.info("classic baseline on val: %s -> %s", scores, chosen)
    # How far apart the val split can tell candidates: the binomial SE of the pick's balanced accuracy
    # on these images. On the Fashion-MNIST long tail's 42 images it is ~9 pts, the candidates span ~2 on
    # a 5000-image dev split, and the pick finds the dev best no more often than chance (RESULTS.md).
    recall = np.mean([r["per_class_recall"] for r in rows if r["settings"] == _settings(*best)], axis=0)
    counts = torch.bincount(plan.val_labels, minlength=plan.num_classes).tolist()
    return {
        "scores": {classic_label(*pair): score_ for pair, score_ in scores.items()},
        "chosen": chosen,
        "policy": plan.classic,
        "sampling": plan.classic_sampling,
        "se": balanced_accuracy_se(recall.tolist(), counts),
    }


def _settings(policy: str, sampling: str) -> dict[str, str]:
    """A classic-selection cell's plan settings."""
    return {"classic": policy, "classic_sampling": sampling}


def score_pool(plan: Plan, seed: int, teacher: Teacher | None = None) -> dict[str, Any]:
    """Score every synthetic image with a classifier trained on the real train split, or with ``teacher``;
    its record.

    Its probabilities serve both the confidence filter (each image's own class) and soft labels.
    """
    if teacher is not None:
        probs = teacher.probs(plan.synthetic_images, plan.threads or 1)
        record = {"trained_on": "teacher", "path": str(teacher.path), "members": len(teacher.members)}
    else:
        model, _ = train_classifier(plan, BASELINE, seed)
        with torch_threads(plan.threads or 1):
            probs = predict_proba(model, plan.synthetic_images)
        record = {"trained_on": "train", "regime": BASELINE, "seed": seed}
    plan.synthetic_probs = probs
    plan.synthetic_confidence = probs.gather(1, plan.synthetic_labels[:, None]).flatten()
    return record


def load_checked_teacher(path: Path, data: PreparedData) -> Teacher:
    """The teacher file at ``path``, checked against the run's data.

    Raises:
        CheckpointError: the file is missing or not a teacher file.
        ConfigError: other classes or image shape, or it trained on any of the run's val or test images
            (the verdict would be scored on images its labels came from).
    """
    teacher = load_teacher(path)
    teacher.check_fits(data.class_names, tuple(data.train.images.shape[1:]))
    seen = [
        (name, teacher.overlap(part.images), len(part))
        for name, part in (("validation", data.val), ("test", data.test))
    ]
    if any(n for _, n, _ in seen):
        which = " and ".join(f"{n} of the {name} split's {total}" for name, n, total in seen if n)
        raise ConfigError(
            f"evaluate.teacher: {path} trained on {which} images; train it on images outside the run's "
            "validation and test splits (a verdict scored on images the teacher learned from is not honest)"
        )
    return teacher


def teacher_record(teacher: Teacher, data: PreparedData) -> dict[str, Any]:
    """What the run's record says about its teacher: the file, its members, what it says of itself, and
    how many of the run's train images it trained on too."""
    return {
        "path": str(teacher.path),
        "classifier": teacher.classifier,
        "members": len(teacher.members),
        "trained_on_images": len(teacher.trained_on),
        "train_split_overlap": teacher.overlap(data.train.images),
        "info": teacher.info,
    }


def _tune(
    plan: Plan,
    cfg: EvaluateConfig,
    thresholds: list[float | None],
    softs: list[bool],
    select_seeds: list[int],
    map_fn: MapFn | None,
) -> dict[str, Any]:
    """Set the synthetic share, threshold and soft labels with the best validation balanced accuracy."""
    regime = next((r for r in GAN_REGIMES if r in cfg.regimes), "real+gan+classic")
    grid = [
        {"synthetic_share": sh, "confidence_threshold": th, "soft_labels": soft}
        for sh in cfg.tune_shares
        for th in thresholds
        for soft in softs
    ]
    specs = [{"stage": "tune", "regime": regime, "seed": s, "settings": g} for g in grid for s in select_seeds]
    rows = _run_selection(plan, specs, map_fn)
    table = {}
    for g in grid:
        vals = [r["balanced_accuracy"] for r in rows if r["settings"] == g]
        score_ = None if any(v is None for v in vals) else float(np.mean(vals))
        key = f"share={g['synthetic_share']},threshold={g['confidence_threshold']}"
        if softs != [False]:  # the key names soft labels only where they are in play
            key += f",soft_labels={g['soft_labels']}"
        table[key] = {**g, "balanced_accuracy": score_}
    valid = [row for row in table.values() if row["balanced_accuracy"] is not None]
    if not valid:
        raise ConfigError("evaluate.tune: no candidate threshold keeps any synthetic image")
    best = max(valid, key=lambda row: row["balanced_accuracy"])  # ties: the earlier candidate
    plan.synthetic_share, plan.confidence_threshold = best["synthetic_share"], best["confidence_threshold"]
    plan.soft_labels = best["soft_labels"]
    log.info(
        "tuned on val: share=%s threshold=%s soft_labels=%s",
        plan.synthetic_share,
        plan.confidence_threshold,
        plan.soft_labels,
    )
    return {
        "regime": regime,
        "candidates": table,
        "chosen": {
            "synthetic_share": plan.synthetic_share,
            "confidence_threshold": plan.confidence_threshold,
            "soft_labels": plan.soft_labels,
        },
    }
