"""A teacher: a classifier the user brings, whose probabilities label the synthetic images (``evaluate.teacher``).

The generator's samples carry their class about as well as the real training images do; what a
small train split cannot give the downstream classifier is a good decision boundary
(``benchmarks/RESULTS.md``, label fidelity). A user who has one, a classifier trained on more
labelled images than the GAN saw, can hand it over as a teacher: the synthetic images are then trained
against its probabilities (knowledge distillation with the generator's samples as the transfer set).

The verdict stays honest in two ways:

* **the baseline gets the same teacher**: with a teacher, ``real+classic`` draws the GAN regime's
  batch with the real train images in the synthetic pool's place, labelled by the teacher, so the
  verdict measures what the *synthetic images* add, not what the teacher knows
  (:func:`augment.metrics.downstream.prepare`);
* **the teacher never saw the scoring images**: the file carries a digest of every image it trained
  on, and a teacher that trained on any of the run's validation or test images is refused.

A teacher file is a plain dict of tensors and strings, loaded with ``torch.load(weights_only=True)``:
one or more of the library's classifiers (``smallcnn``, ``resnet18``) whose softmax is averaged.
``augment teacher CONFIG --out teacher.pt`` trains one on a config's data; :func:`save_teacher`
writes any such classifiers trained elsewhere.

Example:
    >>> save_teacher("teacher.pt", [model], "smallcnn", class_names, train_images)  # doctest: +SKIP
    >>> teacher = load_teacher("teacher.pt")  # doctest: +SKIP
    >>> teacher.probs(synthetic_images).shape  # doctest: +SKIP
    torch.Size([3000, 10])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from augment import checkpoint
from augment.config import Config
from augment.errors import CheckpointError, ConfigError
from augment.metrics.classifier_training import TrainSpec, predict_proba, torch_threads, train_classifier
from augment.metrics.regimes import BASELINE
from augment.models.classifier import build_classifier

if TYPE_CHECKING:
    from augment.data import PreparedData
    from augment.metrics.downstream import Plan

TEACHER_FORMAT = "gan-augment/teacher/v1"


def image_digests(images: torch.Tensor) -> list[str]:
    """A 64-bit BLAKE2b hex digest of each uint8 image's pixels (the same pixels, the same digest)."""
    flat = images.contiguous().view(len(images), -1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in flat]


