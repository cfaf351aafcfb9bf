"""The promotion policy: which registered generator is ``champion``, and the numbers it is judged by.

Pure decisions on an evaluation's ``metrics.json`` (no MLflow, no Prefect, no torch):
:func:`gate_from_metrics` reads a version's :class:`Gate` number, :func:`decide_promotion` says
whether it replaces the champion and why (in points, like the report), :func:`run_fingerprint` says
whether a scheduled run has anything new to train, and :func:`headline_metrics` names the numbers
logged beside every pipeline run. :mod:`augment.tracking` applies the decisions to MLflow.

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

from augment.metrics.regimes import GAN_REGIMES, MIN_VERDICT_SEEDS

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
    "headline_metrics",
    "metric_key",
    "run_fingerprint",
]

CHAMPION = "champion"
CHALLENGER = "challenger"


_BAD_NAME = re.compile(r"[^\w./\- ]")


def metric_key(name: str) -> str:
    """An MLflow-safe metric/param name: ``real+gan`` -> ``real_gan`` (MLflow rejects ``+``)."""
    return _BAD_NAME.sub("_", str(name))


@dataclass(frozen=True)
class Gate:
    """The number a version is judged by: ``metric`` (name), ``value``, its direction and, when the
    evaluation measured one, its 95% ``interval`` (reported beside the decision, never hidden)."""

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
    """The evaluation's numbers under short MLflow names, for the UI's compare view and ``augment compare``.

    Overall: ``fd_domain`` and ``kid_domain`` beside their real-vs-real ``*_floor`` (the same for
    ``fid_inception``), ``precision/recall/density/coverage`` (and ``*_floor``), ``near_copy_fraction``;
    downstream: per regime ``acc.<regime>`` (mean balanced accuracy) and ``delta.<regime>`` with
    ``.ci_low``/``.ci_high`` (paired, against the baseline). Per class, grouped under ``class/``:
    ``class/fd_domain.<c>`` and ``class/recall_delta.<c>`` (recall change of the verdict's GAN regime).
    Regimes and classes are named MLflow-safe (``real_gan`` for ``real+gan``). The full record is the
    ``eval/metrics.json`` artifact.
    """
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[metric_key(name)] = float(value)

    for name in ("fd_domain", "fid_inception"):
        block = metrics.get(name) or {}
        kid = name.replace("fd_", "kid_").replace("fid_", "kid_")
        for key in (name, f"{name}_floor", kid, f"{kid}_floor"):
            put(key, block.get(key))
        for cls, row in (block.get("per_class") or {}).items():
            put(f"class/{name}.{cls}", (row or {}).get(name))
    prdc = metrics.get("prdc") or {}
    for key in ("precision", "recall", "density", "coverage"):
        put(key, (prdc.get("synthetic") or {}).get(key))
        put(f"{key}_floor", (prdc.get("floor") or {}).get(key))
    put("near_copy_fraction", (metrics.get("memorisation") or {}).get("near_copy_fraction"))
    down = metrics.get("downstream") or {}
    for regime, row in (down.get("regimes") or {}).items():
        put(f"acc.{regime}", ((row or {}).get("balanced_accuracy") or {}).get("mean"))
    for regime, row in (down.get("deltas") or {}).items():
        ci = (row or {}).get("balanced_accuracy") or {}
        put(f"delta.{regime}", ci.get("mean"))
        put(f"delta.{regime}.ci_low", ci.get("ci_low"))
        put(f"delta.{regime}.ci_high", ci.get("ci_high"))
    best = (down.get("verdict") or {}).get("regime")
    for cls, ci in (((down.get("deltas") or {}).get(best) or {}).get("per_class_recall") or {}).items():
        put(f"class/recall_delta.{cls}", (ci or {}).get("mean"))
    return out
