"""Overlay rendering: the fixed embedding map, the trail, and what is drawn on the frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vljepa_ros import overlay
from vljepa_ros.overlay import (
    EmbeddingMap,
    EmbeddingTrail,
    OverlayState,
    render_map,
    render_overlay,
)

LABELS = ["idle", "reaching", "grasping", "lifting"]


def _unit_rows(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _red(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] > 180) & (image[..., 1] < 90) & (image[..., 2] < 90)


def _blue(image: np.ndarray) -> np.ndarray:
    return (image[..., 2] > 180) & (image[..., 0] < 90)


def test_map_is_fixed_and_anchors_are_distinct() -> None:
    """Projection depends only on the prompts; each anchor has its own place inside the map."""
    prompts = _unit_rows(4)
    first, second = EmbeddingMap(LABELS, prompts), EmbeddingMap(LABELS, prompts.copy())
    np.testing.assert_allclose(first.anchors, second.anchors)
    unit = first.to_unit(first.anchors)
    assert np.abs(unit).max() <= 0.81
    distances = np.linalg.norm(unit[:, None] - unit[None], axis=-1)
    assert distances[~np.eye(4, dtype=bool)].min() > 0.05


def test_an_embedding_at_a_prompt_lands_on_its_anchor() -> None:
    """Projecting a label's own embedding gives exactly that label's anchor."""
    prompts = _unit_rows(4, seed=1)
    emb_map = EmbeddingMap(LABELS, prompts)
    np.testing.assert_allclose(emb_map.project(prompts[2]), emb_map.anchors[2], atol=1e-9)


@pytest.mark.parametrize(("labels", "rows"), [(["only"], 1), (["a", "b"], 3)])
def test_map_needs_two_labels_matching_the_rows(labels: list, rows: int) -> None:
    """Fewer than two labels, or rows that do not match the labels, raise ValueError."""
    with pytest.raises(ValueError, match="two labels"):
        EmbeddingMap(labels, _unit_rows(rows))


def test_two_labels_still_give_a_2d_map() -> None:
    """With two prompts the map still has two independent axes."""
    emb_map = EmbeddingMap(["open", "closed"], _unit_rows(2, seed=2))
    assert emb_map.axes.shape == (2, 32)
    assert abs(float(emb_map.axes[0] @ emb_map.axes[1])) < 1e-9


def test_map_points_move_when_the_embedding_moves() -> None:
    """Red and blue pixels follow the stream from one prompt towards another."""
    prompts = _unit_rows(4, seed=3)
    emb_map = EmbeddingMap(LABELS, prompts)
    trail = EmbeddingTrail(length=5, smoothing=0.5)
    for _ in range(5):
        trail.add(prompts[0])
    before_red, before_blue = _red(render_map(emb_map, trail)), _blue(render_map(emb_map, trail))
    for _ in range(5):
        trail.add(prompts[3])
    after = render_map(emb_map, trail)
    assert before_red.any()
    assert before_blue.any()
    assert (_red(after) != before_red).any()
    assert (_blue(after) != before_blue).any()
    # the red dots end up at the new anchor
    ys, xs = np.nonzero(_red(after))
    size = after.shape[0]
    anchor = emb_map.to_unit(emb_map.anchors[3])
    expected = (size / 2 + anchor[0] * (size / 2 - 12), size / 2 - anchor[1] * (size / 2 - 12))
    assert abs(xs.mean() - expected[0]) < 4
    assert abs(ys.mean() - expected[1]) < 4


def test_overlay_draws_label_event_and_map_over_the_frame() -> None:
    """The overlay differs from the scaled frame in the label band, event band and map inset."""
    import cv2

    frame = np.full((480, 640, 3), 120, dtype=np.uint8)
    emb_map = EmbeddingMap(LABELS, _unit_rows(4, seed=4))
    trail = EmbeddingTrail()
    trail.add(_unit_rows(1, seed=5)[0])
    state = OverlayState("grasping", 0.8, "lifting", 0.6, "the arm grabs the red cube", 3.0)
    image = render_overlay(frame, state, emb_map, trail, width=640)
    plain = cv2.resize(frame, (640, 480))
    changed = np.any(image != plain, axis=2)
    assert changed[:56].mean() > 0.5  # the darkened label band
    assert changed[-30:].mean() > 0.5  # the event band
    assert changed[60:280, 640 - 226 : 634].mean() > 0.9  # the inset map
    assert not changed[300:420, 100:300].any()  # the scene itself is left alone


def test_a_lagged_label_says_how_long_ago_its_step_was() -> None:
    """With the tracker's lag the top band says "(0.3 s ago)" right of the confidence; a label
    about the newest step (lag 0 or unknown) leaves that place dark."""
    frame = np.full((480, 640, 3), 200, dtype=np.uint8)

    def lag_text_pixels(lag: float | None) -> int:
        image = render_overlay(frame, OverlayState("idle", 0.9, label_lag_s=lag), None,
                               EmbeddingTrail())  # fmt: skip
        return int((image[8:28, 430:560] > 100).any(axis=2).sum())

    assert lag_text_pixels(None) == lag_text_pixels(0.0) == 0
    assert lag_text_pixels(0.3) > 50


def test_confidence_bar_grows_with_confidence() -> None:
    """More confidence fills more of the bar with blue."""
    frame = np.full((240, 320, 3), 100, dtype=np.uint8)
    low = render_overlay(frame, OverlayState("idle", 0.1), None, EmbeddingTrail())
    high = render_overlay(frame, OverlayState("idle", 0.9), None, EmbeddingTrail())
    assert _blue(high[:30]).sum() > 3 * _blue(low[:30]).sum()


def test_frames_of_any_shape_and_a_nan_confidence_render() -> None:
    """A NaN confidence draws as an empty bar; a frame too flat for the inset map is drawn
    without it; a very tall frame is squeezed to MAX_ASPECT times the width. (Each of these
    used to raise, and the overlay node's timer with it.)"""
    emb_map = EmbeddingMap(LABELS, _unit_rows(4, seed=4))
    trail = EmbeddingTrail()
    trail.add(_unit_rows(1, seed=5)[0])
    frame = np.full((240, 320, 3), 100, dtype=np.uint8)
    nan = render_overlay(frame, OverlayState("idle", float("nan")), emb_map, trail)
    empty = render_overlay(frame, OverlayState("idle", 0.0), emb_map, trail)
    np.testing.assert_array_equal(nan[8:26, 228:382], empty[8:26, 228:382])  # the bar
    for shape in [(100, 1000, 3), (2, 5000, 3), (1, 1, 3)]:
        flat = np.full(shape, 100, dtype=np.uint8)
        image = render_overlay(flat, OverlayState("idle", 0.5, event_text="hi"), emb_map, trail)
        assert image.shape == (max(1, round(shape[0] * 640 / shape[1])), 640, 3)
    tall = render_overlay(np.full((5000, 2, 3), 100, np.uint8), OverlayState(), emb_map, trail)
    assert tall.shape == (overlay.MAX_ASPECT * 640, 640, 3)


def test_nan_embeddings_and_label_embeddings_are_refused() -> None:
    """A NaN would stay in the trail's smoothed meaning (and the map's axes) for good."""
    trail = EmbeddingTrail()
    trail.add(_unit_rows(1)[0])
    with pytest.raises(ValueError, match="NaN"):
        trail.add(np.full(32, np.nan))
    assert len(trail.instant) == 1
    rows = _unit_rows(4)
    rows[1, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        EmbeddingMap(LABELS, rows)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_projection_axes_are_orthonormal(count: int) -> None:
    """Whatever the number of anchors, the map has two orthonormal axes."""
    anchors = np.random.default_rng(count).standard_normal((count, 16))
    projection = overlay.fit_projection(anchors)
    assert projection.axes @ projection.axes.T == pytest.approx(np.eye(2), abs=1e-9)


def test_projection_keeps_three_anchors_distances() -> None:
    """Three anchors span a plane: the PCA map keeps all their pairwise distances."""
    anchors = np.random.default_rng(0).standard_normal((3, 32))
    flat = overlay.fit_projection(anchors)(anchors)
    for i in range(3):
        for j in range(3):
            assert np.linalg.norm(flat[i] - flat[j]) == pytest.approx(
                np.linalg.norm(anchors[i] - anchors[j])
            )


def test_projection_is_deterministic_and_centred() -> None:
    """The same anchors give the same axes; their mean maps to the origin."""
    anchors = np.random.default_rng(1).standard_normal((7, 24))
    a, b = overlay.fit_projection(anchors), overlay.fit_projection(anchors.copy())
    assert np.array_equal(a.axes, b.axes)
    assert a(anchors.mean(axis=0)) == pytest.approx(np.zeros(2), abs=1e-9)


def test_projection_rejects_bad_anchors() -> None:
    """Anchors must be a non-empty (L, D) array with D >= 2."""
    with pytest.raises(ValueError, match="anchors"):
        overlay.fit_projection(np.zeros((0, 4)))


@pytest.mark.parametrize(
    ("weight", "second"),
    [(1.0, [0.0, 1.0]), (0.5, [1 / math.sqrt(2), 1 / math.sqrt(2)])],
)
def test_smoothed_trail(weight: float, second: list) -> None:
    """The trail is a renormalised moving average; weight 1 follows the steps exactly."""
    trail = overlay.smoothed_trail(np.array([[1.0, 0.0], [0.0, 1.0]]), weight)
    assert trail[0] == pytest.approx([1.0, 0.0])
    assert trail[1] == pytest.approx(second)
