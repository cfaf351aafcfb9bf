"""benchmarks/teacher.py: a teacher from left-out images, and the run's verdict without and with it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from augment.metrics.teacher import load_teacher
from conftest import copy_run

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import teacher as bench  # noqa: E402


def test_the_teacher_benchmark_evaluates_the_run_without_and_with_a_teacher(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run", "evaluate.classic=['crop']", "evaluate.synthetic_per_class=6",
                   "evaluate.extractor_steps=20", "evaluate.samples_per_class=20")  # fmt: skip
    argv = [str(run), "--out", str(tmp_path / "out"), "--dev-per-class", "6", "--teacher-per-class", "3"]
    argv += ["--members", "2", "--seeds", "2", "--steps", "12", "--workers", "1", "--json", str(tmp_path / "t.json")]
    argv += ["--set", "evaluate.synthetic_per_class=4"]  # both evaluations' pool
    res = bench.main(argv)
    assert json.loads((tmp_path / "t.json").read_text())["comparisons"] == json.loads(json.dumps(res["comparisons"]))
    teacher = load_teacher(tmp_path / "out" / "teacher.pt")
    assert len(teacher.members) == 2 and len(teacher.trained_on) == 9  # 3 left-out images of each of 3 classes
    assert res["teacher"]["selection"]["train_split_overlap"] == 0 and res["teacher"]["rest_of_dev"] == 9
    out = tmp_path / "out"
    metrics = {n: json.loads((out / n / "eval" / "metrics.json").read_text()) for n in ("plain", "teacher")}
    assert [m["config"]["evaluate"]["synthetic_per_class"] for m in metrics.values()] == [4, 4]
    assert res["overrides"] == ["evaluate.synthetic_per_class=4"]
    cells = {name: m["downstream"]["cells"] for name, m in metrics.items()}
    plain_base = [c for c in cells["plain"] if c["regime"] == "real+classic"]
    taught_base = [c for c in cells["teacher"] if c["regime"] == "real+classic"]
    assert all("teacher" not in c for c in cells["plain"])
    assert all(c["teacher"] and c["images_synthetic"] == 0 and c["images_teacher_labelled"] > 0 for c in taught_base)
    # Paired by seed, in points: the teacher alone is the distilled baseline minus the plain one.
    want = [
        100 * (t["balanced_accuracy"] - p["balanced_accuracy"]) for t, p in zip(taught_base, plain_base, strict=True)
    ]
    alone = res["comparisons"]["the teacher alone: distilled baseline vs the classic baseline"]
    assert alone["mean"] == pytest.approx(sum(want) / 2) and alone["n"] == 2
    # real draws neither the pool nor the teacher: the same cells in both runs.
    check = res["comparisons"]["check: real, teacher run vs plain run"]
    assert check["mean"] == 0 and set(check["per_class"].values()) == {0}
    assert "distilled from the teacher" in res["verdicts"]["teacher"]
    assert "distilled" not in res["verdicts"]["plain"]
    assert "| teacher verdict: GAN regime vs the distilled baseline |" in bench.render(res)
