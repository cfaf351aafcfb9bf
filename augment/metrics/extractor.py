"""The domain feature extractor behind ``fd_domain``: a small CNN trained on the run's real
train+val split (never the test split), cached by data fingerprint.

The cache file (``extractor-<fingerprint>-<settings>.pt``) is written with the atomic checkpoint
helpers and read back with ``torch.load(weights_only=True)``; it records the ids of the images it
was trained on, so anyone can check that no test image was among them.

Example:
    >>> ext = load_or_train_extractor(data, cfg.evaluate, cache_dir=run_dir / "cache")  # doctest: +SKIP
    >>> ext.features(data.test.images).shape  # doctest: +SKIP
    torch.Size([400, 80])
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from augment import checkpoint
from augment.config import EvaluateConfig
from augment.data import PreparedData
from augment.errors import CheckpointError
from augment.metrics.classifier_training import TrainSpec, train_classifier
from augment.models.classifier import SmallCNN

log = logging.getLogger(__name__)

EXTRACTOR_FORMAT = "gan-augment/domain-extractor/v1"


@dataclass
class DomainExtractor:
    """A trained SmallCNN used as a feature map (pooled penultimate layer)."""

    net: SmallCNN
    fingerprint: str
    trained_on_ids: list[str]
    path: Path | None = None

    @property
    def num_features(self) -> int:
        return self.net.num_features

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` (or float in [-1, 1]) -> float64 features ``(N, D)``."""
        self.net.eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            x = x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.float()
            out.append(self.net.features(x.to(next(self.net.parameters()).device)).double().cpu())
        return torch.cat(out) if out else torch.empty(0, self.num_features, dtype=torch.float64)


def _settings(cfg: EvaluateConfig, seed: int) -> dict:
    return {
        "arch": "smallcnn",
        "steps": cfg.extractor_steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "seed": seed,
        "augment": "crop",
    }


def cache_path(cache_dir: Path, fingerprint: str, cfg: EvaluateConfig, seed: int) -> Path:
    key = hashlib.sha256(json.dumps(_settings(cfg, seed), sort_keys=True).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"extractor-{fingerprint}-{key}.pt"


def train_extractor(
    data: PreparedData, cfg: EvaluateConfig, seed: int = 0, device: torch.device | str = "cpu"
) -> DomainExtractor:
    """Train the extractor on ``data.train`` + ``data.val`` (the test split never reaches it)."""
    images = torch.cat([data.train.images, data.val.images])
    labels = torch.cat([data.train.labels, data.val.labels])
    ids = list(data.train.ids) + list(data.val.ids)
    # The extractor is the real+classic(crop) classifier of train+val, in fp32 whatever
    # evaluate.precision says (its features define fd_domain).
    spec = TrainSpec(
        class_names=list(data.class_names),
        train_images=images,
        train_labels=labels,
        classifier="smallcnn",
        steps=cfg.extractor_steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        classic="crop",
        threads=cfg.threads,
        device=str(device),
    )
    log.info("Training the domain extractor on %d train+val images (%d steps)...", len(labels), cfg.extractor_steps)
    net, _ = train_classifier(spec, "real+classic", seed)
    return DomainExtractor(net=net.eval().requires_grad_(False), fingerprint=data.fingerprint, trained_on_ids=ids)


def save_extractor(ext: DomainExtractor, path: Path, settings: dict) -> None:
    net = ext.net
    checkpoint.save(
        {
            "format": EXTRACTOR_FORMAT,
            "state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "kwargs": {"num_classes": net.num_classes, "channels": net.channels, "image_size": net.image_size},
            "fingerprint": ext.fingerprint,
            "trained_on_ids": ext.trained_on_ids,
            "trained_on_splits": ["train", "val"],
            "settings": settings,
        },
        path,
    )


def load_extractor(path: Path) -> DomainExtractor:
    obj = checkpoint.load(path, EXTRACTOR_FORMAT)  # torch.load(weights_only=True)
    try:
        net = SmallCNN(**obj["kwargs"])
        net.load_state_dict(obj["state"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a usable domain extractor ({str(err).splitlines()[0][:160]})") from None
    return DomainExtractor(
        net=net.eval().requires_grad_(False),
        fingerprint=str(obj["fingerprint"]),
        trained_on_ids=list(obj["trained_on_ids"]),
        path=Path(path),
    )


def load_or_train_extractor(
    data: PreparedData,
    cfg: EvaluateConfig,
    cache_dir: Path | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DomainExtractor:
    """The cached extractor for this data fingerprint and these settings, else a freshly trained one
    (on ``device``; the cache file holds CPU tensors)."""
    path = cache_path(cache_dir, data.fingerprint, cfg, seed) if cache_dir is not None else None
    if path is not None and path.is_file():
        ext = load_extractor(path)
        if ext.fingerprint != data.fingerprint:
            raise CheckpointError(f"{path}: extractor trained on data {ext.fingerprint}, not {data.fingerprint}")
        log.info("Domain extractor from cache %s", path)
        ext.net.to(device)
        return ext
    ext = train_extractor(data, cfg, seed, device)
    if path is not None:
        save_extractor(ext, path, _settings(cfg, seed))
        ext.path = path
    return ext
