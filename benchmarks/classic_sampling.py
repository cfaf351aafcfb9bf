"""Stored limited_data rows judged again against a classic baseline that may resample by class.

On a long tail the real+gan regimes draw their synthetic images class by class to even out the real
imbalance (``evaluate.synthetic_sampling: balance``) while a classic baseline that draws the real
images uniformly never rebalances: part of a GAN "gain" can be the rebalancing alone. This script
chooses the classic baseline on the validation split among ``evaluate.classic`` x
``evaluate.classic_sampling`` (today's code, which adds class-balanced resampling), trains it on the
classifier seeds of the stored rows, and pairs every stored GAN regime's test cells against it, per
training and over trainings (:func:`augment.metrics.verdict.crossed_ci`, as ``augment spread`` does).

The GAN-free cells depend only on the data, the classifier budget and the seed, so the stored rows'
generators need not exist any more; the script first retrains the stored natural baseline and checks
it equals the stored cells bit for bit (the same code path), so the pairing is with the very seeds.
``real+gan+classic`` applies the chosen classic policy too, so where val picks another policy than the
stored rows used its stored cells are not paired (that needs the generator: rerun the row)::

    .venv/bin/python benchmarks/classic_sampling.py benchmarks/results/limited_data_longtail_d_sn_640kimg.json \\
        benchmarks/results/limited_data_longtail_d_sn_train_seed1_640kimg.json --workers 2

Prints markdown tables; ``--json`` writes the numbers; nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment.config import load_config  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.metrics import downstream  # noqa: E402
from augment.metrics.classic import classic_label  # noqa: E402
from augment.metrics.regimes import BASELINE, GAN_REGIMES, VERDICT_METRIC  # noqa: E402
from augment.metrics.verdict import crossed_ci, mean_ci  # noqa: E402
from benchmarks.common import command, git_commit, machine  # noqa: E402
from benchmarks.paired_delta import downstream as stored_downstream  # noqa: E402

GAN_FREE = ("real", BASELINE)
#: GAN regimes whose batches get the classic policy too (the val-chosen one).
CLASSIC_REGIMES = ("real+gan+classic",)


def _map(executor: concurrent.futures.Executor | None) -> downstream.MapFn:
    return map if executor is None else executor.map


def _values(cells: list[dict[str, Any]], regime: str) -> dict[int, float]:
    return {c["seed"]: c[VERDICT_METRIC] for c in cells if c["regime"] == regime}


def _stored_values(down: dict[str, Any], regime: str) -> dict[int, float]:
    r = down["regimes"][regime]
    return dict(zip(r["seeds"], r[VERDICT_METRIC]["values"], strict=True))


def rebaseline(specs: list[str], workers: int) -> dict[str, Any]:
    """Choose the baseline on val, train it on the stored seeds, pair the stored GAN cells against it."""
    first_path = specs[0].partition(":")[0]
    doc = json.loads(Path(first_path).read_text())
    cfg = load_config(REPO / doc["config"], [*doc["profile_overrides"], *doc["common_overrides"]])
    data = load_data(cfg.data, cfg.seed)
    downs = [stored_downstream(spec) for spec in specs]
    seeds = downs[0]["seeds"]
    for spec, down in zip(specs, downs, strict=True):
        if down["seeds"] != seeds or any(_stored_values(down, r) != _stored_values(downs[0], r) for r in GAN_FREE):
            raise SystemExit(f"error: {spec}: its GAN-free cells differ from {specs[0]}'s (other data or budget)")
    ev = cfg.evaluate.model_copy(update={"regimes": list(GAN_FREE), "cache_dir": None})
    empty = torch.empty((0, *data.train.images.shape[1:]), dtype=torch.uint8)
    executor = None
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        executor = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        map_fn = _map(executor)
        plan = downstream.prepare(data, empty, torch.empty(0, dtype=torch.int64), ev, seed=cfg.seed, map_fn=map_fn)
        old = downs[0]
        natural = dataclasses.replace(
            plan, classic=old["classic_policy"], classic_sampling="natural", regimes=[BASELINE]
        )
        items = [(BASELINE, s) for s in seeds]
        natural_cells = list(downstream.run_grid(natural, map_fn))
        chosen_cells = list(downstream.run_grid(dataclasses.replace(plan, regimes=[BASELINE]), map_fn))
    finally:
        if executor is not None:
            executor.shutdown()
    assert [(c["regime"], c["seed"]) for c in natural_cells] == items
    reproduced = _values(natural_cells, BASELINE) == _stored_values(old, BASELINE)
    new_base, old_base = _values(chosen_cells, BASELINE), _values(natural_cells, BASELINE)
    out: dict[str, Any] = {
        "benchmark": "classic_sampling",
        "runs": specs,
        "profile": doc.get("profile"),
        "seeds": seeds,
        "selection": plan.selection,
        "old_baseline": classic_label(old["classic_policy"]),
        "new_baseline": classic_label(plan.classic, plan.classic_sampling),
        "natural_reproduced": reproduced,
        "baselines": {
            "old": mean_ci([old_base[s] for s in seeds]),
            "new": mean_ci([new_base[s] for s in seeds]),
            "new_minus_old": mean_ci([new_base[s] - old_base[s] for s in seeds]),
            "new_minus_real": mean_ci([new_base[s] - _stored_values(old, "real")[s] for s in seeds]),
        },
        "per_class_recall_new_minus_old": _per_class(chosen_cells, natural_cells, data.class_names),
        "regimes": {},
        "machine": machine(),
        "commit": git_commit(),
        "command": command(),
    }
    for regime in [r for r in GAN_REGIMES if all(r in d["regimes"] for d in downs)]:
        if regime in CLASSIC_REGIMES and plan.classic != old["classic_policy"]:
            # Its stored cells applied the stored policy; the product applies the newly chosen one to both
            # sides, which needs the generator: not paired here.
            out["regimes"][regime] = {
                "not_paired": f"its stored cells used {old['classic_policy']}, not {plan.classic}"
            }
            continue
        per_run_old, per_run_new = [], []
        for down in downs:
            vals = _stored_values(down, regime)
            per_run_old.append([vals[s] - old_base[s] for s in seeds])
            per_run_new.append([vals[s] - new_base[s] for s in seeds])
        out["regimes"][regime] = {
            "vs_old": [mean_ci(v) for v in per_run_old],
            "vs_new": [mean_ci(v) for v in per_run_new],
            "over_trainings_vs_old": crossed_ci(per_run_old) if len(downs) > 1 else None,
            "over_trainings_vs_new": crossed_ci(per_run_new) if len(downs) > 1 else None,
        }
    return out


def _per_class(new: list[dict[str, Any]], old: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    """Mean over seeds of each class's test recall, new baseline minus old."""
    a = torch.tensor([c["per_class_recall"] for c in sorted(new, key=lambda c: c["seed"])], dtype=torch.float64)
    b = torch.tensor([c["per_class_recall"] for c in sorted(old, key=lambda c: c["seed"])], dtype=torch.float64)
    return dict(zip(names, (a - b).mean(dim=0).tolist(), strict=True))


