"""The training loop: one flat function that reads top to bottom (after EDM's training_loop.py).

Progress is counted in images shown to the discriminator (kimg), never in epochs. All randomness
of a step (minibatch, latents, DiffAugment) comes from one ``torch.Generator`` whose state is part
of the training state, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from augment import checkpoint, rundir
from augment.config import Config, config_from_dict, flatten, save_config
from augment.data import PreparedData, load_data
from augment.devices import keep_freed_memory, resolve_device, resolve_precision, usable_cores
from augment.diffaug import AdaptiveAugment
from augment.errors import CheckpointError, ConfigError, OutputError
from augment.generate import save_class_grid
from augment.io import atomic_write_text
from augment.losses import FAKE_CONTRAST_DIM, GanLoss, class_noise_scales, real_draw_weights
from augment.train_options import LossOptions, NetworkOptions, PerformanceOptions, ScheduleOptions, loop_kwargs
from augment.train_parts import BestSnapshot, MetricFn, Networks, Ticker, TrainingState

__all__ = [
    "LossOptions",
    "MetricFactory",
    "MetricFn",
    "NetworkOptions",
    "PerformanceOptions",
    "ScheduleOptions",
    "check_new_run_dir",
    "check_resume_config",
    "load_resumable",
    "loop_kwargs",
    "set_threads",
    "train",
    "training_loop",
]

#: Sampling seed of the ``fakes-*.png`` grids: the same latents every snapshot, so grids compare over training.
GRID_SEED = 123

log = logging.getLogger(__name__)

#: Builds the best-snapshot metric once the run directory exists: ``(data, cfg, run_dir, device) -> MetricFn``
#: (:func:`augment.metrics.evaluate.best_snapshot_metric` is the one the ``augment`` command hands in).
MetricFactory = Callable[[PreparedData, Config, Path, torch.device], MetricFn]


def set_threads(threads: int | None) -> None:
    torch.set_num_threads(threads or usable_cores())


def training_loop(
    *,
    run_dir: Path,
    data: PreparedData,
    config: dict[str, Any],
    seed: int = 0,
    networks: NetworkOptions = NetworkOptions(),
    loss: LossOptions = LossOptions(),
    schedule: ScheduleOptions = ScheduleOptions(),
    performance: PerformanceOptions = PerformanceOptions(),
    device: torch.device | str = "cpu",
    resume: bool = False,
    progress: bool = True,
    metric_fn: MetricFn | None = None,
    best_metric: str = "fd_domain",
    on_tick: Callable[[dict[str, float]], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> Path:
    """Train a class-conditional GAN on ``data.train`` (val and test never reach it).

    Returns the path of the snapshot the run hands on (best by ``best_metric`` when ``metric_fn``
    is given, else the final one).

    Data parallel (see ``augment.distributed``): ``world_size`` processes each draw
    ``batch_size // world_size`` images per step from their own random stream, ``wrap`` turns G and
    D into DistributedDataParallel modules for the two players' steps, and only ``rank`` 0 writes
    files or calls ``on_tick``/``metric_fn``.

    ``performance.compile`` runs the adversarial steps through ``torch.compile``d networks (the eager
    modules keep the parameters, EMA and checkpoints); with ``reduce-overhead`` (or ``max-autotune``)
    on CUDA each step's compiled kernels replay as CUDA graphs, and every step is marked as a new
    iteration so the graphs may reuse the previous step's memory. On CUDA the loop never waits for
    the device between ticks: losses accumulate on the device and are read once a tick.
    """
    start_time = time.time()
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()
    run_dir = Path(run_dir)
    is_main = rank == 0

    # Load dataset: the whole (small) train split lives on the device as one tensor.
    log.info("Loading dataset...")
    images = data.train.as_float().to(device)
    labels = data.train.labels.to(device)
    log.info("%d training images, %d classes, %s", len(images), data.num_classes, "x".join(map(str, images.shape[1:])))

    # Construct networks.
    log.info("Constructing networks...")
    state = load_resumable(run_dir / rundir.TRAINING_STATE, data) if resume else None
    torch.manual_seed(seed)
    nets = Networks.build(
        networks,
        data,
        device,
        state,
        performance.channels_last,
        aux_classifier=loss.aux_class_weight > 0,
        contrast_dim=FAKE_CONTRAST_DIM if loss.fake_contrast > 0 else 0,
        recon=loss.d_recon > 0,
        uncond_low=loss.uncond_low > 0,
    )
    if performance.channels_last:  # NHWC convolutions (faster with bf16 on tensor cores and oneDNN/AMX)
        images = images.contiguous(memory_format=torch.channels_last)
    transition = loss.cond_transition is not None  # transitional training: the class enters gradually
    if transition and performance.compile:
        # A compiled network specialises on the strength: the ramp would recompile at every step.
        raise ConfigError(
            "train.cond_transition_kimg runs the networks eagerly: set train.compile=false "
            "(train.cuda.compile=false on CUDA)"
        )
    precision = resolve_precision(performance.precision, device)
    log.info("Training on %s in %s%s", device, precision, ", channels_last" if performance.channels_last else "")
    # bf16 autocast: matmuls/convolutions in bf16, weights, optimizer and losses stay fp32.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    fused = device.type in ("cuda", "cpu")
    opt_G = torch.optim.Adam(nets.G.parameters(), lr=schedule.lr_g, betas=schedule.betas, fused=fused)
    opt_D = torch.optim.Adam(nets.D.parameters(), lr=schedule.lr_d, betas=schedule.betas, fused=fused)
    gen = torch.Generator(device).manual_seed(seed + 1_000_003 * rank)  # rank 0: the single-process stream
    steps = nets.step_modules(wrap, performance)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # Limited-data regularisers: the ADA and APA controllers and LeCam's anchors live on the device and
    # in the training state (a resumed run continues with the same p and anchors).
    ada = AdaptiveAugment(loss.ada_target, loss.ada_kimg, device=device) if loss.ada_target is not None else None
    apa = AdaptiveAugment(loss.apa_target, loss.ada_kimg, device=device) if loss.apa_target is not None else None
    counts = data.train.counts(data.num_classes)
    # The reals' class draw (train.real_class_power): None = every image equally often.
    draw_weights = real_draw_weights(labels, counts, loss.real_class_power) if loss.real_class_power != 1 else None
    loss_fn = GanLoss(
        loss.loss,
        list(loss.diffaug),
        loss.r1_gamma,
        r2_gamma=loss.r2_gamma,
        ada=ada,
        ada_extra=list(loss.ada_extra),
        apa=apa,
        lecam_weight=loss.lecam_weight,
        bcr_weight=loss.bcr_weight,
        mode_seeking=loss.mode_seeking,
        gsr_weight=loss.gsr_weight,
        aux_weight=loss.aux_class_weight,
        class_noise=class_noise_scales(counts, loss.class_noise) if loss.class_noise > 0 else None,
        fake_contrast=loss.fake_contrast,
        recon_weight=loss.d_recon,
        uncond_low=loss.uncond_low,
        class_counts=counts,
        device=device,
    )
    trained = TrainingState(nets, opt_G, opt_D, gen, loss_fn, data, config)
    if state is not None:
        trained.restore(state, rank)
        log.info("Resuming from %s at %.1f kimg", run_dir / rundir.TRAINING_STATE, trained.cur_nimg / 1000)
    log.info("G: %d params, D: %d params", *(sum(p.numel() for p in m.parameters()) for m in (nets.G, nets.D)))

    # Train.
    cur_nimg = trained.cur_nimg
    total_nimg = int(schedule.total_kimg * 1000)
    snap_nimg = max(int(schedule.snapshot_kimg * 1000), 1)
    eval_nimg = int(schedule.eval_kimg * 1000)
    step_nimg, batch_size = schedule.batch_size, schedule.batch_size // world_size  # per step: all ranks, per rank
    ema_beta = 0.5 ** (step_nimg / (schedule.ema_kimg * 1000)) if schedule.ema_kimg > 0 else 0.0
    cuda_graphs = (
        steps.compiled and device.type == "cuda" and performance.compile_mode in ("reduce-overhead", "max-autotune")
    )
    ticker = Ticker(run_dir, schedule.total_kimg, cur_nimg, step_nimg, snap_nimg, device, progress, start_time)
    ticker.on_tick = on_tick if is_main else None
    evaluator = BestSnapshot(
        run_dir,
        metric_fn if is_main else None,
        best_metric,
        eval_nimg,
        trained,
        start_time,
        schedule.ensemble,
        first_nimg=loss.conditional_nimg,  # checks only once the networks are fully conditional
    )
    # Transitional training: the class conditioning's scale (0 -> 1 over the ramp), set for the
    # images shown so far, so the checks and snapshots at cur_nimg see the networks' scale there.
    if transition:
        nets.set_cond_strength(loss.cond_strength(cur_nimg))
    log.info("Training for %g kimg...", schedule.total_kimg)
    stop_reason = "done"
    while cur_nimg < total_nimg:
        if cuda_graphs:  # nothing a graph returned in the last step is read again
            torch.compiler.cudagraph_mark_step_begin()

        # Discriminator step: a real minibatch and fakes of the same labels.
        lr_scale = None  # constant rates: nothing to set or log
        if schedule.lr_decay_from is not None:
            lr_scale = schedule.lr_scale(cur_nimg, time.time() - start_time)
            for opt, lr in ((opt_G, schedule.lr_g), (opt_D, schedule.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * lr_scale
        if draw_weights is None:  # every image equally often (this draw keeps older runs' streams)
            idx = torch.randint(len(images), (batch_size,), generator=gen, device=device)
        else:
            idx = torch.multinomial(draw_weights, batch_size, replacement=True, generator=gen)
        real, y = images[idx], labels[idx]
        if loss.mirror:  # dataset x-flips: the flipped images are training data, for D and so for G
            flip = torch.rand(batch_size, generator=gen, device=device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        z = torch.randn(batch_size, nets.G.z_dim, generator=gen, device=device)
        opt_D.zero_grad(set_to_none=True)
        r1_now = (cur_nimg // step_nimg) % loss.r1_interval == 0  # lazy R1: every r1_interval-th D step
        with autocast:
            loss_D = loss_fn.discriminator(
                steps.G, steps.D, real, y, z, gen, r1=r1_now, r1_scale=loss.r1_interval, D_r1=steps.D_r1
            )
        loss_D.backward()
        opt_D.step()

        # Generator step (its classes: the real batch's, or every class equally often), after every
        # d_steps-th D step (counted from the images shown, so a resume keeps the rhythm).
        loss_G = None
        if (cur_nimg // step_nimg) % loss.d_steps == loss.d_steps - 1:
            y_g = y  # G's classes: the reals' (which rpgan's pairing also scores), or uniform draws
            if loss.g_labels == "uniform":
                y_g = torch.randint(data.num_classes, (batch_size,), generator=gen, device=device)
            z = torch.randn(batch_size, nets.G.z_dim, generator=gen, device=device)
            opt_G.zero_grad(set_to_none=True)
            nets.D.requires_grad_(False)
            with autocast:
                keep = loss.top_k_keep(cur_nimg, batch_size, len(images))
                loss_G = loss_fn.generator(steps.G, steps.D_frozen, y_g, z, gen, keep=keep, real=(real, y))
            loss_G.backward()
            nets.D.requires_grad_(True)
            opt_G.step()

        # Update EMA (every step: its half-life counts images shown, as StyleGAN2-ADA's does).
        nets.update_ema(ema_beta)
        ticker.add(loss_D, loss_G)
        prev_nimg, cur_nimg = cur_nimg, cur_nimg + step_nimg
        if transition:
            nets.set_cond_strength(loss.cond_strength(cur_nimg))
        done = cur_nimg >= total_nimg
        if schedule.max_minutes is not None and (time.time() - start_time) / 60 >= schedule.max_minutes and not done:
            done, stop_reason = True, f"time budget of {schedule.max_minutes} min"

        # Tick: log averaged losses and speed.
        cond = nets.G.cond_strength if transition else None
        ticker.maybe_tick(prev_nimg, cur_nimg, done, loss_fn.controllers, write=is_main, cond=cond, lr_scale=lr_scale)

        # Standing statistics: G_ema's BatchNorm statistics for its own weights, before it is checked or saved.
        snap_due = is_main and (done or cur_nimg // snap_nimg > prev_nimg // snap_nimg)
        if schedule.ema_bn == "standing" and (snap_due or evaluator.due(prev_nimg, cur_nimg, done)):
            nets.standing_stats(labels, batch_size)

        # Evaluate the EMA generator; keep the best snapshot (GANs degrade late in training).
        evaluator.maybe_evaluate(prev_nimg, cur_nimg, done, ticker.on_tick)

        # Snapshot: inference network, sample grid, training state (in that order: the state is
        # written last, so a resumed run never skips a snapshot it had not finished).
        if snap_due:
            checkpoint.save_snapshot(trained.snapshot(cur_nimg), run_dir / rundir.snapshot_name(cur_nimg // 1000))
            save_class_grid(nets.G_ema, run_dir / rundir.fakes_name(cur_nimg // 1000), data.num_classes, seed=GRID_SEED)
            trained.save(run_dir / rundir.TRAINING_STATE, cur_nimg)
        if done:
            break
    ticker.close()

    # Done.
    if is_main:
        checkpoint.save_snapshot(trained.snapshot(cur_nimg), run_dir / rundir.FINAL_SNAPSHOT)
    log.info("Stopped at %.1f kimg (%s) after %.1f s", cur_nimg / 1000, stop_reason, time.time() - start_time)
    if transition and nets.G.cond_strength < 1.0:
        log.warning(
            "Stopped inside the conditioning ramp (strength %.2f; conditional from %g kimg): the final "
            "snapshot only partly follows the class (resume with a larger train.kimg)",
            nets.G.cond_strength,
            loss.conditional_nimg / 1000,
        )
    if trained.best["kimg"] is not None:
        log.info("Best %s %.4g at %.1f kimg", best_metric, trained.best["value"], trained.best["kimg"])
        return run_dir / rundir.BEST_SNAPSHOT
    return run_dir / rundir.FINAL_SNAPSHOT


def load_resumable(state_path: Path, data: PreparedData) -> dict[str, Any]:
    """The training state at ``state_path``, checked to belong to ``data`` (same classes, same images)."""
    state = checkpoint.load(state_path, checkpoint.STATE_FORMAT)
    rundir.check_data_matches(state_path, state["class_names"], state["data_fingerprint"], data)
    return state


#: What a resumed run may change: the budget and how it is spent, never what fixes the weights'
#: shapes, the optimizer's state or the data (those are refused by :func:`check_resume_config`).
RESUMABLE_FIELDS = (
    "train.kimg",
    "train.max_minutes",
    "train.snapshot_kimg",
    "train.eval_kimg",
    "train.threads",
)
#: Fields that decide the weights and the optimizer of a run (every other section is free). The
#: data is checked by its fingerprint instead (:func:`load_resumable`), so a moved ``data.root``
#: with the same images resumes.
FIXED_SECTIONS = ("seed", "model.", "train.")


def check_resume_config(state: dict[str, Any], cfg: Config, where: Path) -> None:
    """Refuse a resume whose config changes a field that fixes the architecture or the optimizer
    (the data is checked by its fingerprint): the weights would keep their old shapes and the
    optimizer state its old settings while ``config.yaml`` claimed the new ones. Only
    :data:`RESUMABLE_FIELDS` may change (and are then applied: the loop reads them from the new
    config)."""
    raw = dict(state.get("config") or {})
    try:  # a state written before a field existed: its value was the default
        old = config_from_dict(raw, source=str(where)).flat()
    except ConfigError:  # a field of an older version: compare the values that are there
        old = flatten(raw)
    new = cfg.flat()
    changed = [
        key
        for key in new
        if key.startswith(FIXED_SECTIONS) and key not in RESUMABLE_FIELDS and old.get(key) != new[key]
    ]
    if changed:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new[k]!r})" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise CheckpointError(
            f"{where}: --resume cannot change {shown}{more}: they fix the weights or the optimizer; "
            f"a resume may change only {', '.join(RESUMABLE_FIELDS)} (train anew for the others)"
        )


def check_new_run_dir(out: Path | None) -> None:
    """Refuse to train into a folder that holds a run already (without ``--resume`` it would
    overwrite the old run's snapshots and append to its ``stats.jsonl``)."""
    if out is None or not Path(out).is_dir():
        return
    found = rundir.holds_a_run(Path(out))
    if found:
        raise OutputError(f"{out}: holds a training run already ({found}); --resume continues it, or give a new --out")


def train(
    cfg: Config,
    *,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    data: PreparedData | None = None,
    metric_factory: MetricFactory | None = None,
    on_tick: Callable[[dict[str, float]], None] | None = None,
    **parallel: Any,
) -> tuple[Path, Path]:
    """Train from a config. Returns ``(run_dir, snapshot_path)``.

    ``train.eval_kimg > 0`` ranks snapshots by a metric that the caller supplies as
    ``metric_factory(data, cfg, run_dir, device)`` (called once the run directory exists);
    evaluation owns that metric (:func:`augment.metrics.evaluate.best_snapshot_metric`), training only calls it.

    Example:
        >>> from augment.config import load_config
        >>> cfg = load_config(None, ["train.kimg=0.128", "model.g_channels=8", "model.d_channels=8"])
        >>> run_dir, snap = train(cfg, out=tmp_path / "run", progress=False)  # doctest: +SKIP
    """
    if cfg.train.eval_kimg > 0 and metric_factory is None:
        raise ConfigError(
            f"train.eval_kimg={cfg.train.eval_kimg:g} keeps the best snapshot by a metric, and none was given: "
            "pass metric_factory=augment.metrics.evaluate.best_snapshot_metric (the augment command does), "
            "or set train.eval_kimg=0"
        )
    device = resolve_device(cfg.train.device)
    set_threads(cfg.train.threads)
    if data is None:  # bad data fails before a run directory exists
        data = load_data(cfg.data, cfg.seed)
    # A run stopped before its first checkpoint (a config error, a full disk, SIGTERM) leaves no folder behind.
    with rundir.claim_run_dir(cfg, out, resume) as run_dir:
        if resume:  # a refused resume leaves the run's config.yaml and data.json as they were
            state_path = run_dir / rundir.TRAINING_STATE
            check_resume_config(load_resumable(state_path, data), cfg, state_path)
        save_config(cfg, run_dir / rundir.CONFIG)
        atomic_write_text(run_dir / rundir.DATA, json.dumps(data.summary(), indent=2))
        metric_fn = metric_factory(data, cfg, run_dir, device) if metric_factory and cfg.train.eval_kimg > 0 else None
        snap = training_loop(
            run_dir=run_dir,
            data=data,
            **loop_kwargs(cfg, device),
            device=device,
            resume=resume,
            progress=progress,
            metric_fn=metric_fn,
            on_tick=on_tick,
            **parallel,  # rank / world_size / wrap from augment.distributed
        )
    return run_dir, snap
