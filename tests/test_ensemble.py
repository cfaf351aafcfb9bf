"""Snapshot ensembles: the mixture module, the greedy choice, and a trained run that hands one on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from augment import checkpoint
from augment.augmenter import GanAugmenter
from augment.data import load_data
from augment.errors import ConfigError
from augment.generate import write_samples
from augment.metrics.evaluate import best_snapshot_metric, evaluate_run, make_metric_fn
from augment.metrics.result import read_evaluation
from augment.models import ConditionalGenerator, SnapshotEnsemble
from augment.train import train
from augment.train_parts import select_ensemble
from conftest import tiny_config

ENSEMBLE_RUN = [
    "train.kimg=0.512",
    "train.eval_kimg=0.064",
    "train.ensemble=3",
    "evaluate.extractor_steps=5",
    "evaluate.batch_size=16",
    "evaluate.samples_per_class=10",
]


def _members(k: int) -> list[ConditionalGenerator]:
    torch.manual_seed(0)
    return [ConditionalGenerator(3, 8, 1, z_dim=4, width=8).eval() for _ in range(k)]


def test_each_latent_picks_one_member_uniformly_and_keeps_a_standard_normal_latent() -> None:
    ens = SnapshotEnsemble(_members(3))
    z = torch.randn(30000, 4, generator=torch.Generator().manual_seed(1))
    member, z0 = ens.route(z)
    counts = torch.bincount(member, minlength=3).double()
    assert ((counts - 10000).abs() < 400).all(), counts  # 4 standard deviations of a multinomial
    for k in range(3):  # within each member the re-drawn coordinate is N(0, 1) again
        mine = z0[member == k]
        assert abs(float(mine.mean())) < 0.05 and abs(float(mine.std()) - 1) < 0.05
    # The choice is a function of the latent: an image does not depend on its batch.
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with torch.no_grad():
        batched = ens(z[:8], y)
        alone = torch.cat([ens(z[i : i + 1], y[i : i + 1]) for i in range(8)])
        torch.testing.assert_close(batched, alone)
        # ... and is exactly the chosen member's image of the re-drawn latent.
        zz = torch.cat([z0[:8, None], z[:8, 1:]], dim=1)
        for i in range(8):
            ref = ens.members[int(member[i])](zz[i : i + 1], y[i : i + 1])
            torch.testing.assert_close(batched[i : i + 1], ref)


def test_a_one_member_ensemble_is_that_generator() -> None:
    (G,) = _members(1)
    z, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        assert torch.equal(SnapshotEnsemble([G])(z, y), G(z, y))
    with pytest.raises(ValueError, match="at least one"):
        SnapshotEnsemble([])


def test_greedy_selection_adds_the_complementary_candidate_and_stops_when_nothing_helps() -> None:
    # Candidates are 1-d Gaussians' means; the score of a mixture is the distance of its mean to 0.
    means = [0.5, 0.6, -0.4, 0.55, -1.5]

    def score(others: list[int]) -> float:
        picked = [0, *others]
        return abs(sum(means[i] for i in picked) / len(picked))

    chosen, value = select_ensemble(len(means), 4, abs(means[0]), score)
    assert chosen[:2] == [0, 2]  # the one on the other side of 0, not the next best alone
    assert value == pytest.approx(score(chosen[1:])) and value < abs(means[0])
    assert len(chosen) < 4  # stopped: no third candidate lowered the score further
    assert select_ensemble(len(means), 1, abs(means[0]), score) == ([0], abs(means[0]))


def test_ensemble_needs_best_snapshot_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ensemble 3 mixes checked snapshots and needs eval_kimg > 0"):
        tiny_config(tmp_path, "train.ensemble=3")


def _bias(G: torch.nn.Module) -> float:
    """A stand-in metric that a mixture averages exactly: the mean output bias over the members."""
    members = G.members if isinstance(G, SnapshotEnsemble) else [G]
    return sum(float(m.to_img.bias.mean()) for m in members) / len(members)


def _distance_to(target: float | None):
    """A metric factory: ``|_bias - target|`` (``target`` None: ``_bias`` itself)."""

    def factory(data, cfg, run_dir, device):
        return lambda G: {"fd_domain": _bias(G) if target is None else abs(_bias(G) - target)}

    return factory


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float], float]:
    """A run whose metric only a mixture satisfies: the distance to the midpoint of two checks' values
    (training is deterministic and never reads the metric: a first run records every check's value,
    the second, identical, is scored against that midpoint)."""
    tmp = tmp_path_factory.mktemp("ensemble")
    cfg = tiny_config(tmp, *ENSEMBLE_RUN)
    first, _ = train(cfg, out=tmp / "values", progress=False, metric_factory=_distance_to(None))
    values = [json.loads(line)["fd_domain"] for line in (first / "metrics-train.jsonl").read_text().splitlines()]
    lo, hi = sorted(values)[3:5]  # two neighbours: every single check is at least half their gap away
    run_dir, _ = train(cfg, out=tmp / "run", progress=False, metric_factory=_distance_to((lo + hi) / 2))
    return run_dir, values, (lo + hi) / 2


def test_a_trained_run_hands_on_the_mixture_that_its_checks_scored_best(ensemble_run, tmp_path: Path) -> None:
    run_dir, values, target = ensemble_run
    checks = [json.loads(line) for line in (run_dir / "metrics-train.jsonl").read_text().splitlines()]
    assert len(checks) == 8 and len(set(values)) == 8
    snap = checkpoint.load_snapshot(run_dir / checkpoint.BEST_SNAPSHOT)
    best = min(checks, key=lambda c: c["fd_domain"])
    assert snap.kimg == best["kimg"] and snap.metrics["fd_domain_single"] == best["fd_domain"]
    # The head's neighbour is the one member that brings the mixture onto the target.
    neighbour = sorted(checks, key=lambda c: c["fd_domain"])[1]
    assert snap.member_kimg == [neighbour["kimg"]] and len(snap.members) == 1
    assert snap.metrics["fd_domain"] < 1e-6 < best["fd_domain"]
    G = snap.generator()
    assert isinstance(G, SnapshotEnsemble) and len(G.members) == 2
    # The recorded value is the loaded mixture's; the final snapshot stays one generator.
    assert snap.metrics["fd_domain"] == pytest.approx(abs(_bias(G) - target), abs=1e-9)
    assert checkpoint.load_snapshot(run_dir / checkpoint.FINAL_SNAPSHOT).members == []


@pytest.fixture(scope="module")
def fd_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ensemble run chosen by the real train+val ``fd_domain``."""
    tmp = tmp_path_factory.mktemp("fd")
    run_dir, _ = train(
        tiny_config(tmp, *ENSEMBLE_RUN), out=tmp / "fd", progress=False, metric_factory=best_snapshot_metric
    )
    return run_dir


