"""Training throughput: the project's loop against a deliberately plain loop, in one process.

Reports real images/s shown to the discriminator, FLOPs of one training step (counted with
the formulas of ``torch.utils.flop_counter``), achieved GFLOP/s and its ratio to the fp32 peak
measured on the spot: the higher of a large matmul and a large 3x3 convolution (MKL's sgemm runs
without AVX-512 on AMD CPUs, so the matmul alone understates the peak there). These machines are
noisy and differ: ratios travel, absolute times don't.

    .venv/bin/python benchmarks/train_throughput.py --config configs/fashion_mnist.yaml
    python benchmarks/train_throughput.py --config configs/fashion_mnist.yaml --steps 400   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from augment.config import load_config  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.devices import (
    resolve_device,  # noqa: E402
    resolve_precision,  # noqa: E402
)
from augment.losses import GanLoss  # noqa: E402
from augment.models import ConditionalGenerator, ProjectionDiscriminator  # noqa: E402
from augment.train import loop_kwargs, set_threads, training_loop  # noqa: E402
from augment.train_options import replace_options  # noqa: E402
from benchmarks.common import peak_gflops, publish  # noqa: E402


def networks(cfg, data, device):
    num_classes, size, ch = data.num_classes, cfg.data.image_size, cfg.data.channels
    torch.manual_seed(cfg.seed)
    G = ConditionalGenerator(num_classes, size, ch, cfg.model.z_dim, cfg.model.g_channels, cfg.model.max_mult)
    D = ProjectionDiscriminator(
        num_classes, size, ch, cfg.model.d_channels, cfg.model.max_mult, spectral=cfg.model.d_spectral_norm
    )
    return G.to(device).train(), D.to(device).train()


class CountFlops(TorchDispatchMode):
    """FlopCounterMode's per-operator formulas without its module tracker (whose backward hooks
    break ``torch.autograd.grad``, which the R1 penalty needs)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def step_flops(cfg, data, device, batch: int, r1: bool = True) -> float:
    """FLOPs of one D step + one G step at ``batch`` (forward and backward; with or without R1)."""
    G, D = networks(cfg, data, device)
    loss = GanLoss(cfg.train.loss, cfg.train.diffaug, cfg.train.r1_gamma)
    idx = torch.arange(batch) % len(data.train)
    real = data.train.as_float()[idx].to(device)
    y = data.train.labels[idx].to(device)
    with CountFlops() as counter:
        loss.discriminator(G, D, real, y, torch.randn(batch, G.z_dim, device=device), r1=r1).backward()
        D.requires_grad_(False)  # the useful work of a G step: no gradient of D's weights
        loss.generator(G, D, y, torch.randn(batch, G.z_dim, device=device)).backward()
    return float(counter.total)


def flops_per_image(cfg, data, device, batch: int, r1_interval: int) -> float:
    """Average FLOPs per real image of a step, lazy R1 included (its pass every r1_interval steps)."""
    with_r1 = step_flops(cfg, data, device, batch, r1=True)
    if cfg.train.r1_gamma == 0 or r1_interval == 1:
        return with_r1 / batch
    without = step_flops(cfg, data, device, batch, r1=False)
    # The eager R1 pass is a separate D forward+double backward: about (with_r1 - without) + D fwd;
    # count it as the difference (a lower bound on the work done).
    return (without + (with_r1 - without) / r1_interval) / batch


def project_loop(cfg, data, device, steps: int, **overrides) -> float:
    """Images/s of augment.train.training_loop (median over ticks after the first: compile and
    cudnn autotuning stay out)."""
    kwargs = replace_options(loop_kwargs(cfg), **overrides)
    kimg = steps * kwargs["schedule"].batch_size / 1000
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = replace_options(kwargs, total_kimg=kimg, snapshot_kimg=kimg * 10, eval_kimg=0, max_minutes=None)
        training_loop(run_dir=Path(tmp), data=data, device=device, progress=False, **kwargs)
        ticks = [json.loads(line) for line in (Path(tmp) / "stats.jsonl").read_text().splitlines()]
    rates = sorted(t["images_per_s"] for t in ticks[1:-1] or ticks)
    return rates[len(rates) // 2]


def plain_loop(cfg, data, device, steps: int, batch: int) -> float:
    """The yardstick: DataLoader per batch, eager, unfused Adam, per-step .item() logging."""
    G, D = networks(cfg, data, device)
    G_ema = copy.deepcopy(G).eval()
    loss = GanLoss(cfg.train.loss, cfg.train.diffaug, cfg.train.r1_gamma)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.train.lr_g, betas=cfg.train.betas, foreach=False)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.train.lr_d, betas=cfg.train.betas, foreach=False)
    ds = TensorDataset(data.train.as_float(), data.train.labels)
    loader = DataLoader(ds, batch_size=min(batch, len(ds)), shuffle=True, drop_last=True)
    shown, done, start, warm = 0, 0, None, 5
    log = []
    while done < steps + warm:
        for real, y in loader:
            real, y = real.to(device), y.to(device)
            if done == warm:
                start, shown0 = time.perf_counter(), shown
            opt_D.zero_grad()
            ld = loss.discriminator(G, D, real, y, torch.randn(len(y), G.z_dim, device=device))
            ld.backward()
            opt_D.step()
            opt_G.zero_grad()
            lg = loss.generator(G, D, y, torch.randn(len(y), G.z_dim, device=device))
            lg.backward()
            opt_G.step()
            with torch.no_grad():
                for pe, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                    pe.copy_(pe * 0.99 + p * 0.01)
            log.append((ld.item(), lg.item()))
            shown += len(y)
            done += 1
            if done >= steps + warm:
                break
    return (shown - shown0) / (time.perf_counter() - start)


