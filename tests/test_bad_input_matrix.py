"""README's bad-input table, row by row, through the real `augment` command (issues #8 and #22).

Every row builds one bad input or fault in ``tmp_path``, runs the command a user would run (default
flags, not ``-q``) and asserts the contract of the README's "Bad input" section: exit code 2; exactly
one non-empty line of output (stdout and stderr together, no traceback, no warning, no progress bar)
that names the file, field or value; and nothing a later run would trust: no file is created or
changed (no ``network-*.pt`` or ``training-state.pt``, no ``generated/`` folder, no
``eval/metrics.json``, no rewritten ``config.yaml``, no tracking store, no hidden ``.partial-``
staging folder). The one exception to "one line": INFO progress records of stages that finished
before the bad input was found (``augment evaluate`` logs the data it loaded, then finds the
checkpoint does not match); ``-q`` drops them.

A few rows are faults the command must recover from (a generation killed by SIGTERM or SIGKILL, a run
name with a space resumed): they expect exit code 0, no traceback, their words in the output, and
files created or changed only inside the folders the command owns (``Bad.owns``).

Full-disk rows mount a small tmpfs (root with CAP_SYS_ADMIN, as in the project's CI container); where
``mount`` is not permitted they skip and say so.

Rows run in this process through typer's CliRunner (one torch import for the whole table) with the
root logger reset, so the command's own ``logging.basicConfig`` prints to the captured stderr exactly
as in a fresh process. Rows for ``augment run`` run as a subprocess: that command's MLflow and Prefect
logging is only honest in a fresh process, and the unreachable-server row is timed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from augment import checkpoint
from augment.generate import MARKER, PARTIAL_INFIX
from conftest import REPO, tiny_config
from flows.cli import app


@dataclass
class Bad:
    """One bad input, built: the command line and what its one line of output must contain."""

    args: list[str]
    expect: list[str]
    process: bool = False  # run as `python -m flows.cli` in a fresh process
    within_s: float | None = None
    code: int = 2  # 0: a fault the command recovers from (then `expect` may span several lines)
    owns: list[Path] = field(default_factory=list)  # where the command may create or change files
    env: dict[str, str] = field(default_factory=dict)  # extra environment of a `process` row
    busy: list[Path] = field(default_factory=list)  # staging folders of another, still running command
    after: Callable[[], None] | None = None  # more checks, once the row's contract holds
    cleanup: Callable[[], None] | None = None  # always run (unmount, end a process the row started)


# --- building blocks --------------------------------------------------------------------------


def _png(path: Path, value: int, size: int = 8, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).convert(mode).save(path)


def _folder(tmp: Path) -> Path:
    """A valid image folder: classes a and b, 6 grayscale 8x8 PNGs each."""
    root = tmp / "imgs"
    for c, name in enumerate("ab"):
        for i in range(6):
            _png(root / name / f"{i}.png", 40 * c + 10 * i)
    return root


def _manifest(tmp: Path, extra: str = "") -> Path:
    """A valid CSV manifest over :func:`_folder`'s images, plus ``extra`` lines (line 14 onwards)."""
    root = _folder(tmp)
    rows = "".join(f"{name}/{i}.png,{name}\n" for name in "ab" for i in range(6))
    (root / "m.csv").write_text("path,label\n" + rows + extra)
    return root / "m.csv"


def _config(tmp: Path, *overrides: str, edit: Callable[[dict], None] | None = None) -> Path:
    """The tiny config (conftest's TINY) plus ``overrides`` as a YAML file; ``edit`` breaks the raw mapping."""
    raw = tiny_config(tmp, *overrides).to_dict()
    if edit is not None:
        edit(raw)
    path = tmp / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _imagefolder_train(tmp: Path, root: Path, *overrides: str, command: str = "train") -> list[str]:
    sets = ["data.source=imagefolder", f"data.root={root}", "data.classes=null", "data.per_class=null"]
    sets += ["data.split.test_per_class=null", *overrides]
    return [command, str(_config(tmp, *sets))]


def _csv_train(tmp: Path, manifest: Path, *overrides: str) -> list[str]:
    sets = ["data.source=csv", f"data.root={manifest}", "data.classes=[a,b]", "data.per_class=null"]
    return ["train", str(_config(tmp, *sets, "data.split.test_per_class=null", *overrides))]


