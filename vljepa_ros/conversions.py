"""Conversions between ROS image and embedding messages and numpy arrays, without cv_bridge.

The functions read and write the fields of `sensor_msgs/Image` (height, width, encoding,
is_bigendian, step, data) and `sensor_msgs/CompressedImage` (format, data) by duck typing, so this
module imports no ROS package: the nodes pass their messages in, tests pass plain objects.

Every image comes out as a C-contiguous uint8 RGB array of shape (H, W, 3), the model's input.
Anything that cannot be converted raises `ImageConversionError` with the reason; callers drop
the frame and count it.

`embedding_to_array` does the same for the `float32[] embedding` field of the VL-JEPA messages
that the decoder and overlay nodes read: a vector of another length, or with NaN, infinite or
all-zero values, raises `EmbeddingError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# Frames above this many pixels are refused before any allocation (a 20000x20000 header with a
# few bytes of data, a PNG that inflates to gigabytes).
DEFAULT_MAX_PIXELS = 8192 * 8192


class ImageConversionError(ValueError):
    """An image message that cannot be converted; the message says why."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: type[np.generic]


# Raw layouts: interleaved channels of one dtype.
_RAW: dict[str, _Layout] = {
    "rgb8": _Layout(3, np.uint8),
    "bgr8": _Layout(3, np.uint8),
    "rgba8": _Layout(4, np.uint8),
    "bgra8": _Layout(4, np.uint8),
    "mono8": _Layout(1, np.uint8),
    "8UC1": _Layout(1, np.uint8),
    "8UC3": _Layout(3, np.uint8),  # no colour order; read as bgr8 like cv_bridge does
    "8UC4": _Layout(4, np.uint8),
    "rgb16": _Layout(3, np.uint16),
    "bgr16": _Layout(3, np.uint16),
    "rgba16": _Layout(4, np.uint16),
    "bgra16": _Layout(4, np.uint16),
    "mono16": _Layout(1, np.uint16),
    "16UC1": _Layout(1, np.uint16),
}
# Bayer mosaics named by their top-left 2x2 block, mapped to OpenCV's codes (OpenCV names a
# pattern by the second row's middle pair, hence the apparent swap).
_BAYER: dict[str, int] = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
# Packed 4:2:2: two bytes per pixel. ROS "yuv422" is UYVY; "yuv422_yuy2" and "yuyv" are YUYV.
_YUV422: dict[str, int] = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV,
}
SUPPORTED_ENCODINGS: tuple[str, ...] = (*_RAW, *_BAYER, *_YUV422)


def _bytes_per_pixel(encoding: str) -> int:
    if encoding in _RAW:
        layout = _RAW[encoding]
        return layout.channels * np.dtype(layout.dtype).itemsize
    return 1 if encoding in _BAYER else 2


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: {width}x{height}")
    if height * width > max_pixels:
        raise ImageConversionError(
            f"image of {width}x{height} is over the limit of {max_pixels} pixels"
        )


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert a `sensor_msgs/Image` to a uint8 RGB array of shape (H, W, 3).

    16-bit encodings keep their high byte; alpha is dropped; Bayer mosaics are demosaiced.

    Raises:
        ImageConversionError: unknown encoding, zero or oversized dimensions, a row stride
            (`step`) shorter than a row, fewer data bytes than `step * height`, or an odd
            width for a packed 4:2:2 encoding.
    """
    height, width, encoding = int(msg.height), int(msg.width), str(msg.encoding)
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    _check_size(height, width, max_pixels)
    row_bytes = width * _bytes_per_pixel(encoding)
    step = int(msg.step)
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is shorter than one row of {width} {encoding} pixels ({row_bytes} bytes)"
        )
    data = msg.data
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buffer = buffer.reshape(-1).view(np.uint8)
    if buffer.size < step * height:
        raise ImageConversionError(
            f"data has {buffer.size} bytes, {encoding} {width}x{height} with step {step} "
            f"needs {step * height}"
        )
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]

    if encoding in _BAYER:
        return cv2.cvtColor(np.ascontiguousarray(rows), _BAYER[encoding])
    if encoding in _YUV422:
        if width % 2:
            raise ImageConversionError(
                f"{encoding} packs two pixels in four bytes: width {width} must be even"
            )
        packed = np.ascontiguousarray(rows).reshape(height, width, 2)
        return cv2.cvtColor(packed, _YUV422[encoding])

    layout = _RAW[encoding]
    if layout.dtype is np.uint16:
        order = ">" if msg.is_bigendian else "<"
        wide = np.ascontiguousarray(rows).view(f"{order}u2").reshape(height, width, -1)
        pixels = (wide >> 8).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, layout.channels)
    if layout.channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    rgb = pixels[:, :, :3]
    if encoding.startswith("bgr") or encoding in ("8UC3", "8UC4"):
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def _compressed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None if not found."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC)
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + length
    return None


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a `sensor_msgs/CompressedImage` (JPEG or PNG) to a uint8 RGB (H, W, 3) array.

    The size in the file header is checked against `max_pixels` before decoding.

    Raises:
        ImageConversionError: empty data, not JPEG or PNG, oversized, or undecodable data.
    """
    data = bytes(msg.data)
    if not data:
        raise ImageConversionError(f"compressed image ('{msg.format}') has no data")
    size = _compressed_size(data)
    if size is None:
        raise ImageConversionError(
            f"compressed image ('{msg.format}', {len(data)} bytes) is neither JPEG nor PNG"
        )
    _check_size(size[1], size[0], max_pixels)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageConversionError(
            f"compressed image ('{msg.format}', {len(data)} bytes) could not be decoded"
        )
    return np.ascontiguousarray(decoded[:, :, ::-1])


