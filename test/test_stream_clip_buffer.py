"""ClipBuffer: sampling by capture stamps, stale and future frames, resets on stamp jumps."""

from __future__ import annotations

import numpy as np
import pytest

from vljepa_ros.stream.clip_buffer import (
    ClipBuffer,
    ClipBufferConfig,
    PushOutcome,
    clip_indices,
)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def _frame(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value % 256, dtype=np.uint8)


def _feed(buffer: ClipBuffer, hz: float, seconds: float, start: int = T0) -> list[PushOutcome]:
    """Push frames at `hz` of capture time, each arriving 10 ms after capture."""
    outcomes = []
    for i in range(round(hz * seconds)):
        stamp = start + round(i * NS / hz)
        outcomes.append(buffer.push(_frame(i), stamp, stamp + 10_000_000))
    return outcomes


@pytest.mark.parametrize(("camera_hz", "sample_hz"), [(30, 10), (25, 10), (60, 15), (10, 10)])
def test_sampling_rate_follows_capture_stamps(camera_hz: float, sample_hz: float) -> None:
    """Over 20 s of camera frames, sampled frames average sample_hz, not the camera rate."""
    buffer = ClipBuffer(ClipBufferConfig(frames=8, sample_hz=sample_hz))
    outcomes = _feed(buffer, camera_hz, 20.0)
    sampled = outcomes.count(PushOutcome.SAMPLED)
    assert abs(sampled / 20.0 - sample_hz) <= 0.1 * sample_hz
    assert outcomes.count(PushOutcome.SKIPPED) == len(outcomes) - sampled


def test_clip_holds_the_newest_frames_oldest_first() -> None:
    """After enough frames the clip is the last T sampled frames in capture order."""
    buffer = ClipBuffer(ClipBufferConfig(frames=4, sample_hz=10))
    _feed(buffer, 10, 2.0)
    clip = buffer.clip()
    assert clip is not None
    assert clip.frames.shape == (4, 4, 4, 3)
    assert [int(f[0, 0, 0]) for f in clip.frames] == [16, 17, 18, 19]
    assert np.all(np.diff(clip.stamps_ns) == NS // 10)
    assert clip.end_ns == buffer.newest_stamp_ns


def test_partial_clip_is_padded_with_its_oldest_frame() -> None:
    """With two frames of four, the clip repeats the oldest; without padding there is none."""
    buffer = ClipBuffer(ClipBufferConfig(frames=4, sample_hz=10))
    _feed(buffer, 10, 0.2)
    assert not buffer.ready
    assert buffer.clip(pad=False) is None
    clip = buffer.clip()
    assert clip is not None
    assert [int(f[0, 0, 0]) for f in clip.frames] == [0, 0, 0, 1]


def test_a_stride_spans_more_time_and_still_ends_on_the_newest_frame() -> None:
    """stride 2: the clip is every other sampled frame back from the newest (a 10 Hz camera
    read as 5 Hz clips), so each new frame ends a clip; short clips pad with their oldest."""
    buffer = ClipBuffer(ClipBufferConfig(frames=4, sample_hz=10, stride=2))
    _feed(buffer, 10, 0.3)  # frames 0, 1, 2
    clip = buffer.clip()
    assert clip is not None
    assert [int(f[0, 0, 0]) for f in clip.frames] == [0, 0, 0, 2]
    assert not buffer.ready
    _feed(buffer, 10, 2.0, start=T0 + 3 * NS // 10)  # frames 0..19 after 3 s of capture
    clip = buffer.clip()
    assert clip is not None
    assert [int(f[0, 0, 0]) for f in clip.frames] == [13, 15, 17, 19]
    assert np.all(np.diff(clip.stamps_ns) == NS // 5)
    assert clip.end_ns == buffer.newest_stamp_ns
    assert buffer.ready


@pytest.mark.parametrize(
    ("available", "frames", "stride", "picked"),
    [(8, 8, 1, list(range(8))), (3, 4, 1, [0, 0, 1, 2]), (15, 8, 2, [0, 2, 4, 6, 8, 10, 12, 14]),
     (4, 4, 2, [1, 1, 1, 3]), (1, 3, 3, [0, 0, 0])],
)  # fmt: skip
def test_clip_indices(available: int, frames: int, stride: int, picked: list[int]) -> None:
    assert clip_indices(available, frames, stride) == picked


def test_stale_and_future_frames_are_dropped() -> None:
    """Frames older or further ahead than max_input_age are refused and not stored."""
    buffer = ClipBuffer(ClipBufferConfig(frames=4, sample_hz=10, max_input_age=0.5))
    now = T0 + 10 * NS
    assert buffer.push(_frame(1), now - 600_000_000, now) is PushOutcome.STALE
    assert buffer.push(_frame(2), now + 600_000_000, now) is PushOutcome.FUTURE
    assert len(buffer) == 0
    assert buffer.push(_frame(3), now - 400_000_000, now) is PushOutcome.SAMPLED


def test_duplicate_stamp_is_dropped() -> None:
    """A second frame with the same stamp is a duplicate and does not enter the clip."""
    buffer = ClipBuffer(ClipBufferConfig(frames=4, sample_hz=10))
    assert buffer.push(_frame(1), T0, T0) is PushOutcome.SAMPLED
    assert buffer.push(_frame(2), T0, T0) is PushOutcome.DUPLICATE
    assert len(buffer) == 1


def test_stamp_going_backwards_resets_the_clip() -> None:
    """A bag loop (stamps jump back) clears the clip and starts from the new frame."""
    buffer = ClipBuffer(ClipBufferConfig(frames=4, sample_hz=10))
    _feed(buffer, 10, 1.0)
    assert buffer.ready
    back = T0 - 5 * NS
    assert buffer.push(_frame(99), back, back) is PushOutcome.RESET
    assert len(buffer) == 1
    assert buffer.newest_stamp_ns == back
    # sampling continues on the new timeline
    assert buffer.push(_frame(100), back + NS // 10, back + NS // 10) is PushOutcome.SAMPLED


def test_gap_longer_than_max_gap_resets_the_clip() -> None:
    """A camera that went silent for longer than max_gap does not mix old and new frames."""
    buffer = ClipBuffer(ClipBufferConfig(frames=4, sample_hz=10, max_gap=2.0))
    _feed(buffer, 10, 1.0)
    later = T0 + 5 * NS
    assert buffer.push(_frame(7), later, later) is PushOutcome.RESET
    assert len(buffer) == 1


def test_after_a_short_pause_the_next_frame_is_sampled_without_a_burst() -> None:
    """After a 1 s pause (below max_gap) one frame is sampled, then the rate resumes."""
    buffer = ClipBuffer(ClipBufferConfig(frames=8, sample_hz=10, max_gap=2.0))
    _feed(buffer, 30, 1.0)
    outcomes = _feed(buffer, 30, 1.0, start=T0 + 2 * NS)
    assert outcomes[0] is PushOutcome.SAMPLED
    assert 9 <= outcomes.count(PushOutcome.SAMPLED) <= 11


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frames": 0},
        {"sample_hz": 0},
        {"sample_hz": -5},
        {"max_input_age": 0},
        {"max_gap": 0.05, "sample_hz": 10},
        {"stride": 0},
    ],
)
def test_bad_configuration_is_rejected_with_the_reason(kwargs: dict) -> None:
    """Out-of-range settings raise ValueError naming the setting."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ClipBufferConfig(**kwargs)
