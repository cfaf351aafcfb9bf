"""Data-parallel GAN training with ``torchrun`` and DistributedDataParallel.

One process per GPU (or per CPU process with the gloo backend): every rank holds the whole
(small) train split, draws ``train.batch_size / world_size`` images per step from its own random
stream, and DDP averages the gradients of both players, so a step shows ``train.batch_size``
images in total, as in a single-process run. Rank 0 writes the run directory (snapshots, grids,
training state); the others only compute.

Run it on one machine with 4 GPUs::

    torchrun --standalone --nproc_per_node=4 -m flows.ddp configs/fashion_mnist.yaml --out runs/ddp

or on several machines (same command on each, ``--node_rank`` 0..N-1, a shared filesystem for
``--out``)::

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 -m flows.ddp CONFIG --out /shared/runs/ddp

``--resume`` continues from the training state; rank 0's random stream is restored exactly, the
other ranks continue from fresh streams (their states are not saved). ``train.max_minutes`` is
refused: ranks that stopped at different steps would wait for each other forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from augment.config import Config
from augment.errors import ConfigError
from augment.io import atomic_write_text, new_run_dir
from augment.metrics.evaluate import best_snapshot_metric
from augment.train import train

log = logging.getLogger(__name__)


def param_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters (equal on every rank when DDP keeps them in sync)."""
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def backend_for(cfg: Config) -> str:
    """``nccl`` when training on CUDA, else ``gloo`` (CPU processes)."""
    return "nccl" if cfg.train.device != "cpu" and torch.cuda.is_available() else "gloo"


def run(cfg: Config, out: Path | None = None, resume: bool = False) -> Path:
    """Train on every rank of an initialised process group; returns the run directory.

    Rank 0 writes ``ddp.json`` beside the snapshots: world size, backend and each rank's digest of
    its final G and D parameters (DDP must leave them identical).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is not divisible by {world} processes")
    if cfg.train.max_minutes is not None:
        raise ConfigError("train.max_minutes cannot be used with distributed training (ranks would disagree)")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available() and cfg.train.device != "cpu":
        torch.cuda.set_device(local_rank)  # "cuda" now means this rank's GPU
        device_ids: list[int] | None = [local_rank]
    else:
        device_ids = None
    # Rank 0 picks the run directory, everyone writes into (rank 0) or reads from (resume) it.
    box: list[str | None] = [None]
    if rank == 0:
        box[0] = str(out if out is not None else new_run_dir(cfg.output.root, cfg.name))
    dist.broadcast_object_list(box, src=0)
    run_dir = Path(box[0])  # type: ignore[arg-type]

    modules: dict[str, torch.nn.Module] = {}

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        modules[type(module).__name__] = module
        return DistributedDataParallel(module, device_ids=device_ids)

    run_dir, _ = train(
        cfg,
        out=run_dir,
        resume=resume,
        progress=rank == 0,
        metric_factory=best_snapshot_metric,
        rank=rank,
        world_size=world,
        wrap=wrap,
    )
    digests = {name: param_digest(m) for name, m in modules.items()}
    gathered: list[dict[str, str] | None] = [None] * world
    dist.all_gather_object(gathered, digests)
    if rank == 0:
        info = {"world_size": world, "backend": dist.get_backend(), "digests": gathered}
        atomic_write_text(run_dir / "ddp.json", json.dumps(info, indent=2))
    # Leave together: a rank that tears its process group down while another is still busy can
    # abort in gloo's worker threads ("terminate called without an active exception").
    dist.barrier()
    return run_dir
