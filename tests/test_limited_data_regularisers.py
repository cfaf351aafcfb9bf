"""The limited-data switches of the GAN recipe: adaptive augmentation (ADA, alone or steering
extra policies such as StyleGAN2-ADA's geometric group on top of DiffAugment), adaptive pseudo
augmentation (APA), LeCam, balanced consistency regularisation (bCR), top-k training, mode seeking,
group spectral regularisation (gSR), an auxiliary classifier, class-balanced generator labels, the
reals' class draw (class-aware sampling), dataset x-flips, noise on G's class conditioning, fake
instance discrimination, FastGAN's self-supervised discriminator, UTLO's unconditional lowest
resolution.

Each is checked against its defining formula on known values, for its effect on training, and for
an exact resume (its state lives in the training state).
"""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path

import pytest
import torch

from augment import checkpoint
from augment.config import DiffAugPolicy
from augment.diffaug import POLICIES, AdaptiveAugment, DiffAugment, geometric
from augment.losses import (
    FAKE_CONTRAST_DIM,
    GanLoss,
    GroupSpectral,
    LeCam,
    class_noise_scales,
    group_shape,
    info_nce,
    real_draw_weights,
    recon_loss,
)
from augment.models import ConditionalGenerator, ProjectionDiscriminator
from augment.models.generator import ClassNoise, ConditionalBatchNorm2d
from augment.train import loop_kwargs, train
from augment.train_options import LossOptions, flat_options
from conftest import tiny_config


def test_diffaug_probability_zero_is_identity_and_one_is_plain_diffaugment() -> None:
    x = torch.randn(16, 1, 8, 8)
    aug = DiffAugment(["translation", "cutout"])
    assert torch.equal(aug(x, torch.Generator().manual_seed(0), p=0.0), x)
    # p = 1 applies every op to every image; the mask draws come after each op's own draws, so
    # the first op's parameters are those of plain DiffAugment: compare one op at a time.
    one = DiffAugment(["cutout"])
    plain = one(x, torch.Generator().manual_seed(0))
    assert torch.equal(one(x, torch.Generator().manual_seed(0), p=1.0), plain)
    # In between, about p of the images change (cutout always zeroes a quarter of an image).
    p = torch.tensor(0.25)
    out = one(torch.randn(4000, 1, 8, 8) + 5, torch.Generator().manual_seed(1), p=p)
    changed = (out == 0).flatten(1).any(1).float().mean().item()
    assert changed == pytest.approx(0.25, abs=0.03)


def test_the_config_offers_exactly_the_policies_diffaugment_has() -> None:
    assert set(typing.get_args(DiffAugPolicy)) == set(POLICIES)


def test_geometric_rotates_and_scales_without_shearing_or_losing_the_image() -> None:
    size = 32
    coords = torch.arange(size) - (size - 1) / 2
    radius = (coords.view(-1, 1).square() + coords.view(1, -1).square()).sqrt()
    disk = (radius < 6).float().expand(256, 1, size, size)
    # Rotation alone (std 0: no scaling) leaves a centred disk a disk: theta is a pure rotation.
    rotated = geometric(disk, torch.Generator().manual_seed(0), std=0.0)
    inside, outside = radius < 4.5, radius > 7  # a shear or a stray scale would move the rim past these
    assert rotated[:, 0, inside].min() > 0.99 and rotated[:, 0, outside].max() < 0.01
    assert rotated.sum(dim=(1, 2, 3)) == pytest.approx(disk.sum(dim=(1, 2, 3)), rel=0.05)
    # An off-centre bar is turned to every direction: its centre of mass moves around the middle.
    bar = torch.zeros(512, 1, size, size)
    bar[:, :, 14:18, 20:28] = 1
    out = geometric(bar, torch.Generator().manual_seed(1), std=0.0)
    mass = out.sum(dim=(1, 2, 3))
    cx = (out.sum(dim=2).squeeze(1) * coords).sum(1) / mass
    cy = (out.sum(dim=3).squeeze(1) * coords).sum(1) / mass
    angles = torch.atan2(cy, cx)
    assert (cx.square() + cy.square()).sqrt().mean() == pytest.approx(7.5, abs=1.0)  # the bar's distance kept
    for lo in torch.linspace(-torch.pi, torch.pi, 5)[:-1]:  # every quarter of the circle is reached
        assert ((angles >= lo) & (angles < lo + torch.pi / 2)).float().mean() > 0.15
    # With the default scalings the disk's area changes by iso**2 (anisotropy keeps the area), both
    # ways: log(area) ~ N(0, 2 ln2 std) (reflection padding and bilinear blur trim it a little).
    area = geometric(disk, torch.Generator().manual_seed(2)).sum(dim=(1, 2, 3)) / disk[0].sum()
    assert area.min() < 0.75 and area.max() > 1.3
    assert area.log().mean().item() == pytest.approx(0.0, abs=0.06)
    assert area.log().std().item() == pytest.approx(2 * math.log(2) * 0.2, abs=0.05)
    # Differentiable, and replayed by the generator's state.
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    geometric(x, torch.Generator().manual_seed(3)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    again = [geometric(disk, torch.Generator().manual_seed(4)) for _ in range(2)]
    assert torch.equal(*again)


def test_ada_extra_policies_ride_on_top_of_fixed_diffaugment() -> None:
    ada = AdaptiveAugment(target=0.6)
    loss = GanLoss(diffaug=["cutout"], ada=ada, ada_extra=["color"])
    x = torch.randn(2000, 1, 8, 8) + 5  # no pixel is 0 before cutout
    # p = 0: the extra policy is off, and cutout still zeroes a square in every image.
    out = loss._aug(x, torch.Generator().manual_seed(0))
    assert (out == 0).flatten(1).any(1).all()
    kept = out != 0
    assert torch.equal(out[kept], x[kept])
    # p = 0.5: about half of the images also change by brightness/contrast; cutout stays on all.
    ada.p = torch.tensor(0.5)
    out = loss._aug(x, torch.Generator().manual_seed(0))
    assert (out == 0).flatten(1).any(1).all()
    changed = ((out - x).abs() * (out != 0)).flatten(1).amax(1) > 1e-6
    assert changed.float().mean().item() == pytest.approx(0.5, abs=0.05)
    # Without extras, ADA's p steers DiffAugment itself: at p = 0 nothing is cut out.
    plain = GanLoss(diffaug=["cutout"], ada=AdaptiveAugment(target=0.6))
    assert torch.equal(plain._aug(x, torch.Generator().manual_seed(0)), x)
    with pytest.raises(ValueError, match="ada_extra"):
        GanLoss(ada_extra=["color"])


def test_ada_controller_follows_the_sign_heuristic() -> None:
    ada = AdaptiveAugment(target=0.6, speed_kimg=1.0, interval=2)
    ada.observe(torch.ones(100))  # r_t = 1 after 2 calls: 200 images = 0.2 of speed_kimg
    assert float(ada.p) == 0.0  # no adjustment before `interval` calls
    ada.observe(torch.ones(100))
    assert float(ada.rt) == 1.0 and float(ada.p) == pytest.approx(0.2)
    for _ in range(2):  # D unsure (r_t = 0 < 0.6): p falls by the same step
        ada.observe(torch.tensor([1.0, -1.0] * 50))
    assert float(ada.rt) == 0.0 and float(ada.p) == pytest.approx(0.0, abs=1e-7)
    for _ in range(2):  # p never leaves [0, 1]
        ada.observe(-torch.ones(100))
    assert float(ada.p) == 0.0
    for _ in range(40):
        ada.observe(torch.ones(100))
    assert float(ada.p) == 1.0
    state = ada.state_dict()
    again = AdaptiveAugment(target=0.6, speed_kimg=1.0, interval=2)
    again.load_state_dict(state)
    assert float(again.p) == 1.0 and again._calls == ada._calls
    with pytest.raises(ValueError, match="target"):
        AdaptiveAugment(target=1.5)


def test_lecam_is_the_papers_regulariser_with_moving_anchors() -> None:
    lecam = LeCam(weight=0.5, decay=0.9)
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0])
    reg = lecam(real, fake)
    ema_real, ema_fake = 0.1 * 3.0, 0.1 * 0.0  # anchors moved 1 - decay of the way to the means
    assert lecam.ema.tolist() == pytest.approx([ema_real, ema_fake])
    expected = (real - ema_fake).clamp(min=0).square().mean() + (ema_real - fake).clamp(min=0).square().mean()
    assert float(reg) == pytest.approx(0.5 * float(expected))
    # It pulls D's outputs together: the gradient lowers real logits and raises fake ones.
    r, f = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    lecam(r, f).backward()
    assert (r.grad > 0).all() and (f.grad <= 0).all() and (f.grad < 0).any()


