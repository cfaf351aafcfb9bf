"""Errors that mean "the user's input is wrong" (the CLI prints them as one line, exit code 2).

Everything else that escapes is a bug and exits with code 1 and a traceback.
"""

from __future__ import annotations


class AugmentError(ValueError):
    """Base class of every bad-input error of gan-augment."""


class ConfigError(AugmentError):
    """A config file, field or value is wrong (names the file, dotted field and value)."""


class DataError(AugmentError):
    """The dataset is wrong: missing, corrupt, empty class, unknown label, wrong size."""


class CheckpointError(AugmentError):
    """A checkpoint is missing, unreadable, unsafe or does not match the data/architecture."""


class OutputError(AugmentError):
    """An output location cannot be written."""


class TrackingError(AugmentError):
    """The experiment tracking store (MLflow) is unreachable, unwritable or misconfigured."""
