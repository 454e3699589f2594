"""overlay_node in its own process: draws the topics over camera frames, publishes markers."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ros_support import RosPeer, start_node, stop_node

DIM = 16
LABELS = ["idle", "reaching", "grasping"]


class OverlayPeer(RosPeer):
    """Plays the camera and the perception and decoder nodes for an overlay node."""

    def connect(self) -> None:
        """The publishers of every topic the overlay node reads, and the embedding info."""
        from sensor_msgs.msg import Image

        from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel, TextEvent
        from vljepa_ros.nodes.common import qos_reliable

        node = self.node
        self.camera = node.create_publisher(Image, "/image", qos_reliable(5))
        self.info = node.create_publisher(
            EmbeddingInfo, "/vljepa/embedding_info", qos_reliable(1, latched=True)
        )
        self.states = node.create_publisher(StateLabel, "/vljepa/state", qos_reliable(10))
        self.embeddings = node.create_publisher(
            SemanticEmbedding, "/vljepa/embedding", qos_reliable(10)
        )
        self.events = node.create_publisher(
            TextEvent, "/vljepa/events", qos_reliable(10, latched=True)
        )
        self.prompts = np.eye(len(LABELS), DIM, dtype=np.float32)
        self.info.publish(
            EmbeddingInfo(
                labels=LABELS, dim=DIM, label_embeddings=self.prompts.reshape(-1).tolist()
            )
        )

    def frame(self, height: int = 240, width: int = 320) -> Any:
        """A grey (value 90) rgb8 Image in the camera's frame, stamped now."""
        from sensor_msgs.msg import Image

        from vljepa_ros.conversions import rgb_to_image

        raw = rgb_to_image(np.full((height, width, 3), 90, dtype=np.uint8))
        msg = Image(height=raw.height, width=raw.width, encoding=raw.encoding,
                    step=raw.step, data=raw.data)  # fmt: skip
        msg.header.frame_id = "camera_optical_frame"
        msg.header.stamp = self.node.get_clock().now().to_msg()
        return msg


def test_overlay_and_markers_follow_the_topics() -> None:
    """Frames come back annotated where the label and map are drawn; the marker names the label."""
    from sensor_msgs.msg import Image
    from visualization_msgs.msg import MarkerArray

    from vljepa_ros.conversions import image_to_rgb
    from vljepa_ros.msg import SemanticEmbedding, StateLabel, TextEvent
    from vljepa_ros.nodes.common import qos_reliable

    node = start_node("overlay_node", "input_reliability:=reliable", "rate_hz:=20.0")
    peer = OverlayPeer("test_overlay_peer")
    try:
        peer.connect()
        peer.keep("overlay", Image, "/vljepa/overlay", qos_reliable(5))
        peer.keep("markers", MarkerArray, "/vljepa/markers", qos_reliable(5))
        peer.events.publish(TextEvent(text="the arm grabs the red cube"))
        peer.wait_for(lambda: peer.camera.get_subscription_count() > 0, 60.0, "the overlay node")
        deadline = time.monotonic() + 30
        while not peer.snapshot("overlay") and time.monotonic() < deadline:
            peer.camera.publish(peer.frame())
            peer.states.publish(StateLabel(label="grasping", confidence=0.9, instant_label="idle"))
            peer.embeddings.publish(SemanticEmbedding(embedding=peer.prompts[2].tolist()))
            time.sleep(0.1)
        overlays = peer.snapshot("overlay")
        assert overlays, "no overlay image arrived"
        image = image_to_rgb(overlays[-1])
        assert image.shape == (480, 640, 3)  # scaled to the configured width
        assert overlays[-1].header.frame_id == "camera_optical_frame"
        assert (image[:56] != 90).any(axis=2).mean() > 0.5  # label band drawn
        assert (image[300:420, 50:300] == 90).all()  # the scene elsewhere untouched
        peer.wait_for(
            lambda: (
                bool(peer.snapshot("markers"))
                and "red cube" in peer.snapshot("markers")[-1].markers[0].text
            ),
            10.0,
            "a marker with the last event",
        )
        marker = peer.snapshot("markers")[-1].markers[0]
        assert marker.text.startswith("grasping")
        assert marker.header.frame_id == "camera_optical_frame"
    finally:
        peer.close()
        output = stop_node(node)
        assert "Traceback" not in output, output[-3000:]


def _overlay_diagnostics(peer: RosPeer, since: int = 0) -> list[tuple[bytes, str, dict]]:
    """(level, message, values) of the overlay node's statuses, from the since-th array on."""
    return [
        (s.level, s.message, {kv.key: kv.value for kv in s.values})
        for array in peer.snapshot("diag")[since:]
        for s in array.status
        if s.name == "vljepa overlay"
    ]