def _nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return ConditionalGenerator(3, 8, 1, z_dim=8, width=8), ProjectionDiscriminator(3, 8, 1, width=8)


def test_lecam_and_ada_enter_the_discriminator_loss() -> None:
    G, D = _nets()
    real, y, z = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.randn(8, 8)
    base = GanLoss("hinge", ["translation"]).discriminator(G, D, real, y, z, torch.Generator().manual_seed(0))
    lecam = GanLoss("hinge", ["translation"], lecam_weight=1.0)
    with_lecam = lecam.discriminator(G, D, real, y, z, torch.Generator().manual_seed(0))
    assert with_lecam.item() > base.item()  # a non-negative penalty, here non-zero
    ada = AdaptiveAugment(0.6, speed_kimg=0.001, interval=1)
    loss = GanLoss("hinge", ["translation"], ada=ada)
    loss.discriminator(G, D, real, y, z, torch.Generator().manual_seed(0))
    assert ada._calls == 1 and float(ada.p) in (0.0, 1.0)  # the one step moved p to an end


def test_bcr_is_the_squared_change_of_d_between_two_augmentation_draws() -> None:
    """bCR adds exactly ``w * (mean (D(T1 x) - D(T2 x))^2)`` on reals and on fakes, T1 being the draw
    the adversarial terms see and T2 the next one from the same stream; without augmentation the two
    views are one image and the term is 0; D learns from both views."""
    G, D = _nets()
    D.eval()  # spectral norm's power iteration stays put: every call of D gives the same numbers
    real, y, z = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.randn(8, 8)
    base = GanLoss("hinge", ["translation", "cutout"]).discriminator(G, D, real, y, z, torch.Generator().manual_seed(0))
    bcr = GanLoss("hinge", ["translation", "cutout"], bcr_weight=10.0)
    loss = bcr.discriminator(G, D, real, y, z, torch.Generator().manual_seed(0))
    gen, aug = torch.Generator().manual_seed(0), DiffAugment(["translation", "cutout"])
    with torch.no_grad():
        both = torch.cat([real, G(z, y)])
        r1, f1 = aug(both, gen).chunk(2)
        r2, f2 = aug(both, gen).chunk(2)
        term = sum((D(a, y) - D(b, y)).square().mean() for a, b in ((r1, r2), (f1, f2)))
    assert term.item() > 0.01  # the two draws differ
    assert (loss - base).item() == pytest.approx(10.0 * term.item(), rel=1e-4)
    plain = GanLoss("hinge", []).discriminator(G, D, real, y, z)
    assert GanLoss("hinge", [], bcr_weight=10.0).discriminator(G, D, real, y, z).item() == pytest.approx(plain.item())
    D.zero_grad()
    (loss - base).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="bcr_weight"):
        GanLoss(bcr_weight=-1)


def test_top_k_keeps_the_fakes_d_scores_most_real_with_the_papers_schedule() -> None:
    """G's adversarial term with ``keep`` is minus the mean of the ``keep`` highest D scores of the
    same augmented fakes; ``keep`` decays by 0.99 per pass over the train split down to the floor."""
    G, D = _nets()
    D.eval()
    y, z = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.randn(8, 8)
    loss = GanLoss("hinge", ["translation"]).generator(G, D, y, z, torch.Generator().manual_seed(0), keep=3)
    with torch.no_grad():
        scores = D(DiffAugment(["translation"])(G(z, y), torch.Generator().manual_seed(0)), y).flatten()
    assert loss.item() == pytest.approx(-scores.sort(descending=True).values[:3].mean().item(), rel=1e-5)
    every = GanLoss("hinge", ["translation"]).generator(G, D, y, z, torch.Generator().manual_seed(0), keep=8)
    assert every.item() == pytest.approx(-scores.mean().item(), rel=1e-5) and loss.item() < every.item()
    opts = LossOptions(top_k=0.5)
    assert [opts.top_k_keep(n, 64, 100) for n in (0, 99, 100, 1000, 6800, 6900, 10**6)] == [64, 64, 64, 58, 33, 32, 32]
    assert LossOptions().top_k_keep(10**6, 64, 100) is None
    assert LossOptions(top_k=0.01).top_k_keep(10**7, 64, 100) == 1  # never an empty batch


class _Recording(torch.nn.Module):
    """A discriminator that records the images of each call (its first call is the real batch)."""

    def __init__(self, D: torch.nn.Module) -> None:
        super().__init__()
        self.D, self.seen = D, []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.D(x, y)