def test_fd_domain_of_a_trained_ensemble_is_the_loaded_mixtures(fd_run: Path, tmp_path: Path) -> None:
    run_dir = fd_run
    cfg = tiny_config(tmp_path, *ENSEMBLE_RUN)
    snap = checkpoint.load_snapshot(run_dir / checkpoint.BEST_SNAPSHOT)
    fn = make_metric_fn(load_data(cfg.data, cfg.seed), cfg, cache_dir=run_dir / "cache")
    assert fn(snap.generator())["fd_domain"] == pytest.approx(snap.metrics["fd_domain"], rel=1e-6)


def test_the_augmenter_and_generation_sample_the_mixture(ensemble_run, tmp_path: Path) -> None:
    ensemble_run = ensemble_run[0]
    snap = checkpoint.load_snapshot(ensemble_run / checkpoint.BEST_SNAPSHOT)
    aug = GanAugmenter.from_checkpoint(ensemble_run, p=1.0)
    img = aug.image(1, 3)
    assert img.shape == (1, 8, 8) and img.dtype == torch.uint8
    assert torch.equal(img, GanAugmenter.from_checkpoint(ensemble_run, p=1.0).image(1, 3))
    out = write_samples(snap, tmp_path / "gen", [4, 4, 4], progress=False)
    assert out.exists() and len(list((tmp_path / "gen").rglob("*.png"))) >= 12
    # Dropping the members gives the head alone: other images for some indices.
    head = GanAugmenter.from_snapshot(checkpoint.Snapshot(**{**vars(snap), "members": [], "member_kimg": []}), p=1.0)
    assert any(not torch.equal(aug.image(c, i), head.image(c, i)) for c in range(3) for i in range(8))