def variants(cfg, device) -> list[tuple[str, dict]]:
    """The loops to time: (label, training_loop overrides)."""
    b = cfg.train.batch_size
    if device.type != "cuda":
        # Every switch explicit (a config may set any of them), then the config as it ships.
        fp32 = dict(
            batch_size=b, precision="fp32", channels_last=False, r1_interval=1, compile=False, compile_mode="default"
        )
        bf16 = fp32 | dict(precision="bf16")
        out = [
            ("project loop, fp32", fp32),
            ("project loop, fp32, channels_last", fp32 | dict(channels_last=True)),
            ("project loop, fp32, lazy R1", fp32 | dict(r1_interval=16)),
            ("project loop, fp32, channels_last, lazy R1", fp32 | dict(channels_last=True, r1_interval=16)),
            (
                "project loop, fp32, channels_last, torch.compile + lazy R1",
                fp32 | dict(channels_last=True, r1_interval=16, compile=True),
            ),
        ]
        if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX"):
            out += [
                ("project loop, bf16 autocast", bf16),
                ("project loop, bf16 autocast, channels_last", bf16 | dict(channels_last=True)),
                (
                    "project loop, bf16 autocast, channels_last, lazy R1",
                    bf16 | dict(channels_last=True, r1_interval=16),
                ),
                (
                    "project loop, bf16 autocast, channels_last, torch.compile + lazy R1",
                    bf16 | dict(channels_last=True, r1_interval=16, compile=True),
                ),
            ]
        t = cfg.train
        used = resolve_precision(t.precision, device)
        precision = t.precision if used == t.precision else f"{t.precision}: {used} here"
        out.append(
            (
                f"project loop, the config's settings ({precision}, channels_last {str(t.channels_last).lower()}, "
                f"R1 every {t.r1_interval})",
                dict(batch_size=b, precision=used, channels_last=t.channels_last, r1_interval=t.r1_interval),
            )
        )
        return out
    # Every switch off, then switched on row by row.
    plain = dict(precision="fp32", channels_last=False, compile=False, compile_mode="default", r1_interval=1)
    fast = dict(precision="bf16", channels_last=True)
    lazy = dict(compile=True, r1_interval=cfg.train.cuda.r1_interval)
    out = [("project loop, fp32", plain | dict(batch_size=b))]
    for batch in (512, 2048):
        out += [
            (f"project loop, fp32, batch {batch}", plain | dict(batch_size=batch)),
            (f"project loop, bf16, channels_last, batch {batch}", plain | dict(batch_size=batch, **fast)),
            (
                f"project loop, bf16, channels_last, lazy R1, batch {batch}",
                plain | dict(batch_size=batch, **fast, r1_interval=lazy["r1_interval"]),
            ),
            (
                f"project loop, bf16, channels_last, torch.compile + lazy R1, batch {batch}",
                plain | dict(batch_size=batch, **fast, **lazy),
            ),
            (
                "project loop, bf16, channels_last, torch.compile reduce-overhead (CUDA graphs) + lazy R1, "
                f"batch {batch}",
                plain | dict(batch_size=batch, **fast, **lazy, compile_mode="reduce-overhead"),
            ),
        ]
    return out


def measurements(cfg, device) -> list[tuple[str, dict]]:
    """Every timed loop, the plain yardstick(s) first: (label, overrides; ``plain_batch`` marks a plain loop)."""
    plain_batches = sorted({cfg.train.batch_size} | ({512} if device.type == "cuda" else set()))
    plain = [
        (f"plain loop (DataLoader, eager, unfused Adam), fp32, batch {pb}", {"plain_batch": pb}) for pb in plain_batches
    ]
    return plain + variants(cfg, device)


