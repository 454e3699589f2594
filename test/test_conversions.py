"""Image conversions without cv_bridge: round trips, Bayer and YUV, and every malformed kind."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import pytest

from vljepa_ros.conversions import (
    EmbeddingError,
    ImageConversionError,
    RawImage,
    compressed_to_rgb,
    embedding_to_array,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image,
)


@dataclass
class FakeCompressed:
    """The two fields of sensor_msgs/CompressedImage that the converter reads."""

    format: str
    data: bytes


def _smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (chroma subsampling and demosaicing barely change it)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize(
    "encoding",
    ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4", "rgb16", "bgr16", "rgba16", "bgra16"],
)
@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (48, 64), (121, 97)])
@pytest.mark.parametrize("padding", [0, 3])
def test_colour_round_trip_is_exact(encoding: str, height: int, width: int, padding: int) -> None:
    """Colour raw encodings come back bit-exact, with and without row padding."""
    rgb = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)
    raw = rgb_to_image(rgb, encoding, row_padding=padding)
    channels = 4 if encoding.endswith(("a8", "a16", "UC4")) else 3
    assert raw.step == width * channels * (2 if "16" in encoding else 1) + padding
    assert len(raw.data) == raw.step * height
    np.testing.assert_array_equal(image_to_rgb(raw), rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1", "mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_mono_round_trip_gives_grey_in_all_channels(encoding: str, bigendian: bool) -> None:
    """Mono encodings become three equal channels holding the 8-bit grey value."""
    rgb = _smooth_rgb(30, 40)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    raw = rgb_to_image(rgb, encoding, row_padding=2, bigendian=bigendian)
    out = image_to_rgb(raw)
    assert out.shape == (30, 40, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_big_endian_flag_selects_the_byte_order_of_16_bit_data() -> None:
    """16-bit values are read in the order the flag states, keeping their high byte."""
    rgb = _smooth_rgb(8, 8)
    wide = rgb.astype(np.uint16) * 256 + 7  # low byte 7 tells the orders apart
    for bigendian in (False, True):
        data = wide.astype(">u2" if bigendian else "<u2").tobytes()
        raw = RawImage(8, 8, "rgb16", bigendian, 8 * 6, data)
        np.testing.assert_array_equal(image_to_rgb(raw), rgb)
        misread = image_to_rgb(replace(raw, is_bigendian=not bigendian))
        assert (misread == 7).all()


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a Bayer filter named by its top-left 2x2 block."""
    index = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], dtype=np.uint8)
    for dy in range(2):
        for dx in range(2):
            channel = index[pattern[dy * 2 + dx]]
            out[dy::2, dx::2] = rgb[dy::2, dx::2, channel]
    return out


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("colour", [(220, 30, 30), (30, 200, 40), (20, 40, 230)])
def test_bayer_patterns_demosaic_to_the_right_colour(pattern: str, colour: tuple) -> None:
    """A flat colour seen through each Bayer pattern comes back as that colour."""
    rgb = np.empty((16, 24, 3), dtype=np.uint8)
    rgb[:] = colour
    mosaic = _mosaic(rgb, pattern)
    raw = RawImage(16, 24, f"bayer_{pattern}8", False, 24 + 4, b"")
    padded = np.concatenate([mosaic, np.zeros((16, 4), np.uint8)], axis=1)
    out = image_to_rgb(replace(raw, data=padded.tobytes()))
    centre = out[4:-4, 4:-4].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(centre, colour, atol=2)


