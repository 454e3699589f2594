"""StateTracker: instant labels, hysteresis, minimum dwell, unknown, top-k, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vljepa_ros.stream.state_tracker import (
    UNKNOWN,
    StateTracker,
    StateTrackerConfig,
    phase_chain,
    transition_matrix,
)

NS = 1_000_000_000
LABELS = ["idle", "reaching", "grasping"]
EYE = np.eye(3, 8, dtype=np.float32)  # three orthogonal label embeddings in 8-D


# The mechanism under test, independent of the tuned defaults: smoothing, hysteresis, dwell.
MECHANISM = {
    "temperature": 0.1,
    "smoothing": 0.5,
    "enter_threshold": 0.5,
    "exit_threshold": 0.3,
    "switch_margin": 0.15,
    "min_dwell": 0.5,
    "lag_steps": 0,  # each step's own label (the lag has its own tests below)
}


def _tracker(**kwargs: float) -> StateTracker:
    return StateTracker(LABELS, EYE, StateTrackerConfig(**{**MECHANISM, **kwargs}))


def _run(tracker: StateTracker, indices: list[int], hz: float = 10.0) -> list:
    return [tracker.step(EYE[i], round(k * NS / hz)) for k, i in enumerate(indices)]


def test_instant_label_is_the_nearest_prompt() -> None:
    """Each step's instant label is the label whose embedding is closest (cosine)."""
    tracker = _tracker()
    for i, label in enumerate(LABELS):
        noisy = EYE[i] + 0.1 * np.random.default_rng(i).standard_normal(8).astype(np.float32)
        estimate = tracker.step(noisy, i * NS)
        assert estimate.instant_label == label
        assert estimate.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_single_odd_step_does_not_flip_the_stable_label() -> None:
    """One outlier step changes the instant label but not the stabilised one (hysteresis)."""
    out = _run(_tracker(), [0] * 10 + [1] + [0] * 5)
    assert out[10].instant_label == "reaching"
    assert all(e.label == "idle" for e in out[1:])
    assert sum(e.changed for e in out) == 1


def test_sustained_change_switches_after_smoothing_and_dwell() -> None:
    """A lasting change switches the stable label once, a few steps later, with `since` set."""
    out = _run(_tracker(min_dwell=0.5), [0] * 10 + [2] * 10)
    switch = next(k for k, e in enumerate(out) if k > 0 and e.changed)
    assert 10 < switch <= 14
    assert out[switch].label == "grasping"
    assert out[switch].since_ns == round(switch * NS / 10)
    assert all(e.label == "grasping" for e in out[switch:])


def test_minimum_dwell_holds_a_fresh_label() -> None:
    """Within min_dwell of entering a label no other change happens, however clear."""
    out = _run(_tracker(min_dwell=2.0, smoothing=1.0), [0] * 3 + [1] * 30)
    first_change_away = next(k for k, e in enumerate(out) if e.label == "reaching")
    assert first_change_away * 0.1 >= 2.0 - 1e-9


def test_nothing_confident_gives_unknown() -> None:
    """An embedding equally far from every prompt yields "unknown" and zero confidence."""
    tracker = _tracker()
    middle = EYE.sum(axis=0)
    estimate = tracker.step(middle, 0)
    assert estimate.label == UNKNOWN
    assert estimate.confidence == 0.0
    assert not estimate.changed


