"""Selective decoding: the online segmenter's triggers and flush, and temporal Ward clustering."""

from __future__ import annotations

import numpy as np
import pytest

from vljepa_ros.stream.segmenter import (
    OnlineSegmenter,
    SegmenterConfig,
    temporal_ward_segments,
)

NS = 1_000_000_000
DIM = 16


def _scene(index: int, steps: int, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """`steps` noisy copies of scene `index`'s direction (scenes are orthogonal)."""
    rng = np.random.default_rng(seed + 100 * index)
    base = np.zeros(DIM)
    base[index] = 1.0
    out = base + noise * rng.standard_normal((steps, DIM))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _run(seg: OnlineSegmenter, stream: np.ndarray, labels: list[str] | None = None) -> list:
    closed = []
    for k, vector in enumerate(stream):
        label = labels[k] if labels else "x"
        closed += seg.step(vector, k * NS // 10, seq=k, label=label)
    return closed


def test_sustained_shift_closes_the_segment_at_the_change() -> None:
    """Two scenes of 20 steps: one semantic_shift event whose segment is exactly scene one."""
    seg = OnlineSegmenter(SegmenterConfig(shift_threshold=0.3, persistence=3))
    closed = _run(seg, np.vstack([_scene(0, 20), _scene(1, 20)]))
    assert [c.trigger for c in closed] == ["semantic_shift"]
    first = closed[0]
    assert first.steps == 20
    assert (first.start_ns, first.end_ns) == (0, 19 * NS // 10)
    assert float(first.embedding @ _scene(0, 1, noise=0)[0]) > 0.99
    tail = seg.flush()
    assert [t.trigger for t in tail] == ["shutdown"]
    assert tail[0].steps == 20
    assert tail[0].novelty == pytest.approx(1.0, abs=0.05)


def test_short_blips_do_not_trigger() -> None:
    """Outliers shorter than `persistence` steps stay inside the segment."""
    stream = _scene(0, 30)
    stream[10] = _scene(1, 1)[0]
    stream[20:22] = _scene(2, 2)
    seg = OnlineSegmenter(SegmenterConfig(shift_threshold=0.3, persistence=3))
    assert _run(seg, stream) == []
    assert seg.flush()[0].steps == 30


def test_label_change_closes_the_segment() -> None:
    """A stabilised label change closes the segment even without an embedding shift."""
    seg = OnlineSegmenter(SegmenterConfig(shift_threshold=0.5))
    labels = ["idle"] * 8 + ["reaching"] * 8
    closed = _run(seg, _scene(0, 16), labels)
    assert [(c.trigger, c.label, c.steps) for c in closed] == [("label_change", "idle", 8)]


def test_label_change_can_be_disabled() -> None:
    """With label_change off, labels alone never close a segment."""
    seg = OnlineSegmenter(SegmenterConfig(label_change=False))
    labels = ["idle", "reaching"] * 8
    assert _run(seg, _scene(0, 16), labels) == []


def test_max_interval_bounds_the_time_between_events() -> None:
    """In a constant scene, max_interval=1 s yields one event per second of stream."""
    seg = OnlineSegmenter(SegmenterConfig(max_interval=1.0))
    closed = _run(seg, _scene(0, 50))
    assert [c.trigger for c in closed] == ["max_interval"] * 4
    assert all(c.end_ns - c.start_ns == NS for c in closed)


@pytest.mark.parametrize(
    ("seq", "stamp_s"),
    [(3, 2.0), (21, 0.5), (21, 9.0)],
    ids=["seq backwards", "stamp backwards", "gap longer than max_gap"],
)
def test_stream_reset_flushes_the_open_segment(seq: int, stamp_s: float) -> None:
    """Seq or stamp going back, or a silent gap, closes the segment as stream_reset."""
    seg = OnlineSegmenter(SegmenterConfig(max_gap=2.0))
    _run(seg, _scene(0, 21))
    closed = seg.step(_scene(0, 1)[0], round(stamp_s * NS), seq=seq, label="x")
    assert [c.trigger for c in closed] == ["stream_reset"]
    assert closed[0].steps == 21
    assert seg.flush()[0].steps == 1


def test_duplicate_step_is_ignored() -> None:
    """The same seq delivered twice is counted once."""
    seg = OnlineSegmenter(SegmenterConfig())
    v = _scene(0, 1)[0]
    assert seg.step(v, 0, seq=5) == []
    assert seg.step(v, 0, seq=5) == []
    assert seg.flush()[0].steps == 1


def test_flush_on_an_empty_stream_returns_nothing_and_checks_the_trigger() -> None:
    """Flushing with nothing open closes nothing; an unknown trigger name is refused."""
    seg = OnlineSegmenter(SegmenterConfig())
    assert seg.flush() == []
    with pytest.raises(ValueError, match="unknown trigger"):
        seg.flush("because")


def test_temporal_ward_finds_the_scene_boundaries() -> None:
    """Three scenes of unequal length are cut exactly at their boundaries."""
    stream = np.vstack([_scene(0, 12), _scene(1, 5), _scene(2, 20)])
    assert temporal_ward_segments(stream, 3) == [(0, 12), (12, 17), (17, 37)]


def test_temporal_ward_keeps_identical_separated_scenes_apart() -> None:
    """A-B-A with identical A's: three segments, the two A's are not merged across B."""
    a = _scene(0, 10)
    stream = np.vstack([a, _scene(1, 10), a])
    segments = temporal_ward_segments(stream, 3)
    assert segments == [(0, 10), (10, 20), (20, 30)]
    # and with two segments the cut still respects time: one run each, contiguous
    two = temporal_ward_segments(stream, 2)
    assert two[0][0] == 0
    assert two[-1][1] == 30
    assert two[0][1] == two[1][0]


@pytest.mark.parametrize("n", [0, 31])
def test_temporal_ward_rejects_impossible_segment_counts(n: int) -> None:
    """Asking for fewer than one or more segments than steps raises ValueError."""
    with pytest.raises(ValueError, match="n_segments"):
        temporal_ward_segments(_scene(0, 30), n)


@pytest.mark.parametrize(
    "kwargs",
    [{"shift_threshold": 0}, {"persistence": 0}, {"min_steps": 0}, {"max_interval": -1}],
)
def test_bad_configuration_is_rejected(kwargs: dict) -> None:
    """Out-of-range segmenter settings raise ValueError naming the setting."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SegmenterConfig(**kwargs)
