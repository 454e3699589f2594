"""Robot-state labels read out of the embedding stream.

Each step's embedding is compared with the label prompts' embeddings (cosine), turned into
probabilities (softmax with a temperature) and an instant label. The stabilised label follows
smoothed probabilities with hysteresis and a minimum dwell, so a single odd step does not flip
it, and falls back to "unknown" when nothing is confident. Time is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNKNOWN = "unknown"
NS = 1_000_000_000


@dataclass(frozen=True)
class StateTrackerConfig:
    """Stabilisation of the label stream.

    A label is entered when its smoothed probability reaches `enter_threshold` and is the
    highest. The current label is left when its smoothed probability falls below
    `exit_threshold` (to the best label if that one qualifies, else to "unknown"), or when
    another label qualifies and leads it by `switch_margin`. No change happens within
    `min_dwell` seconds of the previous one.
    """

    # defaults chosen for the shipped model by `vljepa tune-tracker` on its 30 validation
    # episodes (docs/evaluation.md): no smoothing or dwell, a 0.3 lead to switch
    temperature: float = 0.2
    smoothing: float = 1.0
    enter_threshold: float = 0.2
    exit_threshold: float = 0.1
    switch_margin: float = 0.3
    min_dwell: float = 0.0
    top_k: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.temperature <= 10:
            raise ValueError(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0 < self.smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")
        if not 0 <= self.exit_threshold <= self.enter_threshold <= 1:
            raise ValueError(
                "thresholds must satisfy 0 <= exit_threshold <= enter_threshold <= 1, got "
                f"exit {self.exit_threshold}, enter {self.enter_threshold}"
            )
        if not 0 <= self.switch_margin <= 1:
            raise ValueError(f"switch_margin must be in [0, 1], got {self.switch_margin}")
        if self.min_dwell < 0:
            raise ValueError(f"min_dwell must be >= 0, got {self.min_dwell}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")


@dataclass(frozen=True)
class StateEstimate:
    """The tracker's output for one step (the fields of a StateLabel message)."""

    label: str
    confidence: float
    instant_label: str
    instant_confidence: float
    candidates: list[str]
    scores: list[float]
    changed: bool
    since_ns: int
    probabilities: np.ndarray  # (L,) instant probabilities, label order


class StateTracker:
    """Instant and stabilised robot-state labels from L2-normalised embeddings."""

    def __init__(
        self, labels: Sequence[str], label_embeddings: np.ndarray, config: StateTrackerConfig
    ) -> None:
        self.config = config
        self.set_labels(labels, label_embeddings)

    def set_labels(self, labels: Sequence[str], label_embeddings: np.ndarray) -> None:
        """Replace the labels (rows of `label_embeddings`, (L, D)) and start over."""
        labels = list(labels)
        if not labels:
            raise ValueError("the label list is empty")
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate labels in {labels}")
        if UNKNOWN in labels:
            raise ValueError(f"'{UNKNOWN}' is reserved for 'nothing is confident'")
        matrix = np.asarray(label_embeddings, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(labels):
            raise ValueError(
                f"label_embeddings must be ({len(labels)}, D), got {tuple(matrix.shape)}"
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if not np.all(norms > 0):
            raise ValueError("a label embedding is all zeros")
        self.labels = labels
        self._matrix = matrix / norms
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next step starts from "unknown"."""
        self._smoothed: np.ndarray | None = None
        self._current = -1  # index into labels; -1 is unknown
        self._since_ns: int | None = None

    @property
    def label(self) -> str:
        return UNKNOWN if self._current < 0 else self.labels[self._current]

    def step(self, embedding: np.ndarray, stamp_ns: int) -> StateEstimate:
        """Classify one embedding (D,) captured at `stamp_ns` and update the stable label."""
        cfg = self.config
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self._matrix.shape[1]:
            raise ValueError(
                f"embedding has {vector.shape[0]} values, labels have {self._matrix.shape[1]}"
            )
        norm = float(np.linalg.norm(vector))
        cosine = self._matrix @ (vector / norm) if norm > 0 else np.zeros(len(self.labels))
        logits = cosine / cfg.temperature
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if self._smoothed is None:
            self._smoothed = probs.copy()
        else:
            self._smoothed = (1 - cfg.smoothing) * self._smoothed + cfg.smoothing * probs
        if self._since_ns is None:
            self._since_ns = stamp_ns

        target = self._target(self._smoothed)
        dwelt = stamp_ns - self._since_ns >= round(cfg.min_dwell * NS)
        changed = target != self._current and (dwelt or (self._current < 0 and target >= 0))
        if changed:
            self._current = target
            self._since_ns = stamp_ns

        order = np.argsort(-probs, kind="stable")[: cfg.top_k]
        best = int(order[0])
        return StateEstimate(
            label=self.label,
            confidence=0.0 if self._current < 0 else float(self._smoothed[self._current]),
            instant_label=self.labels[best],
            instant_confidence=float(probs[best]),
            candidates=[self.labels[i] for i in order],
            scores=[float(probs[i]) for i in order],
            changed=changed,
            since_ns=self._since_ns,
            probabilities=probs,
        )

    def _target(self, smoothed: np.ndarray) -> int:
        """The label the smoothed probabilities call for, before the dwell rule."""
        cfg = self.config
        best = int(np.argmax(smoothed))
        qualifies = smoothed[best] >= cfg.enter_threshold
        current = self._current
        if current < 0:
            return best if qualifies else -1
        if smoothed[current] < cfg.exit_threshold:
            return best if qualifies and best != current else -1
        if best == current:
            return current
        if qualifies and smoothed[best] - smoothed[current] >= cfg.switch_margin:
            return best
        return current
