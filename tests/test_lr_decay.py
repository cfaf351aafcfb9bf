"""``train.lr_decay_from``: both players' learning rates fall linearly to 0 over the end of the budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from augment import checkpoint
from augment.errors import ConfigError
from augment.train import loop_kwargs, train
from augment.train_options import ScheduleOptions
from conftest import tiny_config


def test_scale_is_one_until_the_decay_starts_then_falls_linearly_to_zero() -> None:
    s = ScheduleOptions(total_kimg=10, lr_decay_from=0.5)
    assert [s.lr_scale(n, 0.0) for n in (0, 5000, 7500, 9000, 10000, 12000)] == pytest.approx([1, 1, 0.5, 0.2, 0, 0])
    assert ScheduleOptions(total_kimg=10).lr_scale(9999, 1e9) == 1.0  # off: constant rates
    # Under a wall-clock budget the further of the two clocks decides: 45 s of 1 minute is 0.75.
    timed = ScheduleOptions(total_kimg=10, lr_decay_from=0.5, max_minutes=1.0)
    assert timed.lr_scale(1000, 45.0) == pytest.approx(0.5)
    assert timed.lr_scale(9000, 6.0) == pytest.approx(0.2)


def test_training_applies_and_logs_the_decayed_rates(tmp_path: Path) -> None:
    sets = ["train.kimg=1.024", "train.lr_g=0.001", "train.lr_d=0.0005"]
    cfg = tiny_config(tmp_path, *sets, "train.lr_decay_from=0.5")
    assert loop_kwargs(cfg)["schedule"].lr_decay_from == 0.5
    run, _ = train(cfg, out=tmp_path / "decay", progress=False)
    ticks = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    # 32 images a step, a tick every 128: each tick logs the factor of its last step, which started
    # at kimg - 0.032; the factor is (1 - that / 1.024) / 0.5, at most 1.
    want = [min(1.0, (1 - (t["kimg"] - 0.032) / 1.024) / 0.5) for t in ticks]
    assert [t["kimg"] for t in ticks] == pytest.approx([0.128 * i for i in range(1, 9)])
    assert [t["lr_scale"] for t in ticks] == pytest.approx(want)
    assert want[-1] == pytest.approx(0.0625) and want[3] == 1.0
    state = checkpoint.load(run / "training-state.pt", checkpoint.STATE_FORMAT)
    assert state["opt_G"]["param_groups"][0]["lr"] == pytest.approx(0.001 * 0.0625)
    assert state["opt_D"]["param_groups"][0]["lr"] == pytest.approx(0.0005 * 0.0625)

    plain, _ = train(tiny_config(tmp_path, *sets), out=tmp_path / "plain", progress=False)
    assert all("lr_scale" not in json.loads(line) for line in (plain / "stats.jsonl").read_text().splitlines())
    state = checkpoint.load(plain / "training-state.pt", checkpoint.STATE_FORMAT)
    assert state["opt_G"]["param_groups"][0]["lr"] == 0.001


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_a_share_outside_zero_to_one_is_a_config_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="lr_decay_from"):
        tiny_config(tmp_path, f"train.lr_decay_from={value}")
