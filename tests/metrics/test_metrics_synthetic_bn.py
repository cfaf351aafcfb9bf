"""``evaluate.synthetic_bn``: BatchNorm statistics of real and synthetic rows kept apart in the classifiers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from augment.config import EvaluateConfig
from augment.errors import ConfigError
from augment.metrics import classifier_training as training
from augment.metrics import stacked
from augment.metrics.downstream import prepare, run_cell
from augment.metrics.regimes import GAN_REGIMES, REGIMES
from augment.models.classifier import SmallCNN, SplitBatchNorm2d, split_batchnorms
from test_metrics_downstream import ev, make_data, synthetic, untimed


def a_layer(mode: str, channels: int = 3) -> tuple[nn.BatchNorm2d, SplitBatchNorm2d]:
    """A plain BatchNorm with random scale and shift, and a split copy of it."""
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(channels)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0)
        plain.bias.uniform_(-1.0, 1.0)
    net = nn.Sequential(nn.BatchNorm2d(channels))
    net[0].load_state_dict(plain.state_dict())
    (layer,) = split_batchnorms(net, mode)
    return plain, layer


@pytest.mark.parametrize("mode", ["split", "auxiliary"])
def test_real_rows_are_a_plain_batchnorm_of_the_real_rows_and_synthetic_rows_their_own(mode: str) -> None:
    plain, layer = a_layer(mode)
    g = torch.Generator().manual_seed(1)
    real = torch.randn(5, 3, 4, 4, generator=g)
    syn = 3.0 + 0.2 * torch.randn(4, 3, 4, 4, generator=g)  # shifted and narrower: a different domain
    layer.split = 5
    out = layer(torch.cat([real, syn]))
    torch.testing.assert_close(out[:5], plain(real))  # the real rows as if the batch held only them
    # The running statistics (what evaluation uses) followed the real rows only.
    torch.testing.assert_close(layer.running_mean, plain.running_mean)
    torch.testing.assert_close(layer.running_var, plain.running_var)
    assert int(layer.num_batches_tracked) == 1
    # The synthetic rows standardised by their own statistics, then the (shared or auxiliary) scale and shift.
    mean, var = syn.mean(dim=(0, 2, 3), keepdim=True), syn.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    w = (layer.weight if mode == "split" else layer.aux_weight).view(1, -1, 1, 1)
    b = (layer.bias if mode == "split" else layer.aux_bias).view(1, -1, 1, 1)
    torch.testing.assert_close(out[5:], (syn - mean) / torch.sqrt(var + layer.eps) * w + b)
    # A real-only batch (split None or n = all rows) and evaluation are the plain layer, bit for bit.
    for split in (None, 9):
        layer.split = split
        x = torch.randn(9, 3, 4, 4, generator=g)
        assert torch.equal(layer(x), plain(x))
    layer.eval(), plain.eval()
    layer.split = 5
    x = torch.randn(9, 3, 4, 4, generator=g)
    assert torch.equal(layer(x), plain(x))


def test_auxiliary_scale_and_shift_learn_from_the_synthetic_rows_only() -> None:
    _, layer = a_layer("auxiliary")
    layer.split = 4
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    layer(x)[:4].sum().backward()  # a loss on the real rows only
    assert layer.aux_weight.grad is None or not layer.aux_weight.grad.any()
    assert layer.weight.grad.abs().sum() > 0
    layer.zero_grad(set_to_none=True)
    (layer(x)[4:] * torch.randn(4, 3, 4, 4)).sum().backward()  # on the synthetic rows only
    assert layer.weight.grad is None or not layer.weight.grad.any()
    assert layer.aux_weight.grad.abs().sum() > 0 and layer.aux_bias.grad.abs().sum() > 0


def test_conversion_keeps_the_weights_and_adds_only_the_auxiliary_parameters() -> None:
    torch.manual_seed(0)
    net = SmallCNN(num_classes=3, channels=1, image_size=8)
    bn_names = [name for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    split = split_batchnorms(SmallCNN(num_classes=3, channels=1, image_size=8), "split")
    assert len(split) == 3 and all(isinstance(m, SplitBatchNorm2d) for m in split)
    layers = split_batchnorms(net, "auxiliary")
    after = net.state_dict()
    assert {k: v for k, v in after.items() if "aux_" not in k}.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert len(bn_names) == 3
    want = sorted(f"{n}.aux_{p}" for n in bn_names for p in ("weight", "bias"))
    assert sorted(k for k in after if "aux_" in k) == want
    assert all(torch.equal(m.aux_weight, m.weight) and torch.equal(m.aux_bias, m.bias) for m in layers)
    with pytest.raises(ValueError, match="split or auxiliary"):
        split_batchnorms(net, "joint")


@pytest.mark.parametrize("mode", ["split", "auxiliary"])
def test_a_split_training_takes_its_running_statistics_from_the_real_rows(mode: str) -> None:
    """One optimizer step: the first BatchNorm's running mean is momentum x the mean of the first convolution's
    output over the batch's real rows (joint: over the whole batch), with the cell's own initial weights."""
    data = make_data()
    plan = dataclasses.replace(prepare(data, *synthetic(), ev(steps=1, synthetic_share=0.5)), synthetic_bn=mode)
    regime = "real+gan"
    batches = training._Batches(plan, regime, torch.Generator().manual_seed(0))
    x, _ = batches()
    n_real = batches.last_real
    assert n_real == 4 and len(x) == 8
    conv = training.init_classifier(plan, 0).body[0][0]
    with torch.no_grad():
        feats = conv(x)
    for bn, rows in ((mode, slice(0, n_real)), ("joint", slice(None))):
        model, _ = training.train_classifier(dataclasses.replace(plan, synthetic_bn=bn), regime, 0)
        want = 0.1 * feats[rows].mean(dim=(0, 2, 3))
        torch.testing.assert_close(model.body[0][1].running_mean, want, rtol=1e-4, atol=1e-6)


def test_regimes_without_a_real_and_synthetic_mix_are_untouched_and_gan_regimes_change() -> None:
    data = make_data()
    joint = prepare(data, *synthetic(), ev(steps=4, synthetic_share=0.5))
    for mode in ("split", "auxiliary"):
        plan = dataclasses.replace(joint, synthetic_bn=mode)
        for regime in REGIMES:
            a, b = run_cell(joint, regime, 0), run_cell(plan, regime, 0)
            if regime in GAN_REGIMES:
                assert a["synthetic_bn"] == "joint" and b["synthetic_bn"] == mode
                assert training.split_bn_layers(plan, regime, SmallCNN(3, 1, 8)), regime
            else:  # real, real+classic, gan-only: the joint BatchNorm, the same cell
                assert untimed(a) == untimed(b), (mode, regime)
                assert b["synthetic_bn"] is None
    # The scores move: the real rows are no longer normalised with the all-255 synthetic ones.
    split = dataclasses.replace(joint, synthetic_bn="split")
    moved = [run_cell(split, r, 0)["confusion"] != run_cell(joint, r, 0)["confusion"] for r in GAN_REGIMES]
    assert any(moved)


def test_split_cells_train_alone_and_equal_the_lone_cell() -> None:
    data = make_data()
    joint = prepare(data, *synthetic(), ev(steps=3, synthetic_share=0.5))
    plan = dataclasses.replace(joint, synthetic_bn="split")
    assert stacked._stack_key((plan, "real+gan+classic", 0, "test")) is None
    assert stacked._stack_key((plan, "real+classic", 0, "test")) is not None  # the baseline still stacks
    jobs = [(plan, r, s, "test") for r in ("real+classic", "real+gan+classic") for s in (0, 1)]
    got = [untimed(c) for c in stacked.fit_score_many(jobs)]
    # The GAN cells trained alone: the lone cell's numbers to the last digit.
    assert got[2:] == [untimed(run_cell(plan, "real+gan+classic", s)) for s in (0, 1)]
    # The baseline cells stacked as a joint plan's baseline-only stack does.
    want = stacked.fit_score_many([(joint, "real+classic", s, "test") for s in (0, 1)])
    assert got[:2] == [untimed(c) for c in want]


def test_a_bad_mode_is_one_config_error() -> None:
    with pytest.raises(ValueError, match="synthetic_bn"):
        EvaluateConfig(synthetic_bn="separate")
    plan = dataclasses.replace(prepare(make_data(), *synthetic(), ev(steps=1)), synthetic_bn="separate")
    with pytest.raises(ConfigError, match="synthetic_bn must be one of joint, split, auxiliary"):
        run_cell(plan, "real+gan", 0)
