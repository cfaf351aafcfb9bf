"""benchmarks/classifier_precision.py: the arms differ in precision only, paired on a dev split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import copy_run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import classifier_precision  # noqa: E402

ARGS = ["--dev-per-class", "6", "--seeds", "2", "--steps", "6", "--workers", "1"]


@pytest.fixture(scope="module")
def small_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(
        tiny_run,
        tmp_path_factory.mktemp("precision") / "run",
        "evaluate.synthetic_per_class=6",
        "evaluate.batch_size=16",
    )


def test_each_arm_is_scored_on_dev_and_paired_with_the_fp32_arm(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "prec.json"
    res = classifier_precision.main([str(small_run), *ARGS, "--json", str(out)])
    assert json.loads(out.read_text())["arms"].keys() == res["arms"].keys()
    arms = res["arms"]
    assert [(arm, a["precision"]) for arm, a in arms.items()] == [("fp32", "fp32"), ("bf16", "bf16")]
    assert res["sizes"]["dev"] == 6 * 3 and res["seeds"] == [0, 1]
    assert arms["fp32"]["minus_reference"] == {}
    for arm in ("bf16",):
        for regime in ("real+classic", "real+gan+classic"):
            got = arms[arm]["dev_accuracy"][regime]["values"]
            ref = arms["fp32"]["dev_accuracy"][regime]["values"]
            diff = arms[arm]["minus_reference"][regime]["values"]
            assert diff == pytest.approx([a - b for a, b in zip(got, ref, strict=True)])
    gan = arms["fp32"]["gan_minus_baseline"]["real+gan+classic"]["values"]
    acc = arms["fp32"]["dev_accuracy"]
    assert gan == pytest.approx(
        [a - b for a, b in zip(acc["real+gan+classic"]["values"], acc["real+classic"]["values"], strict=True)]
    )
    table = classifier_precision.render(res)
    assert all(f"| `{arm}` |" in table for arm in arms)


def test_a_run_without_a_dev_split_is_one_clear_error(small_run: Path, tmp_path: Path, capsys) -> None:
    run = copy_run(small_run, tmp_path / "run", "data.split.test_per_class=null", "data.split.test=0.2")
    with pytest.raises(SystemExit) as exit_info:
        classifier_precision.main([str(run), *ARGS, "--arms", "fp32"])
    assert exit_info.value.code == 2
    assert "test_per_class" in capsys.readouterr().err
