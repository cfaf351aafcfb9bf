"""The `augment` command: train -> generate -> inspect-data, and bad input as one line + exit 2."""

from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY, tiny_config


def augment(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=300,
    )


def _sets(tmp_path: Path) -> list[str]:
    out = []
    for item in [*TINY, f"output.root={tmp_path / 'runs'}"]:
        out += ["--set", item]
    return out


def test_train_generate_inspect(tmp_path: Path) -> None:
    cfg = REPO / "configs" / "digits.yaml"
    res = augment("train", str(cfg), *_sets(tmp_path), "--set", "data.per_class={'0': 30, '1': 12, '2': 20}", "-q")
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "runs" / "00000-digits"
    assert (run_dir / "network-final.pt").is_file()
    res = augment("generate", str(run_dir), "-q")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(run_dir / "generated" / "manifest.csv")))
    per_class = {c: sum(r["class_name"] == c for r in rows) for c in "012"}
    # train counts 30->27, 12->11, 20->18 after 10% val (test comes from the images left out): top up to 27
    assert per_class == {"0": 0, "1": 16, "2": 9}
    res = augment("generate", str(run_dir), "--per-class", "4", "--seed", "2", "--out", str(tmp_path / "g"), "-q")
    assert res.returncode == 0 and len(list(csv.DictReader(open(tmp_path / "g" / "manifest.csv")))) == 12
    res = augment("inspect-data", str(cfg), *_sets(tmp_path))
    assert res.returncode == 0 and "fingerprint" in res.stdout and "total" in res.stdout


def test_generate_in_shards_writes_the_one_pass_set(tiny_run: Path, tmp_path: Path) -> None:
    from test_generate import files

    from augment.checkpoint import load_snapshot
    from augment.generate import write_samples

    res = augment(
        "generate", str(tiny_run), "--per-class", "5", "--shard-size", "2", "--out", str(tmp_path / "g"), "-q"
    )
    assert res.returncode == 0, res.stderr
    snap = load_snapshot(tiny_run / "network-final.pt")
    one_pass = write_samples(snap, tmp_path / "one", [5, 5, 5], batch_size=16, progress=False).parent
    assert files(tmp_path / "g") == files(one_pass)


def test_resume_via_cli(tmp_path: Path) -> None:
    cfg = REPO / "configs" / "digits.yaml"
    assert augment("train", str(cfg), *_sets(tmp_path), "--set", "train.kimg=0.064", "-q").returncode == 0
    res = augment("train", str(cfg), *_sets(tmp_path), "--set", "train.kimg=0.128", "--resume", "-q")
    assert res.returncode == 0, res.stderr
    assert "00000-digits" in res.stdout and not (tmp_path / "runs" / "00001-digits").exists()


def _bad_config_key(tmp_path: Path) -> tuple[list[str], str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "trian": {"kimg": 1}}))
    return ["train", str(path)], "unknown field 'trian'"


def _missing_dataset(tmp_path: Path) -> tuple[list[str], str]:
    return [
        "inspect-data",
        str(REPO / "configs" / "digits.yaml"),
        "--set",
        "data.source=fashion_mnist",
        "--set",
        f"data.root={tmp_path / 'nope'}",
        "--set",
        "data.image_size=28",
    ], "dataset-fashion-mnist"


