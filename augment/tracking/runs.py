"""Runs: the :class:`Tracker` protocol the flows use, :class:`MlflowTracker` and :class:`NullTracker`.

Everything goes through :class:`MlflowClient` with explicit run ids (never MLflow's thread-local
"active run"), so Prefect tasks in threads or Dask workers can report to the right run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from augment.errors import TrackingError
from augment.registry import CHALLENGER, CHAMPION, Champion, Gate, Promotion, decide_promotion, metric_key
from augment.tracking.store import (
    DEFAULT_URI,
    EXPERIMENT_KIND,
    TAG_COMMIT,
    TAG_EXPERIMENT_KIND,
    TAG_FINGERPRINT,
    TAG_KIND,
    TAG_RUN_FINGERPRINT,
    TAG_RUNS_VIEW,
    check_reachable,
    first_line,
    git_commit,
    param_value,
    resolve_uri,
    runs_view_state,
    sqlite_path,
    store_init_lock,
    use_uri,
)
from augment.tracking_env import apply_mlflow_defaults

if TYPE_CHECKING:
    from augment.data import PreparedData

log = logging.getLogger(__name__)


def _ms(seconds: float | None) -> int | None:
    """Seconds since the epoch (``time.time()``) as MLflow's milliseconds; ``None`` means now."""
    return None if seconds is None else int(round(seconds * 1000))


class Tracker:
    """What the flows need from an experiment tracker (run ids are opaque strings); as it is, the
    tracker of a run with tracking disabled: every call a no-op, :meth:`register` returns ``None``.

    Times are seconds since the epoch (``time.time()``); ``None`` means now. A run recorded after the
    fact (a downstream cell measured inside the evaluation) passes its measured start and end.
    """

    uri = ""

    def __init__(self) -> None:
        self._n = 0

    def start_run(
        self,
        name: str,
        *,
        kind: str,
        parent: str | None = None,
        tags: Mapping[str, str] | None = None,
        start_time: float | None = None,
    ) -> str:
        self._n += 1
        return f"null-{self._n}"

    def end_run(self, run_id: str, status: str = "FINISHED", end_time: float | None = None) -> None:
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

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        *,
        kind: str,
        parent: str | None = None,
        tags: Mapping[str, str] | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> Iterator[str]:
        """A run that ends FINISHED on success and FAILED on any exception."""
        run_id = self.start_run(name, kind=kind, parent=parent, tags=tags, start_time=start_time)
        try:
            yield run_id
        except BaseException:
            # KeyboardInterrupt, Prefect cancellation and errors alike: never FINISHED.
            with contextlib.suppress(Exception):
                self.end_run(run_id, "FAILED")
            raise
        self.end_run(run_id, "FINISHED", end_time=end_time)


class NullTracker(Tracker):
    """Tracking disabled (``tracking.enabled: false``): :class:`Tracker`'s no-ops."""


class MlflowTracker(Tracker):
    """Log to an MLflow tracking store (``sqlite:///file.db``, ``http://host:port``, ...).

    Args:
        uri: tracking (and registry) URI; see :func:`resolve_uri`.
        experiment: experiment name, created when missing. For a SQLite store its artifacts go
            to ``mlartifacts/`` beside the database file (not the working directory).
        check: probe the store first (:func:`check_reachable`), failing in seconds, not minutes.

    Raises:
        TrackingError: the store is unreachable or unwritable.

    Example:
        >>> tracker = MlflowTracker("sqlite:///mlruns.db", "gan-augment")  # doctest: +SKIP
        >>> with tracker.run("pipeline", kind="pipeline") as run_id:  # doctest: +SKIP
        ...     tracker.log_metrics(run_id, {"fidelity/fd_domain": 1.5})
    """

    def __init__(self, uri: str = DEFAULT_URI, experiment: str = "gan-augment", *, check: bool = True) -> None:
        apply_mlflow_defaults()  # fail fast: before the first request reads them
        self.uri = uri
        if check:
            check_reachable(uri)
        use_uri(uri)  # the fluent API (used only to log and register the model) reads the global URIs
        self.experiment_name = experiment
        try:
            with store_init_lock(uri):
                self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                self.experiment_id = self._experiment(experiment)
        except MlflowException as err:
            raise TrackingError(f"tracking store {uri}: {first_line(err)}") from None
        self._commit = git_commit()

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            tags = found.tags or {}
            if TAG_EXPERIMENT_KIND not in tags:  # made by an older version: open on the runs too
                self.client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            if tags.get(TAG_RUNS_VIEW) != runs_view_state():  # an older view (or none): today's columns
                self.client.set_experiment_tag(found.experiment_id, TAG_RUNS_VIEW, runs_view_state())
            return found.experiment_id
        db = sqlite_path(self.uri)
        location = (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None
        try:
            return self.client.create_experiment(
                name,
                artifact_location=location,
                tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND, TAG_RUNS_VIEW: runs_view_state()},
            )
        except MlflowException:  # another process created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # Runs. ------------------------------------------------------------------------------------

    def start_run(
        self,
        name: str,
        *,
        kind: str,
        parent: str | None = None,
        tags: Mapping[str, str] | None = None,
        start_time: float | None = None,
    ) -> str:
        all_tags = {TAG_KIND: kind, TAG_COMMIT: self._commit, "mlflow.source.git.commit": self._commit.split("-")[0]}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})
        run = self.client.create_run(self.experiment_id, start_time=_ms(start_time), tags=all_tags, run_name=name)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED", end_time: float | None = None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=_ms(end_time))

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(metric_key(k), param_value(v)) for k, v in params.items()]
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
        from augment.tracking.model import log_generator_model

        return log_generator_model(self.uri, self.experiment_id, run_id, Path(snapshot_path))

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
        new version with a valid verdict replaces it, saying so. The champion's value comes from its
        version's ``gate.*`` tags (see :class:`Gate`), not from its run's metrics."""
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
