"""gan-augment: class-conditional GAN augmentation for small labelled image datasets.

Public API::

    from augment import load_config, load_data, train, Snapshot, load_snapshot
    from augment import GanAugmenter, BalancedDataset, SyntheticDataset
    from augment import read_evaluation, Evaluation   # eval/metrics.json, typed
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home otherwise

from augment.checkpoint import Snapshot, find_snapshot, load_snapshot  # noqa: E402
from augment.config import Config, load_config  # noqa: E402
from augment.data import PreparedData, load_data  # noqa: E402
from augment.errors import AugmentError, CheckpointError, ConfigError, DataError, OutputError  # noqa: E402
from augment.generate import counts_to_generate, sample, write_samples  # noqa: E402
from augment.metrics.result import Evaluation, read_evaluation  # noqa: E402
from augment.train import train  # noqa: E402

__version__ = "0.1.0"

# The augmenter pulls in albumentations and torchvision's v2 transforms: import it on first use, so
# training, generation and evaluation (and `import augment`) run where only torch is installed.
_AUGMENTER = (
    "AugmentedDataset",
    "BalancedDataset",
    "GanAlbumentations",
    "GanAugmenter",
    "GanTransform",
    "SyntheticDataset",
)


def __getattr__(name: str) -> object:
    if name in _AUGMENTER:
        from augment import augmenter

        return getattr(augmenter, name)
    raise AttributeError(f"module 'augment' has no attribute {name!r}")


__all__ = [
    "AugmentError",
    "AugmentedDataset",
    "BalancedDataset",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "Evaluation",
    "GanAlbumentations",
    "GanAugmenter",
    "GanTransform",
    "OutputError",
    "PreparedData",
    "Snapshot",
    "SyntheticDataset",
    "counts_to_generate",
    "find_snapshot",
    "load_config",
    "load_data",
    "load_snapshot",
    "read_evaluation",
    "sample",
    "train",
    "write_samples",
]
