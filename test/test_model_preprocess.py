"""Tests of vljepa_ros.model.preprocess: resize, crop, normalise, clip filling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vljepa_ros.model import ModelError, Preprocessor, XEncoderConfig

CFG = XEncoderConfig(crop_size=32, num_frames=4)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((48, 64, 3), (1, 4, 3, 32, 32)),  # one image fills a clip
        ((4, 32, 32, 3), (1, 4, 3, 32, 32)),
        ((3, 240, 320, 3), (1, 4, 3, 32, 32)),  # odd length padded to the tubelet
        ((2, 6, 20, 90, 3), (2, 6, 3, 32, 32)),  # batch, upscaled short side
    ],
)
def test_output_shape(shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """Any frame size and clip length becomes (B, T', 3, S, S)."""
    frames = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    assert Preprocessor(CFG)(frames).shape == expected


@pytest.mark.parametrize("value", [0, 128, 255])
def test_normalisation_uses_mean_and_std(value: int) -> None:
    """A constant frame maps to (value/255 - mean) / std per channel."""
    frames = np.full((2, 40, 40, 3), value, dtype=np.uint8)
    out = Preprocessor(CFG)(frames)
    mean, std = torch.tensor(CFG.image_mean), torch.tensor(CFG.image_std)
    expected = (value / 255 - mean) / std
    torch.testing.assert_close(out[0, 0, :, 5, 5], expected, rtol=1e-5, atol=1e-5)


def test_centre_crop_keeps_the_middle() -> None:
    """A wide frame keeps its centre: a bright centre column stays in the middle."""
    frames = np.zeros((2, 32, 96, 3), dtype=np.uint8)
    frames[:, :, 47:49] = 255
    out = Preprocessor(CFG)(frames)[0, 0, 0]  # (S, S), red channel
    assert out[:, 15:17].mean() > out[:, :4].mean() + 1.0


def test_padding_repeats_the_last_frame() -> None:
    """Padding a 3-frame clip to 4 repeats the last frame."""
    frames = np.stack([np.full((32, 32, 3), v, dtype=np.uint8) for v in (0, 100, 200)])
    out = Preprocessor(CFG)(frames)
    torch.testing.assert_close(out[0, 3], out[0, 2])


def test_list_of_frames_equals_array() -> None:
    """A list of (H, W, 3) frames is the same as the stacked array."""
    frames = np.random.default_rng(1).integers(0, 255, (4, 40, 50, 3), dtype=np.uint8)
    pre = Preprocessor(CFG)
    torch.testing.assert_close(pre(list(frames)), pre(frames))


@pytest.mark.parametrize(
    "frames",
    [np.zeros((4, 32, 32, 3), dtype=np.float32), np.zeros((4, 32, 32), dtype=np.uint8)],
    ids=["float", "gray"],
)
def test_bad_frames_are_refused(frames: np.ndarray) -> None:
    """Non-uint8 or non-RGB frames raise ModelError."""
    with pytest.raises(ModelError):
        Preprocessor(CFG)(frames)


def test_output_dtype_follows_the_model() -> None:
    """The clip tensor comes out in the requested dtype."""
    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    assert Preprocessor(CFG, dtype=torch.bfloat16)(frames).dtype == torch.bfloat16
