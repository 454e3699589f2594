"""Robot-state ground truth from measured kinematics and contacts (not from a controller phase).

The simulator measures, at every camera frame, how the end effector and the gripper actually
moved over the last frame interval, which fingers touch the object the arm is working on, and
how high that object is above the table. `label_frames` turns that sequence into one of the
seven canonical states per frame (design.md) with the rules below, then smooths the result:

- held = at least one finger touches the object and its bottom is more than `lift_height` above
  the table (so it is carried, not resting).
- held: mainly upward motion is `lifting`, mainly downward `placing`, otherwise `transporting`;
  a held arm that is (nearly) still keeps the previous held label.
- not held, a finger touches the object: `placing` if the object was held during this contact
  (it has been set down and is being released); `grasping` if both fingers touch it or the
  gripper is closing (one open finger brushing the object falls through to the next rules).
- not held, no contact: `placing` while the gripper still opens within `release_window_s` after
  the contact ended; `grasping` while the gripper closes within `grasp_radius` of the object;
  `idle` when the end effector is slower than `idle_speed` and the gripper does not move;
  otherwise `reaching` when the distance to the object shrinks and `retreating` when it grows
  (the previous one of the two while the motion is mostly sideways).

Smoothing (documented in docs/data.md): runs of `idle` shorter than `min_idle_s` (the arm slowing
through a waypoint) take the label before them (after them at the start of an episode), then
single-frame runs between two equal labels take that label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

STATES: tuple[str, ...] = (
    "idle",
    "reaching",
    "grasping",
    "lifting",
    "transporting",
    "placing",
    "retreating",
)
HELD_STATES = frozenset({"lifting", "transporting", "placing"})


@dataclass(frozen=True)
class TruthConfig:
    """Thresholds of the labelling rules (SI units)."""

    idle_speed: float = 0.02  # m/s: end effector slower than this counts as still
    width_speed: float = 0.004  # m/s: gripper opening/closing faster than this counts as moving
    lift_height: float = 0.005  # m: object bottom above the table for it to count as held
    grasp_radius: float = 0.05  # m: grasp point to object centre for closing to count as grasping
    release_window_s: float = 1.0  # s: gripper opening after contact ended is still placing
    radial_fraction: float = 0.25  # share of speed along the object direction to tell approach
    min_idle_s: float = 0.45  # s: shorter still runs are absorbed by their neighbour

    def __post_init__(self) -> None:
        for name in ("idle_speed", "width_speed", "lift_height", "grasp_radius"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TruthConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.release_window_s < 0 or self.min_idle_s < 0:
            raise ValueError("TruthConfig.release_window_s and min_idle_s must be >= 0")
        if not 0 <= self.radial_fraction < 1:
            raise ValueError(
                f"TruthConfig.radial_fraction must be in [0, 1), got {self.radial_fraction}"
            )


@dataclass(frozen=True)
class Kinematics:
    """What was measured at one camera frame, about the object the arm is working on."""

    ee_velocity: tuple[float, float, float]  # m/s, end-effector displacement / frame interval
    gripper_width: float  # m, distance between the fingers
    width_rate: float  # m/s, change of the width over the frame interval (< 0: closing)
    finger_contacts: int  # fingers (0-2) touching the object
    object_lift: float  # m, object bottom above the table top
    object_distance: float  # m, grasp point to object centre
    distance_rate: float  # m/s, change of that distance over the frame interval

    def held(self, config: TruthConfig) -> bool:
        """The object is in the gripper and off the table."""
        return self.finger_contacts > 0 and self.object_lift > config.lift_height


def _held_label(k: Kinematics, previous: str | None, config: TruthConfig) -> str:
    vx, vy, vz = k.ee_velocity
    horizontal = math.hypot(vx, vy)
    if math.sqrt(horizontal**2 + vz**2) < config.idle_speed:
        return previous or "lifting"
    if vz >= horizontal:
        return "lifting"
    if -vz >= horizontal:
        return "placing"
    return "transporting"


def raw_labels(kinematics: Sequence[Kinematics], fps: float, config: TruthConfig) -> list[str]:
    """Per-frame labels by the rules of the module docstring, before smoothing."""
    labels: list[str] = []
    last_held: str | None = None  # last label given while held
    held_in_contact = False  # the object was held during the current contact
    release_frame: int | None = None  # frame where contact ended after a hold
    window = round(config.release_window_s * fps)
    for i, k in enumerate(kinematics):
        speed = math.sqrt(sum(v * v for v in k.ee_velocity))
        if k.held(config):
            label = _held_label(k, last_held, config)
            last_held = label
            held_in_contact = True
        elif k.finger_contacts > 0 and held_in_contact:
            label = "placing"
        elif k.finger_contacts == 2 or (k.finger_contacts and k.width_rate < -config.width_speed):
            label = "grasping"
        else:
            if held_in_contact:
                held_in_contact = False
                release_frame = i
            released_recently = release_frame is not None and i - release_frame <= window
            if released_recently and k.width_rate > config.width_speed:
                label = "placing"
            elif k.object_distance < config.grasp_radius and k.width_rate < -config.width_speed:
                label = "grasping"
            elif speed < config.idle_speed and abs(k.width_rate) < config.width_speed:
                label = "idle"
            elif k.distance_rate <= -config.radial_fraction * speed:
                label = "reaching"
            elif k.distance_rate >= config.radial_fraction * speed:
                label = "retreating"
            else:
                previous = labels[-1] if labels else "reaching"
                label = previous if previous in ("reaching", "retreating") else "reaching"
        if label not in HELD_STATES:
            last_held = None
        labels.append(label)
    return labels


def _runs(labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """(label, start, end) of each maximal run of equal labels, end exclusive."""
    runs: list[tuple[str, int, int]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((labels[start], start, i))
            start = i
    return runs


def smooth_labels(labels: Sequence[str], fps: float, config: TruthConfig) -> list[str]:
    """Absorb short idle runs and single-frame glitches (see the module docstring)."""
    out = list(labels)
    min_idle = max(1, round(config.min_idle_s * fps))
    runs = _runs(out)
    for index, (label, start, end) in enumerate(runs):
        if label != "idle" or end - start >= min_idle or len(runs) == 1:
            continue
        fill = out[start - 1] if start > 0 else runs[index + 1][0]
        out[start:end] = [fill] * (end - start)
    runs = _runs(out)
    for index in range(1, len(runs) - 1):
        label, start, end = runs[index]
        before, after = runs[index - 1][0], runs[index + 1][0]
        if end - start == 1 and before == after:
            out[start] = before
    return out


def label_frames(
    kinematics: Sequence[Kinematics], fps: float, config: TruthConfig | None = None
) -> list[str]:
    """Ground-truth robot state of every frame: the rules, then the smoothing."""
    config = config or TruthConfig()
    return smooth_labels(raw_labels(kinematics, fps, config), fps, config)