def _imagefolder(tmp_path: Path, bad: str) -> tuple[list[str], str]:
    import numpy as np
    from PIL import Image

    root = tmp_path / "imgs"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / name / f"{i}.png")
    expect = {"corrupt": "corrupt or unreadable", "empty": "is empty", "label": "label 'c' is not one of"}[bad]
    if bad == "corrupt":
        (root / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    elif bad == "empty":
        (root / "c").mkdir()
    args = [
        "train",
        str(REPO / "configs" / "digits.yaml"),
        "--set",
        "data.source=imagefolder",
        "--set",
        f"data.root={root}",
        "--set",
        "data.imbalance=null",
        "--set",
        "data.split.test_per_class=null",
        "--set",
        f"output.root={tmp_path / 'runs'}",
    ]
    if bad == "label":
        (root / "m.csv").write_text("path,label\na/0.png,a\nb/0.png,c\n")
        args += ["--set", "data.source=csv", "--set", f"data.root={root / 'm.csv'}", "--set", "data.classes=[a,b]"]
    return args, expect


def _unwritable(tmp_path: Path) -> tuple[list[str], str]:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return ["train", str(REPO / "configs" / "digits.yaml"), *_sets(tmp_path), "--out", str(locked / "run")], "locked"


def _no_checkpoint(tmp_path: Path) -> tuple[list[str], str]:
    (tmp_path / "empty-run").mkdir()
    return ["generate", str(tmp_path / "empty-run")], "no generator checkpoint"


BAD = {
    "config key": _bad_config_key,
    "missing dataset": _missing_dataset,
    "corrupt image": lambda t: _imagefolder(t, "corrupt"),
    "empty class": lambda t: _imagefolder(t, "empty"),
    "label outside classes": lambda t: _imagefolder(t, "label"),
    "unwritable output": _unwritable,
    "run without checkpoint": _no_checkpoint,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    if case == "unwritable output" and os.geteuid() == 0:
        # root ignores permission bits: use a path under a regular file instead
        (tmp_path / "file").write_text("x")
        args, expect = (
            ["train", str(REPO / "configs" / "digits.yaml"), *_sets(tmp_path), "--out", str(tmp_path / "file" / "run")],
            "file",
        )
    else:
        args, expect = BAD[case](tmp_path)
    res = augment(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expect in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    # no half-written checkpoint anywhere under tmp_path
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.tmp"))


def test_tiny_config_helper_matches_cli_sets(tmp_path: Path) -> None:
    assert tiny_config(tmp_path).data.classes == ["0", "1", "2"]


def test_flags_show_no_value_placeholder_in_help() -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    for cmd in ("train", "generate", "evaluate", "run", "inspect-data", "serve"):
        out = CliRunner().invoke(app, [cmd, "--help"], env={"COLUMNS": "200"}).output
        assert "--quiet" in out or "--json" in out or "--force" in out, cmd
        flagged = [line for line in out.splitlines() if "<bool>" in line and "--help" not in line]
        assert not flagged, (cmd, flagged)


def test_serve_without_a_prefect_server_says_what_to_start_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cfg = tiny_config(tmp_path)
    from augment.config import save_config

    save_config(cfg, tmp_path / "tiny.yaml")
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", str(tmp_path / "tiny.yaml"), "--cron", "0 3 * * *"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: augment serve needs a Prefect server for its schedule: start one with `prefect server start "
        "--host 127.0.0.1`, then export PREFECT_API_URL=http://127.0.0.1:4200/api"
    ]


def test_a_teacher_trained_by_the_cli_labels_a_runs_pool_and_one_that_saw_its_test_images_is_refused(
    tiny_run: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    cfg = REPO / "configs" / "digits.yaml"
    fast = ["--set", "evaluate.steps=10", "--set", "evaluate.batch_size=32", "--set", "evaluate.threads=1"]
    res = augment("teacher", str(cfg), *_sets(tmp_path), *fast, "--members", "2", "--out", str(tmp_path / "t.pt"), "-q")
    assert res.returncode == 0, res.stderr
    assert "2 x smallcnn trained on 108 images, test balanced accuracy" in res.stdout
    assert "--set evaluate.teacher=" in res.stdout
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    sets = [
        *("--set", f"evaluate.teacher={tmp_path / 't.pt'}", "--set", "evaluate.soft_labels=true"),
        *("--set", "evaluate.regimes=[real+classic,real+gan]", "--set", "evaluate.extractor_steps=30"),
        *("--set", "evaluate.classic=[crop]", "--set", "evaluate.synthetic_per_class=12"),
    ]
    res = augment("evaluate", str(run), *sets, *fast, "-q")
    assert res.returncode == 0, res.stderr
    assert "distilled from the teacher" in res.stdout
    summary = json.loads((run / "eval" / "metrics.json").read_text())["downstream"]
    # The same config and seed: the teacher trained on the run's own train split, none of its val or test images.
    assert (
        summary["selection"]["teacher"]["train_split_overlap"]
        == 108
        == summary["selection"]["teacher"]["trained_on_images"]
    )
    assert summary["regimes"]["real+classic"]["images_synthetic"] == 0
    # Another seed splits the digits differently: that teacher trained on images of the run's test split.
    res = augment("teacher", str(cfg), *_sets(tmp_path), *fast, "--set", "seed=1", "--members", "1",
                  "--out", str(tmp_path / "t1.pt"), "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    sets[1] = f"evaluate.teacher={tmp_path / 't1.pt'}"
    res = augment("evaluate", str(run), *sets, *fast, "-q")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert (
        "of the test split's 60 images; train it on images outside the run's validation and test splits" in res.stderr
    )
    res = augment("teacher", str(cfg), *_sets(tmp_path), "--out", str(tmp_path / "t.pt" / "x.pt"), "-q")
    assert res.returncode == 2 and "cannot create output directory" in res.stderr and "Traceback" not in res.stderr
