"""The package's custom messages: built by rosidl, carried by real DDS, readable from MCAP."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from ros_support import (
    NON_ASCII,
    REPO,
    assert_fields_equal,
    message_fields,
    message_samples,
    spawn,
)

MESSAGE_NAMES = ["SemanticEmbedding", "StateLabel", "TextEvent", "EmbeddingInfo"]


def test_message_definitions_have_the_documented_fields() -> None:
    """Each generated message has exactly the field names and types the design fixes."""
    from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel, TextEvent

    expected = {
        SemanticEmbedding: "header:std_msgs/Header clip_start:builtin_interfaces/Time seq:uint64 "
        "model_id:string query:string embedding:sequence<float> novelty:float latency_ms:float",
        StateLabel: "header:std_msgs/Header seq:uint64 label:string "
        "label_stamp:builtin_interfaces/Time confidence:float "
        "instant_label:string instant_confidence:float candidates:sequence<string> "
        "scores:sequence<float> changed:boolean since:builtin_interfaces/Time",
        TextEvent: "header:std_msgs/Header event_id:uint64 segment_start:builtin_interfaces/Time "
        "segment_end:builtin_interfaces/Time text:string label:string trigger:string "
        "novelty:float steps:uint32 embedding:sequence<float>",
        EmbeddingInfo: "header:std_msgs/Header model_id:string y_encoder_id:string dim:uint32 "
        "query:string clip_frames:uint32 step_hz:float labels:sequence<string> "
        "label_prompts:sequence<string> label_embeddings:sequence<float>",
    }
    for cls, spec in expected.items():
        fields = " ".join(f"{k}:{v}" for k, v in cls.get_fields_and_field_types().items())
        assert fields == spec, cls.__name__


def test_every_message_crosses_dds_between_processes() -> None:
    """A second OS process publishes each message; this one receives every field unchanged."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    prefix = f"/vljepa_test_{time.monotonic_ns()}"
    peer = spawn("test/peer_publisher.py", prefix, "60")
    samples = message_samples()
    received: dict[str, Any] = {}
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("vljepa_test_subscriber", context=context)
        qos = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        for name, msg in samples.items():
            node.create_subscription(
                type(msg), f"{prefix}/{name}", lambda m, n=name: received.setdefault(n, m), qos
            )
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 45
        while len(received) < len(samples) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)
            assert peer.poll() is None, f"publisher exited early:\n{peer.stdout.read()}"  # type: ignore[union-attr]
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        peer.kill()
        peer.wait()

    assert sorted(received) == sorted(samples), "not every message type arrived within 45 s"
    for name, msg in samples.items():
        assert_fields_equal(message_fields(msg), message_fields(received[name]), name)
    assert len(received["SemanticEmbedding"].embedding) == 1536
    assert received["TextEvent"].text == NON_ASCII


def _typestore() -> Any:
    """A rosbags type store knowing ROS 2 Kilted's types plus this package's .msg files."""
    from rosbags.typesys import Stores, get_typestore
    from rosbags.typesys.msg import get_types_from_msg

    store = get_typestore(Stores.LATEST)
    for path in sorted((REPO / "msg").glob("*.msg")):
        store.register(get_types_from_msg(path.read_text(), f"vljepa_ros/msg/{path.stem}"))
    return store


def _write_mcap(path: Path) -> None:
    """Serialise each sample with rclpy (rosidl's CDR) and write it as a ROS 2 MCAP file."""
    from mcap.writer import Writer
    from rclpy.serialization import serialize_message

    store = _typestore()
    with path.open("wb") as stream:
        writer = Writer(stream)
        writer.start(profile="ros2", library="vljepa_ros test")
        for i, (name, msg) in enumerate(message_samples().items()):
            type_name = f"vljepa_ros/msg/{name}"
            msgdef, _ = store.generate_msgdef(type_name, ros_version=2)
            schema = writer.register_schema(type_name, "ros2msg", msgdef.encode())
            channel = writer.register_channel(f"/vljepa/{name}", "cdr", schema)
            stamp = 1_700_000_000_000_000_000 + i
            writer.add_message(channel, stamp, serialize_message(msg), stamp)
        writer.finish()


def test_messages_read_back_from_mcap_with_independent_decoders(tmp_path: Path) -> None:
    """rclpy-serialised messages in an MCAP file decode identically with mcap-ros2 and rosbags."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    path = tmp_path / "messages.mcap"
    _write_mcap(path)
    samples = {name: message_fields(msg) for name, msg in message_samples().items()}
    store = _typestore()

    seen = set()
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            name = schema.name.rsplit("/", 1)[-1]
            seen.add(name)
            via_mcap_ros2 = _plain(decoded)
            assert_fields_equal(samples[name], via_mcap_ros2, f"mcap_ros2:{name}")
            via_rosbags = _plain(store.deserialize_cdr(message.data, schema.name))
            assert_fields_equal(samples[name], via_rosbags, f"rosbags:{name}")
            assert channel.message_encoding == "cdr"
    assert seen == set(MESSAGE_NAMES)


def _plain(obj: Any) -> Any:
    """A decoded message (mcap_ros2 dynamic class or rosbags dataclass) as plain values."""
    if dataclasses.is_dataclass(obj):  # rosbags
        # rosbags lists constants (upper case in ROS) and the type name among the fields
        fields = [
            f.name
            for f in dataclasses.fields(obj)
            if f.name.islower() and not f.name.startswith("__")
        ]
        return {name: _plain(getattr(obj, name)) for name in fields}
    if hasattr(obj, "__slots__"):  # mcap_ros2's dynamic classes
        return {n: _plain(getattr(obj, n)) for n in obj.__slots__}
    if isinstance(obj, (str, bytes, bool, int, float)):
        return obj
    return [v.item() if hasattr(v, "item") else v for v in obj]


@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_message_definition_files_are_documented(name: str) -> None:
    """Every field line of each .msg file follows a comment line explaining it."""
    lines = (REPO / "msg" / f"{name}.msg").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#") and "=" not in line:
            assert lines[i - 1].startswith("#"), f"{name}.msg: '{line}' has no comment"
