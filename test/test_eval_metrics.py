"""Evaluation metrics on hand-made sequences with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vljepa_ros.train import metrics


def seq(text: str) -> list[str]:
    """'AAB-' -> ['A', 'A', 'B', 'unknown']: one character per step, '-' is unknown."""
    return [metrics.UNKNOWN if c == "-" else c for c in text]


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        ("AAAA", "AAAA", 1.0),
        ("AABB", "ABBB", 0.75),
        ("AABB", "--BB", 0.5),
        ("ABCD", "DCBA", 0.0),
    ],
)
def test_accuracy(truth: str, pred: str, expected: float) -> None:
    """Accuracy is the share of equal steps; "unknown" counts as wrong."""
    assert metrics.accuracy(seq(truth), seq(pred)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.accuracy(["A"], ["A", "B"]),
        lambda: metrics.accuracy([], []),
        lambda: metrics.macro_f1([], []),
        lambda: metrics.edit_score(["A"], []),
        lambda: metrics.segment_counts(["A"], ["A"], 0.0),
        lambda: metrics.flicker_ratio(1, 1, 0.0),
        lambda: metrics.recall_at_k(np.zeros((3, 2))),
        lambda: metrics.meaning_r1(np.ones((3, 2), dtype=bool)),
        lambda: metrics.meaning_r1(~np.eye(2, dtype=bool)),
        lambda: metrics.nearest_indices([], [1]),
        lambda: metrics.nearest_indices([3, 1], [1]),
        lambda: metrics.cider_d([["a"]], ["a", "b"]),
        lambda: metrics.cider_d([[]], ["a"]),
    ],
)
def test_bad_input_is_refused(call) -> None:
    """Mismatched lengths, empty input and out-of-range parameters raise ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - the messages differ per case
        call()


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        ("AAAA", "AAAA", 1.0),
        # F1(A) = 2*1/(2*1+0+1) = 2/3, F1(B) = 2*2/(2*2+1+0) = 4/5
        ("AABB", "ABBB", (2 / 3 + 4 / 5) / 2),
        # only A is in the truth: the unknown step costs A's recall, no class gains a FP
        ("AA", "-A", 2 / 3),
        # C never occurs in the truth: it is not averaged, but its steps cost A's recall
        ("AAAB", "ACAB", (2 * 2 / (2 * 2 + 1) + 1.0) / 2),
    ],
)
def test_macro_f1_over_classes_present_in_truth(truth: str, pred: str, expected: float) -> None:
    """Macro-F1 averages per-class F1 over the ground-truth classes only."""
    assert metrics.macro_f1(seq(truth), seq(pred)) == pytest.approx(expected)