@dataclass(frozen=True)
class RawImage:
    """The payload fields of a `sensor_msgs/Image`; a node copies them into its message."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes


def rgb_to_image(
    rgb: np.ndarray, encoding: str = "rgb8", row_padding: int = 0, bigendian: bool = False
) -> RawImage:
    """Encode a uint8 RGB (H, W, 3) array as `encoding` (raw layouts only).

    16-bit encodings store each value v as v * 257 (so the high byte is v again); `row_padding`
    bytes of zeros end every row, as some camera drivers do.

    Raises:
        ImageConversionError: a shape other than (H, W, 3) uint8, or an encoding other than the
            raw layouts.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if encoding not in _RAW:
        raise ImageConversionError(f"cannot encode to '{encoding}'; raw layouts: {list(_RAW)}")
    layout = _RAW[encoding]
    height, width = rgb.shape[:2]
    if layout.channels == 1:
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]
    else:
        pixels = (
            rgb[:, :, ::-1] if encoding.startswith("bgr") or encoding.startswith("8UC") else rgb
        )
        if layout.channels == 4:
            alpha = np.full((height, width, 1), 255, dtype=np.uint8)
            pixels = np.concatenate([pixels, alpha], axis=2)
    if layout.dtype is np.uint16:
        pixels = pixels.astype(f"{'>' if bigendian else '<'}u2") * 257
    row = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    if row_padding:
        row = np.concatenate([row, np.zeros((height, row_padding), dtype=np.uint8)], axis=1)
    return RawImage(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=bigendian and layout.dtype is np.uint16,
        step=row.shape[1],
        data=row.tobytes(),
    )


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """Encode a uint8 RGB (H, W, 3) array as JPEG or PNG: (format field, data).

    Raises:
        ImageConversionError: a bad array, an unknown format, or an encoder failure.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"unknown compressed format '{fmt}' (jpeg or png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", rgb[:, :, ::-1], params)
    if not ok:
        raise ImageConversionError(f"{fmt} encoding of a {rgb.shape} image failed")
    return f"rgb8; {fmt} compressed bgr8", encoded.tobytes()


class EmbeddingError(ValueError):
    """An embedding that cannot be used; the message says why."""


def embedding_to_array(values: Any, dim: int | None = None) -> np.ndarray:
    """The `embedding` field of a SemanticEmbedding (or TextEvent) as a float32 (D,) array.

    Raises:
        EmbeddingError: empty, not of length `dim` (when given), NaN or infinite values, or
            all zeros (no direction, so no cosine).
    """
    vector = np.asarray(values, dtype=np.float32).reshape(-1)
    if vector.size == 0:
        raise EmbeddingError("empty embedding")
    if dim is not None and vector.size != dim:
        raise EmbeddingError(f"embedding of length {vector.size}, expected {dim}")
    if not np.isfinite(vector).all():
        bad = int(np.count_nonzero(~np.isfinite(vector)))
        raise EmbeddingError(f"embedding with {bad} NaN or infinite value(s)")
    if not vector.any():
        raise EmbeddingError("all-zero embedding")
    return vector
