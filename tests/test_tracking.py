"""augment.tracking against a real SQLite MLflow store: runs, statuses, params, curves, datasets,
the pyfunc generator, the registry's promotion gate and download_snapshot."""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from augment.checkpoint import find_snapshot, load_snapshot
from augment.data import load_data
from augment.errors import TrackingError
from augment.generate import sample
from augment.registry import (
    CHALLENGER,
    CHAMPION,
    Gate,
    cell_metrics,
    decide_promotion,
    gate_from_metrics,
    headline_metrics,
    metric_key,
    metric_segment,
)
from augment.tracking import (
    TAG_COMMIT,
    TAG_FINGERPRINT,
    TAG_KIND,
    MlflowTracker,
    NullTracker,
    Tracker,
    check_reachable,
    download_snapshot,
    make_tracker,
    resolve_uri,
)
from conftest import tiny_config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store per module (a fresh one costs ~6 s of migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}"


@pytest.fixture(scope="module")
def tracker(store: str) -> MlflowTracker:
    return MlflowTracker(store, "tracking-tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The gate (pure policy). -----------------------------------------------------------------------


def test_decide_promotion_directions_and_reasons():
    lower = Gate("fd_domain", 1.0, higher_is_better=False)
    assert decide_promotion(lower, None) == (True, "fd_domain 1 with a valid verdict, no comparable champion")
    ok, why = decide_promotion(lower, Gate("fd_domain", 2.0, False), "3")
    assert ok and "beats champion v3" in why and "lower is better" in why
    ok, why = decide_promotion(Gate("fd_domain", 2.0, False), Gate("fd_domain", 1.0, False), "3")
    assert not ok and "does not beat champion v3 (1)" in why
    ok, why = decide_promotion(Gate("downstream_delta", 0.01, True), Gate("downstream_delta", 0.01, True), "1")
    assert not ok, "a tie keeps the champion"
    assert decide_promotion(Gate("downstream_delta", 0.02, True), Gate("downstream_delta", 0.01, True), "1")[0]
    ok, why = decide_promotion(Gate("downstream_delta", None, True), None)
    assert not ok and "no downstream_delta" in why
    # With an interval the new version must be measurably better: its whole interval above the champion.
    ok, why = decide_promotion(
        Gate("downstream_delta", 0.02, True, (-0.01, 0.05), seeds=3), Gate("downstream_delta", 0.0, True), "1"
    )
    assert not ok and why == (
        "downstream_delta +2.0 pts (95% CI [-1.0 pts, +5.0 pts], 3 seeds) is not measurably better than champion v1 "
        "(+0.0 pts): the interval reaches the champion's value (higher is better)"
    )
    ok, why = decide_promotion(
        Gate("downstream_delta", 0.04, True, (0.01, 0.07), seeds=5), Gate("downstream_delta", 0.0, True), "1"
    )
    assert ok and "+4.0 pts" in why and "measurably better than champion v1 (+0.0 pts)" in why
    # No valid verdict (too few seeds): never champion, not even the first version.
    few = Gate("downstream_delta", 0.3, True, (0.2, 0.4), seeds=2, valid=False)
    ok, why = decide_promotion(few, None)
    assert not ok and "is no verdict (2 seeds, needs 3" in why and "+30.0 pts" in why
    assert not decide_promotion(few, Gate("downstream_delta", -0.5, True), "1")[0]
    ok, why = decide_promotion(Gate("downstream_delta", 0.5, True), Gate("fd_domain", 1.0, False), "2")
    assert not ok and "not comparable" in why


def test_gate_and_headline_metrics_read_the_evaluation_layout():
    ci = {"mean": 0.03, "ci_low": -0.01, "ci_high": 0.07, "n": 3}
    metrics = {
        "fd_domain": {
            "fd_domain": 4.5,
            "fd_domain_floor": 1.5,
            "kid_domain": 0.2,
            "kid_domain_floor": 0.01,
            "per_class": {"0": {"fd_domain": 9.0}, "a b": {"fd_domain": 3.0}},
        },
        "prdc": {"synthetic": {"precision": 0.7, "recall": 0.5}, "floor": {"precision": 0.95}},
        "memorisation": {"near_copy_fraction": 0.0},
        "downstream": {
            "baseline": "real+classic",
            "regimes": {"real+classic": {"balanced_accuracy": {"mean": 0.8}}},
            "deltas_vs_real": {"real+gan": {"balanced_accuracy": {"mean": 0.02, "ci_low": 0.01, "ci_high": 0.03}}},
            "deltas": {
                "real+gan": {"balanced_accuracy": ci, "per_class_recall": {"0": {"mean": 0.1}}},
                "real+gan+classic": {"balanced_accuracy": {**ci, "mean": 0.05}},
                "gan-only": {"balanced_accuracy": {**ci, "mean": 0.9}},
            },
            "verdict": {"regime": "real+gan"},
        },
    }
    assert gate_from_metrics(metrics, "fd_domain") == Gate("fd_domain", 4.5, False)
    # The best GAN regime counts; gan-only is not a candidate.
    assert gate_from_metrics(metrics, "downstream") == Gate(
        "downstream_delta", 0.05, True, (-0.01, 0.07), seeds=3, valid=True
    )
    assert gate_from_metrics({}, "downstream").value is None
    two = {"downstream": {"deltas": {"real+gan": {"balanced_accuracy": {**ci, "n": 2}}}}}
    assert gate_from_metrics(two, "downstream").valid is False  # 2 seeds: no verdict, no champion
    one = {"downstream": {"deltas": {"real+gan": {"balanced_accuracy": {"mean": 0.1, "n": 1}}}}}
    assert gate_from_metrics(one, "downstream").valid is False

    # Grouped names that say what they are; deltas in points like the report, baseline in the name.
    assert headline_metrics(metrics) == {
        "fidelity/fd_domain": 4.5,
        "fidelity/fd_domain_floor": 1.5,
        "fidelity/kid_domain": 0.2,
        "fidelity/kid_domain_floor": 0.01,
        "per_class/fd_domain/0": 9.0,
        "per_class/fd_domain/a b": 3.0,
        "fidelity/precision": 0.7,
        "fidelity/recall": 0.5,
        "fidelity/precision_floor": 0.95,
        "memorisation/near_copy_fraction": 0.0,
        "downstream/balanced_acc/real_classic": 0.8,
        "downstream/delta_vs_real_classic_pts/real_gan": 3.0,
        "downstream/delta_vs_real_classic_pts/real_gan/ci_low": -1.0,
        "downstream/delta_vs_real_classic_pts/real_gan/ci_high": 7.0,
        "downstream/delta_vs_real_classic_pts/real_gan_classic": 5.0,
        "downstream/delta_vs_real_classic_pts/real_gan_classic/ci_low": -1.0,
        "downstream/delta_vs_real_classic_pts/real_gan_classic/ci_high": 7.0,
        "downstream/delta_vs_real_classic_pts/gan-only": 90.0,
        "downstream/delta_vs_real_classic_pts/gan-only/ci_low": -1.0,
        "downstream/delta_vs_real_classic_pts/gan-only/ci_high": 7.0,
        "downstream/delta_vs_real_pts/real_gan": 2.0,
        "downstream/delta_vs_real_pts/real_gan/ci_low": 1.0,
        "downstream/delta_vs_real_pts/real_gan/ci_high": 3.0,
        "per_class/recall_delta_vs_real_classic_pts/real_gan/0": 10.0,
    }
    # Without real+classic in the grid the deltas are against real, and the names say so.
    real_base = {"downstream": {"baseline": "real", "deltas": {"real+gan": {"balanced_accuracy": {"mean": -0.1}}}}}
    assert headline_metrics(real_base) == {"downstream/delta_vs_real_pts/real_gan": -10.0}


def test_a_cell_logs_classifier_scores_apart_from_generator_fidelity():
    cell = {"accuracy": 0.9, "balanced_accuracy": 0.85, "macro_f1": 0.8, "seconds": 2.5, "per_class_recall": [1, 0.7]}
    scores = cell_metrics(cell, ["0", "T-shirt/top"])
    assert scores == {
        "downstream/accuracy": 0.9,
        "downstream/balanced_acc": 0.85,
        "downstream/macro_f1": 0.8,
        "downstream/seconds": 2.5,
        "per_class/recall/0": 1.0,
        "per_class/recall/T-shirt_top": 0.7,
    }
    # The classifier's per-class recall and the generator's recall never share a name or a prefix.
    fidelity = headline_metrics({"prdc": {"synthetic": {"recall": 0.5}}})
    assert set(fidelity) == {"fidelity/recall"} and not set(fidelity) & set(scores)
    assert not any(k.startswith("fidelity/recall/") for k in scores)


def test_metric_names_are_mlflow_safe():
    from mlflow.utils.validation import _validate_metric_name

    assert metric_segment("real+gan+classic") == "real_gan_classic"
    assert metric_segment("T-shirt/top") == "T-shirt_top"  # a class name is one part, never two
    assert metric_segment("a:b(c)") == "a_b_c_"
    assert [metric_segment(x) for x in ("", ".", "..")] == ["_", "_", "__"]
    assert metric_key("downstream/balanced_acc/real+gan") == "downstream/balanced_acc/real_gan"
    for name in ("per_class/recall/..", "per_class/recall/", "a//b", "downstream/balanced_acc/real+gan", "x/ü é"):
        _validate_metric_name(metric_key(name))  # MLflow's own check: raises on an illegal name


def test_resolve_uri_prefers_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert resolve_uri(None) == "sqlite:///mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_uri("sqlite:///x.db") == "http://127.0.0.1:1"


def test_unreachable_server_fails_fast_with_one_line():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.time()
    with pytest.raises(TrackingError) as err:
        MlflowTracker(uri, "x")
    assert time.time() - start < 15
    message = str(err.value)
    assert "\n" not in message and uri in message and "unreachable" in message


def test_unusable_sqlite_store_is_a_tracking_error(tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TrackingError, match="cannot create"):
        check_reachable(f"sqlite:///{tmp_path / 'file' / 'sub' / 'mlruns.db'}")


def test_null_tracker_is_a_tracker_that_does_nothing():
    t = make_tracker(False, "sqlite:///never.db", "x")
    assert isinstance(t, NullTracker) and isinstance(t, Tracker)
    with t.run("p", kind="pipeline") as rid:
        t.log_metrics(rid, {"a": 1.0}, step=3)
        assert t.log_generator(rid, Path("nope.pt")) is None
        assert t.register("m", "n", Gate("fd_domain", 1.0, False), run_id=rid, data_fingerprint="f") is None
    assert t.champion("n") is None
    assert not Path("never.db").exists()


# Runs against a real store. --------------------------------------------------------------------


def test_runs_nest_log_params_curves_tags_and_the_dataset(tracker: MlflowTracker, tmp_path: Path):
    cfg = tiny_config(tmp_path)
    data = load_data(cfg.data, cfg.seed)
    with tracker.run("pipeline", kind="pipeline", tags={TAG_FINGERPRINT: data.fingerprint}) as parent:
        tracker.log_params(parent, cfg.flat())
        tracker.log_dataset(parent, data, name="digits-train", source="digits")
        with tracker.run("train", kind="train", parent=parent) as child:
            for nimg, loss in [(128, 1.5), (256, 1.25)]:
                tracker.log_metrics(child, {"loss_D": loss}, step=nimg)
            (tmp_path / "grid.png").write_bytes(b"png")
            tracker.log_artifact(child, tmp_path / "grid.png", "grids")
    client = tracker.client
    p, c = client.get_run(parent), client.get_run(child)
    assert p.info.status == c.info.status == "FINISHED"
    assert c.data.tags["mlflow.parentRunId"] == parent
    assert p.data.tags[TAG_KIND] == "pipeline" and c.data.tags[TAG_KIND] == "train"
    assert p.data.tags[TAG_FINGERPRINT] == data.fingerprint
    assert p.data.tags[TAG_COMMIT] != ""
    assert p.data.params["train.kimg"] == str(cfg.train.kimg)
    assert p.data.params["data.classes"] == '["0", "1", "2"]'
    assert len(p.data.params) == len(cfg.flat())
    history = client.get_metric_history(child, "loss_D")
    assert [(m.step, m.value) for m in history] == [(128, 1.5), (256, 1.25)]
    [dataset_input] = p.inputs.dataset_inputs
    assert dataset_input.dataset.digest == data.fingerprint and dataset_input.dataset.name == "digits-train"
    assert [a.path for a in client.list_artifacts(child, "grids")] == ["grids/grid.png"]


def test_a_failing_run_ends_failed_never_finished(tracker: MlflowTracker):
    ids = {}
    with pytest.raises(RuntimeError, match="boom"):
        with tracker.run("pipeline", kind="pipeline") as parent:
            ids["parent"] = parent
            with tracker.run("train", kind="train", parent=parent) as child:
                ids["child"] = child
                raise RuntimeError("boom")
    for run_id in ids.values():
        assert tracker.client.get_run(run_id).info.status == "FAILED"


def test_a_run_recorded_after_the_fact_keeps_its_measured_start_and_end(tracker: MlflowTracker):
    t0 = time.time() - 60
    with tracker.run("cell", kind="downstream", start_time=t0, end_time=t0 + 12.5) as run_id:
        tracker.log_metrics(run_id, {"downstream/seconds": 12.5})
    info = tracker.client.get_run(run_id).info
    assert info.status == "FINISHED"
    assert (info.start_time, info.end_time) == (round(t0 * 1000), round((t0 + 12.5) * 1000))


def test_cells_of_an_older_evaluation_get_their_recorded_durations_as_start_and_end(tracker: MlflowTracker):
    """Cells recorded before they carried started_at/ended_at: laid back to back, each its duration."""
    from flows.evaluate import log_cells

    cells = [
        {"regime": "real+classic", "seed": 0, "seconds": 3.0, "balanced_accuracy": 0.8},
        {"regime": "real+gan", "seed": 0, "seconds": 5.5, "balanced_accuracy": 0.7},
        {"regime": "real+gan", "seed": 1, "seconds": 0.25, "balanced_accuracy": 0.9},
    ]
    end = time.time() - 30
    with tracker.run("pipeline", kind="pipeline") as parent:
        log_cells(tracker, parent, {"downstream": {"cells": cells}, "class_names": ["a", "b"]}, end=end)
    runs = tracker.client.search_runs(
        [tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", order_by=["attributes.start_time ASC"]
    )
    assert [r.info.run_name for r in runs] == ["real+classic seed 0", "real+gan seed 0", "real+gan seed 1"]
    for run, cell in zip(runs, cells, strict=True):
        seconds = (run.info.end_time - run.info.start_time) / 1000
        assert seconds == pytest.approx(cell["seconds"], abs=1e-3) == run.data.metrics["downstream/seconds"]
    assert len({r.info.start_time for r in runs}) == 3, "children do not share one instant"
    # Back to back, the last ending where the measurements ended.
    assert runs[0].info.end_time == runs[1].info.start_time and runs[1].info.end_time == runs[2].info.start_time
    assert runs[-1].info.end_time == round(end * 1000)


def test_compare_lines_up_runs_logged_under_the_old_metric_names(store: str):
    from augment.tracking import compare_runs

    tracker = MlflowTracker(store, "compare-names")
    with tracker.run("old", kind="pipeline", start_time=time.time() - 120) as old:
        tracker.log_metrics(old, {"fd_domain": 2.0, "delta.real_gan": 0.031, "delta.real_gan.ci_low": -0.01})
    with tracker.run("new", kind="pipeline") as new:
        tracker.log_metrics(
            new,
            headline_metrics(
                {
                    "downstream": {
                        "deltas": {"real+gan": {"balanced_accuracy": {"mean": 0.05, "ci_low": 0.01, "ci_high": 0.09}}}
                    },
                    "fd_domain": {"fd_domain": 1.0},
                }
            ),
        )
    table = compare_runs(store, "compare-names").set_index("run")
    delta = "downstream/delta_vs_real_classic_pts/real_gan"
    assert table.loc["old", "fidelity/fd_domain"] == 2.0 and table.loc["new", "fidelity/fd_domain"] == 1.0
    assert table.loc["old", delta] == pytest.approx(3.1) and table.loc["new", delta] == pytest.approx(5.0)
    assert table.loc["old", f"{delta}/ci_low"] == pytest.approx(-1.0)
    assert math.isnan(table.loc["old", f"{delta}/ci_high"]) and table.loc["new", f"{delta}/ci_high"] == 9.0
    assert list(table.columns[-2:]) == ["model", "alias"]


# The generator as a pyfunc model, the registry and the gate. -----------------------------------


@pytest.fixture(scope="module")
def logged(tracker: MlflowTracker, tiny_run: Path) -> dict:
    snapshot = find_snapshot(tiny_run)
    with tracker.run("train", kind="train") as run_id:
        model_uri = tracker.log_generator(run_id, snapshot)
    return {"run_id": run_id, "model_uri": model_uri, "snapshot": snapshot}


def test_generator_is_a_pyfunc_from_code_without_pickles(tracker: MlflowTracker, logged: dict):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(logged["model_uri"]))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert not any(f.endswith((".pkl", ".pickle", ".cloudpickle")) for f in files), files
    assert "generator_model.py" in files and "code/augment/tracking/model.py" in files
    assert f"artifacts/{logged['snapshot'].name}" in files
    mlmodel = mlflow.models.Model.load(str(local))
    assert mlmodel.flavors["python_function"]["model_code_path"].endswith("generator_model.py")
    requirements = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in requirements) and any(r.startswith("mlflow==") for r in requirements)
    inputs = mlmodel.signature.inputs.to_dict()
    # `index` is the sample's number within its class; `seed` (its earlier name) is still accepted.
    assert [(c["name"], c["type"], c["required"]) for c in inputs] == [
        ("label", "long", True),
        ("index", "long", False),
        ("seed", "long", False),
    ]
    assert list(mlmodel.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 8, 8]
    assert mlmodel.metadata["class_names"] == ["0", "1", "2"]


