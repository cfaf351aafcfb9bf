"""Evaluate a trained run: distances with floors, PRDC, memorisation, the downstream verdict.

``evaluate_run`` loads the run's snapshot, re-loads the data from the run's ``config.yaml``
(which must select the very data the generator was trained on: same class names, same data
fingerprint), and writes ``RUN_DIR/eval/``: ``metrics.json``, ``per_class.csv``, plots,
``nearest_pairs.png`` and ``report.md``.

Synthetic images come from the snapshot through :func:`augment.generate.sample` (image ``i`` of
class ``c`` depends on ``(generate.seed, c, i)`` only). The test split is used only to score:
it reaches neither the GAN, nor the feature extractor, nor any choice made on the validation split.

Example:
    >>> result = evaluate_run("runs/00000-digits", overrides=["evaluate.seeds=3"])  # doctest: +SKIP
    >>> result["downstream"]["verdict"]["text"]  # doctest: +SKIP
    'No measurable benefit: ...'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from augment import rundir
from augment.checkpoint import Snapshot, find_snapshot, load_snapshot
from augment.config import Config, apply_overrides, config_from_dict
from augment.data import PreparedData, load_data
from augment.devices import resolve_device
from augment.errors import CheckpointError
from augment.generate import quantize, sample
from augment.io import ensure_dir
from augment.metrics import downstream
from augment.metrics.classifier_training import torch_threads
from augment.metrics.extractor import load_or_train_extractor
from augment.metrics.frechet import (
    InceptionFeatures,
    distance_report,
    frechet_distance,
    inception_requested,
    inception_weights_path,
)
from augment.metrics.memorisation import memorisation
from augment.metrics.prdc import prdc_report
from augment.metrics.report import write_report
from augment.metrics.result import Evaluation
from augment.metrics.verdict import deployment, summarize

log = logging.getLogger(__name__)

#: Seed offset of the per-class subset of the test split that PRDC compares against (apart from
#: the real train subset's ``cfg.seed``).
PRDC_SUBSET_SEED_OFFSET = 1


def generate_uint8(
    G: torch.nn.Module, counts: list[int], seed: int, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``counts[c]`` images of class ``c`` (indices ``start..``), seeded per (seed, class, index)."""
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    indices = torch.cat([torch.arange(start, start + n, dtype=torch.int64) for n in counts])
    return quantize(sample(G, labels, indices, seed)), labels


def per_class_subset(labels: torch.Tensor, counts: list[int], seed: int) -> torch.Tensor:
    """Indices of the first ``counts[c]`` items of each class in a seeded per-class order."""
    out = []
    for c, n in enumerate(counts):
        idx = torch.nonzero(labels == c).flatten()
        perm = torch.from_numpy(np.random.default_rng([seed, c, 7]).permutation(len(idx)))
        out.append(idx[perm[:n]].sort().values)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


def check_data_matches(snap: Snapshot, data: PreparedData) -> None:
    """The data must be what the generator was trained on: same classes, same fingerprint."""
    rundir.check_data_matches(snap.path or "snapshot", snap.class_names, snap.data_fingerprint, data)


def resolve_config(run_dir: Path, snap_path: Path, cfg: Config | None, overrides: list[str] | None) -> Config:
    """``cfg`` with ``--set`` overrides if given, else the run's config (:func:`augment.rundir.run_config`)."""
    if cfg is not None:
        if overrides:
            return config_from_dict(apply_overrides(cfg.to_dict(), overrides), source="config (--set)")
        return cfg
    return rundir.run_config(run_dir, overrides, snapshot=snap_path)


def metric_counts(data: PreparedData, samples_per_class: int, reference_counts: list[int] | None = None) -> list[int]:
    """Images per class for the distance metrics: capped by the train split (and the reference)."""
    train = data.train.counts(data.num_classes)
    ref = reference_counts or train
    return [min(samples_per_class, t, r) for t, r in zip(train, ref, strict=True)]


