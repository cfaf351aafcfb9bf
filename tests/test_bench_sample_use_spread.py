"""benchmarks/sample_use_spread.py: trainings' sample_use results pooled, paired by seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from augment.metrics.verdict import crossed_ci

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import sample_use_spread  # noqa: E402


def _result(deltas: list[float], baseline: list[float], seeds: list[int] | None = None) -> dict:
    mean = sum(deltas) / len(deltas)
    ci = {"mean": mean, "n": len(deltas), "values": deltas, "ci_low": mean - 1, "ci_high": mean + 1}
    return {
        "classifier": {"seeds": seeds or list(range(len(deltas)))},
        "test": {"baseline_values_by_steps": {"1500": baseline}, "pick_vs_best_baseline": ci, "pick_vs_baseline": ci},
    }


def test_the_trainings_are_pooled_crossed_and_over_their_means(tmp_path: Path, capsys) -> None:
    a, b = [0.5, 1.0, 0.0], [2.0, 2.5, 1.5]
    paths = []
    for name, deltas in (("t0", a), ("t1", b)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_result(deltas, [0.7, 0.71, 0.72])))
    out = sample_use_spread.main([str(p) for p in paths])
    got = out["deltas"]["pick_vs_best_baseline"]
    want = crossed_ci([a, b])
    assert got["crossed"]["mean"] == pytest.approx(1.25) and got["crossed"]["ci_low"] == pytest.approx(want["ci_low"])
    assert got["over_means"]["values"] == pytest.approx([0.5, 2.0]) and got["over_means"]["n"] == 2
    assert out["shared_baseline"] is True
    text = capsys.readouterr().out
    assert "| t0 | t1 |" in text and "approximation" not in text


def test_differing_baselines_are_flagged_and_differing_seeds_refused() -> None:
    out = sample_use_spread.spread([_result([1.0, 2.0], [0.7, 0.7]), _result([1.5, 2.5], [0.7, 0.71])])
    assert out["shared_baseline"] is False
    assert "approximation" in sample_use_spread.table(out, ["a", "b"])
    with pytest.raises(SystemExit, match="classifier seeds differ"):
        sample_use_spread.spread([_result([1.0, 2.0], [0.7, 0.7]), _result([1.0, 2.0], [0.7, 0.7], seeds=[5, 6])])
    with pytest.raises(SystemExit, match="at least two"):
        sample_use_spread.spread([_result([1.0, 2.0], [0.7, 0.7])])


def _baseline(values: list[float], seeds: list[int], precision: str = "bf16") -> dict:
    test = {"label": "crop+flip, class-balanced", "steps": 1500, "precision": precision, "seeds": seeds}
    return {"test": {**test, "values": values}}


def test_a_dev_ranked_baseline_pairs_each_pick_by_seed(tmp_path: Path, capsys) -> None:
    picks = [[0.76, 0.78, 0.77], [0.75, 0.79, 0.74]]
    results = [_result([1.0, 2.0, 3.0], [0.7, 0.7, 0.7]) for _ in picks]
    for r, p in zip(results, picks, strict=True):
        r["test"]["pick"] = p
    base = [0.74, 0.75, 0.78]
    paths = []
    for i, r in enumerate(results):
        paths += [tmp_path / f"r{i}.json", tmp_path / f"b{i}.json"]
        paths[-2].write_text(json.dumps(r))
        paths[-1].write_text(json.dumps(_baseline(base, [0, 1, 2])))
    out = sample_use_spread.main(
        [str(paths[0]), str(paths[2]), "--baseline", str(paths[1]), "--baseline", str(paths[3])]
    )
    given = out["deltas"][sample_use_spread.GIVEN]
    want = [[100 * (p - b) for p, b in zip(pick, base, strict=True)] for pick in picks]
    assert given["per_training"][0]["values"] == pytest.approx(want[0])
    assert given["crossed"]["mean"] == pytest.approx(crossed_ci(want)["mean"])
    assert given["over_means"]["values"] == pytest.approx([sum(w) / 3 for w in want])
    assert out["shared_baseline"] is True  # one baseline's cells for both trainings
    other = sample_use_spread.spread(results, [_baseline(base, [0, 1, 2]), _baseline([0.7, 0.7, 0.7], [0, 1, 2])])
    assert other["shared_baseline"] is False  # the given baselines differ: the crossed interval is flagged
    assert "crop+flip, class-balanced at 1500 steps (bf16)" in capsys.readouterr().out
    # Other seeds, another recorded precision, a missing test part: refused; one --baseline per result.
    with pytest.raises(SystemExit, match="seeds"):
        sample_use_spread.spread(results, [_baseline(base, [0, 1, 3])] * 2)
    results[0]["classifier"]["precision"] = "fp32"
    with pytest.raises(SystemExit, match="fp32"):
        sample_use_spread.spread(results, [_baseline(base, [0, 1, 2])] * 2)
    with pytest.raises(SystemExit, match="--test"):
        sample_use_spread.spread(results, [{}, {}])
    with pytest.raises(SystemExit) as exc:
        sample_use_spread.main([str(paths[0]), str(paths[2]), "--baseline", str(paths[1])])
    assert exc.value.code == 2
