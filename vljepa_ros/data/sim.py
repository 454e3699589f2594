"""Simulated pick-and-place episodes in PyBullet (headless), with per-frame ground truth.

One episode: a Franka Panda on a table with one to four objects (random shapes, colours, sizes
and places), seen by a static camera at a random pose under a random light. A scripted
controller runs `cycles` pick-and-place cycles with inverse kinematics (reach above the object,
descend, close the gripper, lift, carry, lower, open, back off, pause). Every camera frame
records the image, the joint states and what the physics engine measured (end-effector motion,
gripper width, finger contacts, object height); the state labels come from those measurements
(`groundtruth.label_frames`), never from the script's phase, and the captions from the labels.

Everything random is drawn from one `numpy.random.Generator` seeded by the episode seed, and
each episode runs in its own `DIRECT` physics client, so an episode is a pure function of
(config, seed) and episodes can be generated in parallel processes. The configuration and the
episode types live in `vljepa_ros.data.episode` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vljepa_ros.data import captions
from vljepa_ros.data.episode import (
    EPOCH_S,
    ROBOT_MESHES,
    ROBOTS,
    SEED_OFFSET_S,
    SHAPES,
    CameraInfo,
    Episode,
    Frame,
    ObjectInfo,
    SimConfig,
    start_stamp_ns,
)
from vljepa_ros.data.groundtruth import Kinematics, label_frames

__all__ = [
    "EPOCH_S",
    "ROBOTS",
    "ROBOT_MESHES",
    "SEED_OFFSET_S",
    "SHAPES",
    "CameraInfo",
    "Episode",
    "Frame",
    "ObjectInfo",
    "SimConfig",
    "generate_episode",
    "start_stamp_ns",
]

# Table (pybullet_data table/table.urdf) and where the robot and the objects go on it.
_TABLE_POSITION = (0.45, 0.0, 0.0)
_WORKSPACE_X = (0.36, 0.64)
_WORKSPACE_Y = (-0.28, 0.28)
_MIN_GAP = 0.10  # m between object centres (and place targets)

# Camera look-at point: the middle of the workspace, a little above the table.
_LOOK_AT = (0.48, 0.0, 0.08)
# A camera closer than this (horizontally) to the robot's base and lower than _ARM_HEIGHT above
# the table would sit among the arm's links.
_CAMERA_CLEARANCE = 0.6
_ARM_HEIGHT = 0.95


@dataclass(frozen=True)
class _Robot:
    """Where a robot's parts are in its URDF and how to drive them."""

    urdf: str
    arm_joints: tuple[int, ...]
    finger_joints: tuple[int, int]
    ee_link: int
    home: tuple[float, ...]
    arm_forces: tuple[float, ...]
    finger_open: float  # joint position of each finger when open (m)
    finger_force: float
    joint_names: tuple[str, ...]


PANDA = _Robot(
    urdf="franka_panda/panda.urdf",
    arm_joints=(0, 1, 2, 3, 4, 5, 6),
    finger_joints=(9, 10),
    ee_link=11,
    home=(0.0, -0.35, 0.0, -2.3, 0.0, 1.95, 0.785),
    arm_forces=(87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0),
    finger_open=0.04,
    finger_force=40.0,
    joint_names=(
        *(f"panda_joint{i}" for i in range(1, 8)),
        "panda_finger_joint1",
        "panda_finger_joint2",
    ),
)


# --- the script --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    """Move the grasp point through `points` (a polyline) in one smooth motion."""

    points: tuple[tuple[float, float, float], ...]
    yaw: float
    duration: float


@dataclass(frozen=True)
class _Grip:
    close: bool
    max_duration: float


@dataclass(frozen=True)
class _Wait:
    duration: float


@dataclass(frozen=True)
class _Subject:
    index: int


