"""``augment compare``: the recent pipeline runs of an experiment side by side, as numbers and as text."""

from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from augment.errors import TrackingError
from augment.registry import (
    BASELINE,
    DOWNSTREAM,
    FIDELITY,
    OVER_TRAININGS,
    delta_name,
    metric_name,
    regime_from_segment,
)
from augment.tracking.store import (
    TAG_FINGERPRINT,
    TAG_KIND,
    TAG_MODEL,
    TAG_OVERRIDES,
    TAG_TRAIN_COUNTS,
    TAG_VERDICT,
    TAG_VERSION,
    check_reachable,
    first_line,
)

FD = metric_name(FIDELITY, "fd_domain")
FD_FLOOR = metric_name(FIDELITY, "fd_domain_floor")
#: ``downstream/delta_vs_<baseline>_pts/<regime>`` and its ``/ci_low`` / ``/ci_high``; the same under
#: ``over_trainings/`` on the parent run of ``augment run --trainings`` (its interval is over trainings).
_DELTA = re.compile(rf"^({DOWNSTREAM}|{OVER_TRAININGS})/(delta_vs_[^/]+_pts)/([^/]+)(?:/(ci_low|ci_high))?$")
#: The run kinds the table shows: a pipeline run, and the run over several trainings.
KINDS = ("pipeline", "trainings")
#: Names that runs logged before the metrics were grouped carry: ``delta.<regime>[.ci_low|.ci_high]``
#: was a fraction against real+classic, and the distances had no group.
_OLD_DELTA = re.compile(r"^delta\.([^.]+)(?:\.(ci_low|ci_high))?$")
_OLD_NAMES = {"fd_domain": FD, "fd_domain_floor": FD_FLOOR}


