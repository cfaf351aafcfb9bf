"""The MLflow settings this tool runs with, applied by the program that runs it (never at import).

MLflow's defaults retry an unreachable server for about four minutes and ping a telemetry
endpoint; this tool is offline by design and should fail fast. :func:`apply_mlflow_defaults` sets
these where the environment does not already say otherwise (a user's own settings win). The
command line applies them before anything imports mlflow (telemetry is decided at that import);
:class:`augment.tracking.MlflowTracker` applies them again before its first request (the HTTP
settings are read per request), so a library user gets the same timeouts.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no bars inside flow logs
}


def apply_mlflow_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set every :data:`MLFLOW_DEFAULTS` entry that ``environ`` (default ``os.environ``) lacks."""
    env = os.environ if environ is None else environ
    for key, value in MLFLOW_DEFAULTS.items():
        env.setdefault(key, value)