def test_predict_returns_images_that_depend_only_on_label_and_index(logged: dict):
    import mlflow

    model = mlflow.pyfunc.load_model(logged["model_uri"])
    batch = model.predict({"label": [0, 1, 2, 2], "index": [0, 0, 0, 7]})
    assert batch.shape == (4, 1, 8, 8) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    alone = model.predict(pd.DataFrame({"label": [2], "index": [7]}))
    np.testing.assert_allclose(alone[0], batch[3], atol=1e-6)  # neither batch nor position matter
    assert not np.allclose(batch[2], batch[3]), "different indices give different images"
    # The same image `augment generate --seed 0` writes as sample 7 of class 2.
    snap = load_snapshot(logged["snapshot"])
    expected = (sample(snap.generator(), torch.tensor([2]), torch.tensor([7]), seed=0) + 1) / 2
    np.testing.assert_allclose(alone, expected.numpy(), atol=1e-6)
    with pytest.raises(Exception, match="not a class"):
        model.predict({"label": [3], "index": [0]})


def test_predict_accepts_seed_as_the_old_name_of_index(logged: dict):
    import mlflow

    model = mlflow.pyfunc.load_model(logged["model_uri"])
    by_index = model.predict({"label": [0, 2, 2], "index": [0, 0, 7]})
    np.testing.assert_array_equal(model.predict({"label": [0, 2, 2], "seed": [0, 0, 7]}), by_index)
    np.testing.assert_allclose(model.predict(pd.DataFrame({"label": [2], "seed": [7]}))[0], by_index[2], atol=1e-6)
    with pytest.raises(Exception, match="not both"):
        model.predict({"label": [0], "index": [0], "seed": [1]})
    with pytest.raises(Exception, match=r"lacks column\(s\) \['index'\]"):
        model.predict({"label": [0]})
    with pytest.raises(Exception, match="'seed' values must be >= 0"):
        model.predict({"label": [0], "seed": [-1]})


