"""Episodes as ROS 2 bags (rosbag2 folder, MCAP storage, CDR) and a reader for any such bag.

Written with `rosbags` (pure Python), so this module imports no ROS package. A bag folder holds
`metadata.yaml` (rosbag2 version 9, as Jazzy and Kilted write) and one `.mcap` file, for
`ros2 bag info/play`, rosbags and any MCAP reader. Topics (all stamps are the frame's capture
time; every message's log time equals its header stamp):

    /camera/image_raw             sensor_msgs/msg/Image, rgb8 (default)
    /camera/image_raw/compressed  sensor_msgs/msg/CompressedImage, jpeg (with compressed=True)
    /camera/camera_info           sensor_msgs/msg/CameraInfo
    /joint_states                 sensor_msgs/msg/JointState (arm and finger joints)
    /ground_truth/state           std_msgs/msg/String, one of the seven robot states
    /ground_truth/caption         std_msgs/msg/String

one message of each per camera frame.

`read_episode` reads these bags and users' own: the first Image or CompressedImage topic
(preferring /camera/image_raw*), any encoding `conversions` knows, and annotations on String
topics that hold until the next annotation, so a user can annotate only the changes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vljepa_ros.conversions import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
)
from vljepa_ros.data.sim import Episode

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
JOINT_STATES_TOPIC = "/joint_states"
STATE_TOPIC = "/ground_truth/state"
CAPTION_TOPIC = "/ground_truth/caption"
CAMERA_FRAME = "camera_optical_frame"
BAG_VERSION: Literal[9] = 9  # rosbag2 metadata version written by Kilted
EPISODE_METADATA_KEY = "vljepa_ros.episode"  # custom_data entry: the episode summary as JSON

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

_TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class BagReadError(ValueError):
    """A bag that cannot be read as an episode; the message says why."""


def _stamp(stamp_ns: int) -> Any:
    time_type = _TYPESTORE.types["builtin_interfaces/msg/Time"]
    return time_type(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def _header(stamp_ns: int, frame_id: str) -> Any:
    return _TYPESTORE.types["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id)


def _camera_info(episode: Episode, stamp_ns: int) -> Any:
    camera = episode.camera
    f = camera.focal_px
    cx, cy = (camera.width - 1) / 2, (camera.height - 1) / 2
    types = _TYPESTORE.types
    return types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns, CAMERA_FRAME),
        height=camera.height,
        width=camera.width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3).reshape(-1),
        p=np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def write_episode_bag(
    path: str | Path, episode: Episode, compressed: bool = False, jpeg_quality: int = 90
) -> Path:
    """Write an episode as a rosbag2 folder with MCAP storage; returns the folder.

    Raises:
        FileExistsError: `path` exists (bags are never overwritten).
        ValueError: an episode without frames.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; bags are never overwritten")
    if not episode.frames:
        raise ValueError("episode has no frames")
    types = _TYPESTORE.types
    string = types["std_msgs/msg/String"]
    serialize = _TYPESTORE.serialize_cdr
    image_topic, image_type = (
        (COMPRESSED_TOPIC, COMPRESSED_TYPE) if compressed else (IMAGE_TOPIC, IMAGE_TYPE)
    )
    with Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.set_custom_data(EPISODE_METADATA_KEY, json.dumps(episode.summary()))
        image_conn = writer.add_connection(image_topic, image_type, typestore=_TYPESTORE)
        info_conn = writer.add_connection(
            CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=_TYPESTORE
        )
        joint_conn = writer.add_connection(
            JOINT_STATES_TOPIC, "sensor_msgs/msg/JointState", typestore=_TYPESTORE
        )
        state_conn = writer.add_connection(STATE_TOPIC, "std_msgs/msg/String", typestore=_TYPESTORE)
        caption_conn = writer.add_connection(
            CAPTION_TOPIC, "std_msgs/msg/String", typestore=_TYPESTORE
        )
        names = list(episode.joint_names)
        for frame in episode.frames:
            t = frame.stamp_ns
            height, width = frame.image.shape[:2]
            if compressed:
                fmt, data = rgb_to_compressed(frame.image, "jpeg", jpeg_quality)
                image = types[COMPRESSED_TYPE](
                    header=_header(t, CAMERA_FRAME),
                    format=fmt,
                    data=np.frombuffer(data, dtype=np.uint8),
                )
            else:
                image = types[IMAGE_TYPE](
                    header=_header(t, CAMERA_FRAME),
                    height=height,
                    width=width,
                    encoding="rgb8",
                    is_bigendian=0,
                    step=width * 3,
                    data=np.ascontiguousarray(frame.image).reshape(-1),
                )
            writer.write(image_conn, t, serialize(image, image_type))
            writer.write(
                info_conn, t, serialize(_camera_info(episode, t), "sensor_msgs/msg/CameraInfo")
            )
            joints = types["sensor_msgs/msg/JointState"](
                header=_header(t, ""),
                name=names,
                position=np.asarray(frame.joint_positions, dtype=np.float64),
                velocity=np.asarray(frame.joint_velocities, dtype=np.float64),
                effort=np.asarray(frame.joint_efforts, dtype=np.float64),
            )
            writer.write(joint_conn, t, serialize(joints, "sensor_msgs/msg/JointState"))
            writer.write(state_conn, t, serialize(string(data=frame.state), "std_msgs/msg/String"))
            writer.write(
                caption_conn, t, serialize(string(data=frame.caption), "std_msgs/msg/String")
            )
    return path


