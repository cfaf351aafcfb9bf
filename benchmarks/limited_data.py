"""Limited-data ablation of the generator recipe: which training switches help a GAN on tiny data?

For each data profile (Fashion-MNIST from ``configs/fashion_mnist.yaml``: ``longtail`` = 100 images
down to 10 per class, ratio 0.1; ``fm50`` and ``fm100`` = 50 and 100 per class) it trains one GAN
per *recipe* (a row: a list of ``--set`` overrides on today's config), all rows of a profile with the
same training budget, and evaluates each snapshot the same way:

* ``fd_domain`` (the run's domain CNN; never called FID) beside its real-vs-real floor and their ratio;
* precision / recall / coverage (k = 5) beside their floors, the per-class recall (the minimum over
  classes and, on a long tail, the tail class's);
* the near-copy fraction (memorisation) overall and in the worst class;
* the downstream verdict: paired deltas of balanced accuracy, in points with 95% t-intervals over
  seeds, of ``real+gan`` and ``real+gan+classic`` against the verdict's baseline (``real+classic``
  with the classic policy chosen on the validation split), the best GAN regime against real-only
  training, and the verdict's status.

Equal budget means equal kimg: ``--kimg K`` (the default) gives every row the same number of real
images shown to D; each row's measured training seconds (the training loop's own clock, without the
fd_domain evaluations and the feature extractor) are recorded beside it, so a recipe that costs
more per image shows it. ``--minutes M`` instead gives every row the same wall time
(``train.max_minutes``; the kimg reached is recorded). The best snapshot by ``fd_domain`` (against
train+val, never test) is kept every ``--eval-kimg`` (default K/5).

Everything runs in this process through the library (``augment.train.train``,
``augment.metrics.evaluate.evaluate_run``): the data is loaded once per profile and the domain feature
extractor is trained once per profile (one shared ``evaluate.cache_dir``). The downstream cells
whose regime has no GAN in it (``real``, ``real+classic`` and the validation-split choice of the
classic baseline) do not depend on the generator; they are computed for the first row of a profile
and reused for the others (keyed by function, regime, seed and every setting of the plan that is
not about synthetic images; never across profiles). The other cells run on a process pool of
``--workers`` single-threaded processes (cells are deterministic on the CPU: same numbers as a
plain ``map``, see tests/test_bench_limited_data.py).

Commands (2 CPU cores, default budget, measured at 500 classifier steps: ~15 minutes for a profile's first row,
~11 for each further one; the downstream cells are most of it, and the Fashion config's ``evaluate.steps: 1500``
(since 2026-12-06) gives each three times the steps; ``--steps 500`` compares with the rows stored before it)::

    .venv/bin/python benchmarks/limited_data.py                              # all profiles, all rows, 10 kimg
    .venv/bin/python benchmarks/limited_data.py --profiles longtail --kimg 20 --combined ada,lecam
    .venv/bin/python benchmarks/limited_data.py --profiles fm50 --recipes baseline ada --minutes 3
    .venv/bin/python benchmarks/limited_data.py --quick --no-append          # 1-2 minute smoke run
    .venv/bin/python benchmarks/limited_data.py --profiles longtail --recipes baseline lr_5e-4 \\
        --kimg 200 --eval-kimg 25 --screen  # training curves only (train+val fd_domain): ~5 min a row

``--screen`` is the cheap first pass: it trains the rows and tables each one's selection curve (the
EMA generator's ``fd_domain`` against train+val at every check), with no downstream run and no
test-split number, to pick which rows deserve the full evaluation.

Raw numbers go to ``benchmarks/results/limited_data_<profile>.json`` (``--json PATH``; ``{profile}``
in PATH is replaced), one markdown table per profile to ``benchmarks/RESULTS.md`` (``--no-append``:
print only; ``--quick`` never appends and writes its JSON under ``--out``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import math
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from augment.config import Config, EvaluateConfig, load_config  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.devices import resolve_device  # noqa: E402
from augment.metrics import classic, classifier_training, downstream  # noqa: E402
from augment.metrics.evaluate import best_snapshot_metric, evaluate_run  # noqa: E402
from augment.metrics.regimes import VERDICT_METRIC  # noqa: E402
from augment.train import loop_kwargs, train  # noqa: E402
from benchmarks.common import append_results, command, git_commit, machine  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class Profile:
    config: str
    overrides: tuple[str, ...]
    #: Not run unless asked by name (the test's tiny profile).
    hidden: bool = False


PROFILES: dict[str, Profile] = {
    "longtail": Profile(
        "configs/fashion_mnist.yaml", ("data.per_class=null", "data.imbalance={ratio: 0.1, max_per_class: 100}")
    ),
    "fm50": Profile("configs/fashion_mnist.yaml", ("data.per_class=50",)),
    "fm100": Profile("configs/fashion_mnist.yaml", ("data.per_class=100",)),
    # sklearn's bundled 8x8 digits, 3 classes on a small long tail (40, 20, 10): the test's profile.
    "digits": Profile(
        "configs/digits.yaml",
        (
            "data.classes=['0','1','2']",
            "data.imbalance={ratio: 0.25, max_per_class: 40}",
            "data.split.test_per_class=20",
            "evaluate.samples_per_class=20",
            "train.batch_size=32",
        ),
        hidden=True,
    ),
}

#: The rows: overrides on top of the profile's config ("baseline" = today's config). Add a row here;
#: ``combined`` is built from ``--combined a,b`` (the named rows' overrides joined, later ones win).
RECIPES: dict[str, list[str]] = {
    "baseline": [],
    "ada": ["train.ada_target=0.6"],
    # ADA's p on StyleGAN2-ADA's geometric group and brightness/contrast, on top of fixed DiffAugment
    # (translation and cutout stay on every image): the combination the "ada" row's switch could not make.
    "ada_extra": ["train.ada_target=0.6", "train.ada_extra=[geometric, color]"],
    # The same with the target below the r_t D keeps under fixed DiffAugment (0.11-0.26 per 20 kimg in the
    # "ada_extra" screen, where 0.6 left p at 0): p then rises, so the extras are really applied.
    "ada_extra_0.1": ["train.ada_target=0.1", "train.ada_extra=[geometric, color]"],
    "apa": ["train.apa_target=0.6"],  # APA (Jiang et al. 2021) at its paper's target, beside fixed DiffAugment
    "lecam": ["train.lecam_weight=0.3"],
    "mode_seeking": ["train.mode_seeking=1.0"],
    "mode_seeking_0.2": ["train.mode_seeking=0.2"],  # the Fashion-MNIST config's own since 2026-12-03 (inert there)
    "no_mode_seeking": ["train.mode_seeking=0.0"],  # the recipe before it
    "mode_seeking_0.5": ["train.mode_seeking=0.5"],
    "lr_5e-4": ["train.lr_g=0.0005", "train.lr_d=0.0005"],
    # Linear decay of both rates to 0 over the budget's second half (SNGAN's schedule in Mimicry decays over the whole
    # run; half set before the row ran, not tuned): the late checks without the constant rate's oscillation.
    "lr_decay_0.5": ["train.lr_decay_from=0.5"],
    "ema_3": ["train.ema_kimg=3"],
    "ema_10": ["train.ema_kimg=10"],
    "r1_0.01": ["train.r1_gamma=0.01"],
    "r1_1": ["train.r1_gamma=1.0"],
    "nonsaturating": ["train.loss=nonsaturating"],
    "diffaug_color": ["train.diffaug=[color, translation, cutout]"],
    # cutout off: less augmentation than today's fixed pair, the other side of the ada_extra rows
    "diffaug_translation": ["train.diffaug=[translation]"],
    "batch_32": ["train.batch_size=32"],
    "lecam_0.01": ["train.lecam_weight=0.01"],
    "bcr_10": ["train.bcr_weight=10"],  # bCR at its paper's lambda_real = lambda_fake = 10
    "bcr_1": ["train.bcr_weight=1"],
    "top_k_0.5": ["train.top_k=0.5"],  # top-k training at its paper's floor (Sinha et al. 2020)
    # Spectral normalisation in D (Miyato & Koyama's projection D, SNGAN/BigGAN), beside R1 and alone;
    # d_sn is the Fashion-MNIST config's own since 2026-12-05 (inert there), no_d_sn the recipe before it
    "d_sn": ["model.d_spectral_norm=true"],
    "no_d_sn": ["model.d_spectral_norm=false"],
    "d_sn_no_r1": ["model.d_spectral_norm=true", "train.r1_gamma=0"],
    "g_sn": ["model.g_spectral_norm=true"],  # SN in G too (SAGAN, BigGAN), on top of the config's SN in D
    "d_steps_2": ["train.d_steps=2"],  # SNGAN's n_dis / BigGAN's D steps; compare at equal wall time (--minutes)
    "gsr_0.5": ["train.gsr_weight=0.5"],  # gSR at the weight of its authors' CIFAR-10 SNGAN config
    "gsr_0.05": ["train.gsr_weight=0.05"],
    "g_uniform": ["train.g_labels=uniform"],
    # Transitional training (Shahbazi et al. 2022): unconditional to 100 kimg, conditional from 300
    # (the window set before the row ran, not tuned: a sixth of the 640-kimg budget unconditional).
    "transition_100_300": ["train.cond_transition_kimg=[100, 300]"],
    "mirror": ["train.mirror=true"],  # StyleGAN2-ADA's --mirror: every real image also flipped left-right
    # Kang et al. 2020's class-aware sampling of the GAN's reals: square-root (q 0.5) and class-balanced (q 0)
    "real_sqrt": ["train.real_class_power=0.5"],
    "real_balanced": ["train.real_class_power=0.0"],
    # a 10-kimg EMA half-life (156 steps; shipped: 1 kimg) with BigGAN's standing BatchNorm statistics for it
    "ema_10_standing": ["train.ema_kimg=10", "train.ema_bn=standing"],
    # NoisyTwins' noise augmentation (Rangwani et al. 2023) without the twins term, at its CIFAR10-LT
    # config's std (there relative to a unit-RMS embedding; here to each class table's RMS), rarest class
    "class_noise_0.75": ["train.class_noise=0.75"],
    # Fake instance discrimination (InsGen / FakeCLR) at the weight their code uses for D and G (1.0)
    "fake_contrast_1": ["train.fake_contrast=1.0"],
    "fake_contrast_0.1": ["train.fake_contrast=0.1"],
    # FastGAN's self-supervised D (a decoder redraws each augmented real at 14x14 from D's 7x7 features), MSE weight 1
    "d_recon_1": ["train.d_recon=1.0"],
    # UTLO (Khorram et al. 2024): G unconditional at 7x7, its 7x7 image judged by D's unconditional head; alpha 1
    "uncond_low_1": ["train.uncond_low=1.0"],
    "uncond_low_0.1": ["train.uncond_low=0.1"],  # the same layers, a tenth of the objective
    # R3GAN's relativistic pairing loss with R1 and R2 at one weight (the shipped R1's 0.1), D's SN kept
    "rpgan": ["train.loss=rpgan", "train.r2_gamma=0.1"],
    "aux_class_1": ["train.aux_class_weight=1.0"],  # AC-GAN's class head beside the projection, StudioGAN's weight 1
    "z128": ["model.z_dim=128"],
    "wide": ["model.g_channels=48", "model.d_channels=48"],
    "narrow": ["model.g_channels=24", "model.d_channels=24"],
    # capacity for diversity in G alone (D's overfitting is what limited data fights)
    "wide_g": ["model.g_channels=48"],
    # less capacity in D alone (fewer weights to memorise the tail's 10 images; cheaper steps): equal wall time
    "narrow_d": ["model.d_channels=16"],
    "g_resnet": ["model.g_arch=resnet"],
    "ensemble_3": ["train.ensemble=3"],
    "ensemble_3_oversample_4": ["train.ensemble=3", "train.eval_oversample=4"],
    "ensemble_5": ["train.ensemble=5"],  # ensemble_3's training (checks leave its random stream), a pool of 15
}

#: How the synthetic images enter the classifier's training (``--uses``), evaluated on one trained
#: run: ``fixed`` = today's default (share 0.5 of each batch, hard labels, no filter); ``tuned`` =
#: share, confidence filter and soft labels chosen on the validation split (the test numbers are
#: those of the picked setting only); ``soft`` / ``filter`` = one option alone, untuned.
USES: dict[str, list[str]] = {
    "fixed": [],
    "tuned": [
        "evaluate.tune=true",
        "evaluate.tune_shares=[0.25, 0.5, 0.75]",
        "evaluate.tune_thresholds=[null, 0.8]",
        "evaluate.tune_soft_labels=[false, true]",
    ],
    "soft": ["evaluate.soft_labels=true"],
    "filter": ["evaluate.confidence_threshold=0.8"],
    # the real+gan regimes' real images drawn as the val-chosen classic baseline draws them
    "gan_real_baseline": ["evaluate.gan_real_sampling=baseline"],
    # real+gan+classic with the classic policy on its real images only (the synthetic ones as generated)
    "classic_real_only": ["evaluate.classic_on_synthetic=false"],
}

#: Defaults of the budget and evaluation flags: the real run (2 shared CPU cores) and ``--quick``.
DEFAULTS = {
    "kimg": 10.0,
    "seeds": 5,
    # The classifier budget the product ships: None = the profile config's own evaluate.steps (not a
    # copy of its value, which could drift from the config). At 300 x 64 (this benchmark's default
    # until 2026-12-03) classic augmentation was under-trained: real-only beat the val-chosen classic
    # baseline by 11 pts on the long tail, and every verdict read that.
    "steps": None,
    "batch_size": EvaluateConfig.model_fields["batch_size"].default,
    "synthetic_per_class": 300,
    "extractor_steps": 400,
}
QUICK = {"kimg": 0.5, "seeds": 2, "steps": 20, "batch_size": 32, "synthetic_per_class": 30, "extractor_steps": 20}
#: --quick also shrinks the networks (recipes that set widths or z_dim still override these) and,
#: on Fashion-MNIST, the test split.
QUICK_SETS = ["model.z_dim=16", "model.g_channels=8", "model.d_channels=8"]
QUICK_FASHION = ["data.split.test_per_class=100", "evaluate.samples_per_class=20"]

GAN_FREE = ("real", "real+classic")  # regimes whose cells do not depend on the generator
#: Plan fields that only concern the synthetic images or the GAN regimes' batches: left out of the
#: cache key of GAN-free cells (field-name prefixes).
SYNTHETIC_FIELDS = (
    "synthetic_",
    "confidence_threshold",
    "soft_label",
    "selection",
    "gan_real_sampling",
    "classic_on_synthetic",
)


# ------------------------------------------------------------------------------------------------
# The map of the downstream cells: GAN-free cells cached within a profile, the rest on a pool.


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.contiguous().numpy().tobytes()).hexdigest()[:16] + str(tuple(t.shape))


#: The code a cell's result depends on: a cache written by other code is never reused.
CODE_VERSION = hashlib.sha1(
    b"".join(
        Path(m.__file__).read_bytes()
        for m in (downstream, classifier_training, classic, sys.modules["augment.models.classifier"])
    )
).hexdigest()[:16]


def plan_signature(plan: downstream.Plan) -> str:
    """Every setting of ``plan`` a GAN-free cell can depend on (the real splits by content)."""
    parts = {}
    for f in dataclasses.fields(plan):
        if f.name.startswith(SYNTHETIC_FIELDS):
            continue
        value = getattr(plan, f.name)
        parts[f.name] = _digest(value) if isinstance(value, torch.Tensor) else repr(value)
    return json.dumps(parts, sort_keys=True)


class CellMap:
    """A ``map_fn`` for :func:`augment.metrics.evaluate.evaluate_run` (and ``downstream.prepare``).

    Cells of :func:`downstream.run_grid_item` and :func:`downstream._selection_cell` whose regime
    has no "gan" are looked up in ``cache`` by (profile, function, regime, seed, settings, plan
    signature) and stored there once computed; every other cell runs on ``executor`` (or here,
    when it is None). Results come back in order, lazily, as ``map`` does. Use one cache per profile.
    """

    def __init__(
        self,
        profile: str,
        executor: concurrent.futures.Executor | None,
        cache: dict | None = None,
        path: Path | None = None,
    ):
        self.profile, self.executor, self.path = profile, executor, path
        self.cache: dict[tuple, dict] = {} if cache is None else cache
        if path is not None and path.is_file():  # cells of an earlier invocation on the same profile
            self.cache.update({tuple(k): v for k, v in json.loads(path.read_text())})
        self.cached = self.computed = 0

    def _save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps([[list(k), v] for k, v in self.cache.items()]))
            tmp.replace(self.path)

    def key(self, fn: Callable[[Any], Any], item: Any) -> tuple | None:
        if not isinstance(fn, functools.partial) or len(fn.args) != 1 or fn.keywords:
            return None
        kind, plan = getattr(fn.func, "__name__", ""), fn.args[0]
        if kind == "run_grid_item":
            regime, seed = item
            settings = ""
        elif kind == "_selection_cell":
            regime, seed = item["regime"], item["seed"]
            settings = json.dumps({k: v for k, v in item.items() if k not in ("regime", "seed")}, sort_keys=True)
        else:
            return None
        if "gan" in regime or regime not in GAN_FREE:
            return None
        return (self.profile, kind, regime, seed, settings, plan_signature(plan), CODE_VERSION)

    def __call__(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        keys = [self.key(fn, it) for it in items]
        pending: dict[int, Any] = {}
        for i, (item, key) in enumerate(zip(items, keys, strict=True)):
            if key is not None and key in self.cache:
                continue
            if self.executor is not None:  # submitted now, so the pool works while the caller waits
                pending[i] = self.executor.submit(fn, item)
            else:
                pending[i] = None
        return self._results(fn, items, keys, pending)

    def _results(self, fn, items, keys, pending) -> Iterator[Any]:
        for i, (item, key) in enumerate(zip(items, keys, strict=True)):
            if i not in pending:
                self.cached += 1
                yield copy.deepcopy(self.cache[key])
                continue
            out = pending[i].result() if pending[i] is not None else fn(item)
            self.computed += 1
            if key is not None:
                self.cache[key] = copy.deepcopy(out)
                self._save()
            yield out


def make_executor(workers: int) -> concurrent.futures.ProcessPoolExecutor | None:
    """``workers`` processes (spawned: a forked child of a process that ran OpenMP can hang)."""
    if workers <= 1:
        return None
    return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


# ------------------------------------------------------------------------------------------------
# Rows: overrides, the check that a switch reaches the training loop, the numbers of a row.


def recipe_overrides(names: list[str], combined: list[str] | None) -> dict[str, list[str]]:
    """``{row: overrides}`` for the named recipes (``combined`` = the listed rows' overrides joined)."""
    rows = {}
    for name in names:
        if name == "combined":
            if not combined:
                raise SystemExit("recipe 'combined' needs --combined a,b (rows of RECIPES)")
            bad = [c for c in combined if c not in RECIPES]
            if bad:
                raise SystemExit(f"--combined: unknown recipes {bad} (one of {list(RECIPES)})")
            rows[name] = [s for c in combined for s in RECIPES[c]]
        elif name in RECIPES:
            rows[name] = list(RECIPES[name])
        else:
            raise SystemExit(f"unknown recipe {name!r} (one of {[*RECIPES, 'combined']})")
    return rows


#: Train settings that reach the best-snapshot metric (``make_metric_fn`` reads them), not the loop.
METRIC_FIELDS = ("train.eval_oversample",)


def inert_overrides(base: Config, cfg: Config, overrides: list[str]) -> list[str]:
    """The ``train.*`` / ``model.*`` overrides of a row that change nothing the training loop gets
    (a switch validated by the config but not wired into ``augment.train.loop_kwargs``).

    Each is judged alone on the base config; one the config refuses alone (``ada_extra`` needs
    ``ada_target``) is judged by taking it back out of the row's full config instead."""

    def loop(c: Config) -> dict[str, Any]:
        return {k: v for k, v in loop_kwargs(c).items() if k != "config"}

    ref = loop(base)
    inert = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if not key.startswith(("train.", "model.")) or key in METRIC_FIELDS:
            continue
        section, field = key.split(".", 1)
        if "." in field:
            continue  # nested sections (train.cuda.*) are not this benchmark's switches
        value, base_value = getattr(getattr(cfg, section), field), getattr(getattr(base, section), field)
        if value == base_value:
            continue  # the override restates the base value
        one = base.model_copy(deep=True)  # this override alone on the base config
        try:
            setattr(getattr(one, section), field, value)
            same = loop(one) == ref
        except ValidationError:
            without = cfg.model_copy(deep=True)  # the row without this override
            try:
                setattr(getattr(without, section), field, base_value)
            except ValidationError:
                continue  # neither alone nor without it is a valid config: not judged
            same = loop(without) == loop(cfg)
        if same:
            inert.append(item)
    return inert


def _ci(d: dict | None) -> dict | None:
    if not d:
        return None
    return {k: d.get(k) for k in ("mean", "ci_low", "ci_high", "n")}


def row_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one row's table line, from ``evaluate_run``'s result."""
    fd, prdc, mem, down = result["fd_domain"], result["prdc"], result["memorisation"], result["downstream"]
    names = result["class_names"]
    train_counts = [result["counts"]["train"][c] for c in names]
    # The tail: the class with the fewest training images, where the classes are unequal.
    tail = names[max(i for i, n in enumerate(train_counts) if n == min(train_counts))]
    tail = tail if len(set(train_counts)) > 1 else None
    per_class_recall = {
        c: (prdc["per_class"][c]["synthetic"] or {}).get("recall") if c in prdc["per_class"] else None for c in names
    }
    known = {c: v for c, v in per_class_recall.items() if v is not None}
    min_class = min(known, key=known.get) if known else None
    mem_pc = {c: v["near_copy_fraction"] for c, v in mem.get("per_class", {}).items()}
    max_copy_class = max(mem_pc, key=mem_pc.get) if mem_pc else None
    floor = fd.get("fd_domain_floor")
    m = VERDICT_METRIC
    deltas, verdict = down["deltas"], down["verdict"]
    return {
        "fd_domain": fd.get("fd_domain"),
        "fd_domain_floor": floor,
        "fd_ratio": fd["fd_domain"] / floor if floor and fd.get("fd_domain") is not None else None,
        "kid_domain": fd.get("kid_domain"),
        "kid_domain_floor": fd.get("kid_domain_floor"),
        "n_synthetic": fd["n_synthetic"],
        "n_reference": fd["n_reference"],
        "prdc": prdc["synthetic"],
        "prdc_floor": prdc["floor"],
        "per_class_recall": per_class_recall,
        "min_class_recall": known.get(min_class),
        "min_class_recall_class": min_class,
        "tail_class": tail,
        "tail_class_recall": per_class_recall.get(tail) if tail else None,
        "near_copy_fraction": mem["near_copy_fraction"],
        "near_copy_max_class": max_copy_class,
        "near_copy_max_class_fraction": mem_pc.get(max_copy_class),
        "classic_policy": down["classic_policy"],
        "classic_sampling": down.get("classic_sampling", "natural"),
        "delta_real_gan": _ci(deltas.get("real+gan", {}).get(m)),
        "delta_real_gan_classic": _ci(deltas.get("real+gan+classic", {}).get(m)),
        "best_regime": verdict.get("regime"),
        "delta_best_vs_real": _ci(verdict.get("delta_vs_real")),
        "verdict_status": verdict["status"],
        "verdict": verdict["text"],
    }


# ------------------------------------------------------------------------------------------------
# The markdown table.

COLUMNS = [
    "recipe",
    "train s",
    "kimg",
    "selection fd_domain (train+val)",
    "fd_domain (floor)",
    "fd/floor",
    "precision",
    "recall (floor)",
    "coverage",
    "min class recall",
    "near-copy (max class)",
    "Δ real+gan vs classic (pts, CI)",
    "Δ real+gan+classic vs classic",
    "Δ best vs real-only",
    "verdict",
]


RAW_KEYS = ("snapshot", "sizes", "fd_domain", "prdc", "memorisation", "downstream", "verdict", "seconds")


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _pts(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    if d.get("ci_low") is None:
        return f"{100 * d['mean']:+.1f} (no CI)"
    return f"{100 * d['mean']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def best_check(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The training's best ``fd_domain`` check (``metrics-train.jsonl``: against the real train+val
    split), the snapshot it kept; None when it checked nothing."""
    return min(curve, key=lambda r: r["fd_domain"]) if curve else None


def selection_fd(row: dict[str, Any]) -> float | None:
    """The best snapshot's ``fd_domain`` against train+val: the training's own model selection, the one
    column of a row that the test split did not decide (a recipe is chosen by it and by validation
    numbers, never by the test-split columns beside it). For a snapshot ensemble (``train.ensemble``)
    that is the mixture's value, which training recorded in the snapshot, not its best check's."""
    snap = (row.get("raw") or {}).get("snapshot") or {}
    if "fd_domain" in snap.get("train_metrics", {}):
        return snap["train_metrics"]["fd_domain"]
    best = best_check(row.get("train_curve") or [])
    return best["fd_domain"] if best else None


def kimg_cell(row: dict[str, Any]) -> str:
    """``best / total`` kimg; a snapshot ensemble's other members after a ``+`` (``620 + 180, 360 / 640``)."""
    if row["best_kimg"] is None:
        return f"{row['kimg']:g}"
    members = ((row.get("raw") or {}).get("snapshot") or {}).get("member_kimg") or []
    if not members:
        return f"{row['best_kimg']:g} / {row['kimg']:g}"
    return f"{_kimg(row['best_kimg'])} + {', '.join(_kimg(k) for k in members)} / {row['kimg']:g}"


def table_line(row: dict[str, Any]) -> str:
    m = row["metrics"]
    prdc, floor = m["prdc"] or {}, m["prdc_floor"] or {}
    min_recall = f"{_num(m['min_class_recall'], '.2f')} ({m['min_class_recall_class']})"
    if m["tail_class"] is not None:
        min_recall += f"; tail {m['tail_class']} {_num(m['tail_class_recall'], '.2f')}"
    best = f" ({m['best_regime']})" if m["best_regime"] else ""
    cells = [
        row["recipe"],
        f"{row['train_s']:.0f}" if row["train_s"] >= 10 else f"{row['train_s']:.1f}",
        kimg_cell(row),
        _num(selection_fd(row), ".2f"),
        f"{_num(m['fd_domain'], '.2f')} ({_num(m['fd_domain_floor'], '.2f')})",
        _num(m["fd_ratio"], ".1f"),
        _num(prdc.get("precision")),
        f"{_num(prdc.get('recall'))} ({_num(floor.get('recall'))})",
        _num(prdc.get("coverage")),
        min_recall,
        f"{_num(m['near_copy_fraction'])} ({_num(m['near_copy_max_class_fraction'])} {m['near_copy_max_class']})",
        _pts(m["delta_real_gan"]),
        _pts(m["delta_real_gan_classic"]),
        _pts(m["delta_best_vs_real"]) + best,
        m["verdict_status"],
    ]
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def budget_text(b: dict[str, Any]) -> str:
    """A profile's training budget as its table says it: ``640 kimg`` or ``15 min (kimg varies)``."""
    return f"{b['kimg']:g} kimg" if b["minutes"] is None else f"{b['minutes']:g} min (kimg varies)"


def table_head(columns: list[str]) -> list[str]:
    """A markdown table's header and rule lines."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def render(res: dict[str, Any]) -> str:
    """The markdown body of one profile: settings, the table (one line per recipe), the floors."""
    b, ev, rows = res["budget"], res["evaluate"], res["rows"]
    first = rows[0]["metrics"] if rows else {}
    budget = budget_text(b)
    lines = [
        f"profile `{res['profile']}`: `{res['config']}` {' '.join(res['profile_overrides'])}; "
        f"train/val/test {res['sizes']['train']}/{res['sizes']['val']}/{res['sizes']['test']}; "
        f"budget {budget} per recipe, "
        f"best snapshot by fd_domain every {b['eval_kimg']:g} kimg; train s = the training loop's time without the "
        "fd_domain evaluations; kimg = best / total (a snapshot ensemble's other members after +); "
        "selection fd_domain = that best snapshot's fd_domain against "
        f"train+val, the only generator column the test split did not decide.",
        f"Downstream: {ev['classifier']} {ev['steps']} steps x {ev['batch_size']} in every regime, "
        f"{ev['seeds']} seeds, {ev['synthetic_per_class']} synthetic images per class, balanced accuracy on "
        f"{res['sizes']['test']} real test images; Δ = paired mean over seeds, 95% t-interval, in points, "
        "against real+classic with the classic policy chosen on val (per row: see the JSON).",
        "",
        *table_head(COLUMNS),
        *[table_line(r) for r in rows],
    ]
    if rows:
        fl = first.get("prdc_floor") or {}
        lines += [
            "",
            f"Floors (real train vs test, same counts, the same for every row): fd_domain "
            f"{_num(first['fd_domain_floor'], '.3f')}, precision {_num(fl.get('precision'))}, recall "
            f"{_num(fl.get('recall'))}, coverage {_num(fl.get('coverage'))}; {first['n_synthetic']} synthetic vs "
            f"{first['n_reference']} test images for fd_domain. Raw numbers: `{res.get('json', '')}`.",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Main.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    visible = [p for p, prof in PROFILES.items() if not prof.hidden]
    ap.add_argument("--profiles", nargs="+", default=visible, choices=list(PROFILES), metavar="PROFILE")
    ap.add_argument(
        "--recipes",
        nargs="+",
        default=None,
        help=f"rows (default: all of {list(RECIPES)}, plus combined when --combined is given)",
    )
    ap.add_argument("--combined", default=None, help="rows whose overrides form the 'combined' row, e.g. ada,lecam")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--kimg", type=float, default=None, help="images shown per row, thousands (default 10)")
    budget.add_argument("--minutes", type=float, default=None, help="wall-time budget per row instead")
    ap.add_argument("--eval-kimg", type=float, default=None, help="fd_domain every this many kimg (default kimg/5)")
    ap.add_argument("--seeds", type=int, default=None, help="downstream seeds (default 5)")
    ap.add_argument("--steps", type=int, default=None, help="classifier steps (default: the config's evaluate.steps)")
    ap.add_argument("--batch-size", type=int, default=None, help="classifier batch (default: evaluate.batch_size)")
    ap.add_argument("--synthetic-per-class", type=int, default=None, help="downstream pool per class (default 300)")
    ap.add_argument("--extractor-steps", type=int, default=None, help="domain extractor steps (default 400)")
    ap.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="train.threads (default 1; 0 = every core: on 2 busy shared cores 2 threads ran 100x slower)",
    )
    ap.add_argument("--workers", type=int, default=2, help="processes for the downstream cells (1 = in process)")
    ap.add_argument("--set", action="append", default=[], help="extra overrides for every row (before the recipe)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_limited_data"), help="run directories")
    ap.add_argument("--json", default=None, help="JSON path ({profile} is replaced)")
    ap.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    ap.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run (tiny budget, nothing appended)")
    ap.add_argument("--uses", nargs="+", default=[], choices=list(USES), help="ways of using the samples (see USES)")
    ap.add_argument("--uses-run", type=Path, default=None, help="evaluate --uses on this trained run, train nothing")
    ap.add_argument("--allow-inert", action="store_true", help="run rows whose switches do not reach training")
    ap.add_argument(
        "--screen",
        action="store_true",
        help="train the rows and table their selection curves (train+val fd_domain) only: no downstream, no test split",
    )
    args = ap.parse_args(argv)
    if args.screen and (args.uses or args.uses_run):
        raise SystemExit("--screen trains and tables selection curves only; --uses needs the downstream run")
    base = QUICK if args.quick else DEFAULTS
    for name, value in base.items():
        if getattr(args, name) is None and not (name == "kimg" and args.minutes is not None):
            setattr(args, name, value)
    if args.eval_kimg is None:
        args.eval_kimg = args.kimg / 5 if args.minutes is None else 2.0
    if args.recipes is None:
        args.recipes = [*RECIPES, *(["combined"] if args.combined else [])]
    args.combined = [c.strip() for c in args.combined.split(",") if c.strip()] if args.combined else None
    if args.json and "{profile}" not in args.json and len(args.profiles) > 1:
        raise SystemExit("--json with several profiles needs {profile} in the path")
    return args


def common_overrides(args: argparse.Namespace, profile: str, cache_dir: Path) -> tuple[list[str], list[str]]:
    """(training overrides, evaluation overrides) shared by every row of a profile."""
    if args.minutes is None:
        budget = [f"train.kimg={args.kimg}", f"train.snapshot_kimg={args.kimg * 10}"]
    else:
        budget = ["train.kimg=1000000", f"train.max_minutes={args.minutes}", "train.snapshot_kimg=1000000"]
    ev = [
        f"evaluate.seeds={args.seeds}",
        *([f"evaluate.steps={args.steps}"] if args.steps is not None else []),  # None: the config's own
        f"evaluate.batch_size={args.batch_size}",
        f"evaluate.synthetic_per_class={args.synthetic_per_class}",
        f"evaluate.extractor_steps={args.extractor_steps}",
        "evaluate.threads=1",
        "evaluate.workers=1",  # the cells' parallelism is this benchmark's process pool
        f"evaluate.cache_dir={cache_dir}",  # one extractor per profile, for best-snapshot selection and metrics
    ]
    train_sets = [*budget, f"train.eval_kimg={args.eval_kimg}", "tracking.enabled=false"]
    if args.train_threads:
        train_sets.append(f"train.threads={args.train_threads}")
    quick = []
    if args.quick:
        quick = QUICK_SETS + (QUICK_FASHION if PROFILES[profile].config.endswith("fashion_mnist.yaml") else [])
    return [*train_sets, *quick, *ev], ev


def run_profile(name: str, args: argparse.Namespace, rows: dict[str, list[str]], executor) -> dict[str, Any]:
    prof = PROFILES[name]
    out_dir = args.out / name
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out_dir / "cache"
    common, ev_sets = common_overrides(args, name, cache_dir)
    head = [*prof.overrides, *common, *args.set]
    base = load_config(REPO / prof.config, head)
    cfgs = {r: load_config(REPO / prof.config, [*head, *sets]) for r, sets in rows.items()}
    for r, cfg in cfgs.items():
        if cfg.data != base.data or cfg.seed != base.seed or cfg.evaluate != base.evaluate:
            raise SystemExit(f"recipe {r!r} changes the data, seed or evaluation: rows must differ in training only")
        inert = inert_overrides(base, cfg, rows[r])
        if inert and not args.allow_inert:
            raise SystemExit(
                f"recipe {r!r}: {inert} validate but change nothing augment.train.loop_kwargs passes to the training "
                "loop (not wired yet?); retry later or pass --allow-inert"
            )
    data = load_data(base.data, base.seed)  # once per profile: every row trains and scores on it
    cell_map = CellMap(name, executor, path=out_dir / "cells-cache.json")
    device = resolve_device(base.train.device)
    res: dict[str, Any] = {
        "benchmark": "limited_data",
        "profile": name,
        "config": prof.config,
        "profile_overrides": list(prof.overrides),
        "common_overrides": common + list(args.set),
        "budget": {"kimg": args.kimg, "minutes": args.minutes, "eval_kimg": args.eval_kimg},
        "evaluate": {
            **base.evaluate.model_dump(
                mode="json",
                include={
                    "seeds",
                    "steps",
                    "batch_size",
                    "synthetic_per_class",
                    "extractor_steps",
                    "classifier",
                    "regimes",
                    "classic",
                },
            )
        },
        "sizes": {s: len(data.split(s)) for s in ("train", "val", "test")},
        "counts": data.counts(),
        "machine": machine(),
        "device": str(device),
        "commit": git_commit(),
        "command": command(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": [],
    }
    if args.uses_run is not None:
        rows = {}  # the uses only, on a run trained before
    for recipe, sets in rows.items():
        cfg = cfgs[recipe]
        run_dir = out_dir / recipe
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a fresh run: no stale best snapshot or training log
        what = " ".join(sets) or "today's config"
        print(f"[{name}] {recipe}: training ({what})", flush=True)
        t0 = time.time()
        train(cfg, out=run_dir, progress=False, data=data, metric_factory=best_snapshot_metric)
        train_wall = time.time() - t0
        log_rows = [json.loads(line) for line in (run_dir / "metrics-train.jsonl").read_text().splitlines()]
        stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
        row = screen_row(recipe, sets, run_dir, log_rows, stats, train_wall)
        if args.screen:
            res["rows"].append(row)
            print(f"[{name}] {recipe}: {screen_line(row)}", flush=True)
            continue
        before = (cell_map.cached, cell_map.computed)
        t0 = time.time()
        result = evaluate_run(run_dir, overrides=ev_sets, progress=False, data=data, map_fn=cell_map)
        eval_s = time.time() - t0
        row |= {
            "eval_s": eval_s,
            "cells_cached": cell_map.cached - before[0],
            "cells_computed": cell_map.computed - before[1],
            "metrics": row_metrics(result),
            "raw": {k: result.get(k) for k in RAW_KEYS},
        }
        res["rows"].append(row)
        m = row["metrics"]
        print(
            f"[{name}] {recipe}: train {row['train_s']:.0f} s ({row['kimg']:g} kimg), eval {eval_s:.0f} s "
            f"({row['cells_cached']} cells reused); fd_domain {_num(m['fd_domain'], '.2f')} "
            f"(floor {_num(m['fd_domain_floor'], '.2f')}); {m['verdict_status']}",
            flush=True,
        )
    if args.uses:
        run_dir = args.uses_run or out_dir / list(cfgs)[-1]
        res["uses_run"] = str(run_dir)
        res["uses"] = []
        for use in args.uses:
            print(f"[{name}] use {use}: evaluating {run_dir} ({' '.join(USES[use]) or 'defaults'})", flush=True)
            t0 = time.time()
            result = evaluate_run(run_dir, overrides=[*ev_sets, *USES[use]], progress=False, data=data, map_fn=cell_map)
            down = result["downstream"]
            res["uses"].append(
                {
                    "use": use,
                    "overrides": USES[use],
                    "eval_s": time.time() - t0,
                    "picked": {
                        "synthetic_share": down["synthetic_share"],
                        "confidence_threshold": down["confidence_threshold"],
                        "soft_labels": down.get("soft_labels"),
                    },
                    "selection": down["selection"],
                    "synthetic_share_per_class": down.get("synthetic_share_per_class"),
                    "metrics": row_metrics(result),
                    "raw": {k: result.get(k) for k in RAW_KEYS},  # per-seed cells: paired deltas across files
                }
            )
            m = res["uses"][-1]["metrics"]
            print(f"[{name}] use {use}: {m['verdict_status']}; {_pts(m['delta_real_gan_classic'])}", flush=True)
    return res


def screen_row(
    recipe: str, sets: list[str], run_dir: Path, curve: list[dict[str, Any]], stats: list[dict[str, Any]], wall: float
) -> dict[str, Any]:
    """A ``--screen`` row: the training's own numbers, nothing the test split decided."""
    best = best_check(curve)
    return {
        "recipe": recipe,
        "overrides": sets,
        "train_s": curve[-1]["train_s"] if curve else stats[-1]["elapsed_s"],
        "train_wall_s": wall,
        "kimg": stats[-1]["kimg"],
        "best_kimg": best["kimg"] if best else None,
        "run_dir": str(run_dir),
        "train_curve": curve,
    }


def screen_line(row: dict[str, Any]) -> str:
    """``fd@kimg`` along the selection curve, e.g. ``0.74@100 0.45@200``."""
    return " ".join(f"{r['fd_domain']:.2f}@{_kimg(r['kimg'])}" for r in row["train_curve"]) or "no checks"


def _kimg(k: float) -> str:
    """A check's kimg as a reader wants it: whole above 10 (the loop checks at 100.032), 3 digits below."""
    return f"{k:.0f}" if k >= 10 else f"{k:.3g}"


SCREEN_COLUMNS = [
    "recipe",
    "overrides",
    "train s",
    "kimg",
    "best selection fd_domain (kimg)",
    "selection curve (fd@kimg)",
]


def render_screen(res: dict[str, Any]) -> str:
    """The ``--screen`` table: per row, the selection ``fd_domain`` (EMA generator against the real
    train+val split) at every check; the cheap first pass that picks the rows worth a downstream run."""
    b = res["budget"]
    budget = budget_text(b)
    lines = [
        f"Screen, profile `{res['profile']}`: `{res['config']}` {' '.join(res['profile_overrides'])}; train "
        f"{res['sizes']['train']} images; budget {budget} per recipe; fd_domain of the EMA generator against "
        f"train+val every {b['eval_kimg']:g} kimg (no test-split number, no downstream run); train s without "
        "the checks.",
        "",
        *table_head(SCREEN_COLUMNS),
    ]
    for r in res["rows"]:
        best = selection_fd(r)
        cells = [
            r["recipe"],
            " ".join(f"`{o}`" for o in r["overrides"]) or "today's config",
            f"{r['train_s']:.0f}",
            _kimg(r["kimg"]),
            f"{_num(best, '.3f')} ({_kimg(r['best_kimg'])})" if best is not None else "n/a",
            screen_line(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_uses(res: dict[str, Any]) -> str:
    """The second table: one trained run, the ways its samples enter training."""
    lines = [
        f"Sample use on `{res['uses_run']}` (one trained generator; every row the same classifier budget and seeds; "
        "`tuned` picks share / filter / soft labels on the validation split and reports its test numbers only):",
        "",
        "| use | picked (share, threshold, soft labels) | Δ real+gan vs classic | Δ real+gan+classic vs classic "
        "| Δ best vs real-only | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for u in res["uses"]:
        m, p = u["metrics"], u["picked"]
        best = f" ({m['best_regime']})" if m["best_regime"] else ""
        lines.append(
            f"| {u['use']} | {p['synthetic_share']}, {p['confidence_threshold']}, {p['soft_labels']} | "
            f"{_pts(m['delta_real_gan'])} | {_pts(m['delta_real_gan_classic'])} | "
            f"{_pts(m['delta_best_vs_real'])}{best} | {m['verdict_status']} |"
        )
    return "\n".join(lines)


def json_path(args: argparse.Namespace, profile: str) -> Path:
    if args.json:
        return Path(args.json.replace("{profile}", profile))
    return (args.out if args.quick else RESULTS_DIR) / f"limited_data_{profile}.json"


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the benchmark; returns ``{profile: result}`` (each with its ``table`` markdown)."""
    args = parse_args(argv)
    rows = recipe_overrides(args.recipes, args.combined)
    executor = make_executor(args.workers)
    results = {}
    try:
        for name in args.profiles:
            res = run_profile(name, args, rows, executor)
            path = json_path(args, name)
            res["json"] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
            res["table"] = (render_screen(res) if args.screen else render(res)) if res["rows"] else ""
            if res.get("uses"):
                res["table"] += ("\n\n" if res["table"] else "") + render_uses(res)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res, indent=1))
            print(res["table"], flush=True)
            print(f"wrote {path}", flush=True)
            if not (args.no_append or args.quick):
                budget = f"{args.kimg:g} kimg" if args.minutes is None else f"{args.minutes:g} min"
                what = "screen (selection curves only)" if args.screen else f"{args.seeds} seeds"
                append_results(f"limited_data: {name}, {budget} per recipe, {what}", res["table"])
            results[name] = res
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return results


if __name__ == "__main__":
    main()
