"""The contract of an evaluation: what ``evaluate_run`` returns and ``eval/metrics.json`` holds.

``Evaluation`` is a ``TypedDict``: the result stays a plain JSON-shaped dict (what MLflow logs and
``json`` writes), while its keys and their types are declared once, here, for every reader (the
report, the promotion policy, tracking, the command line). :func:`read_evaluation` reads a
``metrics.json`` back into it and refuses a file that does not fit, naming the first bad key.

Example:
    >>> ev = read_evaluation("runs/00000-digits/eval/metrics.json")  # doctest: +SKIP
    >>> ev["verdict"], ev["fd_domain"]["fd_domain"], ev["fd_domain"]["fd_domain_floor"]  # doctest: +SKIP
    ('No measurable benefit: ...', 0.41, 0.12)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import (
    Any,
    NotRequired,  # pydantic needs this TypedDict before Python 3.12
)

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from augment.errors import DataError


class SnapshotInfo(TypedDict):
    """The snapshot that was evaluated."""

    path: str
    kimg: float
    train_metrics: dict[str, float]  #: the best-snapshot metric at that snapshot, if training measured one
    member_kimg: NotRequired[list[float]]  #: a snapshot ensemble's other members (``train.ensemble``)


class FeatureExtractorInfo(TypedDict):
    """The network whose features ``fd_domain`` / KID / PRDC are computed in."""

    name: str  #: ``domain``: a small CNN trained on the run's real train+val split
    architecture: str
    feature_dims: int
    trained_on: str
    n_trained_on: int
    cache: str


class Evaluation(TypedDict):
    """One evaluation of one run; the sections' inner keys are documented by their producers:
    :func:`augment.metrics.frechet.distance_report` (``fd_domain``, ``fid_inception``),
    :func:`augment.metrics.prdc.prdc_report`, :func:`augment.metrics.memorisation.memorisation`,
    :func:`augment.metrics.verdict.summarize` (``downstream``)."""

    run_dir: str
    snapshot: SnapshotInfo
    data_fingerprint: str
    class_names: list[str]
    counts: dict[str, dict[str, int]]  #: split -> class name -> images
    sizes: dict[str, int]  #: split -> images
    feature_extractor: FeatureExtractorInfo
    generate_seed: int
    fd_domain: dict[str, Any]  #: ``fd_domain``, ``fd_domain_floor``, KID, sample sizes, ``per_class``
    prdc: dict[str, Any]
    memorisation: dict[str, Any]
    downstream: dict[str, Any]  #: regimes, deltas with 95% intervals, the verdict, cells, ``deploy``
    verdict: str  #: the verdict's one paragraph (``downstream["verdict"]["text"]``)
    warnings: list[str]
    config: dict[str, Any]  #: the resolved config the evaluation ran with
    seconds: float  #: the measurements' wall time (the report and plots written after are not in it)
    fid_inception: NotRequired[dict[str, Any]]  #: only with the InceptionV3 FID weights
    files: NotRequired[dict[str, str]]  #: what was written (name -> path); added once the files exist


_ADAPTER: TypeAdapter[Evaluation] = TypeAdapter(Evaluation)


def check_evaluation(obj: Any, where: str = "evaluation") -> Evaluation:
    """``obj`` validated against :class:`Evaluation` (types coerced as JSON would, e.g. int -> float).

    Raises:
        DataError: naming the first key that is missing or of the wrong type.
    """
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise DataError(f"{where}: not an evaluation result: {key}: {first['msg']}") from None


def read_evaluation(path: str | Path) -> Evaluation:
    """Read ``eval/metrics.json`` (or a run directory's) back into an :class:`Evaluation`.

    Raises:
        DataError: the file is missing, not JSON, or not an evaluation result.
    """
    path = Path(path)
    if path.is_dir():
        from augment import rundir

        path = path / rundir.EVAL / rundir.METRICS_JSON if (path / rundir.EVAL).is_dir() else path / rundir.METRICS_JSON
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no evaluation here (run `augment evaluate RUN_DIR` first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable metrics.json ({str(err).splitlines()[0][:120]})") from None
    return check_evaluation(raw, str(path))