@pytest.mark.parametrize("p", [0.0, 1.0, 0.5])
def test_apa_shows_d_the_steps_fakes_as_real_with_probability_p(p: float) -> None:
    G, D = _nets()
    G.eval()  # BatchNorm from running statistics: G(z) is the same image in the loss and here
    real, y, z = torch.full((64, 1, 8, 8), 5.0), torch.arange(64) % 3, torch.randn(64, 8)
    apa = AdaptiveAugment(0.6, speed_kimg=1.0, interval=1)
    apa.p = torch.tensor(p)
    rec = _Recording(D)
    GanLoss("hinge", [], apa=apa).discriminator(G, rec, real, y, z, torch.Generator().manual_seed(0))
    shown, fake = rec.seen[0], G(z, y).detach()
    is_fake = (shown - fake).flatten(1).abs().amax(1) < 1e-6
    assert (is_fake | (shown == 5.0).flatten(1).all(1)).all()  # each row is its own fake or its real image
    assert torch.equal(rec.seen[1], fake)  # the fake batch itself is unchanged
    if p in (0.0, 1.0):
        assert is_fake.all().item() is bool(p)
    else:
        assert 0.25 < is_fake.float().mean().item() < 0.75  # 64 draws at p = 0.5: 4 standard deviations
    # The controller reads D's logits on that mixed batch: r_t is their mean sign after one call.
    assert float(apa.rt) == pytest.approx(D(shown, y).sign().mean().item())


def test_mode_seeking_term_pairs_latents_of_one_class() -> None:
    G, D = _nets()
    y, z = torch.tensor([0, 1, 2, 2, 1, 0]), torch.randn(6, 8)
    plain = GanLoss("hinge", [], mode_seeking=0.0).generator(G, D, y, z)
    ms = GanLoss("hinge", [], mode_seeking=2.0)
    total = ms.generator(G, D, y, z)
    # The adversarial term is computed on pairs of the first half's classes.
    paired = torch.tensor([0, 1, 2, 0, 1, 2])
    fake = G(z, paired)
    ratio = (fake[:3] - fake[3:]).abs().mean() / (z[:3] - z[3:]).abs().mean()
    expected = -D(fake, paired).mean() + 2.0 / (ratio + 1e-5)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() > plain.item()  # the term is positive
    with pytest.raises(ValueError, match="mode_seeking"):
        GanLoss(mode_seeking=-1)


def _trained_like_tables(G: ConditionalGenerator) -> ConditionalGenerator:
    """``G`` with class tables moved off their initial values (CBN gains start at exactly 1, shifts at
    0: no departure to scale the noise by), as a few hundred steps of training move them."""
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(("gamma.weight", "beta.weight")):
                p.add_(0.3 * torch.randn_like(p))
    return G


def test_class_noise_moves_every_class_table_by_sigma_times_its_rms() -> None:
    torch.manual_seed(0)
    G = _trained_like_tables(ConditionalGenerator(3, 8, 1, z_dim=8, width=8)).eval()
    z, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    clean = G(z, y)
    # sigma 0: the draws happen but add nothing, so the images are the clean ones exactly.
    assert torch.equal(G(z, y, ClassNoise(torch.zeros(6), torch.Generator().manual_seed(1))), clean)
    noisy = G(z, y, ClassNoise(torch.full((6,), 0.5), torch.Generator().manual_seed(1)))
    again = G(z, y, ClassNoise(torch.full((6,), 0.5), torch.Generator().manual_seed(1)))
    assert torch.equal(noisy, again) and not torch.allclose(noisy, clean)
    # Only the images given noise change.
    half = G(z, y, ClassNoise(torch.tensor([0.5, 0.5, 0.5, 0.0, 0.0, 0.0]), torch.Generator().manual_seed(1)))
    assert not torch.allclose(half[:3], clean[:3]) and torch.equal(half[3:], clean[3:])
    # The noise's size: sigma x the table's RMS (a gain table: its departure from 1), per entry.
    gains = G.norm0.gamma.weight
    rms = (gains - 1).square().mean().sqrt().item()
    moved = ClassNoise(torch.full((20_000,), 0.5), torch.Generator().manual_seed(2)).perturb(
        torch.zeros(20_000, gains.shape[1]), gains - 1
    )
    assert moved.std().item() == pytest.approx(0.5 * rms, rel=0.01)
    assert moved.mean().item() == pytest.approx(0.0, abs=0.01 * rms)


def test_class_noise_scales_give_the_rarest_class_sigma_and_even_classes_the_same() -> None:
    counts = [90, 41, 9]
    scales = class_noise_scales(counts, 0.75)
    n = torch.tensor(counts, dtype=torch.float64)
    inv_effective = (1 - 0.99) / (1 - 0.99**n)  # Cui et al.'s effective number, inverted
    assert scales.tolist() == pytest.approx((0.75 * inv_effective / inv_effective.max()).tolist(), rel=1e-6)
    assert scales[2].item() == pytest.approx(0.75) and scales[0].item() < scales[1].item() < 0.75
    assert class_noise_scales([50, 50, 50], 0.3).tolist() == pytest.approx([0.3, 0.3, 0.3])


class _NoiseRecordingG(torch.nn.Module):
    """A real generator that also keeps the ``ClassNoise`` each call got."""

    def __init__(self, G: ConditionalGenerator) -> None:
        super().__init__()
        self.G, self.calls = G, []

    def forward(self, z: torch.Tensor, y: torch.Tensor, noise: ClassNoise | None = None) -> torch.Tensor:
        self.calls.append(noise)
        return self.G(z, y, noise)


def test_gan_loss_gives_each_fake_its_class_noise_in_both_steps() -> None:
    G, D = _nets()
    rec = _NoiseRecordingG(G)
    y, z = torch.tensor([0, 1, 2, 2]), torch.randn(4, 8)
    per_class = torch.tensor([0.1, 0.2, 0.4])
    loss = GanLoss("hinge", [], class_noise=per_class)
    loss.discriminator(rec, D, torch.zeros(4, 1, 8, 8), y, z, torch.Generator().manual_seed(0))
    loss.generator(rec, D, y, z, torch.Generator().manual_seed(0))
    assert len(rec.calls) == 2
    for call in rec.calls:
        assert torch.equal(call.sigma, torch.tensor([0.1, 0.2, 0.4, 0.4]))
    GanLoss("hinge", []).generator(rec, D, y, z)
    assert rec.calls[-1] is None  # off: G is called as before, no draws