def measure_one(args, label: str) -> float:
    """Child process: time one loop and return its images/s (a fresh process per measurement, so
    process-wide settings of one loop, e.g. the project loop's allocator tuning, never reach another)."""
    cfg = load_config(args.config, args.set)
    device = resolve_device(cfg.train.device)
    set_threads(cfg.train.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 rows and the fp32 peak are true fp32
        torch.backends.cudnn.allow_tf32 = False
    data = load_data(cfg.data, cfg.seed)
    steps = args.steps or max(1, 4000 // cfg.train.batch_size)
    kw = dict(measurements(cfg, device))[label]
    if "plain_batch" in kw:
        return plain_loop(cfg, data, device, steps, kw["plain_batch"])
    return project_loop(cfg, data, device, steps, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/fashion_mnist.yaml")
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per measurement (default: 4 kimg at the config's batch size)",
    )
    ap.add_argument("--only", default=None, help="run only the variants whose label contains this text")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of all loops, interleaved (plain, project, ..., plain, ...); the table shows the median",
    )
    ap.add_argument("--no-results", action="store_true", help="print only, do not append to RESULTS.md")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one loop, in a child
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps({"images_per_s": measure_one(args, args.measure)}))
        return
    cfg = load_config(args.config, args.set)
    device = resolve_device(cfg.train.device)
    set_threads(cfg.train.threads)
    data = load_data(cfg.data, cfg.seed)
    steps = args.steps or max(1, 4000 // cfg.train.batch_size)
    n = 4096 if device.type == "cuda" else 1024
    peak = peak_gflops(n=n, device=device.type)
    peak_bf16 = peak_gflops(n=n, device=device.type, dtype=torch.bfloat16)
    todo = [
        (label, kw)
        for label, kw in measurements(cfg, device)
        if "plain_batch" in kw or args.only is None or args.only in label
    ]
    rates: dict[str, list[float]] = {label: [] for label, _ in todo}
    base = [sys.executable, __file__, "--config", args.config, *(f"--set={v}" for v in args.set)]
    base += ["--steps", str(args.steps)] if args.steps else []
    for r in range(args.rounds):
        for label, _ in todo:
            out = subprocess.run([*base, "--measure", label], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"error: measuring {label!r} failed:\n{out.stderr[-2000:]}")
            rates[label].append(json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"])
            print(f"round {r + 1}/{args.rounds}: {label}: {rates[label][-1]:.0f} images/s", flush=True)
    rows = []
    for label, kw in todo:
        batch = kw.get("plain_batch", kw.get("batch_size"))
        rows.append(
            (
                label,
                statistics.median(rates[label]),
                min(rates[label]),
                max(rates[label]),
                batch,
                kw.get("r1_interval", 1),
            )
        )
    plain = rows[0][1]
    peak_after = peak_gflops(n=n, device=device.type)
    mean_peak = (peak["peak"] + peak_after["peak"]) / 2
    flops_cache: dict[tuple[int, int], float] = {}
    lines = [
        f"config `{args.config}` {' '.join(args.set)}: {cfg.data.image_size}px x{cfg.data.channels}, "
        f"G {cfg.model.g_channels} / D {cfg.model.d_channels} channels, r1_gamma {cfg.train.r1_gamma}, "
        f"{steps} steps per measurement",
        f"peak measured in the same run, GFLOP/s: fp32 matmul ({n}x{n}) {peak['matmul']:.0f} before, "
        f"{peak_after['matmul']:.0f} after; fp32 3x3 conv (512 ch, 8x8, NHWC) {peak['conv']:.0f} before, "
        f"{peak_after['conv']:.0f} after; bf16 matmul {peak_bf16['matmul']:.0f}, conv {peak_bf16['conv']:.0f}. "
        "The fractions divide by the higher of matmul and conv (mean of before and after for fp32)",
        "FLOPs per real image: torch.utils.flop_counter formulas over one D step + one G step (R1 included, "
        "divided by its interval when lazy; the G step's useful work, without gradients of D's weights, which "
        "the plain loop computes and discards)",
        f"{args.rounds} interleaved rounds, each loop in a fresh process: images/s is the median, with the "
        "range over rounds; the ratio is of medians",
        "",
        "| loop | batch | real images/s (range) | MFLOP/image | GFLOP/s | of fp32 peak | of bf16 peak | vs plain "
        f"(batch {cfg.train.batch_size}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rate, lo, hi, batch, r1_interval in rows:
        key = (batch, r1_interval)
        if key not in flops_cache:
            flops_cache[key] = flops_per_image(cfg, data, device, batch, r1_interval)
        per_img = flops_cache[key]
        gflops = rate * per_img / 1e9
        lines.append(
            f"| {name} | {batch} | {rate:,.0f} ({lo:,.0f}-{hi:,.0f}) | {per_img / 1e6:.1f} | {gflops:.1f} | "
            f"{gflops / mean_peak:.2f} | {gflops / peak_bf16['peak']:.2f} | {rate / plain:.2f}x |"
        )
    publish(f"train_throughput: {cfg.name} on {device.type}", lines, dry_run=args.no_results)


if __name__ == "__main__":
    main()
