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


def test_conv_stem_keeps_the_token_grid_and_its_order() -> None:
    """The conv stem gives as many tokens as the patch embedding, ordered (time, row, column):
    a change to one tubelet moves only that tubelet's tokens, the changed patch's the most."""
    enc = XEncoder(XEncoderConfig(**SMALL, stem="conv")).eval()
    stem = enc.encoder.embeddings.patch_embeddings
    video = torch.randn(1, 3, 4, 32, 32)  # (B, C, T, H, W), as the embeddings module passes it
    changed = video.clone()
    changed[:, :, 2:4, 16:32, 0:16] += 1.0  # second tubelet, bottom-left 16 x 16 patch
    with torch.inference_mode():
        before, after = stem(video), stem(changed)
    assert before.shape == (1, 8, 48)
    moved = (after - before).abs().sum(-1)[0]  # token (t, row, col) is t * 4 + row * 2 + col
    assert moved[:4].max() == 0  # the first tubelet's tokens do not see the second's frames
    assert moved.argmax().item() == 1 * 4 + 1 * 2 + 0


@pytest.mark.parametrize(
    ("width", "blocks", "widths", "residual"),
    [
        (0, 0, [8, 12, 24, 48], 0),
        (16, 0, [16, 32, 48, 48], 0),
        (16, 2, [16, 32, 48, 48], 8),
        (64, 1, [48, 48, 48, 48], 4),
    ],
)
def test_conv_stem_width_and_blocks(width: int, blocks: int, widths: list, residual: int) -> None:
    """stem_width sets the first stage's channels (doubled per stage, at most hidden_size; 0
    keeps the first stem's widths), stem_blocks adds residual blocks per stage, the token grid
    stays the same, and a fresh residual block starts as the identity."""
    from vljepa_ros.model.x_encoder import _ResidualBlock

    cfg = XEncoderConfig(**SMALL, stem="conv", stem_width=width, stem_blocks=blocks)
    stem = XEncoder(cfg).encoder.embeddings.patch_embeddings.eval()
    convs = [m for m in stem.convs if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == widths
    blocks_found = [m for m in stem.convs if isinstance(m, _ResidualBlock)]
    assert len(blocks_found) == residual
    assert stem(torch.randn(2, 3, 4, 32, 32)).shape == (2, 8, 48)
    if blocks_found:
        x = torch.rand(1, blocks_found[0].body[0].in_channels, 8, 8)
        torch.testing.assert_close(blocks_found[0](x), x)


def test_conv_stem_trains_and_round_trips_through_a_state_dict() -> None:
    """A conv-stem encoder's gradients reach the first convolution, and its weights (batch
    norm statistics included) load into a fresh encoder that then gives the same tokens."""
    cfg = XEncoderConfig(**SMALL, stem="conv", frozen=False, stem_width=16, stem_blocks=1)
    torch.manual_seed(0)
    enc = XEncoder(cfg).train()
    enc(torch.randn(3, 4, 3, 32, 32)).square().mean().backward()
    first = enc.encoder.embeddings.patch_embeddings.convs[0]
    assert first.weight.grad is not None
    assert first.weight.grad.abs().sum() > 0
    enc.eval()
    other = XEncoder(cfg).eval()
    other.load_state_dict(enc.state_dict())
    clip = torch.randn(1, 4, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(other(clip), enc(clip))


def test_the_frame_branch_sees_the_newest_frame_of_each_tubelet_alone() -> None:
    """With stem_frame_branch the token grid stays; the second branch's channels of `proj`
    read only the newest frame of each tubelet (with the stacked branch's channels zeroed,
    changing an older frame moves nothing, changing the newest moves that tubelet's tokens);
    gradients reach both branches' first convolutions."""
    cfg = XEncoderConfig(**SMALL, stem="conv", stem_frame_branch=True, frozen=False)
    torch.manual_seed(0)
    stem = XEncoder(cfg).encoder.embeddings.patch_embeddings.eval()
    assert stem.proj.in_channels == 2 * 48
    video = torch.randn(1, 3, 4, 32, 32)
    assert stem(video).shape == (1, 8, 48)
    with torch.no_grad():
        stem.proj.weight[:, :48] = 0  # the stacked-frames branch
    older, newest = video.clone(), video.clone()
    older[:, :, 2] += 1.0  # the second tubelet's first frame
    newest[:, :, 3] += 1.0  # its newest frame
    with torch.inference_mode():
        base = stem(video)
        torch.testing.assert_close(stem(older), base)
        moved = (stem(newest) - base).abs().sum(-1)[0]
    assert moved[:4].max() == 0
    assert moved[4:].min() > 0
    stem.train()
    stem(video).square().mean().backward()
    assert stem.convs[0].weight.grad is not None
    assert stem.frame_convs is not None
    assert stem.frame_convs[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stem": "resnet"}, "stem must be one of"),
        ({"stem": "conv", "patch_size": 12, "crop_size": 36}, "power-of-two patch_size"),
        ({"stem": "conv", "stem_blocks": -1}, "must be >= 0"),
        ({"stem_width": 32}, "apply to stem: conv only"),
        ({"stem_frame_branch": True}, "apply to stem: conv only"),
    ],
)
def test_bad_stem_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        XEncoderConfig(**{**SMALL, **changes})