@dataclass
class Teacher:
    """One or more classifiers of one architecture whose softmax, averaged, labels images."""

    classifier: str
    class_names: list[str]
    channels: int
    image_size: int
    members: list[dict[str, torch.Tensor]]
    #: :func:`image_digests` of the images the teacher trained on (for the overlap check).
    trained_on: list[str] = field(default_factory=list)
    #: What the user or ``augment teacher`` says about it (data, accuracy), kept in the run's record.
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def models(self) -> list[torch.nn.Module]:
        """The member classifiers in eval mode.

        Raises:
            CheckpointError: a member's weights do not fit the architecture.
        """
        out = []
        for i, state in enumerate(self.members):
            model = build_classifier(self.classifier, len(self.class_names), self.channels, self.image_size)
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                raise CheckpointError(
                    f"{self.path}: teacher member {i} does not fit a {self.classifier} "
                    f"({str(err).splitlines()[0][:160]})"
                ) from None
            out.append(model.eval())
        return out

    def probs(self, images: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """The members' mean softmax over uint8 ``images`` (N, C, H, W): (N, K), fp32, on the CPU."""
        out = torch.zeros(len(images), len(self.class_names))
        with torch_threads(threads):
            for model in self.models():
                out += predict_proba(model, images) / len(self.members)
        return out

    def overlap(self, images: torch.Tensor) -> int:
        """How many of ``images`` have the pixels of an image the teacher trained on."""
        seen = set(self.trained_on)
        return sum(d in seen for d in image_digests(images))

    def check_fits(self, class_names: Sequence[str], shape: Sequence[int]) -> None:
        """The teacher's classes and image shape are the data's.

        Raises:
            ConfigError: other classes (or another order) or another image shape.
        """
        if list(class_names) != self.class_names:
            raise ConfigError(
                f"evaluate.teacher: {self.path} has classes {self.class_names}, the data {list(class_names)}"
            )
        if tuple(shape) != (self.channels, self.image_size, self.image_size):
            raise ConfigError(
                f"evaluate.teacher: {self.path} takes {self.channels}x{self.image_size}x{self.image_size} "
                f"images, the data's are {'x'.join(map(str, shape))}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TEACHER_FORMAT,
            "classifier": self.classifier,
            "class_names": self.class_names,
            "channels": self.channels,
            "image_size": self.image_size,
            "members": self.members,
            "trained_on": self.trained_on,
            "info": self.info,
        }


def from_models(
    models: Sequence[torch.nn.Module],
    classifier: str,
    class_names: Sequence[str],
    train_images: torch.Tensor,
    info: dict[str, Any] | None = None,
) -> Teacher:
    """A teacher of ``models`` (the library's ``classifier`` architecture, trained on uint8 ``train_images``);
    ``info`` (plain str/int/float values and lists of them) travels with it."""
    if not models:
        raise ValueError("a teacher needs at least one classifier")
    return Teacher(
        classifier=classifier,
        class_names=list(class_names),
        channels=int(train_images.shape[1]),
        image_size=int(train_images.shape[-1]),
        members=[{k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in models],
        trained_on=image_digests(train_images),
        info=dict(info or {}),
    )


def write_teacher(teacher: Teacher, path: str | Path) -> Teacher:
    """Write ``teacher`` to ``path`` atomically (its weights checked against the architecture first, so a
    bad one writes nothing); returns it, its ``path`` set."""
    teacher.path = Path(path)
    teacher.models()  # CheckpointError before anything is written
    checkpoint.save(teacher.to_dict(), teacher.path)
    return teacher


def save_teacher(
    path: str | Path,
    models: Sequence[torch.nn.Module],
    classifier: str,
    class_names: Sequence[str],
    train_images: torch.Tensor,
    info: dict[str, Any] | None = None,
) -> Teacher:
    """Write ``models`` as a teacher file (:func:`from_models`, then :func:`write_teacher`); returns it."""
    return write_teacher(from_models(models, classifier, class_names, train_images, info), path)


def load_teacher(path: str | Path) -> Teacher:
    """Read a teacher file with ``weights_only=True``.

    Raises:
        CheckpointError: missing, unreadable, not a teacher file, or a field missing or of the wrong kind.
    """
    path = Path(path)
    obj = checkpoint.load(path, TEACHER_FORMAT)
    try:
        teacher = Teacher(
            classifier=str(obj["classifier"]),
            class_names=[str(c) for c in obj["class_names"]],
            channels=int(obj["channels"]),
            image_size=int(obj["image_size"]),
            members=list(obj["members"]),
            trained_on=[str(d) for d in obj.get("trained_on", [])],
            info=dict(obj.get("info", {})),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: a teacher file without a valid {err} field") from None
    if not teacher.members or not all(isinstance(m, dict) for m in teacher.members):
        raise CheckpointError(f"{path}: a teacher file without classifier weights")
    return teacher


def train_teacher(spec: TrainSpec, seeds: Sequence[int]) -> list[torch.nn.Module]:
    """``len(seeds)`` classifiers trained on ``spec``'s real train split as the classic baseline trains
    (``spec.classic`` with ``spec.classic_sampling``), one per seed."""
    return [train_classifier(spec, BASELINE, seed)[0] for seed in seeds]


def baseline_plan(cfg: Config, data: PreparedData) -> Plan:
    """The downstream plan of ``cfg``'s classic baseline on ``data`` alone (no synthetic pool, no teacher):
    the classic policy and draw chosen on the validation split where ``evaluate.classic`` lists several."""
    from augment.devices import resolve_device
    from augment.metrics import downstream

    ev = cfg.evaluate.model_copy(update={"teacher": None, "regimes": [BASELINE], "tune": False})
    empty = torch.empty(0, *data.train.images.shape[1:], dtype=torch.uint8)
    device = resolve_device(ev.device, "evaluate.device")
    return downstream.prepare(data, empty, torch.empty(0, dtype=torch.int64), ev, seed=cfg.seed, device=device)


def fit_teacher(cfg: Config, members: int = 3) -> Teacher:
    """Train a teacher on ``cfg``'s data: ``members`` classifiers (``evaluate.classifier``, ``evaluate.steps``)
    on its train split as its classic baseline trains (the policy and draw chosen on its validation split
    where ``evaluate.classic`` lists several), scored on its test split (``info["test_balanced_accuracy"]``);
    not yet written (:func:`write_teacher`).

    The config describes the teacher's data, not the run's: a teacher is worth having where it saw more
    labelled images than the GAN did, and it must not have seen the run's validation or test images
    (``evaluate.teacher`` checks that).
    """
    from augment.data import load_data
    from augment.metrics.classifier_training import score

    data = load_data(cfg.data, cfg.seed)
    plan = baseline_plan(cfg, data)
    seeds = [cfg.seed + i for i in range(members)]
    info: dict[str, Any] = {
        "config": cfg.name,
        "data_fingerprint": data.fingerprint,
        "images": len(data.train),
        "classic": plan.classic,
        "classic_sampling": plan.classic_sampling,
        "steps": plan.steps,
        "seeds": seeds,
    }
    teacher = from_models(train_teacher(plan, seeds), plan.classifier, data.class_names, data.train.images, info)
    if len(data.test):
        preds = teacher.probs(data.test.images, plan.threads or 1).argmax(dim=1)
        teacher.info["test_balanced_accuracy"] = round(
            score(data.test.labels, preds, len(data.class_names))["balanced_accuracy"], 4
        )
        teacher.info["test_images"] = len(data.test)
    return teacher