def test_stable_label_falls_back_to_unknown_when_confidence_drops() -> None:
    """After a label held long enough, an ambiguous stream drops it to "unknown"."""
    tracker = _tracker(min_dwell=0.0, exit_threshold=0.4)  # 3 labels: ambiguity is 1/3 each
    _run(tracker, [0] * 5)
    middle = EYE.sum(axis=0)
    labels = [tracker.step(middle, (5 + k) * NS // 10).label for k in range(10)]
    assert labels[-1] == UNKNOWN


def test_top_k_candidates_are_sorted_by_probability() -> None:
    """Candidates are the k most probable labels of the step, best first."""
    tracker = StateTracker(LABELS, EYE, StateTrackerConfig(top_k=2))
    estimate = tracker.step(0.9 * EYE[2] + 0.4 * EYE[0], 0)
    assert estimate.candidates == ["grasping", "idle"]
    assert estimate.scores[0] >= estimate.scores[1]


def test_set_labels_replaces_the_labels_and_restarts() -> None:
    """New labels take effect at once and the stable label starts from unknown again."""
    tracker = _tracker()
    _run(tracker, [0] * 5)
    assert tracker.label == "idle"
    tracker.set_labels(["holding", "empty"], EYE[:2])
    assert tracker.label == UNKNOWN
    assert tracker.step(EYE[1], 0).instant_label == "empty"


@pytest.mark.parametrize(
    ("labels", "matrix", "message"),
    [
        ([], np.zeros((0, 8)), "empty"),
        (["a", "a"], EYE[:2], "duplicate"),
        (["a", "unknown"], EYE[:2], "reserved"),
        (["a", "b"], EYE, r"\(2, D\)"),
        (["a", "b"], np.zeros((2, 8)), "all zeros"),
    ],
)
def test_bad_labels_are_rejected(labels: list, matrix: np.ndarray, message: str) -> None:
    """Empty, duplicate, reserved or mismatched labels raise ValueError with the reason."""
    with pytest.raises(ValueError, match=message):
        StateTracker(labels, matrix, StateTrackerConfig())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0},
        {"smoothing": 0},
        {"enter_threshold": 0.2, "exit_threshold": 0.3},
        {"min_dwell": -1},
        {"top_k": 0},
        {"transitions": (("idle", "idle", 0.5),)},
        {"transitions": (("idle", "reaching", -0.5),)},
        {"transitions": (("idle", "reaching", 0.5), ("idle", "reaching", 0.1))},
        {"duration_shapes": (("idle", 3),)},  # no transitions
        {"duration_shapes": (("idle", 0),), "transitions": (("idle", "reaching", 0.5),)},
        {"duration_shapes": (("idle", 2.5),), "transitions": (("idle", "reaching", 0.5),)},
        {"duration_shapes": (("idle", 2), ("idle", 3)), "transitions": (("idle", "reaching", 1),)},
        {"lag_steps": -1},
        {"lag_steps": 2.0},
        {"lag_steps": True},
        {"lag_steps": 101},
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict) -> None:
    """Out-of-range tracker settings raise ValueError naming the setting."""
    with pytest.raises(ValueError, match=next(iter(kwargs)).split("_")[0]):
        StateTrackerConfig(**kwargs)


def test_wrong_embedding_size_is_rejected() -> None:
    """An embedding of another dimension than the labels' raises ValueError."""
    with pytest.raises(ValueError, match="values"):
        _tracker().step(np.ones(5, dtype=np.float32), 0)


# A task that only ever goes idle -> reaching -> grasping -> idle, about every 2 s.
CYCLE = (("idle", "reaching", 0.5), ("reaching", "grasping", 0.5), ("grasping", "idle", 0.5))
RAW = {"smoothing": 1.0, "min_dwell": 0.0, "switch_margin": 0.0, "enter_threshold": 0.4,
       "exit_threshold": 0.1, "temperature": 0.3}  # fmt: skip


