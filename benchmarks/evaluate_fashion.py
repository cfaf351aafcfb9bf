"""Evaluation benchmark on Fashion-MNIST: 50/class, 100/class and a long tail (100 -> 10, ratio 0.1).

For each profile it runs the three CLI commands below, the phases of the pipeline (each under
``flock /tmp/bench.lock`` where flock exists, so it never overlaps another benchmark on this shared
machine), then collects ``RUN/eval/metrics.json``
into ``benchmarks/results/evaluate_fashion[_gpu].json`` and prints the markdown tables of RESULTS.md::

    augment train configs/fashion_mnist.yaml --set ... --out OUT/<profile> -q
    augment generate OUT/<profile> -q
    augment evaluate OUT/<profile> -q

Usage:
    python benchmarks/evaluate_fashion.py [--out /tmp/bench_eval] [--profiles fm50 fm100 longtail] [--quick]
    python benchmarks/evaluate_fashion.py --gpu --profiles fm50 fm100 longtail   # on a GPU

The CPU settings are sized for 2 shared CPU cores (about 10 minutes per profile); ``--gpu`` trains
for a fixed 1.5 minutes on CUDA (best snapshot by fd_domain) and trains the downstream classifiers longer, with 5
seeds. ``--quick`` is a one-minute smoke run of the same path.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # augment/, where it is not installed (a GPU box running the script)
# `python -m flows.cli` is the `augment` console command, run from REPO (so a frozen copy of the
# tree can be benchmarked while the working tree changes).
AUGMENT = [sys.executable, "-m", "flows.cli"]

PROFILES = {
    "fm50": ["data.per_class=50"],
    "fm100": ["data.per_class=100"],
    "longtail": ["data.per_class=null", "data.imbalance={ratio: 0.1, max_per_class: 100}"],
}
# The settings of the RESULTS.md tables (2 shared CPU cores): GAN 32/32 channels, 12 kimg, fd_domain
# every 4 kimg keeps the best snapshot (the long-tail rerun with the current recipe used train.kimg=30,
# snapshot/eval every 10). Classifier: the 49.8k-param SmallCNN, 300 steps x 64 in every regime,
# 3 seeds; 300 synthetic images per class in the pool. On a GPU, raise train.kimg and evaluate.steps.
COMMON = [
    "model.g_channels=32",
    "model.d_channels=32",
    "train.kimg=12",
    "train.snapshot_kimg=4",
    "train.eval_kimg=4",
    "train.threads=1",
    "evaluate.steps=300",
    "evaluate.batch_size=64",
    "evaluate.seeds=3",
    "evaluate.synthetic_per_class=300",
    "evaluate.extractor_steps=400",
    "evaluate.threads=1",
    "tracking.enabled=false",
]
# One GPU (H100): GAN trained for 1.5 minutes (train.cuda defaults: batch 512, bf16, channels_last,
# torch.compile, lazy R1), fd_domain every 150 kimg keeps the best; classifiers 1500 steps x 128, 5 seeds,
# 1000 synthetic images per class in the pool; everything on CUDA.
GPU = [
    "model.g_channels=32",
    "model.d_channels=32",
    "train.device=cuda",
    "evaluate.device=cuda",
    "train.kimg=1000000",
    "train.max_minutes=1.5",
    "train.eval_kimg=150",
    "train.snapshot_kimg=100000",
    "evaluate.steps=1500",
    "evaluate.batch_size=128",
    "evaluate.seeds=5",
    "evaluate.synthetic_per_class=1000",
    "evaluate.extractor_steps=1500",
    "tracking.enabled=false",
]
QUICK = [
    "data.split.test_per_class=100",
    "train.kimg=0.256",
    "train.snapshot_kimg=0.128",
    "train.eval_kimg=0.128",
    "evaluate.steps=10",
    "evaluate.seeds=2",
    "evaluate.synthetic_per_class=20",
    "evaluate.extractor_steps=10",
]


def show(cmd: list[str]) -> str:
    return shlex.join(["augment", *cmd[len(AUGMENT) :]])


def run(cmd: list[str]) -> float:
    full = ["flock", "/tmp/bench.lock", *cmd] if shutil.which("flock") else cmd
    print("$", show(cmd), flush=True)
    start = time.time()
    subprocess.run(full, check=True, cwd=REPO)
    return time.time() - start


def resummarize(run_dir: Path) -> dict:
    """Recompute the downstream summary and verdict of a finished evaluation from its stored cells
    with the current code (the cells are the measurements; the aggregation and the verdict rule may
    have changed since), redo the memorisation check (cheap: the pool is regenerated from the
    snapshot with the same seeds), and rewrite the report."""
    import torch

    from augment.checkpoint import find_snapshot, load_snapshot
    from augment.config import load_config
    from augment.data import load_data
    from augment.metrics import downstream
    from augment.metrics.evaluate import generate_uint8, per_class_subset
    from augment.metrics.memorisation import memorisation
    from augment.metrics.report import write_report
    from augment.metrics.verdict import summarize

    path = run_dir / "eval" / "metrics.json"
    result = json.loads(path.read_text())
    old = result["downstream"]
    empty = torch.zeros(0, dtype=torch.uint8)
    plan = downstream.Plan(
        class_names=result["class_names"],
        train_images=empty,
        train_labels=empty.long(),
        val_images=empty,
        val_labels=empty.long(),
        test_images=empty,
        test_labels=torch.zeros(old["n_test"], dtype=torch.int64),
        synthetic_images=empty,
        synthetic_labels=empty.long(),
        regimes=list(old["regimes"]),
        seeds=old["seeds"],
        classifier=old["classifier"],
        steps=old["steps"],
        batch_size=old["batch_size"],
        synthetic_share=old["synthetic_share"],
        synthetic_sampling=old["synthetic_sampling"],
        confidence_threshold=old["confidence_threshold"],
        classic=old["classic_policy"],
        classic_sampling=old.get("classic_sampling", "natural"),
        selection=old["selection"],
    )
    down = summarize(plan, old["cells"])
    down["cells"] = old["cells"]
    result["downstream"], result["verdict"] = down, down["verdict"]["text"]
    cfg = load_config(run_dir / "config.yaml")
    data = load_data(cfg.data, cfg.seed)
    G = load_snapshot(find_snapshot(run_dir)).generator()
    k = data.num_classes
    pool, pool_labels = generate_uint8(G, [cfg.evaluate.synthetic_per_class] * k, cfg.generate.seed)
    result["memorisation"] = memorisation(
        pool,
        data.train.images,
        data.test.images,
        pool_labels,
        data.class_names,
        quantile=cfg.evaluate.near_copy_quantile,
        heldout_labels=data.test.labels,
    )
    counts = [result["fd_domain"]["per_class"][c]["n_synthetic"] for c in data.class_names]
    real_idx = per_class_subset(data.train.labels, counts, cfg.seed)
    samples = {
        "real": data.train.images[real_idx],
        "real_labels": data.train.labels[real_idx],
        "synthetic": pool,
        "synthetic_labels": pool_labels,
        "train": data.train.images,
    }
    write_report(run_dir / "eval", result, samples)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_eval"))
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="the GPU settings (see GPU above)")
    ap.add_argument("--set", action="append", default=[], help="extra overrides (e.g. data.root=DIR)")
    ap.add_argument(
        "--resummarize",
        action="store_true",
        help="no training or evaluation: recompute summaries/verdicts of finished runs from their cells",
    )
    args = ap.parse_args()
    results = {}
    if args.resummarize:
        prev = json.loads((REPO / "benchmarks" / "results" / "evaluate_fashion.json").read_text())
    for name in args.profiles:
        sets = PROFILES[name] + (GPU if args.gpu else COMMON) + (QUICK if args.quick else []) + args.set
        run_dir = args.out / name
        train_cmd = [
            *AUGMENT,
            "train",
            "configs/fashion_mnist.yaml",
            *[a for s in sets for a in ("--set", s)],
            "--out",
            str(run_dir),
            "-q",
        ]
        eval_cmd = [*AUGMENT, "evaluate", str(run_dir), "-q"]
        gen_cmd = [*AUGMENT, "generate", str(run_dir), "-q"]
        t_gen = None
        if args.resummarize:
            t_train, t_eval = prev[name]["train_s"], prev[name]["eval_s"]
            metrics = resummarize(run_dir)
        else:
            t_train = run(train_cmd)
            t_gen = run(gen_cmd)
            t_eval = run(eval_cmd)
            metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        commands = [show(train_cmd), *([show(gen_cmd)] if t_gen is not None else []), show(eval_cmd)]
        results[name] = {
            "commands": commands,
            "train_s": t_train,
            "generate_s": t_gen,
            "eval_s": t_eval,
            "metrics": metrics,
        }
        print(render(name, results[name]), flush=True)
        if not args.quick:  # saved after each profile, merged with the profiles run before
            out = REPO / "benchmarks" / "results" / f"evaluate_fashion{'_gpu' if args.gpu else ''}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            keep = ("snapshot", "sizes", "fd_domain", "prdc", "memorisation", "downstream", "verdict", "seconds")
            saved = json.loads(out.read_text()) if out.is_file() else {}
            saved[name] = {**results[name], "metrics": {m: metrics.get(m) for m in keep}}
            out.write_text(json.dumps(saved, indent=2))
            print(f"wrote {out}", flush=True)


def render(name: str, res: dict) -> str:
    from augment.metrics.report import regime_table

    m = res["metrics"]
    down, fd, prdc, mem = m["downstream"], m["fd_domain"], m["prdc"], m["memorisation"]
    gen = f"generate {res['generate_s']:.0f} s, " if res.get("generate_s") is not None else ""
    lines = [
        f"### {name}",
        "",
        f"train {res['train_s']:.0f} s, {gen}evaluate {res['eval_s']:.0f} s; "
        f"snapshot {Path(m['snapshot']['path']).name} at {m['snapshot']['kimg']:.1f} kimg; "
        f"train/val/test {m['sizes']['train']}/{m['sizes']['val']}/{m['sizes']['test']}",
        "",
        *regime_table(down),
    ]
    sel = down["selection"].get("classic", {})
    lines += [
        "",
        f"classic baseline (val): {down['classic_policy']} {sel.get('scores', '')}",
        f"fd_domain {fd['fd_domain']:.2f} (floor {fd['fd_domain_floor']:.2f}); "
        f"kid_domain {1e3 * fd['kid_domain']:.1f}e-3 (floor {1e3 * fd['kid_domain_floor']:.1f}e-3); "
        f"{fd['n_synthetic']} synthetic / {fd['n_real']} real vs {fd['n_reference']} test",
        "PRDC synthetic "
        + ", ".join(f"{k} {v:.3f}" for k, v in prdc["synthetic"].items())
        + " | floor "
        + ", ".join(f"{k} {v:.3f}" for k, v in prdc["floor"].items()),
        f"near-copy fraction {mem['near_copy_fraction']:.3f} (threshold {mem['threshold']:.4f}, "
        f"median ratio {mem['median_ratio']:.2f})",
        "",
        f"verdict: {m['verdict']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
