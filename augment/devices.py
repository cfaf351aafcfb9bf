"""Device choice shared by training and evaluation.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from augment.errors import ConfigError


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask (as taskset or a container's CPU set
    restricts it), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_device(name: str, field: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field} is 'cuda' but no CUDA device is available")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: a CUDA GPU that supports it, or a CPU with
    AMX tiles or AVX512-BF16 (elsewhere oneDNN emulates bf16, slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
        return any(probe() for probe in probes if probe is not None)
    return False


def resolve_precision(name: str, device: torch.device, field: str = "train.precision") -> str:
    """``auto`` -> ``bf16`` where ``device`` has native bf16 (:func:`native_bf16`), else ``fp32``."""
    if name == "auto":
        return "bf16" if native_bf16(torch.device(device)) else "fp32"
    if name not in ("fp32", "bf16"):
        raise ConfigError(f"{field} must be auto, fp32 or bf16, got {name!r}")
    return name


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc's malloc reuse freed blocks instead of handing each back to the OS.

    A CPU training step allocates and frees the same multi-megabyte activations every step; by
    default glibc serves blocks over its (adaptive) mmap threshold with fresh ``mmap`` pages, so
    each step pays page faults to touch them again (about 8% of a Fashion-MNIST step on the
    2-core benchmark machine). Blocks up to ``mmap_threshold`` (32 MiB, glibc's maximum) now come
    from the heap, which keeps up to ``trim_threshold`` bytes of free memory. The same fix as
    running under jemalloc or tcmalloc, without a preload. Returns False where it does not apply
    (not Linux/glibc); process-wide and harmless to repeat.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        )
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
