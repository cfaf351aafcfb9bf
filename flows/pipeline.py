"""The ``pipeline`` flow: data -> train -> generate -> evaluate -> register, as one MLflow parent run.

::

    augment run configs/digits.yaml                        # on demand (Prefect without a server)
    augment serve configs/digits.yaml --cron "0 3 * * *"   # on a schedule (see flows/serve.py)

MLflow gets one parent run per pipeline run, with child runs ``train``, ``generate`` and one per
downstream (regime, seed) cell; the generator is registered under ``tracking.registered_model``
(default ``<name>-cgan``) and takes the ``champion`` alias only if it beats the current one.

A run with ``skip_if_unchanged`` (what a scheduled deployment sets) stops after loading the data
when its fingerprint equals the champion's: nothing new to learn from. ``force`` overrides that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from augment import rundir
from augment.config import Config, load_config
from augment.registry import Promotion, gate_from_metrics, run_fingerprint
from augment.rundir import claim_run_dir
from augment.tracking import (
    TAG_ALIAS,
    TAG_MODEL,
    TAG_NOTE,
    TAG_OVERRIDES,
    TAG_REASON,
    TAG_REPORT,
    TAG_VERDICT,
    TAG_VERSION,
    make_tracker,
)
from flows.evaluate import evaluate_stage
from flows.generate import generate_stage
from flows.tasks import load_data_task, log_artifacts_task
from flows.train import data_source, data_tags, train_stage

FLOW_NAME = "gan-augment-pipeline"


def registered_model_name(cfg: Config) -> str:
    """``tracking.registered_model``, or ``<config name>-cgan``."""
    return cfg.tracking.registered_model or f"{cfg.name}-cgan"


def registry_section(
    promotion: Promotion | None, model_name: str, tracking_enabled: bool, register_model: bool = True
) -> str:
    """The report's "Model registry" section: where the generator went and why."""
    lines = ["", "## Model registry", ""]
    if promotion is None:
        if not tracking_enabled:
            why = "tracking is disabled (tracking.enabled: false)"
        elif not register_model:
            why = "a repeat training of `augment run --trainings` (the first training's generator is registered)"
        else:
            why = "no model was logged"
        lines.append(f"The generator was not registered: {why}.")
        return "\n".join(lines) + "\n"
    verdict = "promoted to **champion**" if promotion.promoted else "kept as **challenger** (not promoted)"
    lines += [
        f"`{model_name}` version {promotion.version} was {verdict}: {promotion.reason}.",
        "",
        "Load it anywhere with MLflow alone:",
        "",
        "```python",
        "import mlflow",
        f'model = mlflow.pyfunc.load_model("{promotion.model_uri}")',
        'images = model.predict({"label": [0, 1], "index": [0, 0]})  # (N, C, H, W) in [0, 1]',
        "```",
    ]
    return "\n".join(lines) + "\n"


