"""Spectral normalisation in the generator (``model.g_spectral_norm``): the trained G's layers are
normalised, the EMA generator a run hands on is a plain one holding the normalised weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from augment import checkpoint
from augment.errors import CheckpointError
from augment.models import ConditionalGenerator
from augment.models.generator import normalised_weights, with_spectral_norm
from augment.train import train
from conftest import tiny_config


def _matrix(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1)


def _spectral_layers(G: torch.nn.Module) -> list[str]:
    return [n for n, m in G.named_modules() if parametrize.is_parametrized(m, "weight")]


def test_every_convolution_and_linear_layer_is_normalised_to_spectral_norm_one() -> None:
    torch.manual_seed(0)
    G = with_spectral_norm(ConditionalGenerator(num_classes=3, image_size=28, channels=1, z_dim=16, width=8))
    layers = _spectral_layers(G)
    assert layers == ["fc", "blocks.0.conv", "blocks.1.conv", "to_img"]  # not the class embeddings, not CBN
    G.train()
    with torch.no_grad():  # whatever scale the stored weights take...
        for name in layers:
            G.get_submodule(name).parametrizations.weight.original.mul_(5.0)
    for _ in range(30):  # power iterations, one per access in training mode
        [G.get_submodule(n).weight for n in layers]
    for name in layers:
        module = G.get_submodule(name)
        raw = _matrix(module.parametrizations.weight.original)
        assert torch.linalg.matrix_norm(raw, ord=2) > 1.5
        sigma = torch.linalg.matrix_norm(_matrix(normalised_weights(G, [f"{name}.weight"])[0]), ord=2)
        assert abs(sigma.item() - 1.0) < 0.02  # ...the layer computes with norm one


def test_normalised_weights_leave_the_power_iteration_vectors_alone() -> None:
    torch.manual_seed(0)
    G = with_spectral_norm(ConditionalGenerator(num_classes=2, image_size=8, channels=1, z_dim=8, width=8)).train()
    sn = G.fc.parametrizations.weight[0]
    u, v = sn._u.clone(), sn._v.clone()
    (w,) = normalised_weights(G, ["fc.weight"])
    assert torch.equal(sn._u, u) and torch.equal(sn._v, v) and sn.training
    raw = G.fc.parametrizations.weight.original
    assert torch.allclose(w, raw / torch.dot(u, raw @ v))
    G.fc.weight  # noqa: B018 (a training-mode access: one power-iteration step)
    assert not torch.equal(sn._u, u)


def test_training_hands_on_a_plain_generator_with_the_normalised_weights(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "model.g_spectral_norm=true", "train.ema_kimg=0")
    run, _ = train(cfg, out=tmp_path / "sn", progress=False)
    state = checkpoint.load(run / checkpoint.TRAINING_STATE, checkpoint.STATE_FORMAT)
    assert "fc.parametrizations.weight.original" in state["G"] and "fc.weight" not in state["G"]
    snap = checkpoint.load_snapshot(run / checkpoint.FINAL_SNAPSHOT)
    assert "fc.weight" in snap.generator_state and not any("parametrizations" in k for k in snap.generator_state)
    # ema_kimg 0: the handed-on generator is the trained one, W / sigma at the last step's vectors
    G = snap.generator()
    for name in ("fc", "blocks.0.conv", "to_img"):
        prefix = f"{name}.parametrizations.weight"
        raw, u, v = (state["G"][f"{prefix}.{k}"] for k in ("original", "0._u", "0._v"))
        sigma = torch.dot(u, _matrix(raw) @ v)
        assert torch.allclose(G.get_submodule(name).weight, raw / sigma, atol=1e-6)
        assert abs(torch.linalg.matrix_norm(_matrix(raw / sigma), ord=2).item() - 1.0) < 0.05
    y = torch.tensor([0, 1, 2])
    assert G(torch.randn(3, G.z_dim), y).shape == (3, 1, 8, 8)
    off, _ = train(tiny_config(tmp_path), out=tmp_path / "off", progress=False)
    off_state = checkpoint.load(off / checkpoint.TRAINING_STATE, checkpoint.STATE_FORMAT)
    assert "fc.weight" in off_state["G"] and not any("parametrizations" in k for k in off_state["G"])
    assert not torch.equal(off_state["G_ema"]["fc.weight"], state["G_ema"]["fc.weight"])


def test_resume_under_generator_spectral_norm_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    sn = "model.g_spectral_norm=true"
    full, _ = train(tiny_config(tmp_path, "train.kimg=0.256", sn), out=tmp_path / "full", progress=False)
    part, _ = train(tiny_config(tmp_path, "train.kimg=0.128", sn), out=tmp_path / "part", progress=False)
    with pytest.raises(CheckpointError, match="cannot change model.g_spectral_norm"):
        train(tiny_config(tmp_path, "train.kimg=0.256"), out=part, resume=True, progress=False)
    train(tiny_config(tmp_path, "train.kimg=0.256", sn), out=part, resume=True, progress=False)
    a = checkpoint.load(full / checkpoint.TRAINING_STATE, checkpoint.STATE_FORMAT)
    b = checkpoint.load(part / checkpoint.TRAINING_STATE, checkpoint.STATE_FORMAT)
    for key in ("G", "G_ema", "D"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
