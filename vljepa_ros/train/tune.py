"""Tune the state tracker's stabilisation on annotated episodes (no ROS, no model).

The stabilised label (`StateTracker`) depends on a temperature, smoothing, two thresholds, a
switch margin and a minimum dwell. Their best values depend on the model (how far apart its
label similarities are) and on the robot (how long its states last), so they are chosen on
annotated episodes that are not the ones a model is evaluated on: every setting of a grid
is run over the episodes' embedding streams, and the most accurate one whose flicker stays
within a bound wins (ties: higher edit score). `vljepa tune-tracker` replays the bags with a
checkpoint, runs this, and writes the winner as a parameter file for the perception node.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from vljepa_ros.stream.state_tracker import StateTracker, StateTrackerConfig
from vljepa_ros.train import metrics
from vljepa_ros.train.selective import stream_minutes

TUNED = ("temperature", "smoothing", "enter_threshold", "exit_threshold", "switch_margin",
         "min_dwell")  # fmt: skip


@dataclass(frozen=True)
class LabelledStream:
    """One episode's steps: capture stamps, embeddings (N, D) and ground-truth states."""

    stamps_ns: np.ndarray
    embeddings: np.ndarray
    truth: Sequence[str]

    def __post_init__(self) -> None:
        n = len(self.stamps_ns)
        if n == 0 or self.embeddings.shape[0] != n or len(self.truth) != n:
            raise ValueError(
                f"a stream needs one embedding and one truth per step: {n} stamps, "
                f"{self.embeddings.shape[0]} embeddings, {len(self.truth)} truths"
            )


@dataclass(frozen=True)
class TrackerGrid:
    """The values tried for each tuned setting (settings with exit > enter are skipped)."""

    temperature: tuple[float, ...] = (0.05, 0.08, 0.12, 0.2)
    smoothing: tuple[float, ...] = (0.2, 0.4, 0.7, 1.0)
    enter_threshold: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
    exit_threshold: tuple[float, ...] = (0.1, 0.2, 0.3)
    switch_margin: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    min_dwell: tuple[float, ...] = (0.0, 0.2, 0.4)

    def __post_init__(self) -> None:
        for name in TUNED:
            if not getattr(self, name):
                raise ValueError(f"TrackerGrid.{name} is empty")

    def configs(self, base: StateTrackerConfig) -> list[StateTrackerConfig]:
        """Every valid combination, other fields (top_k) from `base`."""
        out = []
        for values in itertools.product(*(getattr(self, name) for name in TUNED)):
            setting = dict(zip(TUNED, values, strict=True))
            if setting["exit_threshold"] > setting["enter_threshold"]:
                continue
            out.append(dataclasses.replace(base, **setting))
        return out


@dataclass(frozen=True)
class Trial:
    """One tracker setting and its stabilised-label figures over all streams."""

    config: StateTrackerConfig
    accuracy: float
    macro_f1: float
    edit: float
    flicker: float  # predicted switches per minute / ground-truth switches per minute


def track(
    labels: Sequence[str],
    matrix: np.ndarray,
    config: StateTrackerConfig,
    embeddings: np.ndarray,
    stamps_ns: np.ndarray,
) -> tuple[list[str], list[str]]:
    """Stabilised and instant labels of a fresh tracker over one embedding stream."""
    tracker = StateTracker(labels, matrix, config)
    out = [tracker.step(e, int(s)) for e, s in zip(embeddings, stamps_ns, strict=True)]
    return [o.label for o in out], [o.instant_label for o in out]


def run_trial(
    config: StateTrackerConfig,
    streams: Sequence[LabelledStream],
    labels: Sequence[str],
    matrix: np.ndarray,
) -> Trial:
    """The stabilised labels of `config` over every stream, scored against the truth."""
    truth: list[str] = []
    pred: list[str] = []
    edits = []
    pred_switches = truth_switches = 0
    minutes = 0.0
    for stream in streams:
        own, _ = track(labels, matrix, config, stream.embeddings, stream.stamps_ns)
        truth += stream.truth
        pred += own
        edits.append(metrics.edit_score(stream.truth, own))
        pred_switches += metrics.switches(own)
        truth_switches += metrics.switches(stream.truth)
        minutes += stream_minutes(stream.stamps_ns)
    return Trial(
        config=config,
        accuracy=metrics.accuracy(truth, pred),
        macro_f1=metrics.macro_f1(truth, pred),
        edit=float(np.mean(edits)),
        flicker=metrics.flicker_ratio(pred_switches, truth_switches, minutes),
    )


def tune_tracker(
    streams: Sequence[LabelledStream],
    labels: Sequence[str],
    matrix: np.ndarray,
    grid: TrackerGrid | None = None,
    max_flicker: float = 1.5,
    base: StateTrackerConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Trial]:
    """Every setting of the grid, best first: settings within `max_flicker` before the others,
    then by accuracy, then by edit score.

    Raises:
        ValueError: no streams, or max_flicker not positive.
    """
    if not streams:
        raise ValueError("no annotated streams to tune on")
    if not max_flicker > 0:
        raise ValueError(f"max_flicker must be > 0, got {max_flicker}")
    configs = (grid or TrackerGrid()).configs(base or StateTrackerConfig())
    trials = []
    for i, config in enumerate(configs):
        trials.append(run_trial(config, streams, labels, matrix))
        if progress:
            progress(i + 1, len(configs))
    return sorted(trials, key=lambda t: (t.flicker > max_flicker, -t.accuracy, -t.edit))


def write_params(trial: Trial, path: str | Path, note: str = "") -> Path:
    """A parameter file (config/perception.yaml layout) with the trial's tracker settings."""
    path = Path(path)
    values = {name: float(getattr(trial.config, name)) for name in TUNED}
    header = (
        f"# state tracker tuned by `vljepa tune-tracker`{': ' + note if note else ''}\n"
        f"# stabilised accuracy {100 * trial.accuracy:.1f}%, macro-F1 {trial.macro_f1:.3f}, "
        f"edit {trial.edit:.1f}, flicker {trial.flicker:.2f}\n"
    )
    body = yaml.safe_dump({"perception_node": {"ros__parameters": values}}, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body, encoding="utf-8")
    return path