@flow(name=FLOW_NAME, validate_parameters=True)
def pipeline(
    config: str,
    overrides: list[str] | None = None,
    force: bool = False,
    skip_if_unchanged: bool = False,
    progress: bool = False,
    parent_run: str | None = None,
    register_model: bool = True,
) -> dict[str, Any]:
    """Run the whole pipeline for ``config`` (a YAML path) with ``--set`` style ``overrides``.

    ``parent_run``: an MLflow run to nest this pipeline's run under (``augment run --trainings``);
    ``register_model``: whether the generator goes to the model registry (False: a repeat training whose
    run is evidence for the verdict over trainings, not a model to hand on).

    Returns a JSON-able summary: run directory, report path, metrics, MLflow ids and the promotion
    outcome, or ``{"skipped": True, "reason": ...}`` when the data has not changed.
    """
    logger = get_run_logger()
    cfg = load_config(config, overrides)
    tracker = make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment)
    model_name = registered_model_name(cfg)

    # Load dataset.
    data = load_data_task(cfg)
    run_fp = run_fingerprint(data.fingerprint, cfg.to_dict())
    if skip_if_unchanged and not force:
        champion = tracker.champion(model_name)
        if champion is not None and champion.run_fingerprint == run_fp:
            reason = (
                f"data fingerprint {data.fingerprint}, config and package version equal those of champion "
                f"{model_name} v{champion.version} (run fingerprint {run_fp}): skipping retraining "
                f"(run with force=true to retrain anyway)"
            )
            logger.info(reason)
            return {
                "skipped": True,
                "reason": reason,
                "data_fingerprint": data.fingerprint,
                "champion": champion.model_uri,
            }
    with claim_run_dir(cfg) as run_dir:  # a run that fails before its first checkpoint leaves no folder
        logger.info("run directory %s, data %s", run_dir, data.fingerprint)

        tags = {
            **data_tags(data),
            "run_dir": str(run_dir.resolve()),
            "config": str(config),
            TAG_OVERRIDES: " ".join(overrides or []) or "(none)",  # why runs of one config differ
        }
        with tracker.run(f"{cfg.name} {run_dir.name}", kind="pipeline", parent=parent_run, tags=tags) as parent:
            tracker.log_params(parent, cfg.flat())
            tracker.log_dataset(parent, data, name=f"{cfg.name}-train", source=data_source(cfg))

            # Train.
            with tracker.run("train", kind="train", parent=parent) as train_run:
                run_dir, snapshot, model_uri = train_stage(cfg, data, run_dir, tracker, train_run, progress=progress)
            # Generate.
            with tracker.run("generate", kind="generate", parent=parent) as generate_run:
                generate_stage(cfg, snapshot, run_dir / rundir.GENERATED, tracker, generate_run)
            # Evaluate.
            metrics, report = evaluate_stage(cfg, run_dir, tracker, parent, progress=progress)
            verdict = (metrics.get("downstream") or {}).get("verdict") or {}
            if verdict:  # the runs table's verdict column, and the verdict paragraph as the run's description
                tracker.set_tags(parent, {TAG_VERDICT: verdict.get("status", ""), TAG_NOTE: verdict.get("text", "")})

            # Register.
            promotion = None
            if model_uri is not None and register_model:
                gate = gate_from_metrics(metrics, cfg.tracking.promote_on)
                promotion = tracker.register(
                    model_uri,
                    model_name,
                    gate,
                    run_id=parent,
                    data_fingerprint=data.fingerprint,
                    run_fingerprint=run_fp,
                )
            with open(report, "a") as fh:
                fh.write(registry_section(promotion, model_name, cfg.tracking.enabled, register_model))
            if promotion is not None:
                tracker.set_tags(
                    parent,
                    {
                        TAG_MODEL: model_name,
                        TAG_VERSION: promotion.version,
                        TAG_ALIAS: promotion.alias,
                        TAG_REASON: promotion.reason,
                    },
                )
                logger.info("%s v%s -> %s: %s", model_name, promotion.version, promotion.alias, promotion.reason)
            tracker.set_tags(parent, {TAG_REPORT: str(Path(report).resolve())})
            log_artifacts_task(tracker, parent, [(Path(report), rundir.EVAL)])

    return {
        "skipped": False,
        "run_dir": str(run_dir),
        "report": str(report),
        "snapshot": str(snapshot),
        "data_fingerprint": data.fingerprint,
        "data_tags": data_tags(data),
        "verdict": (metrics.get("downstream") or {}).get("verdict", {}).get("text"),
        "verdict_status": (metrics.get("downstream") or {}).get("verdict", {}).get("status"),
        "deploy": ((metrics.get("downstream") or {}).get("deploy") or {}).get("text"),
        "tracking_uri": tracker.uri,
        "experiment_id": getattr(tracker, "experiment_id", None),
        "mlflow_run_id": parent if cfg.tracking.enabled else None,
        "promotion": promotion.to_dict() if promotion is not None else None,
    }
