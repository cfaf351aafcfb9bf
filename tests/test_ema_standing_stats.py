"""``train.ema_bn: standing``: the EMA generator's BatchNorm statistics recomputed for its own averaged
weights (BigGAN's standing statistics) before every check and snapshot, instead of copied from G."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from augment import checkpoint
from augment.data import load_data
from augment.errors import ConfigError
from augment.models import ConditionalGenerator
from augment.train import loop_kwargs, train
from augment.train_options import flat_options
from augment.train_parts import STANDING_BATCHES, STANDING_SEED, Networks
from conftest import tiny_config


def nets_of(G: ConditionalGenerator) -> Networks:
    """Networks around G whose EMA copy is G itself (D is not used by the standing statistics)."""
    return Networks(G, torch.nn.Identity(), G, {}, {})


def test_standing_stats_are_the_mean_of_the_batch_statistics_of_fixed_latents() -> None:
    torch.manual_seed(0)
    G = ConditionalGenerator(num_classes=3, image_size=8, channels=1, z_dim=8, width=8).eval()
    bn = next(m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d))
    labels = torch.tensor([0] * 20 + [1] * 5 + [2] * 2)
    # What the first BatchNorm sees, batch by batch, for the same latents and classes.
    inputs: list[torch.Tensor] = []
    hook = bn.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach().clone()))
    nets_of(G).standing_stats(labels, batch_size=16)
    hook.remove()
    assert len(inputs) == STANDING_BATCHES and not bn.training and not G.training
    per_batch_mean = torch.stack([x.mean((0, 2, 3)) for x in inputs])
    per_batch_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs])
    assert torch.allclose(bn.running_mean, per_batch_mean.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, per_batch_var.mean(0), rtol=1e-4, atol=1e-6)
    assert bn.momentum == 0.1  # the running average's momentum is given back
    # The fixed seed: a second call gives the same statistics, and a different G different ones.
    first = bn.running_mean.clone()
    nets_of(G).standing_stats(labels, batch_size=16)
    assert torch.equal(bn.running_mean, first)
    with torch.no_grad():
        next(G.parameters()).mul_(2.0)
    nets_of(G).standing_stats(labels, batch_size=16)
    assert not torch.allclose(bn.running_mean, first)


def test_standing_stats_draw_classes_from_the_given_labels() -> None:
    G = ConditionalGenerator(num_classes=3, image_size=8, channels=1, z_dim=8, width=8).eval()
    seen: list[torch.Tensor] = []
    forward = G.forward

    def spy(z, y, *args, **kwargs):
        seen.append(y.clone())
        return forward(z, y, *args, **kwargs)

    G.forward = spy  # type: ignore[method-assign]
    nets_of(G).standing_stats(torch.tensor([2, 2, 2, 0]), batch_size=64, batches=4)
    y = torch.cat(seen)
    assert set(y.tolist()) == {0, 2} and y.eq(2).float().mean().item() == pytest.approx(0.75, abs=0.08)
    g = torch.Generator().manual_seed(STANDING_SEED)
    assert torch.equal(seen[0], torch.tensor([2, 2, 2, 0])[torch.randint(4, (64,), generator=g)])


def test_standing_training_runs_as_copy_and_only_g_emas_statistics_differ(tmp_path: Path) -> None:
    """The standing statistics touch no training random stream: G, D and G_ema's weights equal the
    ``copy`` run's to the last digit; the snapshots' BatchNorm statistics are G_ema's own, not G's."""
    base = ("train.kimg=0.256", "train.ema_kimg=0.5")
    copy_run, _ = train(tiny_config(tmp_path, *base), out=tmp_path / "copy", progress=False)
    standing, _ = train(
        tiny_config(tmp_path, *base, "train.ema_bn=standing"), out=tmp_path / "standing", progress=False
    )
    a = checkpoint.load(copy_run / "training-state.pt", checkpoint.STATE_FORMAT)
    b = checkpoint.load(standing / "training-state.pt", checkpoint.STATE_FORMAT)
    for key in ("G", "D"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    stats = [k for k in a["G_ema"] if k.endswith(("running_mean", "running_var"))]
    assert stats
    weights = [k for k in a["G_ema"] if k not in stats and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(a["G_ema"][k], b["G_ema"][k]) for k in weights)
    # copy: G_ema's statistics are G's; standing: they are not.
    assert all(torch.equal(a["G_ema"][k], a["G"][k]) for k in stats)
    assert not any(torch.equal(b["G_ema"][k], b["G"][k]) for k in stats)
    snap = checkpoint.load_snapshot(standing / checkpoint.FINAL_SNAPSHOT).generator_state
    assert all(torch.equal(snap[k], b["G_ema"][k]) for k in stats)
    # ...and they are what the standing statistics give G_ema's weights, with the train split's classes.
    G = ConditionalGenerator(**a["generator_kwargs"]).eval()
    G.load_state_dict(b["G_ema"])
    cfg = tiny_config(tmp_path, *base, "train.ema_bn=standing")
    nets_of(G).standing_stats(load_data(cfg.data, cfg.seed).train.labels, batch_size=cfg.train.batch_size)
    again = G.state_dict()
    assert all(torch.allclose(again[k], snap[k], rtol=1e-4, atol=1e-5) for k in stats)


def test_ema_bn_reaches_the_loop_and_bad_values_are_config_errors(tmp_path: Path) -> None:
    assert flat_options(loop_kwargs(tiny_config(tmp_path)))["ema_bn"] == "copy"
    assert flat_options(loop_kwargs(tiny_config(tmp_path, "train.ema_bn=standing")))["ema_bn"] == "standing"
    with pytest.raises(ConfigError, match="ema_bn"):
        tiny_config(tmp_path, "train.ema_bn=recompute")
