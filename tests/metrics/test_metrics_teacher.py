"""``evaluate.teacher``: a user's classifier labels the synthetic images, and the baseline is distilled the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from augment import checkpoint
from augment.errors import CheckpointError, ConfigError
from augment.metrics import classifier_training as training
from augment.metrics import stacked
from augment.metrics.downstream import prepare, run_cell
from augment.metrics.regimes import BASELINE
from augment.metrics.teacher import TEACHER_FORMAT, image_digests, load_teacher, save_teacher, train_teacher
from test_metrics_downstream import ev, make_data, synthetic, untimed


def teacher_file(tmp_path: Path, images: torch.Tensor, labels: torch.Tensor, members: int = 2) -> Path:
    """A teacher of ``members`` SmallCNNs trained on ``images`` (8x8, 3 classes), written to tmp_path."""
    spec = training.TrainSpec(
        class_names=["0", "1", "2"], train_images=images, train_labels=labels, steps=8, batch_size=8, classic="crop"
    )
    path = tmp_path / "teacher.pt"
    save_teacher(path, train_teacher(spec, range(members)), "smallcnn", spec.class_names, images, {"note": "test"})
    return path


@pytest.fixture
def extra(tmp_path: Path) -> Path:
    """A teacher trained on labelled images outside the run's splits (another draw of the same classes)."""
    more = make_data(n_train=30, seed=7).train
    return teacher_file(tmp_path, more.images, more.labels)


def test_a_teacher_file_loads_with_weights_only_and_averages_its_members(extra: Path) -> None:
    raw = torch.load(extra, map_location="cpu", weights_only=True)  # plain tensors and strings only
    assert raw["format"] == TEACHER_FORMAT and len(raw["members"]) == 2 and raw["info"] == {"note": "test"}
    teacher = load_teacher(extra)
    x = make_data(seed=3).test.images
    models = teacher.models()
    want = (training.predict_proba(models[0], x) + training.predict_proba(models[1], x)) / 2
    torch.testing.assert_close(teacher.probs(x), want)
    assert not torch.allclose(training.predict_proba(models[0], x), training.predict_proba(models[1], x))
    more = make_data(n_train=30, seed=7).train.images
    assert teacher.overlap(more) == 30 and teacher.overlap(x) == 0
    assert image_digests(more[:1]) == image_digests(more[:1].clone()) != image_digests(more[1:2])


def test_a_missing_foreign_or_mismatched_teacher_is_one_clear_error(extra: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "nope.pt")
    checkpoint.save({"format": "gan-augment/snapshot/v1", "generator": {}}, tmp_path / "snap.pt")
    with pytest.raises(CheckpointError, match="expected a gan-augment/teacher/v1 checkpoint"):
        load_teacher(tmp_path / "snap.pt")
    raw = torch.load(extra, weights_only=True)
    checkpoint.save({**raw, "members": []}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="without classifier weights"):
        load_teacher(tmp_path / "empty.pt")
    checkpoint.save({**raw, "image_size": 16}, tmp_path / "big.pt")
    with pytest.raises(CheckpointError, match="member 0 does not fit a smallcnn"):
        load_teacher(tmp_path / "big.pt").models()
    data, pool = make_data(), synthetic()
    checkpoint.save({**raw, "class_names": ["a", "b", "c"]}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"has classes \['a', 'b', 'c'\], the data \['0', '1', '2'\]"):
        prepare(data, *pool, ev(teacher=tmp_path / "other.pt", soft_labels=True))


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_teacher_that_trained_on_the_runs_val_or_test_images_is_refused(split: str, tmp_path: Path) -> None:
    data = make_data()
    part = getattr(data, split)
    images = torch.cat([make_data(seed=7).train.images, part.images[:2]])
    labels = torch.cat([make_data(seed=7).train.labels, part.labels[:2]])
    path = teacher_file(tmp_path, images, labels, members=1)
    name = {"val": "validation", "test": "test"}[split]
    with pytest.raises(ConfigError, match=rf"trained on 2 of the {name} split's {len(part)} images"):
        prepare(data, *synthetic(), ev(teacher=path, soft_labels=True))


