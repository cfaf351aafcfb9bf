"""The promotion policy: which registered generator is ``champion``, and the numbers it is judged by.

Pure decisions on an evaluation's ``metrics.json`` (no MLflow, no Prefect, no torch):
:func:`gate_from_metrics` reads a version's :class:`Gate` number, :func:`decide_promotion` says
whether it replaces the champion and why (in points, like the report), :func:`run_fingerprint` says
whether a scheduled run has anything new to train, and :func:`headline_metrics` /
:func:`cell_metrics` name the numbers logged beside every pipeline run and downstream cell
(``fidelity/...``, ``downstream/...``, ``per_class/...``; :func:`metric_segment` makes every part
MLflow-legal). :mod:`augment.tracking` applies the decisions to MLflow.

Example:
    >>> decide_promotion(Gate("fd_domain", 1.0, False), Gate("fd_domain", 2.0, False), "3")
    (True, 'fd_domain 1 beats champion v3 (2); lower is better')
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from augment.metrics.regimes import BASELINE, GAN_REGIMES, MIN_VERDICT_SEEDS, REGIMES

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GAN_REGIMES",
    "MIN_VERDICT_SEEDS",
    "Champion",
    "Gate",
    "Promotion",
    "decide_promotion",
    "gate_from_metrics",
    "cell_metrics",
    "delta_name",
    "headline_metrics",
    "metric_key",
    "metric_name",
    "metric_segment",
    "regime_from_segment",
    "run_fingerprint",
]

CHAMPION = "champion"
CHALLENGER = "challenger"


# MLflow metric names: a group, then what is measured, then what it is measured on, joined by "/" (the one
# separator; MLflow's UI groups charts by the first part). Every part goes through metric_segment.
FIDELITY = "fidelity"  # the generator against real images: distances beside their floors, precision/recall/...
MEMORISATION = "memorisation"
DOWNSTREAM = "downstream"  # classifiers trained per regime and scored on the real test split
PER_CLASS = "per_class"
TRAIN = "train"  # the training loop's ticks, stepped by images shown
GENERATE = "generate"

# Anything MLflow rejects in a name (it allows letters, digits, "_", "-", ".", " " and "/"), and "/"
# itself inside one part, where it would read as a separator ("T-shirt/top" is one class).
_BAD_PART = re.compile(r"[^\w.\- ]")


def metric_segment(name: str) -> str:
    """One part of a metric name, MLflow-legal: ``real+gan`` -> ``real_gan``, ``T-shirt/top`` -> ``T-shirt_top``.

    Every character MLflow rejects (``+``, ``:``, brackets, ...) and ``/`` become ``_``; a part that
    would read as a path (empty, ``.``, ``..``) becomes underscores, since MLflow refuses names whose
    normalised path differs. The one function that makes names legal: regimes, classes, baselines.

    Example:
        >>> metric_segment("real+gan+classic"), metric_segment("T-shirt/top")
        ('real_gan_classic', 'T-shirt_top')
    """
    part = _BAD_PART.sub("_", str(name))
    return "_" * max(len(part), 1) if part.strip(".") == "" else part


def metric_key(name: str) -> str:
    """A whole metric or param name made MLflow-legal part by part (``/`` kept as the separator).

    Example:
        >>> metric_key("downstream/balanced_acc/real+gan")
        'downstream/balanced_acc/real_gan'
    """
    return "/".join(metric_segment(part) for part in str(name).split("/"))


def metric_name(*parts: str) -> str:
    """``parts`` as one metric name: each made legal by :func:`metric_segment`, joined by ``/``.

    Example:
        >>> metric_name(DOWNSTREAM, "delta_vs_real+classic_pts", "real+gan", "ci_low")
        'downstream/delta_vs_real_classic_pts/real_gan/ci_low'
    """
    return "/".join(metric_segment(p) for p in parts)


def delta_name(baseline: str) -> str:
    """The name part of a paired change in balanced accuracy against ``baseline``, in points."""
    return metric_segment(f"delta_vs_{baseline}_pts")


def regime_from_segment(segment: str) -> str:
    """The regime a name part stands for (``real_gan`` -> ``real+gan``); unknown parts come back as they are."""
    return {metric_segment(r): r for r in REGIMES}.get(segment, segment)


@dataclass(frozen=True)
class Gate:
    """The number a version is judged by: ``metric`` (name), ``value``, its direction and, when the
    evaluation measured one, its 95% ``interval`` (reported beside the decision, never hidden).

    ``metric`` is the gate's own identifier (``downstream_delta``: the best GAN regime's paired
    delta of balanced accuracy against real+classic, as a fraction; ``fd_domain``), stored with each
    registered version as its ``gate.metric``/``gate.value`` tags and read back from those tags, never
    from a run's MLflow metrics. Renaming the run metrics therefore leaves every champion registered
    earlier comparable; changing these identifiers or the unit of ``value`` would not (a champion
    judged by another ``metric`` is "not comparable" and would keep its alias for good).
    """

    metric: str
    value: float | None
    higher_is_better: bool
    interval: tuple[float, float] | None = None
    #: Seeds behind ``value`` and whether they make a verdict (``downstream``: at least
    #: ``MIN_VERDICT_SEEDS`` with an interval). A version without a valid verdict never becomes champion.
    seeds: int | None = None
    valid: bool = True


@dataclass
class Promotion:
    """Outcome of registering a version: which alias it got and why."""

    name: str
    version: str
    alias: str
    promoted: bool
    reason: str
    metric: str
    value: float | None
    champion_version: str | None = None
    champion_value: float | None = None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model_uri": self.model_uri}


def _find_number(tree: Any, key: str, skip: tuple[str, ...] = ("per_class",)) -> float | None:
    """Breadth-first: the shallowest numeric ``key`` in nested mappings (per-class entries skipped)."""
    level = [tree]
    while level:
        nxt = []
        for node in level:
            if not isinstance(node, Mapping):
                continue
            value = node.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            nxt += [v for k, v in node.items() if k not in skip and isinstance(v, Mapping)]
        level = nxt
    return None


def gate_from_metrics(metrics: Mapping[str, Any], promote_on: str) -> Gate:
    """The promotion number of an evaluation (``metrics.json``).

    * ``downstream``: the best GAN regime's mean paired delta of balanced accuracy against the
      classic baseline (``downstream.deltas[regime].balanced_accuracy.mean``), higher is better;
    * ``fd_domain``: the Fréchet distance in the domain feature space, lower is better.
    """
    if promote_on == "fd_domain":
        return Gate("fd_domain", _find_number(metrics, "fd_domain"), higher_is_better=False)
    if promote_on != "downstream":
        raise ValueError(f"unknown promotion metric {promote_on!r} (downstream or fd_domain)")
    deltas = (metrics.get("downstream") or {}).get("deltas") or {}
    cis = {
        r: deltas[r]["balanced_accuracy"]
        for r in GAN_REGIMES
        if isinstance((deltas.get(r) or {}).get("balanced_accuracy"), Mapping)
        and deltas[r]["balanced_accuracy"].get("mean") is not None
    }
    if not cis:
        return Gate("downstream_delta", None, higher_is_better=True, valid=False)
    best = max(cis.values(), key=lambda ci: ci["mean"])
    lo, hi = best.get("ci_low"), best.get("ci_high")
    interval = (float(lo), float(hi)) if lo is not None and hi is not None else None
    seeds = int(best["n"]) if isinstance(best.get("n"), int) else None
    valid = interval is not None and seeds is not None and seeds >= MIN_VERDICT_SEEDS
    return Gate("downstream_delta", float(best["mean"]), True, interval, seeds=seeds, valid=valid)


def _gate_text(metric: str, value: float) -> str:
    """A gate value as the report words it: the downstream delta in points, others as numbers."""
    if metric == "downstream_delta":
        return f"{100 * value:+.1f} pts"
    return f"{value:.4g}"


def decide_promotion(new: Gate, champion: Gate | None, champion_version: str | None = None) -> tuple[bool, str]:
    """Whether ``new`` should replace the champion, and a sentence saying why.

    The rule: a version needs a valid verdict (for ``downstream``, enough seeds for an interval) and
    must be *measurably* better than the champion: with an interval, its whole 95% interval lies on
    the better side of the champion's value; without one (``fd_domain``), its value is better.
    Anything else leaves the champion where it is and the version becomes ``challenger``.

    Example:
        >>> decide_promotion(Gate("fd_domain", 1.0, False), Gate("fd_domain", 2.0, False), "3")
        (True, 'fd_domain 1 beats champion v3 (2); lower is better')
    """
    direction = "higher" if new.higher_is_better else "lower"
    if new.value is None or not math.isfinite(new.value):
        return False, f"this run has no {new.metric} to compare, so it cannot replace a champion"
    text = f"{new.metric} {_gate_text(new.metric, new.value)}"
    if new.interval is not None:
        lo, hi = new.interval
        text += f" (95% CI [{_gate_text(new.metric, lo)}, {_gate_text(new.metric, hi)}]"
        text += f", {new.seeds} seeds)" if new.seeds is not None else ")"
    if not new.valid:
        seeds = f"{new.seeds} seeds" if new.seeds is not None else "no seeds"
        return False, (
            f"{text} is no verdict ({seeds}, needs {MIN_VERDICT_SEEDS} with an interval; evaluate.seeds), "
            "so it cannot become champion"
        )
    if champion is None:
        return True, f"{new.metric} {_gate_text(new.metric, new.value)} with a valid verdict, no comparable champion"
    if champion.metric != new.metric or champion.value is None or not math.isfinite(champion.value):
        return False, (
            f"champion v{champion_version} was judged by {champion.metric}, not {new.metric}; "
            f"not comparable, so it stays champion"
        )
    champ = f"champion v{champion_version} ({_gate_text(champion.metric, champion.value)})"
    if new.interval is not None:
        lo, hi = new.interval
        better = lo > champion.value if new.higher_is_better else hi < champion.value
        if better:
            return True, f"{text} is measurably better than {champ}: the whole interval is {direction}"
        return False, (
            f"{text} is not measurably better than {champ}: the interval reaches the champion's value "
            f"({direction} is better)"
        )
    better = new.value > champion.value if new.higher_is_better else new.value < champion.value
    verb = "beats" if better else "does not beat"
    return better, f"{text} {verb} {champ}; {direction} is better"


@dataclass(frozen=True)
class Champion:
    """The registered version that holds the ``champion`` alias."""

    name: str
    version: str
    run_id: str | None
    data_fingerprint: str | None
    gate: Gate | None
    run_fingerprint: str | None = None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"


def run_fingerprint(data_fingerprint: str, config: Mapping[str, Any]) -> str:
    """What decides a trained and evaluated version: the data, every setting of the resolved config
    that reaches training, generation or evaluation, and the package version. A scheduled run skips
    retraining only when this equals the champion's (a changed config or new code retrains).

    Example:
        >>> run_fingerprint("abc", {"seed": 0, "tracking": {"uri": "x"}}) == run_fingerprint("abc", {"seed": 0})
        True
    """
    try:
        version = importlib.metadata.version("gan-augment")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    decisive = {k: v for k, v in config.items() if k not in ("name", "tracking", "output")}
    blob = json.dumps({"data": data_fingerprint, "config": decisive, "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The evaluation's numbers under MLflow names that say what they are, for the UI and ``augment compare``.

    * ``fidelity/<name>`` and ``fidelity/<name>_floor`` (its real-vs-real floor) for ``fd_domain``,
      ``kid_domain`` (and ``fid_inception``/``kid_inception`` when measured), ``precision``, ``recall``,
      ``density``, ``coverage``; ``memorisation/near_copy_fraction``;
    * ``downstream/balanced_acc/<regime>``: mean balanced accuracy over the seeds;
    * ``downstream/delta_vs_<baseline>_pts/<regime>`` with ``/ci_low`` and ``/ci_high``: the paired
      change in balanced accuracy against the baseline (``real_classic``), in points like the report;
      ``downstream/delta_vs_real_pts/<regime>`` likewise for the GAN regimes against real-only training;
    * ``per_class/<distance>/<class>``, and ``per_class/recall_delta_vs_<baseline>_pts/<regime>/<class>``.

    Regimes and classes pass through :func:`metric_segment` (``real_gan`` for ``real+gan``). The full
    record is the ``eval/metrics.json`` artifact.

    Example:
        >>> headline_metrics({"downstream": {"baseline": "real+classic",
        ...     "deltas": {"real+gan": {"balanced_accuracy": {"mean": 0.031}}}}})
        {'downstream/delta_vs_real_classic_pts/real_gan': 3.1}
    """
    out: dict[str, float] = {}

    def put(value: Any, *parts: str, scale: float = 1.0) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            # Rounded when scaled: 100 * 0.031 is 3.1 pts, not 3.1000000000000005.
            out[metric_name(*parts)] = float(value) if scale == 1 else round(scale * float(value), 10)

    for name in ("fd_domain", "fid_inception"):
        block = metrics.get(name) or {}
        kid = name.replace("fd_", "kid_").replace("fid_", "kid_")
        for key in (name, f"{name}_floor", kid, f"{kid}_floor"):
            put(block.get(key), FIDELITY, key)
        for cls, row in (block.get("per_class") or {}).items():
            put((row or {}).get(name), PER_CLASS, name, cls)
    prdc = metrics.get("prdc") or {}
    for key in ("precision", "recall", "density", "coverage"):
        put((prdc.get("synthetic") or {}).get(key), FIDELITY, key)
        put((prdc.get("floor") or {}).get(key), FIDELITY, f"{key}_floor")
    put((metrics.get("memorisation") or {}).get("near_copy_fraction"), MEMORISATION, "near_copy_fraction")
    down = metrics.get("downstream") or {}
    for regime, row in (down.get("regimes") or {}).items():
        put(((row or {}).get("balanced_accuracy") or {}).get("mean"), DOWNSTREAM, "balanced_acc", regime)
    families = [(down.get("baseline") or BASELINE, down.get("deltas")), ("real", down.get("deltas_vs_real"))]
    for baseline, deltas in families:
        for regime, row in (deltas or {}).items():
            ci = (row or {}).get("balanced_accuracy") or {}
            put(ci.get("mean"), DOWNSTREAM, delta_name(baseline), regime, scale=100)
            put(ci.get("ci_low"), DOWNSTREAM, delta_name(baseline), regime, "ci_low", scale=100)
            put(ci.get("ci_high"), DOWNSTREAM, delta_name(baseline), regime, "ci_high", scale=100)
            for cls, rec in ((row or {}).get("per_class_recall") or {}).items():
                put((rec or {}).get("mean"), PER_CLASS, f"recall_{delta_name(baseline)}", regime, cls, scale=100)
    return out


