"""Where runs are tracked: the tracking URI, reaching the store, the tags every run carries.

Nothing here logs a run; :mod:`augment.tracking.runs` does. These are the pieces that the runs, the
pyfunc model and ``augment compare`` share: which store (:func:`resolve_uri`), whether it can be
used (:func:`check_reachable`, in seconds, not minutes), and the tag names the runs are searched by.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow

from augment.errors import TrackingError

DEFAULT_URI = "sqlite:///mlruns.db"

# Tags every run of gan-augment carries (``augment compare`` searches by them).
TAG_KIND = "gan_augment.kind"  # pipeline | train | generate | evaluate | downstream
TAG_FINGERPRINT = "data_fingerprint"
#: Data + resolved config + package version: what a scheduled run compares to skip retraining.
TAG_RUN_FINGERPRINT = "run_fingerprint"
TAG_COMMIT = "git_commit"
TAG_TRAIN_COUNTS = "train_counts"
TAG_MODEL = "model_name"
TAG_VERSION = "model_version"
TAG_ALIAS = "model_alias"
TAG_REASON = "promotion_reason"
TAG_REPORT = "report"
TAG_VERDICT = "verdict"  # the verdict's status: helped, hurt, no measurable benefit, ...
TAG_OVERRIDES = "overrides"  # the run's --set overrides, space-separated
TAG_NOTE = "mlflow.note.content"  # the run's description in MLflow's UI
#: The experiment tag MLflow's UI reads to open an experiment on its runs table (model development)
#: instead of the GenAI overview.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: A saved runs-table view (MLflow's ``mlflow.sharedViewState.<key>`` experiment tag, opened with
#: ``?viewStateShareKey=<key>``): the pipeline runs, newest first, with the verdict and headline columns.
RUNS_VIEW_KEY = "gan-augment-verdicts"
TAG_RUNS_VIEW = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
#: The sidebar's "Model training" workflow (MLflow 3 opens on GenAI unless the link says otherwise).
WORKFLOW_QUERY = "workflowType=machine_learning"


def runs_view_state() -> str:
    """The JSON of the saved runs-table view: pipeline runs only, newest first, the verdict tag,
    the headline delta and the distance beside its floor as columns."""
    from augment.registry import DOWNSTREAM, FIDELITY, metric_name

    delta = metric_name(DOWNSTREAM, "delta_vs_real+classic_pts", "real+gan+classic")
    columns = [
        f"tags.`{TAG_VERDICT}`",
        f"metrics.`{delta}`",
        f"metrics.`{metric_name(FIDELITY, 'fd_domain')}`",
        f"metrics.`{metric_name(FIDELITY, 'fd_domain_floor')}`",
        f"tags.`{TAG_OVERRIDES}`",
    ]
    return json.dumps(
        {
            "selectedColumns": columns,
            "searchFilter": f"tags.`{TAG_KIND}` = 'pipeline'",
            "orderByKey": "attributes.start_time",
            "orderByAsc": False,
        }
    )


def runs_table_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in the saved view, on the model-training workflow."""
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}&{WORKFLOW_QUERY}"


CONNECT_TIMEOUT_S = 5.0


def resolve_uri(configured: str | None = None) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` when set, else the config's ``tracking.uri``.

    The environment wins so a platform team can point any config at its server without editing it.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env or configured or DEFAULT_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(urllib.parse.unquote(uri[len("sqlite:///") :]))


@contextlib.contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes.

    MLflow creates a fresh SQLite store's tables on first use; two pipelines starting together on a
    new store both see it empty and the second fails with "table already exists". An exclusive
    ``flock`` on ``<db>.lock`` makes the second wait until the first has created the tables.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    with open(f"{db}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_reachable(uri: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`TrackingError` (one line) unless the tracking store at ``uri`` can be used.

    HTTP(S) servers are probed once on ``/health`` with a short timeout (any HTTP answer counts as
    reachable); a SQLite store needs a folder it can create and write.
    """
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            return  # it answered: reachable (auth or routing is MLflow's business)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it, or point "
                f"tracking.uri / MLFLOW_TRACKING_URI at a running server or a sqlite:/// file"
            ) from None
        return
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent if str(db.parent) else Path(".")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"tracking store {uri}: cannot create {folder} ({err.strerror or err})") from None
        if not os.access(folder, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(f"tracking store {uri}: {db} is not writable")


def use_uri(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` without touching ``MLFLOW_TRACKING_URI``.

    ``mlflow.set_tracking_uri`` also exports the variable (for subprocesses); restoring it keeps the
    variable the user's choice, so a later config in the same process is not silently redirected.
    """
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def git_commit(cwd: Path | None = None) -> str:
    """The current git commit (``-dirty`` when the tree has changes), or ``unknown`` outside git."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def param_value(value: Any) -> str:
    """A param value as MLflow stores it: strings as they are, the rest as JSON, cut to MLflow's limit."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def first_line(err: BaseException) -> str:
    """The first line of an MLflow error, for a one-line :class:`TrackingError`."""
    text = str(getattr(err, "message", None) or err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
