"""Self-describing checkpoints, written atomically, loaded with ``torch.load(weights_only=True)``.

Two artifacts, as EDM and nanoGPT keep them:

* a **snapshot** for inference (``network-*.pt``): the EMA generator's state dict, the arguments
  that rebuild it, class names and train counts, the resolved config, kimg, data fingerprint;
* a **training state** for resuming (``training-state.pt``): G, D, EMA, both optimizers, the RNG
  state and the number of images shown.

Both hold only tensors and plain containers, so loading never unpickles code.
"""

from __future__ import annotations

import errno
import io
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from augment.errors import CheckpointError, OutputError
from augment.io import atomic_write_bytes
from augment.models import ConditionalGenerator, SnapshotEnsemble
from augment.rundir import BEST_SNAPSHOT, FINAL_SNAPSHOT, TRAINING_STATE, find_snapshot  # noqa: F401 (re-exported)

SNAPSHOT_FORMAT = "gan-augment/snapshot/v1"
STATE_FORMAT = "gan-augment/training-state/v1"


def save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, then rename (a crash never leaves half a checkpoint).

    A full disk is an :class:`OutputError` naming ``path`` (the temporary file is removed).
    """
    path = Path(path)
    # Serialised in memory first: torch's own file writer reports a full disk as an opaque
    # "unexpected pos" RuntimeError, a plain write as OSError(ENOSPC).
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OutputError(f"no space left on device: {path}") from None
        raise


def load(path: Path, expect_format: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely; CheckpointError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            # A plain pickle.dump (protocol 4) makes torch warn before the checks below name the problem in one line.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message buries the reason after "WeightsUnpickler error:"; surface only that.
        reason = str(err).split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
        if "Unsupported global" in reason:
            raise CheckpointError(
                f"{path}: refused to load: it contains a pickled object that is not plain weights "
                f"({reason[:160]}); checkpoints are loaded with weights_only=True and never unpickled"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason[:160] or 'unpickling failed'})") from None
    except Exception as err:  # noqa: BLE001 - any decoding failure of a damaged file is the same bad input
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: not a readable checkpoint (the file is empty)") from None
        lines = str(err).strip().splitlines()
        reason = lines[0][:160] if lines else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(obj, dict) or (expect_format and obj.get("format") != expect_format):
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a {expect_format} checkpoint, found {found!r}")
    return obj


@dataclass
class Snapshot:
    """An inference snapshot: build the EMA generator with :meth:`generator`.

    A snapshot ensemble (``train.ensemble``) also holds ``members``: the weights of the other EMA
    generators of the mixture (same architecture), checked at ``member_kimg``; ``generator_state``
    is the best single one (checked at ``kimg``).
    """

    generator_state: dict[str, torch.Tensor]
    generator_kwargs: dict[str, Any]
    class_names: list[str]
    class_counts: list[int]
    config: dict[str, Any]
    kimg: float
    data_fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    members: list[dict[str, torch.Tensor]] = field(default_factory=list)
    member_kimg: list[float] = field(default_factory=list)

    def generator(self, device: str | torch.device = "cpu") -> ConditionalGenerator | SnapshotEnsemble:
        """The EMA generator in eval mode (a :class:`SnapshotEnsemble` when the snapshot has members)."""
        gens = [self._build(state) for state in (self.generator_state, *self.members)]
        G = gens[0] if len(gens) == 1 else SnapshotEnsemble(gens)
        return G.to(device).eval().requires_grad_(False)

    def _build(self, state: dict[str, torch.Tensor]) -> ConditionalGenerator:
        G = ConditionalGenerator(**self.generator_kwargs)
        try:
            G.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(
                f"{self.path}: generator weights do not match its architecture ({str(err).splitlines()[0]})"
            ) from None
        return G

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "generator": self.generator_state,
            "generator_kwargs": self.generator_kwargs,
            "class_names": self.class_names,
            "class_counts": self.class_counts,
            "config": self.config,
            "kimg": self.kimg,
            "data_fingerprint": self.data_fingerprint,
            "metrics": self.metrics,
            **({"members": self.members, "member_kimg": self.member_kimg} if self.members else {}),
        }


def save_snapshot(snapshot: Snapshot, path: Path) -> None:
    save(snapshot.to_dict(), path)


def load_snapshot(path: Path) -> Snapshot:
    obj = load(path, SNAPSHOT_FORMAT)
    try:
        return Snapshot(
            generator_state=obj["generator"],
            generator_kwargs=dict(obj["generator_kwargs"]),
            class_names=list(obj["class_names"]),
            class_counts=list(obj["class_counts"]),
            config=obj["config"],
            kimg=float(obj["kimg"]),
            data_fingerprint=str(obj["data_fingerprint"]),
            metrics=dict(obj.get("metrics", {})),
            path=Path(path),
            members=list(obj.get("members", [])),
            member_kimg=[float(k) for k in obj.get("member_kimg", [])],
        )
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: snapshot is missing field {err}") from None