def test_a_resumed_ensemble_run_hands_on_the_same_mixture(ensemble_run, tmp_path: Path) -> None:
    run_dir, _, target = ensemble_run
    metric = _distance_to(target)
    cfg = tiny_config(tmp_path, *[s for s in ENSEMBLE_RUN if not s.startswith("train.kimg")], "train.kimg=0.256")
    part, _ = train(cfg, out=tmp_path / "part", progress=False, metric_factory=metric)
    assert len(checkpoint.load(part / checkpoint.TRAINING_STATE)["ensemble_pool"]) == 4
    train(tiny_config(tmp_path, *ENSEMBLE_RUN), out=part, resume=True, progress=False, metric_factory=metric)
    a = checkpoint.load_snapshot(run_dir / checkpoint.BEST_SNAPSHOT)
    b = checkpoint.load_snapshot(part / checkpoint.BEST_SNAPSHOT)
    assert a.members and a.member_kimg == b.member_kimg and a.metrics == b.metrics
    for sa, sb in zip([a.generator_state, *a.members], [b.generator_state, *b.members], strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_evaluation_names_the_mixture_it_evaluated(ensemble_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(ensemble_run[0], run_dir)
    fast = ["evaluate.steps=8", "evaluate.seeds=2", "evaluate.classic=[crop]", "evaluate.extractor_steps=5"]
    result = evaluate_run(run_dir, overrides=fast, progress=False)
    snap = checkpoint.load_snapshot(run_dir / checkpoint.BEST_SNAPSHOT)
    assert result["snapshot"]["member_kimg"] == snap.member_kimg and snap.member_kimg
    kimg = snap.member_kimg[0]
    assert f"(a mixture with the checks at {kimg:.1f} kimg)" in (run_dir / "eval" / "report.md").read_text()
    assert read_evaluation(run_dir)["snapshot"]["member_kimg"] == snap.member_kimg


def test_selection_noise_rescores_snapshots_and_mixtures_under_other_latents(ensemble_run) -> None:
    from benchmarks import selection_noise

    run_dir = ensemble_run[0]
    out = selection_noise.main(
        [
            str(run_dir),
            "network-final.pt",
            "--mix",
            "network-final.pt,network-best.pt",
            "--seeds",
            "3",
            "--oversample",
            "1",
            "2",
        ]
    )
    assert set(out) == {1, 2}
    for values in out.values():
        assert set(values) == {"network-final.pt", "network-final.pt+network-best.pt"}
        assert all(len(v) == 3 and len(set(v)) == 3 and min(v) > 0 for v in values.values())  # each draw differs
    assert out[1]["network-final.pt"] != out[2]["network-final.pt"]
    assert selection_noise.table(out[1]).splitlines()[-1].startswith("| mean (sd) | ")


def test_a_resumed_stop_that_keeps_the_best_check_alone_replaces_the_earlier_mixture(
    ensemble_run, tmp_path: Path
) -> None:
    values = ensemble_run[1][:4]  # the checks a 0.256-kimg stop makes (training never reads the metric)
    lo, hi = sorted(values)[1:3]
    cfg = tiny_config(tmp_path, *[s for s in ENSEMBLE_RUN if not s.startswith("train.kimg")], "train.kimg=0.256")
    part, _ = train(cfg, out=tmp_path / "part", progress=False, metric_factory=_distance_to((lo + hi) / 2))
    first = checkpoint.load_snapshot(part / checkpoint.BEST_SNAPSHOT)
    assert len(first.members) == 1 and first.metrics["fd_domain"] < 1e-6  # the first stop hands on a mixture

    # The resumed stop scores every new check and every mixture worse than the best check alone.
    def worse(data, cfg, run_dir, device):
        return lambda G: {"fd_domain": 1e9}

    train(tiny_config(tmp_path, *ENSEMBLE_RUN), out=part, resume=True, progress=False, metric_factory=worse)
    snap = checkpoint.load_snapshot(part / checkpoint.BEST_SNAPSHOT)
    assert snap.members == [] and snap.member_kimg == []
    assert snap.kimg == first.kimg and all(
        torch.equal(snap.generator_state[k], first.generator_state[k]) for k in first.generator_state
    )
    assert snap.metrics["fd_domain"] == first.metrics["fd_domain_single"] and "fd_domain_single" not in snap.metrics
    assert not isinstance(snap.generator(), SnapshotEnsemble)


def test_ensemble_size_reselects_the_trained_mixture_from_the_pool(ensemble_run, tmp_path: Path) -> None:
    from benchmarks import ensemble_size

    run_dir, _, target = ensemble_run
    trained = checkpoint.load_snapshot(run_dir / checkpoint.BEST_SNAPSHOT)
    metric = _distance_to(target)(None, None, None, None)
    rows = ensemble_size.reselect(run_dir, [1, 3], tmp_path / "sizes", metric_fn=metric)
    # k = the run's own size: the same greedy on the same pool and metric gives the mixture training handed on.
    again = checkpoint.load_snapshot(tmp_path / "sizes" / "ensemble_3" / checkpoint.BEST_SNAPSHOT)
    assert trained.members and again.kimg == trained.kimg and again.member_kimg == trained.member_kimg
    assert again.metrics == trained.metrics and rows[1]["kimg"] == [trained.kimg, *trained.member_kimg]
    # k = 1: the best check alone, recorded with its own value.
    alone = checkpoint.load_snapshot(tmp_path / "sizes" / "ensemble_1" / checkpoint.BEST_SNAPSHOT)
    assert alone.members == [] and alone.kimg == trained.kimg and "fd_domain_single" not in alone.metrics
    assert alone.metrics["fd_domain"] == rows[0]["fd_domain"] == trained.metrics["fd_domain_single"]
    assert all(torch.equal(alone.generator_state[k], trained.generator_state[k]) for k in trained.generator_state)
    # Each size is a run `augment evaluate` reads: config, split and snapshot, no training state.
    copied = {p.name for p in (tmp_path / "sizes" / "ensemble_1").iterdir()}
    assert {"config.yaml", "network-best.pt"} <= copied and "training-state.pt" not in copied


def test_ensemble_size_scores_with_the_runs_own_fd_domain(fd_run: Path, tmp_path: Path) -> None:
    from benchmarks import ensemble_size

    trained = checkpoint.load_snapshot(fd_run / checkpoint.BEST_SNAPSHOT)
    rows = ensemble_size.main([str(fd_run), "--k", "3", "--out", str(tmp_path / "sizes")])
    again = checkpoint.load_snapshot(tmp_path / "sizes" / "ensemble_3" / checkpoint.BEST_SNAPSHOT)
    assert again.member_kimg == trained.member_kimg and rows[0]["kimg"] == [trained.kimg, *trained.member_kimg]
    assert again.metrics["fd_domain"] == pytest.approx(trained.metrics["fd_domain"], rel=1e-6)


def test_ensemble_size_needs_a_run_that_kept_a_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import ensemble_size

    run_dir, _ = train(tiny_config(tmp_path, "train.kimg=0.064"), out=tmp_path / "plain", progress=False)
    with pytest.raises(SystemExit) as exc:
        ensemble_size.main([str(run_dir), "--k", "2", "--out", str(tmp_path / "sizes")])
    assert exc.value.code == 2
    assert "kept no ensemble pool: train it with train.ensemble > 1" in capsys.readouterr().err
