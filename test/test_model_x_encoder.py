"""Tests of vljepa_ros.model.x_encoder: shapes and parity with transformers' VJEPA2Model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import VJEPA2Model

from vljepa_ros.model import WeightsError, XEncoder, XEncoderConfig
from vljepa_ros.model.x_encoder import config_from_vjepa2_folder, load_vjepa2_encoder

SMALL = {"hidden_size": 48, "num_layers": 2, "num_heads": 4, "crop_size": 32, "num_frames": 4}


@pytest.mark.parametrize(("frames", "size", "tokens"), [(2, 32, 4), (4, 32, 8), (8, 64, 64)])
def test_token_count(frames: int, size: int, tokens: int) -> None:
    """(B, T, 3, S, S) -> (B, T/2 * (S/16)^2, D)."""
    enc = XEncoder(XEncoderConfig(**{**SMALL, "crop_size": size, "num_frames": frames}))
    with torch.inference_mode():
        out = enc(torch.randn(2, frames, 3, size, size))
    assert out.shape == (2, tokens, 48)


def test_wrong_input_size_is_refused() -> None:
    """Frames that were not preprocessed to the crop size raise a clear error."""
    enc = XEncoder(XEncoderConfig(**SMALL))
    with pytest.raises(ValueError, match="Preprocessor"):
        enc(torch.randn(1, 4, 3, 48, 48))


def test_frozen_encoder_has_no_trainable_weights_and_stays_in_eval() -> None:
    """A frozen X-encoder exposes no trainable parameters and ignores .train()."""
    enc = XEncoder(XEncoderConfig(**SMALL, frozen=True)).train()
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.training


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_parity_with_vjepa2_model(vjepa2_folder: Path, attn: str) -> None:
    """Weights from a VJEPA2Model folder reproduce its encoder output (fp32, tight)."""
    cfg = config_from_vjepa2_folder(vjepa2_folder, XEncoderConfig(attn_implementation=attn))
    assert (cfg.hidden_size, cfg.num_layers, cfg.crop_size) == (48, 2, 32)
    ours = load_vjepa2_encoder(XEncoder(cfg), vjepa2_folder).eval()
    ref = VJEPA2Model.from_pretrained(vjepa2_folder, attn_implementation="eager").eval()
    torch.manual_seed(1)
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.inference_mode():
        expected = ref.get_vision_features(video)
        got = ours(video)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_shape_mismatch_is_refused(vjepa2_folder: Path) -> None:
    """Loading a checkpoint into an X-encoder of another width names the tensor."""
    enc = XEncoder(XEncoderConfig(**{**SMALL, "hidden_size": 64}))
    with pytest.raises(WeightsError, match="encoder"):
        load_vjepa2_encoder(enc, vjepa2_folder)


def test_folder_without_encoder_is_refused(tmp_path: Path) -> None:
    """A folder without safetensors weights is refused, naming it."""
    with pytest.raises(WeightsError, match=str(tmp_path)):
        load_vjepa2_encoder(XEncoder(XEncoderConfig(**SMALL)), tmp_path)