@dataclass
class EpisodeData:
    """What `read_episode` found: frames in time order, with annotations and joint states."""

    image_topic: str
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    stamps_ns: np.ndarray  # (N,) int64 capture stamps (header stamp, else log time)
    states: list[str | None]  # per frame; None before the first annotation
    captions: list[str | None]
    joint_names: tuple[str, ...] = ()
    joint_stamps_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    joint_positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (M, J), NaN
    joint_velocities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (M, J), NaN
    skipped_frames: int = 0  # image messages that could not be decoded
    metadata: dict[str, Any] = field(default_factory=dict)  # the generator's episode summary


def _header_ns(msg: Any, log_time: int) -> int:
    header = getattr(msg, "header", None)
    if header is None:
        return log_time
    stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return stamp_ns if stamp_ns > 0 else log_time


def _sticky(
    annotations: list[tuple[int, str]], stamps: np.ndarray, tolerance_ns: int
) -> list[str | None]:
    """Per stamp, the latest annotation logged at or before it (within the tolerance)."""
    if not annotations:
        return [None] * len(stamps)
    annotations.sort(key=lambda a: a[0])
    times = np.array([a[0] for a in annotations], dtype=np.int64)
    index = np.searchsorted(times, stamps + tolerance_ns, side="right") - 1
    return [annotations[i][1] if i >= 0 else None for i in index]


def _choose_image_topic(topics: dict[str, str], wanted: str | None) -> str:
    if wanted is not None:
        if topics.get(wanted) not in IMAGE_TYPES:
            raise BagReadError(
                f"no Image or CompressedImage topic '{wanted}' in the bag (topics: {topics})"
            )
        return wanted
    images = sorted(t for t, kind in topics.items() if kind in IMAGE_TYPES)
    if not images:
        raise BagReadError(f"the bag has no Image or CompressedImage topic (topics: {topics})")
    preferred = [t for t in images if t.startswith(IMAGE_TOPIC)]
    return (preferred or images)[0]


