"""The ``augment`` console command: the application's front door.

Exit codes: 0 done, 2 bad input or config (one line naming it), 1 unexpected failure.
Heavy imports (torch, Prefect, MLflow) happen inside the commands so ``augment --help`` is quick.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

app = typer.Typer(
    name="augment",
    help="Train a class-conditional GAN on a small labelled dataset, generate balanced synthetic "
    "images and measure honestly whether they help.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config, e.g. configs/digits.yaml.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: --set train.kimg=5 (repeatable).", show_default=False),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.")]


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input -> one line on stderr and exit code 2; anything else propagates (exit code 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from augment.errors import AugmentError

        try:
            return fn(*args, **kwargs)
        except AugmentError as err:
            fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except PermissionError as err:
            fail(f"permission denied: {err.filename or err}")

    return wrapper


@app.command()
@handle_errors
def train(
    config: ConfigArg,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default: output.root/NNNNN-name).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's training state.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the class-conditional GAN; writes a run directory with snapshots and sample grids."""
    _setup_logging(quiet)
    from augment.config import load_config
    from augment.train import train as train_gan

    cfg = load_config(config, set_)
    run_dir, snap = train_gan(cfg, out=out, resume=resume, progress=not quiet)
    typer.echo(f"run directory: {run_dir}\ngenerator: {snap}")


@app.command()
@handle_errors
def generate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `augment train`.")],
    per_class: Annotated[int | None, typer.Option("--per-class", min=1, help="N images for every class.")] = None,
    total: Annotated[int | None, typer.Option("--total", min=1, help="A total budget split evenly.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Sampling seed (default: generate.seed).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RUN_DIR/generated).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate class-balanced synthetic images (PNG, manifest.csv, grid.png) from a trained run."""
    _setup_logging(quiet)
    from augment.checkpoint import find_snapshot, load_snapshot
    from augment.config import config_from_dict
    from augment.generate import counts_to_generate, write_samples

    if per_class is not None and total is not None:
        fail("give --per-class or --total, not both")
    snap = load_snapshot(find_snapshot(run_dir))
    gcfg = config_from_dict(snap.config, source=f"{run_dir} (config in checkpoint)").generate
    target = "per_class" if per_class else "total" if total else gcfg.target
    counts = counts_to_generate(
        snap.class_counts, target, per_class or gcfg.per_class, total or gcfg.total
    )
    seed = gcfg.seed if seed is None else seed
    manifest = write_samples(
        snap, out or Path(run_dir) / "generated", counts, seed=seed,
        batch_size=batch_size or gcfg.batch_size, progress=not quiet,
    )
    per = ", ".join(f"{n}: {c}" for n, c in zip(snap.class_names, counts, strict=True))
    typer.echo(f"generated {sum(counts)} images ({per})\nmanifest: {manifest}\ngrid: {manifest.parent / 'grid.png'}")


@app.command("inspect-data")
@handle_errors
def inspect_data(
    config: ConfigArg,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Per-class counts after limiting and splitting, and the data fingerprint."""
    from augment.config import load_config
    from augment.data import SPLITS, load_data

    cfg = load_config(config, set_)
    data = load_data(cfg.data, cfg.seed)
    counts = data.counts()
    if as_json:
        typer.echo(json.dumps(data.summary(), indent=2))
        return
    width = max(len(n) for n in data.class_names + ["class"])
    typer.echo(f"source: {cfg.data.source}  fingerprint: {data.fingerprint}  seed: {cfg.seed}")
    typer.echo(f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in SPLITS))
    for name in data.class_names:
        typer.echo(f"{name:<{width}}  " + "  ".join(f"{counts[s][name]:>6}" for s in SPLITS))
    typer.echo(f"{'total':<{width}}  " + "  ".join(f"{sum(counts[s].values()):>6}" for s in SPLITS))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
