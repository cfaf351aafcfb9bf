"""Typed configuration: pydantic models <-> ``configs/*.yaml``.

Every section forbids unknown keys, so a typo is an error that names the file, the dotted
field and the bad value instead of a silently ignored setting.

Example:
    >>> from augment.config import load_config
    >>> cfg = load_config("configs/digits.yaml", overrides=["train.kimg=2"])
    >>> cfg.train.kimg
    2.0
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from augment.addresses import dask_address_problem, tracking_uri_problem
from augment.errors import ConfigError
from augment.yamlio import read_yaml

SUPPORTED_SIZES = (8, 16, 28, 32, 64)


def _checked_dask_address(v: str | None) -> str | None:
    problem = dask_address_problem(v) if v is not None else None
    if problem:
        raise ValueError(problem)
    return v


class _Section(BaseModel):
    # inf / nan are refused in every number: `train.lr_g=.inf` would train NaN weights.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SplitConfig(_Section):
    """Stratified train/val/test split of the limited data (fractions per class)."""

    val: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.2, ge=0.0, lt=1.0)
    #: When set, the test split instead takes this many real images per class from the images the
    #: limit left out (disjoint from train/val): a larger, balanced test set for honest benchmarks.
    test_per_class: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val + self.test >= 1.0:
            raise ValueError(f"val + test must be < 1 (got {self.val} + {self.test})")
        return self


class ImbalanceConfig(_Section):
    """Long-tail profile: class k keeps ``max_per_class * ratio ** (k / (K - 1))`` images."""

    ratio: float = Field(..., gt=0.0, le=1.0)
    max_per_class: int = Field(..., ge=2)
    #: Class order of the tail (first = largest). Default: the source's class order.
    order: list[str] | None = None


class DataConfig(_Section):
    source: Literal["digits", "fashion_mnist", "imagefolder", "csv"] = "digits"
    #: Folder (fashion_mnist IDX files, imagefolder root) or manifest file (csv).
    root: Path | None = None
    image_size: int = 8
    channels: Literal[1, 3] = 1
    #: How to convert images whose mode does not match ``channels`` ("L" or "RGB"); None = error.
    convert: Literal["L", "RGB"] | None = None
    #: Restrict to (and order) these classes; None = every class of the source.
    classes: list[str] | None = None
    per_class: int | dict[str, int] | None = None
    imbalance: ImbalanceConfig | None = None
    split: SplitConfig = SplitConfig()

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v not in SUPPORTED_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {v}")
        return v

    @field_validator("per_class")
    @classmethod
    def _per_class(cls, v: int | dict[str, int] | None) -> int | dict[str, int] | None:
        values = v.values() if isinstance(v, dict) else [v] if v is not None else []
        for n in values:
            if n < 1:
                raise ValueError(f"per_class counts must be >= 1, got {n}")
        return v

    @model_validator(mode="after")
    def _limits(self) -> DataConfig:
        if self.per_class is not None and self.imbalance is not None:
            raise ValueError("set either per_class or imbalance, not both")
        if self.source in ("imagefolder", "csv") and self.root is None:
            raise ValueError(f"source {self.source!r} needs data.root")
        return self


class ModelConfig(_Section):
    z_dim: int = Field(64, ge=1)
    g_channels: int = Field(64, ge=4)
    d_channels: int = Field(64, ge=4)
    #: Generator blocks: ``dcgan`` (one convolution per resolution) or ``resnet`` (BigGAN-style
    #: residual blocks of two convolutions; about 1.4x the training time per image on a CPU).
    g_arch: Literal["dcgan", "resnet"] = "dcgan"
    #: Widest layer as a multiple of the base width (caps the cost of large images).
    max_mult: int = Field(4, ge=1)
    #: Spectral normalisation in the discriminator. Off by default: on 8x8 digits it left the
    #: generator's classes collapsed to one image; R1 (train.r1_gamma) kept them diverse. The
    #: Fashion-MNIST config turns it on beside R1 (the better long-tail generator in three trainings).
    d_spectral_norm: bool = False
    #: Spectral normalisation of the generator's convolutions and linear layers while it trains
    #: (SAGAN, BigGAN); the generator a run hands on holds the normalised weights. Off: on the long
    #: tail it evened per-class recall but left the downstream numbers unchanged (benchmarks/RESULTS.md).
    g_spectral_norm: bool = False


CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
#: DiffAugment policies (augment/diffaug.py; geometric is StyleGAN2-ADA's rotation and scalings).
DiffAugPolicy = Literal["geometric", "color", "translation", "cutout"]


def _check_compile_mode(section: Any) -> Any:
    """A compile mode without compiling would be silently ignored: refuse it."""
    if section.compile_mode != "default" and not section.compile:
        raise ValueError(f"compile_mode {section.compile_mode!r} needs compile: true")
    return section


class CudaTrainConfig(_Section):
    """Settings that replace the CPU ones when training runs on CUDA.

    A batch of 64 leaves an H100 launch-bound (a few thousand images/s); these defaults were chosen
    with ``benchmarks/train_throughput.py`` and ``benchmarks/time_to_quality.py`` (RESULTS.md).
    """

    batch_size: int = Field(512, ge=2)
    #: None = the CPU setting (train.lr_g / train.lr_d).
    lr_g: float | None = Field(None, gt=0)
    lr_d: float | None = Field(None, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "bf16"
    channels_last: bool = True
    #: torch.compile the two networks for the adversarial steps.
    compile: bool = True
    #: torch.compile's mode: reduce-overhead replays each step's kernels as CUDA graphs.
    compile_mode: CompileMode = "default"
    #: R1 every this many D steps (scaled up to match): double backward does not go through
    #: torch.compile, so the R1 pass runs eagerly and is kept rare (lazy regularisation).
    r1_interval: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _mode_needs_compile(self) -> CudaTrainConfig:
        return _check_compile_mode(self)


class TrainConfig(_Section):
    kimg: float = Field(50.0, gt=0)
    #: The GAN training's own seed (initial weights, latents, augmentation draws); None = the top-level
    #: ``seed``, which also draws the data split. Set, it reruns the same data with another training.
    seed: int | None = Field(None, ge=0)
    batch_size: int = Field(64, ge=2)
    #: ``rpgan``: the relativistic pairing loss of R3GAN (Huang et al. 2024, "The GAN is dead; long live
    #: the GAN!"): each fake is scored against a real of the same batch, softplus(D(fake) - D(real)) for
    #: D and the mirror image for G (one more D pass on the reals in G's step); with R1 and R2 it is the
    #: paper's mode-covering baseline.
    loss: Literal["hinge", "nonsaturating", "rpgan"] = "hinge"
    diffaug: list[DiffAugPolicy] = ["translation", "cutout"]
    #: R1 gradient penalty on real images (0 = off).
    r1_gamma: float = Field(0.1, ge=0)
    #: R2 gradient penalty on G's images (R3GAN pairs it with R1 at the same weight; 0 = off). It runs
    #: with R1, every r1_interval D steps.
    r2_gamma: float = Field(0.0, ge=0)
    #: Apply R1 every this many D steps, scaled by the interval (lazy regularisation, StyleGAN2).
    r1_interval: int = Field(1, ge=1)
    #: Discriminator steps per generator step (SNGAN's n_dis, BigGAN's D steps); kimg counts the
    #: real images D is shown, so 2 gives G half the steps per kimg, at ~1.3x the kimg per second
    #: (long tail, CPU; at equal wall time it lost 0.5 pts downstream: benchmarks/RESULTS.md).
    d_steps: int = Field(1, ge=1)
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    #: Adam's (beta1, beta2), each in [0, 1) (Adam refuses others only once training has started).
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.0, 0.99)
    #: Linear learning-rate decay (SNGAN's schedule in Mimicry): from this share of the budget both
    #: players' rates fall linearly to 0 at its end (the budget: ``kimg``, or ``max_minutes`` where that
    #: comes first). None = constant rates.
    lr_decay_from: float | None = Field(None, ge=0.0, lt=1.0)
    #: Half-life of the generator's EMA, in thousands of images shown.
    ema_kimg: float = Field(1.0, ge=0)
    #: BatchNorm statistics of the EMA generator: ``copy`` = the trained G's running statistics (of
    #: G's last few steps, not of the averaged weights); ``standing`` = recomputed for the averaged
    #: weights before every check and snapshot (BigGAN's standing statistics: 16 batches of fixed
    #: latents and the train split's classes), which a half-life much longer than a few steps needs.
    ema_bn: Literal["copy", "standing"] = "copy"
    snapshot_kimg: float = Field(10.0, gt=0)
    #: Evaluate the EMA generator's fd_domain every this many kimg and keep the best (0 = off).
    eval_kimg: float = Field(0.0, ge=0)
    #: Synthetic images scored at each check per train+val image (each class's count capped by
    #: evaluate.samples_per_class first): more images, less sampling noise in which check wins.
    eval_oversample: int = Field(1, ge=1)
    #: Snapshot ensemble (needs eval_kimg): at the end, the best snapshot becomes an equal mixture of
    #: up to this many checked EMA generators, added greedily while the mixture's fd_domain (train+val)
    #: drops; candidates are the 3x this many best checks. 1 = the single best snapshot.
    ensemble: int = Field(1, ge=1)
    #: Adaptive discriminator augmentation (Karras et al. 2020, StyleGAN2-ADA): each DiffAugment
    #: policy is applied to an image with probability p, and p is steered so that E[sign(D(real))]
    #: (D's overfitting heuristic r_t) stays at this target (0.6 in the paper). None = fixed
    #: DiffAugment, every policy on every image (p = 1).
    ada_target: float | None = Field(None, gt=0.0, lt=1.0)
    #: How fast ADA's (and APA's) p may move: from 0 to 1 in this many thousand images shown (the
    #: paper's 500 kimg is sized for trainings of tens of thousands of kimg; these run for tens to hundreds).
    ada_kimg: float = Field(20.0, gt=0)
    #: With ada_target: the policies ADA's p steers *on top of* DiffAugment, whose own policies then
    #: stay on every image (e.g. [geometric, color]: StyleGAN2-ADA's rotation and scalings, and
    #: brightness/contrast, each applied with probability p before translation and cutout). Empty =
    #: p steers the diffaug policies themselves (the paper's single pipeline).
    ada_extra: list[DiffAugPolicy] = []
    #: Adaptive pseudo augmentation (Jiang et al. 2021, APA, "Deceive D"): each real image of D's
    #: step is replaced, with probability p, by the step's fake of the same class, shown to D as real;
    #: p is steered like ADA's (this target for E[sign(D(real))], moving by 1 in ada_kimg thousand
    #: images). It costs no extra network pass. None = off.
    apa_target: float | None = Field(None, gt=0.0, lt=1.0)
    #: LeCam regularisation of D's outputs (Tseng et al. 2021): weight of
    #: E[relu(D(real) - ema_fake)^2] + E[relu(ema_real - D(fake))^2] in D's loss (0 = off).
    lecam_weight: float = Field(0.0, ge=0)
    #: Balanced consistency regularisation (Zhao et al. 2020, bCR): weight of D's squared change
    #: between two independent DiffAugment draws of the same image, on reals and fakes alike, in D's
    #: loss (the paper's lambda_real = lambda_fake = 10); two more D passes per step (0 = off).
    bcr_weight: float = Field(0.0, ge=0)
    #: Mode-seeking term (Mao et al. 2019, MSGAN): weight of 1 / (|G(z1) - G(z2)| / |z1 - z2|) in
    #: G's loss, for pairs of latents of the same class (0 = off).
    mode_seeking: float = Field(0.0, ge=0)
    #: Group spectral regularisation (Rangwani et al. 2022, gSR): weight of the class-weighted spectral
    #: norms of G's per-class BatchNorm gains and shifts, grouped into square-ish matrices, in G's
    #: loss; tail classes weigh more (0 = off).
    gsr_weight: float = Field(0.0, ge=0)
    #: Auxiliary classifier (AC-GAN's class head, Odena et al. 2017, beside the projection): weight of
    #: the cross-entropy of a class head on D's features, learnt on real images in D's loss and paid
    #: by G on its fakes' classes (0 = off; on, D gets the head).
    aux_class_weight: float = Field(0.0, ge=0)
    #: Noise on G's class conditioning while it trains (NoisyTwins' noise augmentation, Rangwani et
    #: al. 2023, without its twins term): each image's class embedding and conditional BatchNorm gains
    #: and shifts are moved by Gaussian noise of this many times the RMS of their table for the
    #: rarest class, less for larger classes (inverse effective number of samples, beta 0.99), so a
    #: tail class's neighbourhood in class space must give images of it too. Snapshots, checks and
    #: samples use the clean conditioning (0 = off).
    class_noise: float = Field(0.0, ge=0)
    #: Fake instance discrimination (InsGen, Yang et al. 2021; FakeCLR, Li et al. 2022): weight of an
    #: InfoNCE term over an embedding head on D's features, in D's loss and in G's: each fake must pick
    #: out, among the batch's, the fake of its own latent moved by small noise (0 = off; on, D gets the head).
    fake_contrast: float = Field(0.0, ge=0)
    #: FastGAN's self-supervised discriminator (Liu et al. 2021): weight of the squared error of a small
    #: decoder on D's last feature map that redraws each augmented real image at twice that map's size
    #: (14x14 for 28x28 images), in D's loss (0 = off; on, D gets the decoder).
    d_recon: float = Field(0.0, ge=0)
    #: UTLO (Khorram et al. 2024, "Taming the Tail in Class-Conditional GANs"): G's lowest resolution
    #: (7x7 for 28x28 images) is unconditional and draws a low-resolution image there, which an
    #: unconditional head of D judges against the real images averaged to that size; this is the
    #: weight of that objective in both players' losses (the paper's alpha; 0 = off; on, G and D
    #: get the extra layers). DCGAN layout only.
    uncond_low: float = Field(0.0, ge=0)
    #: The classes of the generator's step: ``data`` = the real minibatch's labels (the class
    #: frequencies of the train split, as D's fakes); ``uniform`` = every class equally often, so a
    #: tail class of a long tail gets as many generator updates as the largest class (D's step is
    #: unchanged: reals and fakes with the same labels).
    g_labels: Literal["data", "uniform"] = "data"
    #: Dataset x-flips (StyleGAN2-ADA's ``--mirror``): each real image of a step is mirrored
    #: left-right with probability 0.5, so G learns the flipped images too (a tail class of 9 images
    #: trains on 18). Only for data whose classes survive a horizontal flip.
    mirror: bool = False
    #: How the real minibatch draws its classes (the power q of Kang et al. 2020's class-aware
    #: sampling): class c with probability n_c^q / sum_k n_k^q, then one of its images uniformly.
    #: 1 = every training image equally often (the train split's class frequencies); 0 = every class
    #: equally often (a tail class of 9 images is shown as often as one of 90); 0.5 = square-root.
    #: G's step draws the reals' classes (``g_labels: data``), so it follows too.
    real_class_power: float = Field(1.0, ge=0.0, le=1.0)
    #: Top-k training (Sinha et al. 2020, "Top-k Training of GANs"): G's adversarial term averages
    #: only the k fakes D scores most real, k = max(top_k, 0.99 ** epochs) x the batch (an epoch: one
    #: pass over the train split), so G stops being pulled by the fakes D already rejects. The
    #: paper's floor is 0.5 for most GANs. None = every fake (off).
    top_k: float | None = Field(None, gt=0.0, le=1.0)
    #: Transitional training (Shahbazi et al. 2022, "Collapse by conditioning"): ``[start, end]`` in
    #: kimg. Unconditional until ``start`` (G's class embedding, its conditional BatchNorm's class
    #: deviations and D's projection term scaled by 0), the scale ramped linearly to 1 by ``end``,
    #: class-conditional after; snapshots are checked (eval_kimg) only once it is 1, and a snapshot
    #: taken before records its scale. None = conditional from the first step.
    cond_transition_kimg: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]] | None = None
    #: Stop at this wall-clock budget (minutes); None = no budget.
    max_minutes: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: bf16 autocast for the networks' matmuls/convolutions (weights and optimizer stay fp32);
    #: auto = bf16 where the device computes bf16 natively (CPU with AMX or AVX512-BF16), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    #: NHWC memory layout for the networks.
    channels_last: bool = False
    #: torch.compile the networks for the adversarial steps (the R1 pass stays eager).
    compile: bool = False
    #: torch.compile's mode (see train.cuda.compile_mode; CUDA graphs exist only on CUDA).
    compile_mode: CompileMode = "default"
    #: Torch intra-op threads; None = every core.
    threads: int | None = Field(None, ge=1)
    #: Replaces batch_size, lr, precision, channels_last, compile(_mode) and r1_interval on CUDA.
    cuda: CudaTrainConfig = CudaTrainConfig()

    @model_validator(mode="after")
    def _mode_needs_compile(self) -> TrainConfig:
        return _check_compile_mode(self)

    @model_validator(mode="after")
    def _extra_needs_ada(self) -> TrainConfig:
        if self.ada_extra and self.ada_target is None:
            raise ValueError(f"ada_extra {self.ada_extra} needs ada_target (ADA's p applies them)")
        return self

    @model_validator(mode="after")
    def _one_extra_head(self) -> TrainConfig:
        on = [k for k in ("fake_contrast", "aux_class_weight", "d_recon") if getattr(self, k) > 0]
        if len(on) > 1:
            raise ValueError(f"{' and '.join(on)} each add a head to D: set one of them")
        return self

    @model_validator(mode="after")
    def _rpgan_pairs(self) -> TrainConfig:
        if self.loss == "rpgan":
            on = [k for k in ("top_k", "uncond_low") if getattr(self, k)]
            if on:
                raise ValueError(f"loss rpgan scores each fake against a real; not combined with {' or '.join(on)}")
        return self

    @model_validator(mode="after")
    def _ensemble_needs_checks(self) -> TrainConfig:
        if self.ensemble > 1 and self.eval_kimg <= 0:
            raise ValueError(f"ensemble {self.ensemble} mixes checked snapshots and needs eval_kimg > 0")
        return self

    @model_validator(mode="after")
    def _transition_within_training(self) -> TrainConfig:
        if self.cond_transition_kimg is not None:
            start, end = self.cond_transition_kimg
            if not start < end:
                raise ValueError(f"cond_transition_kimg [{start:g}, {end:g}] needs start < end")
        return self


class GenerateConfig(_Section):
    #: balance: top every class up to the largest train class; per_class: N per class; total: a budget.
    target: Literal["balance", "per_class", "total"] = "balance"
    per_class: int | None = Field(None, ge=1)
    total: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(256, ge=1)
    #: Images per shard (a contiguous index range of one class), the unit of work a generation
    #: worker takes. A multiple of batch_size recomputes nothing at shard edges.
    shard_size: int = Field(5120, ge=1)
    #: N > 1: shards run on a local Dask cluster of N single-threaded worker processes.
    workers: int = Field(1, ge=1)
    #: An existing Dask scheduler (tcp://host:8786) for the shards; its workers must share the
    #: output filesystem (they write the PNGs into the staging folder beside the output folder).
    dask_address: str | None = None

    @field_validator("dask_address")
    @classmethod
    def _dask_address(cls, v: str | None) -> str | None:
        return _checked_dask_address(v)

    @model_validator(mode="after")
    def _counts(self) -> GenerateConfig:
        if self.target == "per_class" and self.per_class is None:
            raise ValueError("target 'per_class' needs generate.per_class")
        if self.target == "total" and self.total is None:
            raise ValueError("target 'total' needs generate.total")
        return self


class EvaluateConfig(_Section):
    #: Feature space of the distances: the run's domain CNN (fd_domain) or, in addition, the standard
    #: InceptionV3 FID network from a local weights file (fid_inception).
    extractor: Literal["domain", "inception"] = "domain"
    #: Local InceptionV3 FID weights (else $AUGMENT_INCEPTION_WEIGHTS); nothing is downloaded.
    inception_weights: Path | None = None
    seeds: int = Field(3, ge=1)
    #: gan-augmenter / balanced-dataset: the generator as users deploy it (GanAugmenter(p=synthetic_share),
    #: BalancedDataset); balanced-dataset is left out where the train split is balanced already.
    regimes: list[
        Literal["real", "real+classic", "real+gan", "real+gan+classic", "gan-only", "gan-augmenter", "balanced-dataset"]
    ] = [
        "real",
        "real+classic",
        "real+gan",
        "real+gan+classic",
        "gan-only",
        "gan-augmenter",
        "balanced-dataset",
    ]
    classifier: Literal["smallcnn", "resnet18"] = "smallcnn"
    #: Optimizer steps of every downstream classifier (equal in every regime).
    steps: int = Field(500, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    #: Share of each batch drawn from synthetic images in the real+gan regimes.
    synthetic_share: float = Field(0.5, ge=0.0, le=1.0)
    #: Classes of the synthetic part of a batch: balance = even out the real class imbalance.
    synthetic_sampling: Literal["balance", "uniform"] = "balance"
    #: Real part of a real+gan batch: natural = uniformly over the train split; baseline = as the
    #: chosen classic baseline draws (class-balanced where val chose that), so the GAN regime is the
    #: baseline's batch with a share of it synthetic.
    gan_real_sampling: Literal["natural", "baseline"] = "natural"
    #: real+gan+classic: the classic policy transforms the synthetic images too (true), or the
    #: real images only (false: the generator's samples enter the batch as generated).
    classic_on_synthetic: bool = True
    #: Fraction of the real+gan regimes' optimizer steps whose batches hold synthetic images; the
    #: steps after it train on real images only (a real-data finish). 1.0 = every step.
    synthetic_until: float = Field(1.0, gt=0.0, le=1.0)
    #: BatchNorm in the downstream classifiers of the regimes with synthetic images: joint = one BatchNorm
    #: over the mixed batch; split = real and synthetic rows normalised by their own batch statistics
    #: (the running statistics evaluation uses come from the real rows); auxiliary = split, and the
    #: synthetic rows get their own scale and shift too (AdvProp's auxiliary BatchNorm).
    synthetic_bn: Literal["joint", "split", "auxiliary"] = "joint"
    #: Synthetic images generated per class for the downstream pool and the memorisation check.
    synthetic_per_class: int = Field(500, ge=1)
    #: Keep a synthetic image only if a real-trained classifier gives its class >= this probability.
    confidence_threshold: float | None = Field(None, ge=0.0, le=1.0)
    #: Train on synthetic images against the filter classifier's probabilities (a classifier
    #: trained on the real train split) instead of their one-hot class: soft labels.
    soft_labels: bool = False
    #: A teacher file (``augment teacher``; :mod:`augment.metrics.teacher`): a classifier trained on more
    #: labelled images than the GAN saw, never on the run's val or test images. Its probabilities are the
    #: synthetic images' soft labels and the confidence filter's scores, and the classic baseline is
    #: distilled from it the same way (the real images in the pool's place), so the verdict credits only
    #: what the synthetic images add. Needs soft_labels: true. None: no teacher.
    teacher: Path | None = None
    #: Choose synthetic_share / threshold / soft labels on the validation split (never the test split).
    tune: bool = False
    tune_shares: list[float] = [0.25, 0.5]
    tune_thresholds: list[float | None] = [None, 0.8]
    tune_soft_labels: list[bool] = [False]
    #: Classic baselines tried on the validation split; the best is the verdict's baseline.
    classic: list[str] = ["crop", "crop+flip", "crop+flip+affine"]
    #: How the classic baseline draws its real images, each tried on val with every policy above:
    #: natural = uniformly over the train split (its class frequencies); balance = a class uniformly,
    #: then one of its images (class-balanced resampling, the long-tail practice the real+gan regimes'
    #: balance sampling must beat). balance is left out where the train split is balanced.
    classic_sampling: list[Literal["natural", "balance"]] = ["natural", "balance"]
    #: torch: a vectorised re-implementation of the torchvision ops (fast, the default);
    #: torchvision: torchvision's v2 RandomCrop / RandomHorizontalFlip / RandomAffine, image by image.
    classic_backend: Literal["torch", "torchvision"] = "torch"
    #: Seeds of each validation-split selection cell (baseline choice, tuning).
    select_seeds: int = Field(1, ge=1)
    #: Synthetic (and real) images per class for the distance metrics (capped by the train split).
    samples_per_class: int = Field(200, ge=2)
    #: Optimizer steps of the domain feature extractor (trained on the real train+val split).
    extractor_steps: int = Field(1000, ge=1)
    #: A synthetic image nearer its closest training image than this quantile of held-out real
    #: images' nearest-training distances counts as a near-copy.
    near_copy_quantile: float = Field(0.05, gt=0.0, lt=1.0)
    #: Where the domain extractor is cached (by data fingerprint); None = RUN_DIR/cache.
    cache_dir: Path | None = None
    #: Torch intra-op threads of the downstream classifiers and the extractor's training. None: every
    #: core for the stacked grid (one process trains all cells as one network), one thread per cell
    #: where cells run one by one or side by side (workers / dask_address).
    threads: int | None = Field(None, ge=1)
    #: Most downstream cells trained as one stacked network (augment.metrics.stacked); memory grows
    #: with it (about 60 MB per cell at 28x28, batch 128).
    stack_cells: int = Field(16, ge=1)
    #: bf16 autocast for the downstream classifiers' training steps (weights, optimizer, loss and
    #: predictions stay fp32); auto = bf16 where the device computes it natively. The domain
    #: extractor stays fp32: its features define fd_domain.
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    #: Where the extractor, generator and downstream classifiers run (auto = CUDA when present).
    #: Batch draws and augmentation parameters come from CPU generators on every device.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Downstream cells side by side: N > 1 = a local Dask cluster of N single-threaded worker
    #: processes; auto = one worker per usable core when the cells run on the CPU (1 on CUDA).
    workers: int | Literal["auto"] = 1
    #: An existing Dask scheduler (tcp://host:8786) for the cells; replaces workers.
    dask_address: str | None = None

    @field_validator("dask_address")
    @classmethod
    def _dask_address(cls, v: str | None) -> str | None:
        return _checked_dask_address(v)

    @field_validator("workers", mode="wrap")
    @classmethod
    def _workers(cls, v: Any, handler: Any) -> int | str:
        try:
            out = handler(v)
        except ValidationError:
            out = None
        if out == "auto" or (isinstance(out, int) and not isinstance(out, bool) and out >= 1):
            return out
        raise ValueError("must be a whole number >= 1 or auto")

    @field_validator("classic")
    @classmethod
    def _classic(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one classic policy (e.g. crop)")
        for policy in v:
            ops = policy.split("+")
            bad = any(op not in ("crop", "flip", "affine") for op in ops) or len(set(ops)) != len(ops)
            if policy != "none" and bad:
                raise ValueError(f"bad classic policy {policy!r}: ops joined by '+' from crop, flip, affine, or 'none'")
        return v

    @field_validator("classic_sampling")
    @classmethod
    def _classic_sampling(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"classic_sampling must list natural and/or balance once each, got {v}")
        return v

    @field_validator("tune_shares")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= s <= 1.0 for s in v):
            raise ValueError(f"tune_shares must be a non-empty list of values in [0, 1], got {v}")
        return v

    @field_validator("tune_soft_labels")
    @classmethod
    def _soft(cls, v: list[bool]) -> list[bool]:
        if not v:
            raise ValueError("tune_soft_labels must be a non-empty list of true/false")
        return v

    @model_validator(mode="after")
    def _teacher(self) -> EvaluateConfig:
        if self.teacher is None:
            return self
        if not self.soft_labels or (self.tune and self.tune_soft_labels != [True]):
            raise ValueError(
                "a teacher labels the synthetic images: set soft_labels: true (and tune_soft_labels: [true])"
            )
        if self.synthetic_bn != "joint":
            raise ValueError("a teacher's distilled baseline is measured with synthetic_bn: joint only")
        return self

    @field_validator("tune_thresholds")
    @classmethod
    def _thresholds(cls, v: list[float | None]) -> list[float | None]:
        if not v or any(t is not None and not 0.0 <= t <= 1.0 for t in v):
            raise ValueError(f"tune_thresholds must be a non-empty list of null or values in [0, 1], got {v}")
        return v


class TrackingConfig(_Section):
    enabled: bool = True
    uri: str = "sqlite:///mlruns.db"
    experiment: str = "gan-augment"
    registered_model: str | None = None
    promote_on: Literal["downstream", "fd_domain"] = "downstream"

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        problem = tracking_uri_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class OutputConfig(_Section):
    root: Path = Path("runs")


class Config(_Section):
    name: str = "digits"
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _uncond_low_layout(self) -> Config:
        if self.train.uncond_low > 0 and self.model.g_arch != "dcgan":
            raise ValueError(f"train.uncond_low needs model.g_arch dcgan, not {self.model.g_arch}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML/JSON-able values."""
        return json.loads(self.model_dump_json())

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (for MLflow params)."""
        return flatten(self.to_dict())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys -> leaf values: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def _parse_override(item: str, source: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"{source}: override {item!r} is not of the form a.b=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{source}: override {item!r} has an empty field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None, source: str = "--set") -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a raw config mapping."""
    for item in overrides or []:
        path, value = _parse_override(item, source)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: cannot set {'.'.join(path)}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def _format_error(err: ValidationError, source: str, raw: dict[str, Any]) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown field '{loc}' (value {first['input']!r})"
    value = first.get("input")
    if isinstance(value, dict):  # model-level validators report the whole section
        return f"{source}: {loc}: {msg.removeprefix('Value error, ')}"
    return f"{source}: field '{loc}' has bad value {value!r}: {msg.removeprefix('Value error, ')}"


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a raw mapping; raises ConfigError naming ``source``, the field and the value."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source, raw)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    Args:
        path: YAML file; ``None`` uses the built-in defaults (the digits config).
        overrides: ``["train.kimg=5", "data.per_class=50"]``; values are parsed as YAML.

    Raises:
        ConfigError: one line naming the file, the dotted field and the bad value.
    """
    raw = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        import copy

        config_from_dict(copy.deepcopy(raw), source)  # the file alone: its own errors name the file
        source = f"{source} (--set)"
    apply_overrides(raw, overrides, source=source)
    return config_from_dict(raw, source)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config (every field, defaults included)."""
    from augment.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
