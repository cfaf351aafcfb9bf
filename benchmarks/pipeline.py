"""Wall time of each phase of the whole pipeline: load data, train, generate, evaluate (+ tracking).

Two modes:

* ``--via run`` runs the real ``augment run CONFIG --set ...`` (Prefect flow, MLflow) in a
  subprocess, on a fresh SQLite tracking store and a fresh ``PREFECT_HOME`` in a work folder (as
  ``make demo`` on a fresh clone), then reads where each second went from the two stores: the
  Prefect task and flow runs (``load-data``, ``train-gan``, ``generate``, the ``evaluate`` subflow,
  ``log-artifacts``) and the MLflow parent run, each start/end recorded by the process itself. Every
  interval between those marks is one row, so the rows add up to the subprocess's wall time; what
  lies between the compute phases is tracking (MLflow runs, params, artifacts, the generator logged
  as a model), the registry (registration, promotion gate, report) and Prefect's bookkeeping.
* ``--via library`` calls ``augment.data.load_data``, ``augment.train.train``,
  ``augment.generate.write_samples`` (as ``flows/generate.py`` does) and
  ``augment.metrics.evaluate.evaluate_run`` directly and times each. Needs neither Prefect nor MLflow (for a
  GPU box with only the library's dependencies).

Sub-rows come from the run directory in both modes: the training loop's own elapsed time
(``stats.jsonl``), the in-training ``fd_domain`` checks (``metrics-train.jsonl``, when
``train.eval_kimg`` > 0) and the downstream grid (sum of the cells' seconds in ``eval/metrics.json``).
``--set`` overrides pass through to every config. Run it alone on the machine:

    flock /tmp/bench.lock .venv/bin/python benchmarks/pipeline.py --via run --config configs/digits.yaml
    flock /tmp/bench.lock .venv/bin/python benchmarks/pipeline.py --via run --config configs/fashion_mnist.yaml \
        --set train.kimg=12 --set train.eval_kimg=4 --set evaluate.steps=300
    python benchmarks/pipeline.py --via library --config configs/fashion_mnist.yaml --set train.kimg=200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment.config import load_config  # noqa: E402
from benchmarks.common import append_results  # noqa: E402

FLOW_NAME = "gan-augment-pipeline"  # flows/pipeline.py (not imported: library mode runs without Prefect)


# ---------------------------------------------------------------------------------------------- #
# Facts read from a finished run directory (both modes).


def run_dir_facts(run_dir: Path) -> dict:
    facts: dict = {}
    stats = run_dir / "stats.jsonl"
    if stats.is_file():
        ticks = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
        if ticks:
            facts["loop_s"] = ticks[-1]["elapsed_s"]
            facts["kimg"] = ticks[-1]["kimg"]
            rates = sorted(t["images_per_s"] for t in ticks)
            facts["images_per_s"] = rates[len(rates) // 2]
    evals = run_dir / "metrics-train.jsonl"
    if evals.is_file():
        lines = [json.loads(line) for line in evals.read_text().splitlines() if line.strip()]
        facts["fd_checks"] = len(lines)
        if lines and "train_s" in lines[-1]:
            facts["fd_checks_s"] = lines[-1]["elapsed_s"] - lines[-1]["train_s"]
    metrics = run_dir / "eval" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        cells = (m.get("downstream") or {}).get("cells") or []
        facts["cells"] = len(cells)
        facts["cells_s"] = sum(c.get("seconds", 0.0) for c in cells)
        facts["sizes"] = m.get("sizes")
        facts["verdict"] = m.get("verdict")
    manifest = run_dir / "generated" / "manifest.csv"
    if manifest.is_file():
        facts["generated"] = max(len(manifest.read_text().splitlines()) - 1, 0)
    return facts


def sub_rows(phase: str, facts: dict) -> list[tuple[str, float, str]]:
    rows = []
    if phase == "train" and "loop_s" in facts:
        rows.append(
            (
                "↳ of which the training loop (`stats.jsonl`)",
                facts["loop_s"],
                f"{facts['kimg']:g} kimg, median {facts['images_per_s']:.0f} images/s per tick",
            )
        )
        if "fd_checks_s" in facts:
            rows.append(
                ("↳ of which fd_domain checks in the loop", facts["fd_checks_s"], f"{facts['fd_checks']} checks")
            )
    if phase == "evaluate" and facts.get("cells"):
        rows.append(("↳ of which the downstream grid (sum of cells)", facts["cells_s"], f"{facts['cells']} cells"))
    return rows


# ---------------------------------------------------------------------------------------------- #
# --via library


def via_library(config: str, sets: list[str], work: Path) -> tuple[list[tuple[str, float, str]], Path, str]:
    import torch

    from augment.checkpoint import load_snapshot
    from augment.data import load_data
    from augment.generate import counts_to_generate, write_samples
    from augment.metrics.evaluate import best_snapshot_metric
    from augment.train import train

    cfg = load_config(config, sets)
    run_dir = work / f"00000-{cfg.name}"
    rows: list[tuple[str, float, str]] = []
    start = time.perf_counter()
    data = load_data(cfg.data, cfg.seed)
    rows.append(("load data", time.perf_counter() - start, "`load_data`"))

    start = time.perf_counter()
    run_dir, snap_path = train(cfg, out=run_dir, progress=False, data=data, metric_factory=best_snapshot_metric)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    rows.append(("train", time.perf_counter() - start, f"`train` -> {snap_path.name}"))

    start = time.perf_counter()
    snap = load_snapshot(snap_path)
    g = cfg.generate
    counts = counts_to_generate(snap.class_counts, g.target, g.per_class, g.total)
    # As the generate flow calls it (device: write_samples' default, the CPU; shards, where the
    # config has them, run one after another in this process, as on the flow's default task runner).
    shards = {"shard_size": g.shard_size} if hasattr(g, "shard_size") else {}
    write_samples(snap, run_dir / "generated", counts, seed=g.seed, batch_size=g.batch_size, progress=False, **shards)
    rows.append(("generate", time.perf_counter() - start, f"`write_samples`, {sum(counts)} images"))

    start = time.perf_counter()
    try:
        from augment.metrics.evaluate import evaluate_run

        evaluate_run(run_dir, progress=False)
        rows.append(("evaluate", time.perf_counter() - start, "`evaluate_run`"))
    except ModuleNotFoundError as err:  # a minimal box may lack scipy/matplotlib/scikit-learn
        rows.append(("evaluate", float("nan"), f"not run: {type(err).__name__}: {err}"))
    return rows, run_dir, cfg.name


# ---------------------------------------------------------------------------------------------- #
# --via run


def dump_timeline(tracking_uri: str, experiment: str) -> None:
    """Print the Prefect flow/task runs and MLflow runs of a finished pipeline run as JSON.

    Runs in a subprocess with the pipeline's PREFECT_HOME, so this process never imports Prefect.
    """
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client

    out: dict = {"flow_runs": [], "task_runs": [], "mlflow_runs": [], "model_versions": []}

    def ts(dt):
        return dt.timestamp() if dt is not None else None

    with get_client(sync_client=True) as client:
        names = {f.id: f.name for f in client.read_flows(limit=200)}
        for fr in client.read_flow_runs(limit=200):
            out["flow_runs"].append(
                {
                    "id": str(fr.id),
                    "flow": names.get(fr.flow_id),
                    "start": ts(fr.start_time),
                    "end": ts(fr.end_time),
                    "state": fr.state_type.value if fr.state_type else None,
                }
            )
        offset = 0
        while True:
            page = client.read_task_runs(limit=200, offset=offset)
            for tr in page:
                out["task_runs"].append(
                    {
                        "name": tr.name,
                        "flow_run_id": str(tr.flow_run_id),
                        "start": ts(tr.start_time),
                        "end": ts(tr.end_time),
                    }
                )
            if len(page) < 200:
                break
            offset += 200
    mc = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp = mc.get_experiment_by_name(experiment)
    if exp is not None:
        for r in mc.search_runs([exp.experiment_id], max_results=5000):
            out["mlflow_runs"].append(
                {
                    "name": r.info.run_name,
                    "kind": r.data.tags.get("gan_augment.kind"),
                    "parent": r.data.tags.get("mlflow.parentRunId"),
                    "id": r.info.run_id,
                    "start": r.info.start_time / 1000,
                    "end": r.info.end_time / 1000 if r.info.end_time else None,
                }
            )
    for mv in mc.search_model_versions():
        out["model_versions"].append({"name": mv.name, "version": mv.version, "created": mv.creation_timestamp / 1000})
    print("TIMELINE " + json.dumps(out))


def task_base(name: str) -> str:
    """``load-data-7f2`` -> ``load-data`` (Prefect appends a random suffix to unnamed task runs)."""
    return name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isalnum() and "-" in name else name


def via_run(config: str, sets: list[str], work: Path, prefect_home: Path | None) -> tuple[list, Path, str, list[str]]:
    cfg = load_config(config, sets)
    if not cfg.tracking.enabled:
        raise SystemExit("error: --via run reads phase times from MLflow: tracking.enabled must be true")
    uri = f"sqlite:///{work / 'mlruns.db'}"
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(prefect_home or work / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_TRACKING_URI=uri,  # wins over tracking.uri (augment.tracking.resolve_uri)
        NO_ALBUMENTATIONS_UPDATE="1",
    )
    cmd = [sys.executable, "-m", "flows.cli", "run", str(config)]
    for s in [*sets, f"output.root={work / 'runs'}"]:
        cmd += ["--set", s]
    log_path = work / "augment-run.log"
    with open(log_path, "w") as log:
        t0 = time.time()
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        t_end = time.time()
    if rc != 0:
        print(log_path.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"error: `augment run` exited with {rc} (log: {log_path})")

    dump = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--dump-timeline", uri, cfg.tracking.experiment],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((ln for ln in dump.stdout.splitlines() if ln.startswith("TIMELINE ")), None)
    if dump.returncode != 0 or line is None:
        raise SystemExit(f"error: could not read the run's timeline:\n{dump.stderr[-3000:]}")
    tl = json.loads(line[len("TIMELINE ") :])

    # Only this run's records (a reused --prefect-home holds earlier runs too).
    flows = [fr for fr in tl["flow_runs"] if fr["start"] is not None and fr["start"] >= t0]
    tasks = [t for t in tl["task_runs"] if t["start"] is not None and t["start"] >= t0]
    flow = next(fr for fr in flows if fr["flow"] == FLOW_NAME)
    evaluate = next(fr for fr in flows if fr["flow"] == "evaluate")

    def task(base: str, after: float = 0.0) -> dict:
        found = sorted(
            (t for t in tasks if task_base(t["name"]) == base and t["start"] >= after), key=lambda t: t["start"]
        )
        if not found:
            raise SystemExit(f"error: no Prefect task run {base!r} after {after} in the timeline")
        return found[0]

    load, train_t = task("load-data"), task("train-gan")
    # generate: the ``generate-shards`` subflow where the flow shards generation, else the ``generate`` task.
    gen_t = next((fr for fr in flows if fr["flow"] == "generate-shards"), None) or task("generate")
    parent = next(r for r in tl["mlflow_runs"] if r["kind"] == "pipeline" and r["start"] >= t0)
    children = [r for r in tl["mlflow_runs"] if r["parent"] == parent["id"]]
    n_cells = sum(1 for r in children if r["kind"] == "downstream")
    eval_logged = task("log-artifacts", after=evaluate["end"])
    marks = [
        ("start-up: Python, imports, config, Prefect's temporary server", t0),
        ("set-up: MLflow store and experiment", flow["start"]),
        ("load data", load["start"]),
        ("tracking: run dir, parent and train runs, params, dataset", load["end"]),
        ("train", train_t["start"]),
        ("tracking: train artifacts, generator logged as an MLflow model", train_t["end"]),
        ("generate", gen_t["start"]),
        ("tracking: generate run's params, metrics, artifacts", gen_t["end"]),
        ("evaluate", evaluate["start"]),
        (f"tracking: {n_cells} downstream child runs, metrics, eval artifacts", evaluate["end"]),
        ("registry: register, promotion gate, report, tags", eval_logged["end"]),
        ("shut-down: flow run end, process exit", parent["end"]),
    ]
    times = [t for _, t in marks] + [t_end]
    notes = []
    if any(b < a for a, b in zip(times, times[1:], strict=False)):
        notes.append(
            "warning: the marks are out of order; rows may overlap: " + ", ".join(f"{t - t0:.2f}" for t in times)
        )
    rows = [(name, times[i + 1] - times[i], "") for i, (name, _) in enumerate(marks)]
    if tl["model_versions"]:
        mv = max(tl["model_versions"], key=lambda v: v["created"])
        notes.append(f"registered {mv['name']} v{mv['version']}")
    runs = sorted((work / "runs").glob(f"*-{cfg.name}"))
    return rows, runs[-1], cfg.name, notes


# ---------------------------------------------------------------------------------------------- #


SUMMARY = {
    "load data": "load data",
    "train": "train",
    "generate": "generate",
    "evaluate": "evaluate",
}


def render(args, config: str, cfg_name: str, rows, run_dir: Path, notes: list[str]) -> str:
    import torch

    cfg = load_config(config, args.set)
    facts = run_dir_facts(run_dir)
    total = sum(s for _, s, _ in rows if s == s)  # NaN-safe
    dev = "cuda" if torch.cuda.is_available() and cfg.train.device in ("auto", "cuda") else "cpu"
    t, e = cfg.train, cfg.evaluate
    cuda_cfg = getattr(t, "cuda", None)  # train.cuda: the settings that replace the CPU ones on a GPU
    if dev == "cuda" and cuda_cfg is not None:
        mode = f" {cuda_cfg.compile_mode}" if cuda_cfg.compile_mode != "default" else ""
        batch = f"batch {cuda_cfg.batch_size} ({cuda_cfg.precision}, compile {cuda_cfg.compile}{mode})"
    else:
        batch = f"batch {t.batch_size} ({t.precision})"
    sizes = facts.get("sizes") or {}
    header = [
        f"`{config}`{''.join(' --set ' + s for s in args.set)} via `{args.via}` on {dev}: "
        f"train/val/test {sizes.get('train', '?')}/{sizes.get('val', '?')}/{sizes.get('test', '?')} images, "
        f"{cfg.data.image_size}px; train.kimg {t.kimg:g}, {batch}, eval_kimg {t.eval_kimg:g}; "
        f"{facts.get('generated', '?')} generated images; evaluate.steps {e.steps} x batch {e.batch_size}, "
        f"{e.seeds} seeds, {len(e.regimes)} regimes; 1-minute load average at start / end: "
        f"{args._load[0]:.1f} / {os.getloadavg()[0]:.1f} ({len(os.sched_getaffinity(0))} cores).",
    ]
    if args.via == "run":
        header.append(
            "Fresh SQLite tracking store and fresh PREFECT_HOME (as `make demo` on a fresh clone)"
            if args.prefect_home is None
            else f"Fresh SQLite tracking store, PREFECT_HOME `{args.prefect_home}`"
        )
    lines = [" ".join(header), "", "| phase | seconds | share | note |", "|---|---:|---:|---|"]
    for name, secs, note in rows:
        share = f"{secs / total:.0%}" if secs == secs else ""
        lines.append(f"| {name} | {secs:.1f} | {share} | {note} |")
        base = name if name in SUMMARY else None
        for sub, s, n in sub_rows(base or "", facts):
            lines.append(f"| {sub} | {s:.1f} | {s / total:.0%} | {n} |")
    lines.append(
        f"| **total** | **{total:.1f}** | 100% | {'wall time of `augment run`' if args.via == 'run' else ''} |"
    )
    if args.via == "run":
        compute = {n: s for n, s, _ in rows if n in SUMMARY}
        overhead = sum(s for n, s, _ in rows if n.startswith(("set-up", "tracking", "registry")))
        edges = sum(s for n, s, _ in rows if n.startswith(("start-up", "shut-down")))
        lines += [
            "",
            "Summary: "
            + ", ".join(f"{n} {s:.1f} s" for n, s in compute.items())
            + f"; tracking, registry and Prefect bookkeeping {overhead:.1f} s ({overhead / total:.0%}); "
            f"start-up and shut-down {edges:.1f} s; total {total:.1f} s.",
        ]
    if facts.get("verdict"):
        lines += ["", f"Verdict of the run: {facts['verdict']}"]
    lines += [f"Note: {n}" for n in notes]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--via", choices=["run", "library"], default="run")
    ap.add_argument("--config", action="append", default=None, help="repeatable; default configs/digits.yaml")
    ap.add_argument("--set", action="append", default=[], help="config overrides, passed to every config")
    ap.add_argument("--workdir", type=Path, default=None, help="keep run dirs, stores and logs here")
    ap.add_argument("--prefect-home", type=Path, default=None, help="reuse this PREFECT_HOME (default: a fresh one)")
    ap.add_argument("--no-results", action="store_true", help="print only, do not append to RESULTS.md")
    ap.add_argument("--dump-timeline", nargs=2, metavar=("URI", "EXPERIMENT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump_timeline:
        dump_timeline(*args.dump_timeline)
        return
    for config in args.config or ["configs/digits.yaml"]:
        args._load = os.getloadavg()
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.workdir))
        try:
            if args.via == "library":
                rows, run_dir, name = via_library(config, args.set, work)
                notes: list[str] = []
            else:
                rows, run_dir, name, notes = via_run(config, args.set, work, args.prefect_home)
            table = render(args, config, name, rows, run_dir, notes)
        finally:
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)
        print(table)
        if not args.no_results:
            append_results(f"pipeline: {name}, via {args.via}", table)


if __name__ == "__main__":
    main()
