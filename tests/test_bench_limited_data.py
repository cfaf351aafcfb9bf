"""benchmarks/limited_data.py: one row per recipe, finite distances, and the cell cache and process
pool give the numbers a plain in-process ``map`` gives."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from augment.config import EvaluateConfig, load_config
from augment.metrics import downstream
from augment.metrics.evaluate import evaluate_run
from augment.metrics.regimes import REGIMES
from augment.train_options import replace_options

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import limited_data  # noqa: E402


@pytest.mark.slow
def test_quick_digits_rows_cache_and_pool_match_plain_map(tmp_path: Path) -> None:
    out_json = tmp_path / "ld.json"
    results = limited_data.main(
        [
            "--quick",
            "--profiles",
            "digits",
            "--recipes",
            "baseline",
            "combined",
            "--combined",
            "narrow,z128",
            "--workers",
            "2",
            "--out",
            str(tmp_path / "runs"),
            "--json",
            str(out_json),
            "--no-append",
        ]
    )
    saved = json.loads(out_json.read_text())
    rows = saved["rows"]
    assert [r["recipe"] for r in rows] == ["baseline", "combined"]
    assert rows[1]["overrides"] == limited_data.RECIPES["narrow"] + limited_data.RECIPES["z128"]
    for r in rows:
        m = r["metrics"]
        assert math.isfinite(m["fd_domain"]) and m["fd_domain"] > 0
        assert math.isfinite(m["fd_domain_floor"]) and m["fd_domain_floor"] >= 0
        assert m["fd_ratio"] == pytest.approx(m["fd_domain"] / m["fd_domain_floor"])
        assert r["kimg"] == pytest.approx(0.512)  # equal budget: the same images shown in every row
        assert m["tail_class"] == "2"  # the 3-class long tail's smallest class
        assert m["verdict_status"] == "not enough seeds for an interval"  # 2 seeds: no verdict, said so
    # The first row computes every cell; the second reuses real, real+classic (2 seeds each) and the
    # 6 classic-selection cells (3 policies, uniform or class-balanced draws on this long tail), and
    # computes the regimes that use the generator x 2 seeds.
    gan_regimes = [r for r in REGIMES if r not in ("real", "real+classic")]
    assert len(gan_regimes) == 5  # real+gan, real+gan+classic, gan-only and the two deployed ways
    assert (rows[0]["cells_cached"], rows[0]["cells_computed"]) == (0, 6 + len(REGIMES) * 2)
    assert (rows[1]["cells_cached"], rows[1]["cells_computed"]) == (6 + 2 * 2, len(gan_regimes) * 2)

    # The same row evaluated again with builtin map, in this process, nothing cached: equal numbers.
    _, ev_sets = limited_data.common_overrides(
        limited_data.parse_args(["--quick", "--profiles", "digits"]), "digits", tmp_path / "runs" / "digits" / "cache"
    )
    plain = evaluate_run(rows[1]["run_dir"], overrides=ev_sets, progress=False, map_fn=map)["downstream"]
    got = rows[1]["raw"]["downstream"]

    def by_cell(down: dict) -> dict:
        return {(c["regime"], c["seed"]): c["balanced_accuracy"] for c in down["cells"]}

    assert by_cell(got) == by_cell(plain)
    assert {k for k, _ in by_cell(got)} == set(REGIMES)
    assert got["selection"]["classic"] == plain["selection"]["classic"]

    # One markdown line per recipe, in order, with the exact columns.
    table = results["digits"]["table"]
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| " + " | ".join(limited_data.COLUMNS) + " |"
    assert [ln.split(" | ")[0].removeprefix("| ") for ln in lines[1:]] == ["baseline", "combined"]
    # The selection column is what the training kept: the lowest fd_domain against train+val it logged.
    col = limited_data.COLUMNS.index("selection fd_domain (train+val)")
    for ln, r in zip(lines[1:], rows, strict=True):
        log = (Path(r["run_dir"]) / "metrics-train.jsonl").read_text().splitlines()
        logged = [json.loads(x) for x in log]
        assert len(logged) >= 2
        best = min(logged, key=lambda x: x["fd_domain"])
        assert best["kimg"] == r["best_kimg"]
        assert ln.split(" | ")[col] == f"{best['fd_domain']:.2f}"

    # Sample uses on the trained baseline, in a second invocation: the GAN-free cells come from the
    # cache file the first one wrote; `soft` trains on soft labels, `fixed` does not.
    again = limited_data.main(
        ["--quick", "--profiles", "digits", "--uses", "fixed", "soft", "--uses-run", rows[0]["run_dir"]]
        + ["--workers", "1", "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "uses.json"), "--no-append"]
    )["digits"]
    assert [u["use"] for u in again["uses"]] == ["fixed", "soft"]
    assert [u["picked"]["soft_labels"] for u in again["uses"]] == [False, True]
    fixed = again["uses"][0]["metrics"]
    assert fixed["delta_real_gan"] == rows[0]["metrics"]["delta_real_gan"]  # the same run, the same numbers
    uses_lines = [ln for ln in again["table"].splitlines() if ln.startswith("| ")]
    assert [ln.split(" | ")[0].removeprefix("| ") for ln in uses_lines[1:]] == ["fixed", "soft"]


def test_cell_map_caches_only_gan_free_cells_per_profile() -> None:
    import functools

    calls = []

    def fake(plan, item):
        calls.append(item)
        return {"item": item}

    fake.__name__ = "run_grid_item"
    plan = downstream.Plan(
        class_names=["a"],
        **{
            k: torch.zeros(1, dtype=torch.uint8)
            for k in (
                "train_images",
                "train_labels",
                "val_images",
                "val_labels",
                "test_images",
                "test_labels",
                "synthetic_images",
                "synthetic_labels",
            )
        },
        regimes=["real", "real+gan"],
        seeds=[0],
    )
    cache: dict = {}
    grid = [("real", 0), ("real+classic", 0), ("real+gan", 0)]
    m = limited_data.CellMap("p", None, cache)
    assert list(m(functools.partial(fake, plan), grid)) == [{"item": it} for it in grid]
    assert list(m(functools.partial(fake, plan), grid)) == [{"item": it} for it in grid]
    assert calls == [*grid, ("real+gan", 0)]  # the GAN cell ran twice, the others once
    # Another profile, or another classic policy in the plan, never hits those entries.
    list(limited_data.CellMap("q", None, cache)(functools.partial(fake, plan), grid[:1]))
    other = downstream.Plan(**{**plan.__dict__, "classic": "crop+flip"})
    list(m(functools.partial(fake, other), grid[:1]))
    assert calls[-2:] == [("real", 0), ("real", 0)]
    # Options of the GAN regimes' batches alone reuse the GAN-free entries.
    gan_side = downstream.Plan(**{**plan.__dict__, "gan_real_sampling": "baseline", "classic_on_synthetic": False})
    list(m(functools.partial(fake, gan_side), grid[:2]))
    assert calls[-2:] == [("real", 0), ("real", 0)]


def test_recipe_overrides_and_inert_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = limited_data.recipe_overrides(["baseline", "combined"], ["ada", "lecam"])
    assert rows == {"baseline": [], "combined": ["train.ada_target=0.6", "train.lecam_weight=0.3"]}
    with pytest.raises(SystemExit, match="--combined"):
        limited_data.recipe_overrides(["combined"], None)
    with pytest.raises(SystemExit, match="unknown recipe"):
        limited_data.recipe_overrides(["nope"], None)

    base = load_config(REPO / "configs" / "digits.yaml")
    z = load_config(REPO / "configs" / "digits.yaml", ["model.z_dim=128"])
    assert limited_data.inert_overrides(base, z, ["model.z_dim=128"]) == []
    # A switch that needs another of its row (ada_extra needs ada_target) is judged within the row.
    extra = limited_data.RECIPES["ada_extra"]
    extra_cfg = load_config(REPO / "configs" / "digits.yaml", extra)
    assert limited_data.inert_overrides(base, extra_cfg, extra) == []
    # A switch the training loop never receives is reported (the benchmark refuses to run it).
    real = limited_data.loop_kwargs
    monkeypatch.setattr(limited_data, "loop_kwargs", lambda cfg: replace_options(real(cfg), z_dim=base.model.z_dim))
    assert limited_data.inert_overrides(base, z, ["model.z_dim=128"]) == ["model.z_dim=128"]
    monkeypatch.setattr(limited_data, "loop_kwargs", lambda cfg: replace_options(real(cfg), ada_extra=()))
    assert limited_data.inert_overrides(base, extra_cfg, extra) == ["train.ada_extra=[geometric, color]"]


def test_screen_tables_the_selection_curves_and_runs_no_downstream(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    res = limited_data.main(
        ["--quick", "--screen", "--profiles", "digits", "--recipes", "baseline", "lr_5e-4", "--eval-kimg", "0.128"]
        + ["--workers", "1", "--out", str(out), "--json", str(tmp_path / "screen.json"), "--no-append"]
    )["digits"]
    rows = res["rows"]
    assert [r["recipe"] for r in rows] == ["baseline", "lr_5e-4"]
    assert rows[1]["overrides"] == limited_data.RECIPES["lr_5e-4"]
    lines = [ln for ln in res["table"].splitlines() if ln.startswith("| ")]
    assert lines[0] == "| " + " | ".join(limited_data.SCREEN_COLUMNS) + " |"
    for ln, r in zip(lines[1:], rows, strict=True):
        logged = [json.loads(x) for x in (Path(r["run_dir"]) / "metrics-train.jsonl").read_text().splitlines()]
        assert [x["kimg"] for x in logged] == pytest.approx([0.128, 0.256, 0.384, 0.512])
        assert r["train_curve"] == logged
        best = min(logged, key=lambda x: x["fd_domain"])
        cells = ln.removeprefix("| ").removesuffix(" |").split(" | ")
        assert cells[4] == f"{best['fd_domain']:.3f} ({best['kimg']:g})"
        assert cells[5] == " ".join(f"{x['fd_domain']:.2f}@{x['kimg']:.3g}" for x in logged)  # 0.128 ... 0.512
        assert "metrics" not in r and not (Path(r["run_dir"]) / "eval").exists()  # nothing scored on test
    # The two rows trained differently (the recipe reached the loop): different curves.
    assert rows[0]["train_curve"] != rows[1]["train_curve"]
    assert not (out / "digits" / "cells-cache.json").exists()
    with pytest.raises(SystemExit, match="--screen"):
        limited_data.parse_args(["--screen", "--uses", "fixed"])


def test_an_ensemble_row_tables_the_mixtures_selection_value_and_its_members() -> None:
    saved = json.loads((REPO / "benchmarks/results/limited_data_longtail_seed1_ensemble3_640kimg.json").read_text())
    row = saved["rows"][0]  # a real row: train.ensemble=3 on the long tail's second draw
    snap = row["raw"]["snapshot"]
    assert snap["member_kimg"] == [180.032, 360.0]
    best_alone = min(c["fd_domain"] for c in row["train_curve"])
    assert snap["train_metrics"]["fd_domain"] < best_alone  # the mixture training handed on scored lower
    cells = limited_data.table_line(row).split(" | ")
    assert cells[limited_data.COLUMNS.index("kimg")] == "620 + 180, 360 / 640"
    selection = limited_data.COLUMNS.index("selection fd_domain (train+val)")
    assert cells[selection] == f"{snap['train_metrics']['fd_domain']:.2f}" == "0.22"
    # A single snapshot's row keeps the best check's value and kimg.
    single = {**row, "raw": {**row["raw"], "snapshot": None}}
    cells = limited_data.table_line(single).split(" | ")
    assert cells[limited_data.COLUMNS.index("kimg")] == "620.032 / 640"
    assert cells[selection] == f"{best_alone:.2f}" == "0.30"


def test_paired_delta_takes_seedwise_differences_of_two_saved_evaluations(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import paired_delta

    results = REPO / "benchmarks" / "results"
    a = results / "limited_data_longtail_seed2_ensemble3_640kimg.json"
    b = results / "limited_data_longtail_seed2_ensemble3_head_alone.json"  # a --uses entry of the same run's head
    rows = {r["regime"]: r for r in paired_delta.main([str(a), f"{b}:fixed"])}
    # The GAN-free cells are the same classifiers on both sides: a difference of exactly 0.
    assert rows["real"]["delta"]["mean"] == 0 and rows["real+classic"]["delta"]["ci_high"] == 0
    mixture = json.loads(a.read_text())["rows"][0]["raw"]["downstream"]["regimes"]["real+gan"]
    alone = json.loads(b.read_text())["uses"][0]["raw"]["downstream"]["regimes"]["real+gan"]
    diffs = [
        x - y for x, y in zip(mixture["balanced_accuracy"]["values"], alone["balanced_accuracy"]["values"], strict=True)
    ]
    got = rows["real+gan"]["delta"]
    assert got["mean"] == pytest.approx(sum(diffs) / 5) and got["ci_low"] < got["mean"] < got["ci_high"]
    assert rows["real+gan"]["seeds"] == mixture["seeds"] and len(mixture["seeds"]) == 5
    out = capsys.readouterr().out
    assert f"| real+gan | {100 * rows['real+gan']['a']:.1f} |" in out
    recall = [
        json.loads(p.read_text())[k][0]["raw"]["downstream"]["regimes"]["real+gan+classic"]["per_class_recall"]
        for p, k in ((a, "rows"), (b, "uses"))
    ]
    got_pc = paired_delta.per_class(str(a), f"{b}:fixed")
    assert got_pc == {c: pytest.approx(recall[0][c] - recall[1][c]) for c in recall[0]} and len(got_pc) == 10
    assert f"Bag {100 * got_pc['Bag']:+.1f}" in out
    with pytest.raises(SystemExit, match="no row or use named 'nope'"):
        paired_delta.main([str(a), f"{b}:nope"])


def test_gan_seed_spread_takes_each_runs_delta_and_the_interval_over_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import gan_seed_spread

    results = REPO / "benchmarks" / "results"
    shipped = results / "limited_data_longtail_ensemble3_640kimg.json"
    reseeded = results / "limited_data_longtail_train_seed1_640kimg.json"  # the same recipe and draw, train.seed=1
    rows = gan_seed_spread.main([str(shipped), str(reseeded)])["regimes"]
    assert "real" not in rows and "real+classic" not in rows
    for side, path in enumerate((shipped, reseeded)):
        metrics = json.loads(path.read_text())["rows"][0]["metrics"]  # limited_data's own paired delta of that run
        assert rows["real+gan+classic"]["per_training"][side] == pytest.approx(
            metrics["delta_real_gan_classic"]["mean"]
        )
        assert rows["real+gan"]["per_training"][side] == pytest.approx(metrics["delta_real_gan"]["mean"])
    r = rows["real+gan+classic"]
    assert r["over_trainings"]["mean"] == pytest.approx(sum(r["per_training"]) / 2)
    assert r["over_trainings"]["ci_low"] < min(r["per_training"]) and r["sd"] == pytest.approx(
        abs(r["per_training"][0] - r["per_training"][1]) / 2**0.5
    )
    out = capsys.readouterr().out
    assert "| real+gan+classic | +2.1, +1.0 |" in out
    assert "Over 2 trainings of the generator, not enough for a verdict (needs 3)" in out
    # Three trainings: a verdict on the interval over them and the seeds, per class too (RESULTS.md quotes these).
    text = gan_seed_spread.main(
        [str(shipped), str(reseeded), str(results / "limited_data_longtail_train_seed2_640kimg.json")]
    )["verdict"]["text"]
    assert (
        "helped: real+gan+classic beat the classic baseline" in text
        and "+1.5 pts (95% CI over trainings and seeds [+0.3, +2.8])" in text
    )
    assert "recall rose against real+classic (interval above 0) for Shirt +8.0, Ankle boot +5.4;" in text
    other_draw = results / "limited_data_longtail_seed1_ensemble3_640kimg.json"  # seed=1: another data split
    with pytest.raises(SystemExit, match="not the same data, split and classifier"):
        gan_seed_spread.main([str(shipped), str(other_draw)])
    with pytest.raises(SystemExit, match="at least two"):
        gan_seed_spread.main([str(shipped)])


def test_the_classifier_budget_defaults_to_each_profiles_config(tmp_path: Path) -> None:
    # The benchmark scores each profile at the budget its config ships unless --steps says otherwise.
    def steps(argv: list[str], profile: str) -> int:
        args = limited_data.parse_args(argv)
        train_sets, _ = limited_data.common_overrides(args, profile, tmp_path / "cache")
        prof = limited_data.PROFILES[profile]
        return load_config(REPO / prof.config, [*prof.overrides, *train_sets]).evaluate.steps

    for profile in ("longtail", "fm100", "digits"):
        shipped = load_config(REPO / limited_data.PROFILES[profile].config).evaluate.steps
        assert steps(["--profiles", profile], profile) == shipped
        assert steps(["--profiles", profile, "--steps", "700"], profile) == 700
    # Not vacuous: the Fashion config ships a budget other than the library's default.
    assert steps(["--profiles", "longtail"], "longtail") != EvaluateConfig.model_fields["steps"].default