def test_bad_input_is_dropped_counted_and_the_overlay_goes_on() -> None:
    """Over DDS: a malformed frame, embeddings the map cannot show (NaN, another length), a
    NaN confidence and a frame too flat for the inset map (the last two used to raise in the
    render timer and end the node). The node keeps drawing, /diagnostics counts what it
    dropped and WARNs, and nothing is rendered wrong."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import Image

    from vljepa_ros.conversions import image_to_rgb
    from vljepa_ros.msg import SemanticEmbedding, StateLabel
    from vljepa_ros.nodes.common import qos_reliable

    node = start_node("overlay_node", "input_reliability:=reliable", "rate_hz:=20.0")
    peer = OverlayPeer("test_overlay_bad_peer")
    try:
        peer.keep("diag", DiagnosticArray, "/diagnostics", 10)
        peer.wait_for(lambda: _overlay_diagnostics(peer), 60.0, "the overlay's diagnostics")
        level, message, values = _overlay_diagnostics(peer)[0]
        assert (level, message) == (DiagnosticStatus.WARN, "nothing publishes on /image "
                                    "(check the remapping or namespace)")  # fmt: skip
        assert values["camera_publishers"] == "0"

        peer.connect()
        peer.keep("overlay", Image, "/vljepa/overlay", qos_reliable(5))
        peer.wait_for(
            lambda: any(
                v["camera_publishers"] == v["state_publishers"] == v["overlay_subscribers"] == "1"
                and v["map_labels"] == "3"
                for _, _, v in _overlay_diagnostics(peer)
            ),
            60.0,
            "the overlay node to match the peer and read the embedding info",
        )

        malformed = peer.frame()
        malformed.data = malformed.data[:1000]  # far fewer bytes than height x step
        peer.camera.publish(malformed)
        peer.embeddings.publish(SemanticEmbedding(embedding=[float("nan")] * DIM))
        peer.embeddings.publish(SemanticEmbedding(embedding=peer.prompts[0, : DIM // 2].tolist()))
        peer.embeddings.publish(SemanticEmbedding(embedding=peer.prompts[1].tolist()))  # good
        peer.states.publish(StateLabel(label="grasping", confidence=float("nan")))

        def shown(height: int) -> bool:
            return any(m.height == height for m in peer.snapshot("overlay"))

        for height, width in [(50, 1000), (240, 320)]:  # flat: 32 rows at 640 wide, no map
            deadline = time.monotonic() + 30
            while not shown(height * 640 // width) and time.monotonic() < deadline:
                peer.camera.publish(peer.frame(height, width))
                time.sleep(0.1)
            assert shown(height * 640 // width), f"no overlay of the {height}x{width} frame"
        drawn = image_to_rgb(peer.snapshot("overlay")[-1])
        assert (drawn[:56] != 90).any(axis=2).mean() > 0.5  # the label band
        assert (drawn[60:280, 640 - 226 : 634] != 90).any(axis=2).mean() > 0.5  # the map
        since = len(peer.snapshot("diag"))
        peer.wait_for(lambda: _overlay_diagnostics(peer, since), 10.0, "fresh diagnostics")
        level, message, values = _overlay_diagnostics(peer, since)[-1]
        assert level == DiagnosticStatus.WARN
        assert "malformed frame(s) or embedding(s) dropped" in message
        assert values["bad_frames"] == "1"
        assert (values["embeddings_received"], values["embeddings_rejected"]) == ("3", "2")
        assert values["states_received"] == "1"
        assert values["render_errors"] == "0"
        assert int(values["overlays_published"]) >= 2
        assert float(values["render_p50_ms"]) > 0.0
        assert node.poll() is None
    finally:
        peer.close()
        output = stop_node(node)
        assert "Traceback" not in output, output[-3000:]
        assert "dropped a malformed frame" in output
        assert "embedding with 16 NaN or infinite value(s)" in output  # the next one throttled


def test_a_failed_render_is_counted_and_reported_as_error(monkeypatch: object) -> None:
    """Fault injection, in this process: render_overlay raises once (the known ways to make it
    raise are fixed, so nothing sent over DDS does). The timer survives, the failure is counted,
    the diagnostics say ERROR, and the next frame renders."""
    import pytest
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from vljepa_ros.nodes import overlay_node

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    render, calls = overlay_node.render_overlay, []

    def fails_once(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return render(*args, **kwargs)

    monkeypatch.setattr(overlay_node, "render_overlay", fails_once)
    rclpy.init(args=["overlay_node"])
    node = overlay_node.OverlayNode()
    try:
        got: list[DiagnosticArray] = []
        node.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
        frame = np.full((240, 320, 3), 90, dtype=np.uint8)
        node.frame, node.frame_header = frame, object()
        node.markers.publish = lambda msg: None  # the header above is not a real Header
        node._render()
        assert node.frame is None  # the frame that failed is not tried again
        assert node.counts["render_errors"] == 1
        node.frame = frame
        node._render()
        assert (len(calls), node.counts["render_errors"]) == (2, 1)
        node._publish_diagnostics()
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        (status,) = got[0].status
        assert status.level == DiagnosticStatus.ERROR
        assert status.message == "1 overlay render(s) failed in the last 10 s"
    finally:
        node.destroy_node()
        rclpy.shutdown()
