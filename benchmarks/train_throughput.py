"""Training throughput: the project's loop against a deliberately plain loop, in one process.

Reports real images/s shown to the discriminator, FLOPs of one training step (counted with
the formulas of ``torch.utils.flop_counter``), achieved GFLOP/s and its ratio to the fp32 matmul
peak measured on the spot (these machines are noisy and differ: ratios travel, absolute times don't).

    .venv/bin/python benchmarks/train_throughput.py --config configs/fashion_mnist.yaml --kimg 4
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
from benchmarks.common import append_results, matmul_peak_gflops  # noqa: E402


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


def step_flops(cfg, data, device) -> float:
    """FLOPs of one D step + one G step at the config's batch size (forward and backward)."""
    G, D = networks(cfg, data, device)
    loss = GanLoss(cfg.train.loss, cfg.train.diffaug, cfg.train.r1_gamma)
    b = cfg.train.batch_size
    real = data.train.as_float()[:b].to(device)
    y = data.train.labels[:b].to(device)
    with CountFlops() as counter:
        loss.discriminator(G, D, real, y, torch.randn(b, G.z_dim, device=device)).backward()
        loss.generator(G, D, y, torch.randn(b, G.z_dim, device=device)).backward()
    return float(counter.total)


def project_loop(cfg, data, device, kimg: float, precision: str = "fp32", channels_last: bool = False) -> float:
    """Images/s of augment.train.training_loop (median over ticks after the first)."""
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = loop_kwargs(cfg) | dict(total_kimg=kimg, snapshot_kimg=kimg * 10, eval_kimg=0, max_minutes=None)
        kwargs |= dict(precision=precision, channels_last=channels_last)
        training_loop(run_dir=Path(tmp), data=data, device=device, progress=False, **kwargs)
        ticks = [json.loads(line) for line in (Path(tmp) / "stats.jsonl").read_text().splitlines()]
    rates = sorted(t["images_per_s"] for t in ticks[1:-1] or ticks)
    return rates[len(rates) // 2]


def plain_loop(cfg, data, device, kimg: float) -> float:
    """The yardstick: DataLoader per batch, eager, unfused Adam, per-step .item() logging."""
    G, D = networks(cfg, data, device)
    G_ema = copy.deepcopy(G).eval()
    loss = GanLoss(cfg.train.loss, cfg.train.diffaug, cfg.train.r1_gamma)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.train.lr_g, betas=cfg.train.betas, foreach=False)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.train.lr_d, betas=cfg.train.betas, foreach=False)
    ds = TensorDataset(data.train.as_float(), data.train.labels)
    loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True)
    shown, total, start, warm = 0, int(kimg * 1000), None, cfg.train.batch_size * 5
    log = []
    while shown < total:
        for real, y in loader:
            real, y = real.to(device), y.to(device)
            if shown >= warm and start is None:
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
            if shown >= total:
                break
    return (shown - shown0) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/fashion_mnist.yaml")
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    ap.add_argument("--kimg", type=float, default=4.0, help="images shown per measurement (thousands)")
    ap.add_argument("--no-results", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    device = resolve_device(cfg.train.device)
    set_threads(cfg.train.threads)
    data = load_data(cfg.data, cfg.seed)
    peak = matmul_peak_gflops(device=device.type)
    flops = step_flops(cfg, data, device)
    per_img = flops / cfg.train.batch_size
    rows = []
    variants = [("project loop, fp32", dict()), ("project loop, fp32, channels_last", dict(channels_last=True))]
    if device.type == "cuda" or torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX"):
        variants += [
            ("project loop, bf16 autocast", dict(precision="bf16")),
            ("project loop, bf16 autocast, channels_last", dict(precision="bf16", channels_last=True)),
        ]
    plain = plain_loop(cfg, data, device, args.kimg)
    rows.append(("plain loop (DataLoader, eager, unfused Adam), fp32", plain))
    for name, kw in variants:
        rows.append((name, project_loop(cfg, data, device, args.kimg, **kw)))
    peak_after = matmul_peak_gflops(device=device.type)
    lines = [
        f"config `{args.config}` {' '.join(args.set)}: {cfg.data.image_size}px x{cfg.data.channels}, batch "
        f"{cfg.train.batch_size}, G {cfg.model.g_channels} / D {cfg.model.d_channels} channels, "
        f"r1_gamma {cfg.train.r1_gamma}",
        f"FLOPs per step (torch.utils.flop_counter formulas, D step + G step incl. R1): {flops / 1e9:.2f} GFLOP = "
        f"{per_img / 1e6:.1f} MFLOP per real image",
        f"fp32 matmul peak measured in the same run: {peak:.0f} GFLOP/s before, {peak_after:.0f} after",
        "",
        "| loop | real images/s | GFLOP/s | fraction of fp32 peak | vs plain loop |",
        "|---|---|---|---|---|",
    ]
    mean_peak = (peak + peak_after) / 2
    for name, rate in rows:
        gflops = rate * per_img / 1e9
        lines.append(f"| {name} | {rate:.0f} | {gflops:.1f} | {gflops / mean_peak:.2f} | {rate / plain:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if not args.no_results:
        append_results(f"train_throughput: {cfg.name}", table)


if __name__ == "__main__":
    main()
