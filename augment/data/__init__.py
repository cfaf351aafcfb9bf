"""Data: sources, per-class limiting, stratified splits, fingerprint."""

from augment.data.prepare import SPLITS, ImageSet, PreparedData, class_limits, load_data, prepare
from augment.data.sources import SourceData, find_fashion_mnist_dir, load_image, load_source, read_manifest

__all__ = [
    "SPLITS",
    "ImageSet",
    "PreparedData",
    "SourceData",
    "class_limits",
    "find_fashion_mnist_dir",
    "load_data",
    "load_image",
    "load_source",
    "prepare",
    "read_manifest",
]
