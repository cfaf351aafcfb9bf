"""Serve the pipeline on a schedule: ``augment serve CONFIG --cron "0 3 * * *"``.

``flow.serve`` registers a deployment with the Prefect API and runs its scheduled (and manually
triggered) runs in subprocesses of this process until it is stopped. It needs a Prefect server::

    prefect server start --host 127.0.0.1                        # terminal 1
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    augment serve configs/digits.yaml --cron "0 3 * * *"         # terminal 2
    prefect deployment run gan-augment-pipeline/digits           # a run now
    prefect deployment run gan-augment-pipeline/digits -p force=true   # retrain on unchanged data

Scheduled runs pass ``skip_if_unchanged=true``: when the data fingerprint equals the champion's
the run logs that and stops before training. Teams with work pools use ``prefect.yaml`` instead.
"""

from __future__ import annotations

from pathlib import Path

from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron

from flows.pipeline import pipeline


def deployment_parameters(config: str | Path, overrides: list[str] | None = None, force: bool = False) -> dict:
    """The parameters a served run gets (an absolute config path: runs may start in another folder)."""
    return {
        "config": str(Path(config).resolve()),
        "overrides": list(overrides or []),
        "force": force,
        "skip_if_unchanged": True,
    }


def serve_pipeline(
    config: str | Path,
    cron: str,
    *,
    overrides: list[str] | None = None,
    name: str = "gan-augment",
    timezone: str | None = None,
    force: bool = False,
    limit: int | None = 1,
) -> None:
    """Serve the pipeline deployment ``gan-augment-pipeline/<name>`` on ``cron`` (blocks)."""
    pipeline.serve(
        name=name,
        schedule=Cron(cron, timezone=timezone) if timezone else None,
        cron=None if timezone else cron,
        parameters=deployment_parameters(config, overrides, force),
        description=f"gan-augment pipeline for {config} on '{cron}'",
        tags=["gan-augment"],
        limit=limit,  # one run at a time: two trainings would fight for the same cores
        entrypoint_type=EntrypointType.MODULE_PATH,  # `flows.pipeline.pipeline`: works from any folder
    )
