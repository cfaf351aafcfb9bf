"""Experiment tracking and the model registry: the only module of gan-augment that imports mlflow.

A pipeline run is one MLflow *parent* run with *child* runs for training, generation and every
downstream (regime, seed) cell. Everything goes through :class:`MlflowClient` with explicit run
ids (never MLflow's thread-local "active run"), so Prefect tasks in threads or Dask workers can
report to the right run. :class:`NullTracker` does nothing, for ``tracking.enabled: false``.

The generator is logged as an MLflow *pyfunc* model from code: the model directory holds the
snapshot ``.pt`` file (a state dict, loaded with ``torch.load(weights_only=True)``), a copy of the
``augment`` package and a two-line entry point, so loading it never unpickles code::

    import mlflow
    model = mlflow.pyfunc.load_model("models:/digits-cgan@champion")
    images = model.predict({"label": [3, 3, 7], "seed": [0, 1, 0]})  # (3, C, H, W) in [0, 1]

Row ``i`` of the result depends only on ``(label[i], seed[i])``: it is image number ``seed`` of
class ``label`` that ``augment generate --seed 0`` writes (see :func:`augment.generate.sample`).

Promotion gate: a new version takes the ``champion`` alias only when it beats the current champion
on ``tracking.promote_on``; otherwise it takes ``challenger`` and :class:`Promotion` says why.

Example:
    >>> tracker = MlflowTracker("sqlite:///mlruns.db", "gan-augment")  # doctest: +SKIP
    >>> with tracker.run("pipeline", kind="pipeline") as run_id:  # doctest: +SKIP
    ...     tracker.log_metrics(run_id, {"fd_domain": 1.5})
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from augment.errors import TrackingError
from augment.registry import CHALLENGER, CHAMPION, Champion, Gate, Promotion, decide_promotion, metric_key
from augment.tracking_env import apply_mlflow_defaults

if TYPE_CHECKING:
    from augment.data import PreparedData

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlruns.db"
MODEL_NAME = "generator"  # artifact name of the logged pyfunc model inside its run

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

CONNECT_TIMEOUT_S = 5.0

# The entry point MLflow executes to build the pyfunc model ("models from code"): no pickles.
_MODEL_CODE = '''\
"""MLflow models-from-code entry point of a gan-augment generator (written by augment.tracking)."""
import mlflow

from augment.tracking import GeneratorModel

mlflow.models.set_model(GeneratorModel())
'''

# What the logged model needs at load time (pinned to this environment; no slow inference).
_MODEL_REQUIREMENTS = (
    "mlflow",
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "pillow",
    "scikit-learn",
    "scipy",
    "tqdm",
    "albumentations",  # imported by the augment package itself
)


# --------------------------------------------------------------------------------------------- #
# URIs, reachability, names.


def resolve_uri(configured: str | None = None) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` when set, else the config's ``tracking.uri``.

    The environment wins so a platform team can point any config at its server without editing it.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env or configured or DEFAULT_URI


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(urllib.parse.unquote(uri[len("sqlite:///") :]))


@contextlib.contextmanager
def _store_init_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes.

    MLflow creates a fresh SQLite store's tables on first use; two pipelines starting together on a
    new store both see it empty and the second fails with "table already exists". An exclusive
    ``flock`` on ``<db>.lock`` makes the second wait until the first has created the tables.
    """
    db = _sqlite_path(uri)
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
    db = _sqlite_path(uri)
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


# --------------------------------------------------------------------------------------------- #
# Tracker protocol and the two implementations.


@runtime_checkable
class Tracker(Protocol):
    """What the flows need from an experiment tracker (run ids are opaque strings)."""

    uri: str

    def start_run(
        self, name: str, *, kind: str, parent: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str: ...
    def end_run(self, run_id: str, status: str = "FINISHED") -> None: ...
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None: ...
    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, run_id: str, data: PreparedData, *, name: str, source: str) -> None: ...
    def log_generator(self, run_id: str, snapshot_path: Path) -> str | None: ...
    def register(
        self, model_uri: str, name: str, gate: Gate, *, run_id: str, data_fingerprint: str, run_fingerprint: str = ""
    ) -> Promotion | None: ...
    def champion(self, name: str) -> Champion | None: ...
    def run(
        self, name: str, *, kind: str, parent: str | None = None, tags: Mapping[str, str] | None = None
    ) -> contextlib.AbstractContextManager[str]: ...