def test_the_teacher_labels_the_pool_and_the_baseline_trains_on_the_same_share_of_teacher_labelled_real_images(
    extra: Path,
) -> None:
    data, pool = make_data(), synthetic()
    cfg = ev(teacher=extra, soft_labels=True, steps=6)
    plan = prepare(data, *pool, cfg)
    teacher = load_teacher(extra)
    torch.testing.assert_close(plan.synthetic_probs, teacher.probs(pool[0]))
    torch.testing.assert_close(plan.teacher_train_probs, teacher.probs(data.train.images))
    assert plan.selection["filter"]["trained_on"] == "teacher"
    assert (
        plan.selection["teacher"]["trained_on_images"] == 30 and plan.selection["teacher"]["train_split_overlap"] == 0
    )

    base = run_cell(plan, BASELINE, 0)
    # The matched control by hand: real+gan+classic with the train images as its pool, against the teacher.
    control = dataclasses.replace(
        plan,
        synthetic_images=data.train.images,
        synthetic_labels=data.train.labels,
        synthetic_probs=plan.teacher_train_probs,
        teacher_train_probs=None,
    )
    hand = run_cell(control, "real+gan+classic", 0)
    assert base["confusion"] == hand["confusion"] and base["per_class_recall"] == hand["per_class_recall"]
    assert base["images_real"] == 6 * 8 and base["images_synthetic"] == 0 and base["images_teacher_labelled"] == 4 * 6
    assert base["teacher"] is True and run_cell(plan, "real", 0)["teacher"] is False
    assert run_cell(plan, "real+gan+classic", 0)["teacher"] is True

    # The stacked grid trains the distilled baseline from the same draws as the lone cell.
    rows = stacked.fit_score_many([(plan, BASELINE, 0, "test"), (plan, "real+gan+classic", 0, "test")])
    assert untimed(rows[0]) == untimed(base)

    # Regimes without the teacher's labels are those of a run without a teacher, bit for bit.
    plain = prepare(data, *pool, ev(steps=6))
    real_with, real_without = untimed(run_cell(plan, "real", 0)), untimed(run_cell(plain, "real", 0))
    assert real_with.pop("teacher") is False and real_with == real_without
    assert "teacher" not in untimed(run_cell(plain, BASELINE, 0))


def test_the_report_and_verdict_name_the_teacher(extra: Path) -> None:
    from augment.metrics.report import _downstream_lines
    from augment.metrics.verdict import summarize

    data = make_data()
    plan = prepare(data, *synthetic(), ev(teacher=extra, soft_labels=True, regimes=["real+classic", "real+gan"]))
    summary = summarize(plan, [run_cell(plan, r, s) for r in plan.regimes for s in plan.seeds])
    assert "distilled from the teacher" in summary["verdict"]["text"]
    text = "\n".join(_downstream_lines(summary))
    assert "soft labels: on (the teacher's probabilities)" in text
    assert f"Teacher: `{extra}` (2 x smallcnn, trained on 30 images, 0 of them in this run's train split" in text


def test_a_teacher_needs_soft_labels_and_joint_batchnorm() -> None:
    with pytest.raises(ValueError, match="set soft_labels: true"):
        ev(teacher="t.pt")
    with pytest.raises(ValueError, match=r"tune_soft_labels: \[true\]"):
        ev(teacher="t.pt", soft_labels=True, tune=True)
    with pytest.raises(ValueError, match="synthetic_bn: joint only"):
        ev(teacher="t.pt", soft_labels=True, synthetic_bn="split")
    assert ev(teacher="t.pt", soft_labels=True, tune=True, tune_soft_labels=[True]).teacher == Path("t.pt")
