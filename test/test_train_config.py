"""Training configuration: strict YAML loading, overrides, the shipped files, the round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ros_support import REPO

from vljepa_ros.model import ConfigError
from vljepa_ros.train.config import (
    QUERY_KINDS,
    TrainConfig,
    config_from_dict,
    load_train_config,
    read_labels,
)

SHIPPED = sorted((REPO / "config" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path: Path, tmp_path: Path) -> None:
    """Each config/train/*.yaml loads strictly, and its resolved dump loads back equal."""
    config = load_train_config(path)
    config.to_yaml(tmp_path / "resolved.yaml")
    assert load_train_config(tmp_path / "resolved.yaml") == config


def test_shipped_configs_are_the_default_and_quick_ones() -> None:
    """default.yaml and quick.yaml both exist (the CLI refers to them by name)."""
    assert {p.name for p in SHIPPED} >= {"default.yaml", "quick.yaml"}


def test_default_config_trains_the_x_encoder_and_adapts_minilm() -> None:
    """The default run trains the X-encoder (conv stem) from scratch on the robot-state
    questions and fine-tunes the Y-encoder top (docs/training.md, "Pilot runs")."""
    config = load_train_config(REPO / "config" / "train" / "default.yaml")
    assert config.model.x_encoder.frozen is False
    assert config.model.x_encoder.stem == "conv"
    assert config.y_encoder_layers > 0
    assert config.model.y_encoder.trainable
    assert set(config.stage2.queries) == {"doing", "holding"} <= set(QUERY_KINDS)
    assert config.model.default_query == config.queries.doing


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stage1.bogus=1"], "stage1.bogus"),
        (["stage1.steps=many"], "stage1.steps"),
        (["data.paths=3"], "data.paths"),
        (["precision=fp8"], "precision"),
        (["stage2.queries=[caption, dance]"], "queries"),
        (["stage2.object_weight=-1"], "object_weight"),
        (["stage2.meaning_weight=-0.5"], "meaning_weight"),
        (["augment.colour_swap=1.5"], "colour_swap"),
        (["model.x_encoder.bogus=1"], "x_encoder.bogus"),
        (["model.preset=giant"], "giant"),
        (["seed"], "key.sub=value"),
    ],
)
def test_bad_keys_and_values_are_rejected_with_their_name(
    overrides: list[str], message: str
) -> None:
    """Unknown keys, wrong types and invalid values raise ConfigError naming the culprit."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_train_config(None, overrides)


def test_yaml_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    """A typo in a YAML file is an error, not silently ignored."""
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"stage_1": {"steps": 3}}))
    with pytest.raises(ConfigError, match="stage_1"):
        load_train_config(path)


def test_overrides_apply_last_and_set_the_y_encoder_trainable() -> None:
    """--set values win over the file; y_encoder_layers decides model.y_encoder.trainable."""
    config = config_from_dict(
        {"stage1": {"steps": 5}, "model": {"preset": "tiny"}},
        ["stage1.steps=7", "y_encoder_layers=2", "data.paths=[a, b]", "stage2.lr=5e-4"],
    )
    assert config.stage1.steps == 7
    assert config.stage2.lr == 5e-4  # YAML 1.1 alone would read "5e-4" as a string
    assert config.model.y_encoder.trainable is True
    assert config.data.paths == ("a", "b")
    assert load_train_config(None).model.y_encoder.trainable is False


def test_total_steps_sums_the_stages() -> None:
    """total_steps counts the three stages."""
    config = TrainConfig()
    assert config.total_steps == config.stage1.steps + config.stage2.steps + config.decoder.steps


def test_read_labels_keeps_file_order(tmp_path: Path) -> None:
    """read_labels returns label -> prompt in file order and rejects empty prompts."""
    labels = read_labels("config/robot_states.yaml")
    assert list(labels)[:2] == ["idle", "reaching"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels:\n  idle: ''\n")
    with pytest.raises(ConfigError, match="idle"):
        read_labels(bad)