def _run_copy(tmp: Path, tiny_run: Path) -> Path:
    """A private copy of the session's tiny trained run (3 digit classes, 8-channel networks)."""
    return Path(shutil.copytree(tiny_run, tmp / "run"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(REPO)}


def _partials(out: Path) -> list[Path]:
    """The hidden staging folders (``.NAME.partial-*``) of generation into ``out``."""
    return sorted(out.parent.glob(f".{out.name}{PARTIAL_INFIX}*"))


def _generation_caught_mid_run(run: Path, out: Path, per_class: int, stop: signal.Signals) -> subprocess.Popen:
    """A real `augment generate` process, sent ``stop`` once its marked staging folder exists (mid-run)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "generate", str(run), "--per-class", str(per_class), "--out", str(out)],
        cwd=out.parent,
        env=_cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # bytes: text mode would turn a progress bar's carriage returns into newlines
    )
    deadline = time.monotonic() + 120
    while not any((p / MARKER).is_file() for p in _partials(out)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"generation ended or hung before it was caught mid-run: {proc.communicate()}")
        time.sleep(0.01)
    proc.send_signal(stop)
    return proc


def _small_disk(where: Path, size: str) -> Callable[[], None]:
    """Mount a ``size`` tmpfs on ``where`` (a real full disk); returns the unmount. Skips where mount is refused."""
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if res.returncode != 0:
        reason = res.stderr.decode().strip()[:80]
        pytest.skip(f"mount -t tmpfs not permitted here ({reason}): a real full disk needs root with CAP_SYS_ADMIN")

    def unmount() -> None:
        subprocess.run(["umount", "-l", str(where)], check=True)

    return unmount


# --- the rows ---------------------------------------------------------------------------------
# Each builder gets tmp_path and a getter of the session's tiny trained run (trained only when a row
# asks for it) and returns a Bad.

RunGetter = Callable[[], Path]
Builder = Callable[[Path, RunGetter], Bad]


def corrupt_png(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    (root / "a" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return Bad(_imagefolder_train(tmp, root), [f"{root / 'a' / '3.png'}: corrupt or unreadable image"])


def truncated_png(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / "b" / "2.png")
    data = (root / "b" / "2.png").read_bytes()
    (root / "b" / "2.png").write_bytes(data[: len(data) // 2])
    return Bad(_imagefolder_train(tmp, root), [f"{root / 'b' / '2.png'}: corrupt or unreadable image"])


def text_file_in_class(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    (root / "a" / "notes.txt").write_text("labelled by hand on Monday")
    return Bad(_imagefolder_train(tmp, root), [f"{root / 'a' / 'notes.txt'}: not an image file"])


def text_named_jpg(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    (root / "b" / "photo.jpg").write_text("this is not a JPEG")
    return Bad(_imagefolder_train(tmp, root), [f"{root / 'b' / 'photo.jpg'}: corrupt or unreadable image"])


def empty_class_folder(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    (root / "c").mkdir()
    return Bad(_imagefolder_train(tmp, root), [str(root / "c"), "class 'c' is empty"])


def imagefolder_class_not_in_folders(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    args = _imagefolder_train(tmp, root, "data.classes=[a,zebra]")
    return Bad(args, [str(root), "class 'zebra' has no folder"])


def too_few_images_for_limit(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    return Bad(_imagefolder_train(tmp, root, "data.per_class=50"), ["class 'a' has 6 images but the limit asks for 50"])


def too_few_images_for_split(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    args = _imagefolder_train(tmp, root, "data.per_class=2", "data.split.val=0.4", "data.split.test=0.4")
    return Bad(args, ["class 'a' keeps 2 image(s), none left for training"])


def csv_label_not_in_classes(tmp: Path, _: RunGetter) -> Bad:
    manifest = _manifest(tmp, "a/0.png,zebra\n")
    return Bad(_csv_train(tmp, manifest), [f"{manifest} line 14: label 'zebra' is not one of the classes ['a', 'b']"])


def csv_missing_file(tmp: Path, _: RunGetter) -> Bad:
    manifest = _manifest(tmp, "a/missing.png,a\n")
    return Bad(_csv_train(tmp, manifest), [f"{manifest} line 14: file 'a/missing.png' does not exist"])


def csv_relative_path_escapes_root(tmp: Path, _: RunGetter) -> Bad:
    _png(tmp / "outside.png", 7)
    manifest = _manifest(tmp, "../../outside.png,a\n")
    return Bad(_csv_train(tmp, manifest), [f"{manifest} line 14: path '../../outside.png' points outside"])


def csv_absolute_path_outside_root(tmp: Path, _: RunGetter) -> Bad:
    _png(tmp / "outside.png", 7)
    manifest = _manifest(tmp, f"{tmp / 'outside.png'},b\n")
    return Bad(_csv_train(tmp, manifest), [f"{manifest} line 14: path '{tmp / 'outside.png'}' points outside"])


def csv_class_without_images(tmp: Path, _: RunGetter) -> Bad:
    manifest = _manifest(tmp)
    return Bad(_csv_train(tmp, manifest, "data.classes=[a,b,c]"), [f"{manifest}: class 'c' has no images"])


def gray_rgb_mix_without_convert(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    _png(root / "b" / "color.png", 90, mode="RGB")
    expect = f"{root / 'b' / 'color.png'}: image mode RGB but data.channels=1 expects L; set data.convert"
    return Bad(_imagefolder_train(tmp, root, command="inspect-data"), [expect])


def wrong_image_size(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    _png(root / "a" / "big.png", 90, size=16)
    return Bad(_imagefolder_train(tmp, root), [f"{root / 'a' / 'big.png'}: image is 16x16 but data.image_size=8"])


def source_size_differs_from_config(tmp: Path, _: RunGetter) -> Bad:
    return Bad(["inspect-data", str(_config(tmp, "data.image_size=16"))], ["8x8 images", "data.image_size=16"])


def missing_dataset(tmp: Path, _: RunGetter) -> Bad:
    where = tmp / "nowhere"
    args = ["inspect-data", str(_config(tmp, "data.source=fashion_mnist", f"data.root={where}", "data.image_size=28"))]
    return Bad(args, [str(where), "dataset-fashion-mnist"])


def config_unknown_top_level_key(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp, edit=lambda raw: raw.update(trian={"kimg": 1}))
    return Bad(["train", str(path)], [str(path), "unknown field 'trian'"])


def config_unknown_section_key(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp, edit=lambda raw: raw["train"].update(kimgs=1))
    return Bad(["train", str(path)], [str(path), "unknown field 'train.kimgs' (value 1)"])


def config_unknown_key_via_set(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp)
    return Bad(
        ["train", str(path), "--set", "model.zdim=16"], [f"{path} (--set)", "unknown field 'model.zdim' (value 16)"]
    )


def config_string_for_int(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp, edit=lambda raw: raw["train"].update(batch_size="sixty-four"))
    return Bad(["train", str(path)], [str(path), "field 'train.batch_size' has bad value 'sixty-four'"])


def config_negative_kimg(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp, edit=lambda raw: raw["train"].update(kimg=-1))
    return Bad(["train", str(path)], [str(path), "field 'train.kimg' has bad value -1"])


def config_unknown_enum(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp, edit=lambda raw: raw["train"].update(loss="wasserstein"))
    return Bad(["train", str(path)], [str(path), "field 'train.loss' has bad value 'wasserstein'"])


def config_unsupported_image_size(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp, edit=lambda raw: raw["data"].update(image_size=12))
    return Bad(["inspect-data", str(path)], [str(path), "'data.image_size' has bad value 12"])


def config_not_yaml(tmp: Path, _: RunGetter) -> Bad:
    path = tmp / "broken.yaml"
    path.write_text("name: x\ntrain: {kimg: 1\n")
    return Bad(["train", str(path)], [str(path), "not valid YAML"])


def csv_file_listed_twice(tmp: Path, _: RunGetter) -> Bad:
    manifest = _manifest(tmp, "a/2.png,b\n")  # line 14: line 4's file under another label
    return Bad(_csv_train(tmp, manifest), [f"{manifest} lines 4 and 14: file 'a/2.png' is listed under label 'b'"])


def config_infinite_learning_rate(tmp: Path, _: RunGetter) -> Bad:
    return Bad(["train", str(_config(tmp)), "--set", "train.lr_g=.inf"], ["train.lr_g", "inf"])


def config_duplicate_key(tmp: Path, _: RunGetter) -> Bad:
    path = tmp / "twice.yaml"
    path.write_text(_config(tmp).read_text() + "seed: 3\n")  # `seed` again, at the end
    return Bad(["train", str(path)], [str(path), "duplicate key 'seed'"])


def config_file_missing(tmp: Path, _: RunGetter) -> Bad:
    return Bad(["train", str(tmp / "nope.yaml")], [f"{tmp / 'nope.yaml'}: config file not found"])


def evaluate_bad_value_via_set(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    args = ["evaluate", str(run), "--set", "evaluate.seeds=0"]
    return Bad(args, [str(run / "config.yaml"), "field 'evaluate.seeds' has bad value 0"])


def option_out_of_range(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    return Bad(
        ["generate", str(run), "--per-class", "0"], ["Invalid value for '--per-class'", "augment generate --help"]
    )


def unknown_option(tmp: Path, _: RunGetter) -> Bad:
    return Bad(["train", str(_config(tmp)), "--sett", "train.kimg=1"], ["No such option: --sett", "--set"])


def per_class_and_total(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    return Bad(["generate", str(run), "--per-class", "3", "--total", "9"], ["--per-class or --total, not both"])


def _edit_snapshot(run: Path, change: Callable[[dict], None]) -> Path:
    path = run / checkpoint.FINAL_SNAPSHOT
    obj = torch.load(path, map_location="cpu", weights_only=True)
    change(obj)
    torch.save(obj, path)
    return path


def checkpoint_other_architecture_generate(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    path = _edit_snapshot(run, lambda obj: obj["generator_kwargs"].update(width=16))  # trained with 8
    return Bad(["generate", str(run), "--per-class", "2"], [f"{path}: generator weights do not match its architecture"])


def checkpoint_other_architecture_evaluate(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    path = _edit_snapshot(run, lambda obj: obj["generator_kwargs"].update(z_dim=16))  # trained with 8
    return Bad(["evaluate", str(run)], [f"{path}: generator weights do not match its architecture"])


def checkpoint_other_classes_evaluate(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    args = ["evaluate", str(run), "--set", "data.classes=['0','1','3']"]
    expect = f"{run / checkpoint.FINAL_SNAPSHOT}: trained on classes ['0', '1', '2'], the data has"
    return Bad(args, [expect])


def checkpoint_other_classes_resume(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    args = ["train", str(_config(tmp, "data.classes=['0','1','3']")), "--out", str(run), "--resume"]
    return Bad(args, [f"{run / checkpoint.TRAINING_STATE}: trained on classes ['0', '1', '2']"])


def resume_changes_the_architecture(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    args = ["train", str(_config(tmp, "model.g_channels=16", "train.kimg=0.384")), "--out", str(run), "--resume"]
    return Bad(args, [f"{run / checkpoint.TRAINING_STATE}: --resume cannot change model.g_channels (8 -> 16)"])


def resume_changes_the_learning_rate(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    args = ["train", str(_config(tmp)), "--out", str(run), "--resume", "--set", "train.lr_d=0.01"]
    return Bad(args, ["--resume cannot change train.lr_d (0.0002 -> 0.01)", "may change only train.kimg"])


def train_out_is_an_existing_run(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    return Bad(["train", str(_config(tmp)), "--out", str(run)], [f"{run}: holds a training run already", "--resume"])


def checkpoint_with_pickled_object(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    torch.save({"format": checkpoint.SNAPSHOT_FORMAT, "generator": torch.nn.Linear(2, 2)}, run / "network-final.pt")
    return Bad(["generate", str(run)], [f"{run / 'network-final.pt'}: refused to load", "torch.nn.modules.linear"])


def checkpoint_plain_pickle(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (run / "network-final.pt").write_bytes(pickle.dumps({"generator": [1, 2, 3]}))
    return Bad(["generate", str(run)], [f"{run / 'network-final.pt'}: not a readable checkpoint"])


def checkpoint_random_bytes(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (run / "network-final.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return Bad(["generate", str(run)], [f"{run / 'network-final.pt'}: not a readable checkpoint"])


def checkpoint_plain_state_dict(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    torch.save({"weight": torch.zeros(2)}, run / "network-final.pt")
    return Bad(["generate", str(run)], [f"{run / 'network-final.pt'}: expected a {checkpoint.SNAPSHOT_FORMAT}"])


def training_state_random_bytes(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (run / checkpoint.TRAINING_STATE).write_bytes(np.random.default_rng(1).bytes(4096))
    args = ["train", str(run / "config.yaml"), "--out", str(run), "--resume"]  # resume with the run's own config
    return Bad(args, [f"{run / checkpoint.TRAINING_STATE}: not a readable checkpoint"])


def run_without_checkpoint(tmp: Path, _: RunGetter) -> Bad:
    (tmp / "empty-run").mkdir()
    return Bad(["generate", str(tmp / "empty-run")], [f"{tmp / 'empty-run'}: no generator checkpoint"])


def output_root_under_a_file(tmp: Path, _: RunGetter) -> Bad:
    (tmp / "afile").write_text("a regular file, not a folder")
    path = _config(tmp, f"output.root={tmp / 'afile' / 'sub'}")
    return Bad(["train", str(path)], [f"cannot create output directory {tmp / 'afile' / 'sub'}"])


def out_option_under_a_file(tmp: Path, _: RunGetter) -> Bad:
    (tmp / "afile").write_text("a regular file, not a folder")
    return Bad(["train", str(_config(tmp)), "--out", str(tmp / "afile" / "run")], [str(tmp / "afile" / "run")])


def output_dir_read_only(tmp: Path, _: RunGetter) -> Bad:
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return Bad(["train", str(_config(tmp, f"output.root={locked / 'runs'}"))], [str(locked / "runs")])


def generate_out_under_a_file(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (tmp / "afile").write_text("a regular file, not a folder")
    out = tmp / "afile" / "sub" / "generated"
    return Bad(["generate", str(run), "--per-class", "2", "--out", str(out)], [str(tmp / "afile" / "sub")])


# Generation replaces its output folder whole: it must refuse every folder it did not write itself.
def generate_out_is_the_working_directory(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (tmp / "notes.txt").write_text("a user's file")
    return Bad(["generate", str(run), "--per-class", "2", "--out", "."], [str(tmp), "not a folder generate wrote"])


def generate_balance_on_balanced_data(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())  # 36 train images in each of its 3 classes
    return Bad(["generate", str(run)], ["nothing to generate", "balanced already: 36 each", "--per-class N"])


def generate_out_is_a_run_directory(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    return Bad(["generate", str(run), "--per-class", "2", "--out", str(run)], [str(run), "not a folder generate wrote"])


def generate_out_is_a_users_folder(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (tmp / "mine").mkdir()
    (tmp / "mine" / "manifest.csv").write_text("path,label\n")  # a manifest, but also a file of the user's
    (tmp / "mine" / "thesis.tex").write_text("\\documentclass{article}")
    out = tmp / "mine"
    return Bad(["generate", str(run), "--per-class", "2", "--out", str(out)], [str(out), "not a folder generate wrote"])


def generate_out_is_a_symlink(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (tmp / "target").mkdir()
    (tmp / "link").symlink_to(tmp / "target")
    return Bad(["generate", str(run), "--per-class", "2", "--out", str(tmp / "link")], [str(tmp / "link"), "symlink"])


def generate_out_is_a_file(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (tmp / "afile").write_text("a regular file")
    return Bad(
        ["generate", str(run), "--per-class", "2", "--out", str(tmp / "afile")], [str(tmp / "afile"), "is a file"]
    )


def evaluate_output_blocked(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    (run / "eval").write_text("a regular file where the eval folder goes")
    return Bad(["evaluate", str(run)], [str(run / "eval")])


def tracking_store_unwritable(tmp: Path, _: RunGetter) -> Bad:
    (tmp / "afile").write_text("a regular file, not a folder")
    uri = f"sqlite:///{tmp / 'afile' / 'mlruns.db'}"
    return Bad(["run", str(_config(tmp, f"tracking.uri={uri}"))], [f"tracking store {uri}"], process=True)


def tracking_server_unreachable(tmp: Path, _: RunGetter) -> Bad:
    uri = f"http://127.0.0.1:{_free_port()}"
    path = _config(tmp, f"tracking.uri={uri}")
    return Bad(["run", str(path)], [f"MLflow tracking server {uri} is unreachable"], process=True, within_s=15)


# --- faults and leftovers (issue #22) -----------------------------------------------------------


def train_out_is_a_file(tmp: Path, _: RunGetter) -> Bad:
    (tmp / "afile").write_text("a regular file")
    return Bad(["train", str(_config(tmp)), "--out", str(tmp / "afile")], [str(tmp / "afile"), "is a file"])


def train_out_is_a_symlink(tmp: Path, _: RunGetter) -> Bad:
    (tmp / "target").mkdir()
    (tmp / "link").symlink_to(tmp / "target")
    return Bad(["train", str(_config(tmp)), "--out", str(tmp / "link")], [str(tmp / "link"), "symlink"])


def generate_while_another_generates(tmp: Path, tiny_run: RunGetter) -> Bad:
    run, out = _run_copy(tmp, tiny_run()), tmp / "gen"
    first = _generation_caught_mid_run(run, out, 300, signal.SIGSTOP)  # paused while it holds the folder
    busy = _partials(out)
    assert busy, "the first generation finished before it was paused"

    def first_finishes() -> None:  # the refused second one did not disturb the first
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0, first.communicate()
        assert len((out / "manifest.csv").read_text().splitlines()) == 1 + 3 * 300
        assert not _partials(out) and not (tmp / ".gen.lock").exists()

    def end_first() -> None:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
        first.wait(timeout=60)

    args = ["generate", str(run), "--per-class", "2", "--out", str(out)]
    expect = [str(out), "another augment generate is writing"]  # the second, a process of its own too
    return Bad(args, expect, process=True, busy=busy, after=first_finishes, cleanup=end_first)


def _generate_after_a_kill(tmp: Path, tiny_run: RunGetter, sig: signal.Signals) -> Bad:
    run, out = _run_copy(tmp, tiny_run()), tmp / "gen"
    killed = _generation_caught_mid_run(run, out, 2000, sig)
    err = killed.communicate(timeout=120)[1].decode()
    if sig == signal.SIGTERM:  # cleans up after itself: no staging folder, no lock, one line
        assert killed.returncode == 128 + signal.SIGTERM, (killed.returncode, err)
        shown = [line for line in _as_shown(err) if line.strip() and not INFO_RECORD.match(line)]
        assert shown == ["terminated (SIGTERM)"], err  # its progress bar erased first
        assert not _partials(out) and not (tmp / ".gen.lock").exists()
    else:  # SIGKILL: nothing runs, the marked staging folder stays for the next run
        assert killed.returncode == -signal.SIGKILL and len(_partials(out)) == 1
    assert not out.exists()
    args = ["generate", str(run), "--per-class", "2", "--out", str(out)]
    return Bad(args, ["generated 6 images", f"manifest: {out / 'manifest.csv'}"], code=0, owns=[out])


def generate_after_sigterm(tmp: Path, tiny_run: RunGetter) -> Bad:
    return _generate_after_a_kill(tmp, tiny_run, signal.SIGTERM)


def generate_after_sigkill(tmp: Path, tiny_run: RunGetter) -> Bad:
    return _generate_after_a_kill(tmp, tiny_run, signal.SIGKILL)


def dask_address_unreachable(tmp: Path, tiny_run: RunGetter) -> Bad:
    run, address = _run_copy(tmp, tiny_run()), f"tcp://127.0.0.1:{_free_port()}"
    args = ["generate", str(run), "--per-class", "2", "--out", str(tmp / "gen"), "--dask-address", address]
    return Bad(args, [f"Dask scheduler {address} is unreachable"], within_s=10)


def dask_address_malformed(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    args = ["generate", str(run), "--per-class", "2", "--dask-address", "tcp://scheduler"]
    return Bad(args, ["'tcp://scheduler' is malformed", "tcp://HOST:PORT"], within_s=10)


def config_dask_address_unreachable(tmp: Path, _: RunGetter) -> Bad:
    address = f"tcp://127.0.0.1:{_free_port()}"
    path = _config(tmp, f"evaluate.dask_address={address}")
    return Bad(["run", str(path)], [f"Dask scheduler {address} is unreachable"], process=True, within_s=30)


def run_tracking_uri_malformed(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp)
    args = ["run", str(path), "--set", "tracking.uri=sqlite://mlruns.db"]  # two slashes
    return Bad(args, [str(path), "tracking.uri", "sqlite://mlruns.db", "three slashes"], process=True)


def run_tracking_uri_malformed_in_environment(tmp: Path, _: RunGetter) -> Bad:
    env = {"MLFLOW_TRACKING_URI": "htp://127.0.0.1:5000"}
    return Bad(["run", str(_config(tmp))], ["'htp://127.0.0.1:5000'", "MLFLOW_TRACKING_URI"], process=True, env=env)


def evaluate_teacher_missing(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    args = [
        "evaluate",
        str(run),
        "--set",
        f"evaluate.teacher={tmp / 'teacher.pt'}",
        "--set",
        "evaluate.soft_labels=true",
    ]
    return Bad(args, [f"{tmp / 'teacher.pt'}: checkpoint not found"])


def run_teacher_saw_the_test_split(tmp: Path, _: RunGetter) -> Bad:
    """A teacher trained on the run's test images: `augment run` refuses it before it trains anything."""
    from augment.data import load_data
    from augment.metrics.classifier_training import TrainSpec
    from augment.metrics.teacher import save_teacher, train_teacher

    cfg = tiny_config(tmp)
    test = load_data(cfg.data, cfg.seed).test
    spec = TrainSpec(class_names=cfg.data.classes, train_images=test.images, train_labels=test.labels, steps=2)
    save_teacher(tmp / "teacher.pt", train_teacher(spec, [0]), "smallcnn", spec.class_names, test.images)
    path = _config(tmp, f"evaluate.teacher={tmp / 'teacher.pt'}", "evaluate.soft_labels=true")
    return Bad(["run", str(path)], [f"{tmp / 'teacher.pt'} trained on 60 of the test split's 60 images"], process=True)


def compare_tracking_uri_malformed(tmp: Path, _: RunGetter) -> Bad:
    return Bad(["compare", "--uri", "http://[::1:5000"], ["tracking URI 'http://[::1:5000' is malformed"])


def compare_tracking_uri_a_plain_path(tmp: Path, _: RunGetter) -> Bad:
    return Bad(["compare", "--uri", "my runs"], ["tracking URI 'my runs' is malformed", "sqlite:///"])


def compare_csv_into_a_missing_folder(tmp: Path, _: RunGetter) -> Bad:
    csv = tmp / "reports" / "compare.csv"
    args = ["compare", "--uri", f"sqlite:///{tmp / 'mlruns.db'}", "--csv", str(csv)]
    return Bad(args, [str(csv), f"folder {tmp / 'reports'} does not exist"])


def serve_bad_cron(tmp: Path, _: RunGetter) -> Bad:
    return Bad(["serve", str(_config(tmp)), "--cron", "61 * * * *"], ["--cron '61 * * * *'", "not a valid cron"])


def serve_bad_timezone(tmp: Path, _: RunGetter) -> Bad:
    args = ["serve", str(_config(tmp)), "--cron", "0 3 * * *", "--timezone", "Mars/Olympus"]
    return Bad(args, ["--timezone 'Mars/Olympus'", "IANA time zone"])


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A 1-bit ``side`` x ``side`` PNG of zeros: 400 M pixels in about 50 kB (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, z = b"\0" * (1 + side // 8), zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def decompression_bomb_png(tmp: Path, _: RunGetter) -> Bad:
    root = _folder(tmp)
    _bomb_png(root / "a" / "huge.png")
    assert (root / "a" / "huge.png").stat().st_size < 100_000
    expect = [f"{root / 'a' / 'huge.png'}: image of 400000000 pixels is over the data limit", "decompression bomb"]
    return Bad(_imagefolder_train(tmp, root), expect)


def disk_full_during_train(tmp: Path, _: RunGetter) -> Bad:
    unmount = _small_disk(tmp / "small", "32k")  # config.yaml fits, the first 30 kB snapshot does not
    out = tmp / "small" / "run"
    return Bad(["train", str(_config(tmp)), "--out", str(out)], [f"no space left on device: {out}"], cleanup=unmount)


def disk_full_during_generate(tmp: Path, tiny_run: RunGetter) -> Bad:
    run = _run_copy(tmp, tiny_run())
    unmount = _small_disk(tmp / "small", "64k")  # 16 pages: 120 PNGs do not fit
    out = tmp / "small" / "gen"
    args = ["generate", str(run), "--per-class", "40", "--out", str(out)]
    return Bad(args, [f"no space left on device: {out}"], cleanup=unmount)


def run_name_with_a_space_then_resume(tmp: Path, _: RunGetter) -> Bad:
    path = _config(tmp, "name=my run")
    code, output = _invoke_in_process(["train", str(path), "-q"])
    assert code == 0 and (tmp / "runs" / "00000-my-run" / checkpoint.TRAINING_STATE).is_file(), output
    run = tmp / "runs" / "00000-my-run"
    args = ["train", str(path), "--resume", "--set", "train.kimg=0.384"]
    return Bad(args, [f"run directory: {run}", f"generator: {run / checkpoint.FINAL_SNAPSHOT}"], code=0, owns=[run])


def config_error_at_train_time(tmp: Path, _: RunGetter) -> Bad:
    """A value only training reaches (the extractor cache of train.eval_kimg) fails after the run folder exists."""
    (tmp / "afile").write_text("a regular file, not a folder")
    cache = tmp / "afile" / "cache"
    sets = ["train.eval_kimg=0.128", "evaluate.extractor_steps=1", f"evaluate.cache_dir={cache}"]
    return Bad(["train", str(_config(tmp, *sets))], [str(cache)])


_ROOT = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (the under-a-file rows cover it)")

ROWS = [
    # image folders
    pytest.param(corrupt_png, id="corrupt-png"),
    pytest.param(truncated_png, id="truncated-png"),
    pytest.param(text_file_in_class, id="non-image-file-in-class"),
    pytest.param(text_named_jpg, id="text-file-named-jpg"),
    pytest.param(empty_class_folder, id="empty-class-folder"),
    pytest.param(imagefolder_class_not_in_folders, id="imagefolder-class-list-names-missing-class"),
    pytest.param(too_few_images_for_limit, id="class-too-small-for-limit"),
    pytest.param(too_few_images_for_split, id="class-too-small-for-split"),
    pytest.param(gray_rgb_mix_without_convert, id="gray-rgb-mix-without-convert"),
    pytest.param(wrong_image_size, id="wrong-image-size"),
    pytest.param(source_size_differs_from_config, id="source-size-differs-from-config"),
    pytest.param(missing_dataset, id="missing-dataset"),
    # CSV manifests
    pytest.param(csv_label_not_in_classes, id="csv-label-outside-class-list"),
    pytest.param(csv_missing_file, id="csv-missing-file"),
    pytest.param(csv_relative_path_escapes_root, id="csv-path-escapes-root"),
    pytest.param(csv_absolute_path_outside_root, id="csv-absolute-path-outside-root"),
    pytest.param(csv_class_without_images, id="csv-class-without-images"),
    # config files, --set and options
    pytest.param(config_unknown_top_level_key, id="config-unknown-top-level-key"),
    pytest.param(config_unknown_section_key, id="config-unknown-section-key"),
    pytest.param(config_unknown_key_via_set, id="config-unknown-key-via-set"),
    pytest.param(config_string_for_int, id="config-string-for-int"),
    pytest.param(config_negative_kimg, id="config-negative-kimg"),
    pytest.param(config_unknown_enum, id="config-unknown-enum"),
    pytest.param(config_unsupported_image_size, id="config-unsupported-image-size"),
    pytest.param(config_not_yaml, id="config-not-yaml"),
    pytest.param(config_file_missing, id="config-file-missing"),
    pytest.param(csv_file_listed_twice, id="csv-file-listed-twice"),
    pytest.param(config_infinite_learning_rate, id="config-infinite-learning-rate"),
    pytest.param(config_duplicate_key, id="config-duplicate-key"),
    pytest.param(evaluate_bad_value_via_set, id="evaluate-bad-value-via-set"),
    pytest.param(option_out_of_range, id="option-out-of-range"),
    pytest.param(unknown_option, id="unknown-option"),
    pytest.param(per_class_and_total, id="generate-per-class-and-total"),
    # checkpoints
    pytest.param(checkpoint_other_architecture_generate, id="checkpoint-other-architecture-generate"),
    pytest.param(checkpoint_other_architecture_evaluate, id="checkpoint-other-architecture-evaluate"),
    pytest.param(checkpoint_other_classes_evaluate, id="checkpoint-other-classes-evaluate"),
    pytest.param(checkpoint_other_classes_resume, id="checkpoint-other-classes-resume"),
    pytest.param(resume_changes_the_architecture, id="resume-changes-the-architecture"),
    pytest.param(resume_changes_the_learning_rate, id="resume-changes-the-learning-rate"),
    pytest.param(train_out_is_an_existing_run, id="train-out-is-an-existing-run"),
    pytest.param(checkpoint_with_pickled_object, id="checkpoint-with-pickled-object"),
    pytest.param(checkpoint_plain_pickle, id="checkpoint-plain-pickle"),
    pytest.param(checkpoint_random_bytes, id="checkpoint-random-bytes"),
    pytest.param(checkpoint_plain_state_dict, id="checkpoint-plain-state-dict"),
    pytest.param(training_state_random_bytes, id="training-state-random-bytes"),
    pytest.param(run_without_checkpoint, id="run-without-checkpoint"),
    # output locations
    pytest.param(output_root_under_a_file, id="output-root-under-a-file"),
    pytest.param(out_option_under_a_file, id="out-option-under-a-file"),
    pytest.param(output_dir_read_only, id="output-dir-read-only", marks=_ROOT),
    pytest.param(generate_out_under_a_file, id="generate-out-under-a-file"),
    pytest.param(generate_out_is_the_working_directory, id="generate-out-is-the-working-directory"),
    pytest.param(generate_balance_on_balanced_data, id="generate-balance-on-balanced-data"),
    pytest.param(generate_out_is_a_run_directory, id="generate-out-is-a-run-directory"),
    pytest.param(generate_out_is_a_users_folder, id="generate-out-is-a-users-folder"),
    pytest.param(generate_out_is_a_symlink, id="generate-out-is-a-symlink"),
    pytest.param(generate_out_is_a_file, id="generate-out-is-a-file"),
    pytest.param(evaluate_output_blocked, id="evaluate-output-blocked"),
    # tracking
    pytest.param(tracking_store_unwritable, id="tracking-store-unwritable"),
    pytest.param(tracking_server_unreachable, id="tracking-server-unreachable"),
    # faults and leftovers (issue #22)
    pytest.param(train_out_is_a_file, id="train-out-is-a-file"),
    pytest.param(train_out_is_a_symlink, id="train-out-is-a-symlink"),
    pytest.param(generate_while_another_generates, id="generate-while-another-generates"),
    pytest.param(generate_after_sigterm, id="generate-after-a-sigterm-d-generation"),
    pytest.param(generate_after_sigkill, id="generate-after-a-sigkill-ed-generation"),
    pytest.param(dask_address_unreachable, id="dask-address-unreachable"),
    pytest.param(dask_address_malformed, id="dask-address-malformed"),
    pytest.param(config_dask_address_unreachable, id="config-dask-address-unreachable"),
    pytest.param(run_tracking_uri_malformed, id="run-tracking-uri-malformed"),
    pytest.param(run_tracking_uri_malformed_in_environment, id="run-tracking-uri-malformed-in-environment"),
    pytest.param(evaluate_teacher_missing, id="evaluate-teacher-missing"),
    pytest.param(run_teacher_saw_the_test_split, id="run-teacher-saw-the-test-split"),
    pytest.param(compare_tracking_uri_malformed, id="compare-tracking-uri-malformed"),
    pytest.param(compare_tracking_uri_a_plain_path, id="compare-tracking-uri-a-plain-path"),
    pytest.param(compare_csv_into_a_missing_folder, id="compare-csv-into-a-missing-folder"),
    pytest.param(serve_bad_cron, id="serve-bad-cron"),
    pytest.param(serve_bad_timezone, id="serve-bad-timezone"),
    pytest.param(decompression_bomb_png, id="decompression-bomb-png"),
    pytest.param(disk_full_during_train, id="disk-full-during-train"),
    pytest.param(disk_full_during_generate, id="disk-full-during-generate"),
    pytest.param(run_name_with_a_space_then_resume, id="run-name-with-a-space-then-resume"),
    pytest.param(config_error_at_train_time, id="config-error-at-train-time"),
]


# --- running a row ----------------------------------------------------------------------------


def _invoke_in_process(args: list[str]) -> tuple[int, str]:
    """`augment ARGS` through CliRunner, with the logging and warnings a fresh process would have."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()  # so the command's logging.basicConfig writes to the captured stderr
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)  # Python's defaults outside __main__
            result = CliRunner().invoke(app, args)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    output = result.output + "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += "Traceback (in process):\n" + "".join(traceback.format_exception(result.exception))
    return result.exit_code, output


def _invoke_process(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    env = _cli_env() | (env or {})
    res = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, cwd=cwd, env=env, timeout=120)
    return res.returncode, (res.stdout + res.stderr).decode()  # bytes: carriage returns kept, as a terminal gets them


# A record of the CLI's logging format (flows/cli.py:_setup_logging) at INFO level: progress, not an error.
INFO_RECORD = re.compile(r"^\d\d:\d\d:\d\d INFO [\w.]+: ")


def _as_shown(output: str) -> list[str]:
    """The lines a terminal shows: a progress bar redraws its line after each carriage return, and a bar
    erased before the error (``"\\r   \\r"``) leaves nothing; one left drawn shares the error's line."""
    return [line.rsplit("\r", 1)[-1] for line in output.split("\n")]


def _files(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a hash of its bytes (an identical rewrite is no change)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("build", ROWS)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_to_trust(
    build: Builder, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory lands under tmp_path
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would override tracking.uri
    bad = build(tmp_path, lambda: request.getfixturevalue("tiny_run"))
    try:
        _check_row(bad, tmp_path)
    finally:
        if bad.cleanup is not None:
            bad.cleanup()


def _check_row(bad: Bad, tmp_path: Path) -> None:
    before = _files(tmp_path)

    start = time.time()
    if bad.process:
        code, output = _invoke_process(bad.args, tmp_path, bad.env)
    else:
        code, output = _invoke_in_process(bad.args)
    elapsed = time.time() - start

    lines = [line for line in _as_shown(output) if line.strip() and not INFO_RECORD.match(line)]
    if bad.code == 2:
        assert code == 2 and len(lines) == 1, f"exit code {code}, {len(lines)} lines:\n{output}"
        assert lines[0].startswith("error: ") and "Traceback" not in output, output
        for part in bad.expect:
            assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    else:
        assert code == bad.code and "Traceback" not in output and "error" not in output.lower(), output
        for part in bad.expect:
            assert part in output, f"{part!r} not in {output!r}"
    if bad.within_s is not None:
        assert elapsed < bad.within_s, f"took {elapsed:.1f} s"

    # Nothing a later run would trust: no file created or changed (checkpoints, generated/, eval/,
    # config.yaml of an existing run, a tracking store) outside the folders the command owns; at most
    # empty folders; no hidden staging folder but those of a command still running.
    after = _files(tmp_path)
    created = sorted(set(after) - set(before))
    changed = sorted(p for p in set(after) & set(before) if after[p] != before[p])
    owned = [str(p.relative_to(tmp_path)) for p in bad.owns]
    outside = [p for p in created + changed if not any(Path(p).is_relative_to(o) for o in owned)]
    assert not outside, f"created {created}, changed {changed}"
    partials = [p for p in tmp_path.rglob("*") if p.is_dir() and PARTIAL_INFIX in p.name]
    assert sorted(partials) == sorted(bad.busy), partials
    if bad.after is not None:
        bad.after()


@pytest.mark.parametrize(
    ("make", "classes"),
    [
        (lambda tmp: _imagefolder_train(tmp, _folder(tmp))[1], ["a", "b"]),
        (lambda tmp: _csv_train(tmp, _manifest(tmp))[1], ["a", "b"]),
        (lambda tmp: str(_config(tmp)), ["0", "1", "2"]),
    ],
    ids=["imagefolder", "csv-manifest", "tiny-config"],
)
def test_the_rows_start_from_good_inputs(make: Callable[[Path], str], classes: list[str], tmp_path: Path) -> None:
    """The folder, manifest and config the rows break are accepted as they are: each row fails for its own reason."""
    code, output = _invoke_in_process(["inspect-data", make(tmp_path), "--json"])
    assert code == 0, output
    summary = json.loads(output)
    assert summary["class_names"] == classes and all(n > 0 for n in summary["counts"]["train"].values())
