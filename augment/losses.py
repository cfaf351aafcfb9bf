"""Adversarial losses. The loss owns the recipe (as in EDM): it applies DiffAugment to every
discriminator input, real and fake, and computes each player's term.

Example:
    >>> import torch
    >>> from augment.models import ConditionalGenerator, ProjectionDiscriminator
    >>> G = ConditionalGenerator(2, 8, 1, z_dim=8, width=8)
    >>> D = ProjectionDiscriminator(2, 8, 1, width=8)
    >>> loss = GanLoss("hinge", ["translation"])
    >>> y = torch.tensor([0, 1])
    >>> loss.discriminator(G, D, torch.zeros(2, 1, 8, 8), y, torch.randn(2, 8)).ndim
    0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from augment.diffaug import AdaptiveAugment, DiffAugment
from augment.models.generator import ClassNoise, ConditionalBatchNorm2d

LOSSES = ("hinge", "nonsaturating", "rpgan")


class LeCam:
    """LeCam regularisation of D's outputs (Tseng et al. 2021, "Regularizing Generative Adversarial
    Networks under Limited Data"), as in the authors' code:
    ``relu(D(real) - ema_fake)^2 + relu(ema_real - D(fake))^2``, the anchors being exponential moving
    averages (decay 0.99) of D's mean outputs on reals and fakes. It keeps D's predictions from
    drifting apart on a dataset it can memorise. The anchors are on the device and checkpointed.
    """

    def __init__(self, weight: float, decay: float = 0.99, device: torch.device | str = "cpu") -> None:
        if weight < 0 or not 0.0 <= decay < 1.0:
            raise ValueError(f"lecam weight must be >= 0 and decay in [0, 1), got {weight}, {decay}")
        self.weight, self.decay = weight, decay
        self.ema = torch.zeros(2, device=device)  # (real, fake)

    def __call__(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            means = torch.stack([real_logits.detach().float().mean(), fake_logits.detach().float().mean()])
            self.ema.lerp_(means, 1.0 - self.decay)
        ema_real, ema_fake = self.ema.unbind()
        reg = F.relu(real_logits - ema_fake).square().mean() + F.relu(ema_real - fake_logits).square().mean()
        return self.weight * reg


def group_shape(n: int) -> tuple[int, int]:
    """The most nearly square ``(rows, cols)`` with ``rows * cols == n`` and ``rows <= cols``: how gSR
    groups a layer's ``n`` per-class channels into a matrix.

    Example:
        >>> group_shape(256), group_shape(128), group_shape(96), group_shape(7)
        ((16, 16), (8, 16), (8, 12), (1, 7))
    """
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def class_balanced_weights(counts: Sequence[int] | torch.Tensor, beta: float = 0.999) -> torch.Tensor:
    """Per-class weights from the effective number of samples (Cui et al. 2019,
    ``(1 - beta**n) / (1 - beta)``), inverted and scaled to mean 1: a class with fewer images
    weighs more. gSR weighs its classes this way (``beta`` 0.999 in its authors' CIFAR-10 configs).

    Example:
        >>> [round(w, 3) for w in class_balanced_weights([100, 10]).tolist()]
        [0.189, 1.811]
    """
    n = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1)
    w = (1.0 - beta) / (1.0 - beta**n)
    return (w * len(w) / w.sum()).float()


def real_draw_weights(labels: torch.Tensor, counts: Sequence[int] | torch.Tensor, power: float) -> torch.Tensor:
    """Per-image draw weights of ``train.real_class_power`` (q) for images of ``labels`` whose
    classes hold ``counts`` images: class c is drawn with probability n_c^q / sum_k n_k^q and then one
    of its n_c images uniformly, so each image weighs n_c^(q-1) (scaled to sum to 1). q = 1: every
    image equally often; q = 0: every class equally often.

    Example:
        >>> w = real_draw_weights(torch.tensor([0, 0, 0, 0, 1]), [4, 1], 0.0)
        >>> [round(x, 3) for x in w.tolist()], round(w[:4].sum().item(), 3)
        ([0.125, 0.125, 0.125, 0.125, 0.5], 0.5)
    """
    n = torch.as_tensor(counts, dtype=torch.float64, device=labels.device).clamp(min=1)
    w = n.pow(power - 1.0)[labels]
    return w / w.sum()


def class_noise_scales(counts: Sequence[int] | torch.Tensor, sigma: float, beta: float = 0.99) -> torch.Tensor:
    """Per-class noise of :class:`~augment.models.generator.ClassNoise` for ``train.class_noise``:
    ``sigma`` for the rarest class, less for larger ones in proportion to the inverse effective
    number of samples (:func:`class_balanced_weights`; ``beta`` 0.99 as NoisyTwins' configs); even
    classes all get ``sigma``.

    Example:
        >>> [round(s, 3) for s in class_noise_scales([90, 9], 0.75).tolist()]
        [0.109, 0.75]
    """
    w = class_balanced_weights(counts, beta)
    return sigma * w / w.max()


class GroupSpectral:
    """Group spectral regularisation, gSR (Rangwani et al. 2022, "Improving GANs for Long-Tailed Data
    through Group Spectral Regularization"). Each conditional BatchNorm layer of G holds, per class,
    a gain ``gamma_y`` and a shift ``beta_y``; reshaped into a nearly square matrix of channel groups
    (:func:`group_shape`), their largest singular value grows for the tail classes of a long tail
    as those classes collapse to a few modes (the paper's "spectral collapse"). G pays

    ``weight * sum over layers of mean over classes of w_y * (s(gamma_y - 1) + s(beta_y))``,

    ``s`` the spectral norm (exact: the matrices are at most 16 x 16), ``gamma_y - 1`` the gain's
    departure from its initial 1 (the paper's ``1 + embed(y)``), ``w_y`` :func:`class_balanced_weights`
    of the train split's counts.
    """

    def __init__(self, weight: float, counts: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu") -> None:
        if weight < 0:
            raise ValueError(f"gsr weight must be >= 0, got {weight}")
        self.weight = weight
        self.class_weights = class_balanced_weights(counts).to(device)

    def norms(self, G: nn.Module) -> list[torch.Tensor]:
        """Per layer, the ``(classes, 2)`` spectral norms of ``gamma_y - 1`` and ``beta_y``."""
        out = []
        for m in G.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                rows, cols = group_shape(m.gamma.weight.shape[1])
                # (classes, 2, rows, cols): both parameters of every class in one batched call
                pair = torch.stack([m.gamma.weight.float() - 1.0, m.beta.weight.float()], dim=1)
                out.append(torch.linalg.matrix_norm(pair.view(-1, 2, rows, cols), ord=2))
        return out

    def __call__(self, G: nn.Module) -> torch.Tensor:
        norms = self.norms(G)
        if not norms:
            raise ValueError("gSR needs a generator with conditional BatchNorm layers")
        per_class = sum(n.sum(dim=1) for n in norms)
        return self.weight * (self.class_weights * per_class).mean()


#: Fake instance discrimination (``GanLoss(fake_contrast=...)``): the positive of a fake is the fake of
#: its latent moved by this much Gaussian noise (FakeCLR's perturbation, as in its code: 0.15) ...
FAKE_CONTRAST_SIGMA = 0.15
#: ... and the two views' cosine similarities are divided by this temperature (MoCo v2's 0.2).
FAKE_CONTRAST_TEMPERATURE = 0.2
#: The width of D's instance embedding (``ProjectionDiscriminator(contrast_dim=...)``).
FAKE_CONTRAST_DIM = 64


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = FAKE_CONTRAST_TEMPERATURE) -> torch.Tensor:
    """InfoNCE of ``query[i]`` against ``key[i]`` among every key of the batch (in-batch negatives):
    the cross-entropy of picking row i's own key by cosine similarity / ``temperature``.

    Example:
        >>> a = torch.eye(4)
        >>> round(info_nce(a, a, 0.05).item(), 6)  # each query finds its own key: no loss
        0.0
        >>> round(info_nce(a, a.roll(1, dims=0), 0.05).item(), 1)  # each finds a neighbour's
        20.0
    """
    q, k = F.normalize(query.float(), dim=1), F.normalize(key.float(), dim=1)
    logits = q @ k.T / temperature
    return F.cross_entropy(logits, torch.arange(len(q), device=q.device))


def recon_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The mean squared error of D's reconstruction ``rec`` against the image ``x`` it saw, averaged
    down to ``rec``'s size (FastGAN compares with LPIPS, whose pretrained network is not at hand
    here: pixels instead). ``x`` is a target: no gradient flows into it (nor, under R1, through it).

    Example:
        >>> x = torch.ones(1, 1, 4, 4)
        >>> recon_loss(torch.ones(1, 1, 2, 2), x).item(), recon_loss(torch.zeros(1, 1, 2, 2), x).item()
        (0.0, 1.0)
    """
    target = F.adaptive_avg_pool2d(x.detach().float(), rec.shape[-2:])
    return F.mse_loss(rec.float(), target)


class GanLoss:
    """Hinge (Lim & Ye 2017; Miyato et al. 2018), non-saturating (Goodfellow et al. 2014) or
    relativistic pairing loss (``rpgan``: Jolicoeur-Martineau 2019, as R3GAN's baseline, Huang et al.
    2024: each fake is scored against the real of its batch index), with the limited-data
    regularisers as options: R1, R2 (``r2_gamma``: the same penalty on the fakes), adaptive augmentation (``ada``: its p
    steers the DiffAugment policies, or with ``ada_extra`` further policies applied before the
    fixed DiffAugment), adaptive
    pseudo augmentation (``apa``: D's real batch holds some of the step's fakes), LeCam
    (``lecam_weight``), balanced consistency regularisation (``bcr_weight``), a mode-seeking term
    for G (``mode_seeking``), group spectral regularisation of G's class-conditional BatchNorm
    (``gsr_weight``, weighted by ``class_counts``),
    an auxiliary classifier (``aux_weight``: D's class head learns the real images' classes, G
    pays its cross-entropy on the fakes' intended classes; D must be built with ``aux_classifier``)
    noise on G's class conditioning in both players' steps (``class_noise``: the per-class
    ``sigma`` of :class:`~augment.models.generator.ClassNoise`, from :func:`class_noise_scales`)
    fake instance discrimination (``fake_contrast``, InsGen / FakeCLR: D must be built with
    ``contrast_dim``) and FastGAN's self-supervised reconstruction (``recon_weight``: D's decoder
    must redraw each augmented real image at its own resolution, :func:`recon_loss`; D must be built
    with ``recon``) and UTLO's unconditional low-resolution objective (``uncond_low``: G's
    low-resolution images and the real images averaged to their size are judged by D's unconditional
    low-resolution head, in both players' losses at this weight; G and D must be built with ``uncond_low``)."""

    def __init__(
        self,
        kind: str = "hinge",
        diffaug: Sequence[str] = ("translation", "cutout"),
        r1_gamma: float = 0.0,
        *,
        r2_gamma: float = 0.0,
        ada: AdaptiveAugment | None = None,
        ada_extra: Sequence[str] = (),
        apa: AdaptiveAugment | None = None,
        lecam_weight: float = 0.0,
        bcr_weight: float = 0.0,
        mode_seeking: float = 0.0,
        gsr_weight: float = 0.0,
        aux_weight: float = 0.0,
        class_noise: torch.Tensor | None = None,
        fake_contrast: float = 0.0,
        recon_weight: float = 0.0,
        uncond_low: float = 0.0,
        class_counts: Sequence[int] | torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose from {LOSSES}")
        if r1_gamma < 0:
            raise ValueError(f"r1_gamma must be >= 0, got {r1_gamma}")
        if r2_gamma < 0:
            raise ValueError(f"r2_gamma must be >= 0, got {r2_gamma}")
        if mode_seeking < 0:
            raise ValueError(f"mode_seeking must be >= 0, got {mode_seeking}")
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        if bcr_weight < 0:
            raise ValueError(f"bcr_weight must be >= 0, got {bcr_weight}")
        if fake_contrast < 0:
            raise ValueError(f"fake_contrast must be >= 0, got {fake_contrast}")
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {recon_weight}")
        if uncond_low < 0:
            raise ValueError(f"uncond_low must be >= 0, got {uncond_low}")
        if kind == "rpgan" and uncond_low > 0:
            raise ValueError("loss rpgan pairs each fake with a real; UTLO's low-resolution term has no pair")
        heads = [
            name
            for name, w in (
                ("aux_weight", aux_weight),
                ("fake_contrast", fake_contrast),
                ("recon_weight", recon_weight),
            )
            if w > 0
        ]
        if len(heads) > 1:
            raise ValueError(f"{' and '.join(heads)} are not combined (one extra head of D at a time)")
        self.kind = kind
        if ada_extra and ada is None:
            raise ValueError(f"ada_extra {list(ada_extra)} needs ada (the controller whose p applies them)")
        self.augment = DiffAugment(diffaug)
        self.extra = DiffAugment(ada_extra) if ada_extra else None
        self.r1_gamma = r1_gamma
        self.r2_gamma = r2_gamma
        self.ada = ada
        self.apa = apa
        self.lecam = LeCam(lecam_weight, device=device) if lecam_weight > 0 else None
        self.bcr_weight = bcr_weight
        self.mode_seeking = mode_seeking
        if gsr_weight > 0 and class_counts is None:
            raise ValueError("gsr_weight > 0 needs class_counts (the train split's images per class)")
        self.gsr = GroupSpectral(gsr_weight, class_counts, device) if gsr_weight > 0 else None
        self.aux_weight = aux_weight
        self.class_noise = None if class_noise is None else torch.as_tensor(class_noise, dtype=torch.float32).to(device)
        self.fake_contrast = fake_contrast
        self.recon_weight = recon_weight
        self.uncond_low = uncond_low

    @property
    def controllers(self) -> dict[str, AdaptiveAugment]:
        """The adaptive controllers that are on, by name (``ada``, ``apa``): logged and checkpointed under it."""
        return {name: c for name, c in (("ada", self.ada), ("apa", self.apa)) if c is not None}

    def _aug(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        if self.extra is not None:  # ADA's p steers the extra policies; DiffAugment's stay on every image
            return self.augment(self.extra(x, gen, self.ada.p), gen)
        return self.augment(x, gen, None if self.ada is None else self.ada.p)

    def _fake(
        self, G: nn.Module, z: torch.Tensor, labels: torch.Tensor, gen: torch.Generator | None, with_low: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """G's images of ``labels``; with ``class_noise`` its class conditioning perturbed per image;
        ``with_low``: ``(images, low-resolution images)``."""
        noise = None if self.class_noise is None else ClassNoise(self.class_noise[labels], gen)
        if with_low:
            return G(z, labels, noise, with_low=True)
        return G(z, labels) if noise is None else G(z, labels, noise)

    def _fake_and_low(
        self, G: nn.Module, z: torch.Tensor, labels: torch.Tensor, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G's images and, with ``uncond_low``, its low-resolution images (else None)."""
        if self.uncond_low > 0:
            return self._fake(G, z, labels, gen, with_low=True)
        return self._fake(G, z, labels, gen), None

    def _d_term(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "hinge":
            return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        if self.kind == "rpgan":
            return F.softplus(fake_logits - real_logits).mean()
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def _g_term(self, logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "rpgan":
            return F.softplus(real_logits - logits).mean()
        return -logits.mean() if self.kind == "hinge" else F.softplus(-logits).mean()

    def _low_pair(
        self, real: torch.Tensor, fake_low: torch.Tensor, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """UTLO's low-resolution inputs of D: the real images averaged to the size of G's
        low-resolution fakes, and those fakes, both augmented as D's full-size inputs are."""
        real_low = F.adaptive_avg_pool2d(real, fake_low.shape[-2:])
        return self._aug(torch.cat([real_low, fake_low.to(real_low.dtype)]), gen).chunk(2)

    def _score(
        self, D: nn.Module, x: torch.Tensor, labels: torch.Tensor, real: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """D's logits, and the auxiliary classifier's term: ``aux_weight`` x the cross-entropy of D's
        class head against ``labels`` (0 when off); on ``real`` images with ``recon_weight``, that
        weight x D's reconstruction error of ``x`` instead."""
        if real and self.recon_weight > 0:
            logits, rec = D(x, labels, with_recon=True)
            return logits, self.recon_weight * recon_loss(rec, x)
        if self.aux_weight == 0:
            return D(x, labels), 0.0
        logits, classes = D(x, labels, with_aux=True)
        return logits, self.aux_weight * F.cross_entropy(classes.float(), labels)

    def _fake_scores(
        self,
        G: nn.Module,
        D: nn.Module,
        fake_aug: torch.Tensor,
        z: torch.Tensor,
        labels: torch.Tensor,
        gen: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """D's logits of the augmented fakes, and with ``fake_contrast`` its instance term: each fake's
        embedding must pick out, among the batch's, the one of the fake of its latent moved by
        ``FAKE_CONTRAST_SIGMA`` noise, augmented afresh (the key side gets no gradient)."""
        if self.fake_contrast == 0:
            return D(fake_aug, labels), 0.0
        logits, query = D(fake_aug, labels, with_instance=True)
        with torch.no_grad():
            dz = torch.randn(z.shape, generator=gen, device=z.device, dtype=z.dtype) * FAKE_CONTRAST_SIGMA
            _, key = D(self._aug(self._fake(G, z + dz, labels, gen), gen), labels, with_instance=True)
        return logits, self.fake_contrast * info_nce(query, key)

    def discriminator(
        self,
        G: nn.Module,
        D: nn.Module,
        real: torch.Tensor,
        labels: torch.Tensor,
        z: torch.Tensor,
        gen: torch.Generator | None = None,
        *,
        r1: bool = True,
        r1_scale: float = 1.0,
        D_r1: nn.Module | None = None,
    ) -> torch.Tensor:
        """D's loss on a real batch and fakes of the same labels (G gets no gradient).

        Real and fake go through D in separate calls: D's minibatch-stddev layer must see groups
        that are all real or all fake.

        R1 is added when ``r1`` is true (lazy regularisation passes ``r1`` on every N-th step
        with ``r1_scale=N``). By default the penalty reuses the real forward pass; with ``D_r1``
        (an eager twin of a compiled ``D``: double backward does not go through torch.compile) it
        runs a separate forward of the same augmented reals. With ``ada``, D's real logits steer
        the augmentation probability.

        With ``apa`` (Jiang et al. 2021, "Deceive D: Adaptive Pseudo Augmentation"), each real image
        is replaced with probability ``apa.p`` by the fake of the same index (the same class), which D
        is then asked to call real, as in the authors' code: R1 and ``apa``'s own sign heuristic see
        that mixed batch. A D that memorises the few reals is pulled back by fakes it must accept.

        With ``bcr_weight`` (bCR, Zhao et al. 2020, "Improved Consistency Regularization for GANs"),
        the same reals and fakes get a second, independent DiffAugment draw and D pays
        ``bcr_weight * (mean (D(T1 x) - D(T2 x))^2)`` on each: it must score an image the same however
        it is translated or cut out. The paper's anchor is the clean image; here D never sees a clean
        one, so both views come from the augmentation D trains on (no augmentation leaks into G).
        """
        with torch.no_grad():
            fake, fake_low = self._fake_and_low(G, z, labels, gen)
        if self.apa is not None:
            pick = torch.rand((real.shape[0], 1, 1, 1), generator=gen, device=real.device) < self.apa.p
            real = torch.where(pick, fake.to(real.dtype), real)
        both = torch.cat([real, fake])
        real_aug, fake_aug = self._aug(both, gen).chunk(2)
        do_r1, do_r2 = r1 and self.r1_gamma > 0, r1 and self.r2_gamma > 0
        if D_r1 is None:
            if do_r1:
                real_aug = real_aug.detach().requires_grad_(True)
            if do_r2:
                fake_aug = fake_aug.detach().requires_grad_(True)
        # the class head and the decoder learn from reals only
        real_logits, aux_real = self._score(D, real_aug, labels, real=True)
        fake_logits, contrast = self._fake_scores(G, D, fake_aug, z, labels, gen)
        loss = self._d_term(real_logits, fake_logits) + aux_real + contrast
        if fake_low is not None:  # UTLO: D's unconditional head on the low-resolution pair
            real_low, fake_low = self._low_pair(real, fake_low, gen)
            loss = loss + self.uncond_low * self._d_term(D.score_low(real_low), D.score_low(fake_low))
        if self.lecam is not None:
            loss = loss + self.lecam(real_logits, fake_logits)
        if self.bcr_weight > 0:
            real_aug2, fake_aug2 = self._aug(both, gen).chunk(2)
            for view, logits in ((real_aug2, real_logits), (fake_aug2, fake_logits)):
                other = D(view, labels).float()
                loss = loss + self.bcr_weight * (logits.float() - other).square().mean()
        if self.ada is not None:
            self.ada.observe(real_logits)
        if self.apa is not None:
            self.apa.observe(real_logits)
        # R1 (Mescheder et al. 2018) and R2: penalise D's gradient on the real images and on the fakes
        pens = ((do_r1, self.r1_gamma, real_aug, real_logits), (do_r2, self.r2_gamma, fake_aug, fake_logits))
        for on, gamma, x, logits in pens:
            if not on:
                continue
            if D_r1 is not None:
                x = x.detach().requires_grad_(True)
                logits = D_r1(x, labels)
            (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
            loss = loss + 0.5 * gamma * r1_scale * grad.square().sum(dim=(1, 2, 3)).mean()
        return loss

    def generator(
        self,
        G: nn.Module,
        D: nn.Module,
        labels: torch.Tensor,
        z: torch.Tensor,
        gen: torch.Generator | None = None,
        keep: int | None = None,
        real: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """G's loss: make D score augmented fakes as real (under ``rpgan``: above D's score of the
        augmented real image of the same batch index; that loss needs ``real``, the step's real
        images and their classes).

        With ``mode_seeking`` (MSGAN, Mao et al. 2019) the batch is split into two halves of the same
        classes, and G also pays ``mode_seeking / (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5)``:
        two latents of one class that give (nearly) one image cost much, a mode collapse is expensive.
        With ``gsr_weight``, G also pays :class:`GroupSpectral` on its conditional BatchNorm; with
        ``aux_weight``, the cross-entropy of D's class head on the fakes against their classes.
        With ``keep`` (top-k training, Sinha et al. 2020), the adversarial term averages only the
        ``keep`` fakes D scores highest; the other terms see the whole batch. With ``fake_contrast``, G
        pays D's fake instance discrimination term too (InsGen's diversity term for G): its fakes must
        be told apart by D's embedding.
        """
        if self.mode_seeking > 0:
            half = labels.shape[0] // 2
            labels = torch.cat([labels[:half], labels[:half], labels[2 * half :]])
        fake, low = self._fake_and_low(G, z, labels, gen)
        if self.fake_contrast > 0:
            logits, aux_fake = self._fake_scores(G, D, self._aug(fake, gen), z, labels, gen)
        else:
            logits, aux_fake = self._score(D, self._aug(fake, gen), labels)
        if keep is not None and keep < logits.shape[0]:
            logits = logits.flatten().topk(keep).values
        real_logits = None
        if self.kind == "rpgan":
            if real is None or real[0].shape[0] != logits.shape[0]:
                raise ValueError("loss rpgan needs G's step's real batch, one real image per fake")
            with torch.no_grad():
                real_logits = D(self._aug(real[0], gen), real[1])
        loss = self._g_term(logits, real_logits) + aux_fake
        if low is not None:  # UTLO: G's low-resolution images must pass D's unconditional head
            loss = loss + self.uncond_low * self._g_term(D.score_low(self._aug(low, gen)))
        if self.mode_seeking > 0 and half > 0:
            ratio = (fake[:half] - fake[half : 2 * half]).abs().mean() / (z[:half] - z[half : 2 * half]).abs().mean()
            loss = loss + self.mode_seeking / (ratio.float() + 1e-5)
        if self.gsr is not None:
            loss = loss + self.gsr(G)
        return loss
