"""Config: strict sections, overrides, one-line errors naming file, field and value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from augment.config import Config, load_config, save_config
from augment.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "configs" / name)
    assert cfg.name


def test_defaults_equal_digits_shape() -> None:
    cfg = load_config(None)
    assert cfg.data.source == "digits" and cfg.data.image_size == 8 and cfg.train.loss == "hinge"


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    cfg = load_config(
        REPO / "configs" / "digits.yaml",
        ["train.kimg=2.5", "train.diffaug=[color]", "data.imbalance=null", "data.per_class={'0': 5}", "seed=7"],
    )
    assert cfg.train.kimg == 2.5
    assert cfg.train.diffaug == ["color"]
    assert cfg.data.per_class == {"0": 5}
    assert cfg.seed == 7


def test_unknown_key_names_file_field_and_value(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"kimgs": 3}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "train.kimgs" in msg and "3" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ("train.kimg=-1", "train.kimg", "-1"),
        ("train.loss=wasserstein", "train.loss", "wasserstein"),
        ("data.image_size=9", "data.image_size", "9"),
        ("data.channels=2", "data.channels", "2"),
        ("train.batch_size=many", "train.batch_size", "many"),
        ("model.z_dim=0", "model.z_dim", "0"),
    ],
)
def test_bad_values_are_named(override: str, field: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "digits.yaml", [override])
    msg = str(err.value)
    assert "digits.yaml" in msg and field in msg and value in msg


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="either per_class or imbalance"):
        load_config(REPO / "configs" / "digits.yaml", ["data.per_class=10"])
    with pytest.raises(ConfigError, match="val \\+ test must be < 1"):
        load_config(None, ["data.split.val=0.5", "data.split.test=0.5"])
    with pytest.raises(ConfigError, match="needs data.root"):
        load_config(None, ["data.source=imagefolder"])
    # A compile mode without compile would be ignored without a word: refused in either section.
    with pytest.raises(ConfigError, match="train: compile_mode 'max-autotune' needs compile: true"):
        load_config(None, ["train.compile_mode=max-autotune"])
    with pytest.raises(ConfigError, match="train.cuda: compile_mode 'reduce-overhead' needs compile: true"):
        load_config(None, ["train.cuda.compile=false", "train.cuda.compile_mode=reduce-overhead"])


def test_bad_override_syntax_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["train.kimg"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(REPO / "configs" / "digits.yaml", ["seed.x=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "digits.yaml", ["train.kimg=3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert isinstance(again, Config)
    flat = cfg.flat()
    assert flat["train.kimg"] == 3.0 and flat["data.source"] == "digits"


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="train.lr_g"):
        load_config(None, [f"train.lr_g={value}"])


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("seed: 0\ntrain:\n  kimg: 5\n  batch_size: 32\n  kimg: 50\n")
    with pytest.raises(ConfigError, match=r"twice.yaml line 5: duplicate key 'kimg' \(first on line 3\)"):
        load_config(path)
