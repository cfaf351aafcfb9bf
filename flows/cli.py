"""The ``augment`` console command: the application's front door.

Exit codes: 0 done, 2 bad input or config (one line naming it), 1 unexpected failure.
Heavy imports (torch, Prefect, MLflow) happen inside the commands so ``augment --help`` is quick.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer 0.2x vendors its own click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - typer on the click package
    from click.exceptions import NoArgsIsHelpError, UsageError

from augment.tracking_env import apply_mlflow_defaults  # noqa: E402 (imports nothing heavy)

# The program's environment, before anything imports mlflow, albumentations or Prefect's server.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client-side telemetry and its notice
apply_mlflow_defaults()


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:
        raise  # `augment` alone prints the help
    except UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        fail(" ".join(err.format_message().split()) + hint)


class _Group(TyperGroup):
    """Usage errors (unknown option, bad option value, missing argument) are bad input too: one line, exit 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():  # a subcommand parses its arguments in here
            return super().invoke(ctx)


app = typer.Typer(
    name="augment",
    cls=_Group,
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
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.", metavar="")]


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@contextlib.contextmanager
def _bars_and_logs(progress: bool) -> Iterator[None]:
    """Route the console log handlers through ``tqdm.write`` while bars may show (the root logger's,
    and a Prefect logger's only where it has a console handler of its own: tqdm adds one to every
    logger it is given, which would print propagated lines twice)."""
    if not progress:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    prefect = logging.getLogger("prefect")
    own = any(isinstance(h, logging.StreamHandler) for h in prefect.handlers)
    with logging_redirect_tqdm(loggers=[logging.getLogger(), *([prefect] if own else [])]):
        yield


def _clear_bars() -> None:
    """Erase the progress bars a failed stage left drawn, so the message that follows starts its own line."""
    std = sys.modules.get("tqdm.std")  # never imported: no bar was drawn
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", ())):
        if getattr(bar, "disable", True) or not hasattr(bar, "pos"):  # hidden, or interrupted while being built
            continue
        bar.leave = False
        bar.close()


def fail(message: str, code: int = 2) -> None:
    _clear_bars()
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
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            where = f": {err.filename}" if err.filename else " (the output's file system is full)"
            fail(f"no space left on device{where}")

    return wrapper


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread so ``finally`` blocks remove staging folders and temporary
    files (a BaseException: no ``except Exception`` on the way swallows it)."""


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a command writes files (the default action kills at once)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
@handle_errors
def train(
    config: ConfigArg,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default: output.root/NNNNN-name).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run's training state.", metavar="")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the class-conditional GAN; writes a run directory with snapshots and sample grids."""
    _setup_logging(quiet)
    from augment.config import load_config
    from augment.metrics.evaluate import best_snapshot_metric
    from augment.train import check_new_run_dir
    from augment.train import train as train_gan

    cfg = load_config(config, set_)
    if not resume:
        check_new_run_dir(out)
    with _terminate_cleanly(), _bars_and_logs(not quiet):
        run_dir, snap = train_gan(cfg, out=out, resume=resume, progress=not quiet, metric_factory=best_snapshot_metric)
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
    shard_size: Annotated[
        int | None, typer.Option("--shard-size", min=1, help="Images per shard (default: generate.shard_size).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="N > 1: shards on a local Dask cluster of N processes (a Prefect flow)."),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option("--dask-address", help="Shards on this Dask scheduler; its workers must share the output folder."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate class-balanced synthetic images (PNG, manifest.csv, grid.png) from a trained run."""
    _setup_logging(quiet)
    from augment.checkpoint import load_snapshot
    from augment.generate import counts_to_generate, write_samples
    from augment.rundir import GENERATED, find_snapshot, run_config

    if per_class is not None and total is not None:
        fail("give --per-class or --total, not both")
    if dask_address is not None:  # before the run is read: a typo fails in seconds
        _check_dask_address(dask_address)
    snapshot = find_snapshot(run_dir)
    snap = load_snapshot(snapshot)
    gcfg = run_config(run_dir, snapshot=snapshot).generate
    target = "per_class" if per_class else "total" if total else gcfg.target
    counts = counts_to_generate(snap.class_counts, target, per_class or gcfg.per_class, total or gcfg.total)
    if sum(counts) == 0:  # writing nothing would replace the previous set with an empty one
        fail(
            f"nothing to generate: target {target!r} asks for 0 images (the train classes are balanced already: "
            f"{max(snap.class_counts)} each); give --per-class N or --total N"
        )
    g = gcfg.model_copy(
        update={
            "seed": gcfg.seed if seed is None else seed,
            "batch_size": batch_size or gcfg.batch_size,
            "shard_size": shard_size or gcfg.shard_size,
            "workers": workers or gcfg.workers,
            "dask_address": dask_address or gcfg.dask_address,
        }
    )
    out_dir = out or Path(run_dir) / GENERATED
    with _terminate_cleanly(), _bars_and_logs(not quiet):
        if g.workers > 1 or g.dask_address:
            from flows.generate import run_generate

            manifest = run_generate(snapshot, out_dir, counts, g)
        else:
            manifest = write_samples(
                snap, out_dir, counts, seed=g.seed, batch_size=g.batch_size, progress=not quiet, shard_size=g.shard_size
            )
    per = ", ".join(f"{n}: {c}" for n, c in zip(snap.class_names, counts, strict=True))
    typer.echo(f"generated {sum(counts)} images ({per})\nmanifest: {manifest}\ngrid: {manifest.parent / 'grid.png'}")


@app.command()
@handle_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `augment train`.")],
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure a trained run: fd_domain/KID with floors, PRDC, memorisation, downstream verdict."""
    _setup_logging(quiet)
    from augment.metrics.evaluate import evaluate_run

    result = evaluate_run(run_dir, overrides=set_, progress=not quiet)
    fd = result["fd_domain"]
    value, floor = fd.get("fd_domain", float("nan")), fd.get("fd_domain_floor", float("nan"))
    typer.echo(
        f"fd_domain {value:.3f} (real-vs-real floor {floor:.3f}, "
        f"{fd['n_synthetic']} synthetic / {fd['n_real']} real vs {fd['n_reference']} test images)"
    )
    typer.echo(result["verdict"])
    deploy = (result.get("downstream") or {}).get("deploy")
    if deploy:
        typer.echo(deploy["text"])
    typer.echo(f"report: {result['files']['report']}")


@app.command()
@handle_errors
def teacher(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", help="The teacher file to write (e.g. teacher.pt).")],
    set_: SetOpt = None,
    members: Annotated[
        int, typer.Option("--members", min=1, help="Classifiers averaged (seeds seed, seed+1, ...).")
    ] = 3,
    quiet: QuietOpt = False,
) -> None:
    """Train a teacher on CONFIG's data for a run's evaluate.teacher (more labelled images than the GAN saw)."""
    _setup_logging(quiet)
    from augment.config import load_config
    from augment.io import ensure_dir
    from augment.metrics.teacher import fit_teacher, write_teacher

    cfg = load_config(config, set_)
    if out.is_dir():
        fail(f"--out {out}: is a folder; give the teacher file's path (e.g. {out / 'teacher.pt'})")
    ensure_dir(out.parent)  # an unwritable folder fails before minutes of training
    with _terminate_cleanly(), _bars_and_logs(not quiet):
        saved = write_teacher(fit_teacher(cfg, members), out)
    info = saved.info
    acc = info.get("test_balanced_accuracy")
    score_text = f", test balanced accuracy {100 * acc:.2f}% on {info['test_images']} images" if acc is not None else ""
    typer.echo(
        f"teacher: {out} ({len(saved.members)} x {saved.classifier} trained on {info['images']} images{score_text})\n"
        f"use it: augment evaluate RUN_DIR --set evaluate.teacher={out} --set evaluate.soft_labels=true"
    )


@app.command("inspect-data")
@handle_errors
def inspect_data(
    config: ConfigArg,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.", metavar="")] = False,
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


# ----------------------------------------------------------------------------------------------
# Orchestration and tracking: the pipeline as a Prefect flow, schedules, the MLflow UI, comparison.


def _check_uri(uri: str) -> str:
    """``uri`` when its form is a usable tracking store, else one line naming it (and where it came from)."""
    from augment.addresses import tracking_uri_problem
    from augment.errors import TrackingError

    problem = tracking_uri_problem(uri)
    if problem:
        where = " (from MLFLOW_TRACKING_URI)" if os.environ.get("MLFLOW_TRACKING_URI") == uri else ""
        raise TrackingError(f"tracking URI {uri!r}{where} is malformed: {problem}")
    return uri


def _check_dask_address(address: str, timeout_s: float = 3.0) -> None:
    """Raise :class:`ConfigError` (one line naming ``address``) unless a Dask scheduler could be there.

    The form is checked (``tcp://HOST:PORT``), then one TCP connection is tried with ``timeout_s``: a
    Dask client would otherwise retry for 30 s and end in a Prefect traceback. It lives here, not in
    the flows, because importing those (Prefect, MLflow) takes seconds before the check could run.
    """
    import socket

    from augment.addresses import dask_address_problem, split_host_port
    from augment.errors import ConfigError

    problem = dask_address_problem(address)
    if problem:
        raise ConfigError(f"Dask scheduler address {address!r} is malformed: {problem}")
    host, port = split_host_port(address.strip().rpartition("://")[2])
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise ConfigError(
            f"Dask scheduler {address} is unreachable ({reason}, {timeout_s:g} s timeout); "
            "start it, or give another --dask-address / dask_address"
        ) from None


def _check_tracking(cfg: Any) -> None:
    """Fail in seconds, before Prefect starts, when the tracking store or a Dask scheduler cannot be reached."""
    if cfg.tracking.enabled:
        from augment.tracking import check_reachable, resolve_uri

        check_reachable(_check_uri(resolve_uri(cfg.tracking.uri)))
    for address in {cfg.generate.dask_address, cfg.evaluate.dask_address} - {None}:
        _check_dask_address(address)


def _ui_hint(uri: str, experiment_id: str | None, run_id: str | None) -> str:
    """Where to look: the experiment's runs table (its saved verdict view) and this run's page."""
    from augment.tracking import DEFAULT_URI, runs_table_url

    where = "augment ui" if uri == DEFAULT_URI else f"augment ui --uri '{uri}'"
    if uri.startswith(("http://", "https://")):
        base, where = uri.rstrip("/"), None
    else:
        base = "http://127.0.0.1:5000"
    page = runs_table_url(base, experiment_id) if experiment_id else base
    if experiment_id and run_id:
        page += f"  (this run: {base}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"MLflow UI: {where}  then open {page}" if where else f"MLflow UI: {page}"


@app.command()
@handle_errors
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even when the data matches the champion's.", metavar="")
    ] = False,
    skip_if_unchanged: Annotated[
        bool,
        typer.Option(
            "--skip-if-unchanged", help="Stop early when data, config and code equal the champion's.", metavar=""
        ),
    ] = False,
    trainings: Annotated[
        int,
        typer.Option(
            "--trainings",
            min=1,
            help="Train the GAN this many times (train.seed s, s+1, ...) and judge augmentation over the trainings.",
        ),
    ] = 1,
    quiet: QuietOpt = False,
) -> None:
    """Run the whole pipeline (train, generate, evaluate, register) as a Prefect flow tracked in MLflow."""
    if trainings > 1 and skip_if_unchanged:
        fail("--skip-if-unchanged does not apply to --trainings (every training is a new one)")
    _setup_logging(quiet)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Prefect's API calls, one line per request
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from augment.config import load_config

    cfg = load_config(config, set_)
    _check_tracking(cfg)
    if cfg.evaluate.teacher is not None:  # before the training: a teacher the evaluation would refuse fails now
        from augment.data import load_data
        from augment.metrics.downstream import load_checked_teacher

        load_checked_teacher(cfg.evaluate.teacher, load_data(cfg.data, cfg.seed))
    from flows.pipeline import pipeline

    # Bars (training kimg, evaluation steps, each with an ETA) in the foreground; log lines go through
    # tqdm so they never break a bar, and Prefect's per-task "Finished in state" lines stay out.
    logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)
    if trainings > 1:
        from flows.trainings import training_seeds, trainings_flow

        training_seeds(cfg, trainings)  # bad input fails before the first training
        with _bars_and_logs(not quiet):
            over = trainings_flow(
                config=str(config), overrides=list(set_ or []), trainings=trainings, progress=not quiet
            )
        from augment.metrics.spread import table

        for i, r in enumerate(over["trainings"]):
            typer.echo(f"training {i + 1} ({r['run_dir']}): {r['verdict_status']}")
        typer.echo(table(over["spread"]))
        typer.echo(f"verdict: {over['verdict']}\nreport: {over['report']}")
        if over.get("mlflow_run_id"):
            typer.echo(_ui_hint(over["tracking_uri"], over.get("experiment_id"), over["mlflow_run_id"]))
        return
    with _bars_and_logs(not quiet):
        result = pipeline(
            config=str(config),
            overrides=list(set_ or []),
            force=force,
            skip_if_unchanged=skip_if_unchanged,
            progress=not quiet,
        )
    if result.get("skipped"):
        typer.echo(f"skipped: {result['reason']}")
        return
    typer.echo(f"run directory: {result['run_dir']}\nreport: {result['report']}")
    if result.get("verdict"):
        typer.echo(f"verdict: {result['verdict']}")
    if result.get("deploy"):
        typer.echo(f"in your code: {result['deploy']}")
    promo = result.get("promotion")
    if promo:
        typer.echo(f"generator: {promo['model_uri']} -> {promo['alias']} ({promo['reason']})")
    if result.get("mlflow_run_id"):
        typer.echo(_ui_hint(result["tracking_uri"], result.get("experiment_id"), result["mlflow_run_id"]))


def _check_schedule(cron: str, timezone: str | None) -> None:
    """One line naming a cron string or time zone that Prefect's schedule would refuse (before any server is needed)."""
    import zoneinfo

    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    if timezone is not None:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            fail(f"--timezone {timezone!r} is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)")
    try:
        CronSchedule(cron=cron, timezone=timezone or "UTC")
    except ValidationError:
        fail(f'--cron {cron!r} is not a valid cron schedule (five fields, e.g. "0 3 * * *": 03:00 every day)')


@app.command()
@handle_errors
def serve(
    config: ConfigArg,
    cron: Annotated[str, typer.Option("--cron", help='Cron schedule, e.g. "0 3 * * *" (UTC unless --timezone).')],
    set_: SetOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Deployment name (default: the config's name).")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="IANA time zone of the cron schedule.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Scheduled runs retrain even on unchanged data.", metavar="")
    ] = False,
) -> None:
    """Serve the pipeline as a scheduled Prefect deployment (blocks; Ctrl-C stops it).

    Runs whose data fingerprint equals the champion's skip retraining unless --force. Point Prefect at a
    server first (`prefect server start`, PREFECT_API_URL=http://127.0.0.1:4200/api).
    """
    _setup_logging(False)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _check_schedule(cron, timezone)
    from augment.config import load_config

    cfg = load_config(config, set_)
    _check_tracking(cfg)
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # a temporary server would keep the schedule only while this process lives
        fail(
            "augment serve needs a Prefect server for its schedule: start one with `prefect server start "
            "--host 127.0.0.1`, then export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    from flows.serve import serve_pipeline

    serve_pipeline(config, cron, overrides=list(set_ or []), name=name or cfg.name, timezone=timezone, force=force)


@app.command()
@handle_errors
def ui(
    config: Annotated[Path | None, typer.Argument(help="Use this config's tracking store.", show_default=False)] = None,
    uri: Annotated[
        str | None, typer.Option("--uri", help="Tracking store (default: MLFLOW_TRACKING_URI or sqlite:///mlruns.db).")
    ] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the pipeline's tracking store (Ctrl-C stops it)."""
    from augment.tracking import check_reachable, resolve_uri

    if uri is None and config is not None:
        from augment.config import load_config

        uri = load_config(config).tracking.uri
    store = uri if uri is not None and config is None else resolve_uri(uri)
    if store.startswith(("http://", "https://")):
        fail(f"{store} is a tracking server already: open it in a browser")
    check_reachable(_check_uri(store))
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} for {store} (Ctrl-C stops it)")
    sys.stdout.flush()
    # One worker and no job runner (GenAI judges): a dozen processes otherwise, on a laptop's cores.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # Become the UI process (exec): signals reach it directly and nothing is left behind on exit.
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
    )


@app.command()
@handle_errors
def compare(
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Experiment name (default: gan-augment, or the config's).")
    ] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table to this CSV file.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Take the tracking store and experiment from this config.")
    ] = None,
    uri: Annotated[
        str | None, typer.Option("--uri", help="Tracking store (default: MLFLOW_TRACKING_URI or sqlite:///mlruns.db).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many recent pipeline runs.")] = 20,
) -> None:
    """Print the recent pipeline runs side by side: data, fd_domain, downstream deltas, champion/challenger."""
    from augment.errors import OutputError
    from augment.tracking import compare_display, compare_runs, resolve_uri

    if csv is not None and not csv.parent.is_dir():  # before the store is read: fail without the table
        raise OutputError(f"{csv}: cannot write the CSV: folder {csv.parent} does not exist")
    if config is not None:
        from augment.config import load_config

        tracking = load_config(config).tracking
        uri, experiment = uri or tracking.uri, experiment or tracking.experiment
    store = _check_uri(resolve_uri(uri) if uri is None or config is not None else uri)
    table = compare_runs(store, experiment or "gan-augment", limit=limit)
    if table.empty:
        typer.echo(f"no pipeline runs in experiment {experiment or 'gan-augment'!r}")
        return
    typer.echo(compare_display(table, width=shutil.get_terminal_size((100, 24)).columns), nl=False)
    if csv is not None:
        try:
            table.to_csv(csv, index=False)
        except OSError as err:
            raise OutputError(f"{csv}: cannot write the CSV ({err.strerror or err})") from None
        typer.echo(f"wrote {csv}")


@app.command()
@handle_errors
def spread(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Evaluated run directories: one recipe and dataset, another train.seed each.")
    ],
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the result to this JSON file.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the deltas to this PNG file.")] = None,
) -> None:
    """The verdict over several trainings of the GAN: per-training deltas and the 95% interval over trainings."""
    import json

    from augment.errors import OutputError
    from augment.io import atomic_write_text
    from augment.metrics.plots import save_figure
    from augment.metrics.spread import spread_figure, spread_runs, table

    for path in (json_path, plot):
        if path is not None and not path.parent.is_dir():  # before the runs are read: fail without output
            raise OutputError(f"{path}: cannot write: folder {path.parent} does not exist")
    out = spread_runs(run_dirs)
    typer.echo(table(out))
    typer.echo(out["verdict"]["text"])
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(out, indent=1) + "\n")
        typer.echo(f"wrote {json_path}")
    if plot is not None:
        save_figure(spread_figure(out), plot)
        typer.echo(f"wrote {plot}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _clear_bars()
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated:
        _clear_bars()
        typer.echo("terminated (SIGTERM)", err=True)
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