def test_gsr_is_the_class_weighted_spectral_norm_of_the_grouped_cbn_parameters() -> None:
    torch.manual_seed(0)
    G = ConditionalGenerator(2, 8, 1, z_dim=8, width=16)  # conditional BatchNorm over 32 and 16 channels
    gsr = GroupSpectral(0.5, counts=[90, 10])
    assert gsr(G).item() == 0.0  # gains start at 1 and shifts at 0: nothing to penalise
    assert gsr.class_weights[1] > 8 * gsr.class_weights[0]  # the 10-image class weighs ~9x more
    layer = G.norm0
    with torch.no_grad():
        layer.gamma.weight[1] += torch.arange(32.0) / 32  # the tail class's gain departs from 1
        layer.beta.weight[0] -= 0.25  # the head class's shift: all -0.25
    rows, cols = group_shape(32)
    assert (rows, cols) == (4, 8)
    s_gamma = torch.linalg.svdvals((layer.gamma.weight[1] - 1).view(rows, cols))[0]
    s_beta = torch.linalg.svdvals(layer.beta.weight[0].view(rows, cols))[0]
    assert s_beta.item() == pytest.approx(0.25 * (32**0.5))  # a constant matrix: rank 1
    expected = 0.5 * (gsr.class_weights[0] * s_beta + gsr.class_weights[1] * s_gamma) / 2
    assert gsr(G).item() == pytest.approx(expected.item(), rel=1e-5)
    # Descending it shrinks the tail class's gain matrix towards 1, faster than the head's shift.
    opt = torch.optim.SGD(G.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        gsr(G).backward()
        opt.step()
    after = gsr.norms(G)[0]
    assert after[1, 0] < s_gamma and after[0, 1] < s_beta
    assert (s_gamma - after[1, 0]) > (s_beta - after[0, 1])
    # In G's loss: the adversarial term plus exactly this penalty.
    D = ProjectionDiscriminator(2, 8, 1, width=8)
    y, z = torch.tensor([0, 1, 0, 1]), torch.randn(4, 8)
    G.eval(), D.eval()  # running BatchNorm statistics, no spectral-norm power step: both calls see the same nets
    plain = GanLoss("hinge", []).generator(G, D, y, z)
    with_gsr = GanLoss("hinge", [], gsr_weight=0.5, class_counts=[90, 10]).generator(G, D, y, z)
    assert with_gsr.item() == pytest.approx(plain.item() + gsr(G).item(), rel=1e-5)
    with pytest.raises(ValueError, match="class_counts"):
        GanLoss(gsr_weight=0.5)


def test_aux_classifier_head_is_trained_on_reals_and_paid_by_g_on_fakes() -> None:
    torch.manual_seed(0)
    plain_D = ProjectionDiscriminator(3, 8, 1, width=8, spectral=False)
    torch.manual_seed(0)
    D = ProjectionDiscriminator(3, 8, 1, width=8, spectral=False, aux_classifier=True)
    # The head is made last: every other layer starts as in a discriminator without it.
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in plain_D.state_dict().items())
    assert set(D.state_dict()) - set(plain_D.state_dict()) == {"aux.weight", "aux.bias"}
    G = ConditionalGenerator(3, 8, 1, z_dim=8, width=16)
    G.eval(), D.eval()
    real, y, z = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]), torch.randn(6, 8)
    logits, classes = D(real, y, with_aux=True)
    assert classes.shape == (6, 3) and torch.equal(logits, D(real, y))
    with pytest.raises(ValueError, match="aux_classifier"):
        plain_D(real, y, with_aux=True)
    # D's loss: the adversarial terms plus w * CE(head(real), y); the fakes' classes are not D's lesson.
    base_d = GanLoss("hinge", [], 0.0).discriminator(G, D, real, y, z)
    with_d = GanLoss("hinge", [], 0.0, aux_weight=0.5).discriminator(G, D, real, y, z)
    ce_real = torch.nn.functional.cross_entropy(classes, y)
    assert with_d.item() == pytest.approx(base_d.item() + 0.5 * ce_real.item(), rel=1e-5)
    # G's loss: the adversarial term plus w * CE(head(fake), the classes asked for).
    fake = G(z, y)
    base_g = GanLoss("hinge", []).generator(G, D, y, z)
    with_g = GanLoss("hinge", [], aux_weight=0.5).generator(G, D, y, z)
    ce_fake = torch.nn.functional.cross_entropy(D(fake, y, with_aux=True)[1], y)
    assert with_g.item() == pytest.approx(base_g.item() + 0.5 * ce_fake.item(), rel=1e-5)
    # Descending D's loss teaches the head the real images' classes (it starts at chance).
    D.train()
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    loss_fn = GanLoss("hinge", [], 0.0, aux_weight=1.0)
    for _ in range(30):
        opt.zero_grad()
        loss_fn.discriminator(G, D, real, y, z).backward()
        opt.step()
    D.eval()
    assert torch.nn.functional.cross_entropy(D(real, y, with_aux=True)[1], y).item() < 0.5 * ce_real.item()
    with pytest.raises(ValueError, match="aux_weight"):
        GanLoss(aux_weight=-1)


SWITCHES = (
    "train.ada_target=0.6",
    "train.ada_kimg=0.05",
    "train.ada_extra=[geometric, color]",
    "train.apa_target=0.3",
    "train.lecam_weight=0.3",
    "train.bcr_weight=10",
    "train.top_k=0.5",
    "train.mode_seeking=1.0",
    "train.gsr_weight=0.5",
    "train.g_labels=uniform",
    "train.mirror=true",
    "train.aux_class_weight=1.0",
    "train.class_noise=0.5",
    "train.real_class_power=0.5",
)


