"""How should a trained generator's samples enter a classifier's training? Ranked on a dev split,
reported on the test split for the pick only.

The product chooses the synthetic share, the confidence filter and soft labels on the run's
validation split (``evaluate.tune``). On the Fashion-MNIST long tail that split is 42 images, where
one image is 2.4 points of balanced accuracy: too few to rank uses that differ by a point. This
benchmark ranks them on a **dev split** instead: ``--dev-per-class`` real images per class that the
data limit left out, taken after the test split's images in the same per-class order (so disjoint from
train, val and test; the GAN and its checks never see them). It is how the shipped defaults are
chosen without reading the test split; a user's run still has only its own validation split.

For one finished run (``RUN_DIR``: ``augment train`` or ``benchmarks/limited_data.py``), every
candidate of the grid ``--pool`` (synthetic images per class) x ``--latent-std`` (G's latents scaled:
below 1 the truncation trick's direction, above 1 more diverse) x ``--around-real`` (latents drawn around the
inverted codes of the class's training images: variations of real images along G's manifold) x ``--shares``
x ``--sampling``
(``balance``: the tail classes get the larger synthetic share; ``uniform``: equal counts) x ``--thresholds``
(confidence filter; ``none`` = off) x ``--soft`` x ``--until`` (the fraction of the steps that draw synthetic
images; the rest train on real images only) x ``--steps`` (the classifier's optimizer steps; default: the
run's) trains ``--seeds`` classifiers of ``--regime`` (default real+gan+classic) and scores them on dev,
paired per seed with the verdict's baseline (``real+classic``) at the same number of steps, its classic
policy chosen on val at that budget as the product does. The candidate with the best mean dev accuracy
is the pick (ties: the earlier candidate, the smaller pool first; at one step count that is the best
mean dev delta); then the pick and the run's own settings (the default) are trained again and scored
on the test split, paired per seed with the baseline at their own step count. With several step
counts, the baseline also gets its best one on dev, and the test reports the pick against it: each
side at the classifier budget dev chose for it. The pools are prefixes of one another (every
image is seeded per class and index, as ``augment evaluate`` draws them), so a pool of 300 is the
300 images the run's evaluation used. ``--mix RUN ...`` draws every pool from an equal-weight mixture of
RUN_DIR's generator and other trainings of the same data (routed by the latent, as a snapshot ensemble is).

Cells run one by one on ``--workers`` single-threaded processes, as ``limited_data.py``'s do, so the
default's test cells equal that benchmark's on the same run and pool::

    .venv/bin/python benchmarks/sample_use.py /tmp/bench_ld/longtail/baseline --dev-per-class 500 \\
        --pool 300 1000 3000 --shares 0.25 0.5 0.75 --json /tmp/sample_use.json

Prints two markdown tables (dev ranking; test of the pick and the default); nothing is appended
anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment import rundir  # noqa: E402
from augment.checkpoint import find_snapshot, load_snapshot  # noqa: E402
from augment.config import Config  # noqa: E402
from augment.data import ImageSet, PreparedData, load_data  # noqa: E402
from augment.errors import AugmentError, ConfigError  # noqa: E402
from augment.generate import latents, quantize  # noqa: E402
from augment.metrics import downstream  # noqa: E402
from augment.metrics.evaluate import generate_uint8  # noqa: E402
from augment.metrics.regimes import BASELINE, GAN_REGIMES  # noqa: E402
from augment.metrics.verdict import mean_ci  # noqa: E402
from augment.models.classifier import SYNTHETIC_BN  # noqa: E402
from augment.models.ensemble import SnapshotEnsemble  # noqa: E402
from benchmarks.common import command, git_commit, machine, run_cli  # noqa: E402
from benchmarks.limited_data import make_executor  # noqa: E402

#: Inversion (``--around-real``): Adam steps from z = 0, and the weight of the pull to the prior's shell.
INVERT_STEPS, INVERT_SHELL = 300, 1e-3

#: The settings one candidate varies (Plan fields, plus the pool and how its latents are drawn).
KEYS = (
    "pool",
    "latent_std",
    "around_real",
    "synthetic_share",
    "synthetic_sampling",
    "confidence_threshold",
    "soft_labels",
    "synthetic_until",
    "synthetic_bn",
    "steps",
)


def dev_split(cfg: Config, data: PreparedData, per_class: int) -> ImageSet:
    """``per_class`` real images per class the limit left out, after the test split's images.

    Raises:
        ConfigError: the config draws its test split from the limited images (``split.test``, not
            ``split.test_per_class``), so there is no ordered remainder to take a dev split from.
    """
    split = cfg.data.split
    if split.test_per_class is None:
        raise ConfigError(
            "a dev split needs data.split.test_per_class (a test split drawn outside the limited set); "
            "this config takes its test split from the limited images"
        )
    wide_split = split.model_copy(update={"test_per_class": split.test_per_class + per_class})
    wide = load_data(cfg.data.model_copy(update={"split": wide_split}), cfg.seed)
    if wide.train.ids != data.train.ids or wide.val.ids != data.val.ids:
        raise AugmentError("the dev split's data draw changed train or val: the data source is not the run's")
    test_ids = set(data.test.ids)
    keep = [i for i, image_id in enumerate(wide.test.ids) if image_id not in test_ids]
    idx = torch.tensor(keep, dtype=torch.int64)
    return ImageSet(wide.test.images[idx], wide.test.labels[idx], [wide.test.ids[i] for i in keep])


def pool_prefix(labels: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    """Mask of the first ``n`` images of each class in a pool generated class by class."""
    keep = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_classes):
        keep[torch.nonzero(labels == c).flatten()[:n]] = True
    return keep


class LatentStd(torch.nn.Module):
    """``G`` fed its latents times ``std``: 1 is the training distribution, below 1 trades diversity
    for fidelity (the truncation direction), above 1 the other way. The latents themselves are the
    ones ``augment generate`` draws, so pools at two stds hold the same images' codes, rescaled."""

    def __init__(self, G: torch.nn.Module, std: float) -> None:
        super().__init__()
        self.G, self.std = G, float(std)
        self.z_dim, self.channels, self.image_size = G.z_dim, G.channels, G.image_size

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.G(z * self.std, y)


