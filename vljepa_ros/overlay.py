"""Overlay rendering for demos and RViz: the camera frame, the labels, the last text event, and a
2-D map of the embedding stream.

The map is a fixed linear projection fitted to the label prompts' embeddings (PCA of the prompt
vectors), so a position means the same thing all run long and every prompt is a named anchor.
Per step, the instant embedding is a red dot; the stabilised meaning (an exponential moving
average of the embeddings) draws a blue trail. Pure numpy/OpenCV: the overlay node, the demo and
the evaluation report use it without ROS.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

RED = (230, 40, 40)
BLUE = (40, 110, 240)
WHITE = (255, 255, 255)
GREY = (150, 150, 150)
MAX_ASPECT = 4  # the overlay is at most this many times as tall as wide (taller frames squeezed)
MAP_TOP = 60  # the inset map's top row, below the label band
MIN_MAP = 48  # no inset map when less room than this is left for it


@dataclass(frozen=True)
class Projection:
    """A fixed linear map from the embedding space (D) to the plane: (x - mean) @ axes.T."""

    mean: np.ndarray  # (D,)
    axes: np.ndarray  # (2, D), orthonormal rows

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) or (D,) -> (N, 2) or (2,)."""
        x = np.asarray(vectors, dtype=np.float64)
        return (x - self.mean) @ self.axes.T


