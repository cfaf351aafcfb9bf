"""The Prefect flows end to end under one prefect_test_harness, checked through the MLflow client
against a real SQLite store: `augment run`, nested runs, curves, artifacts, the registry and its
gate, skipping unchanged data, failures, `augment compare`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from augment.checkpoint import find_snapshot, load_snapshot
from augment.config import Config
from augment.errors import ConfigError
from augment.registry import CHALLENGER, CHAMPION
from augment.tracking import TAG_FINGERPRINT, TAG_KIND
from conftest import PIPELINE_FAST, augment_command, write_pipeline_config
from flows.cli import app

FAST = PIPELINE_FAST

pytestmark = pytest.mark.usefixtures("prefect_harness")


write_config = write_pipeline_config
augment = augment_command


def client_for(cfg: Config) -> MlflowClient:
    return MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)


def pipeline_runs(cfg: Config) -> list:
    client = client_for(cfg)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return client.search_runs(
        [exp.experiment_id], f"tags.`{TAG_KIND}` = 'pipeline'", order_by=["attributes.start_time ASC"]
    )


@pytest.fixture(scope="module")
def first(pipeline_run: dict) -> dict:
    """`augment run CONFIG` once, through the console command (the session's pipeline run)."""
    return pipeline_run


def test_augment_run_prints_the_report_and_how_to_open_the_ui(first: dict):
    out = first["output"]
    report = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("report: "))
    assert Path(report).is_file() and Path(report).name == "report.md"
    assert "verdict: " in out
    assert "generator: models:/digits-cgan/1 -> champion" in out
    ui = next(line for line in out.splitlines() if line.startswith("MLflow UI: "))
    assert "augment ui --uri 'sqlite:///" in ui and "http://127.0.0.1:5000/#/experiments/" in ui


def test_mlflow_holds_the_parent_run_its_children_and_their_numbers(first: dict):
    cfg = first["cfg"]
    client = client_for(cfg)
    [parent] = pipeline_runs(cfg)
    assert parent.info.status == "FINISHED"
    exp_id = parent.info.experiment_id
    children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    kinds = sorted(c.data.tags[TAG_KIND] for c in children)
    assert kinds == ["downstream"] * 6 + ["generate", "train"]  # 2 regimes x 3 seeds
    assert all(c.info.status == "FINISHED" for c in children)
    cells = {
        (c.data.params["regime"], c.data.params["seed"]) for c in children if c.data.tags[TAG_KIND] == "downstream"
    }
    assert cells == {(r, str(s)) for r in ("real+classic", "real+gan") for s in range(3)}
    cell = next(c for c in children if c.data.tags[TAG_KIND] == "downstream")
    assert 0.0 <= cell.data.metrics["downstream/balanced_acc"] <= 1.0 and "per_class/recall/2" in cell.data.metrics
    # Each cell's child run spans the wall-clock interval the cell recorded (a stack's cells share it),
    # inside the parent run, and at least as long as the cell's share of the work.
    downstream = [c for c in children if c.data.tags[TAG_KIND] == "downstream"]
    recorded = {
        (c["regime"], str(c["seed"])): c
        for c in json.loads((Path(parent.data.tags["run_dir"]) / "eval" / "metrics.json").read_text())["downstream"][
            "cells"
        ]
    }
    for c in downstream:
        cell = recorded[(c.data.params["regime"], c.data.params["seed"])]
        assert (c.info.start_time, c.info.end_time) == (
            round(cell["started_at"] * 1000),
            round(cell["ended_at"] * 1000),
        )
        assert c.info.start_time >= parent.info.start_time and c.info.end_time <= parent.info.end_time
        assert (c.info.end_time - c.info.start_time) / 1000 >= c.data.metrics["downstream/seconds"] - 1e-3
        assert c.info.end_time > c.info.start_time  # a real interval, not one instant

    # Params from the flattened resolved config, data fingerprint and git commit as tags, dataset input.
    assert parent.data.params["train.kimg"] == str(cfg.train.kimg)
    assert parent.data.params["evaluate.regimes"] == '["real+classic", "real+gan"]'
    metrics_json = json.loads((Path(parent.data.tags["run_dir"]) / "eval" / "metrics.json").read_text())
    assert parent.data.tags[TAG_FINGERPRINT] == metrics_json["data_fingerprint"]
    assert parent.data.tags["git_commit"]
    assert parent.inputs.dataset_inputs[0].dataset.digest == metrics_json["data_fingerprint"]
    assert json.loads(parent.data.tags["train_counts"]) == metrics_json["counts"]["train"]

    # Headline metrics equal metrics.json; the training curve is stepped by images shown.
    assert parent.data.metrics["fidelity/fd_domain"] == pytest.approx(metrics_json["fd_domain"]["fd_domain"])
    delta = metrics_json["downstream"]["deltas"]["real+gan"]["balanced_accuracy"]
    name = "downstream/delta_vs_real_classic_pts/real_gan"
    assert parent.data.metrics[name] == pytest.approx(100 * delta["mean"])  # in points, like the report
    assert parent.data.metrics[f"{name}/ci_low"] == pytest.approx(100 * delta["ci_low"])
    train = next(c for c in children if c.data.tags[TAG_KIND] == "train")
    used = (train.data.params["train.device_used"], train.data.params["train.precision_used"])
    assert used == ("cpu", "fp32")  # what `device: auto` and the config's precision became here
    assert parent.data.params["evaluate.workers_used"] == "1"
    curve = client.get_metric_history(train.info.run_id, "train/loss_D")
    assert [m.step for m in curve] == [128, 256]

    # Artifacts: config, sample grids over training, manifest, plots, metrics.json, report.md.
    def names(run_id: str, path: str | None = None) -> set[str]:
        return {Path(a.path).name for a in client.list_artifacts(run_id, path)}

    assert {"config.yaml", "stats.jsonl", "data.json"} <= names(train.info.run_id)
    assert names(train.info.run_id, "grids") == {"fakes-000000.png"}
    generate = next(c for c in children if c.data.tags[TAG_KIND] == "generate")
    assert {"manifest.csv", "grid.png"} <= names(generate.info.run_id)
    evaluation = names(parent.info.run_id, "eval")
    assert {"metrics.json", "report.md", "per_class.csv", "regimes.png"} <= evaluation