_Command = _Path | _Grip | _Wait | _Subject


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence C-level stdout and stderr (pybullet prints its build time and argv on start)."""
    sys.stdout.flush()
    sys.stderr.flush()
    libc = ctypes.CDLL(None)
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        libc.fflush(None)  # what C stdio buffered goes to /dev/null too
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _connect() -> tuple[Any, Any, str]:
    """(pybullet module, a new DIRECT client, pybullet_data's path), without the chatter."""
    with _quiet():
        import pybullet
        import pybullet_data
        from pybullet_utils import bullet_client

        client = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
    return pybullet, client, pybullet_data.getDataPath()


def _light_urdf(data_path: str, robot: _Robot, folder: Path) -> str:
    """A copy of the robot's URDF that draws each link with its collision mesh.

    The Panda's visual meshes have about 100,000 triangles and dominate the tiny renderer's
    time; the collision meshes (about 3,000) look the same at training resolutions.
    """
    source = Path(data_path) / robot.urdf
    text = source.read_text()
    text = re.sub(r"package://meshes/visual/(\w+)\.obj", r"package://meshes/collision/\1.obj", text)
    text = text.replace("package://meshes/", f"{source.parent.as_posix()}/meshes/")
    target = folder / source.name
    target.write_text(text)
    return str(target)


def _profile(t: float, duration: float, ramp: float = 0.35) -> float:
    """Share of a path done at time t: smooth (raised-cosine) speed ramps, cruise between.

    Speed rises from zero over `ramp` seconds, stays constant and falls back to zero over the
    last `ramp` seconds (shorter ramps when the move is short), like a velocity-limited arm.
    """
    if duration <= 0:
        return 1.0
    t = min(max(t, 0.0), duration)
    r = min(ramp, duration / 2)
    v_max = 1.0 / (duration - r)

    def ramp_up(u: float) -> float:
        return v_max * (u / 2 - r / (2 * math.pi) * math.sin(math.pi * u / r))

    if t < r:
        return ramp_up(t)
    if t <= duration - r:
        return v_max * (r / 2 + t - r)
    return 1.0 - ramp_up(duration - t)


def _wrap_half_pi(angle: float) -> float:
    """The gripper is symmetric under a half turn: bring a yaw into [-pi/2, pi/2)."""
    return (angle + math.pi / 2) % math.pi - math.pi / 2


def _point(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


class _PickPlace:
    """One episode's world, controller and frame recorder (owns a DIRECT physics client)."""

    def __init__(self, config: SimConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.robot = PANDA
        self.pb, self.bc, self.data_path = _connect()
        self.steps_per_frame = round(config.physics_hz / config.fps)
        self.dt = 1.0 / config.physics_hz
        self.frame_period_ns = round(1e9 / config.fps)
        self.step_count = 0
        self.frames: list[Frame] = []
        self.subject = 0
        self.grasp_failures = 0
        self.cycles = int(self.rng.integers(config.cycles[0], config.cycles[1] + 1))
        self.finger_target = self.robot.finger_open
        self._previous: tuple[np.ndarray, float, np.ndarray] | None = None
        try:
            self._build()
        except BaseException:
            self.bc.disconnect()
            raise
        self.ee_target = self._ee_position()
        self.ee_yaw = 0.0
        self.home = self.ee_target.copy()

    # scene ------------------------------------------------------------------------------------

    def _load_robot(self) -> int:
        position = [0.0, 0.0, self.table_top]
        if self.config.robot_mesh == "visual":
            return int(self.bc.loadURDF(self.robot.urdf, position, useFixedBase=True))
        with tempfile.TemporaryDirectory(prefix="vljepa_sim_") as folder:
            path = _light_urdf(self.data_path, self.robot, Path(folder))
            return int(self.bc.loadURDF(path, position, useFixedBase=True))

    def _build(self) -> None:
        bc, pb, rng, cfg = self.bc, self.pb, self.rng, self.config
        bc.setAdditionalSearchPath(self.data_path)
        bc.setGravity(0, 0, -9.81)
        bc.setTimeStep(self.dt)
        plane = bc.loadURDF("plane.urdf")
        table = bc.loadURDF("table/table.urdf", _TABLE_POSITION, useFixedBase=True)
        self.table_top = float(bc.getAABB(table)[1][2])
        grey = rng.uniform(0.35, 0.9)
        bc.changeVisualShape(plane, -1, rgbaColor=[*(grey * rng.uniform(0.8, 1.0, 3)), 1])
        wood = rng.uniform(0.45, 1.0, 3) * [1.0, 0.85, 0.7]
        bc.changeVisualShape(table, -1, rgbaColor=[*wood, 1])

        self.body = self._load_robot()
        joint_infos = [bc.getJointInfo(self.body, j) for j in range(bc.getNumJoints(self.body))]
        self.movable = [i[0] for i in joint_infos if i[2] != pb.JOINT_FIXED]
        self.lower = [joint_infos[j][8] for j in self.movable]
        self.upper = [joint_infos[j][9] for j in self.movable]
        self.ranges = [u - lo for lo, u in zip(self.lower, self.upper, strict=True)]
        self.rest = [*self.robot.home, self.robot.finger_open, self.robot.finger_open]
        for joint, q in zip(self.robot.arm_joints, self.robot.home, strict=True):
            bc.resetJointState(self.body, joint, q)
        for finger in self.robot.finger_joints:
            bc.resetJointState(self.body, finger, self.robot.finger_open)
            bc.changeDynamics(self.body, finger, lateralFriction=1.5, spinningFriction=0.003)

        count = 1 + int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
        colours = rng.choice(len(cfg.colours), size=count, replace=False)
        spots = self._free_spots(count, [])
        self.objects: list[ObjectInfo] = []
        self.object_ids: list[int] = []
        for colour_index, spot in zip(colours, spots, strict=True):
            shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
            info, body = self._add_object(cfg.colours[int(colour_index)], shape, spot)
            self.objects.append(info)
            self.object_ids.append(body)

        self.camera, self.view = self._sample_camera()
        light_azimuth = rng.uniform(0, 2 * math.pi)
        light_elevation = rng.uniform(math.radians(25), math.radians(85))
        self.light = {
            "lightDirection": [
                float(math.cos(light_elevation) * math.cos(light_azimuth)),
                float(math.cos(light_elevation) * math.sin(light_azimuth)),
                float(math.sin(light_elevation)),
            ],
            "lightColor": [float(v) for v in rng.uniform(0.8, 1.0, 3)],
            "lightDistance": 3.0,
            "lightAmbientCoeff": float(rng.uniform(0.35, 0.7)),
            "lightDiffuseCoeff": float(rng.uniform(0.35, 0.75)),
            "lightSpecularCoeff": float(rng.uniform(0.0, 0.3)),
            "shadow": int(rng.random() < cfg.shadows),
        }
        self.projection = bc.computeProjectionMatrixFOV(
            fov=self.camera.fov_deg, aspect=1.0, nearVal=0.05, farVal=6.0
        )
        # Let the objects settle on the table before the first frame.
        for _ in range(cfg.physics_hz // 4):
            bc.stepSimulation()

    def _sample_camera(self) -> tuple[CameraInfo, Any]:
        """A random camera pose around the workspace, and its view matrix.

        Poses whose eye would sit among the arm's links (near the base and below the arm's
        height) are drawn again, so the camera sees the scene rather than the inside of a link.
        """
        rng, cfg = self.rng, self.config
        for _attempt in range(100):
            look_at = np.array(_LOOK_AT) + np.array([0.0, 0.0, self.table_top])
            look_at += rng.uniform(-0.06, 0.06, 3)
            azimuth = float(rng.uniform(*cfg.azimuth_deg)) % 360.0
            elevation = float(rng.uniform(*cfg.elevation_deg))
            distance = float(rng.uniform(*cfg.distance_m))
            view = self.bc.computeViewMatrixFromYawPitchRoll(
                cameraTargetPosition=_point(look_at),
                distance=distance,
                yaw=azimuth,
                pitch=-elevation,
                roll=0.0,
                upAxisIndex=2,
            )
            world_to_camera = np.array(view).reshape(4, 4).T  # pybullet is column-major
            rotation, translation = world_to_camera[:3, :3], world_to_camera[:3, 3]
            eye = -rotation.T @ translation
            clear_of_arm = (
                math.hypot(eye[0], eye[1]) >= _CAMERA_CLEARANCE
                or eye[2] - self.table_top >= _ARM_HEIGHT
            )
            if clear_of_arm:
                break
        camera = CameraInfo(
            azimuth_deg=azimuth,
            elevation_deg=elevation,
            distance_m=distance,
            look_at=_point(look_at),
            eye=_point(eye),
            fov_deg=float(rng.uniform(*cfg.fov_deg)),
            width=cfg.image_size,
            height=cfg.image_size,
        )
        return camera, view

    def _free_spots(self, count: int, taken: list[np.ndarray]) -> list[np.ndarray]:
        """`count` table spots at least _MIN_GAP from `taken` and from each other."""
        spots: list[np.ndarray] = []
        for _ in range(count):
            for _attempt in range(200):
                spot = np.array([self.rng.uniform(*_WORKSPACE_X), self.rng.uniform(*_WORKSPACE_Y)])
                if all(np.linalg.norm(spot - other[:2]) >= _MIN_GAP for other in taken + spots):
                    break
            spots.append(spot)
        return spots

    def _add_object(self, colour: str, shape: str, spot: np.ndarray) -> tuple[ObjectInfo, int]:
        bc, pb, rng = self.bc, self.pb, self.rng
        rgba = list(captions.COLOURS[colour])
        yaw = float(rng.uniform(-math.pi, math.pi))
        if shape == "cube":
            side = float(rng.uniform(0.04, 0.055))
            size = (side, side, side)
        elif shape == "brick":
            size = (
                float(rng.uniform(0.08, 0.11)),
                float(rng.uniform(0.035, 0.05)),
                float(rng.uniform(0.035, 0.045)),
            )
        elif shape == "ball":
            diameter = float(rng.uniform(0.045, 0.06))
            size = (diameter, diameter, diameter)
        else:  # cylinder, standing
            diameter = float(rng.uniform(0.04, 0.055))
            size = (diameter, diameter, float(rng.uniform(0.05, 0.08)))
        if shape in ("cube", "brick"):
            half = [s / 2 for s in size]
            collision = bc.createCollisionShape(pb.GEOM_BOX, halfExtents=half)
            visual = bc.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=rgba)
        elif shape == "ball":
            collision = bc.createCollisionShape(pb.GEOM_SPHERE, radius=size[0] / 2)
            visual = bc.createVisualShape(pb.GEOM_SPHERE, radius=size[0] / 2, rgbaColor=rgba)
        else:
            collision = bc.createCollisionShape(
                pb.GEOM_CYLINDER, radius=size[0] / 2, height=size[2]
            )
            visual = bc.createVisualShape(
                pb.GEOM_CYLINDER, radius=size[0] / 2, length=size[2], rgbaColor=rgba
            )
        body = bc.createMultiBody(
            baseMass=0.08,
            baseCollisionShapeIndex=collision,
            baseVisualShapeIndex=visual,
            basePosition=[float(spot[0]), float(spot[1]), self.table_top + size[2] / 2 + 0.001],
            baseOrientation=bc.getQuaternionFromEuler([0, 0, yaw]),
        )
        bc.changeDynamics(
            body, -1, lateralFriction=1.2, spinningFriction=0.003, rollingFriction=0.0005
        )
        return ObjectInfo(colour=colour, shape=shape, size=size), int(body)

    # measurements -----------------------------------------------------------------------------

    def _ee_position(self) -> np.ndarray:
        state = self.bc.getLinkState(self.body, self.robot.ee_link, computeForwardKinematics=True)
        return np.array(state[4])

    def _width(self) -> float:
        return float(sum(self.bc.getJointState(self.body, f)[0] for f in self.robot.finger_joints))

    def _object_pose(self, index: int) -> tuple[np.ndarray, float]:
        """Centre and yaw of an object."""
        position, orientation = self.bc.getBasePositionAndOrientation(self.object_ids[index])
        return np.array(position), float(self.bc.getEulerFromQuaternion(orientation)[2])

    def _contacts(self, index: int) -> int:
        """How many fingers touch the object."""
        return sum(
            bool(
                self.bc.getContactPoints(
                    bodyA=self.body, bodyB=self.object_ids[index], linkIndexA=finger
                )
            )
            for finger in self.robot.finger_joints
        )

    def _lift(self, index: int) -> float:
        """Height of the object's lowest point above the table top."""
        return float(self.bc.getAABB(self.object_ids[index])[0][2]) - self.table_top

    def _render(self) -> np.ndarray:
        size = self.config.image_size
        _, _, rgba, _, _ = self.bc.getCameraImage(
            size,
            size,
            viewMatrix=self.view,
            projectionMatrix=self.projection,
            renderer=self.pb.ER_TINY_RENDERER,
            flags=self.pb.ER_NO_SEGMENTATION_MASK,
            **self.light,
        )
        return np.ascontiguousarray(np.reshape(rgba, (size, size, 4))[:, :, :3], dtype=np.uint8)

    def _capture(self) -> None:
        """Record a frame: image, joints and the measurements of groundtruth.Kinematics."""
        ee = self._ee_position()
        width = self._width()
        objects = np.stack([self._object_pose(i)[0] for i in range(len(self.object_ids))])
        subject_position = objects[self.subject]
        distance = float(np.linalg.norm(ee - subject_position))
        if self._previous is None:
            velocity, width_rate, distance_rate = np.zeros(3), 0.0, 0.0
        else:
            # Rates over the frame interval, for the same object even if the subject changed.
            previous_ee, previous_width, previous_objects = self._previous
            velocity = (ee - previous_ee) * self.config.fps
            width_rate = (width - previous_width) * self.config.fps
            previous_distance = float(np.linalg.norm(previous_ee - previous_objects[self.subject]))
            distance_rate = (distance - previous_distance) * self.config.fps
        self._previous = (ee, width, objects)
        kinematics = Kinematics(
            ee_velocity=_point(velocity),
            gripper_width=width,
            width_rate=float(width_rate),
            finger_contacts=self._contacts(self.subject),
            object_lift=self._lift(self.subject),
            object_distance=distance,
            distance_rate=float(distance_rate),
        )
        joints = [self.bc.getJointState(self.body, j) for j in self.movable]
        self.frames.append(
            Frame(
                stamp_ns=start_stamp_ns(self.seed) + len(self.frames) * self.frame_period_ns,
                image=self._render(),
                joint_positions=np.array([j[0] for j in joints]),
                joint_velocities=np.array([j[1] for j in joints]),
                joint_efforts=np.array([j[3] for j in joints]),
                kinematics=kinematics,
                subject=self.subject,
                object_position=_point(subject_position),
                held=kinematics.held(self.config.truth),
            )
        )

    # control ----------------------------------------------------------------------------------

    def _apply_control(self) -> None:
        bc, pb = self.bc, self.pb
        orientation = bc.getQuaternionFromEuler([math.pi, 0.0, self.ee_yaw])
        solution = bc.calculateInverseKinematics(
            self.body,
            self.robot.ee_link,
            self.ee_target.tolist(),
            orientation,
            lowerLimits=self.lower,
            upperLimits=self.upper,
            jointRanges=self.ranges,
            restPoses=self.rest,
            maxNumIterations=20,
        )
        bc.setJointMotorControlArray(
            self.body,
            list(self.robot.arm_joints),
            pb.POSITION_CONTROL,
            targetPositions=list(solution[: len(self.robot.arm_joints)]),
            forces=list(self.robot.arm_forces),
        )
        for finger in self.robot.finger_joints:
            bc.setJointMotorControl2(
                self.body,
                finger,
                pb.POSITION_CONTROL,
                targetPosition=self.finger_target,
                force=self.robot.finger_force,
                maxVelocity=0.05,
            )

    def _step(self) -> None:
        if self.step_count % 4 == 0:  # inverse kinematics at a quarter of the physics rate
            self._apply_control()
        self.bc.stepSimulation()
        self.step_count += 1
        if self.step_count % self.steps_per_frame == 0:
            self._capture()

    @property
    def time_s(self) -> float:
        return self.step_count * self.dt

    def _execute(self, command: _Command) -> None:
        hz = self.config.physics_hz
        if isinstance(command, _Subject):
            self.subject = command.index
        elif isinstance(command, _Wait):
            for _ in range(round(command.duration * hz)):
                self._step()
        elif isinstance(command, _Path):
            points = np.array([self.ee_target, *command.points])
            lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
            along = np.concatenate([[0.0], np.cumsum(lengths)])
            start_yaw = self.ee_yaw
            turn = _wrap_half_pi(command.yaw - start_yaw)
            steps = max(1, round(command.duration * hz))
            for k in range(1, steps + 1):
                s = _profile(k / hz, steps / hz)
                arc = s * along[-1]
                self.ee_target = np.array([np.interp(arc, along, points[:, i]) for i in range(3)])
                self.ee_yaw = start_yaw + turn * s
                self._step()
        else:
            self.finger_target = 0.0 if command.close else self.robot.finger_open
            last, still = self._width(), 0
            for k in range(round(command.max_duration * hz)):
                self._step()
                if k % 12 == 11:  # 20 Hz: stop once the fingers stopped
                    width = self._width()
                    still = still + 1 if abs(width - last) < 2e-4 else 0
                    last = width
                    if still >= 2:
                        break

    def _path(self, points: list[np.ndarray], yaw: float, speed: float) -> _Path:
        """A smooth move through `points` with mean speed `speed` (m/s)."""
        ends = [self.ee_target, *points]
        distance = float(sum(np.linalg.norm(b - a) for a, b in itertools.pairwise(ends)))
        turn = abs(_wrap_half_pi(yaw - self.ee_yaw))
        duration = max(0.8, distance / speed, turn / 1.0)
        return _Path(tuple(_point(p) for p in points), yaw, duration)

    def _grasp_yaw(self, index: int) -> float:
        """Yaw of the hand that closes the fingers across the object's narrow side."""
        _, yaw = self._object_pose(index)
        shape = self.objects[index].shape
        if shape == "brick":  # the fingers close along the hand's y axis: align it with the brick's
            return _wrap_half_pi(yaw)
        if shape == "cube":
            return (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
        return _wrap_half_pi(float(self.rng.uniform(-0.6, 0.6)))

    def _retreat_point(self, release: np.ndarray) -> np.ndarray:
        """Where to back off to: home, or up and back toward the robot's base.

        The path goes 6 cm straight up first and then here, at least 7 cm above the release
        point, so the distance to the object only grows on the way (the retreating rule sees
        it move away throughout) and the open fingers do not brush the object.
        """
        if self.rng.random() < 0.5:
            return self.home.copy()
        back = -release[:2] / max(float(np.linalg.norm(release[:2])), 1e-6)
        angle = self.rng.uniform(math.radians(35), math.radians(80))
        length = self.rng.uniform(0.07 / math.sin(angle), 0.25)
        offset = np.array([*(back * math.cos(angle)), math.sin(angle)]) * length
        return release + offset

    def _script(self) -> Iterator[_Command]:
        """The scripted pick-and-place cycles, reading object poses as it goes."""
        rng, cfg = self.rng, self.config
        yield _Wait(float(rng.uniform(*cfg.idle_s)))
        for cycle in range(self.cycles):
            speed = float(rng.uniform(*cfg.speed))
            index = 0 if cycle == 0 else int(rng.integers(len(self.objects)))
            yield _Subject(index)
            info = self.objects[index]
            centre, _ = self._object_pose(index)
            yaw = self._grasp_yaw(index)
            # Grasp the centre; tall cylinders a bit above it so the fingers clear the table.
            raise_z = max(0.0, info.size[2] / 2 - 0.025) if info.shape == "cylinder" else 0.0
            grasp = centre + np.array([0.0, 0.0, raise_z])
            # The point above must not be higher than the start: the approach then only ever
            # gets closer to the object (the reaching rule sees it approach throughout).
            above_z = grasp[2] + rng.uniform(0.06, 0.16)
            above = np.array(
                [grasp[0], grasp[1], max(grasp[2] + 0.04, min(above_z, self.ee_target[2]))]
            )
            yield self._path([above, grasp], yaw, speed)
            yield _Grip(close=True, max_duration=2.0)
            yield _Wait(float(rng.uniform(0.05, 0.3)))
            lift = self.ee_target + np.array([0.0, 0.0, rng.uniform(0.1, 0.2)])
            yield self._path([lift], yaw, speed * 0.8)
            if self._contacts(index) == 0 or self._lift(index) < cfg.truth.lift_height:
                self.grasp_failures += 1
                yield _Grip(close=False, max_duration=1.5)
                yield _Wait(float(rng.uniform(*cfg.idle_s)))
                continue
            taken = [self._object_pose(i)[0] for i in range(len(self.objects)) if i != index]
            spot = self._free_spots(1, [*taken, centre])[0]
            carry = np.array([spot[0], spot[1], lift[2] + rng.uniform(-0.03, 0.05)])
            yield self._path([carry], yaw, speed)
            yield self._path([np.array([spot[0], spot[1], grasp[2] + 0.004])], yaw, speed * 0.7)
            yield _Grip(close=False, max_duration=1.5)
            release = self.ee_target.copy()
            up = release + np.array([0.0, 0.0, 0.06])  # out of the object, then away
            yield self._path([up, self._retreat_point(release)], yaw, speed)
            yield _Wait(float(rng.uniform(*cfg.idle_s)))

    def run(self) -> Episode:
        """Run the script, then label and caption the frames."""
        try:
            self._capture()
            for command in self._script():
                self._execute(command)
                if self.time_s >= self.config.max_duration_s:
                    break
        finally:
            self.bc.disconnect()
        frames, fps = self.frames, self.config.fps
        states = label_frames([f.kinematics for f in frames], fps, self.config.truth)
        subjects = [(self.objects[f.subject].colour, self.objects[f.subject].shape) for f in frames]
        texts = captions.segment_captions(states, subjects, self.rng)
        for frame, state, text in zip(frames, states, texts, strict=True):
            frame.state, frame.caption = state, text
        return Episode(
            seed=self.seed,
            config=self.config,
            joint_names=self.robot.joint_names,
            objects=tuple(self.objects),
            camera=self.camera,
            light=self.light,
            cycles=self.cycles,
            grasp_failures=self.grasp_failures,
            frames=frames,
        )


def generate_episode(config: SimConfig, seed: int) -> Episode:
    """Simulate one episode; the same (config, seed) gives the same episode.

    Raises:
        ValueError: a negative seed.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return _PickPlace(config, seed).run()
