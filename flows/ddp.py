"""Command line of data-parallel training: ``torchrun --nproc_per_node=N -m flows.ddp CONFIG --out DIR``.

The training itself is :mod:`augment.distributed`; this module only parses arguments, sets up the
process group and logging, and turns bad input into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

import torch.distributed as dist

from augment.config import load_config
from augment.distributed import backend_for, run
from augment.errors import AugmentError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun ... -m flows.ddp", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=v")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank%(rank)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
    except AugmentError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    dist.init_process_group(backend=backend_for(cfg))
    rank = dist.get_rank()
    old_factory = logging.getLogRecordFactory()

    def factory(*a: object, **k: object) -> logging.LogRecord:
        record = old_factory(*a, **k)
        record.rank = rank
        return record

    logging.setLogRecordFactory(factory)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        run_dir = run(cfg, args.out, args.resume)
        if rank == 0:
            print(f"run directory: {run_dir}")
        return 0
    except AugmentError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    finally:
        # The DDP wrappers' reducers hold the process group: free them while it is still alive.
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
