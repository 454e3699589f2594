"""StepJoiner: embeddings and labels matched by seq, in order, with a timeout for lost labels."""

from __future__ import annotations

import numpy as np
import pytest

from vljepa_ros.stream.joiner import StepJoiner

NS = 1_000_000_000
V = np.ones(4, dtype=np.float32)


def test_either_arrival_order_releases_the_step_once() -> None:
    """Label-then-embedding and embedding-then-label both release the step with its label."""
    joiner = StepJoiner()
    assert joiner.add_label(0, "idle", 0) == []
    (first,) = joiner.add_embedding(0, 10, V, "cam", 0)
    assert (first.seq, first.label, first.stamp_ns, first.frame_id) == (0, "idle", 10, "cam")
    assert joiner.add_embedding(1, 20, V, "cam", 0) == []
    (second,) = joiner.add_label(1, "reaching", 0)
    assert (second.seq, second.label) == (1, "reaching")


def test_steps_are_released_in_seq_order() -> None:
    """A later step whose label came first waits for the earlier one."""
    joiner = StepJoiner()
    joiner.add_embedding(0, 0, V, "", 0)
    joiner.add_embedding(1, 1, V, "", 0)
    assert joiner.add_label(1, "b", 0) == []
    released = joiner.add_label(0, "a", 0)
    assert [(s.seq, s.label) for s in released] == [(0, "a"), (1, "b")]


def test_lost_label_times_out_with_the_last_label() -> None:
    """An embedding whose label never comes is released after max_wait with the last label."""
    joiner = StepJoiner(max_wait=0.5)
    joiner.add_label(0, "idle", 0)
    joiner.add_embedding(0, 0, V, "", 0)
    joiner.add_embedding(1, 1, V, "", 0)
    assert joiner.expire(NS // 4) == []
    (late,) = joiner.expire(NS // 2)
    assert (late.seq, late.label) == (1, "idle")


def test_seq_going_back_releases_the_waiting_steps_and_restarts() -> None:
    """After a perception restart (seq back to 0), older waiting steps go out first."""
    joiner = StepJoiner()
    joiner.add_label(4, "idle", 0)
    joiner.add_embedding(4, 40, V, "", 0)
    joiner.add_embedding(5, 50, V, "", 0)
    released = joiner.add_embedding(0, 60, V, "", 0)
    assert [s.seq for s in released] == [5]
    (restarted,) = joiner.add_label(0, "placing", 0)
    assert (restarted.seq, restarted.stamp_ns, restarted.label) == (0, 60, "placing")


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