def members_of(G: torch.nn.Module) -> list[torch.nn.Module]:
    """The generators a snapshot samples from: a :class:`SnapshotEnsemble`'s members, or ``G`` itself."""
    return list(G.members) if isinstance(G, SnapshotEnsemble) else [G]


def invert(
    G: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = INVERT_STEPS, lr: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents ``z*`` with ``G(z*, y)`` close to each real image, and each one's pixel MSE in [-1, 1].

    Adam on the pixel MSE from ``z = 0`` (G's mean latent, so the result is a function of the image
    alone), plus a weak pull toward the prior's shell (``|z|^2 / z_dim`` near 1) so the codes stay
    where G was trained. ``G`` is a plain generator in eval mode (its weights are not touched).
    """
    x = images.float() / 127.5 - 1.0
    z = torch.zeros(len(x), G.z_dim, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        err = (G(z, labels) - x).square().mean(dim=(1, 2, 3))
        shell = (z.square().mean(dim=1) - 1.0).square()
        (err.sum() + INVERT_SHELL * shell.sum()).backward()
        opt.step()
    with torch.no_grad():
        err = (G(z, labels) - x).square().mean(dim=(1, 2, 3))
    return z.detach(), err


class AroundReal(torch.nn.Module):
    """G's latents drawn around the inverted codes of its class's real training images:
    ``z = sqrt(1 - sigma^2) z*_a + sigma e``. ``sigma = 1`` is G's prior; toward 0, a reconstruction of
    real image ``a``, so between the two: variations of real images along G's own manifold, anchored
    where the data is (for a 10-image class, where G's prior samples are weakest).

    As :class:`SnapshotEnsemble` routes by the first latent coordinate, the anchor is chosen by the
    second one (``a = floor(n_c * Phi(z_1))``, uniform over the class's images) and that coordinate
    re-drawn as a standard normal, so an image is a function of its latent alone: the latents
    ``augment generate`` draws, per (seed, class, index). ``codes[k]`` holds every training image's
    code in member ``k`` (class-sorted, ``counts`` per class).
    """

    def __init__(self, G: torch.nn.Module, codes: torch.Tensor, counts: list[int], sigma: float) -> None:
        super().__init__()
        if not 0 < sigma <= 1:
            raise ValueError(f"sigma must be in (0, 1], got {sigma!r}")
        if min(counts) < 1:
            raise ValueError("every class needs a real image to anchor on")
        self.G, self.sigma = G, float(sigma)
        self.z_dim, self.channels, self.image_size = G.z_dim, G.channels, G.image_size
        self.codes = codes  # (members, images, z_dim)
        self.counts = torch.tensor(counts, dtype=torch.int64)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts

    def anchors(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index into codes per row, z with its second coordinate re-drawn)``."""
        n = self.counts[y].double()
        u = torch.special.ndtr(z[:, 1].double()) * n
        a = torch.minimum(u.floor(), n - 1)
        z1 = torch.special.ndtri((u - a).clamp(1e-12, 1 - 1e-12)).to(z.dtype)
        return self.offsets[y] + a.long(), torch.cat([z[:, :1], z1[:, None], z[:, 2:]], dim=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ensemble = isinstance(self.G, SnapshotEnsemble)
        if ensemble:  # the member is chosen as the ensemble chooses it, by the first coordinate
            member, z0 = self.G.route(z)
            z = torch.cat([z0[:, None], z[:, 1:]], dim=1)
        else:
            member = torch.zeros(len(z), dtype=torch.int64)
        idx, e = self.anchors(z, y)
        z = (1.0 - self.sigma**2) ** 0.5 * self.codes[member, idx].to(z.dtype) + self.sigma * e
        return self.G.dispatch(member, z, y) if ensemble else self.G(z, y)


def around_real_grid(
    G: torch.nn.Module, codes: torch.Tensor, train: ImageSet, sigmas: list[float], seed: int, per_sigma: int = 2
) -> torch.Tensor:
    """One row per class: its first training image, G's reconstruction of it (first member), ``per_sigma``
    variations at each ``sigma`` (``sqrt(1 - s^2) z* + s e``, the same ``e`` at every sigma), and a prior
    sample. uint8 ``(rows * cols, C, H, W)``, row-major, for ``torchvision.utils.save_image(nrow=cols)``."""
    order = torch.sort(train.labels, stable=True).indices
    labels = train.labels[order]
    G0 = members_of(G)[0]
    out = []
    with torch.no_grad():
        for c in labels.unique().tolist():
            j = int(torch.nonzero(labels == c)[0])
            y = torch.full((per_sigma + 1,), c, dtype=torch.int64)
            e = latents(seed, y, torch.arange(per_sigma + 1), G0.z_dim)
            z = codes[0, j : j + 1]
            row = [train.images[order[j]][None], quantize(G0(z, y[:1]))]
            row += [quantize(G0((1 - s * s) ** 0.5 * z + s * e[:per_sigma], y[:per_sigma])) for s in sigmas]
            out += [*row, quantize(G0(e[per_sigma:], y[:1]))]
    return torch.cat(out)


def inverted_codes(G: torch.nn.Module, train: ImageSet, num_classes: int) -> tuple[torch.Tensor, list[int], dict]:
    """Every training image's code in every member of ``G`` (class-sorted), the class counts, and
    the reconstructions' pixel MSE (mean, per class) for the report."""
    order = torch.sort(train.labels, stable=True).indices
    images, labels = train.images[order], train.labels[order]
    codes, errs = zip(*(invert(g, images, labels) for g in members_of(G)), strict=True)
    err = torch.stack(errs).mean(0)
    counts = [int((labels == c).sum()) for c in range(num_classes)]
    per_class = [round(float(err[labels == c].mean()), 4) for c in range(num_classes)]
    return torch.stack(codes), counts, {"mse": round(float(err.mean()), 4), "mse_per_class": per_class}


def candidate_plan(
    plan: downstream.Plan,
    cand: dict[str, Any],
    on: ImageSet | None,
    pools: dict[tuple[float, float], torch.Tensor] | None = None,
) -> downstream.Plan:
    """``plan`` with the candidate's pool prefix and settings, scored on ``on`` (None: the test split).

    ``plan`` is the one prepared at the candidate's ``steps`` (its classic policy chosen at that budget)
    with the prior's pool; ``pools`` holds the same pool's images at the other ``(latent_std, around_real)``.
    """
    if cand["steps"] != plan.steps:
        raise ValueError(f"candidate of {cand['steps']} steps on a plan prepared for {plan.steps}")
    key = latent_key(cand)
    images = plan.synthetic_images if key == (1.0, 1.0) else (pools or {}).get(key)
    if images is None:
        raise ValueError(f"no pool at latent std {key[0]:g}, around real {key[1]:g}")
    keep = pool_prefix(plan.synthetic_labels, cand["pool"], plan.num_classes)
    subset = {
        "synthetic_images": images[keep],
        "synthetic_labels": plan.synthetic_labels[keep],
        "synthetic_probs": None if plan.synthetic_probs is None else plan.synthetic_probs[keep],
        "synthetic_confidence": None if plan.synthetic_confidence is None else plan.synthetic_confidence[keep],
    }
    full = _cand(cand)  # a setting the candidate leaves out: its value before it existed
    settings = {k: full[k] for k in KEYS if k not in ("pool", "latent_std", "around_real")}
    scored = {} if on is None else {"test_images": on.images, "test_labels": on.labels}
    return dataclasses.replace(plan, **subset, **settings, **scored)


def latent_key(cand: dict[str, Any]) -> tuple[float, float]:
    """``(latent_std, around_real)`` of a candidate; (1, 1) is G's prior, the pool evaluation uses."""
    return float(cand.get("latent_std", 1.0)), float(cand.get("around_real", 1.0))


def cells(plan: downstream.Plan, regime: str, map_fn: downstream.MapFn) -> list[dict[str, Any]]:
    """The plan's seeds of one regime (scored on the plan's test images), in seed order."""
    return list(downstream.run_grid(dataclasses.replace(plan, regimes=[regime]), map_fn))


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95% t-interval of ``a - b`` balanced accuracy, in points, seed by seed."""
    assert [c["seed"] for c in a] == [c["seed"] for c in b]
    return mean_ci([100 * (x["balanced_accuracy"] - y["balanced_accuracy"]) for x, y in zip(a, b, strict=True)])


def per_class_delta(a: list[dict[str, Any]], b: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    """Mean per-class recall of ``a`` minus ``b``, in points."""
    ra = np.mean([c["per_class_recall"] for c in a], axis=0)
    rb = np.mean([c["per_class_recall"] for c in b], axis=0)
    return {n: round(float(100 * (x - y)), 1) for n, x, y in zip(names, ra, rb, strict=True)}


def _label(cand: dict[str, Any]) -> str:
    th = "none" if cand["confidence_threshold"] is None else f"{cand['confidence_threshold']:g}"
    until = cand.get("synthetic_until", 1.0)
    std, around = latent_key(cand)
    return (
        f"pool {cand['pool']}"
        + (f" at latent std {std:g}" if std != 1.0 else "")
        + (f" around real images (sigma {around:g})" if around != 1.0 else "")
        + f", share {cand['synthetic_share']:g} ({cand['synthetic_sampling']}), filter {th}, "
        f"soft {cand['soft_labels']}"
        + (f", synthetic until {until:g} of the steps" if until < 1 else "")
        + (f", {cand['synthetic_bn']} BatchNorm" if cand.get("synthetic_bn", "joint") != "joint" else "")
        + f", {cand['steps']} steps"
    )


#: A setting's value in result rows written before it existed (G's prior; the joint BatchNorm).
OLD_ROW_DEFAULTS = {"latent_std": 1.0, "around_real": 1.0, "synthetic_bn": "joint"}


def _cand(row: dict[str, Any]) -> dict[str, Any]:
    """A candidate's settings from a result row (JSON written before a setting existed: its old value)."""
    return {k: row.get(k, OLD_ROW_DEFAULTS.get(k)) for k in KEYS}


def _ci(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]"


def _pct(d: dict[str, Any]) -> str:
    return f"{d['mean']:.1f} [{d['ci_low']:.1f}, {d['ci_high']:.1f}]"


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_dir = args.run_dir
    sets = [f"evaluate.seeds={args.seeds}", "evaluate.tune=false", "evaluate.threads=1"]  # lone cells: one thread each
    cfg = rundir.run_config(run_dir, sets)
    ev = cfg.evaluate
    default = {
        "pool": ev.synthetic_per_class,
        "latent_std": 1.0,
        "around_real": 1.0,
        "synthetic_share": ev.synthetic_share,
        "synthetic_sampling": ev.synthetic_sampling,
        "confidence_threshold": ev.confidence_threshold,
        "soft_labels": ev.soft_labels,
        "synthetic_until": ev.synthetic_until,
        "synthetic_bn": ev.synthetic_bn,
        "steps": ev.steps,
    }
    steps = args.steps or [ev.steps]
    grid = [
        dict(zip(KEYS, values, strict=True))
        for values in itertools.product(
            args.pool,
            args.latent_std,
            args.around_real,
            args.shares,
            args.sampling,
            args.thresholds,
            args.soft,
            args.until,
            args.bn,
            steps,
        )
    ]
    if default not in grid:
        grid.append(default)
    data = load_data(cfg.data, cfg.seed)
    dev = dev_split(cfg, data, args.dev_per_class)
    snap_path = find_snapshot(run_dir)
    snap = load_snapshot(snap_path)
    rundir.check_data_matches(snap_path, snap.class_names, snap.data_fingerprint, data)
    biggest = max(c["pool"] for c in grid)
    t0 = time.time()
    G = snap.generator("cpu")
    mixed = []
    for other in args.mix:  # more trainings of the same data: one equal-weight mixture, routed by the latent
        other_path = find_snapshot(other)
        other_snap = load_snapshot(other_path)
        rundir.check_data_matches(other_path, other_snap.class_names, other_snap.data_fingerprint, data)
        mixed.append(
            {
                "run_dir": str(other),
                "path": str(other_path),
                "kimg": other_snap.kimg,
                "member_kimg": list(other_snap.member_kimg),
                "generator": other_snap.generator("cpu"),
            }
        )
    if mixed:
        G = SnapshotEnsemble([G, *(m.pop("generator") for m in mixed)])
    pool, labels = generate_uint8(G, [biggest] * data.num_classes, cfg.generate.seed)
    counts = [biggest] * data.num_classes
    pools = {
        (std, 1.0): generate_uint8(LatentStd(G, std), counts, cfg.generate.seed)[0]
        for std in sorted({c["latent_std"] for c in grid} - {1.0})
    }
    inversion = None
    sigmas = sorted({c["around_real"] for c in grid} - {1.0})
    if sigmas:
        codes, per_class, inversion = inverted_codes(G, data.train, data.num_classes)
        for sigma in sigmas:
            pools[(1.0, sigma)] = generate_uint8(AroundReal(G, codes, per_class, sigma), counts, cfg.generate.seed)[0]
        print(f"train images inverted: pixel MSE {inversion['mse']} (per class {inversion['mse_per_class']})")
        if args.grid is not None:
            from torchvision.utils import save_image

            tiles = around_real_grid(G, codes, data.train, sigmas, cfg.generate.seed)
            save_image(tiles.float() / 255, args.grid, nrow=len(tiles) // data.num_classes, padding=1, pad_value=1.0)
            print(
                f"wrote {args.grid}: per class a training image, its reconstruction, 2 per sigma {sigmas}, a prior one"
            )
    print(
        f"{len(pool)} synthetic images from {snap_path} in {time.time() - t0:.0f} s; dev {len(dev)} images", flush=True
    )

    executor = make_executor(args.workers)
    map_fn = map if executor is None else (lambda fn, items: executor.map(fn, items))
    try:
        plans = {}  # one per classifier budget: the classic policy is chosen on val at that budget
        budgets = list(dict.fromkeys(c["steps"] for c in grid))  # the default's too, where it is not in --steps
        for n in budgets:
            plans[n] = downstream.prepare(
                data, pool, labels, ev.model_copy(update={"steps": n}), seed=cfg.seed, map_fn=map_fn
            )
        if any(c["confidence_threshold"] is not None or c["soft_labels"] for c in grid):
            for plan in plans.values():  # the real-data classifier's probabilities
                downstream.score_pool(plan, plan.selection["seeds"][0])
        plan = plans[default["steps"]]
        regime = args.regime

        def baseline(n: int, on: ImageSet | None) -> list[dict[str, Any]]:
            return cells(candidate_plan(plans[n], {**default, "steps": n}, on, pools), BASELINE, map_fn)

        t0 = time.time()
        base_dev = {n: baseline(n, dev) for n in budgets}
        rows = []
        for cand in grid:
            got = cells(candidate_plan(plans[cand["steps"]], cand, dev, pools), regime, map_fn)
            rows.append(
                {
                    **cand,
                    "dev": paired(got, base_dev[cand["steps"]]),
                    "dev_accuracy": mean_ci([100 * c["balanced_accuracy"] for c in got]),
                    "dev_values": [c["balanced_accuracy"] for c in got],
                }
            )
            print(f"dev {_label(cand)}: {_ci(rows[-1]['dev'])}", flush=True)
        dev_s = time.time() - t0
        pick = max(rows, key=lambda r: r["dev_accuracy"]["mean"])  # ties: the earlier candidate
        pick_cand = {k: pick[k] for k in KEYS}
        base_dev_acc = {n: mean_ci([100 * c["balanced_accuracy"] for c in v]) for n, v in base_dev.items()}
        base_best = max(budgets, key=lambda n: base_dev_acc[n]["mean"])  # the baseline's own budget on dev
        t0 = time.time()
        base_test = {n: baseline(n, None) for n in dict.fromkeys([default["steps"], pick_cand["steps"], base_best])}
        test = {"default": cells(candidate_plan(plan, default, None), regime, map_fn)}
        test["pick"] = (
            test["default"]
            if pick_cand == default
            else cells(candidate_plan(plans[pick_cand["steps"]], pick_cand, None, pools), regime, map_fn)
        )
        test_s = time.time() - t0
    finally:
        if executor is not None:
            executor.shutdown()
    names = list(data.class_names)
    return {
        "benchmark": "sample_use",
        "run_dir": str(run_dir),
        "snapshot": {"path": str(snap_path), "kimg": snap.kimg, "member_kimg": list(snap.member_kimg)},
        "mix": mixed,
        "inversion": inversion and {**inversion, "steps": INVERT_STEPS, "shell_weight": INVERT_SHELL},
        "regime": regime,
        "baseline": {
            "regime": BASELINE,
            "classic": plan.classic,
            "selection": plan.selection,
            "by_steps": {
                str(n): {
                    "classic": plans[n].classic,
                    "classic_sampling": plans[n].classic_sampling,
                    "dev": base_dev_acc[n],
                }
                for n in plans
            },
            "best_steps_on_dev": base_best,
        },
        "sizes": {"train": len(data.train), "val": len(data.val), "dev": len(dev), "test": len(data.test)},
        "classifier": {
            "name": ev.classifier,
            "steps": ev.steps,
            "batch_size": ev.batch_size,
            "seeds": plan.seeds,
            "precision": plan.precision,  # resolved: fp32 or bf16 (autocast in the training steps)
        },
        "default": default,
        "candidates": rows,
        "pick": pick_cand,
        "test": {
            "baseline_values": [c["balanced_accuracy"] for c in base_test[default["steps"]]],
            "baseline_values_by_steps": {str(n): [c["balanced_accuracy"] for c in v] for n, v in base_test.items()},
            **{k: [c["balanced_accuracy"] for c in v] for k, v in test.items()},
            "default_vs_baseline": paired(test["default"], base_test[default["steps"]]),
            "pick_vs_baseline": paired(test["pick"], base_test[pick_cand["steps"]]),
            "pick_vs_best_baseline": paired(test["pick"], base_test[base_best]),
            "pick_vs_default": paired(test["pick"], test["default"]),
            "pick_per_class_vs_baseline": per_class_delta(test["pick"], base_test[pick_cand["steps"]], names),
        },
        "seconds": {"dev": dev_s, "test": test_s},
        "machine": machine(),
        "commit": git_commit(),
        "command": command(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render(res: dict[str, Any]) -> str:
    n = res["sizes"]
    base = res["baseline"]
    # Val may choose another draw at each budget: name the draw only where every budget has it.
    draws = {v.get("classic_sampling") for v in base.get("by_steps", {}).values()}
    sampling = ", class-balanced" if draws == {"balance"} else ""
    how = "chosen on val" if "classic" in base.get("selection", {}) else "the config's only candidate"
    trainings = 1 + len(res.get("mix") or [])
    unseen = "the run never saw them"
    if trainings > 1:
        unseen = f"the runs never saw them; synthetic images from {trainings} trainings, equal weight"
    lines = [
        f"Dev split: {n['dev']} real images ({unseen}); {res['regime']} minus {BASELINE} "
        f"(`{base['classic']}`{sampling}, {how}), paired over seeds {res['classifier']['seeds']}, "
        f"classifier cells in {res['classifier']['precision']}, points, 95% t-interval:",
        "",
        "| candidate | Δ on dev | |",
        "|---|---|---|",
    ]
    for r in res["candidates"]:
        cand = _cand(r)
        mark = " ".join(m for m, c in (("pick", res["pick"]), ("default", res["default"])) if cand == _cand(c))
        lines.append(f"| {_label(cand)} | {_ci(r['dev'])} | {mark} |")
    t = res["test"]
    by_steps = res["baseline"].get("by_steps", {})
    if len(by_steps) > 1:
        best = res["baseline"]["best_steps_on_dev"]
        lines += [
            "",
            f"The baseline at each classifier budget (classic policy chosen on val at it; balanced accuracy on dev, %; "
            f"its best on dev: {best} steps): "
            + ", ".join(
                f"{k} steps `{v['classic']}` ({v['classic_sampling']})" + f" {_pct(v['dev'])}"
                for k, v in by_steps.items()
            ),
        ]
    lines += [
        "",
        f"Test split ({n['test']} images), the pick and the default only:",
        "",
        "| use | Δ vs baseline on test (same steps) | Δ vs the default |",
        "|---|---|---|",
        f"| default: {_label(res['default'])} | {_ci(t['default_vs_baseline'])} | |",
        f"| pick: {_label(res['pick'])} | {_ci(t['pick_vs_baseline'])} | {_ci(t['pick_vs_default'])} |",
    ]
    if len(by_steps) > 1:
        lines.append(
            f"| pick vs the baseline at its own best budget on dev ({res['baseline']['best_steps_on_dev']} steps) "
            f"| {_ci(t['pick_vs_best_baseline'])} | |"
        )
    lines += [
        "",
        "Pick minus baseline per class (recall, points): "
        + ", ".join(f"{k} {v:+.1f}" for k, v in t["pick_per_class_vs_baseline"].items()),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--dev-per-class", type=int, default=500, help="dev images per class (default 500)")
    ap.add_argument("--pool", type=int, nargs="+", default=[300, 1000, 3000], help="synthetic images per class")
    ap.add_argument(
        "--latent-std",
        type=float,
        nargs="+",
        default=[1.0],
        help="scale of G's latents (1: as trained; <1 truncation's direction, >1 more diverse; default 1)",
    )
    ap.add_argument(
        "--around-real",
        type=float,
        nargs="+",
        default=[1.0],
        help="latents around the inverted codes of the class's training images, "
        "sqrt(1 - s^2) z* + s e (1: G's prior, as trained; default 1)",
    )
    ap.add_argument(
        "--mix",
        type=Path,
        nargs="+",
        default=[],
        help="other run directories of the same data: every pool draws from RUN_DIR and these, equal weight",
    )
    ap.add_argument(
        "--grid", type=Path, default=None, help="with --around-real: a PNG of reconstructions and variations"
    )
    ap.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument(
        "--sampling",
        nargs="+",
        default=["balance"],
        choices=["balance", "uniform"],
        help="synthetic class draw: balance (tail classes get more; default) or uniform (equal counts)",
    )
    ap.add_argument("--thresholds", nargs="+", default=["none"], help="confidence filter thresholds; none = no filter")
    ap.add_argument("--soft", nargs="+", default=["off"], choices=["off", "on"], help="soft labels")
    ap.add_argument(
        "--until",
        type=float,
        nargs="+",
        default=[1.0],
        help="fraction of the classifier's steps that draw synthetic images (the rest: real only; default 1)",
    )
    ap.add_argument(
        "--bn",
        nargs="+",
        default=["joint"],
        choices=list(SYNTHETIC_BN),
        help="BatchNorm over mixed batches: joint (one), split (real / synthetic statistics), auxiliary (and "
        "their own scale and shift); default joint",
    )
    ap.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=None,
        help="classifier optimizer steps, for every regime alike (default: the run's evaluate.steps)",
    )
    ap.add_argument("--regime", default="real+gan+classic", choices=[r for r in GAN_REGIMES if "gan-" not in r])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="single-threaded cell processes (default 2)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if min(args.pool) < 1 or args.dev_per_class < 1 or min(args.steps or [1]) < 1:
        ap.error("--pool, --dev-per-class and --steps are 1 or more")
    if min(args.latent_std) <= 0:
        ap.error("--latent-std values are above 0")
    try:
        args.thresholds = [None if t == "none" else float(t) for t in args.thresholds]
    except ValueError:
        ap.error(f"--thresholds: numbers in [0, 1] or none, got {args.thresholds}")
    args.soft = [s == "on" for s in args.soft]
    if any(not 0 < s <= 1 for s in args.around_real):
        ap.error("--around-real values are in (0, 1]")
    if args.mix and set(args.around_real) != {1.0}:
        ap.error("--around-real inverts one training's generator: it goes without --mix")
    if args.grid is not None and set(args.around_real) == {1.0}:
        ap.error("--grid shows --around-real's variations: give --around-real values below 1")
    if set(args.latent_std) != {1.0} and set(args.around_real) != {1.0}:
        ap.error("--latent-std and --around-real vary G's latents one at a time")
    if {*args.latent_std, *args.around_real} != {1.0} and (args.thresholds != [None] or args.soft != [False]):
        ap.error(
            "--latent-std and --around-real other than 1 go without --thresholds and --soft "
            "(the filter scores the prior's pool)"
        )
    if any(not 0 <= s <= 1 for s in args.shares):
        ap.error("--shares are in [0, 1]")
    if any(not 0 < u <= 1 for u in args.until):
        ap.error("--until values are in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli(run, render, parse_args(argv))


if __name__ == "__main__":
    main()
