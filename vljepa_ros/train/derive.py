"""Robot-state labels derived from `/joint_states` when a bag has no state annotations.

Only joint-space signals are used, so any arm with a parallel gripper works without a robot
model: the arm speed (norm of the non-gripper joint velocities, rad/s; finite differences of
the positions where velocities are missing) and the gripper width (`width_scale` times the sum
of the positions of the joints whose name contains `gripper_joints`). The whole episode is
known, so the rules look both ways in time:

1. Gripper events. The gripper is *closing* (*opening*) while its width shrinks (grows) faster
   than `width_speed`. After a closing it *holds* something while it stays wider than
   `empty_width` (a gripper that closes on nothing ends up almost shut) and narrower than its
   widest opening in the episode minus `open_margin`; the hold ends when it opens.
2. `grasping`: the gripper is closing, and after it closed on an object until the arm starts
   moving (faster than `still_speed`).
3. Holding and moving: the hold is cut into moves at dips of the arm speed below `split_speed`.
   The first move is `lifting`, the last `placing`, those between `transporting`; a single move
   is cut into thirds by time, two moves are lifting then placing. Still frames of a hold take
   the label of the move before them (of the first move before any).
4. `placing` also covers the opening that ends a hold.
5. Not holding and the gripper still (or opening after an empty closing): `idle` where the arm
   is slower than `still_speed`; otherwise the first move after a release is `retreating` and
   every other move `reaching`.
6. Smoothing as for the simulator's ground truth (`groundtruth.smooth_labels`): idle runs
   shorter than `min_idle_s` take the label of their neighbour, then single-frame glitches
   between two equal labels are removed.

These rules reproduce the simulator's physics-based ground truth on most frames of its episodes
(see test/test_train_derive.py); on a user's robot the thresholds are `data.derive.*` in the
training config.
"""

from __future__ import annotations

import numpy as np

from vljepa_ros.data.bag import EpisodeData
from vljepa_ros.data.groundtruth import TruthConfig, smooth_labels
from vljepa_ros.train.config import DeriveConfig


class DeriveError(ValueError):
    """The bag's joint states cannot give labels (no joints, no gripper joints)."""


def joint_signals(
    episode: EpisodeData, config: DeriveConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per camera frame: arm speed (rad/s), gripper width and frame times (s from the start).

    Joint states are taken at the latest message at or before each frame.

    Raises:
        DeriveError: no joint states, or no joint whose name contains `gripper_joints`.
    """
    if not episode.joint_names or len(episode.joint_stamps_ns) == 0:
        raise DeriveError("the bag has no /joint_states to derive labels from")
    names = episode.joint_names
    gripper = [i for i, n in enumerate(names) if config.gripper_joints in n]
    arm = [i for i in range(len(names)) if i not in gripper]
    if not gripper or not arm:
        raise DeriveError(
            f"no gripper joint (name containing {config.gripper_joints!r}) or no arm joint "
            f"among {list(names)}; set data.derive.gripper_joints"
        )
    stamps = episode.stamps_ns
    index = np.clip(np.searchsorted(episode.joint_stamps_ns, stamps, side="right") - 1, 0, None)
    positions = episode.joint_positions[index]
    velocities = episode.joint_velocities[index]
    times = (stamps - stamps[0]) / 1e9
    dt = np.diff(times, prepend=times[0] - (times[1] - times[0] if len(times) > 1 else 0.1))
    dt = np.where(dt > 0, dt, np.inf)
    arm_vel = velocities[:, arm]
    if np.isnan(arm_vel).any():
        differences = np.diff(positions[:, arm], axis=0, prepend=positions[:1, arm]) / dt[:, None]
        arm_vel = np.where(np.isnan(arm_vel), differences, arm_vel)
    speed = np.linalg.norm(np.nan_to_num(arm_vel), axis=1)
    width = config.width_scale * np.nansum(positions[:, gripper], axis=1)
    return speed, width, times


def _moves(moving: np.ndarray, start: int, end: int) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of True in moving[start:end]."""
    runs: list[tuple[int, int]] = []
    i = start
    while i < end:
        if moving[i]:
            j = i
            while j < end and moving[j]:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


def _label_hold(
    labels: list[str], start: int, end: int, speed: np.ndarray, config: DeriveConfig
) -> None:
    """Label the frames [start, end) of one hold (gripper closed on an object, not moving)."""
    first_motion = next((i for i in range(start, end) if speed[i] >= config.still_speed), end)
    for i in range(start, first_motion):
        labels[i] = "grasping"
    moves = _moves(speed >= config.split_speed, first_motion, end)
    names: list[str]
    if not moves:
        names = []
    elif len(moves) == 1:
        a, b = moves[0]
        third = max(1, (b - a) // 3)
        moves = [(a, a + third), (a + third, b - third), (b - third, b)]
        names = ["lifting", "transporting", "placing"]
    elif len(moves) == 2:
        names = ["lifting", "placing"]
    else:
        names = ["lifting"] + ["transporting"] * (len(moves) - 2) + ["placing"]
    current = names[0] if names else "lifting"
    bounds = dict(zip([m[0] for m in moves], zip(moves, names, strict=True), strict=True))
    i = first_motion
    while i < end:
        if i in bounds:
            (a, b), current = bounds[i]
            for k in range(a, b):
                labels[k] = current
            i = b
            continue
        labels[i] = current
        i += 1


def derive_labels(episode: EpisodeData, config: DeriveConfig | None = None) -> list[str]:
    """One of the seven canonical states per camera frame, by the rules of the module docstring.

    Raises:
        DeriveError: see `joint_signals`.
    """
    config = config or DeriveConfig()
    speed, width, times = joint_signals(episode, config)
    n = len(speed)
    # Over the last frame interval, as the simulator measures it.
    rate = np.diff(width, prepend=width[:1]) / np.diff(times, prepend=times[:1] - 1.0).clip(1e-9)
    closing = rate < -config.width_speed
    opening = rate > config.width_speed
    open_width = float(np.max(width)) - config.open_margin

    labels = [""] * n
    holding = np.zeros(n, dtype=bool)
    i = 0
    while i < n:  # gripper events: closings, the holds after them, and the openings that end them
        if not closing[i]:
            i += 1
            continue
        j = i
        while j < n and closing[j]:
            labels[j] = "grasping"
            j += 1
        k = j
        while k < n and not opening[k] and config.empty_width < width[k] < open_width:
            k += 1
        if k > j:
            holding[j:k] = True
            _label_hold(labels, j, k, speed, config)
            m = k
            while m < n and opening[m]:
                labels[m] = "placing"
                m += 1
            k = m
        i = max(k, j)

    released = False  # a hold ended and the arm has not yet started a new move
    previous_moving = False
    for i in range(n):
        if labels[i]:
            released = labels[i] == "placing"
            previous_moving = False
            continue
        moving = speed[i] >= config.still_speed
        if not moving:
            labels[i] = "idle"
        elif released or (previous_moving and labels[i - 1] == "retreating"):
            labels[i] = "retreating"
        else:
            labels[i] = "reaching"
        if previous_moving and not moving:
            released = False
        previous_moving = moving
    fps = 1.0 / float(np.median(np.diff(times))) if n > 1 else 10.0
    return smooth_labels(labels, fps, TruthConfig(min_idle_s=config.min_idle_s))
