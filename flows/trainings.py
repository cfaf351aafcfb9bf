"""The ``trainings`` flow: the pipeline N times with another GAN training seed, and the verdict over them.

One pipeline run's intervals hold the classifier seeds around *one* trained generator; training the
GAN again moves the answer by more than they suggest (benchmarks/RESULTS.md: at 100 images per
class the same recipe read "helped", "no measurable benefit", "helped"). ``augment run CONFIG
--trainings 3`` runs the whole pipeline with ``train.seed`` = s, s+1, s+2 (s: the config's training
seed), then :func:`augment.metrics.spread.spread_runs` over the three evaluated runs.

MLflow gets one run of kind ``trainings`` with the three pipeline runs nested under it (each with its
own children, as a lone ``augment run``); the parent holds the deltas over trainings
(:func:`augment.registry.spread_metrics`), the verdict over trainings as its tags and description, and
``report.md``, ``spread.json`` and ``spread.png``, which also land in ``<output.root>/NNNNN-<name>-trainings/``.
Only the first training's generator goes to the model registry: picking the best of N by its test
numbers would be choosing on the test split.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from prefect import flow, get_run_logger

from augment import rundir
from augment.config import Config, load_config
from augment.errors import ConfigError
from augment.io import atomic_write_text, new_run_dir
from augment.metrics.regimes import BASELINE
from augment.registry import spread_metrics
from augment.tracking import TAG_NOTE, TAG_OVERRIDES, TAG_REPORT, TAG_VERDICT, make_tracker
from flows.pipeline import pipeline
from flows.tasks import log_artifacts_task

FLOW_NAME = "gan-augment-trainings"
SPREAD_JSON, SPREAD_PNG = "spread.json", "spread.png"


def training_seeds(cfg: Config, trainings: int) -> list[int]:
    """The ``train.seed`` of each training: the config's own (``train.seed``, else ``seed``) and the next ones."""
    if trainings < 2:
        raise ConfigError(f"--trainings {trainings}: a verdict over trainings needs at least 2 (3 for a verdict)")
    if BASELINE not in cfg.evaluate.regimes:  # before N trainings, not after them
        raise ConfigError(
            f"--trainings: evaluate.regimes needs {BASELINE!r}, the baseline the trainings are judged against"
        )
    first = cfg.seed if cfg.train.seed is None else cfg.train.seed
    return [first + i for i in range(trainings)]


@flow(name=FLOW_NAME, validate_parameters=True)
def trainings_flow(
    config: str,
    overrides: list[str] | None = None,
    trainings: int = 3,
    progress: bool = False,
) -> dict[str, Any]:
    """Run :func:`flows.pipeline.pipeline` ``trainings`` times (another ``train.seed`` each) and judge
    GAN augmentation over the trainings; returns the pipelines' summaries, the spread and where it went."""
    from augment.metrics.plots import save_figure
    from augment.metrics.spread import report, spread_figure, spread_runs

    logger = get_run_logger()
    overrides = list(overrides or [])
    cfg = load_config(config, overrides)
    seeds = training_seeds(cfg, trainings)
    tracker = make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment)
    tags = {"config": str(config), TAG_OVERRIDES: " ".join(overrides) or "(none)", "train_seeds": str(seeds)}
    with tracker.run(f"{cfg.name} over {len(seeds)} trainings", kind="trainings", tags=tags) as parent:
        tracker.log_params(parent, {**cfg.flat(), "trainings": len(seeds)})
        runs = []
        for i, seed in enumerate(seeds):
            logger.info("training %d of %d (train.seed=%d)", i + 1, len(seeds), seed)
            runs.append(
                pipeline(
                    config=config,
                    overrides=[*overrides, f"train.seed={seed}"],
                    force=True,
                    progress=progress,
                    parent_run=parent,
                    register_model=i == 0,
                )
            )
        out = spread_runs([r["run_dir"] for r in runs])
        out["train_seeds"] = seeds
        folder = new_run_dir(cfg.output.root, f"{rundir.run_name(cfg.name)}-trainings")
        try:  # a verdict folder is whole or absent
            text = report(
                out, cfg.name, [(s, r["run_dir"], r["verdict_status"]) for s, r in zip(seeds, runs, strict=True)]
            )
            atomic_write_text(folder / rundir.REPORT_MD, text)
            atomic_write_text(folder / SPREAD_JSON, json.dumps(out, indent=1) + "\n")
            save_figure(spread_figure(out), folder / SPREAD_PNG)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        logger.info("%s", out["verdict"]["text"])
        tracker.log_metrics(parent, spread_metrics(out))
        tracker.set_tags(
            parent,
            {
                **runs[0]["data_tags"],  # one dataset: spread_runs checked the fingerprints
                TAG_VERDICT: out["verdict"]["status"],
                TAG_NOTE: out["verdict"]["text"],
                TAG_REPORT: str((folder / rundir.REPORT_MD).resolve()),
                "run_dir": str(folder.resolve()),
            },
        )
        log_artifacts_task(tracker, parent, [(folder / n, None) for n in (rundir.REPORT_MD, SPREAD_JSON, SPREAD_PNG)])
    return {
        "trainings": runs,
        "spread": out,
        "folder": str(folder),
        "report": str(folder / rundir.REPORT_MD),
        "verdict": out["verdict"]["text"],
        "tracking_uri": tracker.uri,
        "experiment_id": getattr(tracker, "experiment_id", None),
        "mlflow_run_id": parent if cfg.tracking.enabled else None,
    }
