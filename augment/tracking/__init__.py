"""Experiment tracking and the model registry: the only package of gan-augment that imports mlflow.

A pipeline run is one MLflow *parent* run with *child* runs for training, generation and every
downstream (regime, seed) cell, each with its measured start and end. :class:`NullTracker` does
nothing, for ``tracking.enabled: false``. Metric names (``fidelity/...``, ``downstream/...``,
``per_class/...``) come from :mod:`augment.registry`, which also holds the promotion policy: a new
version takes the ``champion`` alias only when it beats the current champion on
``tracking.promote_on``; otherwise it takes ``challenger`` and :class:`Promotion` says why.

* :mod:`augment.tracking.store`: the tracking URI, reaching the store, the tags runs carry;
* :mod:`augment.tracking.runs`: the :class:`Tracker` protocol, :class:`MlflowTracker`, registering;
* :mod:`augment.tracking.model`: the generator as a pyfunc model and :func:`download_snapshot`;
* :mod:`augment.tracking.compare`: ``augment compare``.

Example:
    >>> import mlflow  # doctest: +SKIP
    >>> model = mlflow.pyfunc.load_model("models:/digits-cgan@champion")  # doctest: +SKIP
    >>> images = model.predict({"label": [3, 3, 7], "index": [0, 1, 0]})  # (3, C, H, W) in [0, 1]  # doctest: +SKIP
"""

from augment.registry import Champion, Gate, Promotion
from augment.tracking.compare import compare_display, compare_runs
from augment.tracking.model import (
    INDEX,
    INDEX_ALIAS,
    MODEL_NAME,
    GeneratorModel,
    download_snapshot,
    log_generator_model,
    model_requirements,
)
from augment.tracking.runs import MlflowTracker, NullTracker, Tracker, make_tracker
from augment.tracking.store import (
    CONNECT_TIMEOUT_S,
    DEFAULT_URI,
    EXPERIMENT_KIND,
    RUNS_VIEW_KEY,
    TAG_ALIAS,
    TAG_COMMIT,
    TAG_EXPERIMENT_KIND,
    TAG_FINGERPRINT,
    TAG_KIND,
    TAG_MODEL,
    TAG_NOTE,
    TAG_OVERRIDES,
    TAG_REASON,
    TAG_REPORT,
    TAG_RUN_FINGERPRINT,
    TAG_RUNS_VIEW,
    TAG_TRAIN_COUNTS,
    TAG_VERDICT,
    TAG_VERSION,
    check_reachable,
    git_commit,
    resolve_uri,
    runs_table_url,
    use_uri,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_URI",
    "EXPERIMENT_KIND",
    "INDEX",
    "INDEX_ALIAS",
    "MODEL_NAME",
    "RUNS_VIEW_KEY",
    "TAG_ALIAS",
    "TAG_COMMIT",
    "TAG_EXPERIMENT_KIND",
    "TAG_FINGERPRINT",
    "TAG_KIND",
    "TAG_MODEL",
    "TAG_NOTE",
    "TAG_OVERRIDES",
    "TAG_REASON",
    "TAG_REPORT",
    "TAG_RUNS_VIEW",
    "TAG_RUN_FINGERPRINT",
    "TAG_TRAIN_COUNTS",
    "TAG_VERDICT",
    "TAG_VERSION",
    "Champion",
    "Gate",
    "GeneratorModel",
    "MlflowTracker",
    "NullTracker",
    "Promotion",
    "Tracker",
    "check_reachable",
    "compare_display",
    "compare_runs",
    "download_snapshot",
    "git_commit",
    "log_generator_model",
    "make_tracker",
    "model_requirements",
    "resolve_uri",
    "runs_table_url",
    "use_uri",
]
