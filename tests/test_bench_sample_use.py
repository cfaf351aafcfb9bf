"""benchmarks/sample_use.py: the dev split, the pool prefixes, the pick, and test cells equal to evaluation's."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from augment import rundir
from augment.checkpoint import find_snapshot, load_snapshot
from augment.config import load_config
from augment.data import load_data
from augment.errors import ConfigError
from augment.metrics import downstream
from augment.metrics.classifier_training import per_class_synthetic_share
from augment.metrics.evaluate import evaluate_run, generate_uint8
from conftest import copy_run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import sample_use  # noqa: E402

USE = ["--dev-per-class", "6", "--pool", "4", "8", "--shares", "0.5", "0.75", "--seeds", "2", "--workers", "1"]


@pytest.fixture(scope="module")
def small_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with a small pool and two cheap regimes as its own evaluation settings."""
    return copy_run(
        tiny_run, tmp_path_factory.mktemp("use") / "run", "evaluate.synthetic_per_class=6", "evaluate.classic=['crop']"
    )


def test_the_dev_split_is_left_out_images_disjoint_from_every_split(small_run: Path) -> None:
    cfg = rundir.run_config(small_run)
    data = load_data(cfg.data, cfg.seed)
    dev = sample_use.dev_split(cfg, data, 6)
    assert torch.bincount(dev.labels, minlength=3).tolist() == [6, 6, 6]
    for split in (data.train, data.val, data.test):
        assert not set(dev.ids) & set(split.ids)
    # The same images in the same order every time (drawn by the run's seed).
    again = sample_use.dev_split(cfg, data, 6)
    assert again.ids == dev.ids and torch.equal(again.images, dev.images)
    # A test split taken from the limited images leaves no ordered remainder: one clear error.
    frac = load_config(small_run / rundir.CONFIG, ["data.split.test_per_class=null", "data.split.test=0.2"])
    with pytest.raises(ConfigError, match="test_per_class"):
        sample_use.dev_split(frac, load_data(frac.data, frac.seed), 6)


def test_pools_are_per_class_prefixes_of_the_evaluation_pool(small_run: Path) -> None:
    snap = load_snapshot(find_snapshot(small_run))
    G = snap.generator("cpu")
    big, labels = generate_uint8(G, [8, 8, 8], 0)
    small, small_labels = generate_uint8(G, [4, 4, 4], 0)
    keep = sample_use.pool_prefix(labels, 4, 3)
    assert int(keep.sum()) == 12
    assert torch.equal(big[keep], small) and torch.equal(labels[keep], small_labels)


