"""Fréchet distance and KID against closed forms and an independent computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg

from augment.errors import ConfigError
from augment.metrics import frechet
from augment.metrics.frechet import distance_report, frechet_distance, kernel_distance


def gaussian(n: int, mean: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(mean), generator=g, dtype=torch.float64) * std + mean


def scipy_fd(a: torch.Tensor, b: torch.Tensor) -> float:
    """The textbook formula with scipy's sqrtm, from the sample moments (independent of torchmetrics)."""
    a, b = a.numpy(), b.numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_identical_gaussians_are_close_to_zero() -> None:
    mean, std = torch.zeros(4, dtype=torch.float64), torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    a, b = gaussian(20000, mean, std, 0), gaussian(20000, mean, std, 1)
    assert abs(frechet_distance(a, b)) < 0.01
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_shifted_gaussians_match_the_closed_form() -> None:
    # N(0, I) vs N(mu, diag(s^2)): ||mu||^2 + sum(1 + s^2 - 2 s).
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    s = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    closed = float((mu**2).sum() + (1 + s**2 - 2 * s).sum())  # 5.25 + 1.25 = 6.5
    a = gaussian(50000, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 2)
    b = gaussian(50000, mu, s, 3)
    assert closed == pytest.approx(6.5)
    assert frechet_distance(a, b) == pytest.approx(closed, rel=0.02)


def test_matches_an_independent_computation_on_correlated_features() -> None:
    g = torch.Generator().manual_seed(4)
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64) @ mix
    b = torch.randn(400, 6, generator=g, dtype=torch.float64) @ mix.T + 0.3
    assert frechet_distance(a, b) == pytest.approx(scipy_fd(a, b), rel=1e-6, abs=1e-8)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two() -> None:
    zero = torch.zeros(8, dtype=torch.float64)
    one = torch.ones(8, dtype=torch.float64)
    a, b, c = gaussian(600, zero, one, 5), gaussian(600, zero, one, 6), gaussian(600, zero + 1.0, one, 7)
    same, _, _ = kernel_distance(a, b, subset_size=200, subsets=50)
    diff, _, _ = kernel_distance(a, c, subset_size=200, subsets=50)
    assert abs(same) < 0.02 < diff
    # Deterministic given the seed; the subset size is capped by the sample counts.
    once = kernel_distance(a, c, subset_size=200, subsets=20, seed=3)
    assert once == kernel_distance(a, c, subset_size=200, subsets=20, seed=3)
    assert kernel_distance(a[:30], c, subset_size=1000, subsets=5)[2] == 30


def test_distance_report_puts_a_floor_beside_every_value_and_warns_on_small_samples() -> None:
    g = torch.Generator().manual_seed(8)
    ref = torch.randn(200, 16, generator=g, dtype=torch.float64)
    ref_labels = torch.arange(200) % 2
    real = torch.randn(20, 16, generator=g, dtype=torch.float64)
    fake = torch.randn(20, 16, generator=g, dtype=torch.float64) + 2.0
    labels = torch.arange(20) % 2
    out = distance_report("fd_domain", fake, labels, real, labels, ref, ref_labels, ["a", "b"])
    assert out["fd_domain"] > out["fd_domain_floor"]
    assert out["kid_domain"] > out["kid_domain_floor"]
    assert (out["n_synthetic"], out["n_real"], out["n_reference"]) == (20, 20, 200)
    assert set(out["per_class"]) == {"a", "b"} and "fd_domain_floor" in out["per_class"]["a"]
    assert any("10 images for 16 feature dimensions" in w for w in out["warnings"])
    with pytest.raises(ValueError, match="same per-class counts"):
        distance_report("fd_domain", fake, labels, real[:10], labels[:10], ref, ref_labels, ["a", "b"])


def test_fid_inception_names_the_file_to_provide(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv(frechet.INCEPTION_ENV, raising=False)
    with pytest.raises(ConfigError, match=frechet.INCEPTION_FILE):
        frechet.inception_weights_path(None)
    with pytest.raises(ConfigError, match="not found"):
        frechet.inception_weights_path(tmp_path / "missing.pth")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setenv(frechet.INCEPTION_ENV, str(weights))
    assert frechet.inception_weights_path(None) == weights


def test_inception_weights_are_checked_before_use(tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a loadable weights file"):
        frechet.check_inception_weights(junk)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ConfigError, match="Conv2d_1a_3x3"):
        frechet.check_inception_weights(wrong)
    state = {k: torch.zeros(1) for k in frechet._INCEPTION_KEYS}
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head, not the FID network
    torch.save(state, wrong)
    with pytest.raises(ConfigError, match="1008, 2048"):
        frechet.check_inception_weights(wrong)
    state["fc.weight"] = torch.zeros(1008, 2048)
    good = tmp_path / "fid.pth"
    torch.save(state, good)
    frechet.check_inception_weights(good)  # the shape of the real file passes
    # The three checked keys alone are not the network: torch-fidelity's strict load names the gap.
    with pytest.raises(ConfigError, match="not the InceptionV3 FID weights .*Missing key"):
        frechet.InceptionFeatures(good)


def test_inception_features_run_the_weights_file_and_match_torchmetrics_fid(random_fid_weights) -> None:
    """The real fid_inception path (file -> torch-fidelity network -> 2048-d features -> distance)
    against torchmetrics' own FrechetInceptionDistance built from the same file on the same images."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (12, 1, 8, 8), generator=g, dtype=torch.uint8)
    b = (torch.randint(0, 128, (12, 1, 8, 8), generator=g) + 64).to(torch.uint8)  # another distribution
    inc = frechet.InceptionFeatures(random_fid_weights)
    saved = torch.load(random_fid_weights, weights_only=True)
    net_state = inc.net.state_dict()
    assert torch.equal(net_state["fc.weight"], saved["fc.weight"])  # the file's weights, not a download
    assert torch.equal(net_state["Mixed_7c.branch_pool.conv.weight"], saved["Mixed_7c.branch_pool.conv.weight"])
    fa, fb = inc(a), inc(b)
    assert fa.shape == (12, 2048) and fa.dtype == torch.float64
    assert fa.std() > 1e-3 and not torch.allclose(fa.mean(0), fb.mean(0))  # real signal, not zeros
    ours = frechet.frechet_distance(fa, fb)

    ref = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(random_fid_weights))
    ref.update(a.repeat(1, 3, 1, 1), real=True)
    ref.update(b.repeat(1, 3, 1, 1), real=False)
    theirs = float(ref.compute())
    assert ours > 0
    assert ours == pytest.approx(theirs, rel=1e-3)


def test_inception_weights_with_pickled_code_are_refused_unread(tmp_path) -> None:
    """A weights file that needs unpickling (any non-tensor object) never reaches torch-fidelity."""
    state = {k: torch.zeros(1) for k in frechet._INCEPTION_KEYS}
    state["fc.weight"] = torch.zeros(1008, 2048)
    state["extra"] = Path("not-a-tensor")  # a pickled Python object: weights_only=True refuses it
    bad = tmp_path / "pickled.pth"
    torch.save(state, bad)
    with pytest.raises(ConfigError, match="not a loadable weights file"):
        frechet.InceptionFeatures(bad)
