"""The run directory: the one module that names its files and says what "this run's config" is.

A run directory (``runs/NNNNN-NAME``, EDM's numbering) holds::

    config.yaml                 the resolved config of the weights beside it (resumes rewrite it)
    data.json                   the data summary: classes, counts, fingerprint
    stats.jsonl                 one line per training tick
    metrics-train.jsonl         fd_domain checks during training (train.eval_kimg > 0)
    network-snapshot-KKKKKK.pt  snapshots (G, EMA G and metadata), every train.snapshot_kimg
    network-best.pt             the snapshot with the best fd_domain (train.eval_kimg > 0)
    network-final.pt            the last snapshot
    training-state.pt           everything a resume needs
    fakes-KKKKKK.png            sample grids
    cache/                      the domain feature extractor, by data fingerprint
    generated/                  augment generate's output (PNG, manifest.csv, grid.png)
    eval/                       augment evaluate's output (metrics.json, report.md, plots)

Example:
    >>> cfg = run_config("runs/00000-digits", ["evaluate.seeds=5"])  # doctest: +SKIP
    >>> find_snapshot("runs/00000-digits").name  # doctest: +SKIP
    'network-final.pt'
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from augment.errors import CheckpointError, OutputError
from augment.io import ensure_dir, new_run_dir

if TYPE_CHECKING:
    from augment.config import Config
    from augment.data import PreparedData

CONFIG = "config.yaml"
DATA = "data.json"
STATS = "stats.jsonl"
TRAIN_METRICS = "metrics-train.jsonl"
TRAINING_STATE = "training-state.pt"
FINAL_SNAPSHOT = "network-final.pt"
BEST_SNAPSHOT = "network-best.pt"
SNAPSHOT_GLOB = "network-snapshot-*.pt"
NETWORK_GLOB = "network-*.pt"
FAKES_GLOB = "fakes-*.png"
CACHE = "cache"
GENERATED = "generated"
EVAL = "eval"
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
PER_CLASS_CSV = "per_class.csv"


def snapshot_name(kimg: int) -> str:
    """``network-snapshot-000020.pt`` for 20 kimg (six digits, as StyleGAN's snapshots)."""
    return f"network-snapshot-{kimg:06d}.pt"


def fakes_name(kimg: int) -> str:
    """The sample grid written with the snapshot of ``kimg``."""
    return f"fakes-{kimg:06d}.png"


def find_snapshot(run_dir: str | Path) -> Path:
    """The snapshot a run hands on: best (by fd_domain) if kept, else final, else the latest."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    for name in (BEST_SNAPSHOT, FINAL_SNAPSHOT):
        if (run_dir / name).is_file():
            return run_dir / name
    snaps = sorted(run_dir.glob(SNAPSHOT_GLOB))
    if not snaps:
        raise CheckpointError(f"{run_dir}: no generator checkpoint ({NETWORK_GLOB}) in this run directory")
    return snaps[-1]


def run_name(name: str) -> str:
    """The config ``name`` as it appears in a run directory's name (``my run`` -> ``my-run``).

    Example:
        >>> run_name("my run")
        'my-run'
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def latest_run_dir(root: str | Path, name: str) -> Path | None:
    """The newest run of config ``name`` under ``root`` that can be resumed (has a training state)."""
    root = Path(root)
    if not root.is_dir():
        return None
    # By the whole name: a run of `fashion-digits` is not a run of `digits`.
    pattern = re.compile(rf"\d+-{re.escape(run_name(name))}")
    runs = sorted(p for p in root.iterdir() if pattern.fullmatch(p.name) and (p / TRAINING_STATE).is_file())
    return runs[-1] if runs else None


def prepare_run_dir(cfg: Config, out: Path | None = None, resume: bool = False) -> Path:
    """The run directory: ``out`` if given, the latest run of this config when resuming, else a new one.

    ``out`` must be a folder (or not exist yet): a file or a symlink there is refused, since the
    run would write through the link into a folder the user did not name.
    """
    if out is not None:
        out = Path(out)
        if out.is_symlink():
            raise OutputError(f"{out}: is a symlink; give train a folder of its own (--out)")
        if out.exists() and not out.is_dir():
            raise OutputError(f"{out}: is a file, not a folder; give train a folder of its own (--out)")
        run_dir = ensure_dir(out)
        if resume and not (run_dir / TRAINING_STATE).is_file():
            raise CheckpointError(f"{run_dir}: nothing to resume (no {TRAINING_STATE})")
        return run_dir
    if resume:
        run_dir = latest_run_dir(cfg.output.root, cfg.name)
        if run_dir is None:
            raise CheckpointError(f"{cfg.output.root}: no run of {cfg.name!r} with a training state to resume")
        return run_dir
    return new_run_dir(cfg.output.root, run_name(cfg.name))


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a complete checkpoint (a snapshot or a training state)."""
    return (run_dir / TRAINING_STATE).is_file() or any(run_dir.glob(NETWORK_GLOB))


@contextlib.contextmanager
def claim_run_dir(cfg: Config, out: Path | None = None, resume: bool = False) -> Iterator[Path]:
    """:func:`prepare_run_dir`, undone when the block fails before the run wrote a checkpoint.

    A run that stops on a config error, a full disk, SIGTERM or Ctrl-C before its first snapshot
    leaves nothing a user could mistake for a run: the folder is removed when this call created
    it, else only the entries it added. A run with a checkpoint is kept (``--resume`` continues
    it); a resumed run's folder is never touched. A full disk (``ENOSPC``) becomes one
    :class:`OutputError` line: ``no space left on device: <path>``.

    Example:
        >>> with claim_run_dir(cfg, tmp_path / "run") as run_dir:  # doctest: +SKIP
        ...     training_loop(run_dir=run_dir, ...)
    """
    existed = out is not None and Path(out).is_dir()
    before = {p.name for p in Path(out).iterdir()} if existed else set()
    run_dir = prepare_run_dir(cfg, out, resume)
    try:
        yield run_dir
    except BaseException as err:
        if not resume and not has_checkpoint(run_dir):
            if existed:
                for entry in run_dir.iterdir():
                    if entry.name in before:
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise OutputError(f"no space left on device: {err.filename or run_dir}") from None
        raise


def holds_a_run(folder: Path) -> str | None:
    """The first file that marks ``folder`` as a training run's directory, or None."""
    found = [n for n in (TRAINING_STATE, STATS, CONFIG) if (folder / n).exists()]
    found += sorted(p.name for p in folder.glob(NETWORK_GLOB))[:1]
    return found[0] if found else None


def run_config(run_dir: str | Path, overrides: Sequence[str] | None = None, *, snapshot: Path | None = None) -> Config:
    """This run's config with ``--set`` style ``overrides``: its ``config.yaml`` (which describes the
    weights beside it), else the config stored in its snapshot (a run directory copied without it)."""
    from augment.checkpoint import load_snapshot
    from augment.config import apply_overrides, config_from_dict, load_config

    path = Path(run_dir) / CONFIG
    if path.is_file():
        return load_config(path, list(overrides or []))
    snap_path = snapshot or find_snapshot(run_dir)
    raw = apply_overrides(dict(load_snapshot(snap_path).config), list(overrides or []))
    source = f"{snap_path} (config in checkpoint)"
    return config_from_dict(raw, source=f"{source} with {' '.join(overrides)}" if overrides else source)


def check_data_matches(where: str | Path, class_names: Sequence[str], fingerprint: str, data: PreparedData) -> None:
    """The data must be what the weights at ``where`` were trained on: same classes, same fingerprint."""
    if list(class_names) != list(data.class_names):
        raise CheckpointError(f"{where}: trained on classes {list(class_names)}, the data has {list(data.class_names)}")
    if fingerprint != data.fingerprint:
        raise CheckpointError(
            f"{where}: trained on data {fingerprint}, the config selects data {data.fingerprint} "
            "(different limits, split or source)"
        )