def test_the_pick_is_the_best_dev_candidate_and_the_defaults_test_cells_are_evaluations(
    small_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "use.json"
    res = sample_use.main([str(small_run), *USE, "--regime", "real+gan", "--json", str(out)])
    assert json.loads(out.read_text())["pick"] == res["pick"]
    # 2 pools x 2 shares, plus the run's own settings (pool 6, share 0.5).
    assert len(res["candidates"]) == 5 and res["default"] == {
        "pool": 6,
        "latent_std": 1.0,
        "around_real": 1.0,
        "synthetic_share": 0.5,
        "synthetic_sampling": "balance",
        "confidence_threshold": None,
        "soft_labels": False,
        "synthetic_until": 1.0,
        "synthetic_bn": "joint",
        "steps": 20,
    }
    # At one classifier budget the best dev accuracy is the best dev delta (one baseline for all).
    best = max(res["candidates"], key=lambda r: r["dev"]["mean"])
    assert best is max(res["candidates"], key=lambda r: r["dev_accuracy"]["mean"])
    assert res["pick"] == {k: best[k] for k in sample_use.KEYS}
    assert res["sizes"]["dev"] == 18 and res["baseline"]["classic"] == "crop"
    # The table says how the baseline came about: one configured policy here, no val choice.
    assert "(`crop`, the config's only candidate)" in sample_use.render(res)
    chosen = dict(res, baseline=dict(res["baseline"], selection={"classic": {"chosen": "crop"}}))
    assert "(`crop`, chosen on val)" in sample_use.render(chosen)
    # A result written before latent_std, around_real and synthetic_bn existed renders the same table, its pick
    # still marked.
    old = json.loads(json.dumps(res))
    for row in (old["default"], old["pick"], *old["candidates"]):
        del row["latent_std"], row["around_real"], row["synthetic_bn"]
    assert sample_use.render(old) == sample_use.render(res) and "| pick" in sample_use.render(old)
    steps = res["baseline"]["by_steps"]
    balanced = {k: dict(v, classic_sampling="balance") for k, v in steps.items()}
    assert "(`crop`, class-balanced, the config's only candidate)" in sample_use.render(
        dict(res, baseline=dict(res["baseline"], by_steps=balanced))
    )
    mixed = dict(balanced, **{"1": dict(next(iter(steps.values())), classic_sampling="natural")})
    assert "(`crop`, chosen on val)" in sample_use.render(
        dict(res, baseline=dict(res["baseline"], by_steps=mixed, selection={"classic": {"chosen": "crop"}}))
    )
    # The default's test cells are what `augment evaluate` measures cell by cell on the same run.
    ev = evaluate_run(small_run, overrides=["evaluate.threads=1"], progress=False, map_fn=map)
    regimes = ev["downstream"]["regimes"]
    assert res["test"]["default"] == pytest.approx(regimes["real+gan"]["balanced_accuracy"]["values"], abs=1e-12)
    assert res["classifier"]["precision"] == ev["downstream"]["precision"] == "fp32"  # the resolved one, recorded
    assert res["test"]["baseline_values"] == pytest.approx(
        regimes["real+classic"]["balanced_accuracy"]["values"], abs=1e-12
    )
    # Deltas are in points, seed by seed.
    want = 100 * (res["test"]["pick"][0] - res["test"]["baseline_values"][0] + res["test"]["pick"][1]
                  - res["test"]["baseline_values"][1]) / 2  # fmt: skip
    assert res["test"]["pick_vs_baseline"]["mean"] == pytest.approx(want)


def test_a_run_without_a_snapshot_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    shutil.copy(REPO / "configs" / "digits.yaml", tmp_path / "empty" / rundir.CONFIG)
    with pytest.raises(SystemExit) as exc:
        sample_use.main([str(tmp_path / "empty"), *USE])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_a_candidates_sampling_reaches_the_batches(small_run: Path) -> None:
    # The tiny run's classes are balanced, where the two draws are one; a long tail tells them apart.
    tail = ["data.per_class=null", "data.imbalance={ratio: 0.25, max_per_class: 36}"]
    cfg = load_config(small_run / rundir.CONFIG, tail)
    data = load_data(cfg.data, cfg.seed)
    pool, labels = generate_uint8(load_snapshot(find_snapshot(small_run)).generator("cpu"), [8, 8, 8], 0)
    plan = downstream.prepare(data, pool, labels, cfg.evaluate, seed=cfg.seed, map_fn=map)
    args = sample_use.parse_args([str(small_run), *USE, "--sampling", "balance", "uniform"])
    assert args.sampling == ["balance", "uniform"]
    counts = data.train.labels.bincount(minlength=3)
    rare, common = int(counts.argmin()), int(counts.argmax())
    share = {}
    for sampling in args.sampling:
        cand = {"pool": 4, "synthetic_share": 0.5, "synthetic_sampling": sampling}
        cand |= {"confidence_threshold": None, "soft_labels": False, "synthetic_until": 1.0, "steps": plan.steps}
        got = sample_use.candidate_plan(plan, cand, None)
        assert got.synthetic_sampling == sampling and len(got.synthetic_labels) == 12
        share[sampling] = list(per_class_synthetic_share(got).values())
    # `balance` gives the rarest real class the larger synthetic share, `uniform` draws classes alike.
    assert counts[rare] < counts[common]
    assert share["balance"][rare] > share["uniform"][rare]
    assert share["balance"][common] < share["uniform"][common]


def eight_step_plan(run: Path) -> downstream.Plan:
    """The run's downstream plan at 8 classifier steps of 8 images, over a pool of 8 samples per class."""
    cfg = rundir.run_config(run, ["evaluate.steps=8", "evaluate.batch_size=8"])
    data = load_data(cfg.data, cfg.seed)
    pool, labels = generate_uint8(load_snapshot(find_snapshot(run)).generator("cpu"), [8, 8, 8], 0)
    return downstream.prepare(data, pool, labels, cfg.evaluate, seed=cfg.seed, map_fn=map)


def pool4_candidate(**settings: object) -> dict:
    """A candidate on 4 samples per class at share 0.5 and 8 steps, ``settings`` over sample_use's defaults."""
    cand = {"pool": 4, "synthetic_share": 0.5, "synthetic_sampling": "balance", "confidence_threshold": None}
    return cand | {"soft_labels": False, "synthetic_until": 1.0, "steps": 8} | settings


def test_a_candidates_real_data_finish_reaches_the_cells(small_run: Path) -> None:
    args = sample_use.parse_args([str(small_run), *USE, "--until", "1", "0.5"])
    assert args.until == [1.0, 0.5]
    with pytest.raises(SystemExit):
        sample_use.parse_args([str(small_run), *USE, "--until", "0"])
    plan = eight_step_plan(small_run)
    seen = {}
    for until in args.until:
        cand = pool4_candidate(synthetic_until=until)
        got = sample_use.cells(sample_use.candidate_plan(plan, cand, None), "real+gan", map)
        seen[until] = {c["images_synthetic"] for c in got}
        assert "synthetic until 0.5" in sample_use._label(cand) or until == 1.0
    assert seen == {1.0: {8 * 4}, 0.5: {4 * 4}}  # 4 synthetic images a step, in all 8 steps or the first 4


def test_a_candidates_batchnorm_mode_reaches_the_cells(small_run: Path) -> None:
    args = sample_use.parse_args([str(small_run), *USE, "--bn", "joint", "split", "auxiliary"])
    assert args.bn == ["joint", "split", "auxiliary"]
    with pytest.raises(SystemExit):
        sample_use.parse_args([str(small_run), *USE, "--bn", "separate"])
    plan = eight_step_plan(small_run)
    confusions = {}
    for bn in args.bn:
        cand = pool4_candidate(synthetic_bn=bn)
        got = sample_use.cells(sample_use.candidate_plan(plan, cand, None), "real+gan", map)
        assert {c["synthetic_bn"] for c in got} == {bn}
        assert (f"{bn} BatchNorm" in sample_use._label(cand)) == (bn != "joint")
        confusions[bn] = [c["confusion"] for c in got]
        baseline = sample_use.cells(sample_use.candidate_plan(plan, cand, None), "real+classic", map)
        assert {c["synthetic_bn"] for c in baseline} == {None}  # no synthetic rows: the joint BatchNorm
    assert confusions["split"] != confusions["joint"] or confusions["auxiliary"] != confusions["joint"]


def test_a_classifier_budget_pairs_each_candidate_with_the_baseline_at_its_own_steps(small_run: Path) -> None:
    one = ["--dev-per-class", "6", "--pool", "6", "--shares", "0.5", "--seeds", "2", "--workers", "1"]
    res = sample_use.main([str(small_run), *one, "--steps", "40", "--regime", "real+gan"])
    # The run's own budget (20 steps) stays a candidate beside --steps 40, each with its own baseline.
    assert [r["steps"] for r in res["candidates"]] == [40, 20] and res["default"]["steps"] == 20
    by_steps = res["baseline"]["by_steps"]
    assert set(by_steps) == {"20", "40"} and by_steps["40"]["classic"] == "crop"
    for r in res["candidates"]:
        want = 100 * sum(r["dev_values"]) / 2 - by_steps[str(r["steps"])]["dev"]["mean"]
        assert r["dev"]["mean"] == pytest.approx(want)
    assert res["baseline"]["best_steps_on_dev"] == max((20, 40), key=lambda n: by_steps[str(n)]["dev"]["mean"])
    best = max(res["candidates"], key=lambda r: r["dev_accuracy"]["mean"])
    assert res["pick"] == {k: best[k] for k in sample_use.KEYS}
    # Each budget's test cells are what `augment evaluate` measures with evaluate.steps at that budget.
    test = res["test"]
    assert {"20", str(res["pick"]["steps"]), str(res["baseline"]["best_steps_on_dev"])} == set(
        test["baseline_values_by_steps"]
    )
    for n, values in test["baseline_values_by_steps"].items():
        sets = ["evaluate.threads=1", f"evaluate.steps={n}"]
        ev = evaluate_run(small_run, overrides=sets, progress=False, map_fn=map)
        regimes = ev["downstream"]["regimes"]
        assert values == pytest.approx(regimes["real+classic"]["balanced_accuracy"]["values"], abs=1e-12)
        if int(n) == res["pick"]["steps"]:
            assert test["pick"] == pytest.approx(regimes["real+gan"]["balanced_accuracy"]["values"], abs=1e-12)
    # 40 steps move the classifiers: a budget axis that changed nothing would be a silent no-op.
    assert by_steps["20"]["dev"] != by_steps["40"]["dev"]
    with pytest.raises(SystemExit):
        sample_use.parse_args([str(small_run), *one, "--steps", "0"])


def test_a_candidates_latent_std_reaches_the_batches(small_run: Path) -> None:
    args = sample_use.parse_args([str(small_run), *USE, "--latent-std", "1", "1.5"])
    assert args.latent_std == [1.0, 1.5]
    cfg = rundir.run_config(small_run)
    data = load_data(cfg.data, cfg.seed)
    G = load_snapshot(find_snapshot(small_run)).generator("cpu")
    pool, labels = generate_uint8(G, [8, 8, 8], 0)
    wide, wide_labels = generate_uint8(sample_use.LatentStd(G, 1.5), [8, 8, 8], 0)
    assert torch.equal(labels, wide_labels) and not torch.equal(pool, wide)
    # The wrapper scales the very latents `augment generate` draws: image 0 of class 0 at std 1.5 is G(1.5 z).
    from augment.generate import latents, quantize

    z = latents(0, torch.tensor([0]), torch.tensor([0]), G.z_dim)
    with torch.no_grad():
        assert torch.equal(wide[:1], quantize(G(1.5 * z, torch.tensor([0]))))
    plan = downstream.prepare(data, pool, labels, cfg.evaluate, seed=cfg.seed, map_fn=map)
    cand = {"pool": 4, "latent_std": 1.5, "synthetic_share": 0.5, "synthetic_sampling": "balance"}
    cand |= {"confidence_threshold": None, "soft_labels": False, "synthetic_until": 1.0, "steps": plan.steps}
    got = sample_use.candidate_plan(plan, cand, None, {(1.5, 1.0): wide})
    keep = sample_use.pool_prefix(labels, 4, 3)
    assert torch.equal(got.synthetic_images, wide[keep]) and "at latent std 1.5" in sample_use._label(cand)
    same = sample_use.candidate_plan(plan, cand | {"latent_std": 1.0}, None, {(1.5, 1.0): wide})
    assert torch.equal(same.synthetic_images, pool[keep])
    with pytest.raises(ValueError, match="no pool at latent std 1.5, around real 1"):
        sample_use.candidate_plan(plan, cand, None)


def test_around_real_draws_variations_of_the_inverted_training_images(small_run: Path) -> None:
    args = sample_use.parse_args([str(small_run), *USE, "--around-real", "0.5", "1"])
    assert args.around_real == [0.5, 1.0]
    from augment.generate import latents, quantize

    cfg = rundir.run_config(small_run)
    data = load_data(cfg.data, cfg.seed)
    G = load_snapshot(find_snapshot(small_run)).generator("cpu")
    # Inversion finds G's own images again: far closer than G's mean latent, which it starts from.
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    target = quantize(G(latents(5, y, torch.arange(6), G.z_dim), y))
    z, err = sample_use.invert(G, target, y, steps=200)
    start = (G(torch.zeros(6, G.z_dim), y) - (target.float() / 127.5 - 1)).square().mean(dim=(1, 2, 3))
    assert z.shape == (6, G.z_dim) and float(err.mean()) < 0.2 * float(start.mean())

    codes, counts, report = sample_use.inverted_codes(G, data.train, data.num_classes)
    assert counts == data.train.counts(data.num_classes) and codes.shape == (1, len(data.train), G.z_dim)
    assert len(report["mse_per_class"]) == data.num_classes and report["mse"] > 0
    order = torch.sort(data.train.labels, stable=True).indices
    recon = quantize(G(codes[0], data.train.labels[order]))
    # Near sigma 0 an image is its anchor's reconstruction; the anchors cover the class's images.
    near = sample_use.AroundReal(G, codes, counts, 1e-4)
    pool, labels = generate_uint8(near, [40, 40, 40], 0)
    idx, _ = near.anchors(latents(0, labels, torch.cat([torch.arange(40)] * 3), G.z_dim), labels)
    assert (pool.int() - recon[idx].int()).abs().max() <= 1
    assert torch.equal(data.train.labels[order][idx], labels)
    # Over a snapshot ensemble the member is routed as the ensemble routes it, then the member's code is used.
    from augment.models.ensemble import SnapshotEnsemble

    twin = sample_use.AroundReal(SnapshotEnsemble([G, G]), torch.cat([codes, codes]), counts, 1e-4)
    assert (generate_uint8(twin, [40, 40, 40], 0)[0].int() - recon[idx].int()).abs().max() <= 1
    spread = [len(set(idx[labels == c].tolist())) for c in range(3)]
    assert all(s >= min(counts[c], 40) // 2 for c, s in enumerate(spread)), (spread, counts)
    # Between the two: images that are neither the reconstructions nor the prior's, the same on every call.
    mid = sample_use.AroundReal(G, codes, counts, 0.5)
    a, _ = generate_uint8(mid, [8, 8, 8], 0)
    prior, _ = generate_uint8(G, [8, 8, 8], 0)
    assert torch.equal(a, generate_uint8(mid, [8, 8, 8], 0)[0]) and not torch.equal(a, prior)
    plan = downstream.prepare(
        data, prior, labels[:0].new_tensor([0] * 8 + [1] * 8 + [2] * 8), cfg.evaluate, seed=cfg.seed, map_fn=map
    )
    cand = {"pool": 4, "latent_std": 1.0, "around_real": 0.5, "synthetic_share": 0.5, "synthetic_sampling": "balance"}
    cand |= {"confidence_threshold": None, "soft_labels": False, "synthetic_until": 1.0, "steps": plan.steps}
    keep = sample_use.pool_prefix(plan.synthetic_labels, 4, 3)
    got = sample_use.candidate_plan(plan, cand, None, {(1.0, 0.5): a})
    assert torch.equal(got.synthetic_images, a[keep]) and "around real images (sigma 0.5)" in sample_use._label(cand)
    with pytest.raises(ValueError, match="around real 0.5"):
        sample_use.candidate_plan(plan, cand, None, {(1.5, 1.0): a})
    with pytest.raises(ValueError, match="sigma"):
        sample_use.AroundReal(G, codes, counts, 0.0)
    # The grid: per class its first training image, the reconstruction, 2 per sigma, a prior sample.
    cells = sample_use.around_real_grid(G, codes, data.train, [0.5, 0.75], 0)
    assert cells.shape == (3 * 7, *data.train.images.shape[1:]) and cells.dtype == torch.uint8
    assert torch.equal(cells[0], data.train.images[order[0]]) and torch.equal(cells[1], recon[0])
    assert torch.equal(cells[7 + 1], recon[counts[0]]) and not torch.equal(cells[2], cells[4])


def test_mix_draws_the_pools_from_several_trainings_of_the_same_data(small_run: Path, tmp_path: Path, capsys) -> None:
    from augment.train import train
    from conftest import tiny_config

    other, _ = train(tiny_config(tmp_path, "train.seed=1"), out=tmp_path / "other", progress=False)
    one = ["--dev-per-class", "6", "--pool", "6", "--shares", "0.5", "--seeds", "2", "--workers", "1"]
    alone = sample_use.run(sample_use.parse_args([str(small_run), *one, "--regime", "real+gan"]))
    mixed = sample_use.run(sample_use.parse_args([str(small_run), *one, "--regime", "real+gan", "--mix", str(other)]))
    assert mixed["mix"][0]["run_dir"] == str(other) and alone["mix"] == []
    assert "synthetic images from 2 trainings, equal weight" in sample_use.render(mixed)
    assert "the run never saw them" in sample_use.render(alone)
    # The same baseline cells; the candidate trains on another pool.
    assert mixed["test"]["baseline_values"] == alone["test"]["baseline_values"]
    assert mixed["candidates"][0]["dev_values"] != alone["candidates"][0]["dev_values"]
    # A training of other data is refused, one line, exit 2.
    foreign, _ = train(tiny_config(tmp_path, "seed=1"), out=tmp_path / "foreign", progress=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        sample_use.main([str(small_run), *one, "--mix", str(foreign)])
    assert err.value.code == 2 and "trained on data" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (["--latent-std", "0"], "--latent-std values are above 0"),
        (["--latent-std", "1.5", "--thresholds", "0.8"], "go without --thresholds and --soft"),
        (["--latent-std", "2", "--soft", "on"], "go without --thresholds and --soft"),
        (["--around-real", "0"], "--around-real values are in (0, 1]"),
        (["--around-real", "1.5"], "--around-real values are in (0, 1]"),
        (["--around-real", "0.5", "--latent-std", "1.5"], "one at a time"),
        (["--around-real", "0.5", "--thresholds", "0.8"], "go without --thresholds and --soft"),
        (["--grid", "g.png"], "--grid shows --around-real's variations"),
        (["--mix", "other", "--around-real", "0.5"], "it goes without --mix"),
    ],
)
def test_latent_options_refuse_what_they_cannot_measure(bad: list[str], named: str, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        sample_use.parse_args(["run", *USE, *bad])
    assert err.value.code == 2 and named in capsys.readouterr().err
