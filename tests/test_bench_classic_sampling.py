"""benchmarks/classic_sampling.py: stored rows re-judged against the val-chosen baseline, paired with the very seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import classic_sampling, limited_data  # noqa: E402


@pytest.mark.slow
def test_a_stored_row_is_rejudged_with_its_baseline_retrained_bit_for_bit(tmp_path: Path) -> None:
    row_json = tmp_path / "ld.json"
    limited_data.main(
        ["--quick", "--profiles", "digits", "--recipes", "baseline", "--workers", "1"]
        + ["--out", str(tmp_path / "runs"), "--json", str(row_json), "--no-append"]
    )
    stored = json.loads(row_json.read_text())["rows"][0]["raw"]["downstream"]
    out = classic_sampling.main([str(row_json), "--workers", "1", "--json", str(tmp_path / "cs.json")])
    assert out["natural_reproduced"] is True  # the stored baseline's cells, retrained: the pairing is seed for seed
    scores = out["selection"]["classic"]["scores"]
    assert len(scores) == 6 and out["new_baseline"] == max(scores, key=scores.get)  # the digits long tail: 3 x 2
    # A regime without classic augmentation is paired against the old baseline exactly as the stored row paired it.
    for regime in ("real+gan", "gan-augmenter"):
        assert out["regimes"][regime]["vs_old"][0]["mean"] == pytest.approx(
            stored["deltas"][regime]["balanced_accuracy"]["mean"], abs=1e-12
        )
    # real+gan+classic applies the chosen policy: paired only where the policy is the stored one.
    policy_kept = out["selection"]["classic"]["policy"] == stored["classic_policy"]
    assert ("not_paired" in out["regimes"]["real+gan+classic"]) is not policy_kept
    new_minus_old = out["baselines"]["new_minus_old"]["mean"]
    gan = out["regimes"]["real+gan"]
    assert gan["vs_new"][0]["mean"] == pytest.approx(gan["vs_old"][0]["mean"] - new_minus_old, abs=1e-12)
    assert json.loads((tmp_path / "cs.json").read_text())["table"].startswith("Classic baseline chosen on val")
