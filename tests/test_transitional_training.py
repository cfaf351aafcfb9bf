"""Transitional training (Shahbazi et al. 2022): unconditional networks ramped to class-conditional
ones, the scale checked against its formula in both networks, in the loop, its checks, snapshots and
resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from augment import checkpoint
from augment.errors import ConfigError
from augment.models import ConditionalGenerator, ProjectionDiscriminator
from augment.train import loop_kwargs, train
from augment.train_options import LossOptions
from conftest import tiny_config

# Unconditional for 64 images, conditional from 192 on, of 320 (tiny_config's batch: 32).
TRANSITION = ["train.kimg=0.32", "train.cond_transition_kimg=[0.064, 0.192]", "train.snapshot_kimg=0.128"]


def _generator() -> ConditionalGenerator:
    """A generator whose classes differ in every place the class enters (embedding and every CBN)."""
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 8, 1, z_dim=4, width=8).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(("gamma.weight", "beta.weight")):
                p.add_(torch.randn_like(p) * 0.5)
    return G


def test_generator_strength_zero_ignores_the_class_and_one_is_the_conditional_generator() -> None:
    G, z = _generator(), torch.randn(6, 4)
    y0, y2 = torch.zeros(6, dtype=torch.long), torch.full((6,), 2)
    with torch.no_grad():
        conditional = G(z, y0)
        assert not torch.allclose(conditional, G(z, y2))
        G.set_cond_strength(0.0)
        assert torch.equal(G(z, y0), G(z, y2))  # the class is gone
        assert not torch.allclose(G(z, y0), conditional)
        G.set_cond_strength(1.0)
        assert torch.equal(G(z, y0), conditional)  # back to the very same function
    with pytest.raises(ValueError, match="cond_strength must be in"):
        G.set_cond_strength(1.5)


def test_generator_strength_scales_the_embedding_and_the_cbn_deviations() -> None:
    """At strength s the generator equals one whose class embedding is s * e and whose CBN gains and
    shifts are 1 + s (gamma - 1) and s * beta: the formula, on the weights."""
    G, z, y = _generator(), torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    s = 0.3
    ref = _generator()
    with torch.no_grad():
        ref.embed.weight.mul_(s)
        for name, p in ref.named_parameters():
            if name.endswith("gamma.weight"):
                p.copy_(1 + s * (p - 1))
            elif name.endswith("beta.weight"):
                p.mul_(s)
        G.set_cond_strength(s)
        torch.testing.assert_close(G(z, y), ref(z, y))
    # A snapshot's kwargs rebuild the same scale.
    assert ConditionalGenerator(3, 8, 1, z_dim=4, width=8, cond_strength=s).blocks[0].norm.strength == s


def test_discriminator_strength_scales_the_projection_term() -> None:
    torch.manual_seed(1)
    D = ProjectionDiscriminator(3, 8, 1, width=8).eval()
    x, y0, y2 = torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    with torch.no_grad():
        full0, full2 = D(x, y0), D(x, y2)
        D.cond_strength = 0.0
        uncond = D(x, y0)
        assert torch.equal(uncond, D(x, y2))  # psi(h) alone
        D.cond_strength = 0.25
        torch.testing.assert_close(D(x, y0), uncond + 0.25 * (full0 - uncond))
        torch.testing.assert_close(D(x, y2), uncond + 0.25 * (full2 - uncond))


def test_the_ramp_is_zero_then_linear_then_one() -> None:
    opts = LossOptions(cond_transition=(100.0, 300.0))
    got = [opts.cond_strength(n) for n in (0, 99_999, 100_000, 150_000, 200_000, 300_000, 640_000)]
    assert got == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    assert opts.conditional_nimg == 300_000
    assert LossOptions().cond_strength(0) == 1.0 and LossOptions().conditional_nimg == 0  # off: conditional throughout


def _checked_strengths(seen: list[float]):
    """A metric factory that records the scale of every generator it scores."""

    def factory(data, cfg, run_dir, device):
        def metric(G):
            seen.append(G.cond_strength)
            return {"fd_domain": float(len(seen))}  # the first check is the best

        return metric

    return factory


def test_a_run_ramps_checks_only_conditional_generators_and_snapshots_what_it_trained(tmp_path: Path) -> None:
    sets = ["train.kimg=2.4", "train.cond_transition_kimg=[0.5, 1.5]", "train.snapshot_kimg=1", "train.eval_kimg=0.5"]
    cfg = tiny_config(tmp_path, *sets)
    assert loop_kwargs(cfg)["loss"].cond_transition == (0.5, 1.5)
    seen: list[float] = []
    run, snap = train(cfg, out=tmp_path / "run", progress=False, metric_factory=_checked_strengths(seen))
    ticks = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    ramp = [(t["kimg"], t["cond_strength"]) for t in ticks]
    assert all(s == pytest.approx(min(max(k - 0.5, 0.0), 1.0)) for k, s in ramp)
    assert ramp[-1][1] == 1.0 and any(0 < s < 1 for _, s in ramp)
    # Checks start once the networks are conditional: the 0.5 and 1.0 boundaries are not scored.
    checks = [json.loads(line)["kimg"] for line in (run / "metrics-train.jsonl").read_text().splitlines()]
    assert checks == [1.504, 2.016, 2.4] and seen == [1.0, 1.0, 1.0]
    best = checkpoint.load_snapshot(snap)
    assert best.kimg == 1.504 and "cond_strength" not in best.generator_kwargs
    # A snapshot inside the ramp records its scale, and loads a generator that samples at it.
    mid = checkpoint.load_snapshot(run / "network-snapshot-000001.pt")
    assert mid.kimg == 1.024 and mid.generator_kwargs["cond_strength"] == pytest.approx(0.524)
    assert mid.generator().cond_strength == pytest.approx(0.524)


def test_a_resume_inside_the_ramp_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    full, _ = train(tiny_config(tmp_path, *TRANSITION), out=tmp_path / "full", progress=False)
    # The first piece stops inside the ramp: its final snapshot samples at the scale it reached.
    part, snap = train(tiny_config(tmp_path, *TRANSITION, "train.kimg=0.128"), out=tmp_path / "part", progress=False)
    assert checkpoint.load_snapshot(snap).generator_kwargs["cond_strength"] == pytest.approx(0.5)
    train(tiny_config(tmp_path, *TRANSITION), out=part, resume=True, progress=False)
    a = checkpoint.load(full / "training-state.pt", checkpoint.STATE_FORMAT)
    b = checkpoint.load(part / "training-state.pt", checkpoint.STATE_FORMAT)
    for net in ("G", "D", "G_ema"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])
    # ... and the transition changes what is trained.
    plain, _ = train(tiny_config(tmp_path, "train.kimg=0.32"), out=tmp_path / "plain", progress=False)
    c = checkpoint.load(plain / "training-state.pt", checkpoint.STATE_FORMAT)
    assert not all(torch.equal(a["G"][k], c["G"][k]) for k in a["G"])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["train.cond_transition_kimg=[0.3, 0.1]"], "needs start < end"),
        (["train.cond_transition_kimg=[0.2, 0.2]"], "needs start < end"),
        (["train.cond_transition_kimg=[-1, 0.1]"], "cond_transition_kimg"),
        (["train.cond_transition_kimg=[0.1]"], "cond_transition_kimg"),
    ],
)
def test_bad_transitions_are_config_errors(tmp_path: Path, overrides: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        tiny_config(tmp_path, "train.kimg=0.5", *overrides)


def test_a_compiled_transition_is_refused_before_training(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, *TRANSITION, "train.compile=true")
    with pytest.raises(ConfigError, match="train.compile=false"):
        train(cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # no half-made run folder
