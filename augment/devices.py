"""Device choice shared by training and evaluation.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import torch

from augment.errors import ConfigError


def resolve_device(name: str, field: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field} is 'cuda' but no CUDA device is available")
    return torch.device(name)
