"""Tests of vljepa_ros.data.sim: config checks, randomised scenes, and ground truth that agrees
with the simulated kinematics on a short episode."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from vljepa_ros.data import captions
from vljepa_ros.data.groundtruth import STATES
from vljepa_ros.data.sim import Episode, Frame, SimConfig, generate_episode, start_stamp_ns

# One pick-and-place cycle with a pause before and after: about 12 s of sim time, 48x48 images.
SHORT = SimConfig(image_size=48, cycles=(1, 1), distractors=(1, 1), idle_s=(1.0, 1.2))
SEED = 11


@pytest.fixture(scope="module")
def episode() -> Episode:
    """The short episode every kinematics test looks at."""
    return generate_episode(SHORT, SEED)


def _runs(episode: Episode, state: str) -> list[list[Frame]]:
    """The maximal runs of consecutive frames labelled `state`."""
    return [
        list(group)
        for label, group in itertools.groupby(episode.frames, key=lambda f: f.state)
        if label == state
    ]


def test_one_cycle_goes_through_the_seven_states_in_order(episode: Episode) -> None:
    """The labels of one cycle are idle, reaching, grasping, lifting, transporting, placing,
    retreating, idle, each as one segment of several frames."""
    segments = [
        (label, len(list(g))) for label, g in itertools.groupby(f.state for f in episode.frames)
    ]
    assert [label for label, _ in segments] == [*STATES, "idle"]
    assert min(length for _, length in segments) >= 3, segments


@pytest.mark.parametrize("state", ["idle", "reaching", "retreating"])
def test_nothing_is_held_and_the_gripper_is_open(episode: Episode, state: str) -> None:
    """While idle, reaching or retreating no finger holds the object and the gripper is open."""
    frames = [f for run in _runs(episode, state) for f in run]
    assert frames
    assert not any(f.held for f in frames)
    assert min(f.kinematics.gripper_width for f in frames) > 0.07


def test_idle_frames_are_still(episode: Episode) -> None:
    """Idle frames have the end effector below the idle speed and the object on the table."""
    for frame in (f for run in _runs(episode, "idle") for f in run):
        assert np.linalg.norm(frame.kinematics.ee_velocity) < SHORT.truth.idle_speed
        assert frame.kinematics.object_lift < SHORT.truth.lift_height


def test_reaching_approaches_the_object(episode: Episode) -> None:
    """Reaching brings the grasp point from far to within a few cm of the object."""
    (run,) = _runs(episode, "reaching")
    assert run[0].kinematics.object_distance > 0.1
    assert run[-1].kinematics.object_distance < 0.03


def test_grasping_closes_the_gripper_on_the_object(episode: Episode) -> None:
    """During grasping nothing is lifted yet, the gripper closes, and both fingers end on it."""
    (run,) = _runs(episode, "grasping")
    assert not any(f.held for f in run)
    widths = [f.kinematics.gripper_width for f in run]
    assert widths[-1] < widths[0] - 0.01
    assert any(f.kinematics.width_rate < -SHORT.truth.width_speed for f in run)
    assert run[-1].kinematics.finger_contacts == 2
    assert max(f.kinematics.object_distance for f in run) < SHORT.truth.grasp_radius


def _object_z(run: list[Frame]) -> np.ndarray:
    return np.array([f.object_position[2] for f in run])


def _check_lifting(run: list[Frame]) -> None:
    assert all(f.held for f in run)
    assert _object_z(run)[-1] - _object_z(run)[0] > 0.05


def _check_transporting(run: list[Frame]) -> None:
    assert all(f.held for f in run)
    xy = np.array([f.object_position[:2] for f in run])
    assert np.linalg.norm(xy[-1] - xy[0]) > 0.05
    assert abs(_object_z(run)[-1] - _object_z(run)[0]) < np.linalg.norm(xy[-1] - xy[0])


def _check_placing(run: list[Frame]) -> None:
    assert run[0].held  # starts carried
    assert not run[-1].held  # ends released
    assert _object_z(run)[0] - _object_z(run)[-1] > 0.05
    assert run[-1].kinematics.object_lift < SHORT.truth.lift_height
    assert run[-1].kinematics.gripper_width > run[0].kinematics.gripper_width


@pytest.mark.parametrize(
    ("state", "check"),
    [
        ("lifting", _check_lifting),
        ("transporting", _check_transporting),
        ("placing", _check_placing),
    ],
)
def test_held_states_match_the_object_motion(
    episode: Episode, state: str, check: Callable[[list[Frame]], None]
) -> None:
    """Lifting raises the held object, transporting moves it sideways, placing sets it down and
    lets go."""
    (run,) = _runs(episode, state)
    check(run)


def test_retreating_moves_away_from_the_released_object(episode: Episode) -> None:
    """Retreating ends farther from the object than it starts, with the gripper empty."""
    (run,) = _runs(episode, "retreating")
    assert run[-1].kinematics.object_distance - run[0].kinematics.object_distance > 0.05
    assert all(f.kinematics.finger_contacts == 0 for f in run)


def test_frames_carry_images_joints_stamps_and_captions(episode: Episode) -> None:
    """Each frame has an RGB image, one value per joint, a stamp on the fps grid and a caption."""
    start = start_stamp_ns(SEED)
    for i, frame in enumerate(episode.frames):
        assert frame.image.shape == (48, 48, 3)
        assert frame.image.dtype == np.uint8
        assert frame.joint_positions.shape == (len(episode.joint_names),)
        assert frame.stamp_ns == start + i * 100_000_000
        colour = episode.objects[frame.subject].colour
        assert frame.caption
        assert colour in frame.caption or frame.state == "idle"
    assert episode.frames[0].image.std() > 10  # a scene, not a blank image
    assert episode.label_counts() == {s: sum(f.state == s for f in episode.frames) for s in STATES}


def test_same_seed_same_episode(episode: Episode) -> None:
    """Generating with the same config and seed reproduces images, joints, labels and captions."""
    again = generate_episode(SHORT, SEED)
    assert len(again.frames) == len(episode.frames)
    for a, b in zip(again.frames, episode.frames, strict=True):
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.joint_positions, b.joint_positions)
        assert (a.state, a.caption, a.stamp_ns) == (b.state, b.caption, b.stamp_ns)


def test_scenes_are_randomised_across_seeds() -> None:
    """Over a few seeds the camera goes around and looks down from its recorded eye point, colours
    and shapes vary, colours stay unique in a scene and every colour is a known colour word."""
    config = SimConfig(image_size=16, idle_s=(0.1, 0.1), max_duration_s=0.05)
    episodes = [generate_episode(config, seed) for seed in range(12)]
    azimuths = sorted(e.camera.azimuth_deg for e in episodes)
    assert azimuths[-1] - azimuths[0] > 180
    assert len({e.camera.elevation_deg for e in episodes}) == 12
    assert len({o.shape for e in episodes for o in e.objects}) >= 3
    assert len({o.colour for e in episodes for o in e.objects}) >= 5
    assert len({len(e.objects) for e in episodes}) >= 3
    for e in episodes:
        eye, look_at = np.array(e.camera.eye), np.array(e.camera.look_at)
        assert np.linalg.norm(eye - look_at) == pytest.approx(e.camera.distance_m, rel=1e-4)
        assert eye[2] > look_at[2]  # looking down at the table
        colours = [o.colour for o in e.objects]
        assert len(set(colours)) == len(colours)
        assert set(colours) <= set(captions.COLOURS)
    assert len({e.light["lightDirection"][0] for e in episodes}) == 12


@pytest.mark.parametrize(
    "changes",
    [
        {"robot": "kuka"},
        {"robot_mesh": "wire"},
        {"image_size": 8},
        {"fps": 0.0},
        {"fps": 7.0},  # 240 Hz physics is not a multiple of 7 fps
        {"cycles": (2, 1)},
        {"distractors": (0, 5)},
        {"idle_s": (-1.0, 1.0)},
        {"speed": (0.3, 0.1)},
        {"elevation_deg": (0.0, 60.0)},
        {"shapes": ("pyramid",)},
        {"colours": ("red", "mauve")},
        {"colours": ("red", "green")},  # fewer colours than 1 + 3 distractors
        {"shadows": 2.0},
        {"max_duration_s": 0.0},
    ],
)
def test_config_refuses_bad_values(changes: dict[str, object]) -> None:
    """Every invalid field raises ValueError naming the field."""
    with pytest.raises(ValueError, match=f"SimConfig.{next(iter(changes))}"):
        SimConfig(**changes)  # type: ignore[arg-type]


def test_negative_seed_is_refused() -> None:
    """Seeds are non-negative (they are offsets of the stamps)."""
    with pytest.raises(ValueError, match="seed"):
        generate_episode(SHORT, -1)
