"""Generation shard forward passes with and without glibc keeping freed activations in the heap.

A Dask worker's nanny starts its process with ``MALLOC_TRIM_THRESHOLD_=65536``, which pins glibc's
mmap threshold at 128 KiB: every batch's activations (25 MiB at 28 px, batch 256) are then fresh
``mmap`` pages, faulted in again batch after batch. ``augment.generate.write_shard`` calls
``augment.devices.keep_freed_memory`` on the CPU to undo that. This times the forward passes of one
shard (``shard_batches``, single-threaded like a Dask worker, no PNG writing so the disk stays out)
in a fresh interpreter per measurement, for {plain environment, Dask's} x {glibc default, kept},
in interleaved rounds. The generator is untrained, with the architecture of ``--config`` (speed does
not depend on the weights).

    .venv/bin/python benchmarks/shard_heap.py --config configs/fashion_mnist.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import publish  # noqa: E402

CHILD = """
import json, sys, time
from pathlib import Path
import torch
from augment.checkpoint import Snapshot
from augment.config import load_config
from augment.devices import keep_freed_memory
from augment.generate import plan_shards, shard_batches
from augment.models import ConditionalGenerator

config, images, batch, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "kept"
torch.set_num_threads(1)
if keep:
    keep_freed_memory()
cfg = load_config(config, [])
kw = dict(num_classes=10, image_size=cfg.data.image_size, channels=cfg.data.channels, z_dim=cfg.model.z_dim,
          width=cfg.model.g_channels, max_mult=cfg.model.max_mult)
torch.manual_seed(0)
snap = Snapshot(ConditionalGenerator(**kw).state_dict(), kw, [str(i) for i in range(10)], [1] * 10, {}, 0.0, "none")
(shard,) = plan_shards(snap, Path("unused"), [images], images, batch_size=batch)
G = snap.generator()
for _ in shard_batches(plan_shards(snap, Path("unused"), [batch], batch, batch_size=batch)[0], G):  # warm-up batch
    pass
start = time.perf_counter()
for _ in shard_batches(shard, G):
    pass
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

MODES = [(env, malloc) for env in ("plain", "dask") for malloc in ("default", "kept")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/fashion_mnist.yaml")
    ap.add_argument("--images", type=int, default=2048, help="images in the shard")
    ap.add_argument("--batch-size", type=int, default=256, help="generate.batch_size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-results", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parent.parent
    times: dict[tuple[str, str], list[float]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        for env_name, malloc in MODES:
            env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
            env.pop("MALLOC_TRIM_THRESHOLD_", None)
            if env_name == "dask":
                env["MALLOC_TRIM_THRESHOLD_"] = "65536"  # what distributed's nanny sets for its workers
            cmd = [sys.executable, "-c", CHILD, args.config, str(args.images), str(args.batch_size), malloc]
            out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"error: {env_name}/{malloc} failed:\n{out.stderr[-2000:]}")
            times[(env_name, malloc)].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
            print(
                f"round {r + 1}/{args.rounds}: {env_name}, {malloc}: {times[(env_name, malloc)][-1]:.2f} s", flush=True
            )
    lines = [
        f"config `{args.config}`: one shard of {args.images} images at batch {args.batch_size}, forward passes only "
        f"(no PNGs), 1 thread, a fresh interpreter per measurement, {args.rounds} interleaved rounds: median (range)",
        "",
        "| environment | malloc | seconds | images/s | vs glibc default, same environment |",
        "|---|---|---|---|---|",
    ]
    for env_name, malloc in MODES:
        t = statistics.median(times[(env_name, malloc)])
        lo, hi = min(times[(env_name, malloc)]), max(times[(env_name, malloc)])
        base = statistics.median(times[(env_name, "default")])
        env_label = "plain process" if env_name == "plain" else "Dask worker's (`MALLOC_TRIM_THRESHOLD_=65536`)"
        malloc_label = "glibc default" if malloc == "default" else "`keep_freed_memory()` (what `write_shard` does)"
        lines.append(
            f"| {env_label} | {malloc_label} | {t:.2f} ({lo:.2f}-{hi:.2f}) | {args.images / t:,.0f} | {base / t:.2f}x |"
        )
    publish("shard_heap: generation shard forward passes", lines, dry_run=args.no_results)


if __name__ == "__main__":
    main()