def test_switches_reach_the_loop_and_change_training(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "train.kimg=0.128", *SWITCHES)
    kw = flat_options(loop_kwargs(cfg))
    assert (kw["ada_target"], kw["ada_kimg"], kw["lecam_weight"], kw["mode_seeking"]) == (0.6, 0.05, 0.3, 1.0)
    assert (kw["gsr_weight"], kw["g_labels"], kw["mirror"]) == (0.5, "uniform", True)
    assert kw["aux_class_weight"] == 1.0 and kw["apa_target"] == 0.3 and kw["bcr_weight"] == 10.0
    assert kw["top_k"] == 0.5 and kw["ada_extra"] == ("geometric", "color") and kw["class_noise"] == 0.5
    assert kw["real_class_power"] == 0.5
    off = flat_options(loop_kwargs(tiny_config(tmp_path)))
    assert (off["ada_target"], off["lecam_weight"], off["mode_seeking"], off["g_labels"]) == (None, 0.0, 0.0, "data")
    assert off["gsr_weight"] == 0.0 and off["mirror"] is False
    assert off["aux_class_weight"] == 0.0 and off["apa_target"] is None and off["bcr_weight"] == 0.0
    assert off["top_k"] is None and off["ada_extra"] == () and off["class_noise"] == 0.0
    assert off["real_class_power"] == 1.0
    run, _ = train(cfg, out=tmp_path / "on", progress=False)
    base, _ = train(tiny_config(tmp_path, "train.kimg=0.128"), out=tmp_path / "off", progress=False)
    state = checkpoint.load(run / "training-state.pt", checkpoint.STATE_FORMAT)
    assert 0.0 <= float(state["ada"]["p"]) <= 1.0 and state["lecam_ema"].shape == (2,)
    assert state["discriminator_kwargs"]["aux_classifier"] is True and "aux.weight" in state["D"]
    ticks = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert "ada_p" in ticks[-1] and "ada_p" not in json.loads((base / "stats.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= ticks[-1]["apa_p"] <= 1.0 and ticks[-1]["apa_p"] == pytest.approx(float(state["apa"]["p"]))
    off_state = checkpoint.load(base / "training-state.pt", checkpoint.STATE_FORMAT)
    assert "aux_classifier" not in off_state["discriminator_kwargs"] and "aux.weight" not in off_state["D"]
    a = off_state["G"]
    assert not all(torch.equal(state["G"][k], a[k]) for k in a)


def trains_and_resumes_exactly(tmp_path: Path, *overrides: str) -> tuple[Path, dict, dict]:
    """Trains 256 images with ``overrides``, and again as 128 resumed to 256: G, G_ema and D must be
    equal to the last digit (a switch's state lives in the training state). Returns the full run's
    directory, its training state and the resumed run's."""
    full, _ = train(tiny_config(tmp_path, "train.kimg=0.256", *overrides), out=tmp_path / "full", progress=False)
    part, _ = train(tiny_config(tmp_path, "train.kimg=0.128", *overrides), out=tmp_path / "part", progress=False)
    train(tiny_config(tmp_path, "train.kimg=0.256", *overrides), out=part, resume=True, progress=False)
    a = checkpoint.load(full / "training-state.pt", checkpoint.STATE_FORMAT)
    b = checkpoint.load(part / "training-state.pt", checkpoint.STATE_FORMAT)
    for key in ("G", "G_ema", "D"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    return full, a, b


def test_resume_with_the_switches_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    _, a, b = trains_and_resumes_exactly(tmp_path, *SWITCHES)
    assert torch.equal(a["ada"]["p"], b["ada"]["p"]) and torch.equal(a["lecam_ema"], b["lecam_ema"])
    assert torch.equal(a["apa"]["p"], b["apa"]["p"]) and a["apa"]["calls"] == b["apa"]["calls"] > 0


def tail_shares(tmp_path: Path, monkeypatch, name: str, *overrides: str) -> tuple[float, float]:
    """Trains 4 kimg on a 4:1 long tail of two digits (about 36 : 9 train images) and returns the
    tail class's share of G's step's labels and of D's real batches."""
    seen: dict[str, list[torch.Tensor]] = {"G": [], "D": []}
    real_g, real_d = GanLoss.generator, GanLoss.discriminator

    def spy_g(self, G, D, y, z, *args, **kwargs):
        seen["G"].append(y.clone())
        return real_g(self, G, D, y, z, *args, **kwargs)

    def spy_d(self, G, D, real, y, *args, **kwargs):
        seen["D"].append(y.clone())
        return real_d(self, G, D, real, y, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(GanLoss, "generator", spy_g)
        m.setattr(GanLoss, "discriminator", spy_d)
        sets = [
            "data.classes=['0','1']",
            "data.per_class=null",
            "data.imbalance={ratio: 0.25, max_per_class: 40}",
            "train.kimg=4",
        ]
        train(tiny_config(tmp_path, *sets, *overrides), out=tmp_path / name, progress=False)
    g, d = torch.cat(seen["G"]), torch.cat(seen["D"])
    return g.eq(1).float().mean().item(), d.eq(1).float().mean().item()


def test_uniform_generator_labels_train_every_class_equally_often(tmp_path: Path, monkeypatch) -> None:
    """On a 4:1 long tail, G's step sees the tail class 4x less often with ``data`` labels and as
    often as the head with ``uniform``; D's fakes keep the real batch's labels either way."""
    # 0.2 of the train images are class 1; 4096 draws: 4 standard deviations is about 0.04.
    g, d = tail_shares(tmp_path, monkeypatch, "data", "train.g_labels=data")
    assert g == pytest.approx(0.2, abs=0.04) and d == pytest.approx(0.2, abs=0.04)
    g, d = tail_shares(tmp_path, monkeypatch, "uniform", "train.g_labels=uniform")
    assert g == pytest.approx(0.5, abs=0.04) and d == pytest.approx(0.2, abs=0.04)


def test_real_draw_weights_give_each_class_n_to_the_power_q() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10 + [3] * 25)  # class 2 has no image
    for q in (1.0, 0.5, 0.0):
        w = real_draw_weights(labels, [90, 10, 0, 25], q)
        assert w.sum().item() == pytest.approx(1.0) and (w > 0).all()
        share = [w[labels == c].sum().item() for c in range(4)]
        want = torch.tensor([90.0, 10.0, 0.0, 25.0]) ** q * torch.tensor([1.0, 1.0, 0.0, 1.0])
        assert share == pytest.approx((want / want.sum()).tolist())
        for c in (0, 1, 3):  # within a class every image equally often
            assert torch.allclose(w[labels == c], w[labels == c][0])
    assert torch.allclose(
        real_draw_weights(labels, [90, 10, 0, 25], 1.0), torch.full((125,), 1 / 125, dtype=torch.float64)
    )


def test_real_class_power_draws_the_tail_class_as_asked_for_d_and_g(tmp_path: Path, monkeypatch) -> None:
    """``train.real_class_power``: q = 0 shows D the 9-image tail class as often as the 36-image head,
    q = 0.5 in proportion to the square roots (1 : 2), and G's labels (``data``) follow the reals."""
    g, d = tail_shares(tmp_path, monkeypatch, "q0", "train.real_class_power=0")
    assert g == pytest.approx(0.5, abs=0.04) and d == pytest.approx(0.5, abs=0.04)
    g, d = tail_shares(tmp_path, monkeypatch, "q05", "train.real_class_power=0.5")
    assert g == pytest.approx(1 / 3, abs=0.04) and d == pytest.approx(1 / 3, abs=0.04)


def test_mirror_shows_d_about_half_of_the_real_images_flipped(tmp_path: Path, monkeypatch) -> None:
    """Every real image D sees is a training image or its mirror image; with ``mirror`` about half
    are mirrored, without it none."""
    from augment.data import load_data

    reals: list[torch.Tensor] = []
    real_d = GanLoss.discriminator

    def spy_d(self, G, D, real, y, *args, **kwargs):
        reals.append(real.detach().clone())
        return real_d(self, G, D, real, y, *args, **kwargs)

    monkeypatch.setattr(GanLoss, "discriminator", spy_d)
    share = {}
    for on in (False, True):
        reals.clear()
        cfg = tiny_config(tmp_path, "train.kimg=1", f"train.mirror={str(on).lower()}")
        train(cfg, out=tmp_path / str(on), progress=False)
        images = load_data(cfg.data, cfg.seed).train.as_float()
        plain = {bytes(x.numpy().tobytes()) for x in images}
        mirrored = {bytes(x.flip(2).numpy().tobytes()) for x in images} - plain  # digits that are not symmetric
        seen = torch.cat(reals)
        keys = [bytes(x.numpy().tobytes()) for x in seen]
        assert all(k in plain or k in mirrored for k in keys)
        share[on] = sum(k in mirrored for k in keys) / len(keys)
    assert share[False] == 0.0
    assert share[True] == pytest.approx(0.5, abs=0.06)  # 1024 images drawn: 4 standard deviations is 0.06


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("train.ada_target=1.5", "ada_target"),
        ("train.lecam_weight=-1", "lecam_weight"),
        ("train.bcr_weight=-1", "bcr_weight"),
        ("train.top_k=0", "top_k"),
        ("train.top_k=1.5", "top_k"),
        ("train.mode_seeking=-0.5", "mode_seeking"),
        ("train.gsr_weight=-1", "gsr_weight"),
        ("train.class_noise=-0.1", "class_noise"),
        ("train.fake_contrast=-1", "fake_contrast"),
        ("train.d_recon=-1", "d_recon"),
        ("train.uncond_low=-1", "uncond_low"),
        ("train.ada_kimg=0", "ada_kimg"),
        ("train.apa_target=0", "apa_target"),
        ("train.g_labels=balanced", "g_labels"),
        ("train.real_class_power=-0.1", "real_class_power"),
        ("train.real_class_power=1.5", "real_class_power"),
        ("train.ada_extra=[geometric]", "ada_extra"),  # no ada_target: no p to apply them with
        ("train.ada_extra=[rotate]", "ada_extra"),
    ],
)
def test_bad_switch_values_are_config_errors(tmp_path: Path, override: str, words: str) -> None:
    from augment.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        tiny_config(tmp_path, override)


def test_d_steps_gives_g_one_step_per_d_steps_and_resumes_in_rhythm(tmp_path: Path) -> None:
    """``train.d_steps=2`` (SNGAN's n_dis): D's optimizer steps once per batch of reals, G's every
    second time, also across a resume that stops after an odd number of D steps."""
    two = "train.d_steps=2"
    full, _ = train(tiny_config(tmp_path, "train.kimg=0.256", two), out=tmp_path / "full", progress=False)
    state = checkpoint.load(full / "training-state.pt", checkpoint.STATE_FORMAT)
    d_steps = int(state["opt_D"]["state"][0]["step"])
    assert d_steps == 256 // 32 and int(state["opt_G"]["state"][0]["step"]) == d_steps // 2
    ticks = [json.loads(line) for line in (full / "stats.jsonl").read_text().splitlines()]
    assert all(math.isfinite(t["loss_G"]) and t["loss_G"] != 0.0 for t in ticks)
    part, _ = train(tiny_config(tmp_path, "train.kimg=0.096", two), out=tmp_path / "part", progress=False)
    mid = checkpoint.load(part / "training-state.pt", checkpoint.STATE_FORMAT)
    assert (int(mid["opt_D"]["state"][0]["step"]), int(mid["opt_G"]["state"][0]["step"])) == (3, 1)
    train(tiny_config(tmp_path, "train.kimg=0.256", two), out=part, resume=True, progress=False)
    resumed = checkpoint.load(part / "training-state.pt", checkpoint.STATE_FORMAT)
    for key in ("G", "G_ema", "D"):
        assert all(torch.equal(state[key][k], resumed[key][k]) for k in state[key])
    one, _ = train(tiny_config(tmp_path, "train.kimg=0.256"), out=tmp_path / "one", progress=False)
    base = checkpoint.load(one / "training-state.pt", checkpoint.STATE_FORMAT)
    assert int(base["opt_G"]["state"][0]["step"]) == int(base["opt_D"]["state"][0]["step"]) == 8


def test_info_nce_is_low_when_each_query_finds_its_own_key() -> None:
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(16, 8, generator=g)
    near = keys + 0.05 * torch.randn(16, 8, generator=g)
    shuffled = near[torch.randperm(16, generator=g)]
    assert info_nce(near, keys).item() < 0.5  # temperature 0.2 on 8 random dimensions: neighbours stay close
    assert info_nce(shuffled, keys).item() > 2.0
    # Chance: every key alike, log(16) nats.
    assert info_nce(torch.ones(16, 8), torch.ones(16, 8)).item() == pytest.approx(math.log(16), rel=1e-5)


def test_fake_contrast_trains_ds_instance_head_and_reaches_g() -> None:
    """D's instance term falls as D trains on it alone, and G's step pays it (G's gradient changes)."""
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 8, 1, z_dim=8, width=8)
    D = ProjectionDiscriminator(3, 8, 1, width=8, contrast_dim=16)
    assert ProjectionDiscriminator(3, 8, 1, width=8).instance is None
    with pytest.raises(ValueError, match="contrast_dim"):
        ProjectionDiscriminator(3, 8, 1, width=8)(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), with_instance=True)
    y, z = torch.arange(32) % 3, torch.randn(32, 8)
    loss_fn = GanLoss("hinge", ["translation"], fake_contrast=1.0)

    def term(seed: int) -> float:
        D.eval()  # the same fakes and augmentations each time: the term alone, measured
        with torch.no_grad():
            fake = G(z, y)
            _, term = loss_fn._fake_scores(G, D, fake, z, y, torch.Generator().manual_seed(seed))
        D.train()
        return float(term)

    before = term(1)
    assert before == pytest.approx(math.log(32), abs=0.5)  # an untrained head: near chance among 32
    opt = torch.optim.Adam(D.parameters(), lr=3e-3)
    for step in range(120):
        opt.zero_grad()
        with torch.no_grad():
            fake = G(z, y)
        _, t = loss_fn._fake_scores(G, D, fake, z, y, torch.Generator().manual_seed(100 + step))
        t.backward()
        opt.step()
    after = term(1)
    assert after < 0.6 * before
    # G's step: the term changes G's gradient; off, the loss is the plain one.
    grads = {}
    for w in (0.0, 1.0):
        G.zero_grad()
        GanLoss("hinge", ["translation"], fake_contrast=w).generator(
            G, D, y, z, torch.Generator().manual_seed(3)
        ).backward()
        grads[w] = torch.cat([p.grad.flatten() for p in G.parameters() if p.grad is not None])
    assert not torch.allclose(grads[0.0], grads[1.0])
    with pytest.raises(ValueError, match="fake_contrast"):
        GanLoss(fake_contrast=-1.0)
    with pytest.raises(ValueError, match="not combined"):
        GanLoss(fake_contrast=1.0, aux_weight=1.0)


