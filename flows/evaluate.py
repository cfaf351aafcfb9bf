"""The ``evaluate`` flow: distances, memorisation and the downstream regime x seed grid as tasks.

By default the grid's cells (and the validation-split selection cells) train as stacked networks
inside the flow run (``augment.metrics.stacked``: every core, one process). They become Prefect
tasks on a Dask task runner (:func:`flows.tasks.task_runner_for`) when the config asks for one:

* ``evaluate.dask_address: tcp://scheduler:8786``: an existing Dask cluster (prefect-dask);
* ``evaluate.workers: N`` (N > 1): a local Dask cluster of N single-threaded worker processes,
  built for the flow run and torn down after it; ``auto``: one per core when the cells run on
  the CPU, 1 on CUDA.

Every cell is deterministic given (plan, regime, seed): the Dask modes give the numbers of a lone
cell; the stacked grid gives those to float rounding (a grouped convolution sums in another order).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from augment import rundir
from augment.config import Config
from augment.registry import cell_metrics, headline_metrics
from augment.tracking import Tracker
from flows.tasks import call_task, local_workers, log_artifacts_task, task_runner_for


def _cell_name(item: Any) -> str:
    if isinstance(item, tuple) and len(item) == 2:
        return f"downstream-{item[0]}-seed{item[1]}"
    if isinstance(item, dict) and "regime" in item:
        return f"select-{item.get('stage', 'cell')}-{item['regime']}-seed{item.get('seed')}"
    return "cell"


def prefect_map(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """A ``map`` whose calls are Prefect tasks on the current flow's task runner (submitted together)."""
    futures = [call_task.with_options(task_run_name=_cell_name(item)).submit(fn, item) for item in items]
    return [f.result() for f in futures]


@flow(name="evaluate", validate_parameters=False)
def evaluate_flow(
    run_dir: str, overrides: list[str] | None = None, fan_out: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Evaluate a trained run directory; writes ``RUN_DIR/eval/`` and returns the metrics.

    ``fan_out``: every downstream cell is a task on the flow's task runner (Dask); else the grid
    trains as stacked networks inside this flow run. ``progress``: bars with an ETA.
    """
    from augment.metrics.evaluate import evaluate_run

    logger = get_run_logger()
    map_fn = prefect_map if fan_out else None
    result = evaluate_run(Path(run_dir), overrides=overrides, progress=progress, map_fn=map_fn)
    logger.info("%s", result["downstream"]["verdict"]["text"])
    return result


def run_evaluate(
    run_dir: Path, cfg: Config, overrides: list[str] | None = None, progress: bool = False
) -> dict[str, Any]:
    """Run :func:`evaluate_flow` (as a subflow inside a flow) on the task runner ``cfg`` asks for: cells
    as Dask tasks with ``evaluate.workers`` > 1 or ``evaluate.dask_address``, else the stacked grid."""
    return evaluate_flow.with_options(task_runner=task_runner_for(cfg.evaluate))(
        str(run_dir), overrides, fans_out(cfg), progress
    )


def fans_out(cfg: Config) -> bool:
    """Whether the downstream cells run as tasks on Dask (else as stacked networks in the flow run)."""
    return bool(cfg.evaluate.dask_address) or local_workers(cfg.evaluate) > 1


CELL_PARAMS = (
    "regime",
    "seed",
    "steps",
    "batch_size",
    "synthetic_share",
    "confidence_threshold",
    "images_real",
    "images_synthetic",
    "real_draw",
)


def cell_times(cells: list[dict[str, Any]], end: float) -> list[tuple[float, float]]:
    """``(start, end)`` of each cell's child run, in seconds since the epoch.

    A cell records the wall-clock span it ran in (``started_at``/``ended_at``: a stacked cell shares
    its stack's, cells on Dask workers overlap as they ran). An evaluation written before cells
    recorded it has only each cell's ``seconds``: those cells are placed back to back in grid order,
    the last one ending at ``end`` (when the measurements ended), each lasting its recorded duration.
    """
    if cells and all(c.get("started_at") is not None and c.get("ended_at") is not None for c in cells):
        return [(float(c["started_at"]), float(c["ended_at"])) for c in cells]
    spans: list[tuple[float, float]] = []
    for cell in reversed(cells):
        start = end - max(float(cell.get("seconds") or 0.0), 0.0)
        spans.append((start, end))
        end = start
    return spans[::-1]


def log_cells(tracker: Tracker, parent: str, result: dict[str, Any], end: float | None = None) -> None:
    """One child run per downstream (regime, seed) cell: its settings as params, its scores as metrics
    (:func:`augment.registry.cell_metrics`), its recorded wall-clock span as the run's start and end
    (:func:`cell_times`; ``end``: when the evaluation's measurements ended, default now)."""
    down = result.get("downstream") or {}
    names = result.get("class_names") or []
    cells = down.get("cells") or []
    for cell, (start, stop) in zip(cells, cell_times(cells, time.time() if end is None else end), strict=True):
        regime, seed = cell["regime"], cell["seed"]
        name, tags = f"{regime} seed {seed}", {"regime": regime}
        with tracker.run(name, kind="downstream", parent=parent, tags=tags, start_time=start, end_time=stop) as rid:
            params = {k: cell.get(k) for k in CELL_PARAMS}
            params.update(classifier=down.get("classifier"), classic_policy=down.get("classic_policy"))
            tracker.log_params(rid, {k: v for k, v in params.items() if v is not None})
            tracker.log_metrics(rid, cell_metrics(cell, names))


def evaluate_stage(
    cfg: Config, run_dir: Path, tracker: Tracker, parent: str, progress: bool = False
) -> tuple[dict[str, Any], Path]:
    """Evaluate ``run_dir`` and log it under the pipeline run ``parent``; returns ``(metrics, report path)``."""
    started = time.time()
    result = run_evaluate(run_dir, cfg, progress=progress)
    if not cfg.evaluate.dask_address:  # what `workers: auto` turned into on this machine
        tracker.log_params(parent, {"evaluate.workers_used": local_workers(cfg.evaluate)})
    # `seconds`: the evaluation's measurements, without writing the report and plots that follow the grid.
    measured = result.get("seconds")
    log_cells(tracker, parent, result, end=started + measured if isinstance(measured, int | float) else None)
    tracker.log_metrics(parent, headline_metrics(result))
    eval_dir = Path(run_dir) / rundir.EVAL
    log_artifacts_task(tracker, parent, [(p, rundir.EVAL) for p in sorted(eval_dir.iterdir()) if p.is_file()])
    return result, eval_dir / rundir.REPORT_MD
