"""benchmarks/check_vs_dev.py: each recipe's best check beside its dev delta against one reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import check_vs_dev  # noqa: E402


def _pair(tmp_path: Path, name: str, curve: list[float], dev: list[float], seeds: list[int] | None = None) -> str:
    kimg = 20 * len(curve)
    checks = [{"kimg": 20 * (i + 1), "fd_domain": v} for i, v in enumerate(curve)]
    screen = {"rows": [{"kimg": kimg, "train_curve": checks}]}
    use = {"classifier": {"seeds": seeds or [0, 1, 2]}, "candidates": [{"dev_values": dev}]}
    (tmp_path / f"{name}_s.json").write_text(json.dumps(screen))
    (tmp_path / f"{name}_u.json").write_text(json.dumps(use))
    return f"{name}={tmp_path / f'{name}_s.json'},{tmp_path / f'{name}_u.json'}"


def test_rows_pair_dev_by_seed_and_rank_the_best_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _pair(tmp_path, "ref", [1.0, 0.5, 0.3, 0.4], [0.760, 0.770, 0.765])
    a = _pair(tmp_path, "a", [1.0, 0.4, 0.2, 0.6], [0.750, 0.760, 0.760])  # lower check, worse on dev
    b = _pair(tmp_path, "b", [0.9, 0.3, 0.1, 0.5], [0.740, 0.750, 0.745])  # lowest check, worst on dev
    out = check_vs_dev.main([ref, a, b, "--plot", str(tmp_path / "p.png")])
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["a"]["best_check"] == 0.2
    assert rows["a"]["second_half_mean"] == pytest.approx(0.4)  # checks at 40, 60, 80 kimg: (0.4 + 0.2 + 0.6) / 3
    assert rows["a"]["dev_delta"]["values"] == pytest.approx([-1.0, -1.0, -0.5])
    assert rows["b"]["dev_delta"]["mean"] == pytest.approx(-2.0)
    assert rows["ref"]["dev_delta"]["mean"] == 0.0
    assert out["spearman"] == pytest.approx(1.0)  # check order 0.1 < 0.2 < 0.3, dev order -2 < -0.83 < 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "| a | 80 | 0.200 | 0.400 | 75.67 | -0.8 [" in text
    assert "| ref | 80 | 0.300 | 0.400 | 76.50 | reference |" in text


def test_spearman_uses_average_ranks_for_ties() -> None:
    assert check_vs_dev.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert check_vs_dev.spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, rel=1e-6)


def test_other_classifier_seeds_and_bad_specs_are_refused(tmp_path: Path) -> None:
    ref = _pair(tmp_path, "ref", [0.5], [0.7, 0.7, 0.7])
    a = _pair(tmp_path, "a", [0.4], [0.7, 0.7, 0.7])
    other = _pair(tmp_path, "c", [0.4], [0.7, 0.7, 0.7], seeds=[5, 6, 7])
    with pytest.raises(SystemExit, match="classifier seeds"):
        check_vs_dev.main([ref, a, other])
    with pytest.raises(SystemExit, match="NAME=SCREEN_JSON,SAMPLE_USE_JSON"):
        check_vs_dev.main([ref, a, "x=only_one.json"])
    with pytest.raises(SystemExit, match="at least two"):
        check_vs_dev.main([ref, a])
