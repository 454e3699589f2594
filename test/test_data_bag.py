"""Tests of vljepa_ros.data.bag: generated bags read back with an independent reader (mcap +
mcap_ros2) with the documented topics, types and stamps, and read_episode on users' bags."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vljepa_ros.data import bag
from vljepa_ros.data.groundtruth import STATES
from vljepa_ros.data.sim import Episode, SimConfig, generate_episode

SHORT = SimConfig(image_size=40, cycles=(1, 1), distractors=(0, 1), idle_s=(0.5, 0.8))
TYPESTORE = get_typestore(Stores.ROS2_KILTED)

# The documented topics and types (docs/data.md), for raw and compressed images.
DOCUMENTED = {
    False: {
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/ground_truth/state": "std_msgs/msg/String",
        "/ground_truth/caption": "std_msgs/msg/String",
    },
    True: {
        "/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/ground_truth/state": "std_msgs/msg/String",
        "/ground_truth/caption": "std_msgs/msg/String",
    },
}


@pytest.fixture(scope="module")
def episode() -> Episode:
    """A short simulated episode (one cycle, 40x40 images)."""
    return generate_episode(SHORT, 3)


@pytest.fixture(scope="module", params=[False, True], ids=["raw", "compressed"])
def written(
    request: pytest.FixtureRequest, episode: Episode, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, bool]:
    """The episode written as a bag folder, with raw or JPEG images."""
    compressed: bool = request.param
    folder = tmp_path_factory.mktemp("bags") / ("compressed" if compressed else "raw")
    return bag.write_episode_bag(folder, episode, compressed=compressed), compressed


@dataclass(frozen=True)
class _Read:
    schema: Any
    channel: Any
    log_time_ns: int
    ros_msg: Any


def _independent_read(folder: Path) -> dict[str, list[_Read]]:
    """Every message of the bag's MCAP file, decoded by mcap + mcap_ros2 (not rosbags)."""
    (mcap_file,) = folder.glob("*.mcap")
    by_topic: dict[str, list[_Read]] = defaultdict(list)
    with mcap_file.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            by_topic[channel.topic].append(_Read(schema, channel, message.log_time, decoded))
    return by_topic


def test_independent_reader_sees_the_documented_topics_and_types(
    written: tuple[Path, bool], episode: Episode
) -> None:
    """mcap_ros2 finds exactly the documented topics, CDR-encoded with the documented types, one
    message per frame on each."""
    folder, compressed = written
    messages = _independent_read(folder)
    assert set(messages) == set(DOCUMENTED[compressed])
    for topic, items in messages.items():
        assert {m.schema.name for m in items} == {DOCUMENTED[compressed][topic]}
        assert {m.channel.message_encoding for m in items} == {"cdr"}
        assert len(items) == len(episode.frames), topic


def test_stamps_and_log_times_are_the_capture_times(
    written: tuple[Path, bool], episode: Episode
) -> None:
    """Header stamps and log times of every topic equal the frames' capture stamps; images and
    camera info carry the camera's optical frame."""
    folder, _ = written
    expected = [f.stamp_ns for f in episode.frames]
    for topic, items in _independent_read(folder).items():
        assert [m.log_time_ns for m in items] == expected, topic
        header = getattr(items[0].ros_msg, "header", None)
        if header is None:
            continue
        stamps = [
            m.ros_msg.header.stamp.sec * 10**9 + m.ros_msg.header.stamp.nanosec for m in items
        ]
        assert stamps == expected, topic
        if topic.startswith("/camera"):
            assert {m.ros_msg.header.frame_id for m in items} == {bag.CAMERA_FRAME}


