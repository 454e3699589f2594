"""overlay_node: camera frames plus the VL-JEPA topics in; an annotated image and RViz markers out.

vljepa/overlay (sensor_msgs/Image) is rendered only while someone subscribes to it: the camera
frame with the stabilised label, its confidence and how long before the newest step the step it
is about was captured (the state tracker's lag), the instant label, the last text event with
its age, and the 2-D embedding map (see `vljepa_ros.overlay`). vljepa/markers
(visualization_msgs/MarkerArray) holds one TEXT_VIEW_FACING marker with the state and the last
event, placed in the camera's frame ahead of the lens.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from transforms3d.euler import euler2quat
from visualization_msgs.msg import Marker, MarkerArray

from vljepa_ros.conversions import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
)
from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel, TextEvent
from vljepa_ros.nodes.common import (
    declare,
    image_message,
    qos_input,
    qos_reliable,
    run,
    stamp_to_ns,
)
from vljepa_ros.overlay import EmbeddingMap, EmbeddingTrail, OverlayState, render_overlay
from vljepa_ros.params import OVERLAY as PARAMS


class OverlayNode(Node):
    """Draws what the perception and decoder nodes say over the camera frames."""

    def __init__(self) -> None:
        super().__init__("overlay_node")
        self.values = declare(self, PARAMS)
        self.lock = threading.Lock()
        self.frame: np.ndarray | None = None
        self.frame_header: Any = None
        self.state = OverlayState()
        self.event_wall: float | None = None
        self.map: EmbeddingMap | None = None
        self.trail = EmbeddingTrail(length=self.values["trail_length"])
        self.bad_frames = 0
        self.overlay = self.create_publisher(Image, "vljepa/overlay", 2)
        self.markers = self.create_publisher(MarkerArray, "vljepa/markers", 2)
        camera_type = CompressedImage if self.values["compressed"] else Image
        self.create_subscription(
            camera_type, "image", self._on_image, qos_input(self.values["input_reliability"], 2)
        )
        self.create_subscription(StateLabel, "vljepa/state", self._on_state, qos_reliable(10))
        self.create_subscription(
            SemanticEmbedding, "vljepa/embedding", self._on_embedding, qos_reliable(10)
        )
        self.create_subscription(
            EmbeddingInfo, "vljepa/embedding_info", self._on_info, qos_reliable(1, latched=True)
        )
        self.create_subscription(
            TextEvent, "vljepa/events", self._on_event, qos_reliable(100, latched=True)
        )
        self.create_timer(1.0 / self.values["rate_hz"], self._render)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        if self.overlay.get_subscription_count() == 0:
            with self.lock:
                self.frame_header = msg.header
            return  # nobody watches: do not even decode
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageConversionError as exc:
            self.bad_frames += 1
            self.get_logger().warning(
                f"dropped a malformed frame: {exc}", throttle_duration_sec=5.0
            )
            return
        with self.lock:
            self.frame, self.frame_header = rgb, msg.header

    def _on_state(self, msg: StateLabel) -> None:
        with self.lock:
            self.state.label = msg.label
            self.state.confidence = msg.confidence
            self.state.instant_label = msg.instant_label
            self.state.instant_confidence = msg.instant_confidence
            about, newest = stamp_to_ns(msg.label_stamp), stamp_to_ns(msg.header.stamp)
            self.state.label_lag_s = (newest - about) / 1e9 if about else None

    def _on_embedding(self, msg: SemanticEmbedding) -> None:
        with self.lock:
            if self.map is not None and len(msg.embedding) == self.map.axes.shape[1]:
                self.trail.add(np.asarray(msg.embedding, dtype=np.float32))

    def _on_info(self, msg: EmbeddingInfo) -> None:
        labels = list(msg.labels)
        matrix = np.asarray(msg.label_embeddings, dtype=np.float32)
        try:
            emb_map = EmbeddingMap(labels, matrix.reshape(len(labels), int(msg.dim)))
        except ValueError as exc:
            self.get_logger().warning(f"embedding map not drawn: {exc}")
            emb_map = None
        with self.lock:
            self.map = emb_map
            self.trail.clear()

    def _on_event(self, msg: TextEvent) -> None:
        with self.lock:
            self.state.event_text = msg.text
            self.event_wall = time.monotonic()

    def _render(self) -> None:
        with self.lock:
            header = self.frame_header
            if self.event_wall is not None:
                self.state.event_age_s = time.monotonic() - self.event_wall
            state = OverlayState(**vars(self.state))
            frame = self.frame
            image = (
                None
                if frame is None
                else render_overlay(frame, state, self.map, self.trail, self.values["width"])
            )
        if header is None:
            return
        self.markers.publish(self._marker_array(header, state))
        if image is None or self.overlay.get_subscription_count() == 0:
            return
        self.overlay.publish(image_message(image, header.stamp, header.frame_id))

    def _marker_array(self, header: Any, state: OverlayState) -> MarkerArray:
        marker = Marker()
        marker.header = header
        marker.ns = "vljepa"
        marker.id = 0
        marker.type = Marker.TEXT_VIEW_FACING
        marker.action = Marker.ADD
        # In the camera's optical frame (z forward, y down): ahead of the lens, a little above
        # the optical axis, upright.
        marker.pose.position.z = float(self.values["marker_distance"])
        marker.pose.position.y = -0.25 * float(self.values["marker_distance"])
        w, x, y, z = euler2quat(0.0, 0.0, 0.0)
        marker.pose.orientation.w, marker.pose.orientation.x = float(w), float(x)
        marker.pose.orientation.y, marker.pose.orientation.z = float(y), float(z)
        marker.scale.z = 0.08 * float(self.values["marker_distance"])
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = 1.0, 1.0, 1.0, 1.0
        text = f"{state.label} ({state.confidence:.2f})"
        if state.event_text:
            text += f"\n{state.event_text}"
        marker.text = text
        return MarkerArray(markers=[marker])


def main() -> int:
    return run(lambda args: OverlayNode())


if __name__ == "__main__":
    raise SystemExit(main())