def test_the_generator_is_registered_as_champion_and_the_report_says_so(first: dict):
    cfg = first["cfg"]
    client = client_for(cfg)
    [parent] = pipeline_runs(cfg)
    version = client.get_model_version_by_alias("digits-cgan", CHAMPION)
    assert str(version.version) == "1"
    assert version.tags["pipeline_run_id"] == parent.info.run_id
    assert version.tags[TAG_FINGERPRINT] == parent.data.tags[TAG_FINGERPRINT]
    assert version.tags["gate.metric"] == "downstream_delta"
    assert parent.data.tags["model_alias"] == CHAMPION
    report = Path(parent.data.tags["report"]).read_text()
    assert "## Model registry" in report and "promoted to **champion**" in report
    assert 'mlflow.pyfunc.load_model("models:/digits-cgan/1")' in report


def test_unchanged_data_skips_retraining_unless_forced(first: dict):
    from flows.pipeline import pipeline

    cfg, path = first["cfg"], str(first["path"])
    skipped = pipeline(config=path, skip_if_unchanged=True)
    assert skipped["skipped"] is True and "skipping retraining" in skipped["reason"]
    assert "config and package version equal" in skipped["reason"]
    assert skipped["data_fingerprint"] in skipped["reason"]
    assert len(pipeline_runs(cfg)) == 1, "a skipped run trains nothing and logs no pipeline run"

    forced = pipeline(config=path, skip_if_unchanged=True, force=True)
    assert forced["skipped"] is False
    promotion = forced["promotion"]
    # Same data, same seeds: the same score, which is not measurably better than the champion's.
    assert (promotion["version"], promotion["alias"], promotion["promoted"]) == ("2", CHALLENGER, False)
    assert "not measurably better than champion v1" in promotion["reason"] and " pts" in promotion["reason"]
    report = Path(forced["report"]).read_text()
    assert "kept as **challenger** (not promoted)" in report and "not measurably better than champion v1" in report
    client = client_for(cfg)
    assert str(client.get_model_version_by_alias("digits-cgan", CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias("digits-cgan", CHALLENGER).version) == "2"


def test_augment_compare_puts_the_runs_side_by_side(first: dict, tmp_path: Path):
    out_csv = tmp_path / "runs.csv"
    result = CliRunner().invoke(
        app, ["compare", "--config", str(first["path"]), "--csv", str(out_csv)], env={"COLUMNS": "100"}
    )
    assert result.exit_code == 0, result.output
    shown = result.output.splitlines()
    assert max(len(line) for line in shown) <= 100, "the table must fit the terminal"
    assert any(line.startswith("Δ bal. acc. real+gan vs real+classic (pts)") for line in shown)
    assert any(line.startswith("verdict") for line in shown) and any(
        line.startswith("--set overrides") for line in shown
    )
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 1 and rows[-1]["alias"] == CHAMPION  # oldest last: the first run's v1
    assert rows[-1]["model"] == "digits-cgan v1" and rows[-1]["train_per_class"] == "0:36 1:36 2:36"
    # Columns named as the MLflow metrics they hold; numbers, not formatted strings.
    delta = "downstream/delta_vs_real_classic_pts/real_gan"
    for key in ("fidelity/fd_domain", "fidelity/fd_domain_floor", delta, f"{delta}/ci_low"):
        float(rows[-1][key])
    lo, mean, hi = (float(rows[-1][k]) for k in (f"{delta}/ci_low", delta, f"{delta}/ci_high"))
    assert lo <= mean <= hi
    assert rows[-1]["verdict"] in ("helped", "hurt", "no measurable benefit", "not enough seeds for an interval")
    fps = {r["fingerprint"] for r in rows}
    assert len(fps) == 1 and len(fps.pop()) == 16


def test_compare_fits_narrow_terminals_by_grouping_runs() -> None:
    import pandas as pd

    from augment.tracking import compare_display

    rows = [
        {
            "run": f"digits 0000{i}-digits",
            "run_id": f"abcdef0{i}",
            "started": "2026-12-02 18:00",
            "status": "FINISHED",
            "verdict": "no measurable benefit",
            "overrides": "train.kimg=5",
            "fingerprint": "81ebaddcc2b636a1",
            "train_per_class": "0:36 1:36 2:36",
            "fidelity/fd_domain": 2.19,
            "fidelity/fd_domain_floor": 1.81,
            "downstream/delta_vs_real_classic_pts/real_gan": -0.5,
            "downstream/delta_vs_real_classic_pts/real_gan/ci_low": -4.3,
            "downstream/delta_vs_real_classic_pts/real_gan/ci_high": 3.3,
            "downstream/delta_vs_real_pts/real_gan": 1.5,
            "model": f"digits-cgan v{i}",
            "alias": "-",
        }
        for i in range(5)
    ]
    text = compare_display(pd.DataFrame(rows), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.count("abcdef00") == 1 and "abcdef04" in text  # every run shown once
    assert "-0.5 [-4.3, +3.3]" in text and "2.19 (1.81)" in text
    # Against the report's baseline first, then against real-only training (no interval logged: none shown).
    labels = list(dict.fromkeys(line.split("  ")[0] for line in text.splitlines() if line.startswith("Δ")))
    assert labels == ["Δ bal. acc. real+gan vs real+classic (pts)", "Δ bal. acc. real+gan vs real (pts)"]
    vs_real = [line for line in text.splitlines() if line.startswith("Δ bal. acc. real+gan vs real (pts)")]
    assert vs_real and all(set(line.split("(pts)", 1)[1].split()) == {"+1.5"} for line in vs_real)


def test_a_failing_stage_marks_the_runs_failed_and_keeps_the_checkpoint(tmp_path: Path):
    from flows.pipeline import pipeline

    # fid_inception without its weights file fails in evaluation, after training succeeded.
    path, cfg = write_config(tmp_path, "evaluate.extractor=inception", "tracking.experiment=failing")
    with pytest.raises(ConfigError, match="inception"):
        pipeline(config=str(path))
    [parent] = pipeline_runs(cfg)
    assert parent.info.status == "FAILED"
    client = client_for(cfg)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    status = {c.data.tags[TAG_KIND]: c.info.status for c in children}
    assert status == {"train": "FINISHED", "generate": "FINISHED"}
    snapshot = load_snapshot(find_snapshot(Path(parent.data.tags["run_dir"])))
    assert snapshot.generator() is not None and snapshot.kimg == pytest.approx(0.256)

    # The same failure from the console command: exit code 2 and one line naming it.
    result = augment("run", str(path), "-q", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "inception" in result.stderr.strip().splitlines()[-1]


def test_train_and_generate_flows_track_their_own_runs(tmp_path: Path):
    from flows.generate import generate_flow
    from flows.train import train_flow

    path, cfg = write_config(
        tmp_path, "tracking.experiment=stages", "generate.target=per_class", "generate.per_class=3"
    )
    trained = train_flow(config=str(path))
    generated = generate_flow(run_dir=trained["run_dir"])
    client = client_for(cfg)
    t, g = client.get_run(trained["mlflow_run_id"]), client.get_run(generated["mlflow_run_id"])
    assert (t.data.tags[TAG_KIND], t.info.status) == ("train", "FINISHED")
    assert (g.data.tags[TAG_KIND], g.info.status) == ("generate", "FINISHED")
    assert trained["model_uri"].startswith("models:/")
    assert Path(generated["manifest"]).is_file() and generated["counts"] == [3, 3, 3]
    assert g.data.metrics["generate/images"] == 9.0 and g.data.metrics["per_class/images/1"] == 3.0


def test_task_runner_follows_the_evaluate_config():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from augment.config import EvaluateConfig
    from flows.evaluate import task_runner_for

    assert isinstance(task_runner_for(EvaluateConfig()), ThreadPoolTaskRunner)
    local = task_runner_for(EvaluateConfig(workers=2))
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 2
    remote = task_runner_for(EvaluateConfig(dask_address="tcp://10.0.0.1:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.1:8786"


def test_the_cells_fan_out_to_dask_only_when_the_config_asks():
    from augment.config import EvaluateConfig
    from flows.evaluate import fans_out

    def cfg(**ev) -> Config:
        return Config(evaluate=EvaluateConfig(**ev))

    assert not fans_out(cfg())  # the default: the stacked grid inside the flow run
    assert not fans_out(cfg(workers=1))
    assert fans_out(cfg(workers=2))
    assert fans_out(cfg(dask_address="tcp://10.0.0.1:8786"))


def test_evaluate_workers_auto_is_one_worker_per_usable_core_on_the_cpu():
    from prefect.task_runners import ThreadPoolTaskRunner

    """`auto` counts the cores this process may run on (its affinity mask, as taskset or a container
    CPU set restricts it), not the machine's; an explicit count is kept; a bad value is refused."""
    from pydantic import ValidationError

    from augment.config import EvaluateConfig
    from flows.tasks import local_workers, task_runner_for

    cores = os.sched_getaffinity(0)
    assert local_workers(EvaluateConfig(workers="auto", device="cpu")) == len(cores)
    assert local_workers(EvaluateConfig(workers=4, device="cpu")) == 4
    os.sched_setaffinity(0, {min(cores)})  # as under `taskset -c 0`
    try:
        assert local_workers(EvaluateConfig(workers="auto", device="cpu")) == 1
        assert isinstance(task_runner_for(EvaluateConfig(workers="auto", device="cpu")), ThreadPoolTaskRunner)
    finally:
        os.sched_setaffinity(0, cores)
    if len(cores) > 1:
        runner = task_runner_for(EvaluateConfig(workers="auto", device="cpu"))
        assert runner.cluster_kwargs["n_workers"] == len(cores) and runner.cluster_kwargs["threads_per_worker"] == 1
    for bad in (0, "many", 2.5):
        with pytest.raises(ValidationError, match="must be a whole number >= 1 or auto"):
            EvaluateConfig(workers=bad)


def test_task_runner_follows_the_generate_config():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from augment.config import GenerateConfig
    from flows.tasks import task_runner_for

    assert isinstance(task_runner_for(GenerateConfig()), ThreadPoolTaskRunner)
    local = task_runner_for(GenerateConfig(workers=3))
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["threads_per_worker"] == 1 and local.cluster_kwargs["processes"] is True
    remote = task_runner_for(GenerateConfig(dask_address="tcp://10.0.0.1:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.1:8786"


@pytest.mark.slow
def test_generate_flow_shards_on_two_dask_workers_write_the_one_pass_set(tiny_run: Path, tmp_path: Path):
    """Each shard a Prefect task on a 2-process Dask LocalCluster: the same bytes as one pass in this process."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from test_generate import files

    from augment.generate import write_samples
    from flows.generate import generate_flow

    snap = load_snapshot(find_snapshot(tiny_run))
    batch = snap.config["generate"]["batch_size"]
    reference = write_samples(snap, tmp_path / "one", [7, 7, 7], batch_size=batch, progress=False).parent
    overrides = [
        "tracking.enabled=false",
        "generate.target=per_class",
        "generate.per_class=7",
        "generate.shard_size=4",
        "generate.workers=2",
    ]
    result = generate_flow(run_dir=str(tiny_run), out=str(tmp_path / "dask"), overrides=overrides)
    assert result["counts"] == [7, 7, 7] and result["manifest"] == str(tmp_path / "dask" / "manifest.csv")
    assert files(tmp_path / "dask") == files(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dask", "one"]  # no staging folder left
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="-000004-000007")))
    assert {r.name for r in runs} >= {f"shard-{c:03d}-000004-000007" for c in range(3)}  # one task per shard


class _FlakyTracker:
    """A tracking store whose uploads fail ``failures`` times with ``error``, then succeed: the
    hiccup a real remote store has now and then (none happens on this machine's local stores)."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error


def test_io_tasks_retry_hiccups_but_not_bad_input(tmp_path: Path):
    from prefect import flow

    from augment.errors import DataError
    from flows.tasks import load_data_task, log_artifacts_task, train_task

    assert train_task.retries == 0, "compute is deterministic: a retry would fail the same way"
    assert load_data_task.retries == 2  # the same IO_RETRIES as the upload task, run below
    upload = log_artifacts_task.with_options(retry_delay_seconds=0)
    (tmp_path / "f.txt").write_text("x")

    @flow
    def upload_flow(tracker: _FlakyTracker) -> None:
        upload(tracker, "run", [(tmp_path / "f.txt", None)])

    hiccup = _FlakyTracker(2, OSError("connection reset"))
    upload_flow(hiccup)  # two failures, then the third try succeeds
    assert hiccup.calls == 3
    bad = _FlakyTracker(5, DataError("class '3' has no images"))
    with pytest.raises(DataError, match="no images"):
        upload_flow(bad)
    assert bad.calls == 1, "bad input fails the same way again: no retry"


@pytest.mark.slow
def test_two_pipelines_at_once_share_the_store_and_the_output_root(tmp_path: Path):
    """Two `augment run` started together against one SQLite store and one output root: both finish,
    in separate run directories, with their metrics (SQLite busy handling), none marked FAILED."""
    from prefect.settings import PREFECT_API_URL

    path, cfg = write_config(tmp_path, "tracking.experiment=concurrent-tests")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", str(path), "--quiet"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    run_dirs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert run_dirs == ["00000-digits", "00001-digits"]
    runs = pipeline_runs(cfg)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert "fidelity/fd_domain" in run.data.metrics
        assert any(k.startswith("downstream/delta_vs_real_classic_pts/") for k in run.data.metrics)
    assert {r.data.tags.get("mlflow.runName") for r in runs} != {None}


@pytest.mark.slow
def test_augment_run_shows_training_and_evaluation_progress_with_an_eta_in_a_terminal(tmp_path: Path):
    import fcntl
    import pty
    import re
    import struct
    import termios

    from prefect.settings import PREFECT_API_URL

    # Enough kimg and downstream steps for each bar to tick past its first frame (which has no ETA yet).
    path, _ = write_config(tmp_path, "tracking.experiment=progress", "evaluate.steps=400", "train.kimg=1")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "120"}
    env.pop("TQDM_DISABLE", None)  # the suite silences bars; a user's terminal does not
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(path)],
        cwd=tmp_path,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    text = b"".join(chunks).decode(errors="replace")
    eta = r"\[\d\d:\d\d<\d\d:\d\d"  # tqdm's [elapsed<remaining
    assert re.search(r"kimg.*" + eta, text), "no training bar with an ETA"
    assert re.search(r"downstream grid.*" + eta, text), "no evaluation bar with an ETA"
    assert not re.search(r"Task run .*Finished in state", text)  # Prefect's per-task lines stay out
    assert "verdict: " in text
    assert "anonymous usage data" not in text  # no telemetry notice


def test_fork_children_of_a_process_that_ran_a_flow_exit_cleanly():
    """After a flow ran in this process, a DataLoader's worker processes (forked) must not die at exit:
    Prefect's service exit hooks, inherited by the child, assert there (its 3.8.8 fork reset)."""
    import multiprocessing
    import threading

    import torch
    from prefect import flow, get_run_logger
    from prefect._internal.concurrency.services import _QueueServiceBase
    from torch.utils.data import DataLoader, TensorDataset

    @flow
    def logs_once() -> int:
        get_run_logger().info("a line for the API log worker")
        return 1

    assert logs_once() == 1

    def service_hooks() -> int:
        return sum(
            isinstance(getattr(getattr(h, "func", h), "__self__", None), _QueueServiceBase)
            for h in threading._threading_atexits
        )

    assert service_hooks() >= 1  # the parent keeps its hooks: its services drain at its exit
    ds = TensorDataset(torch.arange(20.0))
    got = torch.cat([x for (x,) in DataLoader(ds, batch_size=4, num_workers=2)])
    assert torch.equal(got, torch.arange(20.0))
    child = multiprocessing.get_context("fork").Process(target=service_hooks)
    child.start()
    child.join(60)
    assert child.exitcode == 0