def read_episode(
    path: str | Path,
    image_topic: str | None = None,
    state_topic: str = STATE_TOPIC,
    caption_topic: str = CAPTION_TOPIC,
    size: int | None = None,
    tolerance_ns: int = 1_000_000,
) -> EpisodeData:
    """Read a rosbag2 folder (MCAP or SQLite 3) or a bare .mcap file as frames plus annotations.

    `size` resizes every frame to size x size (area interpolation) while reading, to bound
    memory on long or large bags. An annotation applies to the frames stamped at or after its
    log time (minus `tolerance_ns`) until the next annotation on the same topic.

    Raises:
        BagReadError: not a readable bag, no image topic (or not `image_topic`), or no frame
            that could be decoded.
    """
    path = Path(path)
    try:
        reader = AnyReader([path], default_typestore=_TYPESTORE)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable input
        raise BagReadError(f"cannot open {path} as a ROS bag: {exc}") from exc
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        chosen = _choose_image_topic(topics, image_topic)
        wanted = {chosen, state_topic, caption_topic, JOINT_STATES_TOPIC}
        connections = [c for c in reader.connections if c.topic in wanted]
        frames: list[tuple[int, np.ndarray]] = []
        states: list[tuple[int, str]] = []
        captions: list[tuple[int, str]] = []
        joints: list[tuple[int, list[str], Any, Any]] = []
        skipped = 0
        for connection, log_time, raw in reader.messages(connections=connections):
            topic = connection.topic
            msg: Any = reader.deserialize(raw, connection.msgtype)
            if topic == chosen:
                try:
                    if connection.msgtype == COMPRESSED_TYPE:
                        rgb = compressed_to_rgb(msg)
                    else:
                        rgb = image_to_rgb(msg)
                except ImageConversionError:
                    skipped += 1
                    continue
                if size is not None and rgb.shape[:2] != (size, size):
                    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
                frames.append((_header_ns(msg, log_time), rgb))
            elif topic == JOINT_STATES_TOPIC:
                joints.append(
                    (_header_ns(msg, log_time), list(msg.name), msg.position, msg.velocity)
                )
            elif connection.msgtype == "std_msgs/msg/String":
                (states if topic == state_topic else captions).append((log_time, str(msg.data)))
    finally:
        reader.close()
    if not frames:
        raise BagReadError(f"no decodable frame on '{chosen}' in {path} ({skipped} skipped)")
    frames.sort(key=lambda f: f[0])
    stamps = np.array([f[0] for f in frames], dtype=np.int64)
    data = EpisodeData(
        image_topic=chosen,
        frames=np.stack([f[1] for f in frames]),
        stamps_ns=stamps,
        states=_sticky(states, stamps, tolerance_ns),
        captions=_sticky(captions, stamps, tolerance_ns),
        skipped_frames=skipped,
        metadata=_custom_metadata(path),
    )
    if joints:
        _fill_joints(data, joints)
    return data


def _fill_joints(data: EpisodeData, joints: list[tuple[int, list[str], Any, Any]]) -> None:
    """Joint arrays in the first message's name order; missing values are NaN."""
    joints.sort(key=lambda j: j[0])
    names = joints[0][1]
    column = {name: i for i, name in enumerate(names)}
    positions = np.full((len(joints), len(names)), math.nan)
    velocities = np.full((len(joints), len(names)), math.nan)
    for row, (_, msg_names, position, velocity) in enumerate(joints):
        for i, name in enumerate(msg_names):
            if name not in column:
                continue
            if i < len(position):
                positions[row, column[name]] = position[i]
            if i < len(velocity):
                velocities[row, column[name]] = velocity[i]
    data.joint_names = tuple(names)
    data.joint_stamps_ns = np.array([j[0] for j in joints], dtype=np.int64)
    data.joint_positions = positions
    data.joint_velocities = velocities


def _custom_metadata(path: Path) -> dict[str, Any]:
    """The generator's episode summary from the bag's custom_data, if there is one."""
    folder = path if path.is_dir() else path.parent
    try:
        info = yaml.safe_load((folder / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return dict(json.loads(info["custom_data"][EPISODE_METADATA_KEY]))
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return {}
