"""The nodes' parameters without ROS: specifications, the parameter file, typed configs.

Each node declares the parameters of its table here (with descriptions and ranges, see
`vljepa_ros.nodes.common.declare`); offline tools (replay, evaluation) read the same parameter
file (config/perception.yaml layout: node_name: ros__parameters: ...) through `load_params_file`
and build the same typed configurations, so they compute what the nodes compute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vljepa_ros.labels import LabelSet, read_label_set
from vljepa_ros.stream.pipeline import PipelineConfig
from vljepa_ros.stream.segmenter import SegmenterConfig
from vljepa_ros.stream.state_tracker import StateTrackerConfig


@dataclass(frozen=True)
class Param:
    """One parameter of a node: default, description, range or choices, read-only or not."""

    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False

    def check(self, value: Any) -> str | None:
        """The reason `value` is refused, or None."""
        if self.choices and value not in self.choices:
            return f"{self.name}={value!r} is not one of {', '.join(self.choices)}"
        if self.min is not None and isinstance(value, (int, float)) and value < self.min:
            return f"{self.name}={value} is below its minimum {self.min}"
        if self.max is not None and isinstance(value, (int, float)) and value > self.max:
            return f"{self.name}={value} is above its maximum {self.max}"
        return None


_TRACKER = StateTrackerConfig()

PERCEPTION: list[Param] = [
    Param(
        "checkpoint",
        "",
        "Checkpoint directory, or the name of a shipped checkpoint; empty "
        "loads the shipped default.",
        read_only=True,
    ),
    Param(
        "device",
        "cpu",
        "Torch device: cpu, cuda, cuda:N, or auto (cuda when available).",
        read_only=True,
    ),
    Param(
        "dtype", "fp32", "Inference precision.", choices=("fp32", "bf16", "fp16"), read_only=True
    ),
    Param(
        "cpu_threads",
        0,
        "Torch threads for inference on the CPU; 0: all cores but one (the other one receives "
        "and converts frames).",
        min=0,
        max=1024,
        read_only=True,
    ),
    Param(
        "image_topics",
        ["image"],
        "Camera image topics (remap them); one model serves all.",
        read_only=True,
    ),
    Param(
        "camera_names",
        [""],
        "Output names per camera (vljepa/<name>/...) when there are "
        "several; empty: cam0, cam1, ...",
        read_only=True,
    ),
    Param(
        "compressed",
        False,
        "Subscribe to sensor_msgs/CompressedImage instead of Image.",
        read_only=True,
    ),
    Param(
        "input_reliability",
        "best_effort",
        "QoS reliability of the camera subscription.",
        choices=("best_effort", "reliable"),
        read_only=True,
    ),
    Param(
        "input_depth", 5, "QoS history depth of the camera subscription.", 1, 100, read_only=True
    ),
    Param(
        "max_image_pixels",
        8192 * 8192,
        "Frames with more pixels are dropped as malformed.",
        1,
        1 << 30,
        read_only=True,
    ),
    Param("autostart", True, "Configure and activate on start-up.", read_only=True),
    Param("query", "", "Text query the predictor is conditioned on; empty: the model's default."),
    Param(
        "labels_file",
        "",
        "YAML file with `labels: {label: prompt}` and optionally `transitions: {from: {to: "
        "rate}}` (state changes per second) and `duration_shapes: {label: phases}`, the state "
        "tracker's transition model; empty: the package's config/robot_states.yaml.",
    ),
    Param(
        "labels",
        [""],
        "Inline labels as 'label: prompt' strings; when set, they replace labels_file.",
    ),
    Param(
        "ground_labels",
        True,
        "Ground each label prompt in the checkpoint's answer bank: average its embedding with "
        "the training answers nearest it, so prompts in new words keep working (no effect "
        "without a bank or with a query other than the bank's).",
    ),
    Param("sample_hz", 10.0, "Frames per second of capture time sampled into a clip.", 0.5, 120.0),
    Param(
        "clip_stride",
        1,
        "A clip takes every Nth sampled frame back from the newest, so it spans N times longer "
        "while steps still follow every sampled frame (a model trained on 5 Hz clips: "
        "sample_hz 10, clip_stride 2).",
        1,
        100,
    ),
    Param(
        "step_hz",
        10.0,
        "Most steps per second per camera (one embedding each): a step runs when a sampled frame "
        "arrives 1/step_hz of capture time after the last step's, so at most sample_hz.",
        0.1,
        120.0,
    ),
    Param(
        "max_input_age",
        0.5,
        "Frames older than this (s) on arrival are dropped as stale.",
        0.01,
        60.0,
    ),
    Param("max_gap", 2.0, "A gap (s) between frames after which the clip starts over.", 0.2, 600.0),
    # the state tracker's defaults are StateTrackerConfig's (chosen by `vljepa tune-tracker`)
    Param(
        "temperature",
        _TRACKER.temperature,
        "Softmax temperature over label cosine similarities.",
        0.001,
        10.0,
    ),
    Param(
        "smoothing",
        _TRACKER.smoothing,
        "Weight of the newest step in the smoothed label probabilities.",
        0.01,
        1.0,
    ),
    Param(
        "enter_threshold",
        _TRACKER.enter_threshold,
        "Smoothed probability at which a label is entered.",
        0.0,
        1.0,
    ),
    Param(
        "exit_threshold",
        _TRACKER.exit_threshold,
        "Smoothed probability below which a label is left.",
        0.0,
        1.0,
    ),
    Param(
        "switch_margin",
        _TRACKER.switch_margin,
        "Lead a new label needs over the current one to take over.",
        0.0,
        1.0,
    ),
    Param(
        "min_dwell",
        _TRACKER.min_dwell,
        "Seconds a stable label is held before it may change.",
        0.0,
        60.0,
    ),
    Param(
        "lag_steps",
        _TRACKER.lag_steps,
        "Steps the stabilised label waits for newer evidence: fixed-lag smoothing of the "
        "labels file's transition model (no effect without one); StateLabel.label_stamp says "
        "which step a label is about. 0: no lag.",
        0,
        100,
    ),
    Param("top_k", _TRACKER.top_k, "Candidates reported per step.", 1, 100),
    Param(
        "camera_timeout",
        2.0,
        "Seconds without frames after which the camera is reported "
        "silent (diagnostics ERROR, label unknown).",
        0.1,
        3600.0,
    ),
]
# perception_node parameters applied at run time through PerceptionPipeline.reconfigure.
PIPELINE_PARAMS = {
    "query",
    "labels_file",
    "labels",
    "ground_labels",
    "sample_hz",
    "clip_stride",
    "max_input_age",
    "max_gap",
    "temperature",
    "smoothing",
    "enter_threshold",
    "exit_threshold",
    "switch_margin",
    "min_dwell",
    "lag_steps",
    "top_k",
}


DECODER: list[Param] = [
    Param(
        "checkpoint",
        "",
        "Checkpoint whose Y-decoder turns embeddings into text; empty: the shipped default.",
        read_only=True,
    ),
    Param("device", "cpu", "Torch device for the decoder: cpu, cuda, cuda:N.", read_only=True),
    Param(
        "shift_threshold",
        0.15,
        "Cosine distance from the open segment's mean embedding that counts as a semantic shift.",
        0.001,
        2.0,
    ),
    Param("persistence", 3, "Consecutive shifted steps that close a segment.", 1, 1000),
    Param("min_steps", 2, "Steps a segment needs before a shift may close it.", 1, 10000),
    Param("label_change", True, "Close the segment when the stabilised label changes."),
    Param("max_interval", 0.0, "Close a segment after this many seconds; 0 disables.", 0.0, 3600.0),
    Param("max_gap", 2.0, "Seconds without steps that count as a stream reset.", 0.1, 3600.0),
    Param("max_text_length", 32, "Longest decoded text, in tokens.", 1, 512),
    Param(
        "label_wait",
        1.0,
        "Seconds an embedding waits for the StateLabel about its step (that label comes "
        "lag_steps steps later: keep this above the perception node's lag_steps / step_hz).",
        0.01,
        10.0,
    ),
]

OVERLAY: list[Param] = [
    Param("compressed", False, "The camera topic is sensor_msgs/CompressedImage.", read_only=True),
    Param("input_reliability", "best_effort", "QoS reliability of the camera subscription.",
          choices=("best_effort", "reliable"), read_only=True),
    Param("rate_hz", 10.0, "Overlay images per second at most.", 0.1, 60.0, read_only=True),
    Param("width", 640, "Width of the overlay image in pixels.", 64, 4096, read_only=True),
    Param("trail_length", 60, "Steps shown on the embedding map.", 1, 10000, read_only=True),
    Param("marker_distance", 1.5, "Metres ahead of the camera where the text marker floats.",
          0.1, 100.0, read_only=True),
]  # fmt: skip

SIM_CAMERA: list[Param] = [
    Param("fps", 10, "Frames per second published (and simulated).", 1, 60, read_only=True),
    Param("image_size", 160, "Width and height of the square images, pixels.", 32, 1024,
          read_only=True),
    Param("robot", "panda", "Simulated arm.", choices=("panda",), read_only=True),
    Param("seed", 0, "Seed of the first episode; each next episode adds one.", 0, 1_000_000,
          read_only=True),
    Param("frame_id", "camera_optical_frame", "frame_id of the published images.", read_only=True),
    Param("publish_joint_states", True, "Also publish the arm's joints on joint_states.",
          read_only=True),
]  # fmt: skip


def load_labels(values: dict[str, Any]) -> LabelSet:
    """The prompts (and the tracker's transition model) from the inline `labels` parameter
    (no transition model) or the YAML `labels_file`.

    Raises:
        ValueError: a missing or malformed file, or a malformed inline entry.
    """
    inline = [entry for entry in values["labels"] if entry.strip()]
    if inline:
        labels: dict[str, str] = {}
        for entry in inline:
            name, sep, prompt = entry.partition(":")
            if not sep or not name.strip() or not prompt.strip():
                raise ValueError(f"labels entry {entry!r} is not 'label: prompt'")
            labels[name.strip()] = prompt.strip()
        return LabelSet(labels)
    return read_label_set(values["labels_file"] or None)


def pipeline_config(values: dict[str, Any], default_query: str) -> PipelineConfig:
    """The typed pipeline configuration from parameter values (ValueError if invalid)."""
    label_set = load_labels(values)
    return PipelineConfig(
        query=values["query"] or default_query,
        labels=label_set.labels,
        ground_labels=values["ground_labels"],
        sample_hz=values["sample_hz"],
        clip_stride=values["clip_stride"],
        max_input_age=values["max_input_age"],
        max_gap=values["max_gap"],
        tracker=StateTrackerConfig(
            temperature=values["temperature"],
            smoothing=values["smoothing"],
            enter_threshold=values["enter_threshold"],
            exit_threshold=values["exit_threshold"],
            switch_margin=values["switch_margin"],
            min_dwell=values["min_dwell"],
            lag_steps=values["lag_steps"],
            top_k=values["top_k"],
            transitions=label_set.transitions,
            duration_shapes=label_set.duration_shapes,
        ),
    )


def segmenter_config(values: dict[str, Any]) -> SegmenterConfig:
    return SegmenterConfig(
        shift_threshold=values["shift_threshold"],
        persistence=values["persistence"],
        min_steps=values["min_steps"],
        label_change=values["label_change"],
        max_interval=values["max_interval"],
        max_gap=values["max_gap"],
    )


NODE_PARAMS: dict[str, list[Param]] = {
    "perception_node": PERCEPTION,
    "decoder_node": DECODER,
    "overlay_node": OVERLAY,
    "sim_camera_node": SIM_CAMERA,
}


def load_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Every node's parameter values: its defaults, then the file's `ros__parameters`.

    Raises:
        ValueError: an unreadable or malformed file, an unknown node or parameter, a value of
            the wrong type or out of range.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"parameter file {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"parameter file {path} must map node names to ros__parameters")
    values = {node: {p.name: p.default for p in specs} for node, specs in NODE_PARAMS.items()}
    for node, section in data.items():
        if node not in NODE_PARAMS:
            raise ValueError(f"{path}: unknown node '{node}' (known: {', '.join(NODE_PARAMS)})")
        if not isinstance(section, dict) or set(section) != {"ros__parameters"}:
            raise ValueError(f"{path}: '{node}' must hold exactly one key, ros__parameters")
        specs = {p.name: p for p in NODE_PARAMS[node]}
        for name, value in (section["ros__parameters"] or {}).items():
            spec = specs.get(name)
            if spec is None and name != "use_sim_time":
                raise ValueError(f"{path}: {node} has no parameter '{name}'")
            if spec is None:
                continue
            if type(value) is not type(spec.default) and not (
                isinstance(spec.default, float) and type(value) is int
            ):
                raise ValueError(
                    f"{path}: {node}.{name} must be {type(spec.default).__name__}, got {value!r}"
                )
            reason = spec.check(value)
            if reason:
                raise ValueError(f"{path}: {node}.{reason}")
            values[node][name] = float(value) if isinstance(spec.default, float) else value
    return values


def inference_threads(requested: int) -> int:
    """Torch threads for CPU inference: `requested`, or for 0 all cores but one (at least 1)."""
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)
