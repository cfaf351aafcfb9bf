"""Models, losses and DiffAugment: shapes for every supported size, conditioning, recipes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.utils._python_dispatch
from torch import nn

from augment.diffaug import DiffAugment, cutout, translation
from augment.losses import GanLoss
from augment.models import ConditionalGenerator, ProjectionDiscriminator, layout
from augment.models.generator import upsample_conv3x3


@pytest.mark.parametrize("size", [8, 16, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_shapes_and_range(size: int, channels: int, residual: bool) -> None:
    G = ConditionalGenerator(4, size, channels, z_dim=8, width=8, residual=residual)
    D = ProjectionDiscriminator(4, size, channels, width=8)
    x = G(torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0]))
    assert x.shape == (5, channels, size, size)
    assert float(x.detach().abs().max()) <= 1.0
    assert D(x, torch.zeros(5, dtype=torch.long)).shape == (5,)


def test_unsupported_size_fails_loudly() -> None:
    assert layout(28) == (7, 2) and layout(64) == (4, 4)
    with pytest.raises(ValueError, match="not supported"):
        layout(9)


@pytest.mark.parametrize("residual", [False, True])
def test_generator_is_conditioned_on_class(residual: bool) -> None:
    torch.manual_seed(0)
    G = ConditionalGenerator(2, 8, 1, z_dim=8, width=8, residual=residual)
    with torch.no_grad():
        G.norm0.beta.weight[1] += 3.0  # make class 1 differ
    G.eval()
    z = torch.randn(1, 8)
    assert not torch.allclose(G(z, torch.tensor([0])), G(z, torch.tensor([1])))


def test_discriminator_projection_uses_label() -> None:
    torch.manual_seed(0)
    D = ProjectionDiscriminator(3, 8, 1, width=8).eval()
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        scores = [float(D(x, torch.tensor([c]))) for c in range(3)]
    assert len(set(scores)) == 3


def test_diffaug_translation_shifts_and_cutout_zeros() -> None:
    x = torch.arange(64.0).view(1, 1, 8, 8) + 1
    g = torch.Generator().manual_seed(0)
    moved = translation(x.repeat(16, 1, 1, 1), g)
    # every output is the input shifted by at most 1 pixel (0.125 * 8) with zero fill
    assert set(moved.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    assert any(not torch.equal(m, x[0]) for m in moved)
    cut = cutout(x.repeat(16, 1, 1, 1), torch.Generator().manual_seed(1))
    zeros = (cut == 0).flatten(1).sum(1)
    assert int(zeros.max()) == 16 and int(zeros.min()) >= 1  # a 4x4 square, clipped at borders


def test_diffaug_is_replayed_by_generator_state() -> None:
    aug = DiffAugment(["color", "translation", "cutout"])
    x = torch.randn(8, 3, 16, 16)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        DiffAugment(["rotate"])


@pytest.mark.parametrize("kind", ["hinge", "nonsaturating"])
def test_losses_values_at_known_logits(kind: str) -> None:
    class ConstD(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = torch.nn.Parameter(torch.tensor(value))

        def forward(self, x, y):
            return self.value.expand(x.shape[0])

    G = ConditionalGenerator(2, 8, 1, z_dim=4, width=8)
    loss = GanLoss(kind, [])
    y = torch.tensor([0, 1])
    d = loss.discriminator(G, ConstD(0.0), torch.zeros(2, 1, 8, 8), y, torch.randn(2, 4))
    g = loss.generator(G, ConstD(0.0), y, torch.randn(2, 4))
    if kind == "hinge":
        assert d.item() == pytest.approx(2.0) and g.item() == pytest.approx(0.0)
    else:
        ln2 = torch.log(torch.tensor(2.0)).item()
        assert d.item() == pytest.approx(2 * ln2) and g.item() == pytest.approx(ln2)
    with pytest.raises(ValueError, match="unknown loss"):
        GanLoss("wgan")


def test_minibatch_stddev_sees_diversity() -> None:
    from augment.models.discriminator import minibatch_stddev

    same = torch.ones(8, 3, 4, 4)
    varied = torch.randn(8, 3, 4, 4)
    assert minibatch_stddev(same).shape == (8, 4, 4, 4)
    assert float(minibatch_stddev(same)[:, 3].max()) < 1e-3
    assert float(minibatch_stddev(varied)[:, 3].min()) > 0.5


def test_r1_penalty_adds_to_discriminator_loss() -> None:
    torch.manual_seed(0)
    G = ConditionalGenerator(2, 8, 1, z_dim=4, width=8)
    D = ProjectionDiscriminator(2, 8, 1, width=8, spectral=False)
    args = (G, D, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), torch.randn(4, 4))
    plain = GanLoss("hinge", [], r1_gamma=0.0).discriminator(*args)
    with_r1 = GanLoss("hinge", [], r1_gamma=10.0).discriminator(*args)
    assert with_r1.detach() > plain.detach()
    with pytest.raises(ValueError, match="r1_gamma"):
        GanLoss("hinge", [], r1_gamma=-1)


def test_r1_on_an_eager_twin_equals_the_same_pass_and_lazy_r1_scales() -> None:
    """The compiled path computes R1 through a separate eager forward (``D_r1``): same value.
    Lazy R1 skips the penalty on off steps and multiplies it by the interval on the others."""
    torch.manual_seed(0)
    G = ConditionalGenerator(2, 8, 1, z_dim=4, width=8)
    D = ProjectionDiscriminator(2, 8, 1, width=8, spectral=False)
    args = (G, D, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), torch.randn(4, 4))
    loss = GanLoss("hinge", ["translation"], r1_gamma=10.0)

    def run(**kw: object) -> float:
        return loss.discriminator(*args, torch.Generator().manual_seed(1), **kw).item()

    plain = (
        GanLoss("hinge", ["translation"], r1_gamma=0.0).discriminator(*args, torch.Generator().manual_seed(1)).item()
    )
    same_pass, twin = run(), run(D_r1=D)
    assert twin == pytest.approx(same_pass, rel=1e-6) and same_pass > plain
    assert run(r1=False) == pytest.approx(plain, rel=1e-6)
    assert run(r1_scale=4.0) - plain == pytest.approx(4 * (same_pass - plain), rel=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 2, 7, 5), (1, 4, 1, 1)])
def test_folded_upsample_conv_is_interpolate_then_conv(shape: tuple[int, int, int, int]) -> None:
    """The generator's transposed-convolution form equals nearest 2x upsampling + 3x3 convolution,
    in value and in both gradients (float64, so any index slip would show far above rounding)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, shape[1], 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    ref = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2), w, padding=1)
    out = upsample_conv3x3(x, w)
    assert out.shape == ref.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    probe = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    gx_ref, gw_ref = torch.autograd.grad((ref * probe).sum(), (x, w))
    gx, gw = torch.autograd.grad((out * probe).sum(), (x, w))
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=0, atol=1e-12)
    # A wrong fold (taps not summed) is caught: the check above is not vacuous.
    assert not torch.allclose(upsample_conv3x3(x, w.flip(2)), ref)