def test_promotion_gate_moves_champion_only_when_beaten(tracker: MlflowTracker, logged: dict):
    name = "gate-test-cgan"
    kw = dict(run_id=logged["run_id"], data_fingerprint="fp1")
    first = tracker.register(logged["model_uri"], name, Gate("fd_domain", 5.0, False), **kw)
    assert (first.version, first.alias, first.promoted) == ("1", CHAMPION, True)
    worse = tracker.register(logged["model_uri"], name, Gate("fd_domain", 6.0, False), **kw)
    assert (worse.version, worse.alias, worse.promoted) == ("2", CHALLENGER, False)
    assert "does not beat champion v1 (5)" in worse.reason
    better = tracker.register(logged["model_uri"], name, Gate("fd_domain", 4.0, False), **kw)
    assert (better.alias, better.promoted, better.champion_version) == (CHAMPION, True, "1")
    client = tracker.client
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "3"
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == "2"
    assert "does not beat" in client.get_model_version(name, "2").tags["promotion_reason"]
    champion = tracker.champion(name)
    assert champion.version == "3" and champion.data_fingerprint == "fp1"
    assert champion.gate == Gate("fd_domain", 4.0, False)
    assert math.isclose(float(client.get_model_version(name, "3").tags["gate.value"]), 4.0)
    # A version evaluated on other data is not compared with the champion's value (another test
    # split): with a valid verdict it takes over, and the reason says why.
    other = tracker.register(
        logged["model_uri"], name, Gate("fd_domain", 9.0, False), run_id=logged["run_id"], data_fingerprint="fp2"
    )
    assert (other.alias, other.promoted) == (CHAMPION, True)
    assert "evaluated on other data (fp1, this run fp2)" in other.reason
    invalid = Gate("downstream_delta", 0.2, True, (0.1, 0.3), seeds=2, valid=False)
    kept = tracker.register(logged["model_uri"], name, invalid, run_id=logged["run_id"], data_fingerprint="fp3")
    assert (kept.alias, kept.promoted) == (CHALLENGER, False) and "is no verdict" in kept.reason