def test_fake_contrast_trains_resumes_exactly_and_excludes_the_aux_head(tmp_path: Path) -> None:
    from augment.errors import ConfigError

    with pytest.raises(ConfigError, match="fake_contrast and aux_class_weight"):
        tiny_config(tmp_path, "train.fake_contrast=1", "train.aux_class_weight=1")
    on = ("train.fake_contrast=1.0",)
    _, a, _ = trains_and_resumes_exactly(tmp_path, *on)
    assert a["discriminator_kwargs"]["contrast_dim"] == FAKE_CONTRAST_DIM and "instance.0.weight" in a["D"]
    off, _ = train(tiny_config(tmp_path, "train.kimg=0.256"), out=tmp_path / "off", progress=False)
    c = checkpoint.load(off / "training-state.pt", checkpoint.STATE_FORMAT)
    assert "contrast_dim" not in c["discriminator_kwargs"] and not any(k.startswith("instance.") for k in c["D"])
    assert not all(torch.equal(a["G"][k], c["G"][k]) for k in c["G"])


def test_recon_loss_compares_with_the_image_averaged_to_the_reconstructions_size() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = torch.tensor([[2.5, 4.5], [10.5, 12.5]]).view(1, 1, 2, 2)  # 2x2 means of the quadrants
    assert recon_loss(pooled, x).item() == 0.0
    assert recon_loss(pooled + 1.0, x).item() == pytest.approx(1.0)
    assert recon_loss(x, x).item() == 0.0  # at full size: the image itself
    # The image is a target: no gradient reaches it (under R1 it is the tensor R1 differentiates).
    x.requires_grad_(True)
    rec = torch.zeros(1, 1, 2, 2, requires_grad=True)
    recon_loss(rec, x).backward()
    assert x.grad is None and rec.grad is not None


