"""The bad-input battery: 28 named kinds of bad input sent over real DDS to a running perception
node (its own process): 12 malformed raw images, 7 malformed compressed images, and an all-zero
frame, future, zero, stale, duplicate and backwards stamps, a publisher of another message type
on the camera topic, a best-effort publisher to the node's reliable subscription (reported and
counted as an incompatible publisher; Fast DDS reports no event for the wrong type, which is
simply never delivered), and a burst of 1,000 frames in about a second.

After the battery the node still steps good frames with their stamps, every kind shows up in
the diagnostics counter it belongs to, and the node's resident memory is back within bounds.
The model is the micro test checkpoint: what is tested does not depend on trained weights.
"""

from __future__ import annotations

import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_support import RosPeer, spawn, start_node, stop_node

NS = 1_000_000_000
MEMORY_SLACK_MB = 100  # resident memory after the battery vs before it


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class Camera(RosPeer):
    """Publishes Image or CompressedImage on /image; keeps the node's outputs."""

    def __init__(self, compressed: bool) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CompressedImage, Image

        from vljepa_ros.msg import SemanticEmbedding
        from vljepa_ros.nodes.common import qos_reliable

        super().__init__("test_bad_input_camera")
        self.compressed = compressed
        self.type = CompressedImage if compressed else Image
        self.pub = self.node.create_publisher(self.type, "/image", qos_reliable(1000))
        self.keep("embedding", SemanticEmbedding, "/vljepa/embedding", qos_reliable(200))
        self.keep("diag", DiagnosticArray, "/diagnostics", 20)

    def now_ns(self) -> int:
        return int(self.node.get_clock().now().nanoseconds)

    def good(self, stamp_ns: int, shade: int = 128) -> Any:
        """A valid frame stamped `stamp_ns`."""
        from vljepa_ros.conversions import rgb_to_compressed
        from vljepa_ros.nodes.common import image_message, ns_to_stamp

        rgb = np.full((48, 64, 3), shade, dtype=np.uint8)
        rgb[:, : 8 + shade % 40] = 255 - shade
        if not self.compressed:
            return image_message(rgb, ns_to_stamp(stamp_ns), "test_camera_optical_frame")
        fmt, data = rgb_to_compressed(rgb, "jpeg")
        msg = self.type(format=fmt, data=data)
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = "test_camera_optical_frame"
        return msg

    def publish(self, msg: Any, stamp_ns: int | None = None) -> None:
        from vljepa_ros.nodes.common import ns_to_stamp

        if stamp_ns is not None:
            msg.header.stamp = ns_to_stamp(stamp_ns)
        self.pub.publish(msg)
        time.sleep(0.01)

    def send_good(self, count: int, hz: float = 15.0) -> list[int]:
        stamps = []
        for i in range(count):
            stamps.append(self.now_ns())
            self.publish(self.good(stamps[-1], shade=40 + 5 * i))
            time.sleep(1.0 / hz)
        return stamps

    def counters(self) -> dict[str, int]:
        """The integer values of the newest perception diagnostics status ({} before one)."""
        arrays = [a for a in self.snapshot("diag") if a.status]
        if not arrays:
            return {}
        out = {}
        for kv in arrays[-1].status[0].values:
            if kv.value.lstrip("-").isdigit():
                out[kv.key] = int(kv.value)
        return out

    def status(self) -> tuple[int, str]:
        """Level and message of the newest perception diagnostics status."""
        arrays = [a for a in self.snapshot("diag") if a.status]
        assert arrays, "no diagnostics received"
        return arrays[-1].status[0].level, arrays[-1].status[0].message


