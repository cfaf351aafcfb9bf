"""Shared helpers of the benchmarks: machine description, matmul peak, RESULTS.md rows."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

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


def matmul_peak_gflops(
    n: int = 1024, seconds: float = 2.0, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Measured fp32 (or ``dtype``) matmul throughput of this machine, right now, in GFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return 2 * n**3 * reps / elapsed / 1e9


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
