"""Tests of vljepa_ros.model.config: validation, strict loading, presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vljepa_ros.model import (
    PRESETS,
    ConfigError,
    PredictorConfig,
    VLJepaConfig,
    XEncoderConfig,
    YDecoderConfig,
    apply_dotlist,
    load_config,
    preset,
)
from vljepa_ros.model.predictor import Predictor
from vljepa_ros.model.x_encoder import XEncoder


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_dict(name: str) -> None:
    """Every preset survives to_dict -> from_dict unchanged."""
    cfg = preset(name)
    assert VLJepaConfig.from_dict(cfg.to_dict()) == cfg


def test_json_round_trip(tmp_path: Path) -> None:
    """A config written as JSON reads back equal."""
    cfg = preset("vitl")
    cfg.to_json(tmp_path / "config.json")
    assert VLJepaConfig.from_json(tmp_path / "config.json") == cfg


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"embed_dims": 3}, "embed_dims"),
        ({"predictor": {"hiden_size": 3}}, "predictor.hiden_size"),
        ({"predictor": {"rope": {"thta": 1.0}}}, "predictor.rope.thta"),
        ({"predictor": {"num_layers": "2"}}, "predictor.num_layers"),
        ({"predictor": {"num_layers": 2.5}}, "predictor.num_layers"),
        ({"x_encoder": {"frozen": 1}}, "x_encoder.frozen"),
        ({"x_encoder": {"image_mean": [0.5, "a", 0.5]}}, "x_encoder.image_mean[1]"),
        ({"y_encoder": []}, "y_encoder"),
    ],
)
def test_from_dict_names_the_bad_key(data: dict, fragment: str) -> None:
    """Unknown keys and wrong types raise ConfigError naming the key."""
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        VLJepaConfig.from_dict(data)


@pytest.mark.parametrize(
    ("cls", "kwargs", "fragment"),
    [
        (XEncoderConfig, {"hidden_size": 100, "num_heads": 3}, "divisible"),
        (XEncoderConfig, {"crop_size": 100}, "multiple of patch_size"),
        (XEncoderConfig, {"num_frames": 7}, "multiple of tubelet_size"),
        (XEncoderConfig, {"attn_implementation": "flash"}, "attn_implementation"),
        (PredictorConfig, {"num_heads": 6, "num_kv_heads": 4}, "num_kv_heads"),
        (PredictorConfig, {"num_layers": 0}, "num_layers"),
        (YDecoderConfig, {"hidden_size": 30, "num_heads": 4}, "even integer"),
        (VLJepaConfig, {"embed_dim": 512}, "embedding_size"),
    ],
)
def test_invariants_raise_value_error(cls: type, kwargs: dict, fragment: str) -> None:
    """Broken invariants are ValueErrors that say what is wrong."""
    with pytest.raises(ValueError, match=fragment):
        cls(**kwargs)


def test_unsupported_rope_type_is_refused() -> None:
    """Rope scalings other than default and llama3 are refused clearly."""
    with pytest.raises(ConfigError, match="not supported"):
        VLJepaConfig.from_dict({"predictor": {"rope": {"type": "yarn"}}})


def test_yaml_preset_then_keys_then_overrides(tmp_path: Path) -> None:
    """YAML picks a preset, its keys override it, dotlist overrides come last."""
    path = tmp_path / "model.yaml"
    path.write_text("preset: tiny\npredictor:\n  num_layers: 3\nx_encoder:\n  num_frames: 4\n")
    cfg = load_config(path, overrides=["predictor.num_layers=4", "default_query=what now?"])
    assert cfg.predictor.num_layers == 4
    assert cfg.x_encoder.num_frames == 4
    assert cfg.default_query == "what now?"
    assert cfg.x_encoder.hidden_size == preset("tiny").x_encoder.hidden_size


@pytest.mark.parametrize("item", ["predictor.num_layer=3", "nokey", "x_encoder.crop_size=abc"])
def test_bad_overrides_are_refused(item: str) -> None:
    """Malformed or unknown overrides raise ConfigError."""
    with pytest.raises(ConfigError):
        apply_dotlist(preset("tiny"), [item])


def test_shipped_example_configs_load() -> None:
    """The example YAML files under config/model load and validate."""
    folder = Path(__file__).resolve().parent.parent / "config" / "model"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for path in files:
        assert isinstance(load_config(path), VLJepaConfig)


def test_vitl_matches_paper_sizes() -> None:
    """vitl: ViT-L X-encoder ~304M, 8 Llama-3.2-1B layers ~490M, 1536-d, 256 tokens/frame pair."""
    cfg = preset("vitl")
    with torch.device("meta"):
        x = XEncoder(cfg.x_encoder)
        p = Predictor(cfg.predictor, cfg.x_encoder.hidden_size, cfg.y_encoder.hidden_size, 1536)
    x_params = sum(t.numel() for t in x.parameters())
    p_params = sum(t.numel() for t in p.parameters())
    assert 300e6 < x_params < 310e6
    assert 480e6 < p_params < 500e6
    assert cfg.embed_dim == 1536
    one_pair = dataclasses.replace(cfg.x_encoder, num_frames=2)
    assert one_pair.tokens_per_clip == 256