def raw_bad_frames() -> dict[str, dict[str, Any]]:
    """Malformed sensor_msgs/Image fields, by name; each must count as one bad frame."""
    ok = {"height": 48, "width": 64, "encoding": "rgb8", "step": 192, "data": bytes(9216)}
    return {
        "truncated data": {**ok, "data": bytes(1000)},
        "step smaller than width x channels": {**ok, "step": 100},
        "zero width": {**ok, "width": 0, "step": 0, "data": b""},
        "zero height": {**ok, "height": 0, "data": b""},
        "20000x20000 header with small data": {
            **ok,
            "height": 20000,
            "width": 20000,
            "step": 60000,
        },
        "unknown encoding": {**ok, "encoding": "hsv8"},
        "empty encoding": {**ok, "encoding": ""},
        "encoding/step mismatch (rgb16 on rgb8 rows)": {**ok, "encoding": "rgb16"},
        "bayer pattern with short data": {**ok, "encoding": "bayer_rggb8", "data": bytes(10)},
        "yuv422 with odd width": {
            **ok,
            "encoding": "yuv422",
            "width": 63,
            "step": 126,
            "data": bytes(126 * 48),
        },
        "mono16 with odd byte count": {
            **ok,
            "encoding": "mono16",
            "step": 128,
            "data": bytes(128 * 48 - 1),
        },
        "step beyond the data": {**ok, "step": 4000},
    }


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's shape) with tiny data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def compressed_bad_frames() -> dict[str, dict[str, Any]]:
    """Malformed sensor_msgs/CompressedImage fields, by name; each counts as one bad frame."""
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    from vljepa_ros.conversions import rgb_to_compressed

    jpeg = rgb_to_compressed(rgb, "jpeg")[1]
    png = rgb_to_compressed(rgb, "png")[1]
    return {
        "empty data": {"format": "jpeg", "data": b""},
        "corrupt JPEG (header then noise)": {
            "format": "jpeg",
            "data": jpeg[:20] + bytes(range(256)) * 4,
        },
        "truncated JPEG": {"format": "jpeg", "data": jpeg[: len(jpeg) // 3]},
        "truncated PNG": {"format": "png", "data": png[: len(png) // 2]},
        "PNG claiming 60000x60000 pixels": {"format": "png", "data": _png_claiming(60000, 60000)},
        "neither JPEG nor PNG (GIF bytes)": {"format": "gif", "data": b"GIF89a" + bytes(100)},
        "random bytes": {"format": "jpeg", "data": np.random.default_rng(0).bytes(5000)},
    }


def _node_and_camera(checkpoint: Path, compressed: bool) -> tuple[subprocess.Popen[str], Camera]:
    node = start_node(
        "perception_node",
        f"checkpoint:={checkpoint}",
        f"compressed:={'true' if compressed else 'false'}",
        "input_reliability:=reliable",
        "input_depth:=100",
        "min_dwell:=0.0",
    )
    camera = Camera(compressed)
    try:
        camera.wait_for(
            lambda: camera.pub.get_subscription_count() > 0 or node.poll() is not None,
            60.0,
            "node start",
        )
        assert node.poll() is None, "the node exited at start"
    except BaseException:
        camera.close()
        print(stop_node(node)[-3000:])
        raise
    return node, camera


@pytest.fixture
def raw(micro_checkpoint: Path) -> Iterator[tuple[subprocess.Popen[str], Camera]]:
    node, camera = _node_and_camera(micro_checkpoint, compressed=False)
    try:
        yield node, camera
    finally:
        camera.close()
        print(stop_node(node)[-3000:])


@pytest.fixture
def compressed(micro_checkpoint: Path) -> Iterator[tuple[subprocess.Popen[str], Camera]]:
    node, camera = _node_and_camera(micro_checkpoint, compressed=True)
    try:
        yield node, camera
    finally:
        camera.close()
        print(stop_node(node)[-3000:])


def _warm_up(camera: Camera) -> tuple[dict[str, int], int]:
    # keep the camera going until the node steps: on a loaded machine the first frames can
    # arrive stale while the node is still starting
    deadline, sent = time.monotonic() + 60.0, 0
    while len(camera.snapshot("embedding")) < 3 and time.monotonic() < deadline:
        sent += len(camera.send_good(5))
    assert len(camera.snapshot("embedding")) >= 3, "no steps within 60 s"
    camera.wait_for(lambda: camera.counters().get("frames_received", 0) >= sent, 5.0, "diag")
    return camera.counters(), len(camera.snapshot("embedding"))


def _good_frames_still_step(camera: Camera, steps_before: int) -> None:
    from vljepa_ros.nodes.common import stamp_to_ns

    stamps = camera.send_good(20)
    camera.wait_for(
        lambda: len(camera.snapshot("embedding")) >= steps_before + 3, 30.0, "steps after"
    )
    assert stamp_to_ns(camera.snapshot("embedding")[-1].header.stamp) in stamps


def _survived(
    node: subprocess.Popen[str],
    camera: Camera,
    steps_before: int,
    memory_before: float,
    expected: dict[str, int],
    at_least: dict[str, int],
) -> None:
    """After a battery: the node is alive, good frames still step, the diagnostics count
    `expected` exactly and at least `at_least`, and resident memory is back within bounds."""
    assert node.poll() is None, "the node died"
    _good_frames_still_step(camera, steps_before)

    def reached() -> bool:
        now = camera.counters()
        return all(now.get(k, 0) >= v for k, v in {**expected, **at_least}.items())

    camera.wait_for(reached, 10.0, f"diagnostics to count {expected} and {at_least}")
    now = camera.counters()
    assert {k: now[k] for k in expected} == expected
    memory_after = rss_mb(node.pid)
    assert memory_after < memory_before + MEMORY_SLACK_MB, (memory_before, memory_after)


def test_raw_image_battery(raw: tuple[subprocess.Popen[str], Camera]) -> None:
    """Malformed images, bad stamps, a wrong message type and a 1,000-frame burst."""
    from sensor_msgs.msg import Image

    from vljepa_ros.nodes.common import image_message, ns_to_stamp

    node, camera = raw
    base, steps = _warm_up(camera)
    memory_before = rss_mb(node.pid)
    bad = raw_bad_frames()
    for fields in bad.values():
        camera.publish(Image(**fields), camera.now_ns())
    # an all-zero frame is valid input: stepped, not counted as bad
    zeros = np.zeros((48, 64, 3), dtype=np.uint8)
    camera.publish(image_message(zeros, ns_to_stamp(camera.now_ns()), "test_camera_optical_frame"))
    now = camera.now_ns()
    camera.publish(camera.good(now + 10 * NS))  # stamp in the future (clock mismatch)
    camera.publish(camera.good(0))  # zero stamp
    camera.publish(camera.good(now - 5 * NS))  # stale: older than max_input_age on arrival
    now = camera.now_ns()
    camera.publish(camera.good(now))
    camera.publish(camera.good(now))  # duplicate stamp
    camera.publish(camera.good(now - NS // 5))  # stamp going backwards (a bag loop)
    # a publisher of another message type on the same topic (its own process)
    wrong = spawn(
        "-c",
        "import time, rclpy; from std_msgs.msg import String; rclpy.init(); "
        "n = rclpy.create_node('wrong_type_publisher')\n"
        "p = n.create_publisher(String, '/image', 10)\n"
        "for _ in range(30): p.publish(String(data='not an image')); time.sleep(0.1)\n"
        "n.destroy_node(); rclpy.shutdown()",
    )
    # a burst of 1,000 frames in about a second
    for i in range(1000):
        camera.pub.publish(camera.good(camera.now_ns(), shade=i % 200))
        time.sleep(0.0005)
    wrong.wait(timeout=60)
    # a best-effort publisher cannot reach the node's reliable subscription: reported, counted
    from vljepa_ros.nodes.common import qos_input

    best_effort = camera.node.create_publisher(Image, "/image", qos_input("best_effort", 5))
    best_effort.publish(camera.good(camera.now_ns()))
    camera.wait_for(lambda: camera.counters().get("incompatible_publishers", 0) >= 1, 10.0,
                    "the QoS mismatch to be reported")  # fmt: skip
    _survived(
        node,
        camera,
        steps,
        memory_before,
        expected={
            "bad_frames": base["bad_frames"] + len(bad),
            "future_frames": base["future_frames"] + 1,
        },
        at_least={
            "stale_frames": base["stale_frames"] + 2,
            "duplicate_frames": base["duplicate_frames"] + 1,
            "stream_resets": base["stream_resets"] + 1,
            "frames_received": base["frames_received"] + len(bad) + 7 + 20,
        },
    )
    # the diagnostics WARN while frames were dropped recently, and clear once they stop
    from diagnostic_msgs.msg import DiagnosticStatus

    level, message = camera.status()
    assert level == DiagnosticStatus.WARN, message
    assert "dropped" in message
    deadline = time.monotonic() + 30.0
    while camera.status()[0] != DiagnosticStatus.OK and time.monotonic() < deadline:
        camera.send_good(5)
    assert camera.status() == (DiagnosticStatus.OK, "running")


def test_compressed_image_battery(compressed: tuple[subprocess.Popen[str], Camera]) -> None:
    """Corrupt, truncated, oversized and foreign compressed images are dropped and counted."""
    from sensor_msgs.msg import CompressedImage

    node, camera = compressed
    base, steps = _warm_up(camera)
    memory_before = rss_mb(node.pid)
    bad = compressed_bad_frames()
    for fields in bad.values():
        camera.publish(CompressedImage(**fields), camera.now_ns())
    expected = {"bad_frames": base["bad_frames"] + len(bad)}
    _survived(node, camera, steps, memory_before, expected, at_least={})