def test_confusion_matrix_puts_unknown_and_foreign_labels_last() -> None:
    """Rows are truth, columns the labels then one column for unknown or any other label."""
    matrix = metrics.confusion_matrix(seq("AABBC"), seq("AB-BX"), ["A", "B", "C"])
    assert matrix.tolist() == [
        [1, 1, 0, 0],
        [0, 1, 0, 1],
        [0, 0, 0, 1],
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("A", [("A", 0, 1)]),
        ("AAB-B", [("A", 0, 2), ("B", 2, 3), ("unknown", 3, 4), ("B", 4, 5)]),
    ],
)
def test_runs(text: str, expected: list) -> None:
    """A sequence splits into maximal runs of equal labels with [start, end) bounds."""
    assert [(r.label, r.start, r.end) for r in metrics.runs(seq(text))] == expected


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("", "", 0), ("ABC", "", 3), ("ABC", "ABC", 0), ("ABC", "AXC", 1), ("ABCD", "BCDE", 2)],
)
def test_levenshtein(a: str, b: str, distance: int) -> None:
    """Unit-cost edit distance between label sequences."""
    assert metrics.levenshtein(list(a), list(b)) == distance


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        ("AAABBB", "AAABBB", 100.0),
        # durations do not matter, only the order of segments
        ("AAAABB", "ABBBBB", 100.0),
        # one missing segment: distance 1 over max(1, 2) runs
        ("AAABBB", "AAAAAA", 50.0),
        # flicker: runs ABAB vs AB -> 2 insertions over 4 runs
        ("AAABBB", "AAABAB", 50.0),
        # an unknown run is a segment of its own: -AB vs AB -> 1 over 3
        ("AAABBB", "-AABBB", 100.0 * (1 - 1 / 3)),
        ("ABC", "CBA", 100.0 * (1 - 2 / 3)),
    ],
)
def test_edit_score(truth: str, pred: str, expected: float) -> None:
    """Segmental edit score: 100 * (1 - Levenshtein(runs) / longer run count)."""
    assert metrics.edit_score(seq(truth), seq(pred)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("truth", "pred", "overlap", "counts"),
    [
        # A: IoU 4/10 = 0.4, B: IoU 10/16 = 0.625
        ("A" * 10 + "B" * 10, "A" * 4 + "B" * 16, 0.10, (2, 0, 0)),
        ("A" * 10 + "B" * 10, "A" * 4 + "B" * 16, 0.25, (2, 0, 0)),
        ("A" * 10 + "B" * 10, "A" * 4 + "B" * 16, 0.50, (1, 1, 1)),
        # over-segmentation: the second A run can not take the already matched truth run
        ("A" * 10, "AAAACCAAAA", 0.10, (1, 2, 0)),
        # a predicted unknown run is a false positive
        ("AAAABBBB", "AAAA----", 0.50, (1, 1, 1)),
        # wrong label: no overlap counts
        ("AAAA", "BBBB", 0.10, (0, 1, 1)),
    ],
)
def test_segment_counts(truth: str, pred: str, overlap: float, counts: tuple) -> None:
    """Predicted runs match same-label truth runs at IoU >= overlap, each truth run once."""
    got = metrics.segment_counts(seq(truth), seq(pred), overlap)
    assert (got.tp, got.fp, got.fn) == counts


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        ("A" * 10 + "B" * 10, "A" * 4 + "B" * 16, {10: 100.0, 25: 100.0, 50: 50.0}),
        # P = 1/3, R = 1 -> F1 = 0.5
        ("A" * 10, "AAAACCAAAA", {10: 50.0, 25: 50.0, 50: 0.0}),
        ("AAAA", "BBBB", {10: 0.0, 25: 0.0, 50: 0.0}),
    ],
)
def test_f1_at_thresholds(truth: str, pred: str, expected: dict) -> None:
    """F1@{10,25,50} on sequences whose segment overlaps are known."""
    for k, value in expected.items():
        assert metrics.f1_at(seq(truth), seq(pred), k / 100) == pytest.approx(value)


def test_segment_counts_add_up_across_episodes() -> None:
    """Counts pooled over episodes give the F1 of the pooled tp/fp/fn (MS-TCN style)."""
    total = metrics.segment_counts(seq("AABB"), seq("AABB"), 0.5) + metrics.segment_counts(
        seq("AAAA"), seq("BBBB"), 0.5
    )
    assert (total.tp, total.fp, total.fn) == (2, 1, 1)
    assert total.f1 == pytest.approx(100 * 2 / 3)


@pytest.mark.parametrize(
    ("text", "count"), [("", 0), ("A", 0), ("AAAA", 0), ("AABBA", 2), ("AB-B", 3)]
)
def test_switches(text: str, count: int) -> None:
    """Switches count every change between consecutive steps, to and from unknown too."""
    assert metrics.switches(seq(text)) == count


@pytest.mark.parametrize(
    ("text", "steps", "expected"),
    [("AABBBC", 0, "AABBBC"), ("AABBBC", 1, "AAABBB"), ("AABBBC", 2, "AAAABB"), ("AB", 5, "AA"),
     ("", 2, "")],
)  # fmt: skip
def test_delayed(text: str, steps: int, expected: str) -> None:
    """A delayed sequence is the truth k steps late; its accuracy is the cost of that lag."""
    assert metrics.delayed(seq(text), steps) == seq(expected)
    with pytest.raises(ValueError, match="steps"):
        metrics.delayed(seq(text), -1)


