"""Training throughput: the project's loop against a deliberately plain loop, in one process.

Reports real images/s shown to the discriminator, FLOPs of one training step (counted with
the formulas of ``torch.utils.flop_counter``), achieved GFLOP/s and its ratio to the fp32 matmul
peak measured on the spot (these machines are noisy and differ: ratios travel, absolute times don't).

    .venv/bin/python benchmarks/train_throughput.py --config configs/fashion_mnist.yaml
    python benchmarks/train_throughput.py --config configs/fashion_mnist.yaml --steps 400   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
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
from augment.losses import GanLoss  # noqa: E402
from augment.models import ConditionalGenerator, ProjectionDiscriminator  # noqa: E402
from augment.train import loop_kwargs, resolve_device, set_threads, training_loop  # noqa: E402
from benchmarks.common import matmul_peak_gflops, publish  # noqa: E402


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
    kwargs = loop_kwargs(cfg) | overrides
    kimg = steps * kwargs["batch_size"] / 1000
    with tempfile.TemporaryDirectory() as tmp:
        kwargs |= dict(total_kimg=kimg, snapshot_kimg=kimg * 10, eval_kimg=0, max_minutes=None)
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
        out = [
            ("project loop, fp32", dict(batch_size=b)),
            ("project loop, fp32, channels_last", dict(batch_size=b, channels_last=True)),
            ("project loop, fp32, lazy R1", dict(batch_size=b, r1_interval=16)),
        ]
        if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX"):
            out += [
                ("project loop, bf16 autocast", dict(batch_size=b, precision="bf16")),
                (
                    "project loop, bf16 autocast, channels_last",
                    dict(batch_size=b, precision="bf16", channels_last=True),
                ),
                (
                    "project loop, bf16 autocast, channels_last, lazy R1",
                    dict(batch_size=b, precision="bf16", channels_last=True, r1_interval=16),
                ),
            ]
        return out
    fast = dict(precision="bf16", channels_last=True)
    lazy = dict(compile=True, r1_interval=cfg.train.cuda.r1_interval)
    out = [("project loop, fp32", dict(batch_size=b))]
    for batch in (512, 2048):
        out += [
            (f"project loop, fp32, batch {batch}", dict(batch_size=batch)),
            (f"project loop, bf16, channels_last, batch {batch}", dict(batch_size=batch, **fast)),
            (
                f"project loop, bf16, channels_last, lazy R1, batch {batch}",
                dict(batch_size=batch, **fast, r1_interval=lazy["r1_interval"]),
            ),
            (
                f"project loop, bf16, channels_last, torch.compile + lazy R1, batch {batch}",
                dict(batch_size=batch, **fast, **lazy),
            ),
        ]
    return out


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
    ap.add_argument("--no-results", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    device = resolve_device(cfg.train.device)
    set_threads(cfg.train.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 rows and the fp32 peak are true fp32
        torch.backends.cudnn.allow_tf32 = False
    data = load_data(cfg.data, cfg.seed)
    steps = args.steps or max(1, 4000 // cfg.train.batch_size)
    n = 4096 if device.type == "cuda" else 1024
    peak = matmul_peak_gflops(n=n, device=device.type)
    peak_bf16 = matmul_peak_gflops(n=n, device=device.type, dtype=torch.bfloat16)
    todo = [v for v in variants(cfg, device) if args.only is None or args.only in v[0]]
    plain_batches = sorted({cfg.train.batch_size} | ({512} if device.type == "cuda" else set()))
    rows = []
    for pb in plain_batches:
        rate = plain_loop(cfg, data, device, steps, pb)
        rows.append((f"plain loop (DataLoader, eager, unfused Adam), fp32, batch {pb}", rate, pb, 1, "fp32"))
        print(rows[-1], flush=True)
    plain = rows[0][1]
    for name, kw in todo:
        rate = project_loop(cfg, data, device, steps, **kw)
        rows.append((name, rate, kw["batch_size"], kw.get("r1_interval", 1), kw.get("precision", "fp32")))
        print(rows[-1], flush=True)
    peak_after = matmul_peak_gflops(n=n, device=device.type)
    mean_peak = (peak + peak_after) / 2
    flops_cache: dict[tuple[int, int], float] = {}
    lines = [
        f"config `{args.config}` {' '.join(args.set)}: {cfg.data.image_size}px x{cfg.data.channels}, "
        f"G {cfg.model.g_channels} / D {cfg.model.d_channels} channels, r1_gamma {cfg.train.r1_gamma}, "
        f"{steps} steps per measurement",
        f"matmul peak measured in the same run ({n}x{n}): fp32 {peak:.0f} GFLOP/s before, {peak_after:.0f} after; "
        f"bf16 {peak_bf16:.0f} GFLOP/s",
        "FLOPs per real image: torch.utils.flop_counter formulas over one D step + one G step (R1 included, "
        "divided by its interval when lazy)",
        "",
        "| loop | batch | real images/s | MFLOP/image | GFLOP/s | of fp32 peak | of bf16 peak | vs plain (batch "
        f"{cfg.train.batch_size}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rate, batch, r1_interval, _precision in rows:
        key = (batch, r1_interval)
        if key not in flops_cache:
            flops_cache[key] = flops_per_image(cfg, data, device, batch, r1_interval)
        per_img = flops_cache[key]
        gflops = rate * per_img / 1e9
        lines.append(
            f"| {name} | {batch} | {rate:.0f} | {per_img / 1e6:.1f} | {gflops:.1f} | {gflops / mean_peak:.2f} | "
            f"{gflops / peak_bf16:.2f} | {rate / plain:.2f}x |"
        )
    publish(f"train_throughput: {cfg.name} on {device.type}", lines, dry_run=args.no_results)


if __name__ == "__main__":
    main()
