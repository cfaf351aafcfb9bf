"""The training loop: one flat function that reads top to bottom (after EDM's training_loop.py).

Progress is counted in images shown to the discriminator (kimg), never in epochs. All randomness
of a step (minibatch, latents, DiffAugment) comes from one ``torch.Generator`` whose state is part
of the training state, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from augment import checkpoint, rundir
from augment.config import Config, config_from_dict, flatten, save_config
from augment.data import PreparedData, load_data
from augment.devices import keep_freed_memory, resolve_device, resolve_precision, usable_cores
from augment.diffaug import AdaptiveAugment
from augment.errors import CheckpointError, ConfigError, OutputError
from augment.generate import save_class_grid
from augment.io import atomic_write_text
from augment.losses import GanLoss
from augment.models import ConditionalGenerator, ProjectionDiscriminator

#: Sampling seed of the ``fakes-*.png`` grids: the same latents every snapshot, so grids compare over training.
GRID_SEED = 123

log = logging.getLogger(__name__)

MetricFn = Callable[[torch.nn.Module], dict[str, float]]


def set_threads(threads: int | None) -> None:
    torch.set_num_threads(threads or usable_cores())


def training_loop(
    *,
    run_dir: Path,
    data: PreparedData,
    config: dict[str, Any],
    seed: int = 0,
    z_dim: int = 64,
    g_channels: int = 64,
    d_channels: int = 64,
    max_mult: int = 4,
    d_spectral_norm: bool = False,
    loss: str = "hinge",
    r1_gamma: float = 0.1,
    diffaug: list[str] | tuple[str, ...] = ("translation", "cutout"),
    ada_target: float | None = None,
    ada_kimg: float = 20.0,
    lecam_weight: float = 0.0,
    mode_seeking: float = 0.0,
    total_kimg: float = 50.0,
    batch_size: int = 64,
    lr_g: float = 2e-4,
    lr_d: float = 2e-4,
    betas: tuple[float, float] = (0.0, 0.99),
    ema_kimg: float = 1.0,
    snapshot_kimg: float = 10.0,
    eval_kimg: float = 0.0,
    max_minutes: float | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    compile_mode: str = "default",
    r1_interval: int = 1,
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

    ``compile`` runs the adversarial steps through ``torch.compile``d networks (the eager modules
    keep the parameters, EMA and checkpoints); the R1 pass then runs eagerly every ``r1_interval``
    D steps. ``compile_mode`` is torch.compile's ``mode``; with ``reduce-overhead`` (or
    ``max-autotune``) on CUDA each step's compiled kernels replay as CUDA graphs, and every step is
    marked as a new iteration so the graphs may reuse the previous step's memory. On CUDA the loop
    never waits for the device between ticks: losses accumulate on the device and are read once a
    tick.
    """
    start_time = time.time()
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()
    run_dir = Path(run_dir)
    state_path = run_dir / rundir.TRAINING_STATE
    num_classes, image_size, channels = data.num_classes, data.train.images.shape[-1], data.train.images.shape[1]

    # Load dataset: the whole (small) train split lives on the device as one tensor.
    log.info("Loading dataset...")
    images = data.train.as_float().to(device)
    labels = data.train.labels.to(device)
    class_counts = data.train.counts(num_classes)
    log.info("%d training images, %d classes, %dx%dx%d", len(images), num_classes, channels, image_size, image_size)

    # Construct networks.
    log.info("Constructing networks...")
    g_kwargs = dict(
        num_classes=num_classes,
        image_size=image_size,
        channels=channels,
        z_dim=z_dim,
        width=g_channels,
        max_mult=max_mult,
    )
    d_kwargs = dict(
        num_classes=num_classes,
        image_size=image_size,
        channels=channels,
        width=d_channels,
        max_mult=max_mult,
        spectral=d_spectral_norm,
    )
    state = load_resumable(state_path, data) if resume else None
    if state is not None:  # on resume the architecture comes from the checkpoint
        g_kwargs, d_kwargs = dict(state["generator_kwargs"]), dict(state["discriminator_kwargs"])
    torch.manual_seed(seed)
    G = ConditionalGenerator(**g_kwargs).to(device).train()
    D = ProjectionDiscriminator(**d_kwargs).to(device).train()
    if channels_last:  # NHWC convolutions (faster with bf16 on tensor cores and oneDNN/AMX)
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    precision = resolve_precision(precision, device)
    log.info("Training on %s in %s%s", device, precision, ", channels_last" if channels_last else "")
    # bf16 autocast: matmuls/convolutions in bf16, weights, optimizer and losses stay fp32.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    fused = device.type in ("cuda", "cpu")
    opt_G = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas, fused=fused)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas, fused=fused)
    gen = torch.Generator(device).manual_seed(seed + 1_000_003 * rank)  # rank 0: the single-process stream
    G_step, D_step = (wrap(G), wrap(D)) if wrap is not None else (G, D)
    D_r1 = None  # eager D for the R1 pass when the adversarial passes are compiled
    # The G step needs gradients through D, not of D's weights: it runs D frozen and unwrapped
    # (no DDP all-reduce for gradients nobody uses), as StyleGAN2-ADA's phases do.
    D_frozen: torch.nn.Module = D
    if compile:
        D_r1 = D_step
        G_step, D_step = torch.compile(G_step, mode=compile_mode), torch.compile(D_step, mode=compile_mode)
        D_frozen = D_step if wrap is None else torch.compile(D, mode=compile_mode)
    cuda_graphs = compile and device.type == "cuda" and compile_mode in ("reduce-overhead", "max-autotune")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    is_main = rank == 0
    # Limited-data regularisers: the ADA controller and LeCam's anchors live on the device and in
    # the training state (a resumed run continues with the same p and anchors).
    ada = AdaptiveAugment(ada_target, ada_kimg, device=device) if ada_target is not None else None
    loss_fn = GanLoss(
        loss, diffaug, r1_gamma, ada=ada, lecam_weight=lecam_weight, mode_seeking=mode_seeking, device=device
    )
    cur_nimg = 0
    best = {"value": float("inf"), "kimg": None}
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        gen.set_state(state["rng"])
        if rank > 0:  # only rank 0's stream is saved; the others continue from a fresh, distinct one
            gen.manual_seed(int(torch.randint(1 << 62, (1,), generator=gen)) + rank)
        cur_nimg = int(state["cur_nimg"])
        best = dict(state.get("best", best))
        if ada is not None and state.get("ada") is not None:
            ada.load_state_dict(state["ada"])
        if loss_fn.lecam is not None and state.get("lecam_ema") is not None:
            loss_fn.lecam.ema.copy_(state["lecam_ema"].to(device))
        log.info("Resuming from %s at %.1f kimg", state_path, cur_nimg / 1000)
    log.info(
        "G: %d params, D: %d params", sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())
    )

    def snapshot(nimg: int, metrics: dict[str, float] | None = None) -> checkpoint.Snapshot:
        return checkpoint.Snapshot(
            generator_state={k: v.detach().cpu().clone() for k, v in G_ema.state_dict().items()},
            generator_kwargs=g_kwargs,
            class_names=list(data.class_names),
            class_counts=class_counts,
            config=config,
            kimg=nimg / 1000,
            data_fingerprint=data.fingerprint,
            metrics=metrics or {},
        )

    def save_state(nimg: int) -> None:
        checkpoint.save(
            {
                "format": checkpoint.STATE_FORMAT,
                "G": G.state_dict(),
                "D": D.state_dict(),
                "G_ema": G_ema.state_dict(),
                "opt_G": opt_G.state_dict(),
                "opt_D": opt_D.state_dict(),
                "rng": gen.get_state(),
                "cur_nimg": nimg,
                "best": best,
                "ada": ada.state_dict() if ada is not None else None,
                "lecam_ema": loss_fn.lecam.ema.detach().cpu() if loss_fn.lecam is not None else None,
                "generator_kwargs": g_kwargs,
                "discriminator_kwargs": d_kwargs,
                "class_names": list(data.class_names),
                "data_fingerprint": data.fingerprint,
                "config": config,
            },
            state_path,
        )

    # Train.
    total_nimg = int(total_kimg * 1000)
    snap_nimg = max(int(snapshot_kimg * 1000), 1)
    eval_nimg = int(eval_kimg * 1000)
    step_nimg, batch_size = batch_size, batch_size // world_size  # images per step (all ranks), per rank
    # A tick reads the losses back (a host sync): every kimg on the CPU, every 64 steps on a GPU.
    tick_nimg = min(max(1000, 64 * step_nimg if device.type == "cuda" else 0), snap_nimg)
    eval_seconds = 0.0
    ema_beta = 0.5 ** (step_nimg / (ema_kimg * 1000)) if ema_kimg > 0 else 0.0
    g_params, ema_params = list(G.parameters()), list(G_ema.parameters())
    g_bufs, ema_bufs = list(G.buffers()), list(G_ema.buffers())
    loss_sum = torch.zeros(2, device=device)
    loss_steps = 0
    tick_start_nimg, tick_start_time = cur_nimg, time.time()
    stats_path = run_dir / rundir.STATS
    log.info("Training for %g kimg...", total_kimg)
    bar = tqdm(
        total=total_kimg,
        initial=cur_nimg / 1000,
        unit="kimg",
        disable=not progress,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} kimg [{elapsed}<{remaining}{postfix}]",
    )
    stop_reason = "done"
    while cur_nimg < total_nimg:
        if cuda_graphs:  # nothing a graph returned in the last step is read again
            torch.compiler.cudagraph_mark_step_begin()

        # Discriminator step: a real minibatch and fakes of the same labels.
        idx = torch.randint(len(images), (batch_size,), generator=gen, device=device)
        real, y = images[idx], labels[idx]
        z = torch.randn(batch_size, G.z_dim, generator=gen, device=device)
        opt_D.zero_grad(set_to_none=True)
        r1_now = (cur_nimg // step_nimg) % r1_interval == 0  # lazy R1: every r1_interval-th D step
        with autocast:
            loss_D = loss_fn.discriminator(G_step, D_step, real, y, z, gen, r1=r1_now, r1_scale=r1_interval, D_r1=D_r1)
        loss_D.backward()
        opt_D.step()

        # Generator step.
        z = torch.randn(batch_size, G.z_dim, generator=gen, device=device)
        opt_G.zero_grad(set_to_none=True)
        D.requires_grad_(False)
        with autocast:
            loss_G = loss_fn.generator(G_step, D_frozen, y, z, gen)
        loss_G.backward()
        D.requires_grad_(True)
        opt_G.step()

        # Update EMA (parameters averaged, BatchNorm statistics copied).
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, g_params, 1.0 - ema_beta)
            for b_ema, b in zip(ema_bufs, g_bufs, strict=True):
                b_ema.copy_(b)
            loss_sum += torch.stack([loss_D.detach(), loss_G.detach()])  # no host sync per step
        loss_steps += 1
        prev_nimg, cur_nimg = cur_nimg, cur_nimg + step_nimg
        done = cur_nimg >= total_nimg
        if max_minutes is not None and (time.time() - start_time) / 60 >= max_minutes and not done:
            done, stop_reason = True, f"time budget of {max_minutes} min"

        # Tick: log averaged losses and speed.
        if done or cur_nimg // tick_nimg > prev_nimg // tick_nimg:
            now = time.time()
            ld, lg = (loss_sum / max(loss_steps, 1)).tolist()
            tick = {
                "kimg": cur_nimg / 1000,
                "loss_D": ld,
                "loss_G": lg,
                "images_per_s": (cur_nimg - tick_start_nimg) / max(now - tick_start_time, 1e-9),
                "elapsed_s": now - start_time,
            }
            if ada is not None:
                tick["ada_p"], tick["ada_rt"] = float(ada.p), float(ada.rt)
            loss_sum.zero_()
            loss_steps = 0
            tick_start_nimg, tick_start_time = cur_nimg, now
            ada_text = f" p={tick['ada_p']:.2f}" if ada is not None else ""
            bar.set_postfix_str(f"img/s={tick['images_per_s']:.0f} D={ld:.3f} G={lg:.3f}{ada_text}", refresh=False)
            bar.update(min(cur_nimg, total_nimg) / 1000 - bar.n)
            if is_main:
                with open(stats_path, "a") as fh:
                    fh.write(json.dumps(tick) + "\n")
            if on_tick is not None and is_main:
                on_tick(tick)

        # Evaluate the EMA generator; keep the best snapshot (GANs degrade late in training).
        if (
            is_main
            and metric_fn is not None
            and eval_nimg > 0
            and (done or cur_nimg // eval_nimg > prev_nimg // eval_nimg)
        ):
            eval_start = time.time()
            metrics = metric_fn(G_ema)
            eval_seconds += time.time() - eval_start
            value = metrics[best_metric]
            log.info("kimg %.1f: %s", cur_nimg / 1000, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            # Wall time with and without the evaluations themselves (for time-to-quality curves).
            timing = {"elapsed_s": time.time() - start_time, "train_s": time.time() - start_time - eval_seconds}
            with open(run_dir / rundir.TRAIN_METRICS, "a") as fh:
                fh.write(json.dumps({"kimg": cur_nimg / 1000, **metrics, **timing}) + "\n")
            if on_tick is not None:
                on_tick({"kimg": cur_nimg / 1000, **metrics})
            if value < best["value"]:
                best = {"value": value, "kimg": cur_nimg / 1000}
                checkpoint.save_snapshot(snapshot(cur_nimg, metrics), run_dir / rundir.BEST_SNAPSHOT)

        # Snapshot: inference network, sample grid, training state (in that order: the state is
        # written last, so a resumed run never skips a snapshot it had not finished).
        if is_main and (done or cur_nimg // snap_nimg > prev_nimg // snap_nimg):
            checkpoint.save_snapshot(snapshot(cur_nimg), run_dir / rundir.snapshot_name(cur_nimg // 1000))
            save_class_grid(G_ema, run_dir / rundir.fakes_name(cur_nimg // 1000), num_classes, seed=GRID_SEED)
            save_state(cur_nimg)
        if done:
            break
    bar.close()

    # Done.
    if is_main:
        checkpoint.save_snapshot(snapshot(cur_nimg), run_dir / rundir.FINAL_SNAPSHOT)
    log.info("Stopped at %.1f kimg (%s) after %.1f s", cur_nimg / 1000, stop_reason, time.time() - start_time)
    if best["kimg"] is not None:
        log.info("Best %s %.4g at %.1f kimg", best_metric, best["value"], best["kimg"])
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


def loop_kwargs(cfg: Config, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The keyword arguments of :func:`training_loop` that a config decides (on ``device``: on
    CUDA, ``train.cuda`` replaces the batch size, learning rates, precision, layout, compile (and
    its mode) and R1 interval; ``precision: auto`` comes back as the ``fp32`` or ``bf16`` that ``device`` gets)."""
    kwargs = dict(
        config=cfg.to_dict(),
        seed=cfg.seed,
        z_dim=cfg.model.z_dim,
        g_channels=cfg.model.g_channels,
        d_channels=cfg.model.d_channels,
        max_mult=cfg.model.max_mult,
        d_spectral_norm=cfg.model.d_spectral_norm,
        loss=cfg.train.loss,
        r1_gamma=cfg.train.r1_gamma,
        diffaug=cfg.train.diffaug,
        ada_target=cfg.train.ada_target,
        ada_kimg=cfg.train.ada_kimg,
        lecam_weight=cfg.train.lecam_weight,
        mode_seeking=cfg.train.mode_seeking,
        total_kimg=cfg.train.kimg,
        batch_size=cfg.train.batch_size,
        lr_g=cfg.train.lr_g,
        lr_d=cfg.train.lr_d,
        betas=cfg.train.betas,
        ema_kimg=cfg.train.ema_kimg,
        snapshot_kimg=cfg.train.snapshot_kimg,
        eval_kimg=cfg.train.eval_kimg,
        max_minutes=cfg.train.max_minutes,
        precision=cfg.train.precision,
        channels_last=cfg.train.channels_last,
        compile=cfg.train.compile,
        compile_mode=cfg.train.compile_mode,
        r1_interval=cfg.train.r1_interval,
    )
    device = torch.device(device)
    if device.type == "cuda":
        gpu = cfg.train.cuda
        kwargs.update(
            batch_size=gpu.batch_size,
            lr_g=gpu.lr_g or cfg.train.lr_g,
            lr_d=gpu.lr_d or cfg.train.lr_d,
            precision=gpu.precision,
            channels_last=gpu.channels_last,
            compile=gpu.compile,
            compile_mode=gpu.compile_mode,
            r1_interval=gpu.r1_interval,
        )
    kwargs["precision"] = resolve_precision(kwargs["precision"], device)
    return kwargs


def train(
    cfg: Config,
    *,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    data: PreparedData | None = None,
    metric_fn: MetricFn | None = None,
    on_tick: Callable[[dict[str, float]], None] | None = None,
    **parallel: Any,
) -> tuple[Path, Path]:
    """Train from a config. Returns ``(run_dir, snapshot_path)``.

    Example:
        >>> from augment.config import load_config
        >>> cfg = load_config(None, ["train.kimg=0.128", "model.g_channels=8", "model.d_channels=8"])
        >>> run_dir, snap = train(cfg, out=tmp_path / "run", progress=False)  # doctest: +SKIP
    """
    device = resolve_device(cfg.train.device)
    set_threads(cfg.train.threads)
    if data is None:  # bad data fails before a run directory exists
        data = load_data(cfg.data, cfg.seed)
    run_dir = rundir.prepare_run_dir(cfg, out, resume)
    if resume:  # a refused resume leaves the run's config.yaml and data.json as they were
        state_path = run_dir / rundir.TRAINING_STATE
        check_resume_config(load_resumable(state_path, data), cfg, state_path)
    save_config(cfg, run_dir / rundir.CONFIG)
    atomic_write_text(run_dir / rundir.DATA, json.dumps(data.summary(), indent=2))
    if metric_fn is None and cfg.train.eval_kimg > 0:
        # Keep the best snapshot by fd_domain (against train+val; the test split stays unseen).
        from augment.evaluate import make_metric_fn  # lazy: evaluation pulls in sklearn/scipy

        metric_fn = make_metric_fn(data, cfg, cache_dir=cfg.evaluate.cache_dir or run_dir / rundir.CACHE, device=device)
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