def test_steps_since_change() -> None:
    """Counts restart at every change of the truth."""
    assert metrics.steps_since_change(seq("AAABBA")).tolist() == [0, 1, 2, 0, 1, 0]
    assert metrics.steps_since_change([]).tolist() == []


@pytest.mark.parametrize(
    ("pred", "truth", "minutes", "expected"),
    [
        (10, 5, 2.0, 2.0),
        (3, 6, 0.5, 0.5),
        (0, 0, 1.0, 1.0),
        (4, 0, 1.0, math.inf),
    ],
)
def test_flicker_ratio(pred: int, truth: int, minutes: float, expected: float) -> None:
    """Flicker = predicted switches per minute over ground-truth switches per minute."""
    assert metrics.flicker_ratio(pred, truth, minutes) == expected


def test_flicker_of_a_hand_made_sequence() -> None:
    """A prediction that flips A/B on every step of a one-change truth flickers 19x."""
    truth = seq("A" * 10 + "B" * 10)
    pred = seq("AB" * 10)
    ratio = metrics.flicker_ratio(metrics.switches(pred), metrics.switches(truth), 1 / 30)
    assert ratio == pytest.approx(19.0)


@pytest.mark.parametrize(
    ("similarity", "expected"),
    [
        (np.eye(4), {1: 1.0, 5: 1.0}),
        # query 0 ranks its clip second, query 1 ranks it first
        (np.array([[0.5, 0.9, 0.1], [0.2, 0.8, 0.3]]), {1: 0.5, 2: 1.0}),
        # a tie with another clip counts against the query
        (np.array([[0.7, 0.7], [0.1, 0.9]]), {1: 0.5, 2: 1.0}),
    ],
)
def test_recall_at_k(similarity: np.ndarray, expected: dict) -> None:
    """R@k is the share of queries whose own clip (index = query index) ranks in the top k."""
    assert metrics.recall_at_k(similarity, tuple(expected)) == pytest.approx(expected)


def test_meaning_r1_is_one_over_the_fitting_clips() -> None:
    """Query 0 fits only its clip (1), query 1 fits clips 1 and 2 (1/2), query 2 fits all
    three (1/3): the mean of 1 / fitting clips."""
    fits = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]], dtype=bool)
    assert metrics.meaning_r1(fits) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


@pytest.mark.parametrize(
    ("times", "queries", "expected"),
    [
        ([0, 10, 20], [0, 4, 6, 14, 25, -5], [0, 0, 1, 1, 2, 0]),
        ([0, 10], [5], [0]),  # a tie goes to the earlier output
        ([7], [0, 100], [0, 0]),
    ],
)
def test_nearest_indices(times: list, queries: list, expected: list) -> None:
    """Each query time is matched to the nearest output time."""
    assert metrics.nearest_indices(times, queries).tolist() == expected


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("The robot's arm, lifting.", "the robot 's arm lifting"),
        ("  Two   spaces!?", "two spaces"),
        ("", ""),
    ],
)
def test_tokenize(text: str, tokens: str) -> None:
    """Lower-cased, punctuation split off and dropped, as the PTB tokenizer does."""
    assert metrics.tokenize(text) == tokens


def test_cider_d_rewards_the_right_caption() -> None:
    """An exact (case/punctuation-insensitive) caption scores high, an unrelated one zero."""
    refs = [
        ["the robot lifts the red block"],
        ["the arm carries the blue ball sideways"],
        ["the gripper closes on the green can"],
        ["the robot arm is idle"],
    ]
    good = ["The robot lifts the red block.", *(r[0] for r in refs[1:])]
    bad = ["purple elephants dance", *(r[0] for r in refs[1:])]
    mean_good, scores_good = metrics.cider_d(refs, good)
    mean_bad, scores_bad = metrics.cider_d(refs, bad)
    assert scores_good[0] > 1.0
    assert scores_bad[0] == 0.0
    assert mean_good > mean_bad
    assert scores_good[1:] == pytest.approx(scores_bad[1:])
