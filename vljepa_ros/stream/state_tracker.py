"""Robot-state labels read out of the embedding stream.

Each step's embedding is compared with the label prompts' embeddings (cosine), turned into
probabilities (softmax with a temperature) and an instant label. The stabilised label follows
smoothed probabilities with hysteresis and a minimum dwell, so a single odd step does not flip
it, and falls back to "unknown" when nothing is confident. Time is passed in.

With transition rates (how often the task goes from one state to another, per second), the
probabilities are first filtered as a hidden Markov model: the belief of the previous step is
carried forward over the time since it with the rates (a continuous-time Markov chain, so any
step rate works) and multiplied by this step's probabilities. A state the task rarely enters
from the current one then needs stronger evidence than one it usually goes to next. With
duration shapes, a state is a chain of that many phases (an Erlang-distributed duration instead
of a memoryless one), so the model expects a regular state to end near its usual length.

With a transition model, the stabilised label may also wait `lag_steps` steps (a fixed-lag
smoother): the label of a step is then decided from the filtered belief of that step and the
evidence of the steps after it (a backward pass over the window), and reported that many steps
later with the step's own stamp (`label_stamp_ns`). A clip ends at its step, so most of the
frames it shows are older than the step; a state change shows clearly in the clip only a few
steps after it happens, and the smoother lets those steps correct the label of the step where
it happened, at the cost of `lag_steps` steps of latency.
"""

from __future__ import annotations

