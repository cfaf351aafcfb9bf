"""`augment run CONFIG --trainings 3` end to end: three real tiny pipelines (train.seed s, s+1, s+2)
nested under one MLflow run of kind `trainings`, the verdict over trainings on disk and in MLflow,
only the first generator registered; and its bad input, one line and exit 2."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from augment.tracking import TAG_KIND, TAG_MODEL, TAG_NOTE, TAG_VERDICT
from conftest import augment_command, write_pipeline_config

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


@pytest.fixture(scope="module")
def over(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> dict:
    tmp = tmp_path_factory.mktemp("trainings")
    regimes = "evaluate.regimes=['real','real+classic','real+gan']"  # real: the deltas against real-only too
    path, cfg = write_pipeline_config(tmp, "seed=4", regimes, "tracking.experiment=trainings-tests")
    result = augment_command("run", str(path), "--trainings", "3", "--quiet", cwd=tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    [parent] = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'trainings'")
    pipelines = client.search_runs(
        [exp.experiment_id], f"tags.`{TAG_KIND}` = 'pipeline'", order_by=["attributes.start_time ASC"]
    )
    return {"tmp": tmp, "cfg": cfg, "out": result.stdout, "client": client, "parent": parent, "pipelines": pipelines}


def _evaluations(over: dict) -> list[dict]:
    return [json.loads((Path(p.data.tags["run_dir"]) / "eval" / "metrics.json").read_text()) for p in over["pipelines"]]


def test_three_trainings_with_the_next_seeds_nest_under_one_finished_run(over: dict) -> None:
    parent, pipelines = over["parent"], over["pipelines"]
    assert parent.info.status == "FINISHED" and parent.data.params["trainings"] == "3"
    assert len(pipelines) == 3 and all(p.info.status == "FINISHED" for p in pipelines)
    assert all(p.data.tags["mlflow.parentRunId"] == parent.info.run_id for p in pipelines)
    # The config's own seed (the top-level seed=4, no train.seed) and the next two.
    assert [p.data.params["train.seed"] for p in pipelines] == ["4", "5", "6"]
    assert [p.data.tags["overrides"].split()[-1] for p in pipelines] == [f"train.seed={s}" for s in (4, 5, 6)]
    docs = _evaluations(over)
    assert len({d["data_fingerprint"] for d in docs}) == 1, "one dataset: only the training differs"
    assert len({d["fd_domain"]["fd_domain"] for d in docs}) == 3, "three trainings, three generators"


def test_only_the_first_training_is_registered(over: dict) -> None:
    pipelines, client = over["pipelines"], over["client"]
    assert pipelines[0].data.tags[TAG_MODEL] == "digits-cgan"
    assert all(TAG_MODEL not in p.data.tags for p in pipelines[1:])
    versions = client.search_model_versions("name = 'digits-cgan'")
    assert [str(v.version) for v in versions] == ["1"]
    logged_by = client.get_run(versions[0].run_id)  # the first training's train run logged the model
    assert logged_by.data.tags["mlflow.parentRunId"] == pipelines[0].info.run_id
    second = (Path(pipelines[1].data.tags["run_dir"]) / "eval" / "report.md").read_text()
    assert "not registered: a repeat training of `augment run --trainings`" in second


def test_the_parent_holds_the_deltas_over_trainings_in_points(over: dict) -> None:
    parent, docs = over["parent"], _evaluations(over)
    per = [100 * d["downstream"]["deltas"]["real+gan"]["balanced_accuracy"]["mean"] for d in docs]
    mean = statistics.fmean(per)
    spread = json.loads((Path(parent.data.tags["run_dir"]) / "spread.json").read_text())
    ci = spread["regimes"]["real+gan"]["over_trainings"]
    name = "over_trainings/delta_vs_real_classic_pts/real_gan"
    m = parent.data.metrics
    assert m["over_trainings/trainings"] == 3
    assert m[name] == pytest.approx(mean)
    assert (m[f"{name}/ci_low"], m[f"{name}/ci_high"]) == (
        pytest.approx(100 * ci["ci_low"]),
        pytest.approx(100 * ci["ci_high"]),
    )
    # The interval counts trainings and classifier seeds; on these tiny runs the seeds' shared noise dominates,
    # so it is wider than the t-interval of the three per-training means alone.
    half = stats.t.ppf(0.975, 2) * statistics.stdev(per) / 3**0.5
    assert m[f"{name}/ci_high"] - m[f"{name}/ci_low"] >= 2 * half - 1e-9
    assert m[f"{name}/sd"] == pytest.approx(statistics.stdev(per))
    vs_real = [100 * d["downstream"]["deltas_vs_real"]["real+gan"]["balanced_accuracy"]["mean"] for d in docs]
    assert m["over_trainings/delta_vs_real_pts/real_gan"] == pytest.approx(statistics.fmean(vs_real))


def test_the_verdict_over_trainings_is_on_disk_printed_and_tagged(over: dict) -> None:
    parent, out = over["parent"], over["out"]
    folder = Path(parent.data.tags["run_dir"])
    assert folder.parent == over["cfg"].output.root.resolve() and folder.name.endswith("-digits-trainings")
    spread = json.loads((folder / "spread.json").read_text())
    assert spread["train_seeds"] == [4, 5, 6]
    assert spread["verdict"]["text"].startswith("Over 3 trainings of the generator")
    assert parent.data.tags[TAG_VERDICT] == spread["verdict"]["status"]
    assert parent.data.tags[TAG_NOTE] == spread["verdict"]["text"]
    report = (folder / "report.md").read_text()
    assert spread["verdict"]["text"] in report and "| real+gan |" in report
    for p in over["pipelines"]:
        assert Path(p.data.tags["run_dir"]).name in report
    assert (folder / "spread.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"verdict: {spread['verdict']['text']}" in out
    printed = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("report: "))
    assert Path(printed).resolve() == folder / "report.md"
    assert [line.split(": ")[-1] for line in out.splitlines() if line.startswith("training ")] == [
        json.loads((Path(p.data.tags["run_dir"]) / "eval" / "metrics.json").read_text())["downstream"]["verdict"][
            "status"
        ]
        for p in over["pipelines"]
    ]
    assert "| real+gan |" in out
    artifacts = {Path(a.path).name for a in over["client"].list_artifacts(parent.info.run_id)}
    assert {"report.md", "spread.json", "spread.png"} <= artifacts


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--trainings", "3", "--skip-if-unchanged"], "--skip-if-unchanged does not apply to --trainings"),
        (["--trainings", "2", "--set", "evaluate.regimes=['real+gan']"], "evaluate.regimes needs 'real+classic'"),
    ],
)
def test_bad_trainings_requests_fail_in_one_line_before_training(tmp_path: Path, args: list[str], needle: str) -> None:
    path, cfg = write_pipeline_config(tmp_path)
    result = augment_command("run", str(path), *args, "--quiet", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not cfg.output.root.exists() or not any(cfg.output.root.iterdir()), "nothing trained"


def test_augment_compare_shows_the_run_over_trainings_beside_its_trainings(over: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    out_csv = tmp_path / "runs.csv"
    cfg, parent = over["cfg"], over["parent"]
    args = ["compare", "--uri", cfg.tracking.uri, "--experiment", cfg.tracking.experiment, "--csv", str(out_csv)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Newest first: the run over trainings ends last but started first, so it is the oldest row.
    assert [r["run_id"] for r in rows][-1] == parent.info.run_id[:8] and len(rows) == 4
    top = rows[-1]
    name = "over_trainings/delta_vs_real_classic_pts/real_gan"
    assert float(top[name]) == pytest.approx(parent.data.metrics[name])
    assert float(top[f"{name}/ci_low"]) == pytest.approx(parent.data.metrics[f"{name}/ci_low"])
    assert (
        top["interval_over"] == "3 trainings (train.seed [4, 5, 6])" and top["verdict"] == parent.data.tags[TAG_VERDICT]
    )
    assert top["fingerprint"] == over["pipelines"][0].data.tags["data_fingerprint"]
    assert top["downstream/delta_vs_real_classic_pts/real_gan"] == ""  # no one-training number on it
    assert [r["interval_over"] for r in rows[:-1]] == ["3 classifier seeds"] * 3
    assert "Δ bal. acc. real+gan vs real+classic (pts, over trainings)" in result.output


def test_a_failing_training_marks_the_run_over_trainings_failed_and_writes_no_verdict(tmp_path: Path) -> None:
    from augment.errors import ConfigError
    from flows.trainings import trainings_flow

    # fid_inception without its weights file fails in the first training's evaluation, after its training.
    path, cfg = write_pipeline_config(tmp_path, "evaluate.extractor=inception", "tracking.experiment=failing-trainings")
    with pytest.raises(ConfigError, match="inception"):
        trainings_flow(config=str(path), trainings=3)
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    [parent] = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'trainings'")
    [first] = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'pipeline'")
    assert (parent.info.status, first.info.status) == ("FAILED", "FAILED"), "no run left marked finished"
    assert TAG_VERDICT not in parent.data.tags and not parent.data.metrics
    assert sorted(p.name for p in cfg.output.root.iterdir()) == ["00000-digits"]  # its checkpoint, no verdict folder


def test_a_verdict_folder_that_cannot_be_written_is_removed_and_the_run_marked_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import augment.metrics.spread
    from flows.trainings import trainings_flow

    def full_disk(out: dict) -> None:  # the plot is the last file written: the disk fills up before it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(augment.metrics.spread, "spread_figure", full_disk)
    path, cfg = write_pipeline_config(tmp_path, "tracking.experiment=full-disk")
    with pytest.raises(OSError, match="No space left"):
        trainings_flow(config=str(path), trainings=2)
    assert sorted(p.name for p in cfg.output.root.iterdir()) == ["00000-digits", "00001-digits"]  # no half folder
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    [parent] = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'trainings'")
    assert parent.info.status == "FAILED"
