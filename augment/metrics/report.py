"""The evaluation report: ``metrics.json``, ``per_class.csv``, plots and ``report.md`` with a verdict.

Every distance is written beside its real-vs-real floor and its sample sizes; ``fd_domain`` is
called what it is (a Fréchet distance in the run's own CNN features), never FID.

Example:
    >>> paths = write_report(run_dir / "eval", result, samples)  # doctest: +SKIP
    >>> sorted(p.name for p in paths.values())  # doctest: +SKIP
    ['confusion.png', 'metrics.json', 'nearest_pairs.png', 'per_class.csv', ...]
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augment.io import atomic_write_text, ensure_dir
from augment.metrics.plots import deltas_figure as deltas_figure  # re-exported: the headline figure
from augment.metrics.plots import plot_confusion, plot_deltas, plot_per_class_recall, plot_regimes, plot_samples
from augment.metrics.verdict import baseline_label
from augment.rundir import METRICS_JSON, PER_CLASS_CSV, REPORT_MD

DELTAS_PNG = "deltas.png"
#: What per_class.csv says for the recall of a class without test images.
NO_TEST = "no test images"


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and tensors converted, NaN/inf -> None, paths -> str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _soft_text(soft: bool | None, selection: dict[str, Any]) -> str:
    """What the synthetic images were trained against: their class (off), or whose probabilities."""
    if not soft:
        return "off"
    return (
        "on (the teacher's probabilities)" if selection.get("teacher") else "on (the filter classifier probabilities)"
    )


def _real_draw_text(down: dict[str, Any]) -> str:
    """How the real+gan regimes drew their real images, in words."""
    if down.get("gan_real_sampling") != "baseline":
        return "uniformly"
    return "as the classic baseline draws them" + (
        " (class-balanced)" if down.get("classic_sampling") == "balance" else " (uniformly)"
    )


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _ci(d: dict[str, Any], scale: float = 100.0, signed: bool = False) -> str:
    if d is None or d.get("mean") is None:
        return "n/a"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    mean = fmt.format(scale * d["mean"])
    if d.get("ci_low") is None:
        return mean
    return f"{mean} [{fmt.format(scale * d['ci_low'])}, {fmt.format(scale * d['ci_high'])}]"


# ------------------------------------------------------------------------------------------------
# Tables.


def per_class_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class: counts, distances with floors, PRDC, near-copies, recall per regime."""
    names = result["class_names"]
    dist = result.get("fd_domain", {}).get("per_class", {})
    prdc = result.get("prdc", {}).get("per_class", {})
    mem = result.get("memorisation", {}).get("per_class", {})
    down = result.get("downstream", {})
    best = down.get("verdict", {}).get("regime")
    rows = []
    for name in names:
        d, p, m = dist.get(name, {}), prdc.get(name, {}), mem.get(name, {})
        row: dict[str, Any] = {
            "class": name,
            "n_train": result["counts"]["train"][name],
            "n_val": result["counts"]["val"][name],
            "n_test": result["counts"]["test"][name],
            "n_metric": d.get("n_synthetic"),
            "fd_domain": d.get("fd_domain"),
            "fd_domain_floor": d.get("fd_domain_floor"),
            "kid_domain": d.get("kid_domain"),
            "kid_domain_floor": d.get("kid_domain_floor"),
        }
        for key in ("precision", "recall", "density", "coverage"):
            row[key] = (p.get("synthetic") or {}).get(key)
            row[f"{key}_floor"] = (p.get("floor") or {}).get(key)
        row["near_copy_fraction"] = m.get("near_copy_fraction")
        no_test = row["n_test"] == 0  # recall is undefined, not 0
        for regime, summary in down.get("regimes", {}).items():
            row[f"recall[{regime}]"] = NO_TEST if no_test else summary["per_class_recall"][name]
        if best and best in down.get("deltas", {}) and no_test:
            for key in ("", "_ci_low", "_ci_high"):
                row[f"recall_delta[{best}]{key}"] = NO_TEST
        elif best and best in down.get("deltas", {}):
            delta = down["deltas"][best]["per_class_recall"][name]
            row[f"recall_delta[{best}]"] = delta["mean"]
            row[f"recall_delta[{best}]_ci_low"] = delta["ci_low"]
            row[f"recall_delta[{best}]_ci_high"] = delta["ci_high"]
        rows.append(row)
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["class"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# report.md


def _k(x: Any) -> Any:
    """KID values are printed x1000."""
    return None if x is None else 1e3 * x


def _vs(value: Any, floor: Any, digits: int = 2) -> str:
    return f"{_f(value, digits)} ({_f(floor, digits)})"


def _distance_lines(name: str, d: dict[str, Any], what: str) -> list[str]:
    kid = name.replace("fd_", "kid_").replace("fid_", "kid_")
    sizes = f"{d.get('n_synthetic')} / {d.get('n_real')} vs {d.get('n_reference')}"
    return [
        f"| {name} ({what}) | {_f(d.get(name))} | {_f(d.get(name + '_floor'))} | {sizes} |",
        f"| {kid} (x1000, ± std over subsets of {d.get('kid_subset_size')}) | "
        f"{_f(_k(d.get(kid)), 2)} ± {_f(_k(d.get(kid + '_std')), 2)} | {_f(_k(d.get(kid + '_floor')), 2)} | same |",
    ]


def regime_table(down: dict[str, Any]) -> list[str]:
    """The regime x metric table (markdown rows) of a downstream summary: means, 95% intervals, deltas."""
    lines = [
        f"| regime | accuracy % | balanced accuracy % | macro-F1 % | Δ balanced acc. vs {down['baseline']} (pts) "
        "| real / synthetic images per step |",
        "|---|---|---|---|---|---|",
    ]
    for r, s in down["regimes"].items():
        delta = down["deltas"].get(r, {}).get("balanced_accuracy")
        lines.append(
            f"| {r} | {_ci(s['accuracy'])} | {_ci(s['balanced_accuracy'])} | {_ci(s['macro_f1'])} | "
            f"{_ci(delta, signed=True) if delta else '(baseline)'} | "
            f"{round(s['images_real'] / s['steps'])} / {round(s['images_synthetic'] / s['steps'])} |"
        )
    return lines


def real_only_gaps(down: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Each augmented regime's balanced accuracy minus real-only training's, paired by seed (mean and
    95% interval), when real-only training has the highest mean of every regime in the grid; else None.

    Without per-seed cells (a re-summarised grid) the gaps are the differences of the means, without
    intervals.
    """
    from augment.metrics.verdict import mean_ci

    m, regimes = "balanced_accuracy", down.get("regimes", {})
    if "real" not in regimes or len(regimes) < 2 or regimes["real"][m].get("mean") is None:
        return None
    real = regimes["real"][m]["mean"]
    if any(s[m].get("mean") is None or s[m]["mean"] >= real for r, s in regimes.items() if r != "real"):
        return None
    by: dict[str, dict[int, float]] = {}
    for cell in down.get("cells") or []:
        by.setdefault(cell["regime"], {})[cell["seed"]] = cell[m]
    gaps = {}
    for r, s in regimes.items():
        if r == "real":
            continue
        seeds = sorted(set(by.get(r, {})) & set(by.get("real", {})))
        if seeds:
            gaps[r] = mean_ci([by[r][seed] - by["real"][seed] for seed in seeds])
        else:
            gaps[r] = {"mean": s[m]["mean"] - real, "ci_low": None, "ci_high": None, "n": 0}
    return gaps


def _real_only_lines(down: dict[str, Any]) -> list[str]:
    """The plain sentence when training on the real images alone beat every augmentation."""
    gaps = real_only_gaps(down)
    if gaps is None:
        return []
    ordered = sorted(gaps.items(), key=lambda kv: kv[1]["mean"], reverse=True)
    listed = "; ".join(f"{r} {_ci(g, signed=True)}" for r, g in ordered)
    below = [r for r, g in ordered if g.get("ci_high") is not None and g["ci_high"] < 0]
    if len(below) == len(gaps):
        measured = "Every gap is measurable (its interval is below 0)."
    elif below:
        measured = f"Measurable (interval below 0) for {', '.join(below)}; the others' intervals include 0."
    else:
        measured = "No gap is measurable: every interval includes 0 or there are too few seeds for one."
    real = down["regimes"]["real"]["balanced_accuracy"]["mean"]
    return [
        f"**Real-only training beat every augmentation.** It has the highest mean balanced accuracy "
        f"({_pct(real)}%); each regime's difference from it, paired by seed (pts, 95% CI): {listed}. {measured}",
        "",
    ]


def _deploy_lines(deploy: dict[str, Any] | None) -> list[str]:
    """The verdict as code: the recommended line, or every measured line under a "do not deploy"."""
    if not deploy:
        return []
    rec = deploy["recommended"]
    shown = [rec] if rec else list(deploy["regimes"])
    code = [deploy["import"], *(f"{deploy['regimes'][r]['code']}  # {r}" for r in shown)]
    return [f"**In your code.** {deploy['text']}", "", "```python", *code, "```", ""]


def _downstream_lines(down: dict[str, Any]) -> list[str]:
    autocast = " (bf16 autocast)" if down.get("precision") == "bf16" else ""
    lines = [
        "## Downstream classifier (real test split)",
        "",
        f"{down['classifier']} trained from scratch, {down['steps']} optimizer steps x {down['batch_size']} images "
        f"in every regime{autocast}, seeds {down['seeds']}; scored on {down['n_test']} real test images. Mean over "
        "seeds with the 95% t-interval; deltas are paired by seed against the classic baseline. The intervals hold the "
        "classifier seeds' spread around this one trained generator, not the GAN training's own: "
        "`augment run CONFIG --trainings 3` (or `augment spread` over runs trained with other `train.seed` values) "
        "gives the interval over trainings.",
        "",
        *regime_table(down),
    ]
    sel = down.get("selection", {})
    classic = sel.get("classic")
    lines.append("")
    if classic:
        scores = ", ".join(f"{k} {_pct(v)}" for k, v in classic["scores"].items())
        lines.append(
            f"Classic baseline chosen on the validation split ({sel['n_val']} images): "
            f"**{classic['chosen']}** (val balanced accuracy %: {scores})"
            + (f"; {sel['classic_sampling_note']}." if sel.get("classic_sampling_note") else ".")
            + _selection_noise(classic)
        )
    else:
        lines.append(f"Classic baseline: **{baseline_label(down)}** (the only policy configured).")
    thr, soft, per_class = down["confidence_threshold"], down.get("soft_labels"), down.get("synthetic_share_per_class")
    shares = ""
    if per_class:  # the tail is where balance sampling puts the synthetic images: print it first
        tail_first = sorted(per_class.items(), key=lambda kv: kv[1], reverse=True)
        shares = "; synthetic fraction of each class's images in a real+gan batch (expected, tail classes first): "
        shares += ", ".join(f"{c} {_f(v, 2)}" for c, v in tail_first)
    lines.append(
        f"Synthetic share of a batch: {down['synthetic_share']} ({down['synthetic_sampling']} class "
        f"sampling; real images drawn {_real_draw_text(down)}); "
        f"confidence filter: {'off' if thr is None else f'keep p(class) >= {thr}'}; "
        f"soft labels: {_soft_text(soft, sel)}{shares}."
    )
    if sel.get("teacher"):
        t = sel["teacher"]
        lines.append(
            f"Teacher: `{t['path']}` ({t['members']} x {t['classifier']}, trained on {t['trained_on_images']} images, "
            f"{t['train_split_overlap']} of them in this run's train split, none in its val or test split). "
            f"Its probabilities label the synthetic images, and the classic baseline trains on the same share of "
            f"teacher-labelled images, real ones from the train split: the deltas are what the synthetic images add."
        )
    if down.get("classic_on_synthetic") is False and "real+gan+classic" in down.get("regimes", {}):
        lines.append(
            "real+gan+classic applies the classic policy to its real images only (synthetic ones as generated)."
        )
    until = down.get("synthetic_until", 1.0)
    if until < 1.0:
        lines.append(
            f"real+gan regimes draw synthetic images in the first {until:.0%} of the {down['steps']} steps "
            "only; the rest train on real images alone (a real-data finish)."
        )
    bn = down.get("synthetic_bn", "joint")
    if bn != "joint":
        own = " and their own scale and shift" if bn == "auxiliary" else ""
        lines.append(
            f"real+gan regimes' classifiers normalise real and synthetic images by their own BatchNorm statistics{own} "
            "in training; evaluation uses the real images' running statistics."
        )
    if "tune" in sel:
        cands = ", ".join(f"{k}: {_pct(v['balanced_accuracy'])}" for k, v in sel["tune"]["candidates"].items())
        lines.append(
            f"Tuned on the validation split with {sel['tune']['regime']} (val balanced accuracy %: "
            f"{cands}); the table above is the test result of that choice."
        )
    if down.get("balanced_topup"):
        added = ", ".join(f"{c} {n}" for c, n in down["balanced_topup"].items() if n)
        lines.append(f"balanced-dataset adds synthetic images up to the largest class: {added}.")
    for regime, why in (down.get("skipped_regimes") or {}).items():
        lines.append(f"{regime} is not in the table: {why}.")
    if "gan-augmenter" in down["regimes"]:
        lines.append(
            f"gan-augmenter is GanAugmenter(p={down['synthetic_share']:g}): each real image is replaced with that "
            "probability by a synthetic image of its class; the deployed regimes use no classic augmentation, "
            "no confidence filter and hard labels."
        )
    if "synthetic_kept" in sel:
        lines.append(f"Synthetic images kept by the filter: {sel['synthetic_kept']}.")
    return lines + [""]


def _prdc_lines(prdc: dict[str, Any]) -> list[str]:
    def row(label: str, v: dict[str, float], n: int) -> str:
        cells = " | ".join(_f(v[key]) for key in ("precision", "recall", "density", "coverage"))
        return f"| {label} | {cells} | {n} vs {prdc['n_reference']} |"

    return [
        f"## Precision / recall / density / coverage (k={prdc['nearest_k']}, domain features)",
        "",
        "| | precision | recall | density | coverage | sizes (vs test) |",
        "|---|---|---|---|---|---|",
        row("synthetic", prdc["synthetic"], prdc["n_synthetic"]),
        row("floor: real train", prdc["floor"], prdc["n_real"]),
        "",
    ]


def _memorisation_lines(mem: dict[str, Any], files: dict[str, str]) -> list[str]:
    return [
        "## Memorisation",
        "",
        f"Nearest GAN-training image of each of {mem['n_synthetic']} synthetic images vs of {mem['n_heldout']} "
        f"held-out real test images ({mem['space']}). Near-copy threshold: the {mem['quantile']:.0%} quantile of "
        f"the held-out distances ({'per class; ' if mem.get('threshold_per_class') else ''}"
        f"{mem['threshold']:.4f} over all classes).",
        "",
        f"- near-copy fraction: **{mem['near_copy_fraction']:.3f}** (held-out real images: "
        f"{mem['heldout_below_threshold']:.3f} by construction)",
        f"- median nearest-training distance: synthetic {mem['synthetic_nn_median']:.4f}, held-out real "
        f"{mem['heldout_nn_median']:.4f} (ratio {_f(mem['median_ratio'])}; below 1 = closer to the training set "
        "than fresh real images)",
        f"- closest pairs: `{files.get('nearest_pairs', 'nearest_pairs.png')}`",
        "",
    ]


def _per_class_lines(result: dict[str, Any], regimes: list[str]) -> list[str]:
    lines = [
        "## Per class",
        "",
        "| class | train | fd_domain (floor) | kid_domain x1000 (floor) | precision (floor) | coverage (floor) "
        "| near-copy |" + "".join(f" recall {r} % |" for r in regimes),
        "|---|---|---|---|---|---|---|" + "---|" * len(regimes),
    ]
    for row in per_class_rows(result):
        lines.append(
            f"| {row['class']} | {row['n_train']} | {_vs(row['fd_domain'], row['fd_domain_floor'])} | "
            f"{_vs(_k(row['kid_domain']), _k(row['kid_domain_floor']))} | "
            f"{_vs(row['precision'], row['precision_floor'])} | {_vs(row['coverage'], row['coverage_floor'])} | "
            f"{_f(row['near_copy_fraction'], 3)} |" + "".join(f" {_pct(row[f'recall[{r}]'])} |" for r in regimes)
        )
    return lines


def _members_text(snap: dict[str, Any]) -> str:
    """`` (a mixture with the checks at 500.0, 620.0 kimg)`` for a snapshot ensemble, else nothing."""
    members = snap.get("member_kimg") or []
    return f" (a mixture with the checks at {', '.join(f'{k:.1f}' for k in members)} kimg)" if members else ""


def render_markdown(result: dict[str, Any], files: dict[str, str]) -> str:
    down = result.get("downstream")
    names, sizes, snap = result["class_names"], result["sizes"], result["snapshot"]
    lines = [f"# Evaluation of `{result['run_dir']}`", ""]
    if down:
        lines += [f"**Verdict.** {down['verdict']['text']}", ""]
        lines += _real_only_lines(down)
        lines += _deploy_lines(down.get("deploy"))
        if "deltas" in files:
            lines += [f"![Δ balanced accuracy per regime against {down.get('baseline')}]({files['deltas']})", ""]
    lines += [
        f"Generator: `{Path(snap['path']).name}` at {snap['kimg']:.1f} kimg{_members_text(snap)}. Data fingerprint "
        f"`{result['data_fingerprint']}`, {len(names)} classes; train/val/test images: "
        f"{sizes['train']}/{sizes['val']}/{sizes['test']}. The test split is real and reached neither the GAN "
        "nor the feature extractor.",
        "",
    ]
    if down:
        lines += _downstream_lines(down)
    fd = result.get("fd_domain")
    if fd:
        lines += [
            "## Distances to the real test split",
            "",
            "`fd_domain` is the Fréchet distance in the features of a small CNN trained on this run's real "
            "train+val split; it is **not FID** and its scale is specific to this data. `kid_domain` is KID in the "
            "same features. The floor is the same distance from real train images (as many per class as "
            "synthetic) to the test split: what a perfect generator would score at these sample sizes.",
            "",
            "| metric | synthetic vs test | floor: real train vs test | sample sizes (synthetic / real vs test) |",
            "|---|---|---|---|",
            *_distance_lines("fd_domain", fd, f"{fd['feature_dims']}-d domain CNN"),
        ]
        if result.get("fid_inception"):
            lines += _distance_lines("fid_inception", result["fid_inception"], "2048-d InceptionV3 FID weights")
        lines.append("")
    if result.get("prdc", {}).get("synthetic"):
        lines += _prdc_lines(result["prdc"])
    if result.get("memorisation"):
        lines += _memorisation_lines(result["memorisation"], files)
    lines += _per_class_lines(result, list((down or {}).get("regimes", {})))
    lines.append("")
    if result.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in result["warnings"][:20]]
        if len(result["warnings"]) > 20:
            lines.append(f"- ... and {len(result['warnings']) - 20} more in metrics.json")
        lines.append("")
    lines += ["## Files", ""] + [f"- `{v}`" for v in files.values()] + [""]
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    result: dict[str, Any],
    samples: dict[str, torch.Tensor] | None = None,
) -> dict[str, Path]:
    """Write metrics.json, per_class.csv, the plots and report.md into ``out_dir``.

    Args:
        result: the dict :func:`augment.metrics.evaluate.evaluate_run` returns.
        samples: uint8 tensors for the pictures: ``real``, ``real_labels``, ``synthetic``,
            ``synthetic_labels`` (sample grid) and ``train`` (nearest-pairs image).
    """
    from augment.metrics.memorisation import save_pairs_image

    out_dir = ensure_dir(Path(out_dir))
    paths: dict[str, Path] = {}
    down = result.get("downstream")
    names = result["class_names"]
    if down and down.get("regimes"):
        if down.get("deltas"):
            paths["deltas"] = plot_deltas(out_dir / DELTAS_PNG, down)
        paths["regimes"] = plot_regimes(out_dir / "regimes.png", down)
        paths["per_class_recall"] = plot_per_class_recall(out_dir / "per_class_recall.png", down, names)
        paths["confusion"] = plot_confusion(out_dir / "confusion.png", down, names)
    if samples is not None:
        paths["samples"] = plot_samples(
            out_dir / "samples.png",
            samples["real"],
            samples["real_labels"],
            samples["synthetic"],
            samples["synthetic_labels"],
            names,
        )
        mem = result.get("memorisation")
        if mem:
            paths["nearest_pairs"] = save_pairs_image(
                out_dir / "nearest_pairs.png",
                samples["synthetic"],
                samples["train"],
                mem["closest_pairs"],
                title=f"closest synthetic/train pairs (RMS pixel distance); near-copy threshold {mem['threshold']:.3f}",
            )
    paths["per_class"] = out_dir / PER_CLASS_CSV
    atomic_write_text(paths["per_class"], _csv_text(per_class_rows(result)))
    paths["metrics"] = out_dir / METRICS_JSON
    atomic_write_text(paths["metrics"], json.dumps(jsonable(result), indent=2))
    paths["report"] = out_dir / REPORT_MD
    files = {k: p.name for k, p in paths.items() if k != "report"}
    atomic_write_text(paths["report"], render_markdown(jsonable(result), files))
    return paths


def _selection_noise(classic: dict[str, Any]) -> str:
    """A sentence where the pick's lead on val is within one standard error (empty otherwise, or for
    records written before the SE was kept)."""
    ranked = sorted(classic["scores"].values())
    lead = ranked[-1] - ranked[-2]
    if "se" not in classic or lead > classic["se"]:
        return ""
    return (
        f" Its lead over the next candidate ({100 * lead:.1f} pts) is within one standard error of a "
        f"balanced accuracy on these images ({100 * classic['se']:.1f} pts): the validation split cannot tell these "
        "baselines apart, so the verdict's baseline may be weaker than the best of them (a larger validation split, "
        "or a single `evaluate.classic` policy chosen on other data, settles it)."
    )
