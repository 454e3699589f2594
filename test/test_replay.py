"""`vljepa replay`: a generated bag through the nodes' pipeline into an MCAP file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_support import REPO, message_fields, python_env

from vljepa_ros.stream.state_tracker import StateTrackerConfig

NS = 1_000_000_000


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-second simulated pick-and-place episode written as a rosbag2 MCAP folder."""
    from vljepa_ros.data.bag import write_episode_bag
    from vljepa_ros.data.sim import SimConfig, generate_episode

    episode = generate_episode(SimConfig(image_size=64, max_duration_s=12.0), seed=7)
    return write_episode_bag(tmp_path_factory.mktemp("bag") / "episode", episode)


def _replay(bag: Path, out: Path, checkpoint: Path, *extra: str) -> str:
    vljepa = Path(sys.executable).parent / "vljepa"
    result = subprocess.run(
        [str(vljepa), "replay", str(bag), "--out", str(out), "--checkpoint", str(checkpoint),
         *extra],
        cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


def _read(path: Path) -> dict[str, list]:
    """Messages per topic, decoded by mcap's own ROS 2 decoder (not rosbags, not rclpy)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    topics: dict[str, list] = {}
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            topics.setdefault(channel.topic, []).append((message.log_time, decoded))
    return topics


def _ns(stamp: object) -> int:
    return stamp.sec * NS + stamp.nanosec  # type: ignore[attr-defined]


def _input_stamps(bag: Path) -> set[int]:
    from vljepa_ros.data.bag import read_episode

    return {int(s) for s in read_episode(bag).stamps_ns}


def test_replay_writes_every_topic_with_input_stamps(
    bag: Path, micro_checkpoint: Path, tmp_path: Path
) -> None:
    """One state per step, stamped (and logged) at input capture stamps; events and info too."""
    out = tmp_path / "out.mcap"
    stdout = _replay(bag, out, micro_checkpoint)
    topics = _read(out)
    assert set(topics) == {
        "/vljepa/embedding", "/vljepa/state", "/vljepa/events", "/vljepa/embedding_info"
    }  # fmt: skip
    stamps = _input_stamps(bag)
    states, embeddings = topics["/vljepa/state"], topics["/vljepa/embedding"]
    assert len(states) == len(embeddings) >= 60  # 12 s at 10 steps/s, minus the first clip
    for (log_time, state), (_, embedding) in zip(states, embeddings, strict=True):
        stamp = state.header.stamp.sec * 1_000_000_000 + state.header.stamp.nanosec
        assert stamp in stamps
        assert log_time == stamp
        assert state.seq == embedding.seq
        assert len(embedding.embedding) == 384
    assert [s.seq for _, s in states] == list(range(len(states)))
    # each stabilised label is about the step lag_steps before its own (none on the first ones)
    lag = StateTrackerConfig().lag_steps
    step_stamps = [_ns(e.header.stamp) for _, e in embeddings]
    for k, (_, state) in enumerate(states):
        assert _ns(state.label_stamp) == (step_stamps[k - lag] if k >= lag else 0)
    info = topics["/vljepa/embedding_info"][0][1]
    assert info.labels[0] == "idle"
    last = topics["/vljepa/events"][-1][1]
    assert last.trigger == "shutdown"
    # the decoder saw every step, the last ones with the labels the tracker's flush gave
    assert _ns(last.segment_end) == step_stamps[-1]
    assert "embedding" in stdout


def test_replay_is_deterministic_and_readable_by_rosbags(
    bag: Path, micro_checkpoint: Path, tmp_path: Path
) -> None:
    """Two runs give identical messages; rosbags reads the file with the package's .msg types."""
    first, second = tmp_path / "a.mcap", tmp_path / "b.mcap"
    _replay(bag, first, micro_checkpoint, "--decoder", "offline")
    _replay(bag, second, micro_checkpoint, "--decoder", "offline")
    from rosbags.highlevel import AnyReader

    from vljepa_ros.replay import typestore

    def contents(path: Path) -> list:
        with AnyReader([path], default_typestore=typestore()) as reader:
            return [
                (c.topic, t, str(reader.deserialize(raw, c.msgtype)))
                for c, t, raw in reader.messages()
            ]

    a, b = contents(first), contents(second)
    assert a == b
    assert any(topic == "/vljepa/events" for topic, _, _ in a)


def test_replay_of_a_bag_without_images_names_the_topics(tmp_path: Path) -> None:
    """A bag with no image topic is refused with the topics it does have."""
    from mcap_ros2.writer import Writer

    path = tmp_path / "no_images.mcap"
    with path.open("wb") as stream:
        writer = Writer(stream)
        schema = writer.register_msgdef("std_msgs/msg/String", "string data")
        writer.write_message("/chatter", schema, {"data": "hi"}, log_time=1, publish_time=1)
        writer.finish()
    from vljepa_ros.replay import read_frames

    with pytest.raises(ValueError, match="/chatter"):
        list(read_frames(path, None))


def test_message_definitions_used_offline_match_the_generated_messages() -> None:
    """rosbags' view of the .msg files has the same fields as the rosidl-generated classes."""
    import dataclasses

    from ros_support import message_samples

    from vljepa_ros.replay import typestore

    store = typestore()
    for name, msg in message_samples().items():
        fields = [
            f.name
            for f in dataclasses.fields(store.types[f"vljepa_ros/msg/{name}"])
            if f.name.islower() and not f.name.startswith("__")
        ]
        assert fields == list(message_fields(msg)), name


def test_offline_segment_label_ties_go_to_the_first_seen() -> None:
    """A segment's label is its most common stabilised label; on a tie the one seen first, so
    replays are identical whatever the process's string hashing (a set's order is not)."""
    from vljepa_ros.replay import _offline_segments

    def whole(embeddings: np.ndarray, n: int) -> list[tuple[int, int]]:
        return [(0, len(embeddings))]

    for k in range(20):
        first, second = f"state_{k}_b", f"state_{k}_a"
        labels = [first, second, second, first, "other"]
        steps = [(i * NS // 10, np.eye(4, dtype=np.float32)[i % 4], lab)
                 for i, lab in enumerate(labels)]  # fmt: skip
        (segment,) = _offline_segments(steps, 6.0, whole)
        assert segment.label == first
