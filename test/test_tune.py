"""State tracker tuning on synthetic embedding streams (no model), and its parameter file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from vljepa_ros.params import load_params_file, pipeline_config
from vljepa_ros.stream.state_tracker import StateTracker, StateTrackerConfig
from vljepa_ros.train import tune

NS = 1_000_000_000
LABELS = ["idle", "reaching", "grasping"]
MATRIX = np.eye(3, 8, dtype=np.float32)
GRID = tune.TrackerGrid(
    temperature=(0.05,),
    smoothing=(0.2, 1.0),
    enter_threshold=(0.5,),
    exit_threshold=(0.3,),
    switch_margin=(0.0,),
    min_dwell=(0.0, 0.4),
)


def noisy_stream(
    seed: int, flip: float = 0.1, hz: float = 10.0, ordered: bool = False
) -> tune.LabelledStream:
    """Scenes of 2-4 s (random labels, or cycling idle -> reaching -> grasping when
    `ordered`); each step points at its true label, except a `flip` share of steps that point at
    a random wrong one (the odd steps a stabiliser should ride over)."""
    rng = np.random.default_rng(seed)
    truth: list[str] = []
    for k in range(8):
        label = LABELS[k % 3] if ordered else LABELS[int(rng.integers(3))]
        truth += [label] * int(rng.integers(20, 41))
    vectors = []
    for label in truth:
        index = LABELS.index(label)
        if rng.random() < flip:
            index = (index + int(rng.integers(1, 3))) % 3
        vectors.append(MATRIX[index] + 0.05 * rng.standard_normal(8))
    emb = np.asarray(vectors, dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    stamps = np.arange(len(truth), dtype=np.int64) * round(NS / hz)
    return tune.LabelledStream(stamps, emb, truth)


def test_grid_skips_settings_that_exit_above_entering() -> None:
    """Only settings with exit_threshold <= enter_threshold are tried; others keep base."""
    grid = tune.TrackerGrid(enter_threshold=(0.3, 0.5), exit_threshold=(0.2, 0.4))
    configs = grid.configs(StateTrackerConfig(top_k=2))
    assert configs
    assert all(c.exit_threshold <= c.enter_threshold for c in configs)
    assert {(c.enter_threshold, c.exit_threshold) for c in configs} == {
        (0.3, 0.2),
        (0.5, 0.2),
        (0.5, 0.4),
    }
    assert {c.top_k for c in configs} == {2}


def test_stabilising_settings_win_on_odd_steps() -> None:
    """With 10% odd steps, no smoothing and no dwell flickers; the winner stays within the
    flicker bound and is the most accurate such setting."""
    streams = [noisy_stream(seed) for seed in range(3)]
    trials = tune.tune_tracker(streams, LABELS, MATRIX, GRID, max_flicker=1.5)
    assert len(trials) == 4
    raw = next(t for t in trials if t.config.smoothing == 1.0 and t.config.min_dwell == 0.0)
    assert raw.flicker > 3.0  # every odd step is two switches
    best = trials[0]
    assert best.flicker <= 1.5
    assert best.config != raw.config
    feasible = [t for t in trials if t.flicker <= 1.5]
    assert best.accuracy == max(t.accuracy for t in feasible)
    assert best.accuracy > 0.8


def test_workers_give_the_same_trials() -> None:
    """The grid run in two worker processes gives the same trials, in the same order, as in
    one process."""
    streams = [noisy_stream(seed) for seed in range(2)]
    one = tune.tune_tracker(streams, LABELS, MATRIX, GRID, max_flicker=1.5)
    two = tune.tune_tracker(streams, LABELS, MATRIX, GRID, max_flicker=1.5, workers=2)
    assert two == one
    with pytest.raises(ValueError, match="workers"):
        tune.tune_tracker(streams, LABELS, MATRIX, GRID, workers=0)


def test_tuning_needs_streams_and_a_positive_bound() -> None:
    with pytest.raises(ValueError, match="no annotated streams"):
        tune.tune_tracker([], LABELS, MATRIX, GRID)
    with pytest.raises(ValueError, match="max_flicker"):
        tune.tune_tracker([noisy_stream(0)], LABELS, MATRIX, GRID, max_flicker=0.0)
    with pytest.raises(ValueError, match="one embedding and one truth per step"):
        tune.LabelledStream(np.arange(3), np.zeros((2, 8)), ["idle"] * 3)


def test_written_parameter_file_loads_into_the_node_configuration(tmp_path: Path) -> None:
    """The winner's file passes the strict parameter-file loader and sets the tracker, the
    lag it was tuned with included."""
    stream = noisy_stream(1, ordered=True)
    base = StateTrackerConfig(transitions=tune.estimate_transitions([stream], LABELS), lag_steps=2)
    trials = tune.tune_tracker([stream], LABELS, MATRIX, GRID, base=base)
    path = tune.write_params(trials[0], tmp_path / "tracker.yaml", "test")
    assert "stabilised accuracy" in path.read_text()
    values = load_params_file(path)["perception_node"]
    tracker = pipeline_config(values, "what is the robot doing?").tracker
    for name in (*tune.TUNED, "lag_steps"):
        assert getattr(tracker, name) == getattr(trials[0].config, name)
    assert tracker.lag_steps == 2


def test_track_gives_every_step_its_own_stabilised_label() -> None:
    """With a lag, `track` still gives one stabilised label per step in step order: the
    tracker's labels moved back to the steps they describe, the last ones from its flush; a
    lag of 0 gives the labels as the steps report them."""
    stream = noisy_stream(2, ordered=True)
    config = StateTrackerConfig(
        transitions=tune.estimate_transitions([stream], LABELS), lag_steps=0
    )
    steps = list(zip(stream.embeddings, stream.stamps_ns, strict=True))
    plain = StateTracker(LABELS, MATRIX, config)
    assert tune.track(LABELS, MATRIX, config, stream.embeddings, stream.stamps_ns)[0] == [
        plain.step(e, int(s)).label for e, s in steps
    ]
    lagged_config = dataclasses.replace(config, lag_steps=3)
    tracker = StateTracker(LABELS, MATRIX, lagged_config)
    described = {}
    for e, s in steps:
        out = tracker.step(e, int(s))
        if out.label_stamp_ns is not None:
            described[out.label_stamp_ns] = out.label
    described |= {out.label_stamp_ns: out.label for out in tracker.flush()}
    labels, instant = tune.track(LABELS, MATRIX, lagged_config, stream.embeddings, stream.stamps_ns)
    assert labels == [described[int(s)] for s in stream.stamps_ns]
    assert len(instant) == len(labels) == len(stream.truth)


def test_transition_rates_are_changes_over_time_in_the_state() -> None:
    """idle 1 s, reaching 1 s, idle 1 s at 10 Hz: idle is left once in its 1.9 s (the last
    step has no interval after it), reaching once in 1.0 s; pairs never seen get the prior."""
    truth = ["idle"] * 10 + ["reaching"] * 10 + ["idle"] * 10
    stream = tune.LabelledStream(
        np.arange(30, dtype=np.int64) * NS // 10, np.eye(30, 8, dtype=np.float32), truth
    )
    rates = {(a, b): r for a, b, r in tune.estimate_transitions([stream], LABELS, prior=0.0)}
    assert rates == {("idle", "reaching"): pytest.approx(1 / 1.9, abs=1e-4),
                     ("reaching", "idle"): pytest.approx(1.0)}  # fmt: skip
    rates = {(a, b): r for a, b, r in tune.estimate_transitions([stream], LABELS, prior=0.5)}
    assert len(rates) == 6
    assert rates[("idle", "reaching")] == pytest.approx(1.25 / 1.9, abs=1e-4)
    assert rates[("reaching", "grasping")] == pytest.approx(0.25, abs=1e-4)
    # grasping never occurs: it is left at the prior's pace over all 2.9 s
    assert rates[("grasping", "idle")] == pytest.approx(0.25 / 2.9, abs=1e-4)
    with pytest.raises(ValueError, match=r"\['dancing'\] are not among"):
        tune.estimate_transitions(
            [tune.LabelledStream(stream.stamps_ns, stream.embeddings, ["dancing"] * 30)], LABELS
        )


def test_transition_model_rides_over_steps_the_task_does_not_take() -> None:
    """Streams that cycle idle -> reaching -> grasping, with 10% odd steps, no smoothing or
    dwell: with rates counted from them the tracker is more accurate and flickers less than
    half as much as the same setting without (half of the odd steps go backwards in the cycle,
    a change the task never makes)."""
    streams = [noisy_stream(seed, ordered=True) for seed in range(3)]
    transitions = tune.estimate_transitions(streams, LABELS)
    raw = StateTrackerConfig(temperature=0.3, smoothing=1.0, switch_margin=0.0, min_dwell=0.0)
    plain = tune.run_trial(raw, streams, LABELS, MATRIX)
    modelled = tune.run_trial(
        dataclasses.replace(raw, transitions=transitions), streams, LABELS, MATRIX
    )
    assert modelled.accuracy > plain.accuracy + 0.03
    assert modelled.flicker < plain.flicker / 2


def test_written_labels_file_carries_the_model_to_the_node(tmp_path: Path) -> None:
    """write_transitions + write_params: the node's configuration gets prompts, rates and
    duration shapes."""
    streams = [noisy_stream(0, ordered=True)]
    transitions = tune.estimate_transitions(streams, LABELS)
    shapes = tune.estimate_duration_shapes(streams, LABELS, min_runs=2)
    assert shapes
    prompts = {label: f"the arm is {label}" for label in LABELS}
    labels_path = tune.write_transitions(
        prompts, transitions, tmp_path / "labels.yaml", "t", shapes
    )
    config = StateTrackerConfig(transitions=transitions, duration_shapes=shapes)
    trial = tune.run_trial(config, streams, LABELS, MATRIX)
    path = tune.write_params(trial, tmp_path / "tracker.yaml", "test", labels_path)
    values = load_params_file(path)["perception_node"]
    node = pipeline_config(values, "what is the robot doing?")
    assert dict(node.labels) == prompts
    assert node.tracker.transitions == transitions
    assert node.tracker.duration_shapes == shapes


def test_duration_shapes_are_mean_squared_over_variance_of_whole_runs() -> None:
    """idle runs of 1, 2 and 3 s between reaching runs of exactly 2 s: idle's shape is
    2^2 / (2/3) = 6; reaching's runs never vary, so it gets the cap; the first and last runs
    (cut by the recording) do not count, and a label with too few runs is left out."""
    truth: list[str] = []
    for idle_s in (5, 1, 2, 3):
        truth += ["idle"] * (10 * idle_s) + ["reaching"] * 20
    truth += ["grasping"] * 7
    stamps = np.arange(len(truth), dtype=np.int64) * NS // 10
    stream = tune.LabelledStream(stamps, np.eye(len(truth), 8, dtype=np.float32), truth)
    shapes = dict(tune.estimate_duration_shapes([stream], LABELS, max_shape=16))
    assert shapes == {"idle": 6, "reaching": 16}
    assert dict(tune.estimate_duration_shapes([stream], LABELS, max_shape=4))["idle"] == 4
    with pytest.raises(ValueError, match="max_shape"):
        tune.estimate_duration_shapes([stream], LABELS, max_shape=0)
