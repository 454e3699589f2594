"""Tests of vljepa_ros.data.groundtruth: labelling rules and smoothing on synthetic frames."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vljepa_ros.data.groundtruth import (
    Kinematics,
    TruthConfig,
    label_frames,
    raw_labels,
    smooth_labels,
)

FPS = 10.0
CONFIG = TruthConfig()
# A frame with the arm still, the gripper open and the object 30 cm away on the table.
STILL = Kinematics(
    ee_velocity=(0.0, 0.0, 0.0),
    gripper_width=0.08,
    width_rate=0.0,
    finger_contacts=0,
    object_lift=0.0,
    object_distance=0.3,
    distance_rate=0.0,
)


def k(**changes: object) -> Kinematics:
    """STILL with some measurements changed."""
    return replace(STILL, **changes)  # type: ignore[arg-type]


HELD = {"finger_contacts": 2, "object_lift": 0.05, "object_distance": 0.01, "gripper_width": 0.05}


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (k(), "idle"),
        (k(ee_velocity=(0.1, 0.0, -0.1), distance_rate=-0.14), "reaching"),
        (k(ee_velocity=(0.0, 0.1, 0.1), distance_rate=0.14), "retreating"),
        (k(object_distance=0.01, width_rate=-0.1), "grasping"),
        (k(object_distance=0.01, finger_contacts=2, gripper_width=0.05), "grasping"),
        (k(ee_velocity=(0.0, 0.0, 0.2), **HELD), "lifting"),
        (k(ee_velocity=(0.2, 0.1, 0.02), **HELD), "transporting"),
        (k(ee_velocity=(0.02, 0.0, -0.2), **HELD), "placing"),
        # one open finger brushing the object while the arm moves away is not a grasp
        (k(ee_velocity=(0.0, 0.0, 0.2), finger_contacts=1, distance_rate=0.2), "retreating"),
    ],
)
def test_single_frame_rules(frame: Kinematics, expected: str) -> None:
    """Each rule of the module docstring gives its label on a frame that matches it."""
    assert raw_labels([frame], FPS, CONFIG) == [expected]


def test_held_still_keeps_the_previous_held_label() -> None:
    """A pause while holding the object continues the held state before it."""
    frames = [k(ee_velocity=(0.2, 0.0, 0.0), **HELD), k(**HELD), k(**HELD)]
    assert raw_labels(frames, FPS, CONFIG) == ["transporting"] * 3


def test_release_is_placing_until_the_gripper_stops_opening() -> None:
    """Set down (contact, not lifted) and the opening that follows are placing, then idle."""
    frames = [
        k(ee_velocity=(0.0, 0.0, -0.1), **HELD),
        k(finger_contacts=2, object_distance=0.01, gripper_width=0.05),  # on the table, held
        k(object_distance=0.01, gripper_width=0.06, width_rate=0.1),  # fingers left it, opening
        k(object_distance=0.01, gripper_width=0.07, width_rate=0.1),
        k(object_distance=0.01),
    ]
    assert raw_labels(frames, FPS, CONFIG) == ["placing"] * 4 + ["idle"]


def test_a_grasp_without_a_prior_hold_is_not_placing() -> None:
    """Both fingers on an object that was never lifted is grasping, not a release."""
    frames = [k(object_distance=0.01, width_rate=-0.1), k(object_distance=0.01, finger_contacts=2)]
    assert raw_labels(frames, FPS, CONFIG) == ["grasping", "grasping"]


@pytest.mark.parametrize(
    ("raw", "smoothed"),
    [
        # a 2-frame stop inside a reach (below min_idle_s = 0.45 s) is absorbed
        (["reaching"] * 3 + ["idle"] * 2 + ["reaching"] * 3, ["reaching"] * 8),
        # a long stop stays idle
        (["retreating"] * 2 + ["idle"] * 6, ["retreating"] * 2 + ["idle"] * 6),
        # a short stop at the start takes the label after it
        (["idle"] * 2 + ["reaching"] * 4, ["reaching"] * 6),
        # a single-frame glitch between equal labels is removed
        (["lifting"] * 3 + ["transporting"] + ["lifting"] * 3, ["lifting"] * 7),
        # a single frame between different labels is kept
        (
            ["lifting"] * 3 + ["transporting"] + ["placing"] * 3,
            ["lifting"] * 3 + ["transporting"] + ["placing"] * 3,
        ),
    ],
)
def test_smoothing(raw: list[str], smoothed: list[str]) -> None:
    """Short idle runs and single-frame glitches are smoothed away, nothing else changes."""
    assert smooth_labels(raw, FPS, CONFIG) == smoothed


def test_label_frames_applies_rules_then_smoothing() -> None:
    """A still frame in the middle of a reach comes out as reaching."""
    moving = k(ee_velocity=(0.1, 0.0, -0.1), distance_rate=-0.14)
    assert label_frames([moving, moving, k(), moving, moving], FPS) == ["reaching"] * 5


@pytest.mark.parametrize(
    "changes",
    [
        {"idle_speed": 0.0},
        {"width_speed": -1.0},
        {"lift_height": 0.0},
        {"grasp_radius": -0.1},
        {"release_window_s": -1.0},
        {"min_idle_s": -0.5},
        {"radial_fraction": 1.0},
    ],
)
def test_config_refuses_bad_thresholds(changes: dict[str, float]) -> None:
    """Non-positive thresholds and a radial fraction outside [0, 1) raise ValueError."""
    with pytest.raises(ValueError, match="TruthConfig"):
        TruthConfig(**changes)