OVER_TRAININGS = "over_trainings"  # augment run --trainings: the downstream deltas over GAN trainings


def spread_metrics(out: Mapping[str, Any]) -> dict[str, float]:
    """The verdict over trainings (:func:`augment.metrics.spread.spread`) under MLflow names, in points:
    ``over_trainings/delta_vs_real_classic_pts/<regime>`` (the mean over trainings) with ``/ci_low``,
    ``/ci_high`` (95% interval over trainings and classifier seeds) and ``/sd``; ``.../delta_vs_real_pts/<regime>``
    with its interval; ``over_trainings/trainings`` (how many).

    Example:
        >>> m = spread_metrics({"baseline": "real+classic", "trainings": ["a", "b"], "regimes": {"real+gan": {
        ...     "over_trainings": {"mean": 0.012, "ci_low": None, "ci_high": None}, "sd": 0.004, "vs_real": None}}})
        >>> name = "over_trainings/delta_vs_real_classic_pts/real_gan"
        >>> m[name], m[f"{name}/sd"]
        (1.2, 0.4)
    """
    metrics = {metric_name(OVER_TRAININGS, "trainings"): float(len(out["trainings"]))}

    def put(value: Any, *parts: str) -> None:
        if value is not None:
            metrics[metric_name(OVER_TRAININGS, *parts)] = round(100 * float(value), 10)

    for regime, row in out["regimes"].items():
        for baseline, ci in ((out.get("baseline") or BASELINE, row["over_trainings"]), ("real", row.get("vs_real"))):
            put((ci or {}).get("mean"), delta_name(baseline), regime)
            put((ci or {}).get("ci_low"), delta_name(baseline), regime, "ci_low")
            put((ci or {}).get("ci_high"), delta_name(baseline), regime, "ci_high")
        put(row.get("sd"), delta_name(out.get("baseline") or BASELINE), regime, "sd")
    return metrics


def cell_metrics(cell: Mapping[str, Any], class_names: list[str]) -> dict[str, float]:
    """One downstream (regime, seed) cell's scores under the names of its child run.

    ``downstream/accuracy`` (plain), ``downstream/balanced_acc``, ``downstream/macro_f1``,
    ``downstream/seconds`` and ``per_class/recall/<class>`` (the classifier's recall on that class of
    the test split; generator fidelity is ``fidelity/recall`` on the parent, a different quantity).

    Example:
        >>> cell_metrics({"balanced_accuracy": 0.4, "per_class_recall": [1.0, 0.0]}, ["a", "b/c"])
        {'downstream/balanced_acc': 0.4, 'per_class/recall/a': 1.0, 'per_class/recall/b_c': 0.0}
    """
    names = {"accuracy": "accuracy", "balanced_accuracy": "balanced_acc", "macro_f1": "macro_f1", "seconds": "seconds"}
    out = {metric_name(DOWNSTREAM, short): float(cell[key]) for key, short in names.items() if key in cell}
    for name, recall in zip(class_names, cell.get("per_class_recall") or [], strict=False):
        out[metric_name(PER_CLASS, "recall", name)] = float(recall)
    return out
