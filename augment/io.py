"""Atomic file writes and run directories.

Every artifact is written to a temporary name in the same folder and renamed into place, so a
crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from augment.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and rename the result onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) or raise OutputError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output directory {path}: {err.strerror or err}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {path} is not writable")
    return path


def new_run_dir(root: Path, name: str) -> Path:
    """Create ``root/NNNNN-name`` with the next free number (EDM's convention)."""
    root = ensure_dir(Path(root))
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    for _ in range(1000):  # concurrent runs may race for the same number: mkdir decides
        ids = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^(\d+)-", p.name))]
        run_dir = root / f"{max(ids, default=-1) + 1:05d}-{safe}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
        except OSError as err:
            raise OutputError(f"cannot create run directory {run_dir}: {err.strerror or err}") from None
    raise OutputError(f"could not allocate a run directory under {root}")