def _pts(ci: dict[str, Any] | None) -> str:
    if ci is None:
        return "-"
    if ci["ci_low"] is None:
        return f"{100 * ci['mean']:+.1f}"
    return f"{100 * ci['mean']:+.1f} [{100 * ci['ci_low']:+.1f}, {100 * ci['ci_high']:+.1f}]"


def render(out: dict[str, Any]) -> str:
    sel = out["selection"]
    scores = ", ".join(f"{k} {100 * v:.1f}" for k, v in sel.get("classic", {}).get("scores", {}).items())
    b = out["baselines"]
    lines = [
        f"Classic baseline chosen on val ({sel.get('n_val')} images, seeds {sel.get('seeds')}): "
        f"**{out['new_baseline']}** (val balanced accuracy %: {scores}); the stored rows' baseline: "
        f"{out['old_baseline']} (retrained bit for bit: {out['natural_reproduced']}).",
        "",
        f"Test balanced accuracy over seeds {out['seeds']}: old {100 * b['old']['mean']:.1f}, "
        f"new {100 * b['new']['mean']:.1f}; new minus old {_pts(b['new_minus_old'])} pts, "
        f"new minus real-only {_pts(b['new_minus_real'])} pts.",
        "",
        "| regime | training | vs old baseline (pts) | vs new baseline (pts) |",
        "|---|---|---|---|",
    ]
    for regime, r in out["regimes"].items():
        if "not_paired" in r:
            lines.append(f"| {regime} | - | not paired: {r['not_paired']} | - |")
            continue
        for i, (o, n) in enumerate(zip(r["vs_old"], r["vs_new"], strict=True)):
            lines.append(f"| {regime} | {out['runs'][i].rsplit('/', 1)[-1]} | {_pts(o)} | {_pts(n)} |")
        if r["over_trainings_vs_old"] is not None:
            lines.append(
                f"| {regime} | **over trainings** | {_pts(r['over_trainings_vs_old'])} | "
                f"**{_pts(r['over_trainings_vs_new'])}** |"
            )
    per_class = ", ".join(f"{k} {100 * v:+.1f}" for k, v in out["per_class_recall_new_minus_old"].items())
    lines += ["", f"Per-class test recall, new baseline minus old (pts, mean over seeds): {per_class}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="limited_data JSON[:NAME] of one profile and data draw, one per training")
    ap.add_argument("--workers", type=int, default=2, help="processes for the classifier cells (1 = in process)")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args(argv)
    out = rebaseline(args.runs, args.workers)
    text = render(out)
    print(text, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({**out, "table": text}, indent=1))
    return out


if __name__ == "__main__":
    main()
