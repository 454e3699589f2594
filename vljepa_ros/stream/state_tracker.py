"""Robot-state labels read out of the embedding stream.

Each step's embedding is compared with the label prompts' embeddings (cosine), turned into
probabilities (softmax with a temperature) and an instant label. The stabilised label follows
smoothed probabilities with hysteresis and a minimum dwell, so a single odd step does not flip
it, and falls back to "unknown" when nothing is confident. Time is passed in.

With transition rates (how often the task goes from one state to another, per second), the
probabilities are first filtered as a hidden Markov model: the belief of the previous step is
carried forward over the time since it with the rates (a continuous-time Markov chain, so any
step rate works) and multiplied by this step's probabilities. A state the task rarely enters
from the current one then needs stronger evidence than one it usually goes to next.
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
    `min_dwell` seconds of the previous one. With `transitions`, "smoothed" probabilities are
    the hidden Markov model's filtered ones, smoothed further by `smoothing` (1.0: not at all).
    """

    # defaults chosen for the shipped model by `vljepa tune-tracker` on its 30 validation
    # episodes, with the transition rates of config/robot_states.yaml (docs/evaluation.md):
    # no smoothing, margin or dwell beyond the transition model's filtering
    temperature: float = 0.2
    smoothing: float = 1.0
    enter_threshold: float = 0.2
    exit_threshold: float = 0.1
    switch_margin: float = 0.0
    min_dwell: float = 0.0
    top_k: int = 3
    # (from, to, changes per second) between labels; pairs not listed never happen directly.
    # Empty: no transition model (the probabilities are only smoothed).
    transitions: tuple[tuple[str, str, float], ...] = ()

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
        seen = set()
        for entry in self.transitions:
            source, target, rate = entry
            if source == target:
                raise ValueError(f"transitions: {source} -> {target} goes from a label to itself")
            if (source, target) in seen:
                raise ValueError(f"transitions: {source} -> {target} is given twice")
            seen.add((source, target))
            if not (isinstance(rate, (int, float)) and 0 <= rate < 1e6):
                raise ValueError(
                    f"transitions: {source} -> {target} needs a rate >= 0 "
                    f"(changes per second), got {rate!r}"
                )


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
        rates = transition_generator(labels, self.config.transitions)
        self.labels = labels
        self._matrix = matrix / norms
        self._rates = rates
        self._carry: dict[int, np.ndarray] = {}  # step interval (ms) -> transition matrix
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next step starts from "unknown"."""
        self._smoothed: np.ndarray | None = None
        self._belief: np.ndarray | None = None  # transition model: filtered probabilities
        self._last_ns: int | None = None
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
        evidence = probs if self._rates is None else self._filter(probs, stamp_ns)
        if self._smoothed is None:
            self._smoothed = evidence.copy()
        else:
            self._smoothed = (1 - cfg.smoothing) * self._smoothed + cfg.smoothing * evidence
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

    def _filter(self, probs: np.ndarray, stamp_ns: int) -> np.ndarray:
        """One forward step of the hidden Markov model: carry the belief over the time since the
        last step, weigh it by this step's probabilities."""
        assert self._rates is not None
        if self._belief is None or self._last_ns is None:
            belief = probs.astype(np.float64)
        else:
            interval_ms = max(0, round((stamp_ns - self._last_ns) / 1e6))
            carry = self._carry.get(interval_ms)
            if carry is None:
                if len(self._carry) >= 64:  # irregular steps: keep the cache bounded
                    self._carry.clear()
                carry = self._carry[interval_ms] = transition_matrix(
                    self._rates, interval_ms / 1000.0
                )
            belief = (self._belief @ carry) * probs
            total = belief.sum()
            # evidence against every state the model allows (underflow): start from the step
            belief = belief / total if total > 1e-300 else probs.astype(np.float64)
        self._belief = belief
        self._last_ns = stamp_ns
        return belief

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


def transition_generator(
    labels: Sequence[str], transitions: Sequence[tuple[str, str, float]]
) -> np.ndarray | None:
    """The rate matrix Q (L, L) of a continuous-time Markov chain over `labels` (off-diagonal:
    changes per second; rows sum to 0), or None without transitions.

    Raises:
        ValueError: a transition names a label that is not in `labels`.
    """
    if not transitions:
        return None
    index = {label: i for i, label in enumerate(labels)}
    rates = np.zeros((len(labels), len(labels)))
    for source, target, rate in transitions:
        for name in (source, target):
            if name not in index:
                raise ValueError(
                    f"transition {source} -> {target} names '{name}', which is not a label "
                    f"({', '.join(labels)})"
                )
        rates[index[source], index[target]] = rate
    np.fill_diagonal(rates, -rates.sum(axis=1))
    return rates


def transition_matrix(rates: np.ndarray, seconds: float) -> np.ndarray:
    """P(state after `seconds` | state now) = expm(rates * seconds): scaling and squaring of a
    Taylor series (rows of the result sum to 1)."""
    scaled = rates * seconds
    norm = float(np.abs(scaled).sum(axis=1).max())
    squarings = max(0, int(np.ceil(np.log2(norm / 0.5)))) if norm > 0 else 0
    scaled = scaled / 2.0**squarings
    out = np.eye(len(rates))
    term = np.eye(len(rates))
    for k in range(1, 13):
        term = term @ scaled / k
        out = out + term
    for _ in range(squarings):
        out = out @ out
    out = np.clip(out, 0.0, None)
    return out / out.sum(axis=1, keepdims=True)
