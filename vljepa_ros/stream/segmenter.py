"""Selective decoding: cut the embedding stream into segments of one meaning.

`OnlineSegmenter` runs on the robot: it keeps the open segment's mean embedding and closes the
segment when the stream moves away from it for `persistence` consecutive steps (a sustained
semantic shift), when the stabilised label changes, after `max_interval` seconds, when the stream
resets (seq or stamp going backwards, or a silent gap), or when flushed at shutdown. Each closed
segment is decoded once, on its average-pooled embedding.

`temporal_ward_segments` is the paper's evaluated offline method: agglomerative clustering with
Ward linkage where only neighbours in time may merge, into N segments.

Both are pure: embeddings and times are passed in, nothing runs in the background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NS = 1_000_000_000
TRIGGERS = ("semantic_shift", "label_change", "max_interval", "stream_reset", "shutdown")


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


@dataclass(frozen=True)
class SegmenterConfig:
    """When the online segmenter closes a segment."""

    shift_threshold: float = 0.15  # cosine distance from the segment's mean embedding
    persistence: int = 3  # consecutive steps beyond the threshold that make a shift
    min_steps: int = 2  # a segment shorter than this is not closed by a shift
    label_change: bool = True  # close when the stabilised label changes
    max_interval: float = 0.0  # seconds; 0 disables
    max_gap: float = 2.0  # seconds without steps that count as a stream reset

    def __post_init__(self) -> None:
        if not 0 < self.shift_threshold <= 2:
            raise ValueError(f"shift_threshold must be in (0, 2], got {self.shift_threshold}")
        if self.persistence < 1:
            raise ValueError(f"persistence must be at least 1, got {self.persistence}")
        if self.min_steps < 1:
            raise ValueError(f"min_steps must be at least 1, got {self.min_steps}")
        if self.max_interval < 0:
            raise ValueError(f"max_interval must be >= 0 (0 disables), got {self.max_interval}")
        if self.max_gap <= 0:
            raise ValueError(f"max_gap must be positive, got {self.max_gap}")


@dataclass(frozen=True)
class Segment:
    """A closed segment: what a TextEvent describes."""

    start_ns: int
    end_ns: int
    steps: int
    embedding: np.ndarray  # (D,) average-pooled, L2-normalised
    label: str
    trigger: str
    novelty: float  # cosine distance to the previous segment's embedding (0 for the first)


@dataclass
class _Open:
    """The open segment's running sums."""

    start_ns: int
    end_ns: int
    total: np.ndarray
    steps: int = 1
    labels: dict[str, int] = field(default_factory=dict)

    def add(self, embedding: np.ndarray, stamp_ns: int, label: str) -> None:
        self.total = self.total + embedding
        self.end_ns = stamp_ns
        self.steps += 1
        self.labels[label] = self.labels.get(label, 0) + 1

    @property
    def mean(self) -> np.ndarray:
        return _unit(self.total / self.steps)


