"""Tune the state tracker's stabilisation on annotated episodes (no ROS, no model).

The stabilised label (`StateTracker`) depends on a temperature, smoothing, two thresholds, a
switch margin and a minimum dwell. Their best values depend on the model (how far apart its
label similarities are) and on the robot (how long its states last), so they are chosen on
annotated episodes that are not the ones a model is evaluated on: every setting of a grid
is run over the episodes' embedding streams, and the most accurate one whose flicker stays
within a bound wins (ties: higher edit score). The tracker's transition model, how often the
task goes from one state to another and how regular each state's duration is, is counted from
the same episodes' ground truth (`estimate_transitions`, `estimate_duration_shapes`). `vljepa
tune-tracker` replays the bags with a checkpoint, runs this, and writes the winner as a
parameter file for the perception node, and the transition model into a labels file beside it.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vljepa_ros.stream.state_tracker import StateEstimate, StateTracker, StateTrackerConfig
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

    temperature: tuple[float, ...] = (0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 0.8)
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


def estimate_transitions(
    streams: Sequence[LabelledStream], labels: Sequence[str], prior: float = 0.5
) -> tuple[tuple[str, str, float], ...]:
    """Transition rates (from, to, changes per second) between `labels`, counted from the
    streams' ground truth: changes from a state to another over the time spent in the state.
    Every pair gets `prior` / (L - 1) extra changes, so a change never seen in these episodes
    is rare, not impossible. A label never seen in the truth is left at the prior's pace over
    the whole time of the streams.

    Raises:
        ValueError: no streams, prior negative, or a truth label not in `labels`.
    """
    if not streams:
        raise ValueError("no annotated streams to count transitions in")
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    index = {label: i for i, label in enumerate(labels)}
    changes = np.zeros((len(labels), len(labels)))
    seconds = np.zeros(len(labels))
    for stream in streams:
        unknown = set(stream.truth) - set(index)
        if unknown:
            raise ValueError(f"ground truth labels {sorted(unknown)} are not among {list(labels)}")
        intervals = np.diff(stream.stamps_ns) / 1e9
        for source, target, interval in zip(
            stream.truth[:-1], stream.truth[1:], intervals, strict=True
        ):
            if interval <= 0:
                continue
            seconds[index[source]] += interval
            if source != target:
                changes[index[source], index[target]] += 1
    total = float(seconds.sum())
    if total <= 0:
        raise ValueError("the streams span no time: no rates can be counted")
    seconds = np.where(seconds > 0, seconds, total)
    spread = prior / max(1, len(labels) - 1)
    return tuple(
        (labels[i], labels[j], round(float((changes[i, j] + spread) / seconds[i]), 4))
        for i in range(len(labels))
        for j in range(len(labels))
        if i != j and changes[i, j] + spread > 0
    )


def estimate_duration_shapes(
    streams: Sequence[LabelledStream],
    labels: Sequence[str],
    max_shape: int = 16,
    min_runs: int = 3,
) -> tuple[tuple[str, int], ...]:
    """How regular each state's duration is, as Erlang phases for the tracker: mean^2 /
    variance of the durations of its runs in the streams' ground truth, rounded, within
    1..`max_shape`. Only whole runs count (not the first and last of a stream, which the
    recording cuts); labels with fewer than `min_runs` of them are left out (memoryless).

    Raises:
        ValueError: max_shape or min_runs below 1 (2 for min_runs).
    """
    if max_shape < 1 or min_runs < 2:
        raise ValueError(f"need max_shape >= 1 and min_runs >= 2, got {max_shape}, {min_runs}")
    durations: dict[str, list[float]] = {label: [] for label in labels}
    for stream in streams:
        runs = metrics.runs(stream.truth)
        for run in runs[1:-1]:
            if run.label in durations:
                seconds = (stream.stamps_ns[run.end] - stream.stamps_ns[run.start]) / 1e9
                durations[run.label].append(float(seconds))
    out = []
    for label in labels:
        values = np.asarray(durations[label])
        if len(values) < min_runs or values.mean() <= 0:
            continue
        variance = float(values.var())
        shape = max_shape if variance == 0 else round(float(values.mean()) ** 2 / variance)
        out.append((label, int(min(max(shape, 1), max_shape))))
    return tuple(out)


def write_transitions(
    labels: dict[str, str],
    transitions: Sequence[tuple[str, str, float]],
    path: str | Path,
    note: str = "",
    duration_shapes: Sequence[tuple[str, int]] = (),
) -> Path:
    """A labels file (config/robot_states.yaml layout) with the label prompts, the rates and
    the duration shapes (no rates: no `transitions`, so the tracker has no transition model)."""
    path = Path(path)
    rates: dict[str, dict[str, float]] = {}
    for source, target, rate in transitions:
        rates.setdefault(source, {})[target] = rate
    header = (
        "# label prompts, and state changes per second and duration shapes counted by "
        f"`vljepa tune-tracker`{': ' + note if note else ''}\n"
    )
    data: dict[str, object] = {"labels": dict(labels)}
    if rates:
        data["transitions"] = rates
        if duration_shapes:
            data["duration_shapes"] = dict(duration_shapes)
    body = yaml.safe_dump(data, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body, encoding="utf-8")
    return path


def track(
    labels: Sequence[str],
    matrix: np.ndarray,
    config: StateTrackerConfig,
    embeddings: np.ndarray,
    stamps_ns: np.ndarray,
) -> tuple[list[str], list[str]]:
    """Stabilised and instant labels of a fresh tracker over one embedding stream, each list
    in step order (with `lag_steps`, the stabilised label of a step is the one reported
    `lag_steps` steps later; the stream's last steps get theirs when the tracker is flushed)."""
    tracker = StateTracker(labels, matrix, config)
    out = [tracker.step(e, int(s)) for e, s in zip(embeddings, stamps_ns, strict=True)]
    return stabilised_labels(out + tracker.flush()), [o.instant_label for o in out]


def stabilised_labels(estimates: Sequence[StateEstimate]) -> list[str]:
    """The stabilised label of every step, in step order, from a tracker's estimates of one
    stream (its steps' and then its flush's): those that describe a step, in the order given."""
    return [e.label for e in estimates if e.label_stamp_ns is not None]


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


_WORKER: dict[str, Any] = {}  # a tuning worker's streams, labels and matrix


def _init_worker(
    streams: Sequence[LabelledStream], labels: Sequence[str], matrix: np.ndarray
) -> None:
    _WORKER.update(streams=streams, labels=labels, matrix=matrix)


def _worker_trial(config: StateTrackerConfig) -> Trial:
    return run_trial(config, _WORKER["streams"], _WORKER["labels"], _WORKER["matrix"])


def tune_tracker(
    streams: Sequence[LabelledStream],
    labels: Sequence[str],
    matrix: np.ndarray,
    grid: TrackerGrid | None = None,
    max_flicker: float = 1.5,
    base: StateTrackerConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> list[Trial]:
    """Every setting of the grid, best first: settings within `max_flicker` before the others,
    then by accuracy, then by edit score. `workers` > 1 runs the settings in that many
    processes (each gets the streams once); the trials are the same.

    Raises:
        ValueError: no streams, max_flicker not positive, or workers < 1.
    """
    if not streams:
        raise ValueError("no annotated streams to tune on")
    if not max_flicker > 0:
        raise ValueError(f"max_flicker must be > 0, got {max_flicker}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    configs = (grid or TrackerGrid()).configs(base or StateTrackerConfig())
    trials: list[Trial] = []
    if workers == 1:
        results: Any = (run_trial(config, streams, labels, matrix) for config in configs)
        pool = None
    else:
        # spawn: fresh interpreters, nothing of the parent's torch threads inherited
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(workers, _init_worker, (list(streams), list(labels), matrix))
        results = pool.imap(_worker_trial, configs, chunksize=8)
    try:
        for trial in results:
            trials.append(trial)
            if progress:
                progress(len(trials), len(configs))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return sorted(trials, key=lambda t: (t.flicker > max_flicker, -t.accuracy, -t.edit))


def write_params(
    trial: Trial, path: str | Path, note: str = "", labels_file: str | Path | None = None
) -> Path:
    """A parameter file (config/perception.yaml layout) with the trial's tracker settings (the
    tuned ones and the lag they were tuned with) and, when given, the labels file that holds
    its transition rates."""
    path = Path(path)
    values: dict[str, float | int | str] = {
        name: float(getattr(trial.config, name)) for name in TUNED
    }
    values["lag_steps"] = trial.config.lag_steps
    if labels_file is not None:
        values["labels_file"] = str(labels_file)
    header = (
        f"# state tracker tuned by `vljepa tune-tracker`{': ' + note if note else ''}\n"
        f"# stabilised accuracy {100 * trial.accuracy:.1f}%, macro-F1 {trial.macro_f1:.3f}, "
        f"edit {trial.edit:.1f}, flicker {trial.flicker:.2f}\n"
    )
    body = yaml.safe_dump({"perception_node": {"ros__parameters": values}}, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body, encoding="utf-8")
    return path
