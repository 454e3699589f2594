"""overlay_node in its own process: draws the topics over camera frames, publishes markers."""

from __future__ import annotations

import time

import numpy as np
from ros_support import RosPeer, start_node, stop_node

DIM = 16
LABELS = ["idle", "reaching", "grasping"]


def test_overlay_and_markers_follow_the_topics() -> None:
    """Frames come back annotated where the label and map are drawn; the marker names the label."""
    from sensor_msgs.msg import Image
    from visualization_msgs.msg import MarkerArray

    from vljepa_ros.conversions import image_to_rgb, rgb_to_image
    from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel, TextEvent
    from vljepa_ros.nodes.common import qos_reliable

    node = start_node("overlay_node", "input_reliability:=reliable", "rate_hz:=20.0")
    peer = RosPeer("test_overlay_peer")
    try:
        camera = peer.node.create_publisher(Image, "/image", qos_reliable(5))
        info = peer.node.create_publisher(
            EmbeddingInfo, "/vljepa/embedding_info", qos_reliable(1, latched=True)
        )
        states = peer.node.create_publisher(StateLabel, "/vljepa/state", qos_reliable(10))
        embeddings = peer.node.create_publisher(
            SemanticEmbedding, "/vljepa/embedding", qos_reliable(10)
        )
        events = peer.node.create_publisher(
            TextEvent, "/vljepa/events", qos_reliable(10, latched=True)
        )
        peer.keep("overlay", Image, "/vljepa/overlay", qos_reliable(5))
        peer.keep("markers", MarkerArray, "/vljepa/markers", qos_reliable(5))
        prompts = np.eye(len(LABELS), DIM, dtype=np.float32)
        info.publish(
            EmbeddingInfo(labels=LABELS, dim=DIM, label_embeddings=prompts.reshape(-1).tolist())
        )
        events.publish(TextEvent(text="the arm grabs the red cube"))
        peer.wait_for(lambda: camera.get_subscription_count() > 0, 60.0, "the overlay node")
        frame = np.full((240, 320, 3), 90, dtype=np.uint8)
        raw = rgb_to_image(frame)
        deadline = time.monotonic() + 30
        while not peer.snapshot("overlay") and time.monotonic() < deadline:
            msg = Image(height=raw.height, width=raw.width, encoding=raw.encoding,
                        step=raw.step, data=raw.data)  # fmt: skip
            msg.header.frame_id = "camera_optical_frame"
            msg.header.stamp = peer.node.get_clock().now().to_msg()
            camera.publish(msg)
            states.publish(StateLabel(label="grasping", confidence=0.9, instant_label="idle"))
            embeddings.publish(SemanticEmbedding(embedding=prompts[2].tolist()))
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
