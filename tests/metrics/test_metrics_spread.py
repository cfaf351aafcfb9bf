"""`augment spread`: the verdict over several trainings of one recipe, read from real evaluated runs."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from conftest import REPO, tiny_config

EVAL = [
    "evaluate.seeds=3",
    "evaluate.regimes=['real','real+classic','real+gan']",
    "evaluate.extractor_steps=30",
    "evaluate.synthetic_per_class=20",
    "evaluate.classic=['crop']",
    "evaluate.steps=10",
    "evaluate.batch_size=32",
]


@pytest.fixture(scope="module")
def trainings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three tiny runs of one recipe on one dataset, trained with train.seed 0, 1, 2, each evaluated."""
    from augment.metrics.evaluate import evaluate_run
    from augment.train import train

    tmp = tmp_path_factory.mktemp("spread")
    runs = []
    for seed in range(3):
        run_dir, _ = train(tiny_config(tmp, *EVAL, f"train.seed={seed}"), out=tmp / f"run{seed}", progress=False)
        evaluate_run(run_dir, progress=False)
        runs.append(run_dir)
    return runs


def augment(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def downstream(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval" / "metrics.json").read_text())["downstream"]


def t_interval(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    return mean - half, mean + half


def crossed_interval(cells: list[list[float]]) -> tuple[float, float]:
    """Trainings x seeds as crossed random effects, written out from the mean squares (loops, not numpy)."""
    t, s = len(cells), len(cells[0])
    grand = sum(map(sum, cells)) / (t * s)
    rows = [sum(r) / s for r in cells]
    cols = [sum(cells[i][j] for i in range(t)) / t for j in range(s)]
    ms_t = s * sum((r - grand) ** 2 for r in rows) / (t - 1)
    ms_s = t * sum((c - grand) ** 2 for c in cols) / (s - 1)
    ms_e = sum((cells[i][j] - rows[i] - cols[j] + grand) ** 2 for i in range(t) for j in range(s))
    ms_e /= (t - 1) * (s - 1)
    if ms_s > ms_e:
        var = (ms_t + ms_s - ms_e) / (t * s)
        df = (ms_t + ms_s - ms_e) ** 2 / (ms_t**2 / (t - 1) + ms_s**2 / (s - 1) + ms_e**2 / ((t - 1) * (s - 1)))
    else:
        var, df = ms_t / (t * s), t - 1
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    return grand - half, grand + half


def test_spread_takes_each_trainings_paired_delta_and_the_interval_over_trainings(
    trainings: list[Path], tmp_path: Path
) -> None:
    res = augment("spread", *map(str, trainings), "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png"))
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["train_seeds"] == [0, 1, 2] and out["trainings"] == [str(r) for r in trainings]
    assert set(out["regimes"]) == {"real+gan"}  # the GAN-free regimes are the baselines, not rows
    row = out["regimes"]["real+gan"]
    each = [downstream(r)["deltas"]["real+gan"]["balanced_accuracy"]["mean"] for r in trainings]
    assert row["per_training"] == pytest.approx(each)
    assert len(set(each)) > 1  # train.seed gave three different generators, not one run three times
    # The interval counts the trainings and the classifier seeds every training shares with the baseline.
    cells = [downstream(r)["deltas"]["real+gan"]["balanced_accuracy"]["values"] for r in trainings]
    lo, hi = crossed_interval(cells)
    assert row["over_trainings"]["mean"] == pytest.approx(sum(each) / 3)
    assert (row["over_trainings"]["ci_low"], row["over_trainings"]["ci_high"]) == pytest.approx((lo, hi))
    assert hi - lo >= t_interval(each)[1] - t_interval(each)[0] - 1e-12  # seed noise dominates here
    vs_real = [downstream(r)["deltas_vs_real"]["real+gan"]["balanced_accuracy"]["mean"] for r in trainings]
    assert row["vs_real"]["mean"] == pytest.approx(sum(vs_real) / 3)
    real_cells = [downstream(r)["deltas_vs_real"]["real+gan"]["balanced_accuracy"]["values"] for r in trainings]
    recall = [downstream(r)["deltas"]["real+gan"]["per_class_recall"]["1"]["mean"] for r in trainings]
    assert row["per_class_recall"]["1"]["mean"] == pytest.approx(sum(recall) / 3)
    # The verdict's rule on the interval over trainings: above 0 against real+classic and real-only.
    rule = "helped" if lo > 0 and crossed_interval(real_cells)[0] > 0 else None
    assert out["verdict"]["status"] == rule or (rule is None and out["verdict"]["status"] != "helped")
    assert res.stdout.splitlines()[2].startswith("| real+gan | " + ", ".join(f"{100 * v:+.1f}" for v in each))
    assert "Over 3 trainings of the generator" in res.stdout
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spread_of_two_trainings_gives_the_numbers_and_no_verdict(trainings: list[Path]) -> None:
    from augment.metrics.spread import spread_runs

    # Each run's report says what its own intervals hold and where the one over trainings comes from.
    assert (
        "not the GAN training's own: `augment run CONFIG --trainings 3`"
        in (trainings[0] / "eval" / "report.md").read_text()
    )

    out = spread_runs(trainings[:2])
    assert out["verdict"]["status"] == "too few trainings"
    from augment.metrics.spread import spread_figure

    ax = spread_figure(out).axes[0]  # a dot per training, then the mean with its interval, per regime
    dots = [line for line in ax.lines if line.get_marker() == "."]
    assert [sorted(d.get_xdata()) for d in dots] == [
        sorted(100 * v for v in out["regimes"]["real+gan"]["per_training"])
    ]
    assert ax.get_xlabel().startswith("Δ balanced accuracy vs real+classic") and "too few trainings" in ax.get_title()
    assert out["verdict"]["text"].startswith("Over 2 trainings of the generator, not enough for a verdict (needs 3)")


def test_helped_needs_the_interval_over_trainings_above_zero_against_real_only_too(trainings: list[Path]) -> None:
    from augment.metrics.spread import spread

    def shifted(down: dict, vs_classic: float | list[float], vs_real: float) -> dict:
        """Deltas set by hand: one value per classifier seed (the same on every seed when a number)."""
        down = copy.deepcopy(down)
        n = len(down["seeds"])
        for block, value in ((down["deltas"], vs_classic), (down["deltas_vs_real"], vs_real)):
            values = [value] * n if isinstance(value, float) else value
            block["real+gan"]["balanced_accuracy"].update(mean=sum(values) / n, values=values)
        return down

    downs = [downstream(r) for r in trainings]
    names = ["a", "b", "c"]
    clear = spread([shifted(d, 0.02 + 0.001 * i, 0.03 + 0.001 * i) for i, d in enumerate(downs)], names)
    assert (
        clear["verdict"]["status"] == "helped"
        and "+2.1 pts (95% CI over trainings and seeds" in clear["verdict"]["text"]
    )
    weak = spread([shifted(d, 0.02 + 0.001 * i, [0.01, -0.01, 0.0][i]) for i, d in enumerate(downs)], names)
    assert weak["verdict"]["status"] == "no measurable benefit"
    assert "did not beat real-only training over trainings" in weak["verdict"]["text"]
    noisy = spread([shifted(d, v, 0.03) for d, v in zip(downs, [0.03, -0.01, 0.02], strict=True)], names)
    assert noisy["verdict"]["status"] == "no measurable benefit"  # each "helped" or not, the trainings disagree
    # Three trainings that agree (+2.0, +2.1, +2.2) on seeds that do not: seed 0 is 6 pts below seed 2 in
    # every training, the baseline's noise they all share. The spread of the per-training means alone
    # would call it "helped"; counted with the seeds it is no evidence either way.
    seedy = [[m - 0.06, m, m + 0.06] for m in (0.02, 0.021, 0.022)]
    assert t_interval([sum(v) / 3 for v in seedy])[0] > 0
    shared = spread([shifted(d, v, 0.03) for d, v in zip(downs, seedy, strict=True)], names)
    assert shared["verdict"]["status"] == "no measurable benefit"
    assert shared["regimes"]["real+gan"]["over_trainings"]["ci_low"] < 0


def test_spread_refuses_runs_that_are_not_one_recipe_trained_again(trainings: list[Path], tmp_path: Path) -> None:
    from augment.errors import AugmentError
    from augment.metrics.spread import spread

    def refused(*args: str) -> str:
        res = augment("spread", *args)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        return res.stderr

    a, b, _ = map(str, trainings)
    assert "the same training seed (0)" in refused(a, a)
    assert "at least two" in refused(a)
    bare = tmp_path / "bare"
    shutil.copytree(trainings[1], bare, ignore=shutil.ignore_patterns("eval"))
    assert f"{bare}/metrics.json: no evaluation here (run `augment evaluate RUN_DIR` first)" in refused(a, str(bare))
    other = tmp_path / "other"
    shutil.copytree(trainings[1], other)
    doc = json.loads((other / "eval" / "metrics.json").read_text())
    doc["config"]["model"]["g_channels"] = 16
    (other / "eval" / "metrics.json").write_text(json.dumps(doc))
    assert "not the recipe of" in refused(a, str(other)) and "model.g_channels (16 vs 8)" in refused(a, str(other))
    assert "cannot write" in refused(a, b, "--json", str(tmp_path / "missing" / "s.json"))
    # Another split or classifier budget shows in the cells that do not depend on the generator.
    downs = [downstream(r) for r in trainings[:2]]
    downs[1]["regimes"]["real+classic"]["balanced_accuracy"]["values"][0] += 0.01
    with pytest.raises(AugmentError, match="its real\\+classic cells differ"):
        spread(downs, ["a", "b"])
    downs = [downstream(r) for r in trainings[:2]]
    # An evaluation whose val chose another baseline (other settings or code) is not comparable.
    downs[1]["classic_sampling"] = "natural" if downs[0].get("classic_sampling") == "balance" else "balance"
    with pytest.raises(AugmentError, match="its classic baseline \\(crop.*\\) differs from a's \\(crop"):
        spread(downs, ["a", "b"])
    downs = [downstream(r) for r in trainings[:2]]
    del downs[1]["regimes"]["real"]  # evaluated without real-only training: not the same grid
    with pytest.raises(AugmentError, match="its real cells differ"):
        spread(downs, ["a", "b"])
    downs = [downstream(r) for r in trainings[:2]]
    downs[1]["seeds"] = [7, 8, 9]  # the deltas are paired by seed: other seeds cannot be crossed with these
    with pytest.raises(AugmentError, match="classifier seeds \\[7, 8, 9\\]"):
        spread(downs, ["a", "b"])
