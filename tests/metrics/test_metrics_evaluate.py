"""evaluate_run end to end on the tiny run, the train-time metric hook, and the bad inputs."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from augment import checkpoint
from augment.data import ImageSet, load_data
from augment.errors import CheckpointError, ConfigError, DataError
from augment.metrics import extractor as extractor_mod
from augment.metrics.evaluate import best_snapshot_metric, evaluate_run, make_metric_fn
from augment.metrics.result import read_evaluation
from augment.train import NetworkOptions, ScheduleOptions, training_loop
from conftest import tiny_config
from flows.cli import app

FAST = [
    "evaluate.batch_size=32",
    "evaluate.steps=8",
    "evaluate.classic=[crop, crop+flip]",
    "evaluate.extractor_steps=30",
    "evaluate.synthetic_per_class=24",
    "evaluate.samples_per_class=20",
]


MAPPED: list = []


def recording_map(fn, items):
    """A stand-in for an orchestrator's parallel map: records what it was asked to run."""
    items = list(items)
    MAPPED.extend(items)
    return [fn(item) for item in items]


@pytest.fixture(scope="module")
def evaluated(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(tiny_run, run_dir)
    result = evaluate_run(run_dir, overrides=FAST, progress=False, map_fn=recording_map)
    return run_dir, result


@pytest.mark.slow
def test_every_cell_goes_through_map_fn(evaluated: tuple[Path, dict]) -> None:
    grid = [item for item in MAPPED if isinstance(item, tuple)]
    selection = [item for item in MAPPED if isinstance(item, dict)]
    # The tiny run's train split is balanced: BalancedDataset would add nothing, so it is left out.
    regimes = ["real", "real+classic", "real+gan", "real+gan+classic", "gan-only", "gan-augmenter"]
    assert grid == [(r, s) for r in regimes for s in (0, 1)]
    assert list(evaluated[1]["downstream"]["regimes"]) == regimes
    assert "balanced-dataset" in evaluated[1]["downstream"]["skipped_regimes"]
    assert [s["settings"]["classic"] for s in selection] == ["crop", "crop+flip"]


@pytest.mark.slow
def test_evaluate_writes_every_artifact(evaluated: tuple[Path, dict]) -> None:
    run_dir, result = evaluated
    out = run_dir / "eval"
    for name in (
        "metrics.json",
        "per_class.csv",
        "report.md",
        "deltas.png",
        "regimes.png",
        "per_class_recall.png",
        "confusion.png",
        "samples.png",
        "nearest_pairs.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    fd = metrics["fd_domain"]
    assert fd["fd_domain"] > 0 and fd["fd_domain_floor"] is not None
    assert fd["n_synthetic"] == fd["n_real"] == 60 and fd["n_reference"] == 60  # 20 per class, 3 classes
    assert set(fd["per_class"]) == {"0", "1", "2"}
    assert metrics["prdc"]["nearest_k"] == 5 and metrics["prdc"]["floor"] is not None
    assert 0.0 <= metrics["memorisation"]["near_copy_fraction"] <= 1.0
    down = metrics["downstream"]
    assert list(down["regimes"]) == [
        "real",
        "real+classic",
        "real+gan",
        "real+gan+classic",
        "gan-only",
        "gan-augmenter",
    ]
    assert down["deploy"]["regimes"]["gan-augmenter"]["code"].startswith("train_set = AugmentedDataset(")
    assert {c["steps"] for c in down["cells"]} == {8} and len(down["cells"]) == 6 * 2
    assert down["classic_policy"] in ("crop", "crop+flip") and len(down["selection"]["classic"]["scores"]) == 2
    assert metrics["verdict"] == down["verdict"]["text"]
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert [r["class"] for r in rows] == ["0", "1", "2"] and "fd_domain_floor" in rows[0]
    report = (out / "report.md").read_text()
    assert down["verdict"]["text"] in report
    # The headline picture comes right after the verdict, before any table.
    assert report.index("(deltas.png)") < report.index("## Downstream")
    assert "not FID" in report and "FID)" not in report.replace("not FID", "")
    assert result["files"]["report"] == str(out / "report.md")


@pytest.mark.slow
def test_metrics_json_reads_back_into_the_typed_evaluation(evaluated: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, result = evaluated
    back = read_evaluation(run_dir)  # a run directory finds eval/metrics.json
    assert back == read_evaluation(run_dir / "eval" / "metrics.json")
    assert back["verdict"] == result["verdict"] == result["downstream"]["verdict"]["text"]
    assert back["fd_domain"]["fd_domain"] == pytest.approx(result["fd_domain"]["fd_domain"])
    assert back["class_names"] == ["0", "1", "2"] and back["sizes"]["test"] == 60
    assert result["files"]["metrics"].endswith("metrics.json") and "files" not in back  # written after the file
    # A file that does not fit the contract is refused, naming the key.
    broken = json.loads((run_dir / "eval" / "metrics.json").read_text())
    broken["sizes"]["test"] = "sixty"
    del broken["verdict"]
    (tmp_path / "metrics.json").write_text(json.dumps(broken))
    with pytest.raises(DataError, match=r"not an evaluation result: (verdict|sizes\.test)"):
        read_evaluation(tmp_path / "metrics.json")
    with pytest.raises(DataError, match="no evaluation here"):
        read_evaluation(tmp_path / "nothing")


@pytest.mark.slow
def test_the_test_split_never_reaches_the_feature_extractor(evaluated: tuple[Path, dict]) -> None:
    run_dir, result = evaluated
    cache = Path(result["feature_extractor"]["cache"])
    assert cache.parent == run_dir / "cache"
    ext = extractor_mod.load_extractor(cache)
    cfg = tiny_config(run_dir)
    data = load_data(cfg.data, cfg.seed)
    assert sorted(ext.trained_on_ids) == sorted(data.train.ids + data.val.ids)
    assert not set(ext.trained_on_ids) & set(data.test.ids)
    assert ext.fingerprint == data.fingerprint


def test_the_test_split_never_reaches_the_gan(tmp_path: Path) -> None:
    """Two trainings that differ only in the test split give bit-identical generators."""
    cfg = tiny_config(tmp_path, "train.kimg=0.064")
    data = load_data(cfg.data, cfg.seed)
    poisoned = dataclasses.replace(
        data, test=ImageSet(torch.full_like(data.test.images, 255), torch.zeros_like(data.test.labels), data.test.ids)
    )
    states = []
    for name, d in (("a", data), ("b", poisoned)):
        (tmp_path / name).mkdir()
        snap = training_loop(
            run_dir=tmp_path / name,
            data=d,
            config=cfg.to_dict(),
            networks=NetworkOptions(z_dim=8, g_channels=8, d_channels=8),
            schedule=ScheduleOptions(total_kimg=0.064, batch_size=32, snapshot_kimg=1.0),
            progress=False,
        )
        states.append(checkpoint.load_snapshot(snap).generator_state)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_extractor_is_cached_by_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(tmp_path, "evaluate.extractor_steps=5", "evaluate.batch_size=16")
    data = load_data(cfg.data, cfg.seed)
    first = extractor_mod.load_or_train_extractor(data, cfg.evaluate, cache_dir=tmp_path / "cache")
    assert first.path is not None and first.path.is_file() and data.fingerprint in first.path.name

    def refuse(*a, **k):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(extractor_mod, "train_extractor", refuse)
    again = extractor_mod.load_or_train_extractor(data, cfg.evaluate, cache_dir=tmp_path / "cache")
    x = data.test.images[:5]
    assert torch.equal(first.features(x), again.features(x))


def test_training_keeps_the_best_snapshot_by_fd_domain(tmp_path: Path) -> None:
    from augment.train import train

    cfg = tiny_config(
        tmp_path,
        "train.kimg=0.128",
        "train.eval_kimg=0.064",
        "evaluate.extractor_steps=5",
        "evaluate.batch_size=16",
        "evaluate.samples_per_class=10",
    )
    with pytest.raises(ConfigError, match="train.eval_kimg=0.064 keeps the best snapshot by a metric"):
        train(cfg, out=tmp_path / "refused", progress=False)  # training does not build evaluation's metric
    assert not (tmp_path / "refused").exists()
    run_dir, snap = train(cfg, out=tmp_path / "run", progress=False, metric_factory=best_snapshot_metric)
    assert snap == run_dir / checkpoint.BEST_SNAPSHOT
    lines = [json.loads(x) for x in (run_dir / "metrics-train.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(x["fd_domain"] > 0 for x in lines)
    best = checkpoint.load_snapshot(snap)
    assert best.metrics["fd_domain"] == min(x["fd_domain"] for x in lines)
    assert list((run_dir / "cache").glob("extractor-*.pt"))


def test_metric_fn_is_deterministic_for_one_generator(tiny_run: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "evaluate.extractor_steps=5", "evaluate.batch_size=16", "evaluate.samples_per_class=10")
    data = load_data(cfg.data, cfg.seed)
    fn = make_metric_fn(data, cfg, cache_dir=tmp_path / "cache")
    G = checkpoint.load_snapshot(checkpoint.find_snapshot(tiny_run)).generator()
    assert fn(G) == fn(G)


def test_eval_oversample_scores_that_many_more_images_per_check(tiny_run: Path, tmp_path: Path) -> None:
    sets = ["evaluate.extractor_steps=5", "evaluate.batch_size=16", "evaluate.samples_per_class=10"]
    G = checkpoint.load_snapshot(checkpoint.find_snapshot(tiny_run)).generator()
    seen: list[int] = []
    G.register_forward_hook(lambda m, i, o: seen.append(len(o)))
    values = []
    for k in (1, 3):
        cfg = tiny_config(tmp_path, *sets, f"train.eval_oversample={k}")
        data = load_data(cfg.data, cfg.seed)
        values.append(make_metric_fn(data, cfg, cache_dir=tmp_path / "cache")(G)["fd_domain"])
        assert sum(seen) == 3 * 10 * k  # 3 classes, 10 per class (the cap), k times
        seen.clear()
    assert values[0] != values[1] and all(v > 0 for v in values)


# -- bad inputs ------------------------------------------------------------------------------------


def test_run_dir_without_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no generator checkpoint"):
        evaluate_run(tmp_path / "empty", progress=False)
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "empty")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "no generator checkpoint" in lines[0]


def test_class_mismatch_between_checkpoint_and_data(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    with pytest.raises(CheckpointError, match="trained on classes"):
        evaluate_run(run_dir, overrides=["data.classes=['0','1','3']"], progress=False)
    with pytest.raises(CheckpointError, match="trained on data"):
        evaluate_run(run_dir, overrides=["data.per_class=30"], progress=False)
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), "--set", "data.classes=['0','1','3']"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "trained on classes" in res.output
    assert not (run_dir / "eval").exists()  # nothing written for a mismatched run


def test_fid_inception_without_weights_fails_before_any_work(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from augment.metrics import frechet

    monkeypatch.delenv(frechet.INCEPTION_ENV, raising=False)
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    with pytest.raises(ConfigError, match=frechet.INCEPTION_FILE):
        evaluate_run(run_dir, overrides=["evaluate.extractor=inception"], progress=False)
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), "--set", "evaluate.extractor=inception"])
    assert res.exit_code == 2 and frechet.INCEPTION_FILE in res.output
    assert not (run_dir / "eval").exists() and not (run_dir / "cache").exists()


@pytest.mark.slow
def test_the_documented_environment_variable_alone_turns_fid_inception_on(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_fid_weights: Path
) -> None:
    """``$AUGMENT_INCEPTION_WEIGHTS`` (no config field) computes fid_inception beside its floor, from the file."""
    from augment.metrics import frechet

    monkeypatch.setenv(frechet.INCEPTION_ENV, str(random_fid_weights))
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    sets = [*FAST, "evaluate.samples_per_class=4", "evaluate.seeds=1", "evaluate.regimes=[real]"]
    result = evaluate_run(run_dir, overrides=sets, progress=False)
    fid = result["fid_inception"]
    assert fid["weights"] == str(random_fid_weights)
    assert math.isfinite(fid["fid_inception"]) and fid["fid_inception"] > 0
    assert math.isfinite(fid["fid_inception_floor"]) and fid["fid_inception_floor"] >= 0
    assert fid["fid_inception"] != result["fd_domain"]["fd_domain"]  # another feature space, another number
    assert set(fid["per_class"]) == {"0", "1", "2"}
    saved = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert saved["fid_inception"]["fid_inception"] == pytest.approx(fid["fid_inception"])
    assert "fid_inception" in (run_dir / "eval" / "report.md").read_text()


@pytest.mark.slow
def test_cli_evaluate_prints_the_distance_beside_its_floor_and_the_verdict(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    sets = [*FAST, "evaluate.classic=[crop]"]
    args = ["evaluate", str(run_dir), "-q", *[a for s in sets for a in ("--set", s)]]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "fd_domain" in res.output and "real-vs-real floor" in res.output and "60 synthetic / 60 real" in res.output
    assert "Not enough seeds" in res.output  # 2 seeds in the tiny config: no verdict claimed
    assert (run_dir / "eval" / "report.md").is_file()
