"""The run directory has one owner: its file names live in augment/rundir.py and nowhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from augment import rundir
from augment.config import Config, save_config
from augment.errors import CheckpointError

REPO = Path(__file__).resolve().parent.parent
NAMES = {
    rundir.CONFIG,
    rundir.DATA,
    rundir.STATS,
    rundir.TRAIN_METRICS,
    rundir.TRAINING_STATE,
    rundir.FINAL_SNAPSHOT,
    rundir.BEST_SNAPSHOT,
    rundir.SNAPSHOT_GLOB,
    rundir.NETWORK_GLOB,
    rundir.FAKES_GLOB,
    rundir.CACHE,
    rundir.GENERATED,
    rundir.EVAL,
    rundir.METRICS_JSON,
    rundir.REPORT_MD,
    rundir.PER_CLASS_CSV,
}


def code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module's code: docstrings left out, f-string pieces included."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_run_directory_file_names_appear_only_in_rundir() -> None:
    found = []
    for path in sorted([*(REPO / "augment").rglob("*.py"), *(REPO / "flows").rglob("*.py")]):
        if path == REPO / "augment" / "rundir.py":
            continue
        for line, value in code_strings(path):
            # A name alone, or as a path's last part ("eval/metrics.json"); "cache" alone is also a key of
            # metrics.json's feature_extractor entry, so only its path form counts.
            if value in NAMES - {rundir.CACHE} or any(value.endswith("/" + n) for n in NAMES):
                found.append(f"{path.relative_to(REPO)}:{line}: {value!r}")
    assert not found, "run-directory names outside augment/rundir.py:\n" + "\n".join(found)


def test_the_scan_sees_a_literal_where_one_is(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text(
        '"""Docs may say config.yaml."""\nPATH = "runs/x/" + "config.yaml"\nOTHER = f"{1}/eval/metrics.json"\n'
    )
    values = [v for _, v in code_strings(mod)]
    assert "config.yaml" in values and "Docs may say config.yaml." not in values
    assert any(v.endswith("/metrics.json") for v in values)


def test_run_config_reads_config_yaml_then_the_snapshot(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="no generator checkpoint"):
        rundir.run_config(run)  # neither config.yaml nor a snapshot
    save_config(Config(name="from-yaml"), run / rundir.CONFIG)
    cfg = rundir.run_config(run, ["evaluate.seeds=5"])
    assert (cfg.name, cfg.evaluate.seeds) == ("from-yaml", 5)


def test_snapshot_names_sort_by_kimg(tmp_path: Path) -> None:
    names = [rundir.snapshot_name(k) for k in (100, 20, 1000)]
    assert sorted(names) == [rundir.snapshot_name(k) for k in (20, 100, 1000)]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert rundir.find_snapshot(tmp_path).name == rundir.snapshot_name(1000)
    (tmp_path / rundir.FINAL_SNAPSHOT).write_bytes(b"")
    assert rundir.find_snapshot(tmp_path).name == rundir.FINAL_SNAPSHOT
    assert rundir.holds_a_run(tmp_path) is not None and rundir.holds_a_run(tmp_path / "x") is None
