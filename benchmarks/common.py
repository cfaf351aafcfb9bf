"""Shared helpers of the benchmarks: machine description, matmul and convolution peaks, RESULTS.md rows."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {cores} cores, {gpu}; torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"
    )


def git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        return "unknown"


def _rate(fn, flops: float, seconds: float, device: str) -> float:
    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return flops * reps / (time.perf_counter() - start) / 1e9


def matmul_peak_gflops(
    n: int = 1024, seconds: float = 2.0, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Measured fp32 (or ``dtype``) matmul throughput of this machine, right now, in GFLOP/s
    (torch.mm: MKL's sgemm on the CPU)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return _rate(lambda: a @ b, 2 * n**3, seconds, device)


def conv_peak_gflops(
    seconds: float = 2.0, device: str = "cpu", dtype: torch.dtype = torch.float32, channels: int = 512, size: int = 8
) -> float:
    """Measured throughput of a large 3x3 convolution (batch 64, NHWC), in GFLOP/s: the GEMM
    kernels of oneDNN on the CPU (cuDNN on a GPU), the library every convolution of a step runs on.

    It is part of the yardstick because MKL's sgemm does not use AVX-512 on AMD CPUs: on the
    2-core AMD EPYC (Zen 5) benchmark machine torch.mm reached 150-158 GFLOP/s while this
    convolution reached 370-420, so a ratio to the matmul alone overstated the fraction of peak
    there by about 2.5x.
    """
    x = torch.randn(64, channels, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * 64 * size * size * channels * channels * 9
    return _rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), flops, seconds, device)


def peak_gflops(n: int = 1024, device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """The machine's ``dtype`` peak measured now: ``matmul`` (torch.mm), ``conv`` (see
    :func:`conv_peak_gflops`) and ``peak``, the higher of the two, which the ratios divide by."""
    mm = matmul_peak_gflops(n=n, device=device, dtype=dtype)
    conv = conv_peak_gflops(device=device, dtype=dtype)
    return {"matmul": mm, "conv": conv, "peak": max(mm, conv)}


def run_cli(run: Callable[[Any], dict[str, Any]], render: Callable[[dict[str, Any]], str], args: Any) -> dict[str, Any]:
    """A benchmark's ``main``: ``run(args)``, its ``render``ed table on stdout and, with ``args.json``,
    the raw result there; an ``AugmentError`` (bad run dir, bad config) is one line on stderr, exit 2."""
    from augment.errors import AugmentError

    try:
        res = run(args)
    except AugmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(render(res), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return res


def command() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


def append_results(title: str, body: str) -> None:
    """Append a dated section (machine, commit, command, then ``body``) to benchmarks/RESULTS.md."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n### {title} ({stamp})\n\n"
        f"- machine: {machine()}\n- commit: {git_commit()}\n- command: `{command()}`\n\n{body.strip()}\n"
    )
    with open(RESULTS, "a") as fh:
        fh.write(text)


def publish(title: str, lines: list[str], dry_run: bool = False) -> None:
    """Print a benchmark's table and (unless ``dry_run``) append it to RESULTS.md under ``title``."""
    table = "\n".join(lines)
    print(table)
    if not dry_run:
        append_results(title, table)


def grid_plan(config: str, overrides: list[str], run_dir: Path | None, kimg: float, prefix: str) -> tuple:
    """``(cfg, data, snap, plan, run_dir)`` of a downstream-grid benchmark: the config's data, the
    generator of ``run_dir`` (or one trained here for ``kimg``: the cells' cost does not depend on
    its quality), its synthetic pool and the plan with the classic baseline chosen on val."""
    import tempfile

    from augment.checkpoint import find_snapshot, load_snapshot
    from augment.config import load_config
    from augment.data import load_data
    from augment.metrics import downstream
    from augment.metrics.evaluate import generate_uint8
    from augment.train import train

    cfg = load_config(config, overrides)
    if run_dir is None:
        short = load_config(config, [*overrides, f"train.kimg={kimg}", "train.eval_kimg=0"])
        run_dir, _ = train(short, out=Path(tempfile.mkdtemp(prefix=prefix)) / "run", progress=False)
    snap = load_snapshot(find_snapshot(run_dir))
    data = load_data(cfg.data, cfg.seed)
    ev = cfg.evaluate
    pool, labels = generate_uint8(snap.generator(), [ev.synthetic_per_class] * data.num_classes, cfg.generate.seed)
    return cfg, data, snap, downstream.prepare(data, pool, labels, ev, seed=cfg.seed), run_dir