from collections import deque
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
    the hidden Markov model's filtered ones (with `lag_steps`, its fixed-lag smoothed ones),
    smoothed further by `smoothing` (1.0: not at all).
    """

    # defaults chosen for the shipped model by `vljepa tune-tracker --lag-steps 3` on its 30
    # validation episodes, with the transition model of config/robot_states.yaml
    # (docs/evaluation.md): no exponential smoothing or margin, a 0.4 s dwell
    temperature: float = 0.5
    smoothing: float = 1.0
    enter_threshold: float = 0.4
    exit_threshold: float = 0.1
    switch_margin: float = 0.0
    min_dwell: float = 0.4
    top_k: int = 3
    # (from, to, changes per second) between labels; pairs not listed never happen directly.
    # Empty: no transition model (the probabilities are only smoothed).
    transitions: tuple[tuple[str, str, float], ...] = ()
    # (label, k): the label's duration is Erlang with k phases (its mean from the rates out of
    # it; k = mean^2 / variance of its durations); labels not listed: 1 (memoryless)
    duration_shapes: tuple[tuple[str, int], ...] = ()
    # steps the stabilised label waits for newer evidence (fixed-lag smoothing of the transition
    # model's belief; no effect without transitions): each label is reported this many steps
    # after the step it describes (3: 0.3 s at 10 Hz; docs/evaluation.md, "The fixed lag")
    lag_steps: int = 3

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
        if self.duration_shapes and not self.transitions:
            raise ValueError("duration_shapes need transitions (the rates give the durations)")
        lag = self.lag_steps
        if isinstance(lag, bool) or not isinstance(lag, int) or not 0 <= lag <= 100:
            raise ValueError(f"lag_steps must be a whole number in 0..100, got {lag!r}")
        named = [label for label, _ in self.duration_shapes]
        if len(set(named)) != len(named):
            raise ValueError(f"duration_shapes: a label is given twice in {named}")
        for label, shape in self.duration_shapes:
            if isinstance(shape, bool) or not isinstance(shape, int) or not 1 <= shape <= 64:
                raise ValueError(
                    f"duration_shapes: {label} needs a whole number of phases in 1..64, "
                    f"got {shape!r}"
                )


@dataclass(frozen=True)
class StateEstimate:
    """The tracker's output for one step (the fields of a StateLabel message).

    The instant fields are about the step given to `step`; the stabilised ones (label,
    confidence, changed, since_ns) about the step captured at `label_stamp_ns`, which is
    `lag_steps` steps earlier (the same step without a lag). While the first `lag_steps` steps
    after a reset wait for newer evidence, `label_stamp_ns` is None and the label "unknown".
    """

    label: str
    confidence: float
    instant_label: str
    instant_confidence: float
    candidates: list[str]
    scores: list[float]
    changed: bool
    since_ns: int
    probabilities: np.ndarray  # (L,) instant probabilities, label order
    label_stamp_ns: int | None


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
        chain = phase_chain(labels, self.config.transitions, self.config.duration_shapes)
        self.labels = labels
        self._matrix = matrix / norms
        self._chain = chain
        self._carry: dict[int, np.ndarray] = {}  # step interval (ms) -> transition matrix
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next step starts from "unknown"."""
        self._smoothed: np.ndarray | None = None
        self._belief: np.ndarray | None = None  # transition model: filtered phase probabilities
        self._last_ns: int | None = None
        self._current = -1  # index into labels; -1 is unknown
        self._since_ns: int | None = None
        # lag_steps > 0: the newest lag_steps + 1 steps (filtered phase belief, this step's
        # phase evidence, transition matrix from the step before, stamp, instant probabilities)
        # and how many of the newest still wait for their stabilised label
        self._window: deque[tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]] = deque(
            maxlen=self.config.lag_steps + 1
        )
        self._pending = 0

    @property
    def label(self) -> str:
        return UNKNOWN if self._current < 0 else self.labels[self._current]

    def step(self, embedding: np.ndarray, stamp_ns: int) -> StateEstimate:
        """Classify one embedding (D,) captured at `stamp_ns` and update the stable label (of
        this step, or with `lag_steps` of the step that many steps earlier)."""
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
        if self._chain is None:
            changed, label_stamp = self._decide(probs, stamp_ns), stamp_ns
        else:
            filtered = self._filter(probs, stamp_ns)
            if not cfg.lag_steps:
                changed, label_stamp = self._decide(filtered, stamp_ns), stamp_ns
            elif self._pending > cfg.lag_steps:  # the oldest step has its lag of newer ones
                changed, label_stamp = self._describe(len(self._window) - self._pending)
            else:
                changed, label_stamp = False, None
        return self._estimate(probs, changed, label_stamp)

    def flush(self) -> list[StateEstimate]:
        """The stabilised labels of the steps still waiting for their lag (oldest first, each
        from the evidence there is), as the end of a stream gives them; then start over.
        Without `lag_steps`: nothing."""
        out = []
        while self._pending:
            at = len(self._window) - self._pending
            changed, label_stamp = self._describe(at)
            out.append(self._estimate(self._window[at][4], changed, label_stamp))
        self.reset()
        return out

    def _describe(self, at: int) -> tuple[bool, int]:
        """Decide the stabilised label of window step `at` from its filtered belief and the
        evidence of the window's newer steps (one backward pass); it no longer waits."""
        assert self._chain is not None
        window = list(self._window)
        backward = np.ones(len(self._chain.rates))
        for _, evidence, carry, _, _ in reversed(window[at + 1 :]):
            backward = carry @ (evidence * backward)
            backward /= backward.sum()
        posterior = self._chain.labels(window[at][0] * backward)
        total = posterior.sum()
        posterior = posterior / total if total > 1e-300 else self._chain.labels(window[at][0])
        self._pending -= 1
        stamp = window[at][3]
        return self._decide(posterior, stamp), stamp

    def _decide(self, evidence: np.ndarray, stamp_ns: int) -> bool:
        """Move the stable label on with one step's evidence (the step captured at `stamp_ns`);
        whether it changed."""
        cfg = self.config
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
        return changed

    def _estimate(self, probs: np.ndarray, changed: bool, label_stamp: int | None) -> StateEstimate:
        order = np.argsort(-probs, kind="stable")[: self.config.top_k]
        best = int(order[0])
        smoothed, current = self._smoothed, self._current
        return StateEstimate(
            label=self.label,
            confidence=0.0 if current < 0 or smoothed is None else float(smoothed[current]),
            instant_label=self.labels[best],
            instant_confidence=float(probs[best]),
            candidates=[self.labels[i] for i in order],
            scores=[float(probs[i]) for i in order],
            changed=changed,
            since_ns=self._since_ns if self._since_ns is not None else 0,
            probabilities=probs,
            label_stamp_ns=label_stamp,
        )

    def _filter(self, probs: np.ndarray, stamp_ns: int) -> np.ndarray:
        """One forward step of the hidden Markov model: carry the belief over the time since the
        last step, weigh each label's phases by this step's probability of the label; the
        labels' probabilities (their phases summed)."""
        assert self._chain is not None
        chain = self._chain
        evidence = np.repeat(probs, chain.phases)
        carry = np.eye(len(chain.rates))  # (a stream's first step: no step before it)
        if self._belief is None or self._last_ns is None:
            belief = chain.spread(probs)
        else:
            interval_ms = max(0, round((stamp_ns - self._last_ns) / 1e6))
            cached = self._carry.get(interval_ms)
            if cached is None:
                if len(self._carry) >= 64:  # irregular steps: keep the cache bounded
                    self._carry.clear()
                cached = self._carry[interval_ms] = transition_matrix(
                    chain.rates, interval_ms / 1000.0
                )
            carry = cached
            belief = (self._belief @ carry) * evidence
            total = belief.sum()
            # evidence against every state the model allows (underflow): start from the step
            belief = belief / total if total > 1e-300 else chain.spread(probs)
        self._belief = belief
        self._last_ns = stamp_ns
        if self.config.lag_steps:  # (with a chain only: _filter is not called without one)
            self._window.append((belief, evidence, carry, stamp_ns, probs))
            self._pending += 1
        return chain.labels(belief)

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


