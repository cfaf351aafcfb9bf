"""Prefect tasks: a few lines each over ``augment.*``, and the task runner a config section asks for.

Retries only where a retry can help (reading data, writing to the tracking store, a generation
shard's PNG writes to a shared filesystem); training and the downstream cells are deterministic
computations, so a retry would fail the same way. No task caches across runs (``NO_CACHE``):
their inputs are large tensors and every pipeline run is meant to recompute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from augment.config import Config, EvaluateConfig, GenerateConfig
from augment.data import PreparedData, load_data
from augment.devices import resolve_device, usable_cores
from augment.errors import AugmentError
from augment.generate import ShardSpec
from augment.metrics.evaluate import best_snapshot_metric
from augment.train import train

log = logging.getLogger(__name__)


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups, not bad input: an AugmentError (missing file, bad data) fails the same way again."""
    return not isinstance(getattr(state, "data", None), AugmentError)


IO_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_worth_retrying)


def _os_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a filesystem hiccup (OSError), not bad input or a bug."""
    return isinstance(getattr(state, "data", None), OSError)


SHARD_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_os_error)


def task_runner_for(section: EvaluateConfig | GenerateConfig) -> TaskRunner:
    """The task runner of a flow whose tasks fan out, from its config section's ``workers`` / ``dask_address``.

    * ``dask_address: tcp://scheduler:8786``: an existing Dask cluster (prefect-dask);
    * ``workers: N`` (N > 1): a local Dask cluster of N single-threaded worker processes, built
      for the flow run and torn down after it (``auto``: see :func:`local_workers`);
    * otherwise one worker thread (the tasks run one after another).
    """
    if section.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=section.dask_address)
    workers = local_workers(section)
    if workers > 1:
        from prefect_dask import DaskTaskRunner

        # One thread per worker process: torch ops in a task would otherwise fight over the cores.
        # Workers report task states to this process's Prefect API (without it, each worker would
        # start a temporary server of its own when no PREFECT_API_URL is configured).
        api_url = _api_url()
        env = {"OMP_NUM_THREADS": "1", **({"PREFECT_API_URL": api_url} if api_url else {})}
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "env": env,
            }
        )
    return ThreadPoolTaskRunner(max_workers=1)


def local_workers(section: EvaluateConfig | GenerateConfig) -> int:
    """The section's ``workers`` as a count. ``auto`` (evaluate only): one single-threaded worker per
    core this process may use when the cells run on the CPU, else 1 (cells on one GPU queue on it)."""
    if section.workers != "auto":
        return section.workers
    if resolve_device(getattr(section, "device", "cpu"), "evaluate.device").type != "cpu":
        return 1
    return usable_cores()


def _api_url() -> str | None:
    """The Prefect API this process talks to: PREFECT_API_URL, or the temporary local server's."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    if PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        from prefect.server.api.server import SubprocessASGIServer

        # The process-wide singleton that Prefect's client starts on first use. Start it now if no flow
        # has yet (a flow called from the command line): else each Dask worker would start its own.
        server = SubprocessASGIServer()
        server.start()
        return server.api_url
    return None


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
    progress: bool = False,
) -> tuple[Path, Path]:
    """Train the cGAN into ``run_dir``; returns ``(run_dir, snapshot_path)`` (``progress``: a bar with an ETA)."""
    return train(
        cfg,
        out=run_dir,
        resume=resume,
        progress=progress,
        data=data,
        on_tick=on_tick,
        metric_factory=best_snapshot_metric,
    )


@task(name="generate-shard", cache_policy=NO_CACHE, **SHARD_RETRIES)
def generate_shard_task(fn: Callable[[ShardSpec], list[dict[str, Any]]], spec: ShardSpec) -> list[dict[str, Any]]:
    """One shard of a synthetic set (``augment.generate.write_shard``): PNGs into the staging folder, rows back."""
    return fn(spec)


@task(name="selection-cell", cache_policy=NO_CACHE)
def call_task(fn: Callable[[Any], Any], item: Any) -> Any:
    """``fn(item)`` as a task: how a library ``map_fn`` hook runs on the flow's task runner."""
    return fn(item)


@task(name="log-artifacts", cache_policy=NO_CACHE, **IO_RETRIES)
def log_artifacts_task(tracker: Any, run_id: str, items: list[tuple[Path, str | None]]) -> None:
    """Upload files or folders to a tracked run: ``[(local_path, artifact_folder), ...]``."""
    for path, folder in items:
        tracker.log_artifact(run_id, Path(path), folder)
