"""Against real servers, started and stopped here: a Prefect server serving the scheduled pipeline,
an MLflow tracking server; plus the unreachable-server error, the Dask grid, and the champion
loaded in a fresh Python process outside the repository through MLflow alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from test_flows import FAST

from augment.checkpoint import find_snapshot
from augment.config import save_config
from augment.metrics.downstream import TIMING_KEYS
from augment.registry import CHAMPION, Gate
from augment.tracking import TAG_KIND, MlflowTracker, download_snapshot
from conftest import REPO, tiny_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process group this test started (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    fh = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def bin_(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def write_config(tmp: Path, *overrides: str) -> Path:
    path = tmp / "tiny.yaml"
    save_config(tiny_config(tmp, *FAST, *overrides), path)
    return path


# Unreachable tracking server. -----------------------------------------------------------------


def test_unreachable_tracking_server_is_one_line_and_exit_2_within_15_s(tmp_path: Path):
    path = write_config(tmp_path, f"tracking.uri=http://127.0.0.1:{free_port()}")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start_t = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.time() - start_t
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: MLflow tracking server http://127.0.0.1:")
    assert "unreachable" in lines[0]
    assert elapsed < 15, f"took {elapsed:.1f} s"


# A real MLflow tracking server. ---------------------------------------------------------------


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start(
        [
            bin_("mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        tmp_path / "mlflow-server.log",
        dict(os.environ),
        tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 120, proc)
        yield url
    finally:
        stop(proc)


@pytest.mark.slow
def test_pipeline_logs_to_a_real_mlflow_server(mlflow_server: str, tmp_path: Path, prefect_harness):
    from flows.pipeline import pipeline

    work = tmp_path / "work"
    work.mkdir()
    path = write_config(
        work,
        f"tracking.uri={mlflow_server}",
        "evaluate.seeds=1",
        "tracking.promote_on=fd_domain",
        "tracking.experiment=remote",
    )
    result = pipeline(config=str(path))
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags[TAG_KIND] == "pipeline"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), "artifacts go through the server"
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "eval")} >= {"report.md", "metrics.json"}
    assert str(client.get_model_version_by_alias("digits-cgan", CHAMPION).version) == "1"
    snapshot = download_snapshot("models:/digits-cgan@champion", tracking_uri=mlflow_server, dst=tmp_path / "dl")
    assert snapshot.is_file() and snapshot.suffix == ".pt"
    assert not (work / "mlruns.db").exists() and not (work / "mlartifacts").exists()


# A real Prefect server: serve the pipeline, trigger it, see it complete, then skip unchanged data. ---


@pytest.mark.slow
def test_served_deployment_runs_on_a_real_prefect_server(tmp_path: Path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    work = tmp_path / "work"
    work.mkdir()
    path = write_config(work, "evaluate.seeds=1", "tracking.promote_on=fd_domain", "tracking.experiment=served")
    server = start(
        [bin_("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "prefect-server.log",
        env,
        tmp_path,
    )
    served = None
    try:
        wait_http(f"{api}/health", 120, server)
        served = start(
            [sys.executable, "-m", "flows.cli", "serve", str(path), "--cron", "0 3 * * *", "--name", "tiny"],
            tmp_path / "serve.log",
            env,
            work,
        )
        # The team's way: prefect.yaml deployments on a process work pool (registered, not run here).
        for cmd in (["work-pool", "create", "gan-augment", "--type", "process"], ["deploy", "--all"]):
            done = subprocess.run(
                [bin_("prefect"), "--no-prompt", *cmd], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        with urllib.request.urlopen(f"{api}/deployments/name/gan-augment-pipeline/digits-nightly") as resp:
            nightly = json.load(resp)
        assert nightly["work_pool_name"] == "gan-augment" and nightly["parameters"]["skip_if_unchanged"] is True
        assert nightly["schedules"][0]["schedule"]["cron"] == "0 3 * * *"

        deployment = f"{api}/deployments/name/gan-augment-pipeline/tiny"
        wait_http(deployment, 120, served)
        with urllib.request.urlopen(deployment) as resp:
            info = json.load(resp)
        assert info["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
        assert info["parameters"]["skip_if_unchanged"] is True

        def trigger() -> dict:
            out = subprocess.run(
                [
                    bin_("prefect"),
                    "deployment",
                    "run",
                    "gan-augment-pipeline/tiny",
                    "--watch",
                    "--watch-timeout",
                    "500",
                ],
                env=env,
                cwd=work,
                capture_output=True,
                text=True,
                timeout=560,
            )
            run_id = next(line.split()[-1] for line in out.stdout.splitlines() if "UUID" in line)
            with urllib.request.urlopen(f"{api}/flow_runs/{run_id}") as resp:
                return json.load(resp)

        first = trigger()
        assert first["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        cfg_uri = f"sqlite:///{work / 'mlruns.db'}"
        client = MlflowClient(tracking_uri=cfg_uri, registry_uri=cfg_uri)
        exp = client.get_experiment_by_name("served")
        runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'pipeline'")
        assert [r.info.status for r in runs] == ["FINISHED"]
        assert str(client.get_model_version_by_alias("digits-cgan", CHAMPION).version) == "1"

        second = trigger()  # same data as the champion: skips retraining, logs why
        assert second["state"]["type"] == "COMPLETED"
        assert len(client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'pipeline'")) == 1
        assert "skipping retraining" in (tmp_path / "serve.log").read_text()
    finally:
        if served is not None:
            stop(served)
        stop(server)


# The regime x seed grid on a 2-worker Dask LocalCluster equals the sequential grid. ------------


@pytest.mark.slow
def test_dask_grid_gives_the_sequential_numbers(tiny_run: Path, tmp_path: Path, prefect_harness):
    from augment.config import EvaluateConfig
    from augment.metrics.evaluate import evaluate_run
    from flows.evaluate import evaluate_flow, task_runner_for

    # One intra-op thread per cell everywhere: the thread count changes the order of float sums.
    overrides = [o for o in FAST if o.startswith("evaluate.")] + [
        "evaluate.regimes=['real','real+classic','real+gan']",
        "evaluate.seeds=2",
        "evaluate.threads=1",
    ]
    seq_dir, dask_dir = tmp_path / "seq", tmp_path / "dask"
    shutil.copytree(tiny_run, seq_dir)
    shutil.copytree(tiny_run, dask_dir)
    threads = torch.get_num_threads()
    try:
        sequential = evaluate_run(seq_dir, overrides=overrides, progress=False, map_fn=map)  # lone cells
    finally:
        torch.set_num_threads(threads)  # the cells set it process-wide
    runner = task_runner_for(EvaluateConfig(workers=2))
    parallel = evaluate_flow.with_options(task_runner=runner)(str(dask_dir), overrides, fan_out=True)

    def cells(result: dict) -> list[dict]:
        rows = [{k: v for k, v in c.items() if k not in TIMING_KEYS} for c in result["downstream"]["cells"]]
        return sorted(rows, key=lambda c: (c["regime"], c["seed"]))

    assert len(cells(parallel)) == 6
    assert cells(parallel) == cells(sequential)
    assert parallel["downstream"]["deltas"] == sequential["downstream"]["deltas"]


# The champion in a fresh Python process outside the repository, through MLflow alone. ----------


@pytest.mark.slow
def test_champion_loads_in_a_fresh_process_outside_the_repo(tiny_run: Path, tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = MlflowTracker(uri, "fresh")
    with tracker.run("train", kind="train") as run_id:
        model_uri = tracker.log_generator(run_id, find_snapshot(tiny_run))
    tracker.register(model_uri, "fresh-cgan", Gate("fd_domain", 1.0, False), run_id=run_id, data_fingerprint="f")
    script = textwrap.dedent("""
        import json, sys
        import mlflow
        model = mlflow.pyfunc.load_model("models:/fresh-cgan@champion")
        images = model.predict({"label": [2, 2, 2], "seed": [0, 1, 2]})
        import augment
        print(json.dumps({"shape": list(images.shape), "min": float(images.min()), "max": float(images.max()),
                          "images": images.tolist(), "augment": augment.__file__,
                          "torch_load_is_safe": "weights_only=True" in open(augment.__file__.replace(
                              "__init__.py", "checkpoint.py")).read()}))
    """)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert not outside.resolve().is_relative_to(REPO)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=outside, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["shape"] == [3, 1, 8, 8] and 0.0 <= got["min"] <= got["max"] <= 1.0
    # The generator code came with the model, not from the repository checkout.
    assert not Path(got["augment"]).resolve().is_relative_to(REPO)
    assert "/code/augment/__init__.py" in got["augment"] and got["torch_load_is_safe"]
    import mlflow

    here = mlflow.pyfunc.load_model("models:/fresh-cgan@champion").predict({"label": [2, 2, 2], "seed": [0, 1, 2]})
    np.testing.assert_allclose(np.array(got["images"], dtype=np.float32), here, atol=1e-6)


# `augment ui`: the MLflow UI on 127.0.0.1 against the pipeline's store. -------------------------


@pytest.mark.slow
def test_augment_ui_serves_the_store_on_localhost(tiny_run: Path, tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = MlflowTracker(uri, "ui-test")
    with tracker.run("pipeline", kind="pipeline"):
        pass
    port = free_port()
    ui = start(
        [sys.executable, "-m", "flows.cli", "ui", "--uri", uri, "--port", str(port)],
        tmp_path / "ui.log",
        dict(os.environ),
        tmp_path,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, ui)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-test"
        )
        with urllib.request.urlopen(req) as resp:
            assert json.load(resp)["experiment"]["name"] == "ui-test"
    finally:
        stop(ui)
    assert f"MLflow UI on http://127.0.0.1:{port}" in (tmp_path / "ui.log").read_text()
