"""Evaluation benchmark on Fashion-MNIST: 50/class, 100/class and a long tail (100 -> 10, ratio 0.1).

For each profile it runs the two CLI commands below (each under ``flock /tmp/bench.lock`` so it
never overlaps another benchmark on this shared machine), then collects ``RUN/eval/metrics.json``
into ``benchmarks/results/evaluate_fashion.json`` and prints the markdown tables of RESULTS.md::

    augment train configs/fashion_mnist.yaml --set ... --out OUT/<profile> -q
    augment evaluate OUT/<profile> -q

Usage:
    python benchmarks/evaluate_fashion.py [--out /tmp/bench_eval] [--profiles fm50 fm100 longtail] [--quick]

The settings are sized for 2 shared CPU cores (about 10 minutes per profile); ``--quick`` is a
one-minute smoke run of the same path.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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
    "model.g_channels=32", "model.d_channels=32",
    "train.kimg=12", "train.snapshot_kimg=4", "train.eval_kimg=4", "train.threads=1",
    "evaluate.steps=300", "evaluate.batch_size=64", "evaluate.seeds=3", "evaluate.synthetic_per_class=300",
    "evaluate.extractor_steps=400", "evaluate.threads=1", "tracking.enabled=false",
]
QUICK = ["data.split.test_per_class=100", "train.kimg=0.256", "train.snapshot_kimg=0.128", "train.eval_kimg=0.128",
         "evaluate.steps=10", "evaluate.seeds=2", "evaluate.synthetic_per_class=20", "evaluate.extractor_steps=10"]


def show(cmd: list[str]) -> str:
    return shlex.join(["augment", *cmd[len(AUGMENT):]])


def run(cmd: list[str]) -> float:
    full = ["flock", "/tmp/bench.lock", *cmd]
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
    from augment.evaluate import generate_uint8, per_class_subset
    from augment.metrics import downstream
    from augment.metrics.memorisation import memorisation
    from augment.metrics.report import write_report

    path = run_dir / "eval" / "metrics.json"
    result = json.loads(path.read_text())
    old = result["downstream"]
    empty = torch.zeros(0, dtype=torch.uint8)
    plan = downstream.Plan(
        class_names=result["class_names"], train_images=empty, train_labels=empty.long(), val_images=empty,
        val_labels=empty.long(), test_images=empty, test_labels=torch.zeros(old["n_test"], dtype=torch.int64),
        synthetic_images=empty, synthetic_labels=empty.long(), regimes=list(old["regimes"]), seeds=old["seeds"],
        classifier=old["classifier"], steps=old["steps"], batch_size=old["batch_size"],
        synthetic_share=old["synthetic_share"], synthetic_sampling=old["synthetic_sampling"],
        confidence_threshold=old["confidence_threshold"], classic=old["classic_policy"], selection=old["selection"],
    )
    down = downstream.summarize(plan, old["cells"])
    down["cells"] = old["cells"]
    result["downstream"], result["verdict"] = down, down["verdict"]["text"]
    cfg = load_config(run_dir / "config.yaml")
    data = load_data(cfg.data, cfg.seed)
    G = load_snapshot(find_snapshot(run_dir)).generator()
    k = data.num_classes
    pool, pool_labels = generate_uint8(G, [cfg.evaluate.synthetic_per_class] * k, cfg.generate.seed)
    result["memorisation"] = memorisation(pool, data.train.images, data.test.images, pool_labels, data.class_names,
                                          quantile=cfg.evaluate.near_copy_quantile, heldout_labels=data.test.labels)
    counts = [result["fd_domain"]["per_class"][c]["n_synthetic"] for c in data.class_names]
    real_idx = per_class_subset(data.train.labels, counts, cfg.seed)
    samples = {"real": data.train.images[real_idx], "real_labels": data.train.labels[real_idx], "synthetic": pool,
               "synthetic_labels": pool_labels, "train": data.train.images}
    write_report(run_dir / "eval", result, samples)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_eval"))
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resummarize", action="store_true",
                    help="no training or evaluation: recompute summaries/verdicts of finished runs from their cells")
    args = ap.parse_args()
    results = {}
    if args.resummarize:
        prev = json.loads((REPO / "benchmarks" / "results" / "evaluate_fashion.json").read_text())
    for name in args.profiles:
        sets = PROFILES[name] + COMMON + (QUICK if args.quick else [])
        run_dir = args.out / name
        train_cmd = [*AUGMENT, "train", "configs/fashion_mnist.yaml", *[a for s in sets for a in ("--set", s)],
                     "--out", str(run_dir), "-q"]
        eval_cmd = [*AUGMENT, "evaluate", str(run_dir), "-q"]
        if args.resummarize:
            t_train, t_eval = prev[name]["train_s"], prev[name]["eval_s"]
            metrics = resummarize(run_dir)
        else:
            t_train = run(train_cmd)
            t_eval = run(eval_cmd)
            metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        results[name] = {"commands": [show(train_cmd), show(eval_cmd)], "train_s": t_train,
                         "eval_s": t_eval, "metrics": metrics}
        print(render(name, results[name]), flush=True)
    if not args.quick and set(args.profiles) == set(PROFILES):
        out = REPO / "benchmarks" / "results" / "evaluate_fashion.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        keep = ("snapshot", "sizes", "fd_domain", "prdc", "memorisation", "downstream", "verdict")
        slim = {k: {**v, "metrics": {m: v["metrics"][m] for m in keep}} for k, v in results.items()}
        out.write_text(json.dumps(slim, indent=2))
        print(f"wrote {out}")


def _ci(d: dict, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    s = fmt.format(100 * d["mean"])
    if d.get("ci_low") is not None:
        s += f" [{fmt.format(100 * d['ci_low'])}, {fmt.format(100 * d['ci_high'])}]"
    return s


def render(name: str, res: dict) -> str:
    m = res["metrics"]
    down, fd, prdc, mem = m["downstream"], m["fd_domain"], m["prdc"], m["memorisation"]
    lines = [f"### {name}", "", f"train {res['train_s']:.0f} s, evaluate {res['eval_s']:.0f} s; "
             f"snapshot {Path(m['snapshot']['path']).name} at {m['snapshot']['kimg']:.1f} kimg; "
             f"train/val/test {m['sizes']['train']}/{m['sizes']['val']}/{m['sizes']['test']}", "",
             "| regime | accuracy % | balanced acc. % | macro-F1 % | Δ bal. acc. vs real+classic (pts) |",
             "|---|---|---|---|---|"]
    for r, s in down["regimes"].items():
        d = down["deltas"].get(r, {}).get("balanced_accuracy")
        lines.append(f"| {r} | {_ci(s['accuracy'])} | {_ci(s['balanced_accuracy'])} | {_ci(s['macro_f1'])} | "
                     f"{_ci(d, True) if d else 'baseline'} |")
    sel = down["selection"].get("classic", {})
    lines += ["", f"classic baseline (val): {down['classic_policy']} {sel.get('scores', '')}",
              f"fd_domain {fd['fd_domain']:.2f} (floor {fd['fd_domain_floor']:.2f}); "
              f"kid_domain {1e3 * fd['kid_domain']:.1f}e-3 (floor {1e3 * fd['kid_domain_floor']:.1f}e-3); "
              f"{fd['n_synthetic']} synthetic / {fd['n_real']} real vs {fd['n_reference']} test",
              "PRDC synthetic " + ", ".join(f"{k} {v:.3f}" for k, v in prdc["synthetic"].items())
              + " | floor " + ", ".join(f"{k} {v:.3f}" for k, v in prdc["floor"].items()),
              f"near-copy fraction {mem['near_copy_fraction']:.3f} (threshold {mem['threshold']:.4f}, "
              f"median ratio {mem['median_ratio']:.2f})", "", f"verdict: {m['verdict']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
