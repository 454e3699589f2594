"""Pair each step's embedding with the stabilised label of the same step (matched by stamp).

The perception node publishes a SemanticEmbedding and a StateLabel per step on two topics; they
may arrive in either order, and a label may be lost. A StateLabel's stabilised label is about
the step captured at its `label_stamp`: the same step as its header, or with the state
tracker's lag the step that many steps earlier, so it comes with a later step's message.
`StepJoiner` releases a step once its embedding and the label about it are in, or once its
embedding has waited `max_wait` seconds (then with the last label released), always in seq
order. A label that comes after its step was released that way is counted in `late_labels` and
dropped: `max_wait` is shorter than the labels' lag. Time is passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

NS = 1_000_000_000


@dataclass(frozen=True)
class JoinedStep:
    """One step of the stream as the decoder consumes it."""

    seq: int
    stamp_ns: int
    embedding: np.ndarray
    label: str
    frame_id: str


@dataclass
class _Waiting:
    stamp_ns: int
    embedding: np.ndarray
    frame_id: str
    arrived_ns: int


class StepJoiner:
    """Joins embeddings and the labels about their steps; see the module docstring."""

    def __init__(self, max_wait: float = 0.5, max_pending: int = 100) -> None:
        if max_wait <= 0:
            raise ValueError(f"max_wait must be positive, got {max_wait}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.max_wait_ns = round(max_wait * NS)
        self.max_pending = max_pending
        self._waiting: dict[int, _Waiting] = {}
        self._labels: dict[int, str] = {}  # stamp of the step a label is about -> label
        self._last_label = ""
        self._last_released: int | None = None
        # stamps of steps released without their label, to recognise that label if it comes
        self._timed_out: deque[int] = deque(maxlen=4 * max_pending)
        self.late_labels = 0

    def add_embedding(
        self, seq: int, stamp_ns: int, embedding: np.ndarray, frame_id: str, now_ns: int
    ) -> list[JoinedStep]:
        """An embedding arrived; return the steps that are now complete, in seq order."""
        released: list[JoinedStep] = []
        if self._last_released is not None and seq <= self._last_released:
            # perception restarted (or a duplicate): release what waits, start the count again
            released += self._release_all()
            self._labels = {s: lab for s, lab in self._labels.items() if s >= stamp_ns}
            self._last_released = None
        self._waiting[seq] = _Waiting(stamp_ns, embedding, frame_id, now_ns)
        if len(self._waiting) > self.max_pending:
            released += self._release_all()
        return released + self._release_ready(now_ns)

    def add_label(self, stamp_ns: int, label: str, now_ns: int) -> list[JoinedStep]:
        """A StateLabel arrived with `label` about the step captured at `stamp_ns` (its
        label_stamp); return the steps that are now complete, in seq order."""
        if stamp_ns in self._timed_out:  # its step has gone out with the previous label
            self._timed_out.remove(stamp_ns)
            self.late_labels += 1
            return self._release_ready(now_ns)
        self._labels[stamp_ns] = label
        if len(self._labels) > 4 * self.max_pending:  # labels whose embedding never came
            for old in sorted(self._labels)[: len(self._labels) - 2 * self.max_pending]:
                del self._labels[old]
        return self._release_ready(now_ns)

    def flush(self) -> list[JoinedStep]:
        """Release every waiting step now (the stream ends), in seq order; those whose label
        has not come get the last label."""
        return self._release_all()

    def expire(self, now_ns: int) -> list[JoinedStep]:
        """Release embeddings that waited longer than max_wait for their label."""
        return self._release_ready(now_ns)

    def _release_ready(self, now_ns: int) -> list[JoinedStep]:
        released = []
        for seq in sorted(self._waiting):
            waiting = self._waiting[seq]
            timed_out = now_ns - waiting.arrived_ns >= self.max_wait_ns
            if waiting.stamp_ns not in self._labels and not timed_out:
                break  # keep seq order: later steps wait for this one
            released.append(self._release(seq))
        return released

    def _release_all(self) -> list[JoinedStep]:
        return [self._release(seq) for seq in sorted(self._waiting)]

    def _release(self, seq: int) -> JoinedStep:
        waiting = self._waiting.pop(seq)
        if waiting.stamp_ns not in self._labels:
            self._timed_out.append(waiting.stamp_ns)
        label = self._labels.pop(waiting.stamp_ns, self._last_label)
        self._last_label = label
        self._last_released = seq
        return JoinedStep(seq, waiting.stamp_ns, waiting.embedding, label, waiting.frame_id)
