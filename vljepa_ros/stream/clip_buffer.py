"""Clip ring buffer keyed by capture stamps.

Frames arrive at the camera's rate; the model wants T frames sampled at a fixed rate of capture
time. `ClipBuffer.push` decides, from the frame's header stamp and the current time (both passed
in, in nanoseconds), whether a frame is sampled, skipped between samples, or dropped as stale,
from the future or a duplicate; a stamp that goes backwards (a bag loop, a simulation reset)
clears the clip. No clocks, timers or threads: the node owns time and concurrency.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

NS = 1_000_000_000


class PushOutcome(Enum):
    """What `ClipBuffer.push` did with a frame."""

    SAMPLED = "sampled"  # stored in the clip
    SKIPPED = "skipped"  # between two sample times; normal at a camera rate above sample_hz
    STALE = "stale"  # older than max_input_age when it arrived
    FUTURE = "future"  # stamped further ahead of now than max_input_age (clock mismatch)
    DUPLICATE = "duplicate"  # same stamp as the previous frame
    RESET = "reset"  # stamp went backwards or jumped past max_gap: clip cleared, frame stored


@dataclass(frozen=True)
class ClipBufferConfig:
    """How frames are sampled into a clip."""

    frames: int = 8
    sample_hz: float = 10.0
    max_input_age: float = 0.5
    max_gap: float = 2.0
    # a clip takes every `stride`-th sampled frame, ending with the newest: it spans
    # (frames - 1) x stride sampling periods, while every sampled frame can still end a clip
    stride: int = 1

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")
        if not 1 <= self.stride <= 100:
            raise ValueError(f"stride must be in 1 .. 100, got {self.stride}")
        if not 0 < self.sample_hz <= 1000:
            raise ValueError(f"sample_hz must be in (0, 1000], got {self.sample_hz}")
        if self.max_input_age <= 0:
            raise ValueError(f"max_input_age must be positive, got {self.max_input_age}")
        if self.max_gap <= 1 / self.sample_hz:
            raise ValueError(
                f"max_gap ({self.max_gap} s) must exceed one sample period ({1 / self.sample_hz} s)"
            )

    @property
    def span(self) -> int:
        """Sampled frames a full clip covers, oldest to newest."""
        return (self.frames - 1) * self.stride + 1


@dataclass(frozen=True)
class Clip:
    """T frames, oldest first, with their capture stamps in nanoseconds."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    stamps_ns: np.ndarray  # (T,) int64

    @property
    def start_ns(self) -> int:
        return int(self.stamps_ns[0])

    @property
    def end_ns(self) -> int:
        return int(self.stamps_ns[-1])


class ClipBuffer:
    """The last `frames` frames sampled at `sample_hz` of capture time (every `stride`-th of
    them, with a stride)."""

    def __init__(self, config: ClipBufferConfig) -> None:
        self.config = config
        self._period_ns = round(NS / config.sample_hz)
        # a frame up to 10% of a period early still counts as on time (stamp jitter)
        self._tolerance_ns = self._period_ns // 10
        self._frames: deque[np.ndarray] = deque(maxlen=config.span)
        self._stamps: deque[int] = deque(maxlen=config.span)
        self._last_stamp: int | None = None
        self._next_due: int | None = None

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def ready(self) -> bool:
        """True once the clip holds `frames` frames (`stride` apart)."""
        return len(self._frames) == self.config.span

    @property
    def newest_stamp_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        """Forget every frame and the sampling schedule."""
        self._frames.clear()
        self._stamps.clear()
        self._last_stamp = None
        self._next_due = None

    def push(self, frame: np.ndarray, stamp_ns: int, now_ns: int) -> PushOutcome:
        """Offer one frame (H, W, 3) captured at `stamp_ns`, arriving at `now_ns`."""
        max_age = round(self.config.max_input_age * NS)
        if now_ns - stamp_ns > max_age:
            return PushOutcome.STALE
        if stamp_ns - now_ns > max_age:
            return PushOutcome.FUTURE
        outcome = PushOutcome.SAMPLED
        if self._last_stamp is not None:
            if stamp_ns == self._last_stamp:
                return PushOutcome.DUPLICATE
            jumped = stamp_ns - self._last_stamp > round(self.config.max_gap * NS)
            if stamp_ns < self._last_stamp or jumped:
                self.clear()
                outcome = PushOutcome.RESET
        self._last_stamp = stamp_ns
        if self._next_due is not None and stamp_ns < self._next_due - self._tolerance_ns:
            return PushOutcome.SKIPPED
        self._frames.append(frame)
        self._stamps.append(stamp_ns)
        due = stamp_ns if self._next_due is None else self._next_due
        due += self._period_ns
        # after a pause, sample the next frame that arrives rather than a burst of catch-ups
        self._next_due = due if due > stamp_ns else stamp_ns + self._period_ns
        return outcome

    def clip(self, pad: bool = True) -> Clip | None:
        """The current clip, oldest frame first; None while empty.

        The clip's frames are every `stride`-th sampled frame back from the newest. With
        `pad`, a clip that is not full yet repeats its oldest frame to reach `frames` (the paper
        duplicates a single image to fill a clip); without it, None until full.
        """
        if not self._frames or (not pad and not self.ready):
            return None
        picked = clip_indices(len(self._frames), self.config.frames, self.config.stride)
        frames = [self._frames[i] for i in picked]
        stamps = [self._stamps[i] for i in picked]
        return Clip(np.stack(frames), np.asarray(stamps, dtype=np.int64))


def clip_indices(available: int, frames: int, stride: int) -> list[int]:
    """Which of `available` sampled frames (oldest first) make a clip: every `stride`-th back
    from the newest, oldest first, the oldest repeated in front to reach `frames`."""
    picked = list(range(available - 1, -1, -stride))[:frames][::-1]
    return [picked[0]] * (frames - len(picked)) + picked