def test_payloads_match_the_episode(written: tuple[Path, bool], episode: Episode) -> None:
    """Images, joint states and ground-truth strings decode to what the episode holds."""
    folder, compressed = written
    messages = _independent_read(folder)
    for frame, state, caption, joints in zip(
        episode.frames,
        messages["/ground_truth/state"],
        messages["/ground_truth/caption"],
        messages["/joint_states"],
        strict=True,
    ):
        assert state.ros_msg.data == frame.state
        assert caption.ros_msg.data == frame.caption
        assert list(joints.ros_msg.name) == list(episode.joint_names)
        np.testing.assert_allclose(joints.ros_msg.position, frame.joint_positions)
    first = episode.frames[0].image
    if compressed:
        msg = messages["/camera/image_raw/compressed"][0].ros_msg
        assert "jpeg" in msg.format
        decoded = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)[
            :, :, ::-1
        ]
        assert np.abs(decoded.astype(int) - first).mean() < 8
    else:
        msg = messages["/camera/image_raw"][0].ros_msg
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 40, 40, 120)
        assert np.array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(40, 40, 3), first)
    info = messages["/camera/camera_info"][0].ros_msg
    assert info.k[0] == pytest.approx(episode.camera.focal_px)
    assert (info.width, info.height) == (40, 40)