@dataclass(frozen=True)
class PhaseChain:
    """The continuous-time Markov chain the tracker filters with: each label is `phases[i]`
    phases in a row (all leaving at k times the label's exit rate, so its duration is Erlang
    with the mean the rates give), the last phase going on to the first phase of the others."""

    rates: np.ndarray  # (P, P) generator over all phases; rows sum to 0
    phases: np.ndarray  # (L,) phases per label
    starts: np.ndarray  # (L,) index of each label's first phase

    def spread(self, probs: np.ndarray) -> np.ndarray:
        """A belief over phases with the labels' probabilities, each label's split evenly."""
        return np.repeat(np.asarray(probs, dtype=np.float64) / self.phases, self.phases)

    def labels(self, belief: np.ndarray) -> np.ndarray:
        """The labels' probabilities: each label's phases summed."""
        return np.add.reduceat(belief, self.starts)


def phase_chain(
    labels: Sequence[str],
    transitions: Sequence[tuple[str, str, float]],
    duration_shapes: Sequence[tuple[str, int]] = (),
) -> PhaseChain | None:
    """The phase chain over `labels` from the rates (changes per second) and the duration
    shapes (phases per label, default 1), or None without transitions.

    Raises:
        ValueError: a transition or shape names a label that is not in `labels`.
    """
    if not transitions:
        return None
    index = {label: i for i, label in enumerate(labels)}

    def find(name: str, what: str) -> int:
        if name not in index:
            raise ValueError(f"{what} names '{name}', which is not a label ({', '.join(labels)})")
        return index[name]

    count = len(labels)
    between = np.zeros((count, count))
    for source, target, rate in transitions:
        what = f"transition {source} -> {target}"
        between[find(source, what), find(target, what)] = rate
    phases = np.ones(count, dtype=np.int64)
    for label, shape in duration_shapes:
        phases[find(label, f"duration shape of {label}")] = shape
    starts = np.concatenate([[0], np.cumsum(phases)[:-1]])
    leave = between.sum(axis=1)
    rates = np.zeros((int(phases.sum()), int(phases.sum())))
    for i in range(count):
        first, k = int(starts[i]), int(phases[i])
        for p in range(k - 1):  # on to the next phase of the same label
            rates[first + p, first + p + 1] = k * leave[i]
        rates[first + k - 1, starts] = k * between[i]  # the last phase leaves the label
    np.fill_diagonal(rates, -rates.sum(axis=1))  # between[i, i] is 0: no self-transitions
    return PhaseChain(rates=rates, phases=phases, starts=starts)


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