class _RunContext:
    """``tracker.run(...)``: a run that ends FINISHED on success and FAILED on any exception."""

    @contextlib.contextmanager
    def run(
        self, name: str, *, kind: str, parent: str | None = None, tags: Mapping[str, str] | None = None
    ) -> Iterator[str]:
        run_id = self.start_run(name, kind=kind, parent=parent, tags=tags)  # type: ignore[attr-defined]
        try:
            yield run_id
        except BaseException:
            # KeyboardInterrupt, Prefect cancellation and errors alike: never FINISHED.
            with contextlib.suppress(Exception):
                self.end_run(run_id, "FAILED")  # type: ignore[attr-defined]
            raise
        self.end_run(run_id, "FINISHED")  # type: ignore[attr-defined]


class NullTracker(_RunContext):
    """Tracking disabled: every call is a no-op; :meth:`register` returns ``None``."""

    uri = ""

    def __init__(self) -> None:
        self._n = 0

    def start_run(
        self, name: str, *, kind: str, parent: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        self._n += 1
        return f"null-{self._n}"

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        pass

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_dataset(self, run_id: str, data: PreparedData, *, name: str, source: str) -> None:
        pass

    def log_generator(self, run_id: str, snapshot_path: Path) -> str | None:
        return None

    def register(
        self, model_uri: str, name: str, gate: Gate, *, run_id: str, data_fingerprint: str, run_fingerprint: str = ""
    ) -> Promotion | None:
        return None

    def champion(self, name: str) -> Champion | None:
        return None


class MlflowTracker(_RunContext):
    """Log to an MLflow tracking store (``sqlite:///file.db``, ``http://host:port``, ...).

    Args:
        uri: tracking (and registry) URI; see :func:`resolve_uri`.
        experiment: experiment name, created when missing. For a SQLite store its artifacts go
            to ``mlartifacts/`` beside the database file (not the working directory).
        check: probe the store first (:func:`check_reachable`), failing in seconds, not minutes.

    Raises:
        TrackingError: the store is unreachable or unwritable.
    """

    def __init__(self, uri: str = DEFAULT_URI, experiment: str = "gan-augment", *, check: bool = True) -> None:
        apply_mlflow_defaults()  # fail fast: before the first request reads them
        self.uri = uri
        if check:
            check_reachable(uri)
        use_uri(uri)  # the fluent API (used only to log and register the model) reads the global URIs
        self.experiment_name = experiment
        try:
            with _store_init_lock(uri):
                self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                self.experiment_id = self._experiment(experiment)
        except MlflowException as err:
            raise TrackingError(f"tracking store {uri}: {_first_line(err)}") from None
        self._commit = git_commit()

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if TAG_EXPERIMENT_KIND not in (found.tags or {}):  # made by an older version: open on the runs too
                self.client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            return found.experiment_id
        db = _sqlite_path(self.uri)
        location = (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None
        try:
            return self.client.create_experiment(
                name, artifact_location=location, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
            )
        except MlflowException:  # another process created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # Runs. ------------------------------------------------------------------------------------

    def start_run(
        self, name: str, *, kind: str, parent: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        all_tags = {TAG_KIND: kind, TAG_COMMIT: self._commit, "mlflow.source.git.commit": self._commit.split("-")[0]}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(metric_key(k), _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, params=items[start : start + 100], synchronous=True)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(k), float(v), now, int(step or 0))
            for k, v in metrics.items()
            if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(v)
        ]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000], synchronous=True)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            self.client.log_batch(run_id, tags=items, synchronous=True)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)
        else:
            log.warning("artifact %s does not exist; not logged", path)

    def log_dataset(self, run_id: str, data: PreparedData, *, name: str, source: str) -> None:
        """Log the data as an MLflow dataset input: digest = data fingerprint, per-split counts as tags."""
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.types import Schema, TensorSpec

        c, h, w = data.train.images.shape[1:]
        schema = Schema(
            [TensorSpec(np.dtype(np.uint8), (-1, c, h, w), "image"), TensorSpec(np.dtype(np.int64), (-1,), "label")]
        )
        if Path(source).exists():
            src = resolve_dataset_source(str(Path(source).resolve()))
        else:  # a built-in source such as scikit-learn's digits is no path or URL
            src = CodeDatasetSource({"source": source})
        dataset = MetaDataset(src, name=name, digest=data.fingerprint, schema=schema)
        tags = [InputTag("mlflow.data.context", "train")]
        for split, counts in data.counts().items():
            tags.append(InputTag(f"counts.{split}", json.dumps(counts)))
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])

    # Model and registry. ----------------------------------------------------------------------

    def log_generator(self, run_id: str, snapshot_path: Path) -> str | None:
        """Log the snapshot as a pyfunc model (from code) in ``run_id``; returns its model URI."""
        from mlflow.models import Model, ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec

        from augment.checkpoint import load_snapshot

        snap = load_snapshot(Path(snapshot_path))
        kw = snap.generator_kwargs
        shape = (-1, int(kw["channels"]), int(kw["image_size"]), int(kw["image_size"]))
        signature = ModelSignature(
            inputs=Schema([ColSpec("long", "label"), ColSpec("long", "seed")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), shape)]),
        )
        # MLflow 3 files the LoggedModel under the fluent "current" experiment, not the run's.
        use_uri(self.uri)
        mlflow.set_experiment(experiment_id=self.experiment_id)
        with tempfile.TemporaryDirectory(prefix="augment-model-") as tmp:
            code = Path(tmp) / "generator_model.py"
            code.write_text(_MODEL_CODE)
            package = Path(tmp) / "augment"
            shutil.copytree(
                Path(__file__).resolve().parent, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
            info = Model.log(
                artifact_path=None,
                name=MODEL_NAME,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                python_model=str(code),
                artifacts={"snapshot": str(snapshot_path)},
                code_paths=[str(package)],
                signature=signature,
                input_example={"label": [0], "seed": [0]},
                pip_requirements=model_requirements(),
                metadata={
                    "class_names": list(snap.class_names),
                    "class_counts": list(snap.class_counts),
                    "image_shape": list(shape[1:]),
                    "data_fingerprint": snap.data_fingerprint,
                    "kimg": snap.kimg,
                },
            )
        return info.model_uri

    def champion(self, name: str) -> Champion | None:
        try:
            mv = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return None
        tags = mv.tags or {}
        gate = None
        if "gate.metric" in tags:
            value = tags.get("gate.value")
            gate = Gate(
                tags["gate.metric"],
                float(value) if value not in (None, "", "None") else None,
                tags.get("gate.higher_is_better") == "true",
            )
        return Champion(
            name, str(mv.version), mv.run_id, tags.get(TAG_FINGERPRINT), gate, tags.get(TAG_RUN_FINGERPRINT) or None
        )

    def register(
        self, model_uri: str, name: str, gate: Gate, *, run_id: str, data_fingerprint: str, run_fingerprint: str = ""
    ) -> Promotion | None:
        """Register ``model_uri`` under ``name`` and apply the promotion gate (see :func:`decide_promotion`).

        Gate values are compared only between versions evaluated on the same data (fingerprint,
        which fixes the test split too): a champion evaluated on other data is no yardstick, and a
        new version with a valid verdict replaces it, saying so."""
        current = self.champion(name)
        tags = {
            "gate.metric": gate.metric,
            "gate.value": "" if gate.value is None else repr(float(gate.value)),
            "gate.higher_is_better": "true" if gate.higher_is_better else "false",
            TAG_FINGERPRINT: data_fingerprint,
            TAG_RUN_FINGERPRINT: run_fingerprint,
            "pipeline_run_id": run_id,
        }
        use_uri(self.uri)
        mv = mlflow.register_model(model_uri, name, tags=tags)
        version = str(mv.version)
        # The yardstick: the champion's gate, unless it has none or was measured on other data
        # (another test split): then the new version is judged as if there were no champion.
        yardstick, note = (current.gate, "") if current is not None else (None, "")
        if current is not None and current.data_fingerprint not in (None, "", data_fingerprint):
            yardstick = None
            note = (
                f"champion v{current.version} was evaluated on other data ({current.data_fingerprint}, this run "
                f"{data_fingerprint}), so the values are not compared; "
            )
        elif current is not None and current.gate is None:
            note = f"champion v{current.version} has no recorded {gate.metric}, so it is not compared; "
        promoted, reason = decide_promotion(gate, yardstick, current.version if yardstick is not None else None)
        reason = note + reason
        alias = CHAMPION if promoted else CHALLENGER
        self.client.set_registered_model_alias(name, alias, version)
        self.client.set_model_version_tag(name, version, "promotion_reason", reason)
        log.info("registered %s v%s as %s: %s", name, version, alias, reason)
        return Promotion(
            name=name,
            version=version,
            alias=alias,
            promoted=promoted,
            reason=reason,
            metric=gate.metric,
            value=gate.value,
            champion_version=current.version if current else None,
            champion_value=current.gate.value if current and current.gate else None,
        )


def make_tracker(enabled: bool, uri: str | None, experiment: str, *, check: bool = True) -> Tracker:
    """:class:`MlflowTracker` at :func:`resolve_uri` (``uri``) when ``enabled``, else :class:`NullTracker`."""
    if not enabled:
        return NullTracker()
    return MlflowTracker(resolve_uri(uri), experiment, check=check)


def model_requirements() -> list[str]:
    """Pinned pip requirements of the logged generator (from this environment, no inference)."""
    reqs = []
    for dist in _MODEL_REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's param value limit


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "message", None) or err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


