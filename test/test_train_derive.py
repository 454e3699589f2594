"""Labels derived from /joint_states agree with the simulator's physics-based ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vljepa_ros.data.bag import EpisodeData, read_episode, write_episode_bag
from vljepa_ros.data.sim import SimConfig, generate_episode
from vljepa_ros.train.config import DeriveConfig
from vljepa_ros.train.derive import DeriveError, derive_labels


@pytest.fixture(scope="module")
def sim_bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real simulated episodes (small images: only the joints matter here)."""
    folder = tmp_path_factory.mktemp("derive")
    config = SimConfig(image_size=32, max_duration_s=25.0)
    return [
        write_episode_bag(folder / f"ep{seed}", generate_episode(config, seed)) for seed in (3, 7)
    ]


def test_derived_labels_match_ground_truth_on_simulated_episodes(sim_bags: list[Path]) -> None:
    """Over real episodes, the joint-space rules give the ground-truth state on >= 90% of frames."""
    agree = total = 0
    for bag in sim_bags:
        data = read_episode(bag)
        derived = derive_labels(data)
        assert len(derived) == len(data.states)
        agree += sum(d == s for d, s in zip(derived, data.states, strict=True))
        total += len(derived)
    assert agree / total >= 0.9, agree / total


def test_every_derived_state_occurs(sim_bags: list[Path]) -> None:
    """A full pick-and-place cycle yields all seven states (no rule is dead)."""
    labels = {s for bag in sim_bags for s in derive_labels(read_episode(bag))}
    assert labels == {
        "idle",
        "reaching",
        "grasping",
        "lifting",
        "transporting",
        "placing",
        "retreating",
    }


def _synthetic(width: list[float], speed: list[float]) -> EpisodeData:
    """An episode of 10 Hz frames whose arm joint moves at `speed` rad/s, gripper at `width`."""
    n = len(width)
    stamps = np.arange(n, dtype=np.int64) * 100_000_000
    positions = np.zeros((n, 3))
    positions[:, 0] = np.cumsum(speed) * 0.1
    positions[:, 1] = positions[:, 2] = np.asarray(width) / 2
    velocities = np.zeros((n, 3))
    velocities[:, 0] = speed
    velocities[:, 1:] = np.nan
    return EpisodeData(
        image_topic="/camera/image_raw",
        frames=np.zeros((n, 4, 4, 3), dtype=np.uint8),
        stamps_ns=stamps,
        states=[None] * n,
        captions=[None] * n,
        joint_names=("arm_joint", "finger_left", "finger_right"),
        joint_stamps_ns=stamps,
        joint_positions=positions,
        joint_velocities=velocities,
    )


@pytest.mark.parametrize(
    ("width", "speed", "expected"),
    [
        ([0.08] * 10, [0.0] * 10, ["idle"] * 10),
        ([0.08] * 10, [0.5] * 10, ["reaching"] * 10),
        (
            [0.08] * 3 + [0.06, 0.04] + [0.03] * 5 + [0.05, 0.08] + [0.08] * 4,
            [0.5] * 3 + [0.0] * 4 + [0.5] * 3 + [0.0] * 2 + [0.5] * 4,
            ["reaching"] * 3
            + ["grasping"] * 4
            + ["lifting", "transporting", "placing"]
            + ["placing"] * 2
            + ["retreating"] * 4,
        ),
    ],
    ids=["still", "moving-open", "pick-and-place"],
)
def test_rules_on_synthetic_joint_tracks(
    width: list[float], speed: list[float], expected: list[str]
) -> None:
    """Hand-made joint tracks get the labels the documented rules promise."""
    assert derive_labels(_synthetic(width, speed), DeriveConfig(min_idle_s=0.0)) == expected


def test_a_bag_without_gripper_joints_cannot_be_labelled() -> None:
    """No joint name matching data.derive.gripper_joints is a DeriveError that says so."""
    data = _synthetic([0.08] * 4, [0.0] * 4)
    with pytest.raises(DeriveError, match="gripper_joints"):
        derive_labels(data, DeriveConfig(gripper_joints="claw"))