def test_metadata_yaml_describes_an_mcap_bag(written: tuple[Path, bool], episode: Episode) -> None:
    """metadata.yaml (what `ros2 bag info` reads) names the MCAP storage, the topics with their
    counts and the episode summary."""
    folder, compressed = written
    info = yaml.safe_load((folder / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "mcap"
    assert info["version"] == bag.BAG_VERSION
    assert info["message_count"] == len(DOCUMENTED[compressed]) * len(episode.frames)
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert {name: t["topic_metadata"]["type"] for name, t in topics.items()} == DOCUMENTED[
        compressed
    ]
    assert info["custom_data"][bag.EPISODE_METADATA_KEY]


def test_read_episode_round_trip(written: tuple[Path, bool], episode: Episode) -> None:
    """read_episode returns the frames, stamps, labels, captions, joints and summary written."""
    folder, compressed = written
    data = bag.read_episode(folder)
    images = np.stack([f.image for f in episode.frames])
    assert data.frames.shape == images.shape
    if compressed:
        assert np.abs(data.frames.astype(int) - images).mean() < 8
    else:
        assert np.array_equal(data.frames, images)
    assert data.stamps_ns.tolist() == [f.stamp_ns for f in episode.frames]
    assert data.states == [f.state for f in episode.frames]
    assert set(data.states) == set(STATES)
    assert data.captions == [f.caption for f in episode.frames]
    assert data.joint_names == episode.joint_names
    np.testing.assert_allclose(
        data.joint_positions, np.stack([f.joint_positions for f in episode.frames])
    )
    assert data.metadata["seed"] == 3
    assert data.metadata["label_counts"] == episode.label_counts()


def test_read_episode_accepts_the_bare_mcap_file(
    written: tuple[Path, bool], episode: Episode
) -> None:
    """The .mcap file alone (as users often copy it) reads like its folder."""
    folder, _ = written
    (mcap_file,) = folder.glob("*.mcap")
    data = bag.read_episode(mcap_file)
    assert data.states == [f.state for f in episode.frames]
    assert data.metadata["seed"] == 3


def test_read_episode_resizes_on_request(written: tuple[Path, bool]) -> None:
    """size=N gives N x N frames."""
    folder, _ = written
    assert bag.read_episode(folder, size=16).frames.shape[1:] == (16, 16, 3)


def test_bags_are_never_overwritten(written: tuple[Path, bool], episode: Episode) -> None:
    """Writing onto an existing folder raises FileExistsError."""
    folder, _ = written
    with pytest.raises(FileExistsError):
        bag.write_episode_bag(folder, episode)


def _user_bag(
    folder: Path,
    images: list[tuple[int, Any, str]],
    annotations: list[tuple[int, str]],
    storage: StoragePlugin = StoragePlugin.MCAP,
) -> Path:
    """A bag as a user might record it: images of any type on their topic, sparse annotations."""
    string = TYPESTORE.types["std_msgs/msg/String"]
    with Writer(folder, version=9, storage_plugin=storage) as writer:
        connections: dict[str, Any] = {}
        for stamp, msg, msgtype in images:
            if msgtype not in connections:
                topic = "/cam/image" if msgtype.endswith("/Image") else "/cam/image/compressed"
                connections[msgtype] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(connections[msgtype], stamp, TYPESTORE.serialize_cdr(msg, msgtype))
        if annotations:
            labels = writer.add_connection("/labels", "std_msgs/msg/String", typestore=TYPESTORE)
            for stamp, text in annotations:
                writer.write(
                    labels, stamp, TYPESTORE.serialize_cdr(string(data=text), "std_msgs/msg/String")
                )
    return folder


def _header(stamp: int) -> Any:
    time = TYPESTORE.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=time, frame_id="cam")


def _raw(stamp: int, rgb: np.ndarray, encoding: str) -> tuple[int, Any, str]:
    pixels = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    msg = TYPESTORE.types["sensor_msgs/msg/Image"](
        header=_header(stamp),
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=rgb.shape[1] * 3,
        data=np.ascontiguousarray(pixels).reshape(-1),
    )
    return stamp, msg, "sensor_msgs/msg/Image"


def _png(stamp: int, rgb: np.ndarray) -> tuple[int, Any, str]:
    ok, data = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    msg = TYPESTORE.types["sensor_msgs/msg/CompressedImage"](
        header=_header(stamp), format="png", data=data.reshape(-1)
    )
    return stamp, msg, "sensor_msgs/msg/CompressedImage"


@pytest.mark.parametrize(
    ("encoding", "storage"),
    [("rgb8", StoragePlugin.MCAP), ("bgr8", StoragePlugin.MCAP), ("bgr8", StoragePlugin.SQLITE3)],
)
def test_user_bag_with_raw_images_and_sparse_annotations(
    tmp_path: Path, encoding: str, storage: StoragePlugin
) -> None:
    """A user's Image bag (rgb8 or bgr8, MCAP or SQLite 3) reads as RGB; an annotation holds until
    the next one and frames before the first annotation are None."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(5)]
    stamps = [10**9 + i * 10**8 for i in range(5)]
    folder = _user_bag(
        tmp_path / "user",
        [_raw(s, f, encoding) for s, f in zip(stamps, frames, strict=True)],
        [(stamps[1], "reaching"), (stamps[3], "grasping")],
        storage,
    )
    data = bag.read_episode(folder, state_topic="/labels")
    assert data.image_topic == "/cam/image"
    assert np.array_equal(data.frames, np.stack(frames))
    assert data.states == [None, "reaching", "reaching", "grasping", "grasping"]
    assert data.captions == [None] * 5
    assert data.joint_positions.shape == (0, 0)


def test_user_bag_with_png_compressed_images(tmp_path: Path) -> None:
    """CompressedImage (png) frames decode losslessly; no annotation topic gives None labels."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)]
    folder = _user_bag(tmp_path / "png", [_png(10**9 + i, f) for i, f in enumerate(frames)], [])
    data = bag.read_episode(folder)
    assert data.image_topic == "/cam/image/compressed"
    assert np.array_equal(data.frames, np.stack(frames))
    assert data.states == [None, None, None]


def test_undecodable_frames_are_skipped_and_counted(tmp_path: Path) -> None:
    """A frame with an unsupported encoding is dropped and counted, the others are read."""
    good = np.zeros((4, 4, 3), np.uint8)
    bad = _raw(2 * 10**9, good, "rgb8")
    bad[1].encoding = "32FC7"
    folder = _user_bag(tmp_path / "mixed", [_raw(10**9, good, "rgb8"), bad], [])
    data = bag.read_episode(folder)
    assert data.frames.shape[0] == 1
    assert data.skipped_frames == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda tmp: tmp / "missing", "cannot open"),
        (
            lambda tmp: _user_bag(tmp / "labels_only", [], [(1, "idle")]),
            "no Image or CompressedImage",
        ),
    ],
    ids=["not-a-bag", "no-images"],
)
def test_unreadable_bags_raise_bag_read_error(tmp_path: Path, make: Any, match: str) -> None:
    """A path that is not a bag, or a bag without images, raises BagReadError saying why."""
    with pytest.raises(bag.BagReadError, match=match):
        bag.read_episode(make(tmp_path))


def test_asking_for_a_missing_image_topic_raises(written: tuple[Path, bool]) -> None:
    """image_topic naming a topic the bag lacks raises BagReadError."""
    folder, _ = written
    with pytest.raises(bag.BagReadError, match="/nope"):
        bag.read_episode(folder, image_topic="/nope")