class OnlineSegmenter:
    """Closes segments of the embedding stream on the triggers of `SegmenterConfig`."""

    def __init__(self, config: SegmenterConfig) -> None:
        self.config = config
        self._open: _Open | None = None
        self._pending: list[tuple[np.ndarray, int, str]] = []  # steps beyond the threshold
        self._last_seq: int | None = None
        self._last_stamp: int | None = None
        self._last_label: str | None = None
        self._previous: np.ndarray | None = None  # last closed segment's embedding

    def step(
        self, embedding: np.ndarray, stamp_ns: int, seq: int, label: str = ""
    ) -> list[Segment]:
        """Add one step; return the segments it closed (usually none, at most two)."""
        vector = _unit(np.asarray(embedding, dtype=np.float64).reshape(-1))
        closed: list[Segment] = []
        if self._last_seq is not None and self._last_stamp is not None:
            if seq == self._last_seq:
                return closed  # the same step delivered twice
            gap = round(self.config.max_gap * NS)
            went_back = seq < self._last_seq or stamp_ns < self._last_stamp
            if went_back or stamp_ns - self._last_stamp > gap:
                closed += self.flush("stream_reset")
        self._last_seq, self._last_stamp = seq, stamp_ns

        if self._open is None:
            self._start(vector, stamp_ns, label)
            return closed

        if self.config.label_change and label != self._last_label:
            self._absorb_pending()
            closed += self._close("label_change")
            self._start(vector, stamp_ns, label)
            return closed
        self._last_label = label

        distance = 1.0 - float(self._open.mean @ vector)
        if distance >= self.config.shift_threshold:
            self._pending.append((vector, stamp_ns, label))
            if len(self._pending) >= self.config.persistence and (
                self._open.steps >= self.config.min_steps
            ):
                pending, self._pending = self._pending, []
                closed += self._close("semantic_shift")
                first, first_stamp, first_label = pending[0]
                opened = self._start(first, first_stamp, first_label)
                for v, s, lab in pending[1:]:
                    opened.add(v, s, lab)
        else:
            self._absorb_pending()
            self._open.add(vector, stamp_ns, label)

        interval = round(self.config.max_interval * NS)
        if interval and self._open is not None and stamp_ns - self._open.start_ns >= interval:
            self._absorb_pending()
            closed += self._close("max_interval")
        return closed

    def flush(self, trigger: str = "shutdown") -> list[Segment]:
        """Close the open segment (shutdown, stream reset) and forget the stream position."""
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger '{trigger}' (one of {', '.join(TRIGGERS)})")
        self._absorb_pending()
        closed = self._close(trigger) if self._open is not None else []
        self._last_seq = self._last_stamp = self._last_label = None
        return closed

    def _start(self, vector: np.ndarray, stamp_ns: int, label: str) -> _Open:
        self._open = _Open(stamp_ns, stamp_ns, vector.copy(), 1, {label: 1})
        self._last_label = label
        return self._open

    def _absorb_pending(self) -> None:
        """Steps that looked like a shift but did not persist belong to the open segment."""
        if not self._pending:
            return
        assert self._open is not None
        for v, s, lab in self._pending:
            self._open.add(v, s, lab)
        self._pending = []

    def _close(self, trigger: str) -> list[Segment]:
        segment = self._open
        assert segment is not None
        self._open = None
        mean = segment.mean
        novelty = 0.0 if self._previous is None else 1.0 - float(self._previous @ mean)
        self._previous = mean
        label = max(segment.labels, key=lambda k: segment.labels[k]) if segment.labels else ""
        return [
            Segment(
                start_ns=segment.start_ns,
                end_ns=segment.end_ns,
                steps=segment.steps,
                embedding=mean.astype(np.float32),
                label=label,
                trigger=trigger,
                novelty=novelty,
            )
        ]


def temporal_ward_segments(embeddings: np.ndarray, n_segments: int) -> list[tuple[int, int]]:
    """Cut a sequence (N, D) into `n_segments` runs by Ward merging of neighbours in time.

    Starting from one segment per step, the adjacent pair whose merge adds the least
    within-segment variance, n_a * n_b / (n_a + n_b) * |mean_a - mean_b|^2, is merged until
    `n_segments` remain. Only neighbours merge (the temporal connectivity constraint), so two
    identical scenes separated by something else stay apart. Returns [start, end) index pairs.
    """
    data = np.asarray(embeddings, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {data.shape}")
    n = data.shape[0]
    if not 1 <= n_segments <= max(n, 1):
        raise ValueError(f"n_segments must be in [1, {n}], got {n_segments}")
    starts = list(range(n))
    sizes = [1.0] * n
    means = [row.copy() for row in data]

    def cost(i: int) -> float:
        a, b = sizes[i], sizes[i + 1]
        diff = means[i] - means[i + 1]
        return a * b / (a + b) * float(diff @ diff)

    costs = [cost(i) for i in range(n - 1)]
    while len(starts) > n_segments:
        i = int(np.argmin(costs))
        total = sizes[i] + sizes[i + 1]
        means[i] = (means[i] * sizes[i] + means[i + 1] * sizes[i + 1]) / total
        sizes[i] = total
        del starts[i + 1], sizes[i + 1], means[i + 1], costs[i]
        if i < len(costs):
            costs[i] = cost(i)
        if i > 0:
            costs[i - 1] = cost(i - 1)
    ends = [*starts[1:], n]
    return list(zip(starts, ends, strict=True))