def test_transition_matrix_is_the_markov_chain_over_the_interval() -> None:
    """Rows are probabilities; no time is the identity; two intervals compose; a two-state
    chain matches its closed form P(stay in a) = (b + a exp(-(a + b) t)) / (a + b)."""
    chain = phase_chain(LABELS, CYCLE)
    assert chain is not None
    rates = chain.rates
    np.testing.assert_allclose(rates.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(transition_matrix(rates, 0.0), np.eye(3))
    tenth = transition_matrix(rates, 0.1)
    np.testing.assert_allclose(tenth.sum(axis=1), 1.0)
    np.testing.assert_allclose(transition_matrix(rates, 0.2), tenth @ tenth, atol=1e-9)
    a, b, t = 0.7, 0.2, 3.0
    two = phase_chain(["a", "b"], (("a", "b", a), ("b", "a", b)))
    assert two is not None
    stay = transition_matrix(two.rates, t)[0, 0]
    assert stay == pytest.approx((b + a * np.exp(-(a + b) * t)) / (a + b), rel=1e-9)
    assert phase_chain(LABELS, ()) is None


def test_transition_model_ignores_a_step_the_task_does_not_take() -> None:
    """Idle, then one clear 'grasping' step: without the transition model the bare tracker
    jumps to it; with it (idle never goes straight to grasping) the label stays idle."""
    steps = [0] * 10 + [2] + [0] * 5
    bare = _run(_tracker(**RAW), steps)
    assert bare[10].label == "grasping"
    modelled = _run(_tracker(**RAW, transitions=CYCLE), steps)
    assert [e.label for e in modelled[1:]] == ["idle"] * 15
    assert modelled[10].instant_label == "grasping"  # the instant label is not filtered


def test_transition_model_follows_the_changes_the_task_makes() -> None:
    """Idle -> reaching -> grasping, 1 s each at 10 Hz: the filtered label follows each change
    within two steps."""
    out = _run(_tracker(**RAW, transitions=CYCLE), [0] * 10 + [1] * 10 + [2] * 10)
    labels = [e.label for e in out]
    assert labels[:10] == ["idle"] * 10
    assert labels[12:20] == ["reaching"] * 8
    assert labels[22:] == ["grasping"] * 8


def test_transition_model_carries_the_belief_over_the_real_interval() -> None:
    """A clear 'grasping' step after idle wins only when enough time has passed for the task
    to have gone through reaching: the belief is carried over the stamps' interval."""
    soon = _tracker(**RAW, transitions=CYCLE)
    _run(soon, [0] * 10)
    assert soon.step(EYE[2], 1 * NS).label == "idle"  # 0.1 s after the last step
    late = _tracker(**RAW, transitions=CYCLE)
    _run(late, [0] * 10)
    assert late.step(EYE[2], 9 * NS).label == "grasping"  # 8 s later: anything may have happened


def test_transitions_must_name_the_labels() -> None:
    """Rates naming a label the tracker does not have are rejected, also on set_labels, and
    the tracker keeps its labels."""
    with pytest.raises(ValueError, match="'dancing', which is not a label"):
        StateTracker(LABELS, EYE, StateTrackerConfig(transitions=(("idle", "dancing", 1.0),)))
    tracker = _tracker(transitions=CYCLE)
    with pytest.raises(ValueError, match="'idle', which is not a label"):
        tracker.set_labels(["holding", "empty"], EYE[:2])
    assert tracker.labels == LABELS


def test_duration_shapes_keep_the_mean_and_make_durations_regular() -> None:
    """A state of k phases lasts as long on average (1 / its exit rate) but rarely ends early:
    after half its mean a memoryless state has left with probability 1 - exp(-1/2) = 0.39, a
    state of 8 phases with about 0.05 (Erlang's distribution)."""
    rates = (("idle", "reaching", 0.5),)  # reaching is never left: it collects the exits
    for shapes, left_at_half in [((), 0.3935), ((("idle", 8),), 0.0511)]:
        chain = phase_chain(["idle", "reaching"], rates, shapes)
        assert chain is not None
        start = np.zeros(len(chain.rates))
        start[0] = 1.0  # the first phase of idle: it has just begun
        after = chain.labels(start @ transition_matrix(chain.rates, 1.0))  # mean is 2 s
        assert after[1] == pytest.approx(left_at_half, abs=0.002)
        # mean time in idle: expected phases-to-go / rate, from the fundamental matrix
        inner = chain.rates[: chain.phases[0], : chain.phases[0]]
        assert -np.linalg.inv(inner)[0].sum() == pytest.approx(2.0)


def test_duration_shapes_expect_a_regular_state_to_end_on_time() -> None:
    """Idle for 2 s (its usual length) and then a step that looks like reaching: with idle
    of 8 phases the label follows at once; a memoryless idle waits for more evidence."""
    soft = {**RAW, "temperature": 0.6}
    steps = [0] * 20 + [1] * 4
    memoryless = _run(_tracker(**soft, transitions=CYCLE), steps)
    regular = _run(_tracker(**soft, transitions=CYCLE, duration_shapes=(("idle", 8),)), steps)
    first = {
        name: next(k for k, e in enumerate(out) if e.label == "reaching")
        for name, out in [("memoryless", memoryless), ("regular", regular)]
    }
    assert first["regular"] == 20
    assert first["memoryless"] > 20
    # and early in a regular state the same step is not taken: idle has only just begun
    early = _run(
        _tracker(**soft, transitions=CYCLE, duration_shapes=(("idle", 8),)),
        [0] * 3 + [1] + [0] * 3,
    )
    assert [e.label for e in early] == ["idle"] * 7


def test_duration_shapes_must_name_the_labels() -> None:
    with pytest.raises(ValueError, match="duration shape of dancing names 'dancing'"):
        StateTracker(
            LABELS, EYE, StateTrackerConfig(transitions=CYCLE, duration_shapes=(("dancing", 2),))
        )


def test_lag_reports_each_step_lag_steps_later_and_flush_gives_the_rest() -> None:
    """With lag_steps 3 the first three steps describe no step yet (label unknown, no stamp),
    then every step describes the one three before it; the flush gives the last three and the
    tracker starts over. Without a lag (or without transitions) a step describes itself."""
    stamps = [round(k * NS / 10) for k in range(12)]
    lagged = _tracker(**RAW, transitions=CYCLE, lag_steps=3)
    out = _run(lagged, [0] * 12)
    assert [e.label_stamp_ns for e in out[:3]] == [None] * 3
    assert [e.label for e in out[:3]] == [UNKNOWN] * 3
    assert [e.label_stamp_ns for e in out[3:]] == stamps[:9]
    assert all(e.label == "idle" for e in out[3:])
    rest = lagged.flush()
    assert [e.label_stamp_ns for e in rest] == stamps[9:]
    assert [e.label for e in rest] == ["idle"] * 3
    assert lagged.flush() == []
    assert lagged.step(EYE[0], 13 * NS).label_stamp_ns is None  # started over
    for tracker in (_tracker(**RAW, transitions=CYCLE), _tracker(**RAW, lag_steps=3)):
        assert [e.label_stamp_ns for e in _run(tracker, [0] * 4)] == stamps[:4]
        assert tracker.flush() == []


def test_lagged_label_is_the_posterior_given_the_newer_steps() -> None:
    """Known answer: the lagged label and its confidence are the argmax and the marginal of a
    step's state given every step up to lag_steps after it, summed over all state paths by
    brute force (initial belief: the first step's probabilities; then the chain's 0.1 s
    transition matrix and each step's probabilities)."""
    rng = np.random.default_rng(3)
    steps = EYE[rng.integers(0, 3, 7)] + 0.6 * rng.standard_normal((7, 8)).astype(np.float32)
    rates = (
        (*CYCLE[0][:2], 2.0),
        (*CYCLE[1][:2], 3.0),
        (*CYCLE[2][:2], 1.5),
        ("idle", "grasping", 0.5),
    )
    config = {**RAW, "enter_threshold": 0.0, "exit_threshold": 0.0, "transitions": rates}
    tracker = _tracker(**config, lag_steps=2)
    out = [tracker.step(v, round(k * NS / 10)) for k, v in enumerate(steps)] + tracker.flush()
    described = [e for e in out if e.label_stamp_ns is not None]
    assert len(described) == 7
    chain = phase_chain(LABELS, rates)
    assert chain is not None
    carry = transition_matrix(chain.rates, 0.1)
    probs = [e.probabilities for e in out[:7]]
    for k, estimate in enumerate(described):
        seen = range(min(k + 2, 6) + 1)  # the steps this label has seen
        marginal = np.zeros(3)
        for path in itertools.product(range(3), repeat=len(seen)):
            weight = probs[0][path[0]]
            for j in seen[1:]:
                weight *= carry[path[j - 1], path[j]] * probs[j][path[j]]
            marginal[path[k]] += weight
        marginal /= marginal.sum()
        assert estimate.label == LABELS[int(np.argmax(marginal))], k
        assert estimate.confidence == pytest.approx(marginal.max(), rel=1e-6), k


def test_lag_corrects_the_step_where_the_state_changed() -> None:
    """Idle, then reaching from step 10 on, where the step of the change looks only a little
    more like reaching: the filter keeps idle there (the task rarely changes in 0.1 s); with
    a lag, the reaching steps after it move the change back to where it happened."""
    blend = np.float32(0.55) * EYE[0] + np.float32(0.83) * EYE[1]
    steps = [EYE[0]] * 10 + [blend] + [EYE[1]] * 9
    filtered = _tracker(**RAW, transitions=CYCLE)
    lagged = _tracker(**RAW, transitions=CYCLE, lag_steps=2)
    now = [filtered.step(v, k * NS // 10) for k, v in enumerate(steps)]
    later = [lagged.step(v, k * NS // 10) for k, v in enumerate(steps)] + lagged.flush()
    assert now[10].label == "idle"
    assert now[11].label == "reaching"
    by_step = {e.label_stamp_ns: e for e in later if e.label_stamp_ns is not None}
    assert [by_step[k * NS // 10].label for k in range(20)] == ["idle"] * 10 + ["reaching"] * 10
    assert by_step[NS].changed
    assert by_step[NS].since_ns == NS