def test_run_fingerprint_covers_data_config_and_nothing_else() -> None:
    from augment.config import load_config
    from augment.registry import run_fingerprint

    cfg = load_config("configs/digits.yaml").to_dict()
    base = run_fingerprint("data1", cfg)
    assert run_fingerprint("data2", cfg) != base
    longer = load_config("configs/digits.yaml", ["train.kimg=61"]).to_dict()
    assert run_fingerprint("data1", longer) != base  # a changed config retrains
    where = load_config("configs/digits.yaml", ["tracking.uri=sqlite:///other.db", "output.root=elsewhere"])
    assert run_fingerprint("data1", where.to_dict()) == base  # where things are logged is not what is trained


def test_download_snapshot_returns_the_weights_file(tracker: MlflowTracker, logged: dict, tmp_path: Path):
    name = "download-test-cgan"
    tracker.register(
        logged["model_uri"], name, Gate("fd_domain", 1.0, False), run_id=logged["run_id"], data_fingerprint="fp"
    )
    path = download_snapshot(f"models:/{name}@champion", tracking_uri=tracker.uri, dst=tmp_path / "dl")
    assert path.suffix == ".pt" and path.is_relative_to(tmp_path / "dl")
    snap = load_snapshot(path)
    original = load_snapshot(logged["snapshot"])
    assert snap.class_names == original.class_names
    assert all(torch.equal(snap.generator_state[k], v) for k, v in original.generator_state.items())
    with pytest.raises(TrackingError, match="no-such-model"):
        download_snapshot("models:/no-such-model@champion", tracking_uri=tracker.uri)