def fit_projection(anchors: np.ndarray) -> Projection:
    """PCA of the anchor embeddings (L, D), e.g. the label prompts: their two main directions.

    The sign of each axis is fixed (its largest-magnitude coordinate is positive), so the same
    anchors always give the same picture. With fewer than three anchors the missing directions
    are filled with unit vectors orthogonal to the ones found.

    Raises:
        ValueError: not an (L, D) array with L >= 1 and D >= 2.
    """
    data = np.asarray(anchors, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 2:
        raise ValueError(f"anchors must be (L, D) with L >= 1, D >= 2, got {data.shape}")
    mean = data.mean(axis=0)
    _, singular, vt = np.linalg.svd(data - mean, full_matrices=False)
    axes = [v for s, v in zip(singular, vt, strict=True) if s > 1e-9][:2]
    for k in range(data.shape[1]):  # complete to two orthonormal axes
        if len(axes) == 2:
            break
        candidate = np.zeros(data.shape[1])
        candidate[k] = 1.0
        for a in axes:
            candidate -= (candidate @ a) * a
        if np.linalg.norm(candidate) > 1e-6:
            axes.append(candidate / np.linalg.norm(candidate))
    fixed = np.stack([a if a[np.argmax(np.abs(a))] > 0 else -a for a in axes])
    return Projection(mean, fixed)


def smoothed_trail(embeddings: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average of unit embeddings (N, D), renormalised at every step:
    the slowly moving "stabilised meaning" (weight of the newest step, as the tracker's
    `smoothing`). The batch form of `EmbeddingTrail`."""
    if not 0 < weight <= 1:
        raise ValueError(f"weight must be in (0, 1], got {weight}")
    x = np.asarray(embeddings, dtype=np.float64)
    trail = EmbeddingTrail(length=max(1, len(x)), smoothing=weight)
    for vector in x:
        trail.add(vector)
    return np.stack(list(trail.stable)) if len(x) else x.copy()


class EmbeddingMap:
    """A fixed 2-D projection of the embedding space, fitted to the label prompt embeddings."""

    def __init__(self, labels: Sequence[str], label_embeddings: np.ndarray) -> None:
        matrix = np.asarray(label_embeddings, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != len(labels) or len(labels) < 2:
            raise ValueError(
                f"need at least two labels with one embedding row each, got {len(labels)} labels "
                f"and a {matrix.shape} matrix"
            )
        if not np.isfinite(matrix).all():
            raise ValueError("label embeddings with NaN or infinite values")
        self.labels = list(labels)
        self.projection = fit_projection(matrix)
        self.axes = self.projection.axes  # (2, D)
        self.anchors = self.project(matrix)
        span = np.abs(self.anchors).max(axis=0)
        self.scale = 1.0 / np.maximum(span * 1.25, 1e-6)  # anchors land within +-0.8

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) or (D,) embeddings -> (N, 2) or (2,) map coordinates (before scaling)."""
        return self.projection(vectors)

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        """Map coordinates -> [-1, 1] square (anchors within +-0.8), clipped."""
        return np.clip(np.asarray(points) * self.scale, -1.0, 1.0)


@dataclass
class OverlayState:
    """What the overlay shows; the overlay node and the demo fill it from the topics."""

    label: str = "unknown"
    confidence: float = 0.0
    instant_label: str = ""
    instant_confidence: float = 0.0
    event_text: str = ""
    event_age_s: float | None = None
    label_lag_s: float | None = None  # how long before the frame's step `label` is about


class EmbeddingTrail:
    """Recent instant positions (red) and the smoothed stabilised meaning (blue trail)."""

    def __init__(self, length: int = 60, smoothing: float = 0.3) -> None:
        if length < 1 or not 0 < smoothing <= 1:
            raise ValueError(
                f"length must be >= 1 and smoothing in (0, 1], got {length}, {smoothing}"
            )
        self.smoothing = smoothing
        self.instant: deque[np.ndarray] = deque(maxlen=length)
        self.stable: deque[np.ndarray] = deque(maxlen=length)
        self._mean: np.ndarray | None = None

    def add(self, embedding: np.ndarray) -> None:
        """Add one step's embedding.

        Raises:
            ValueError: NaN or infinite values (they would stay in the smoothed meaning).
        """
        vector = np.asarray(embedding, dtype=np.float64)
        if not np.isfinite(vector).all():
            raise ValueError("embedding with NaN or infinite values")
        if self._mean is None:
            self._mean = vector.copy()
        else:
            self._mean = (1 - self.smoothing) * self._mean + self.smoothing * vector
        self.instant.append(vector)
        self.stable.append(self._mean / max(float(np.linalg.norm(self._mean)), 1e-12))

    def clear(self) -> None:
        self.instant.clear()
        self.stable.clear()
        self._mean = None


def render_map(emb_map: EmbeddingMap, trail: EmbeddingTrail, size: int = 220) -> np.ndarray:
    """The embedding map as an RGB (size, size, 3) image: anchors, red dots, blue trail."""
    canvas = np.full((size, size, 3), 28, dtype=np.uint8)
    half = size / 2

    def pixel(unit: np.ndarray) -> tuple[int, int]:
        return int(np.rint(half + unit[0] * (half - 12))), int(
            np.rint(half - unit[1] * (half - 12))
        )

    cv2.rectangle(canvas, (0, 0), (size - 1, size - 1), GREY, 1)
    for name, anchor in zip(emb_map.labels, emb_map.to_unit(emb_map.anchors), strict=True):
        x, y = pixel(anchor)
        cv2.drawMarker(canvas, (x, y), WHITE, cv2.MARKER_DIAMOND, 8, 1)
        cv2.putText(canvas, name, (x + 5, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, WHITE, 1,
                    cv2.LINE_AA)  # fmt: skip
    stable = []
    if trail.stable:
        stable = [pixel(p) for p in emb_map.to_unit(emb_map.project(np.stack(list(trail.stable))))]
        if len(stable) > 1:
            cv2.polylines(canvas, [np.array(stable, np.int32)], False, BLUE, 2, cv2.LINE_AA)
    if trail.instant:
        for point in emb_map.to_unit(emb_map.project(np.stack(list(trail.instant)))):
            cv2.circle(canvas, pixel(point), 2, RED, -1, cv2.LINE_AA)
    if stable:  # the current stabilised meaning: a ring, so the red dot inside stays visible
        cv2.circle(canvas, stable[-1], 6, BLUE, 2, cv2.LINE_AA)
    return canvas


def _text(
    image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour: tuple
) -> None:
    """Text on a darkened band (the band gives the contrast)."""
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def render_overlay(
    frame: np.ndarray,
    state: OverlayState,
    emb_map: EmbeddingMap | None,
    trail: EmbeddingTrail,
    width: int = 640,
) -> np.ndarray:
    """The camera frame (H, W, 3) RGB scaled to `width`, with labels, event and inset map.

    A frame more than MAX_ASPECT times as tall as wide is squeezed to that height; a frame too
    flat for the inset map is drawn without it. A NaN confidence draws as 0.
    """
    h, w = frame.shape[:2]
    height = min(max(1, round(h * width / w)), MAX_ASPECT * width)
    image = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA).copy()
    # top band: stabilised label with a confidence bar, then the instant guess
    band = image[:56]
    band[:] = (band.astype(np.uint16) // 4).astype(np.uint8)
    _text(image, f"{state.label}", (10, 24), 0.7, WHITE)
    bar_x, bar_w = 230, 150
    cv2.rectangle(image, (bar_x, 10), (bar_x + bar_w, 24), GREY, 1)
    confidence = float(np.clip(np.nan_to_num(state.confidence), 0, 1))
    filled = int(np.rint(bar_w * confidence))
    cv2.rectangle(image, (bar_x, 10), (bar_x + filled, 24), BLUE, -1)
    _text(image, f"{state.confidence:.2f}", (bar_x + bar_w + 8, 23), 0.5, WHITE)
    if state.label_lag_s:  # the tracker's lag: the label is about an earlier step
        _text(image, f"({state.label_lag_s:.1f} s ago)", (bar_x + bar_w + 50, 23), 0.45, GREY)
    if state.instant_label:
        instant = f"instant: {state.instant_label} ({state.instant_confidence:.2f})"
        _text(image, instant, (10, 46), 0.5, (255, 110, 110))
    # bottom band: the last text event and its age
    if state.event_text:
        age = "" if state.event_age_s is None else f"  [{state.event_age_s:.0f} s ago]"
        bottom = image[height - 30 :]
        bottom[:] = (bottom.astype(np.uint16) // 4).astype(np.uint8)
        _text(image, f'"{state.event_text[:70]}"{age}', (10, height - 10), 0.5, WHITE)
    size = min(220, height // 2, width // 3, height - MAP_TOP - 6)
    if emb_map is not None and size >= MIN_MAP:
        inset = render_map(emb_map, trail, size)
        image[MAP_TOP : MAP_TOP + size, width - size - 6 : width - 6] = inset
    return image
