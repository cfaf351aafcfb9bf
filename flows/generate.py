"""The ``generate`` flow: the class-balancing synthetic set of a trained run, tracked in MLflow.

The set is cut into shards (``generate.shard_size`` images of one class each), and each shard is a
Prefect task of the ``generate-shards`` subflow, whose task runner follows the config as the
evaluation grid's does (:func:`flows.tasks.task_runner_for`):

* ``generate.dask_address: tcp://scheduler:8786``: an existing Dask cluster (prefect-dask); its
  workers write the PNGs into the staging folder beside the output folder, so they must share
  that filesystem (a worker that does not see the folder fails the shard, naming it);
* ``generate.workers: N`` (N > 1): a local Dask cluster of N single-threaded worker processes,
  built for the flow run and torn down after it;
* otherwise one worker thread (the shards run one after another).

Image ``i`` of class ``c`` depends only on ``(seed, c, i)`` and is computed in the same batch
whatever the shard, so all three write the same bytes; the flow process merges the shards'
manifest rows, writes ``manifest.csv`` and ``grid.png`` and renames the folder into place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import wait

from augment.checkpoint import load_snapshot
from augment.config import Config, GenerateConfig
from augment.generate import ShardSpec, counts_to_generate, write_samples
from augment.registry import GENERATE, PER_CLASS, metric_name
from augment.rundir import GENERATED, find_snapshot, run_config
from augment.tracking import TAG_FINGERPRINT, Tracker, make_tracker
from flows.tasks import generate_shard_task, log_artifacts_task, task_runner_for


def shard_map(fn: Callable[[ShardSpec], list[dict[str, Any]]], shards: Iterable[ShardSpec]) -> list[Any]:
    """A ``map`` over shards whose calls are Prefect tasks on the current flow's task runner."""
    futures = [generate_shard_task.with_options(task_run_name=s.name).submit(fn, s) for s in shards]
    wait(futures)  # every shard has ended before a failure removes the staging folder
    return [f.result() for f in futures]


@flow(name="generate-shards", validate_parameters=True)
def generate_shards_flow(
    snapshot: str,
    out_dir: str,
    counts: list[int],
    seed: int = 0,
    batch_size: int = 256,
    shard_size: int | None = None,
) -> str:
    """Write ``counts[c]`` images of every class to ``out_dir``, one task per shard; returns the manifest path."""
    manifest = write_samples(
        load_snapshot(Path(snapshot)),
        Path(out_dir),
        counts,
        seed=seed,
        batch_size=batch_size,
        progress=False,
        shard_size=shard_size,
        map_fn=shard_map,
    )
    get_run_logger().info("wrote %d images -> %s", sum(counts), manifest)
    return str(manifest)


def run_generate(snapshot: Path, out_dir: Path, counts: list[int], g: GenerateConfig) -> Path:
    """Run :func:`generate_shards_flow` (a subflow inside a flow) on the task runner ``g`` asks for."""
    flow_ = generate_shards_flow.with_options(task_runner=task_runner_for(g))
    return Path(flow_(str(snapshot), str(out_dir), counts, g.seed, g.batch_size, g.shard_size))


def generate_stage(cfg: Config, snapshot: Path, out_dir: Path, tracker: Tracker, run_id: str) -> tuple[Path, list[int]]:
    """Write the synthetic set to ``out_dir`` under MLflow run ``run_id``; returns ``(manifest, counts)``."""
    snap = load_snapshot(snapshot)
    g = cfg.generate
    counts = counts_to_generate(snap.class_counts, g.target, g.per_class, g.total)
    manifest = run_generate(snapshot, out_dir, counts, g)
    params = {"generate.target": g.target, "generate.seed": g.seed, "generate.shard_size": g.shard_size}
    tracker.log_params(run_id, {**params, "snapshot": snapshot.name})
    per_class = {metric_name(PER_CLASS, "images", n): float(c) for n, c in zip(snap.class_names, counts, strict=True)}
    tracker.log_metrics(run_id, {metric_name(GENERATE, "images"): float(sum(counts)), **per_class})
    tracker.set_tags(run_id, {TAG_FINGERPRINT: snap.data_fingerprint})
    log_artifacts_task(tracker, run_id, [(manifest, None), (manifest.parent / "grid.png", None)])
    return manifest, counts


@flow(name="generate", validate_parameters=True)
def generate_flow(run_dir: str, out: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Generate the synthetic set of a trained run directory (settings from its config and ``--set`` style
    ``overrides``, e.g. ``["generate.total=100000", "generate.workers=8"]``)."""
    logger = get_run_logger()
    snapshot = find_snapshot(Path(run_dir))
    cfg = run_config(run_dir, overrides, snapshot=snapshot)
    tracker = make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment)
    out_dir = Path(out) if out else Path(run_dir) / GENERATED
    with tracker.run(f"{cfg.name} generate {Path(run_dir).name}", kind="generate") as run_id:
        manifest, counts = generate_stage(cfg, snapshot, out_dir, tracker, run_id)
    logger.info("generated %d images -> %s", sum(counts), manifest)
    return {"manifest": str(manifest), "counts": counts, "mlflow_run_id": run_id}
