"""State tracker tuning on synthetic embedding streams (no model), and its parameter file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vljepa_ros.params import load_params_file, pipeline_config
from vljepa_ros.stream.state_tracker import StateTrackerConfig
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


def noisy_stream(seed: int, flip: float = 0.1, hz: float = 10.0) -> tune.LabelledStream:
    """Scenes of 2-4 s; each step points at its true label, except a `flip` share of steps
    that point at a random wrong one (the odd steps a stabiliser should ride over)."""
    rng = np.random.default_rng(seed)
    truth: list[str] = []
    for _ in range(8):
        truth += [LABELS[int(rng.integers(3))]] * int(rng.integers(20, 41))
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


def test_tuning_needs_streams_and_a_positive_bound() -> None:
    with pytest.raises(ValueError, match="no annotated streams"):
        tune.tune_tracker([], LABELS, MATRIX, GRID)
    with pytest.raises(ValueError, match="max_flicker"):
        tune.tune_tracker([noisy_stream(0)], LABELS, MATRIX, GRID, max_flicker=0.0)
    with pytest.raises(ValueError, match="one embedding and one truth per step"):
        tune.LabelledStream(np.arange(3), np.zeros((2, 8)), ["idle"] * 3)


def test_written_parameter_file_loads_into_the_node_configuration(tmp_path: Path) -> None:
    """The winner's file passes the strict parameter-file loader and sets the tracker."""
    trials = tune.tune_tracker([noisy_stream(1)], LABELS, MATRIX, GRID)
    path = tune.write_params(trials[0], tmp_path / "tracker.yaml", "test")
    assert "stabilised accuracy" in path.read_text()
    values = load_params_file(path)["perception_node"]
    tracker = pipeline_config(values, "what is the robot doing?").tracker
    assert tracker == trials[0].config
