"""Prefect tasks: a few lines each over ``augment.*``.

Retries only where a retry can help (reading data, writing to the tracking store); training,
generation and the downstream cells are deterministic computations, so a retry would fail the
same way. No task caches across runs (``NO_CACHE``): their inputs are large tensors and every
pipeline run is meant to recompute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from augment.checkpoint import load_snapshot
from augment.config import Config
from augment.data import PreparedData, load_data
from augment.errors import AugmentError
from augment.generate import counts_to_generate, write_samples
from augment.train import train

log = logging.getLogger(__name__)


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups, not bad input: an AugmentError (missing file, bad data) fails the same way again."""
    return not isinstance(getattr(state, "data", None), AugmentError)


IO_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_worth_retrying)


@task(name="load-data", cache_policy=NO_CACHE, **IO_RETRIES)
def load_data_task(cfg: Config) -> PreparedData:
    """Read the source and cut it into the run's splits (I/O: retried)."""
    return load_data(cfg.data, cfg.seed)


@task(name="train-gan", cache_policy=NO_CACHE)
def train_task(
    cfg: Config,
    run_dir: Path,
    data: PreparedData,
    on_tick: Callable[[dict[str, float]], None] | None = None,
    resume: bool = False,
) -> tuple[Path, Path]:
    """Train the cGAN into ``run_dir``; returns ``(run_dir, snapshot_path)``."""
    return train(cfg, out=run_dir, resume=resume, progress=False, data=data, on_tick=on_tick)


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(snapshot_path: Path, out_dir: Path, cfg: Config) -> tuple[Path, list[int]]:
    """Write the class-balancing synthetic set; returns ``(manifest_path, per-class counts)``."""
    snap = load_snapshot(snapshot_path)
    g = cfg.generate
    counts = counts_to_generate(snap.class_counts, g.target, g.per_class, g.total)
    manifest = write_samples(snap, out_dir, counts, seed=g.seed, batch_size=g.batch_size, progress=False)
    return manifest, counts


@task(name="downstream-cell", task_run_name="downstream-{regime}-seed{seed}", cache_policy=NO_CACHE)
def downstream_cell_task(plan: Any, regime: str, seed: int) -> dict[str, Any]:
    """One classifier of the regime x seed grid, scored on the real test split."""
    from augment.metrics import downstream

    return downstream.run_cell(plan, regime, seed)


@task(name="selection-cell", cache_policy=NO_CACHE)
def call_task(fn: Callable[[Any], Any], item: Any) -> Any:
    """``fn(item)`` as a task: how a library ``map_fn`` hook runs on the flow's task runner."""
    return fn(item)


@task(name="log-artifacts", cache_policy=NO_CACHE, **IO_RETRIES)
def log_artifacts_task(tracker: Any, run_id: str, items: list[tuple[Path, str | None]]) -> None:
    """Upload files or folders to a tracked run: ``[(local_path, artifact_folder), ...]``."""
    for path, folder in items:
        tracker.log_artifact(run_id, Path(path), folder)