def test_generator_step_with_frozen_discriminator_gives_the_same_generator_gradients() -> None:
    """The training loop runs the G step with D's weights frozen (their gradients are never used):
    G's gradients are the same, and D's weights get none."""
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 8, 1, z_dim=8, width=8)
    D = ProjectionDiscriminator(3, 8, 1, width=8, spectral=False)
    loss = GanLoss("hinge", ["translation", "cutout"])
    y, z = torch.tensor([0, 1, 2, 1]), torch.randn(4, 8)

    def g_grads(frozen: bool) -> list[torch.Tensor]:
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        D.requires_grad_(not frozen)
        loss.generator(G, D, y, z, torch.Generator().manual_seed(1)).backward()
        D.requires_grad_(True)
        assert all((p.grad is None) == frozen for p in D.parameters())
        return [p.grad.clone() for p in G.parameters()]

    for a, b in zip(g_grads(False), g_grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


BATCH = 6  # no weight has 6 output channels: a 4-d tensor of batch 6 is an activation or its gradient


def _layout(t: torch.Tensor) -> str | None:
    """'nchw' / 'nhwc' for an activation whose layouts can be told apart, else None."""
    if t.dim() != 4 or t.shape[0] != BATCH or t.shape[1] == 1 or t.shape[2] * t.shape[3] == 1:
        return None
    if t.is_contiguous():
        return "nchw"
    return "nhwc" if t.is_contiguous(memory_format=torch.channels_last) else "strided"


class _MixedLayouts(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every aten op (forward and backward) whose activation inputs mix NCHW and NHWC."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        layouts = {_layout(a) for a in args if isinstance(a, torch.Tensor)} - {None, "strided"}
        if len(layouts) > 1:
            self.mixed.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("residual", [False, True])
def test_channels_last_networks_keep_every_activation_nhwc_and_compute_the_same(residual: bool) -> None:
    # A mixed-layout elementwise op is ~30x slower on the CPU; before the networks followed their
    # weights' layout, G's body ran NCHW against NHWC weights and D's stddev concat fell back to NCHW.
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 16, 1, z_dim=8, width=8, residual=residual)
    D = ProjectionDiscriminator(3, 16, 1, width=8)
    G_cl, D_cl = (copy.deepcopy(m).to(memory_format=torch.channels_last) for m in (G, D))
    z, y = torch.randn(BATCH, 8), torch.tensor([0, 1, 2, 0, 1, 2])  # fp32: oneDNN's path, as in training
    with _MixedLayouts() as probe:
        x = G_cl(z, y)
        x.retain_grad()
        D_cl(x, y).sum().backward()
    assert probe.mixed == [], probe.mixed
    ref = G(z, y)
    ref.retain_grad()
    D(ref, y).sum().backward()
    torch.testing.assert_close(x, ref)
    torch.testing.assert_close(x.grad, ref.grad)
    for p_cl, p in zip([*G_cl.parameters(), *D_cl.parameters()], [*G.parameters(), *D.parameters()], strict=True):
        torch.testing.assert_close(p_cl.grad, p.grad)


def test_nchw_networks_run_nchw() -> None:
    G, D = ConditionalGenerator(3, 16, 1, z_dim=8, width=8), ProjectionDiscriminator(3, 16, 1, width=8)
    seen: set[str | None] = set()
    with _MixedLayouts() as probe:
        G.register_forward_hook(lambda m, i, o: seen.add(_layout(o)))
        for block in G.blocks:
            block.register_forward_hook(lambda m, i, o: seen.add(_layout(o)))
        y = torch.tensor([0, 1, 2, 0, 1, 2])
        D(G(torch.randn(BATCH, 8), y), y).sum().backward()
    assert probe.mixed == [] and seen == {"nchw", None}


def test_residual_block_is_biggan_with_its_shortcut_upsampled_after_the_1x1_convolution() -> None:
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 16, 1, z_dim=8, width=8, residual=True).double().eval()
    block = G.blocks[0]
    x, y = torch.randn(4, block.norm1.bn.num_features, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    up = nn.functional.interpolate
    h = nn.functional.conv2d(up(torch.relu(block.norm1(x, y)), scale_factor=2.0), block.conv1.weight, padding=1)
    h = block.conv2(torch.relu(block.norm2(h, y)))
    torch.testing.assert_close(block(x, y), h + block.skip(up(x, scale_factor=2.0)))
    # Two convolutions per resolution and a shortcut: more parameters than the DCGAN blocks.
    dcgan = ConditionalGenerator(3, 16, 1, z_dim=8, width=8)
    assert len(G.blocks) == len(dcgan.blocks) == 2
    assert sum(p.numel() for p in G.blocks.parameters()) > sum(p.numel() for p in dcgan.blocks.parameters())
