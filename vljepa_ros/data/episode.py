"""Episode data and the simulator's configuration: what `sim.generate_episode` produces.

Kept apart from the simulator so that readers, trainers and nodes can use the types without
the physics code. `vljepa_ros.data.sim` re-exports everything here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vljepa_ros.data import captions
from vljepa_ros.data.groundtruth import STATES, Kinematics, TruthConfig

ROBOTS: tuple[str, ...] = ("panda",)
ROBOT_MESHES: tuple[str, ...] = ("collision", "visual")
SHAPES: tuple[str, ...] = tuple(captions.SHAPE_NOUNS)
EPOCH_S = 1_700_000_000  # stamps are sim time from here (plus a per-seed offset)
SEED_OFFSET_S = 100  # episode k starts (seed % 1e6) * 100 s after the epoch: int32 seconds hold


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(
            f"SimConfig.{name} must be (min, max) with {low} <= min <= max <= {high}, got {value}"
        )


@dataclass(frozen=True)
class SimConfig:
    """What an episode looks like; every (min, max) pair is sampled uniformly per episode."""

    robot: str = "panda"
    robot_mesh: str = "collision"  # draw the arm with its light collision meshes (4x faster)
    image_size: int = 160  # square images, pixels
    fps: float = 10.0  # camera frames (and joint states, ground truth) per second of sim time
    physics_hz: int = 240  # physics steps per second; a multiple of fps
    cycles: tuple[int, int] = (1, 3)  # pick-and-place cycles per episode
    distractors: tuple[int, int] = (0, 3)  # objects besides the first target
    idle_s: tuple[float, float] = (0.0, 2.5)  # pause at the start and after each cycle
    speed: tuple[float, float] = (0.10, 0.22)  # mean end-effector speed of a move, m/s
    azimuth_deg: tuple[float, float] = (0.0, 360.0)  # camera around the workspace
    elevation_deg: tuple[float, float] = (15.0, 60.0)  # camera above the table plane
    distance_m: tuple[float, float] = (0.75, 1.3)  # camera to look-at point
    fov_deg: tuple[float, float] = (40.0, 55.0)  # vertical field of view
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(captions.COLOURS)
    shadows: float = 0.5  # probability that an episode renders shadows
    max_duration_s: float = 60.0  # the script is cut here
    truth: TruthConfig = field(default_factory=TruthConfig)

    def __post_init__(self) -> None:
        if self.robot not in ROBOTS:
            raise ValueError(f"SimConfig.robot must be one of {ROBOTS}, got '{self.robot}'")
        if self.robot_mesh not in ROBOT_MESHES:
            raise ValueError(
                f"SimConfig.robot_mesh must be one of {ROBOT_MESHES}, got '{self.robot_mesh}'"
            )
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"SimConfig.image_size must be in [16, 1024], got {self.image_size}")
        if not 0 < self.fps <= 60:
            raise ValueError(f"SimConfig.fps must be in (0, 60], got {self.fps}")
        if self.physics_hz < 120:
            raise ValueError(f"SimConfig.physics_hz must be >= 120, got {self.physics_hz}")
        ratio = self.physics_hz / self.fps
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"SimConfig.fps must divide SimConfig.physics_hz "
                f"({self.physics_hz} / {self.fps} = {ratio:g})"
            )
        if not (1 <= self.cycles[0] <= self.cycles[1] <= 20):
            raise ValueError(f"SimConfig.cycles must be 1 <= min <= max <= 20, got {self.cycles}")
        _check_range("distractors", self.distractors, 0, 3)
        _check_range("idle_s", self.idle_s, 0.0, 30.0)
        _check_range("speed", self.speed, 0.02, 0.6)
        _check_range("azimuth_deg", self.azimuth_deg, -360.0, 720.0)
        _check_range("elevation_deg", self.elevation_deg, 5.0, 89.0)
        _check_range("distance_m", self.distance_m, 0.3, 5.0)
        _check_range("fov_deg", self.fov_deg, 10.0, 120.0)
        unknown_shapes = set(self.shapes) - set(SHAPES)
        if not self.shapes or unknown_shapes:
            raise ValueError(f"SimConfig.shapes must be a non-empty subset of {SHAPES}")
        unknown_colours = set(self.colours) - set(captions.COLOURS)
        if unknown_colours or len(set(self.colours)) < 1 + self.distractors[1]:
            raise ValueError(
                f"SimConfig.colours must be known colours ({', '.join(captions.COLOURS)}), at "
                f"least one per object (1 + {self.distractors[1]} distractors); got {self.colours}"
            )
        if not 0.0 <= self.shadows <= 1.0:
            raise ValueError(f"SimConfig.shadows must be a probability, got {self.shadows}")
        if self.max_duration_s <= 0:
            raise ValueError(f"SimConfig.max_duration_s must be > 0, got {self.max_duration_s}")


@dataclass(frozen=True)
class ObjectInfo:
    """One object of the scene: its caption words and its size (m)."""

    colour: str
    shape: str
    size: tuple[float, float, float]  # extent along its own x, y, z


@dataclass(frozen=True)
class CameraInfo:
    """The static camera of an episode (pinhole, square image, optical frame z forward)."""

    azimuth_deg: float
    elevation_deg: float
    distance_m: float
    look_at: tuple[float, float, float]
    eye: tuple[float, float, float]  # camera position in the world frame
    fov_deg: float
    width: int
    height: int

    @property
    def focal_px(self) -> float:
        """Focal length in pixels (same for x and y)."""
        return 0.5 * self.height / math.tan(math.radians(self.fov_deg) / 2)


@dataclass
class Frame:
    """One camera frame with the robot's joints and the ground truth at its capture time."""

    stamp_ns: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    joint_positions: np.ndarray  # (J,) rad or m (fingers)
    joint_velocities: np.ndarray  # (J,)
    joint_efforts: np.ndarray  # (J,) N*m or N: the motors' applied effort
    kinematics: Kinematics
    subject: int  # index into Episode.objects of the object the arm works on
    object_position: tuple[float, float, float]  # of the subject, world frame (m)
    held: bool
    state: str = ""
    caption: str = ""