def test_d_recon_decoder_learns_to_redraw_reals_and_only_reals() -> None:
    """FastGAN's self-supervised D: its decoder's error on a fixed batch of reals falls as D trains
    on its loss with the term; the term changes D's gradient; fakes never reach the decoder."""
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 8, 1, z_dim=8, width=8)
    torch.manual_seed(1)
    D = ProjectionDiscriminator(3, 8, 1, width=8, recon=True)
    torch.manual_seed(1)
    plain = ProjectionDiscriminator(3, 8, 1, width=8)
    assert plain.decoder is None
    # The decoder is made last: D's other initial weights are the plain D's (a row differs by the term alone).
    weights = dict(plain.state_dict())
    assert all(torch.equal(v, weights[k]) for k, v in D.state_dict().items() if not k.startswith("decoder."))
    with pytest.raises(ValueError, match="recon=True"):
        ProjectionDiscriminator(3, 8, 1, width=8)(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), with_recon=True)
    logits, rec = D(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), with_recon=True)
    assert logits.shape == (2,) and rec.shape == (2, 1, 8, 8)  # 8x8 images: D's map is 4x4, redrawn at 8x8
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(32, 1, 8, 8, generator=g) > 0.5).float() * 2 - 1
    y, z = torch.arange(32) % 3, torch.randn(32, 8, generator=g)

    def error() -> float:
        with torch.no_grad():
            return recon_loss(D(real, y, with_recon=True)[1], real).item()

    before = error()
    loss_fn = GanLoss("hinge", [], recon_weight=1.0)
    opt = torch.optim.Adam(D.parameters(), lr=3e-3)
    for step in range(150):
        opt.zero_grad()
        loss_fn.discriminator(G, D, real, y, z, torch.Generator().manual_seed(step)).backward()
        opt.step()
    assert error() < 0.5 * before
    grads = {}
    for w in (0.0, 1.0):
        D.zero_grad()
        GanLoss("hinge", ["translation"], recon_weight=w).discriminator(
            G, D, real, y, z, torch.Generator().manual_seed(3)
        ).backward()
        grads[w] = torch.cat([p.grad.flatten() for n, p in D.named_parameters() if not n.startswith("decoder.")])
        assert (D.decoder.up.parametrizations.weight.original.grad is not None) == (w > 0)
    assert not torch.allclose(grads[0.0], grads[1.0])
    # Only D's real pass asks for the reconstruction: on fakes (G's step) the decoder gets no gradient.
    D.zero_grad()
    loss_fn.generator(G, D, y, z, torch.Generator().manual_seed(4)).backward()
    assert D.decoder.up.parametrizations.weight.original.grad is None
    with pytest.raises(ValueError, match="recon_weight"):
        GanLoss(recon_weight=-1.0)
    with pytest.raises(ValueError, match="not combined"):
        GanLoss(recon_weight=1.0, fake_contrast=1.0)


def test_d_recon_trains_resumes_exactly_and_excludes_the_other_heads(tmp_path: Path) -> None:
    from augment.errors import ConfigError

    for other in ("train.fake_contrast=1", "train.aux_class_weight=1"):
        with pytest.raises(ConfigError, match="d_recon each add a head"):
            tiny_config(tmp_path, "train.d_recon=1", other)
    on = ("train.d_recon=1.0",)
    _, a, _ = trains_and_resumes_exactly(tmp_path, *on)
    assert a["discriminator_kwargs"]["recon"] is True and any(k.startswith("decoder.") for k in a["D"])
    off, _ = train(tiny_config(tmp_path, "train.kimg=0.256"), out=tmp_path / "off", progress=False)
    c = checkpoint.load(off / "training-state.pt", checkpoint.STATE_FORMAT)
    assert "recon" not in c["discriminator_kwargs"] and not any(k.startswith("decoder.") for k in c["D"])
    assert not all(torch.equal(a["G"][k], c["G"][k]) for k in c["G"])


def test_uncond_low_generator_draws_its_lowest_stage_without_the_class() -> None:
    """UTLO's G: the low-resolution image of a latent is the same whatever the class; the full
    image is not; a plain G has no low-resolution image and the residual layout is refused."""
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 8, 1, z_dim=8, width=8, uncond_low=True).eval()
    z = torch.randn(4, 8).repeat(3, 1)
    y = torch.arange(3).repeat_interleave(4)
    image, low = G(z, y, with_low=True)
    assert image.shape == (12, 1, 8, 8) and low.shape == (12, 1, 4, 4)  # 8x8 images start at 4x4
    assert torch.equal(low[:4], low[4:8]) and torch.equal(low[:4], low[8:])
    assert not torch.allclose(image[:4], image[4:8], atol=1e-3)
    assert torch.equal(G(z, y), image)  # the low image is a side output: the image is the same
    assert not isinstance(G.norm0, ConditionalBatchNorm2d)  # no class in its normalisation either
    with pytest.raises(ValueError, match="uncond_low"):
        ConditionalGenerator(3, 8, 1, z_dim=8, width=8)(z, y, with_low=True)
    with pytest.raises(ValueError, match="DCGAN"):
        ConditionalGenerator(3, 8, 1, z_dim=8, width=8, residual=True, uncond_low=True)