# --------------------------------------------------------------------------------------------- #
# The pyfunc model and getting a snapshot back.


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of a snapshot: ``predict({"label": [...], "seed": [...]})`` -> (N, C, H, W) in [0, 1].

    Built by MLflow from the logged entry point; the weights come from the snapshot artifact,
    loaded with ``torch.load(weights_only=True)``.
    """

    def load_context(self, context: Any) -> None:
        from augment.checkpoint import load_snapshot

        snap = load_snapshot(Path(context.artifacts["snapshot"]))
        self.class_names = list(snap.class_names)
        self.G = snap.generator("cpu")

    # A DataFrame hint: MLflow 3 infers no second schema from it (the logged signature rules) and
    # turns a {"label": [...], "seed": [...]} dict into one before calling.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        from augment.generate import sample

        if isinstance(model_input, pd.DataFrame):
            columns = {c: model_input[c].to_numpy() for c in model_input.columns}
        elif isinstance(model_input, Mapping):
            columns = {c: np.atleast_1d(np.asarray(v)) for c, v in model_input.items()}
        else:
            kind = type(model_input).__name__
            raise ValueError(f"expected a DataFrame or a dict with 'label' and 'seed', got {kind}")
        missing = {"label", "seed"} - set(columns)
        if missing:
            raise ValueError(f"model input lacks column(s) {sorted(missing)}; give 'label' and 'seed'")
        labels = torch.from_numpy(np.array(columns["label"], dtype=np.int64))
        seeds = torch.from_numpy(np.array(columns["seed"], dtype=np.int64))
        if labels.shape != seeds.shape:
            raise ValueError(f"'label' has {len(labels)} rows but 'seed' has {len(seeds)}")
        k = len(self.class_names)
        if len(labels) and (labels.min() < 0 or labels.max() >= k):
            bad = labels[(labels < 0) | (labels >= k)][0].item()
            raise ValueError(f"label {bad} is not a class of this generator (0..{k - 1}: {self.class_names})")
        if len(seeds) and seeds.min() < 0:
            raise ValueError("seeds must be >= 0")
        images = sample(self.G, labels, seeds, seed=0)  # image i = f(label i, seed i) only
        return ((images + 1) / 2).clamp_(0, 1).numpy().astype(np.float32)


def compare_runs(uri: str, experiment: str, limit: int = 20) -> pd.DataFrame:
    """The recent pipeline runs of ``experiment`` side by side, newest first (a pandas DataFrame).

    Numbers stay numbers (for ``--csv``): run, started, status, the verdict and the ``--set``
    overrides of the run, data fingerprint, train images per class, ``fd_domain`` and
    ``fd_domain_floor``, and per regime ``delta_pts.<regime>.mean`` / ``.ci_low`` / ``.ci_high`` (the
    paired change in balanced accuracy against real+classic, in points), the registered version and
    its alias now (``champion``/``challenger``; ``-`` when the alias moved on). :func:`compare_display`
    formats it for a terminal.
    """
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise TrackingError(f"no experiment {experiment!r} in {uri} (run `augment run CONFIG` first)")
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{TAG_KIND}` = 'pipeline'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
    except MlflowException as err:
        raise TrackingError(f"tracking store {uri}: {_first_line(err)}") from None
    aliases: dict[str, dict[str, str]] = {}  # model name -> {version: alias}
    for name in {r.data.tags.get(TAG_MODEL) for r in runs} - {None}:
        try:
            model = client.get_registered_model(name)
            aliases[name] = {str(v): a for a, v in (model.aliases or {}).items()}
        except MlflowException:
            aliases[name] = {}
    rows = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        counts = json.loads(t.get(TAG_TRAIN_COUNTS, "{}") or "{}")
        row: dict[str, Any] = {
            "run": r.info.run_name,
            "run_id": r.info.run_id[:8],
            "started": pd.Timestamp(r.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
            "status": r.info.status,
            "verdict": t.get(TAG_VERDICT, ""),
            "overrides": t.get(TAG_OVERRIDES, ""),
            "fingerprint": t.get(TAG_FINGERPRINT, ""),
            "train_per_class": " ".join(f"{k}:{v}" for k, v in counts.items()),
        }
        row["fd_domain"], row["fd_domain_floor"] = m.get("fd_domain"), m.get("fd_domain_floor")
        for key in sorted(k for k in m if k.startswith("delta.") and k.count(".") == 1):
            regime = key[len("delta.") :]
            for part, value in (
                ("mean", m[key]),
                ("ci_low", m.get(f"{key}.ci_low")),
                ("ci_high", m.get(f"{key}.ci_high")),
            ):
                row[f"delta_pts.{regime}.{part}"] = None if value is None else 100 * value
        name, version = t.get(TAG_MODEL), t.get(TAG_VERSION)
        row["model"] = f"{name} v{version}" if name and version else "-"
        row["alias"] = aliases.get(name or "", {}).get(version or "", "-") if version else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def compare_display(table: pd.DataFrame, width: int = 100) -> str:
    """:func:`compare_runs`'s table as text that fits ``width`` columns: one column per run (named by
    its run id), one row per field, runs in groups side by side; deltas as ``mean [low, high]`` pts."""

    def pts(row: pd.Series, regime: str) -> str:
        mean, lo, hi = (row.get(f"delta_pts.{regime}.{p}") for p in ("mean", "ci_low", "ci_high"))
        if mean is None or pd.isna(mean):
            return "-"
        return f"{mean:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None and not pd.isna(lo) else "")

    regimes = sorted({c.split(".")[1] for c in table.columns if c.startswith("delta_pts.")})
    fields: dict[str, list[str]] = {}
    for _, row in table.iterrows():
        fd, floor = row.get("fd_domain"), row.get("fd_domain_floor")
        values = {
            "run": str(row["run"]),
            "started": str(row["started"]),
            "status": str(row["status"]),
            "verdict": str(row.get("verdict") or "-"),
            "--set overrides": str(row.get("overrides") or "-"),
            "data fingerprint": str(row["fingerprint"]),
            "train images per class": str(row["train_per_class"]),
            "fd_domain (floor)": "-"
            if fd is None or pd.isna(fd)
            else f"{fd:.3g}" + ("" if floor is None or pd.isna(floor) else f" ({floor:.3g})"),
            **{f"Δ bal. acc. {r} vs real+classic (pts)": pts(row, r) for r in regimes},
            "model": str(row["model"]),
            "alias": str(row["alias"]),
        }
        for k, v in values.items():
            fields.setdefault(k, []).append(v)
    names = list(fields)
    label_w = max(len(n) for n in names)
    cols = [[str(rid)] + [fields[n][i] for n in names] for i, rid in enumerate(table["run_id"])]
    col_w = [min(max(len(v) for v in col), max(10, width - label_w - 3)) for col in cols]
    out, start = [], 0
    while start < len(cols):
        end, used = start, label_w
        while end < len(cols) and (end == start or used + 2 + col_w[end] <= width):
            used += 2 + col_w[end]
            end += 1
        for j, label in enumerate(["run id", *names]):
            cells = [cols[i][j][: col_w[i]].ljust(col_w[i]) for i in range(start, end)]
            out.append((label.ljust(label_w) + "  " + "  ".join(cells)).rstrip())
        out.append("")
        start = end
    return "\n".join(out).rstrip() + "\n"


def download_snapshot(model_uri: str, *, tracking_uri: str | None = None, dst: Path | None = None) -> Path:
    """Download a logged generator and return the path of its snapshot ``.pt`` file.

    Args:
        model_uri: ``models:/NAME@champion``, ``models:/NAME/3``, ``models:/m-...``,
            ``runs:/RUN_ID/generator`` or a local model folder.
        tracking_uri: defaults to :func:`resolve_uri` (``MLFLOW_TRACKING_URI`` or ``sqlite:///mlruns.db``).
        dst: folder to download into (default: a fresh temporary folder).

    Raises:
        TrackingError: the store is unreachable, or the URI names no gan-augment generator.

    Example:
        >>> from augment.checkpoint import load_snapshot
        >>> snap = load_snapshot(download_snapshot("models:/digits-cgan@champion"))  # doctest: +SKIP
    """
    uri = tracking_uri or resolve_uri(None)
    check_reachable(uri)
    use_uri(uri)
    if dst is None:
        dst = Path(tempfile.mkdtemp(prefix="augment-generator-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
        from mlflow.models import Model

        flavor = Model.load(str(local)).flavors.get("python_function", {})
        rel = flavor["artifacts"]["snapshot"]["path"]
    except MlflowException as err:
        raise TrackingError(f"{model_uri}: {_first_line(err)}") from None
    except (KeyError, TypeError, OSError):
        raise TrackingError(f"{model_uri}: not a gan-augment generator (no snapshot artifact)") from None
    path = local / rel
    if not path.is_file():
        raise TrackingError(f"{model_uri}: snapshot artifact {rel} is missing")
    return path