def test_downloads_leave_no_temporary_folder(
    tracker: MlflowTracker, logged: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed download removes the folder it made; GanAugmenter.from_mlflow keeps the snapshot in
    memory and removes its download."""
    from augment import GanAugmenter

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with pytest.raises(TrackingError, match="no-such-model"):
        download_snapshot("models:/no-such-model@champion", tracking_uri=tracker.uri)
    assert list(temp.iterdir()) == []
    name = "temp-test-cgan"
    tracker.register(
        logged["model_uri"], name, Gate("fd_domain", 1.0, False), run_id=logged["run_id"], data_fingerprint="fp"
    )
    aug = GanAugmenter.from_mlflow(f"models:/{name}@champion", tracking_uri=tracker.uri, p=1.0, seed=0)
    assert list(temp.iterdir()) == []
    assert aug.class_names == load_snapshot(logged["snapshot"]).class_names


def test_augmenter_from_mlflow_serves_the_registered_generator(tracker: MlflowTracker, logged: dict) -> None:
    from augment import GanAugmenter
    from augment.generate import sample, to_uint8

    name = "augmenter-test-cgan"
    tracker.register(
        logged["model_uri"], name, Gate("fd_domain", 1.0, False), run_id=logged["run_id"], data_fingerprint="fp"
    )
    aug = GanAugmenter.from_mlflow(f"models:/{name}@champion", tracking_uri=tracker.uri, p=1.0, seed=0)
    original = load_snapshot(logged["snapshot"])
    assert aug.class_names == original.class_names
    got = aug.images(torch.tensor([0, 1]), torch.tensor([0, 3])).permute(0, 2, 3, 1).numpy()
    want = to_uint8(sample(original.generator(), torch.tensor([0, 1]), torch.tensor([0, 3]), seed=0))
    assert abs(got.astype(int) - want.astype(int)).max() <= 1


def test_processes_racing_on_a_fresh_sqlite_store_all_get_it(tmp_path: Path) -> None:
    """MLflow creates a new SQLite store's tables on first use; without a lock, the second of two
    processes starting together fails with 'table already exists'."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = (
        "import sys; from augment.tracking import MlflowTracker; "
        "print(MlflowTracker(sys.argv[1], 'race').experiment_id)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-300:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # one experiment, seen by all three


def test_the_policy_imports_neither_mlflow_nor_prefect() -> None:
    import subprocess
    import sys

    def loaded(code: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout

    same = "import augment.registry as r, augment.metrics.verdict as v; "
    same += "print(r.MIN_VERDICT_SEEDS is v.MIN_VERDICT_SEEDS and r.GAN_REGIMES is v.GAN_REGIMES)"
    assert loaded(same).strip() == "True"  # one list of regimes, one seed rule
    policy = "import sys, augment.registry; print(sorted(m for m in ('mlflow', 'prefect') if m in sys.modules))"
    assert loaded(policy).strip() == "[]"
    # Importing the MLflow module sets no environment variable; the command line does (before mlflow loads).
    assert (
        loaded("import os, augment.tracking; print(sorted(k for k in os.environ if k.startswith('MLFLOW_')))").strip()
        == "[]"
    )
    assert "MLFLOW_DISABLE_TELEMETRY" in loaded("import os, flows.cli; print(os.environ)")


def test_the_experiment_opens_on_its_runs_not_the_genai_overview(store: str) -> None:
    from augment.tracking import EXPERIMENT_KIND, TAG_EXPERIMENT_KIND

    uri = store
    tracker = MlflowTracker(uri, "kinds")
    exp = tracker.client.get_experiment_by_name("kinds")
    assert exp.tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND == "custom_model_development"
    # An experiment an older version created without the tag gets it on the next use.
    old = tracker.client.create_experiment("older")
    assert TAG_EXPERIMENT_KIND not in (tracker.client.get_experiment(old).tags or {})
    MlflowTracker(uri, "older")
    assert tracker.client.get_experiment(old).tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