def _current_names(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics under today's names: those of runs logged before the grouping are renamed
    (and their fractions turned into points), so old and new runs line up in one table."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        old = _OLD_DELTA.match(key)
        if old:
            regime, part = old.groups()
            out.setdefault(
                metric_name(DOWNSTREAM, delta_name(BASELINE), regime, *([part] if part else [])), 100 * value
            )
        elif key in _OLD_NAMES:
            out.setdefault(_OLD_NAMES[key], value)
        else:
            out[key] = value
    return out


def compare_runs(uri: str, experiment: str, limit: int = 20) -> pd.DataFrame:
    """The recent pipeline runs of ``experiment`` side by side, newest first (a pandas DataFrame); a run
    over several trainings (``augment run --trainings``) is a row too, its deltas under ``over_trainings/``.

    Numbers stay numbers (for ``--csv``): run, started, status, the verdict and the ``--set``
    overrides of the run, data fingerprint, train images per class, then columns named as the MLflow
    metrics they hold: ``fidelity/fd_domain``, ``fidelity/fd_domain_floor`` and, per baseline and
    regime, ``downstream/delta_vs_<baseline>_pts/<regime>`` (the mean paired change in balanced
    accuracy, in points) with ``/ci_low`` and ``/ci_high``; last the registered version and its alias
    now (``champion``/``challenger``; ``-`` when the alias moved on). ``interval_over`` says what the
    intervals hold (classifier seeds of one training, or trainings). :func:`compare_display` formats
    it for a terminal.
    """
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise TrackingError(f"no experiment {experiment!r} in {uri} (run `augment run CONFIG` first)")
        runs = [  # MLflow's search has no OR: one search per kind, merged newest first
            run
            for kind in KINDS
            for run in client.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.`{TAG_KIND}` = '{kind}'",
                order_by=["attributes.start_time DESC"],
                max_results=limit,
            )
        ]
        runs = sorted(runs, key=lambda r: r.info.start_time, reverse=True)[:limit]
    except MlflowException as err:
        raise TrackingError(f"tracking store {uri}: {first_line(err)}") from None
    aliases: dict[str, dict[str, str]] = {}  # model name -> {version: alias}
    for name in {r.data.tags.get(TAG_MODEL) for r in runs} - {None}:
        try:
            model = client.get_registered_model(name)
            aliases[name] = {str(v): a for a, v in (model.aliases or {}).items()}
        except MlflowException:
            aliases[name] = {}
    rows = []
    for r in runs:
        m, t = _current_names(dict(r.data.metrics)), r.data.tags
        counts = json.loads(t.get(TAG_TRAIN_COUNTS, "{}") or "{}")
        row: dict[str, Any] = {
            "run": r.info.run_name,
            "run_id": r.info.run_id[:8],
            "started": pd.Timestamp(r.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
            "status": r.info.status,
            "verdict": t.get(TAG_VERDICT, ""),
            "interval_over": _interval_over(r),
            "overrides": t.get(TAG_OVERRIDES, ""),
            "fingerprint": t.get(TAG_FINGERPRINT, ""),
            "train_per_class": " ".join(f"{k}:{v}" for k, v in counts.items()),
            FD: m.get(FD),
            FD_FLOOR: m.get(FD_FLOOR),
        }
        for key in sorted(k for k in m if (match := _DELTA.match(k)) and match.group(4) is None):
            row[key] = m[key]
            row[f"{key}/ci_low"], row[f"{key}/ci_high"] = m.get(f"{key}/ci_low"), m.get(f"{key}/ci_high")
        name, version = t.get(TAG_MODEL), t.get(TAG_VERSION)
        row["model"] = f"{name} v{version}" if name and version else "-"
        row["alias"] = aliases.get(name or "", {}).get(version or "", "-") if version else "-"
        rows.append(row)
    table = pd.DataFrame(rows)
    # Model and alias last, whatever deltas the runs have between them.
    return table[[c for c in table.columns if c not in ("model", "alias")] + ["model", "alias"]] if rows else table


def _interval_over(run: Any) -> str:
    """What a run's delta intervals are over: classifier seeds of one training, or trainings."""
    if run.data.tags.get(TAG_KIND) == "trainings":
        return f"{run.data.params.get('trainings', '?')} trainings (train.seed {run.data.tags.get('train_seeds', '?')})"
    return f"{run.data.params.get('evaluate.seeds', '?')} classifier seeds"


def _missing(value: Any) -> bool:
    return value is None or pd.isna(value)


def compare_display(table: pd.DataFrame, width: int = 100) -> str:
    """:func:`compare_runs`'s table as text that fits ``width`` columns: one column per run (named by
    its run id), one row per field, runs in groups side by side; deltas as ``mean [low, high]`` pts."""
    deltas = [c for c in table.columns if (match := _DELTA.match(c)) and match.group(4) is None]

    # One run's deltas before those over trainings; against the report's baseline first, then real-only.
    def order(column: str) -> tuple[bool, bool, str]:
        group, family = _DELTA.match(column).group(1, 2)  # type: ignore[union-attr]
        return group == OVER_TRAININGS, family != delta_name(BASELINE), column

    deltas.sort(key=order)

    def label(column: str) -> str:
        group, family, regime, _ = _DELTA.match(column).groups()  # type: ignore[union-attr]
        baseline = regime_from_segment(family[len("delta_vs_") : -len("_pts")])
        over = ", over trainings" if group == OVER_TRAININGS else ""
        return f"Δ bal. acc. {regime_from_segment(regime)} vs {baseline} (pts{over})"

    def pts(row: pd.Series, column: str) -> str:
        mean, lo, hi = row.get(column), row.get(f"{column}/ci_low"), row.get(f"{column}/ci_high")
        if _missing(mean):
            return "-"
        return f"{mean:+.1f}" + ("" if _missing(lo) or _missing(hi) else f" [{lo:+.1f}, {hi:+.1f}]")

    fields: dict[str, list[str]] = {}
    for _, row in table.iterrows():
        fd, floor = row.get(FD), row.get(FD_FLOOR)
        values = {
            "run": str(row["run"]),
            "started": str(row["started"]),
            "status": str(row["status"]),
            "verdict": str(row.get("verdict") or "-"),
            "intervals over": str(row.get("interval_over") or "-"),
            "--set overrides": str(row.get("overrides") or "-"),
            "data fingerprint": str(row["fingerprint"]),
            "train images per class": str(row["train_per_class"]),
            "fd_domain (floor)": "-" if _missing(fd) else f"{fd:.3g}" + ("" if _missing(floor) else f" ({floor:.3g})"),
            **{label(c): pts(row, c) for c in deltas},
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
        for j, name in enumerate(["run id", *names]):
            cells = [cols[i][j][: col_w[i]].ljust(col_w[i]) for i in range(start, end)]
            out.append((name.ljust(label_w) + "  " + "  ".join(cells)).rstrip())
        out.append("")
        start = end
    return "\n".join(out).rstrip() + "\n"