def _rgb_to_yuv422(rgb: np.ndarray, order: str) -> bytes:
    """Pack RGB as 4:2:2, BT.601 studio range, in UYVY or YUYV byte order."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = 128 + (b - y) / 1.772 * 224 / 255
    v = 128 + (r - y) / 1.402 * 224 / 255
    y = 16 + y * 219 / 255
    u2, v2 = (u[:, 0::2] + u[:, 1::2]) / 2, (v[:, 0::2] + v[:, 1::2]) / 2
    y0, y1 = y[:, 0::2], y[:, 1::2]
    planes = [u2, y0, v2, y1] if order == "uyvy" else [y0, u2, y1, v2]
    packed = np.stack(planes, axis=-1)
    return np.clip(np.round(packed), 0, 255).astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    ("encoding", "order", "other"),
    [
        ("yuv422", "uyvy", "yuyv"),
        ("uyvy", "uyvy", "yuyv"),
        ("yuv422_yuy2", "yuyv", "uyvy"),
        ("yuyv", "yuyv", "uyvy"),
    ],
)
def test_yuv422_decodes_in_the_named_byte_order(encoding: str, order: str, other: str) -> None:
    """Packed 4:2:2 decodes close to the smooth source; the other byte order would not."""
    rgb = _smooth_rgb(32, 48, seed=3).astype(int)
    decoded = image_to_rgb(RawImage(32, 48, encoding, False, 96, _rgb_to_yuv422(rgb, order)))
    assert np.abs(decoded - rgb).mean() < 5
    wrong = image_to_rgb(RawImage(32, 48, encoding, False, 96, _rgb_to_yuv422(rgb, other)))
    assert np.abs(wrong - rgb).mean() > 20


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (37, 53), (240, 320)])
def test_compressed_round_trip(fmt: str, height: int, width: int) -> None:
    """PNG is lossless; JPEG at quality 95 stays close on a smooth image."""
    rgb = _smooth_rgb(height, width, seed=height)
    fmt_field, data = rgb_to_compressed(rgb, fmt, quality=95)
    out = compressed_to_rgb(FakeCompressed(fmt_field, data))
    assert out.shape == rgb.shape
    if fmt == "png":
        np.testing.assert_array_equal(out, rgb)
    else:
        assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 6


def _raw(**overrides: object) -> RawImage:
    good = rgb_to_image(_smooth_rgb(10, 12), "rgb8")
    return replace(good, **overrides)


MALFORMED_RAW = {
    "truncated data": _raw(data=b"\x00" * 100),
    "no data": _raw(data=b""),
    "step smaller than width x channels": _raw(step=12 * 3 - 1),
    "zero width": _raw(width=0),
    "zero height": _raw(height=0),
    "20000x20000 header with small data": _raw(width=20000, height=20000, step=60000),
    "unknown encoding": _raw(encoding="hsv8"),
    "empty encoding": _raw(encoding=""),
    "encoding and step mismatch (rgb16 with rgb8 step)": _raw(encoding="rgb16"),
    "odd data length for the rows": _raw(data=b"\x01" * (12 * 3 * 10 - 1)),
    "packed 4:2:2 with an odd width": _raw(encoding="yuv422", width=11, step=22, data=bytes(220)),
}


@pytest.mark.parametrize("kind", list(MALFORMED_RAW))
def test_malformed_raw_images_raise_the_module_error(kind: str) -> None:
    """Each malformed Image raises ImageConversionError with a reason, never another error."""
    with pytest.raises(ImageConversionError) as info:
        image_to_rgb(MALFORMED_RAW[kind])
    assert str(info.value)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming a huge size, with no image data (a bomb's header)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))


_, GOOD_JPEG = rgb_to_compressed(_smooth_rgb(64, 64), "jpeg")
MALFORMED_COMPRESSED = {
    "empty data": FakeCompressed("jpeg", b""),
    "corrupt jpeg body": FakeCompressed("jpeg", GOOD_JPEG[:200] + b"\x00" * 50),
    "jpeg header only": FakeCompressed("jpeg", GOOD_JPEG[:2]),
    "not an image": FakeCompressed("jpeg", b"hello world, not a jpeg"),
    "png bomb-like size": FakeCompressed("png", _png_header_only(100_000, 100_000)),
    "png with zero size": FakeCompressed("png", _png_header_only(0, 10)),
}


@pytest.mark.parametrize("kind", list(MALFORMED_COMPRESSED))
def test_malformed_compressed_images_raise_the_module_error(kind: str) -> None:
    """Each malformed CompressedImage raises ImageConversionError before or while decoding."""
    with pytest.raises(ImageConversionError):
        compressed_to_rgb(MALFORMED_COMPRESSED[kind])


def test_size_limit_is_configurable() -> None:
    """A frame above a caller's pixel limit is refused even when its data is complete."""
    raw = rgb_to_image(_smooth_rgb(100, 100), "rgb8")
    image_to_rgb(raw, max_pixels=100 * 100)
    with pytest.raises(ImageConversionError, match="over the limit"):
        image_to_rgb(raw, max_pixels=100 * 100 - 1)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8)],
)
def test_encoders_reject_arrays_that_are_not_uint8_rgb(bad: np.ndarray) -> None:
    """Encoding anything but uint8 (H, W, 3) raises the module error."""
    with pytest.raises(ImageConversionError):
        rgb_to_image(bad)
    with pytest.raises(ImageConversionError):
        rgb_to_compressed(bad)


def test_a_good_embedding_comes_back_as_float32() -> None:
    vector = embedding_to_array([0.6, 0.0, -0.8], dim=3)
    assert vector.dtype == np.float32
    np.testing.assert_array_equal(vector, np.array([0.6, 0.0, -0.8], np.float32))
    assert embedding_to_array((1.0, 2.0)).shape == (2,)  # any length without `dim`


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], "empty"),
        ([1.0, 0.0], "length 2, expected 3"),
        ([1.0, float("nan"), 0.0], "1 NaN or infinite"),
        ([float("inf"), float("-inf"), 0.0], "2 NaN or infinite"),
        ([0.0, 0.0, 0.0], "all-zero"),
    ],
)
def test_embeddings_that_cannot_be_used_raise_the_reason(values: list, reason: str) -> None:
    with pytest.raises(EmbeddingError, match=reason):
        embedding_to_array(values, dim=3)
