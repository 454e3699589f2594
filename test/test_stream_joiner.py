"""StepJoiner: embeddings and the labels about their steps matched by stamp, released in seq
order, with a timeout for lost labels."""

from __future__ import annotations

import numpy as np
import pytest

from vljepa_ros.stream.joiner import StepJoiner

NS = 1_000_000_000
V = np.ones(4, dtype=np.float32)


def test_either_arrival_order_releases_the_step_once() -> None:
    """Label-then-embedding and embedding-then-label both release the step with its label."""
    joiner = StepJoiner()
    assert joiner.add_label(10, "idle", 0) == []
    (first,) = joiner.add_embedding(0, 10, V, "cam", 0)
    assert (first.seq, first.label, first.stamp_ns, first.frame_id) == (0, "idle", 10, "cam")
    assert joiner.add_embedding(1, 20, V, "cam", 0) == []
    (second,) = joiner.add_label(20, "reaching", 0)
    assert (second.seq, second.label) == (1, "reaching")


def test_steps_are_released_in_seq_order() -> None:
    """A later step whose label came first waits for the earlier one."""
    joiner = StepJoiner()
    joiner.add_embedding(0, 0, V, "", 0)
    joiner.add_embedding(1, 1, V, "", 0)
    assert joiner.add_label(1, "b", 0) == []  # about the step captured at 1 (seq 1)
    released = joiner.add_label(0, "a", 0)
    assert [(s.seq, s.label) for s in released] == [(0, "a"), (1, "b")]


def test_a_lagged_label_joins_the_step_it_is_about() -> None:
    """With the tracker's lag of 2 steps, the StateLabel of step k (label_stamp of step k - 2)
    completes step k - 2; the newest two steps wait for theirs."""
    joiner = StepJoiner()
    released = []
    for seq in range(5):
        released += joiner.add_embedding(seq, 100 + seq, V, "", 0)
        if seq >= 2:
            released += joiner.add_label(100 + seq - 2, f"label of {seq - 2}", 0)
    assert [(s.seq, s.stamp_ns, s.label) for s in released] == [
        (k, 100 + k, f"label of {k}") for k in range(3)
    ]


def test_lost_label_times_out_with_the_last_label() -> None:
    """An embedding whose label never comes is released after max_wait with the last label."""
    joiner = StepJoiner(max_wait=0.5)
    joiner.add_label(0, "idle", 0)  # about the step captured at 0
    joiner.add_embedding(0, 0, V, "", 0)
    joiner.add_embedding(1, 1, V, "", 0)
    assert joiner.expire(NS // 4) == []
    (late,) = joiner.expire(NS // 2)
    assert (late.seq, late.label) == (1, "idle")


def test_a_label_after_its_step_timed_out_is_counted_late_and_dropped() -> None:
    """A label that comes after max_wait (the lag is longer than the wait) is counted once and
    does not attach to any later step; a label that never comes is not counted."""
    joiner = StepJoiner(max_wait=0.5)
    joiner.add_label(0, "idle", 0)
    joiner.add_embedding(0, 0, V, "", 0)
    joiner.add_embedding(1, 1, V, "", 0)
    joiner.add_embedding(2, 2, V, "", 0)
    assert [s.seq for s in joiner.expire(NS)] == [1, 2]  # both without their labels
    assert joiner.late_labels == 0
    assert joiner.add_label(1, "reaching", NS) == []
    assert joiner.late_labels == 1
    (next_step,) = joiner.add_embedding(3, 3, V, "", NS) + joiner.add_label(3, "grasping", NS)
    assert (next_step.seq, next_step.label) == (3, "grasping")
    assert joiner.flush() == []
    assert joiner.late_labels == 1  # the label of step 2 never came: lost, not late


def test_seq_going_back_releases_the_waiting_steps_and_restarts() -> None:
    """After a perception restart (seq back to 0), older waiting steps go out first."""
    joiner = StepJoiner()
    joiner.add_label(40, "idle", 0)
    joiner.add_embedding(4, 40, V, "", 0)
    joiner.add_embedding(5, 50, V, "", 0)
    released = joiner.add_embedding(0, 60, V, "", 0)
    assert [s.seq for s in released] == [5]
    (restarted,) = joiner.add_label(60, "placing", 0)
    assert (restarted.seq, restarted.stamp_ns, restarted.label) == (0, 60, "placing")


def test_flush_releases_what_waits_in_order() -> None:
    """At the end of a stream every waiting step goes out, in seq order, the ones without a
    label with the last label released."""
    joiner = StepJoiner()
    joiner.add_label(10, "idle", 0)
    joiner.add_embedding(1, 20, V, "", 0)
    joiner.add_label(20, "reaching", 0)
    joiner.add_embedding(2, 30, V, "", 0)
    joiner.add_embedding(3, 40, V, "", 0)
    joiner.add_label(40, "placing", 0)
    released = joiner.flush()
    assert [(s.seq, s.label) for s in released] == [(2, "reaching"), (3, "placing")]
    assert joiner.flush() == []


def test_pending_steps_are_bounded() -> None:
    """With labels missing, at most max_pending embeddings wait; then they are released."""
    joiner = StepJoiner(max_pending=3)
    out = []
    for seq in range(4):
        out += joiner.add_embedding(seq, seq, V, "", 0)
    assert [s.seq for s in out] == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs", [{"max_wait": 0}, {"max_pending": 0}])
def test_bad_settings_are_rejected(kwargs: dict) -> None:
    """Non-positive wait or pending bounds raise ValueError naming the setting."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        StepJoiner(**kwargs)