@dataclass
class Episode:
    """A generated episode: frames in time order plus what it was generated from."""

    seed: int
    config: SimConfig
    joint_names: tuple[str, ...]
    objects: tuple[ObjectInfo, ...]
    camera: CameraInfo
    light: dict[str, Any]
    cycles: int
    grasp_failures: int
    frames: list[Frame]

    @property
    def duration_s(self) -> float:
        """Sim time from the first to the last frame."""
        if len(self.frames) < 2:
            return 0.0
        return (self.frames[-1].stamp_ns - self.frames[0].stamp_ns) / 1e9

    def label_counts(self) -> dict[str, int]:
        """Frames per state, in canonical order, zeros included."""
        counts = dict.fromkeys(STATES, 0)
        for frame in self.frames:
            counts[frame.state] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (the manifest entry and the bag's custom metadata)."""
        return {
            "seed": self.seed,
            "robot": self.config.robot,
            "frames": len(self.frames),
            "fps": self.config.fps,
            "duration_s": round(self.duration_s, 3),
            "start_stamp_ns": self.frames[0].stamp_ns if self.frames else None,
            "image_size": self.config.image_size,
            "cycles": self.cycles,
            "grasp_failures": self.grasp_failures,
            "objects": [asdict(o) for o in self.objects],
            "camera": asdict(self.camera),
            "light": self.light,
            "label_counts": self.label_counts(),
        }


def start_stamp_ns(seed: int) -> int:
    """Stamp of an episode's first frame: the fixed epoch plus a per-seed offset."""
    return (EPOCH_S + (seed % 1_000_000) * SEED_OFFSET_S) * 1_000_000_000
