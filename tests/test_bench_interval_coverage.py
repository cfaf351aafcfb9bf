"""benchmarks/interval_coverage.py: the interval over trainings and seeds covers the true delta about
95% of the time on simulated crossed random effects; the per-training means alone undercover when
the seeds' shared noise dominates."""

from __future__ import annotations

import pytest

from benchmarks.interval_coverage import coverage, main


@pytest.mark.parametrize("sds", [(1.0, 1.0, 0.5), (1.0, 0.0, 0.2), (0.2, 1.0, 0.3)])
def test_the_crossed_interval_covers_the_true_delta_95_percent_of_the_time(sds: tuple[float, float, float]) -> None:
    crossed, naive, ratio = coverage(3, 5, sds, reps=1000)
    assert 0.93 <= crossed <= 0.98
    if sds[1] > sds[0]:  # seed noise dominates: the old interval misses, the crossed one widens
        assert naive < 0.8 and ratio > 1.5
    else:
        assert naive > 0.9


def test_the_script_prints_one_row_per_setting(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--reps", "50", "--seeds", "3"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 3 x 3 |")]
    assert len(rows) == 5 and all(0.0 <= float(r.split("|")[3]) <= 1.0 for r in rows)
