"""Reliability: SIGKILL at random points and resume, fuzzed configs and manifests, safe loading."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from augment import checkpoint
from augment.config import Config, DataConfig, load_config
from augment.data import load_data
from augment.errors import AugmentError, ConfigError, DataError
from conftest import REPO, TINY

KILL_SEED = 1234
KILL_POINTS = 3


def _train_cmd(run_dir: Path, resume: bool) -> list[str]:
    sets = [*TINY, "train.kimg=3.2", "train.snapshot_kimg=0.064", "train.threads=1"]
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "train",
        str(REPO / "configs" / "digits.yaml"),
        "--out",
        str(run_dir),
        "-q",
    ]
    for item in sets:
        cmd += ["--set", item]
    return cmd + (["--resume"] if resume else [])


def _all_checkpoints_readable(run_dir: Path) -> int:
    n = 0
    for path in run_dir.glob("*.pt"):
        fmt = checkpoint.STATE_FORMAT if path.name == checkpoint.TRAINING_STATE else checkpoint.SNAPSHOT_FORMAT
        checkpoint.load(path, fmt)  # raises CheckpointError on a torn file
        n += 1
    return n


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    ref = tmp_path / "reference"
    subprocess.run(_train_cmd(ref, resume=False), check=True, env=env, cwd=REPO, timeout=600, capture_output=True)

    run = tmp_path / "killed"
    rng = random.Random(KILL_SEED)
    survived = []
    for point in range(KILL_POINTS):
        resume = (run / checkpoint.TRAINING_STATE).is_file()
        proc = subprocess.Popen(
            _train_cmd(run, resume), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # wait until training has made 1-4 new snapshots, then kill at a random moment
        start = checkpoint.load(run / checkpoint.TRAINING_STATE)["cur_nimg"] if resume else 0
        before = start + 64 * rng.randint(1, 4) - 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            state = run / checkpoint.TRAINING_STATE
            if state.is_file():
                try:
                    if checkpoint.load(state)["cur_nimg"] > before:
                        break
                except AugmentError:
                    pass  # being replaced right now: rename is atomic, so retry
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        n = _all_checkpoints_readable(run)
        survived.append((point, proc.returncode, checkpoint.load(run / checkpoint.TRAINING_STATE)["cur_nimg"], n))
    # finish the run
    res = subprocess.run(_train_cmd(run, resume=True), env=env, cwd=REPO, timeout=600, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert all(rc == -signal.SIGKILL for _, rc, _, _ in survived), survived  # every point was a real kill
    a = checkpoint.load(ref / checkpoint.TRAINING_STATE)
    b = checkpoint.load(run / checkpoint.TRAINING_STATE)
    assert a["cur_nimg"] == b["cur_nimg"]
    for part in ("G", "D", "G_ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    ema_a = checkpoint.load_snapshot(ref / checkpoint.FINAL_SNAPSHOT).generator_state
    ema_b = checkpoint.load_snapshot(run / checkpoint.FINAL_SNAPSHOT).generator_state
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


# --- what the tool may delete, SIGTERM --------------------------------------------------------


def test_next_generation_removes_only_marked_staging_folders_of_its_output(tiny_run: Path, tmp_path: Path) -> None:
    from augment.generate import MARKER, write_samples

    def staging(name: str, *files: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for f in files:
            (folder / f).write_text("x")
        return folder

    killed = staging(".gen.partial-killed1", MARKER, "manifest.csv")  # SIGKILL'd mid-run: marked
    empty = staging(".gen.partial-killed2")  # SIGKILL'd between mkdtemp and the marker
    users = staging(".gen.partial-mine", "thesis.tex")  # the user's own, named alike: no marker
    other = staging(".other.partial-killed3", MARKER)  # another output folder's: not this run's business
    write_samples(checkpoint.load_snapshot(tiny_run / checkpoint.FINAL_SNAPSHOT), tmp_path / "gen", [1, 1, 1])
    assert not killed.exists() and not empty.exists()
    assert (users / "thesis.tex").is_file() and (other / MARKER).is_file()
    assert not (tmp_path / ".gen.lock").exists()  # the lock file lives only while a generation runs

    (tmp_path / ".mine.lock").write_text("a file of the user's that bears a lock's name")
    with pytest.raises(AugmentError, match="is not generate's lock file"):
        write_samples(checkpoint.load_snapshot(tiny_run / checkpoint.FINAL_SNAPSHOT), tmp_path / "mine", [1, 1, 1])
    assert (tmp_path / ".mine.lock").read_text().startswith("a file of the user's") and not (tmp_path / "mine").exists()


def test_failed_train_removes_only_what_it_added(tmp_path: Path) -> None:
    from augment import rundir
    from augment.config import save_config
    from conftest import tiny_config

    cfg = tiny_config(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(ConfigError), rundir.claim_run_dir(cfg, mine) as run_dir:
        save_config(cfg, run_dir / rundir.CONFIG)
        (run_dir / rundir.CACHE).mkdir()
        raise ConfigError("a value only training reaches")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    with pytest.raises(ConfigError), rundir.claim_run_dir(cfg) as run_dir:  # a new numbered folder
        save_config(cfg, run_dir / rundir.CONFIG)
        raise ConfigError("a value only training reaches")
    assert list((tmp_path / "runs").iterdir()) == []

    with pytest.raises(KeyboardInterrupt), rundir.claim_run_dir(cfg, tmp_path / "kept") as run_dir:
        (run_dir / rundir.snapshot_name(0)).write_bytes(b"a complete snapshot")  # resumable: kept
        raise KeyboardInterrupt
    assert (tmp_path / "kept" / rundir.snapshot_name(0)).is_file()


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_during_train_leaves_no_folder_before_a_checkpoint_and_resumes_after(tmp_path: Path) -> None:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    # Before the first checkpoint (one snapshot, at the end of 50 kimg): the run folder goes.
    early = tmp_path / "early"
    cmd = _train_cmd(early, resume=False) + ["--set", "train.kimg=50", "--set", "train.snapshot_kimg=50"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(early / "config.yaml", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and err.strip() == "terminated (SIGTERM)", err
    assert not early.exists()

    # After one: the folder stays with complete checkpoints only, and --resume finishes the run.
    run, short = tmp_path / "run", ["--set", "train.kimg=0.64"]
    proc = subprocess.Popen(_train_cmd(run, resume=False) + short, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    _wait_for(run / checkpoint.TRAINING_STATE, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and err.strip() == "terminated (SIGTERM)", err
    assert _all_checkpoints_readable(run) >= 2 and not list(run.glob(".*.tmp"))
    res = subprocess.run(
        _train_cmd(run, resume=True) + short, env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    assert checkpoint.load(run / checkpoint.TRAINING_STATE)["cur_nimg"] == 640


# --- fuzzing ----------------------------------------------------------------------------------

_KEYS = [
    "name",
    "seed",
    "data",
    "model",
    "train",
    "generate",
    "evaluate",
    "tracking",
    "output",
    "source",
    "image_size",
    "channels",
    "per_class",
    "kimg",
    "batch_size",
    "loss",
    "diffaug",
    "split",
    "val",
    "test",
    "imbalance",
    "ratio",
    "bogus",
    "z_dim",
    "target",
    "root",
    "classes",
    "uri",
    "dask_address",
]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["hinge", "digits", "balance", "auto", "cpu", "[1, 2]", "1e-3", "sqlite://x.db", "tcp://h:99999"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6))
def test_fuzzed_config_is_valid_or_one_line_error(tmp_path: Path, raw: dict) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        cfg = load_config(path)
    except ConfigError as err:
        msg = str(err)
        assert msg.startswith(str(path)) and "\n" not in msg
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.text(max_size=30), max_size=3))
def test_fuzzed_overrides_are_valid_or_one_line_error(overrides: list[str]) -> None:
    try:
        load_config(REPO / "configs" / "digits.yaml", overrides)
    except ConfigError as err:
        assert "\n" not in str(err)


_cells = st.one_of(
    st.sampled_from(["a/0.png", "b/0.png", "a/1.png", "../x.png", "/etc/passwd", "a", "b", "c", ""]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.sampled_from(["path,label", "label,path", "path", "", "path,label,extra"]),
    rows=st.lists(st.lists(_cells, min_size=0, max_size=3), max_size=6),
    quote=st.booleans(),
)
def test_fuzzed_manifest_is_loaded_or_one_line_error(tmp_path: Path, header: str, rows: list, quote: bool) -> None:
    import numpy as np
    from PIL import Image

    root = tmp_path / "m"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(root / name / f"{i}.png")
    text = header + "\n" + "\n".join(",".join(f'"{c}"' if quote else c for c in row) for row in rows)
    (root / "manifest.csv").write_text(text)
    try:
        data = load_data(DataConfig(source="csv", root=root / "manifest.csv", split={"val": 0.0, "test": 0.0}), 0)
    except DataError as err:
        assert "\n" not in str(err)
    except ConfigError as err:
        assert "\n" not in str(err)
    else:
        import csv

        labels = {row[1].strip() for row in csv.reader(text.splitlines()[1:]) if len(row) >= 2}
        assert len(data.train) >= 1 and set(data.class_names) <= labels


# --- safe loading -----------------------------------------------------------------------------


def test_every_torch_load_uses_weights_only() -> None:
    offenders = []
    for path in [*REPO.joinpath("augment").rglob("*.py"), *REPO.joinpath("flows").rglob("*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}")
    assert offenders == []


@pytest.fixture(scope="module")
def snapshot_bytes(tiny_run: Path) -> bytes:
    return (tiny_run / "network-final.pt").read_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=2048),  # empty, tiny and random files
        st.tuples(st.integers(0, 1 << 20), st.integers(0, 255), st.integers(0, 1 << 20)),  # a damaged snapshot
    )
)
def test_fuzzed_checkpoint_bytes_load_or_give_one_line(tmp_path: Path, snapshot_bytes: bytes, data) -> None:
    from augment.checkpoint import load_snapshot
    from augment.errors import CheckpointError

    if isinstance(data, tuple):  # a real snapshot, cut short and with one byte changed
        cut, value, where = data
        raw = bytearray(snapshot_bytes[: cut % (len(snapshot_bytes) + 1)])
        if raw:
            raw[where % len(raw)] = value
        data = bytes(raw)
    path = tmp_path / "network-final.pt"
    path.write_bytes(data)
    try:
        load_snapshot(path)
    except CheckpointError as err:
        message = str(err)
        assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 400
