"""The ``generate`` flow: the class-balancing synthetic set of a trained run, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from augment.checkpoint import find_snapshot, load_snapshot
from augment.config import Config, config_from_dict
from augment.tracking import TAG_FINGERPRINT, Tracker, make_tracker
from flows.tasks import generate_task, log_artifacts_task


def generate_stage(cfg: Config, snapshot: Path, out_dir: Path, tracker: Tracker, run_id: str) -> tuple[Path, list[int]]:
    """Write the synthetic set to ``out_dir`` under MLflow run ``run_id``; returns ``(manifest, counts)``."""
    manifest, counts = generate_task(snapshot, out_dir, cfg)
    snap = load_snapshot(snapshot)
    g = cfg.generate
    tracker.log_params(run_id, {"generate.target": g.target, "generate.seed": g.seed, "snapshot": snapshot.name})
    per_class = {f"images.{n}": float(c) for n, c in zip(snap.class_names, counts, strict=True)}
    tracker.log_metrics(run_id, {"images": float(sum(counts)), **per_class})
    tracker.set_tags(run_id, {TAG_FINGERPRINT: snap.data_fingerprint})
    log_artifacts_task(tracker, run_id, [(manifest, None), (manifest.parent / "grid.png", None)])
    return manifest, counts


@flow(name="generate", validate_parameters=True)
def generate_flow(run_dir: str, out: str | None = None) -> dict[str, Any]:
    """Generate the synthetic set of a trained run directory (settings from its config)."""
    logger = get_run_logger()
    snapshot = find_snapshot(Path(run_dir))
    cfg = config_from_dict(load_snapshot(snapshot).config, source=f"{run_dir} (config in checkpoint)")
    tracker = make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment)
    out_dir = Path(out) if out else Path(run_dir) / "generated"
    with tracker.run(f"{cfg.name} generate {Path(run_dir).name}", kind="generate") as run_id:
        manifest, counts = generate_stage(cfg, snapshot, out_dir, tracker, run_id)
    logger.info("generated %d images -> %s", sum(counts), manifest)
    return {"manifest": str(manifest), "counts": counts, "mlflow_run_id": run_id}
