"""The ``train`` flow: train the cGAN of a config, tracked as one MLflow run (or a child run)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from augment import rundir
from augment.config import Config, load_config
from augment.data import PreparedData
from augment.devices import resolve_device
from augment.registry import TRAIN, metric_name
from augment.rundir import claim_run_dir
from augment.tracking import TAG_FINGERPRINT, TAG_TRAIN_COUNTS, Tracker, make_tracker
from augment.train import check_new_run_dir, loop_kwargs
from flows.tasks import load_data_task, log_artifacts_task, train_task

log = logging.getLogger(__name__)


def tick_logger(tracker: Tracker, run_id: str) -> Callable[[dict[str, float]], None]:
    """``on_tick`` for the training loop: every tick's numbers as MLflow metrics ``train/<name>``
    (``train/loss_D``, ``train/images_per_s``, ``train/fd_domain`` at an evaluation tick), step = images shown.

    A failed metric write is logged and skipped: losing a point of a curve must not kill a training run.
    """
    warned = False

    def on_tick(tick: dict[str, float]) -> None:
        nonlocal warned
        step = int(round(tick["kimg"] * 1000))
        try:
            tracker.log_metrics(run_id, {metric_name(TRAIN, k): v for k, v in tick.items() if k != "kimg"}, step=step)
        except Exception as err:  # noqa: BLE001 - tracking is best effort during training
            if not warned:
                log.warning("could not log training metrics to MLflow (%s); training continues", err)
                warned = True

    return on_tick


def data_tags(data: PreparedData) -> dict[str, str]:
    """Tags that identify what a run trained on (``augment compare`` shows them)."""
    import json

    return {TAG_FINGERPRINT: data.fingerprint, TAG_TRAIN_COUNTS: json.dumps(data.counts()["train"])}


def data_source(cfg: Config) -> str:
    return str(cfg.data.root) if cfg.data.root is not None else cfg.data.source


def train_stage(
    cfg: Config,
    data: PreparedData,
    run_dir: Path,
    tracker: Tracker,
    run_id: str,
    resume: bool = False,
    progress: bool = False,
) -> tuple[Path, Path, str | None]:
    """Train into ``run_dir`` under MLflow run ``run_id``; returns ``(run_dir, snapshot, model_uri)``."""
    device = resolve_device(cfg.train.device)  # what `auto` turned into on this machine
    used = {"train.device_used": device.type, "train.precision_used": loop_kwargs(cfg, device)["performance"].precision}
    tracker.log_params(run_id, {**cfg.flat(), **used})
    tracker.set_tags(run_id, {**data_tags(data), "run_dir": str(run_dir)})
    tracker.log_dataset(run_id, data, name=f"{cfg.name}-train", source=data_source(cfg))
    run_dir, snap = train_task(cfg, run_dir, data, tick_logger(tracker, run_id), resume, progress)
    items: list[tuple[Path, str | None]] = [(run_dir / n, None) for n in (rundir.CONFIG, rundir.DATA, rundir.STATS)]
    items += [(p, "grids") for p in sorted(run_dir.glob(rundir.FAKES_GLOB))]  # sample grids over training
    if (run_dir / rundir.TRAIN_METRICS).is_file():
        items.append((run_dir / rundir.TRAIN_METRICS, None))
    log_artifacts_task(tracker, run_id, items)
    tracker.set_tags(run_id, {"snapshot": snap.name})
    model_uri = tracker.log_generator(run_id, snap)
    return run_dir, snap, model_uri


@flow(name="train", validate_parameters=True)
def train_flow(
    config: str, overrides: list[str] | None = None, out: str | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train the GAN of ``config`` (a YAML path) and log the run and its generator to MLflow."""
    logger = get_run_logger()
    cfg = load_config(config, overrides)
    tracker = make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment)
    data = load_data_task(cfg)
    if not resume:
        check_new_run_dir(Path(out) if out else None)
    # A run that fails before its first checkpoint leaves no folder (or only what was there before).
    with claim_run_dir(cfg, Path(out) if out else None, resume) as run_dir:
        with tracker.run(f"{cfg.name} train {run_dir.name}", kind="train") as run_id:
            run_dir, snap, model_uri = train_stage(cfg, data, run_dir, tracker, run_id, resume)
    logger.info("trained %s -> %s (MLflow run %s)", cfg.name, snap, run_id)
    return {"run_dir": str(run_dir), "snapshot": str(snap), "mlflow_run_id": run_id, "model_uri": model_uri}