def selection_reference(data: PreparedData) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels the best-snapshot check compares with: train+val, never test."""
    return torch.cat([data.train.images, data.val.images]), torch.cat([data.train.labels, data.val.labels])


def selection_latents(
    ref_labels: torch.Tensor, num_classes: int, samples_per_class: int, oversample: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The check's synthetic set as ``(labels, indices)`` for :func:`augment.generate.sample`: per class
    as many images as the reference has (capped by ``samples_per_class``), times ``oversample``.

    Example:
        >>> labels, indices = selection_latents(torch.tensor([0, 0, 1]), 3, samples_per_class=10, oversample=2)
        >>> labels.tolist(), indices.tolist()
        ([0, 0, 0, 0, 1, 1], [0, 1, 2, 3, 0, 1])
    """
    ref_counts = torch.bincount(ref_labels, minlength=num_classes).tolist()
    counts = [oversample * min(samples_per_class, n) for n in ref_counts]
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    indices = torch.cat([torch.arange(n, dtype=torch.int64) for n in counts])
    return labels, indices


def make_metric_fn(
    data: PreparedData, cfg: Config, *, cache_dir: Path | None = None, device: torch.device | str = "cpu"
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """``metric_fn(G) -> {"fd_domain": value}`` for the training loop's best-snapshot selection.

    The reference is the real train+val split (model selection never sees the test split); the
    synthetic set uses fixed latents (``generate.seed``), as many per class as the reference has
    (capped by ``evaluate.samples_per_class``) times ``train.eval_oversample``, so values are
    comparable across training. The extractor runs on ``device`` (the training device).
    """
    ev = cfg.evaluate
    ext = load_or_train_extractor(data, ev, cache_dir=cache_dir, seed=cfg.seed, device=device)
    ref_images, ref_labels = selection_reference(data)
    ref = ext.features(ref_images)
    labels, indices = selection_latents(ref_labels, data.num_classes, ev.samples_per_class, cfg.train.eval_oversample)

    def metric_fn(G: torch.nn.Module) -> dict[str, float]:
        fake = ext.features(quantize(sample(G, labels, indices, cfg.generate.seed)))
        return {"fd_domain": frechet_distance(ref, fake)}

    return metric_fn


def best_snapshot_metric(
    data: PreparedData, cfg: Config, run_dir: Path, device: torch.device | str = "cpu"
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """The metric factory :func:`augment.train.train` takes (``metric_factory=``): :func:`make_metric_fn`
    with the extractor cached in the run directory, where evaluation finds it again."""
    return make_metric_fn(data, cfg, cache_dir=cfg.evaluate.cache_dir or run_dir / rundir.CACHE, device=device)


def evaluate_run(
    run_dir: str | Path,
    cfg: Config | None = None,
    *,
    overrides: list[str] | None = None,
    progress: bool = True,
    data: PreparedData | None = None,
    map_fn: downstream.MapFn | None = None,
) -> Evaluation:
    """Evaluate a run directory and write ``RUN_DIR/eval/``; returns its
    :class:`~augment.metrics.result.Evaluation` (what ``metrics.json`` holds).

    Args:
        run_dir: a directory written by ``augment train`` (holds ``network-*.pt``, ``config.yaml``).
        cfg: the config to use instead of the run's ``config.yaml``.
        overrides: ``--set`` style overrides, e.g. ``["evaluate.seeds=5"]``.
        progress: show a progress bar over the downstream grid.
        data: the run's data, when the caller has it already (checked against the snapshot).
        map_fn: None (the default) trains the validation-split selection cells and the regime x seed
            grid as stacked networks in this process (``augment.metrics.stacked``); a map (builtin
            ``map``, or ``flows.evaluate``'s Prefect tasks on Dask) runs them cell by cell.

    Raises:
        CheckpointError: no snapshot in ``run_dir``, or the data does not match the snapshot's.
        ConfigError: a bad config value (e.g. fid_inception asked for without its weights file).
    """
    start = time.time()
    run_dir = Path(run_dir)
    snap_path = find_snapshot(run_dir)
    snap = load_snapshot(snap_path)
    cfg = resolve_config(run_dir, snap_path, cfg, overrides)
    ev = cfg.evaluate
    inception_asked = inception_requested(ev.extractor, ev.inception_weights)
    if inception_asked:
        inception_weights_path(ev.inception_weights)  # fail before any expensive work
    if data is None:
        data = load_data(cfg.data, cfg.seed)
    check_data_matches(snap, data)
    if ev.teacher is not None:  # a teacher that does not fit or saw the scoring images: fail before any expensive work
        downstream.load_checked_teacher(ev.teacher, data)
    with torch_threads(ev.threads):  # small CNNs: one thread each is fastest (see config)
        return _evaluate_loaded(run_dir, snap_path, snap, cfg, data, start, inception_asked, progress, map_fn)


def _evaluate_loaded(
    run_dir: Path,
    snap_path: Path,
    snap: Snapshot,
    cfg: Config,
    data: PreparedData,
    start: float,
    inception_asked: bool,
    progress: bool,
    map_fn: downstream.MapFn | None,
) -> Evaluation:
    """The measurements of :func:`evaluate_run`, once the snapshot and matching data are loaded."""
    ev = cfg.evaluate
    out_dir = ensure_dir(run_dir / rundir.EVAL)
    device = resolve_device(ev.device, "evaluate.device")
    G = snap.generator(device)

    # Feature extractor (real train+val only; cached by data fingerprint).
    ext = load_or_train_extractor(
        data, ev, cache_dir=ev.cache_dir or run_dir / rundir.CACHE, seed=cfg.seed, device=device
    )
    if set(data.test.ids) & set(ext.trained_on_ids):  # a cache from other splits must never leak test images in
        raise CheckpointError(f"{ext.path}: the feature extractor was trained on test images")

    # Distances, PRDC (and FID with the Inception weights): synthetic vs real-train sets of equal
    # per-class counts, each against the test split.
    dist = _distances(G, ext, cfg, data, inception_asked)

    # Synthetic pool for the classifiers and the memorisation check.
    pool_counts = [ev.synthetic_per_class] * data.num_classes
    log.info("Sampling %d synthetic images for the downstream pool...", sum(pool_counts))
    pool_u8, pool_labels = generate_uint8(G, pool_counts, cfg.generate.seed)
    mem = memorisation(
        pool_u8,
        data.train.images,
        data.test.images,
        pool_labels,
        data.class_names,
        quantile=ev.near_copy_quantile,
        heldout_labels=data.test.labels,
    )

    # Downstream grid: selection on val inside prepare, then regime x seed cells on test.
    down = _downstream(data, pool_u8, pool_labels, cfg, device, run_dir, map_fn, progress)

    result: Evaluation = {
        "run_dir": str(run_dir),
        "snapshot": {
            "path": str(snap_path),
            "kimg": snap.kimg,
            "train_metrics": snap.metrics,
            **({"member_kimg": snap.member_kimg} if snap.members else {}),
        },
        "data_fingerprint": data.fingerprint,
        "class_names": list(data.class_names),
        "counts": data.counts(),
        "sizes": {s: len(data.split(s)) for s in ("train", "val", "test")},
        "feature_extractor": {
            "name": "domain",
            "architecture": "smallcnn",
            "feature_dims": ext.num_features,
            "trained_on": "train+val",
            "n_trained_on": len(ext.trained_on_ids),
            "cache": str(ext.path),
        },
        "generate_seed": cfg.generate.seed,
        "fd_domain": dist.fd,
        "prdc": dist.prdc,
        "memorisation": mem,
        "downstream": down,
        "verdict": down["verdict"]["text"],
        "warnings": dist.warnings,
        "config": cfg.to_dict(),
        "seconds": time.time() - start,
    }
    if dist.fid_inception is not None:
        result["fid_inception"] = dist.fid_inception
    samples = {
        "real": dist.real_u8,
        "real_labels": dist.real_labels,
        "synthetic": pool_u8,
        "synthetic_labels": pool_labels,
        "train": data.train.images,
    }
    paths = write_report(out_dir, result, samples)
    result["files"] = {key: str(p) for key, p in paths.items()}
    log.info("Evaluation written to %s (%.0f s): %s", out_dir, time.time() - start, down["verdict"]["text"])
    return result


@dataclass
class _Distances:
    fd: dict[str, Any]
    prdc: dict[str, Any]
    fid_inception: dict[str, Any] | None
    warnings: list[str]
    real_u8: torch.Tensor  #: the real-train set the floors are measured with (shown in samples.png)
    real_labels: torch.Tensor


def _distances(G: torch.nn.Module, ext: Any, cfg: Config, data: PreparedData, inception_asked: bool) -> _Distances:
    """fd_domain/KID and PRDC in the domain extractor's features, fid_inception in InceptionV3's, each
    beside its real-vs-real floor measured with the same per-class counts."""
    ev = cfg.evaluate
    counts = metric_counts(data, ev.samples_per_class, data.test.counts(data.num_classes))
    log.info("Sampling %d synthetic images for the distances...", sum(counts))
    fake_u8, fake_labels = generate_uint8(G, counts, cfg.generate.seed)
    real_idx = per_class_subset(data.train.labels, counts, cfg.seed)
    real_u8, real_labels = data.train.images[real_idx], data.train.labels[real_idx]
    ref_u8, ref_labels = data.test.images, data.test.labels
    f_fake, f_real, f_ref = ext.features(fake_u8), ext.features(real_u8), ext.features(ref_u8)
    names = data.class_names
    fd = distance_report("fd_domain", f_fake, fake_labels, f_real, real_labels, f_ref, ref_labels, names)
    warnings = fd.pop("warnings")
    # PRDC with the reference cut to the same per-class sizes (k-NN radii depend on sample size).
    prdc_idx = per_class_subset(ref_labels, counts, cfg.seed + PRDC_SUBSET_SEED_OFFSET)
    prdc = prdc_report(f_ref[prdc_idx], ref_labels[prdc_idx], f_fake, fake_labels, f_real, real_labels, names)
    fid = None
    if inception_asked:
        inc = InceptionFeatures(ev.inception_weights)
        fid = distance_report(
            "fid_inception", inc(fake_u8), fake_labels, inc(real_u8), real_labels, inc(ref_u8), ref_labels, names
        )
        fid["weights"] = str(inc.path)
        warnings += fid.pop("warnings")
    return _Distances(fd, prdc, fid, warnings, real_u8, real_labels)


def _downstream(
    data: PreparedData,
    pool_u8: torch.Tensor,
    pool_labels: torch.Tensor,
    cfg: Config,
    device: torch.device,
    run_dir: Path,
    map_fn: downstream.MapFn | None,
    progress: bool,
) -> dict[str, Any]:
    """The classic-baseline selection on val, the regime x seed grid on test, and its summary."""
    plan = downstream.prepare(data, pool_u8, pool_labels, cfg.evaluate, seed=cfg.seed, map_fn=map_fn, device=device)
    # map_fn=None: the grid trains as stacked networks here (a bar over its steps); a map_fn runs one
    # call per (regime, seed) cell: builtin map one by one (lazily, so the bar moves), an
    # orchestrator's parallel map (Prefect tasks, Dask) side by side.
    cells = []
    results = downstream.run_grid(plan, map_fn, progress=progress)
    n_cells = len(plan.regimes) * len(plan.seeds)
    bar = map_fn is not None and progress
    for cell in tqdm(results, total=n_cells, desc="downstream", unit="cell", disable=not bar):
        cells.append(cell)
        log.info(
            "%s seed %d: balanced accuracy %.4f (%.0f s)",
            cell["regime"],
            cell["seed"],
            cell["balanced_accuracy"],
            cell["seconds"],
        )
    down = summarize(plan, cells)
    down["deploy"] = deployment(down, str(run_dir))
    down["cells"] = cells
    return down