def test_uncond_low_objective_trains_ds_low_head_and_g_through_its_low_image() -> None:
    """D's unconditional head sees the reals averaged to G's low resolution; the objective is in
    D's loss and G's, and reaches G's low-resolution head only when on."""
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 8, 1, z_dim=8, width=8, uncond_low=True)
    D = ProjectionDiscriminator(3, 8, 1, width=8, uncond_low=True)
    assert D.score_low(torch.zeros(5, 1, 4, 4)).shape == (5,)
    with pytest.raises(ValueError, match="uncond_low"):
        ProjectionDiscriminator(3, 8, 1, width=8).score_low(torch.zeros(5, 1, 4, 4))
    real = torch.arange(64.0).view(1, 1, 8, 8).repeat(2, 1, 1, 1)
    real_low, fake_low = GanLoss("hinge", [], uncond_low=1.0)._low_pair(real, torch.zeros(2, 1, 4, 4), None)
    assert torch.equal(real_low[0, 0, 0], torch.tensor([4.5, 6.5, 8.5, 10.5]))  # 2x2 means of the first rows
    assert torch.equal(fake_low, torch.zeros(2, 1, 4, 4))
    y, z = torch.arange(16) % 3, torch.randn(16, 8)
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    low_head = D.low["fc"].parametrizations.weight.original
    d_loss, g_grad = {}, {}
    for w in (0.0, 1.0):
        loss_fn = GanLoss("hinge", ["translation"], uncond_low=w)
        D.zero_grad()
        d_loss[w] = loss_fn.discriminator(G, D, real, y, z, torch.Generator().manual_seed(1))
        d_loss[w].backward()
        assert (low_head.grad is not None) == (w > 0)
        G.zero_grad()
        loss_fn.generator(G, D, y, z, torch.Generator().manual_seed(2)).backward()
        assert (G.to_low.weight.grad is not None) == (w > 0)
        g_grad[w] = G.fc.weight.grad.clone()
    assert d_loss[1.0].item() != d_loss[0.0].item()
    assert not torch.allclose(g_grad[0.0], g_grad[1.0])
    with pytest.raises(ValueError, match="uncond_low"):
        GanLoss(uncond_low=-1.0)


def test_uncond_low_trains_resumes_exactly_and_hands_on_a_generator(tmp_path: Path) -> None:
    from augment.errors import ConfigError

    with pytest.raises(ConfigError, match="g_arch dcgan"):
        tiny_config(tmp_path, "train.uncond_low=1", "model.g_arch=resnet")
    on = ("train.uncond_low=1.0",)
    full, a, _ = trains_and_resumes_exactly(tmp_path, *on)
    assert a["generator_kwargs"]["uncond_low"] is True and a["discriminator_kwargs"]["uncond_low"] is True
    assert "to_low.weight" in a["G"] and "low.fc.bias" in a["D"]
    G = checkpoint.load_snapshot(full / "network-final.pt").generator()
    images = G(torch.randn(6, G.z_dim), torch.arange(6) % 3)
    assert images.shape == (6, 1, 8, 8) and images.abs().max() <= 1.0


def test_rpgan_scores_each_fake_against_the_real_of_its_index_in_both_steps() -> None:
    """R3GAN's relativistic pairing loss: D pays mean softplus(D(fake_i) - D(real_i)) and G mean
    softplus(D(real_i) - D(fake_i)), each real scored with its own class (G's step may draw other
    classes); without the real batch G's step is refused."""
    G, D = _nets()
    D.eval()
    real, y, z = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.randn(8, 8)
    y_g = torch.tensor([2, 2, 1, 1, 0, 0, 2, 2])  # G's step's own classes
    loss = GanLoss("rpgan", [])
    with torch.no_grad():
        d_real, d_fake = D(real, y), D(G(z, y), y)
        d_fake_g = D(G(z, y_g), y_g)
        d_value = loss.discriminator(G, D, real, y, z)
    assert d_value.item() == pytest.approx(torch.nn.functional.softplus(d_fake - d_real).mean().item(), rel=1e-5)
    g_value = loss.generator(G, D, y_g, z, real=(real, y))
    assert g_value.item() == pytest.approx(torch.nn.functional.softplus(d_real - d_fake_g).mean().item(), rel=1e-5)
    # the pairing is what matters: shuffling the reals against the fakes changes G's loss
    perm = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    assert loss.generator(G, D, y_g, z, real=(real[perm], y[perm])).item() != pytest.approx(g_value.item(), rel=1e-3)
    G.zero_grad()
    g_value.backward()
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="real batch"):
        loss.generator(G, D, y_g, z)
    with pytest.raises(ValueError, match="no pair"):
        GanLoss("rpgan", [], uncond_low=1.0)


def test_r2_is_rs_penalty_on_the_fakes_and_rides_on_rs_interval() -> None:
    """R2 adds ``0.5 * gamma * scale * E|grad_x D(fake)|^2`` to D's loss, on R1's lazy steps only."""
    G, D = _nets()
    D.eval()
    real, y, z = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.randn(8, 8)
    base = GanLoss("rpgan", [], r1_gamma=0.5).discriminator(G, D, real, y, z, r1_scale=4.0)
    with_r2 = GanLoss("rpgan", [], r1_gamma=0.5, r2_gamma=2.0).discriminator(G, D, real, y, z, r1_scale=4.0)
    with torch.no_grad():
        fake = G(z, y)
    x = fake.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, y).sum(), x)
    penalty = 0.5 * 2.0 * 4.0 * grad.square().sum(dim=(1, 2, 3)).mean()
    assert penalty.item() > 1e-4
    assert (with_r2 - base).item() == pytest.approx(penalty.item(), rel=1e-4)
    off_step = GanLoss("rpgan", [], r1_gamma=0.5, r2_gamma=2.0).discriminator(G, D, real, y, z, r1=False)
    assert off_step.item() == pytest.approx(GanLoss("rpgan", []).discriminator(G, D, real, y, z).item(), rel=1e-6)
    D.zero_grad()
    (with_r2 - base).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())
    with pytest.raises(ValueError, match="r2_gamma"):
        GanLoss(r2_gamma=-1)


def test_rpgan_with_r2_trains_resumes_exactly_and_refuses_unpaired_switches(tmp_path: Path) -> None:
    from augment.errors import ConfigError

    for other in ("train.top_k=0.5", "train.uncond_low=1"):
        with pytest.raises(ConfigError, match="rpgan scores each fake against a real"):
            tiny_config(tmp_path, "train.loss=rpgan", other)
    on = ("train.loss=rpgan", "train.r2_gamma=0.1", "train.r1_interval=2", "train.g_labels=uniform")
    on += ("train.mode_seeking=0.2",)
    _, a, _ = trains_and_resumes_exactly(tmp_path, *on)
    off, _ = train(tiny_config(tmp_path, "train.kimg=0.256", *on[2:]), out=tmp_path / "off", progress=False)
    c = checkpoint.load(off / "training-state.pt", checkpoint.STATE_FORMAT)
    assert not all(torch.equal(a["G"][k], c["G"][k]) for k in c["G"])
