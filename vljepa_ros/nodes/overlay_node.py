"""overlay_node: camera frames plus the VL-JEPA topics in; an annotated image and RViz markers out.

vljepa/overlay (sensor_msgs/Image) is rendered only while someone subscribes to it: the camera
frame with the stabilised label, its confidence and how long before the newest step the step it
is about was captured (the state tracker's lag), the instant label, the last text event with
its age, and the 2-D embedding map (see `vljepa_ros.overlay`). vljepa/markers
(visualization_msgs/MarkerArray) holds one TEXT_VIEW_FACING marker with the state and the last
event, placed in the camera's frame ahead of the lens.

Bad input never stops it: a malformed frame or an embedding that cannot be drawn (not of the
map's length, NaN or infinite values) is dropped with a throttled warning and counted, and a
frame that fails to render is counted and skipped. It publishes `/diagnostics` at 1 Hz (status
"vljepa overlay"): publishers matched on the camera, state and embedding topics, subscribers of
the overlay, what it received, dropped and published, render errors and render time p50/p99.
WARN while nothing publishes on the camera or state topic, or while frames or embeddings were
dropped in the last 10 s; ERROR while rendering failed in the last 10 s.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from transforms3d.euler import euler2quat
from visualization_msgs.msg import Marker, MarkerArray

from vljepa_ros.conversions import (
    EmbeddingError,
    ImageConversionError,
    compressed_to_rgb,
    embedding_to_array,
    image_to_rgb,
)
from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel, TextEvent
from vljepa_ros.nodes.common import (
    WARN_WINDOW,
    RecentProblems,
    declare,
    image_message,
    key_values,
    percentiles,
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
        self.counts = dict.fromkeys(
            ("frames", "bad_frames", "states", "embeddings", "bad_embeddings", "events",
             "overlays", "markers", "render_errors"),
            0,
        )  # fmt: skip
        self.render_ms: deque[float] = deque(maxlen=200)
        self.dropped = RecentProblems()  # malformed frames, embeddings that cannot be drawn
        self.failed = RecentProblems()  # renders that raised
        self.overlay = self.create_publisher(Image, "vljepa/overlay", 2)
        self.markers = self.create_publisher(MarkerArray, "vljepa/markers", 2)
        camera_type = CompressedImage if self.values["compressed"] else Image
        self._camera_sub = self.create_subscription(
            camera_type, "image", self._on_image, qos_input(self.values["input_reliability"], 2)
        )
        self._state_sub = self.create_subscription(
            StateLabel, "vljepa/state", self._on_state, qos_reliable(10)
        )
        self._embedding_sub = self.create_subscription(
            SemanticEmbedding, "vljepa/embedding", self._on_embedding, qos_reliable(10)
        )
        self.create_subscription(
            EmbeddingInfo, "vljepa/embedding_info", self._on_info, qos_reliable(1, latched=True)
        )
        self.create_subscription(
            TextEvent, "vljepa/events", self._on_event, qos_reliable(100, latched=True)
        )
        self.create_timer(1.0 / self.values["rate_hz"], self._render)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.counts["frames"] += 1
        if self.overlay.get_subscription_count() == 0:
            with self.lock:
                self.frame_header = msg.header
            return  # nobody watches: do not even decode
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageConversionError as exc:
            self.counts["bad_frames"] += 1
            self.dropped.mark()
            self.get_logger().warning(
                f"dropped a malformed frame: {exc} ({self.counts['bad_frames']} so far)",
                throttle_duration_sec=5.0,
            )
            return
        with self.lock:
            self.frame, self.frame_header = rgb, msg.header

    def _on_state(self, msg: StateLabel) -> None:
        self.counts["states"] += 1
        with self.lock:
            self.state.label = msg.label
            self.state.confidence = msg.confidence
            self.state.instant_label = msg.instant_label
            self.state.instant_confidence = msg.instant_confidence
            about, newest = stamp_to_ns(msg.label_stamp), stamp_to_ns(msg.header.stamp)
            self.state.label_lag_s = (newest - about) / 1e9 if about else None

    def _on_embedding(self, msg: SemanticEmbedding) -> None:
        self.counts["embeddings"] += 1
        with self.lock:
            if self.map is None:
                return  # no map to draw on until the EmbeddingInfo comes
            try:
                self.trail.add(embedding_to_array(msg.embedding, self.map.axes.shape[1]))
            except EmbeddingError as exc:
                self.counts["bad_embeddings"] += 1
                self.dropped.mark()
                self.get_logger().warning(
                    f"dropped an embedding the map cannot show: {exc} "
                    f"({self.counts['bad_embeddings']} so far)",
                    throttle_duration_sec=5.0,
                )

    def _on_info(self, msg: EmbeddingInfo) -> None:
        labels = list(msg.labels)
        matrix = np.asarray(msg.label_embeddings, dtype=np.float32)
        try:
            if matrix.size != len(labels) * int(msg.dim):
                raise ValueError(
                    f"{matrix.size} label_embeddings values for {len(labels)} labels of "
                    f"dim {msg.dim}"
                )
            emb_map = EmbeddingMap(labels, matrix.reshape(len(labels), int(msg.dim)))
        except ValueError as exc:
            self.get_logger().warning(f"embedding map not drawn: {exc}")
            emb_map = None
        with self.lock:
            self.map = emb_map
            self.trail.clear()

    def _on_event(self, msg: TextEvent) -> None:
        self.counts["events"] += 1
        with self.lock:
            self.state.event_text = msg.text
            self.event_wall = time.monotonic()

    def _render(self) -> None:
        with self.lock:
            header = self.frame_header
            if self.event_wall is not None:
                self.state.event_age_s = time.monotonic() - self.event_wall
            state = OverlayState(**vars(self.state))
            image = None
            if self.frame is not None:
                start = time.perf_counter()
                try:
                    image = render_overlay(
                        self.frame, state, self.map, self.trail, self.values["width"]
                    )
                except Exception as exc:  # one frame must not stop the overlay
                    self.counts["render_errors"] += 1
                    self.failed.mark()
                    self.get_logger().error(
                        f"rendering the overlay failed ({type(exc).__name__}: {exc}); frame "
                        f"{self.frame.shape} skipped",
                        throttle_duration_sec=5.0,
                    )
                    self.frame = None  # do not fail on the same frame every tick
                else:
                    self.render_ms.append(1000.0 * (time.perf_counter() - start))
        if header is None:
            return
        self.markers.publish(self._marker_array(header, state))
        self.counts["markers"] += 1
        if image is None or self.overlay.get_subscription_count() == 0:
            return
        self.overlay.publish(image_message(image, header.stamp, header.frame_id))
        self.counts["overlays"] += 1

    def _publish_diagnostics(self) -> None:
        camera = self._camera_sub.topic_name
        cameras = self._camera_sub.get_publisher_count()
        states = self._state_sub.get_publisher_count()
        counts = dict(self.counts)
        failed, dropped = self.failed.count(), self.dropped.count()
        status = DiagnosticStatus(name="vljepa overlay")
        if failed:
            status.level = DiagnosticStatus.ERROR
            status.message = f"{failed} overlay render(s) failed in the last {WARN_WINDOW:g} s"
        elif not cameras or not states:
            topic = camera if not cameras else self._state_sub.topic_name
            status.level = DiagnosticStatus.WARN
            status.message = f"nothing publishes on {topic} (check the remapping or namespace)"
        elif dropped:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"running; {dropped} malformed frame(s) or embedding(s) dropped in the last "
                f"{WARN_WINDOW:g} s (totals below)"
            )
        else:
            status.level = DiagnosticStatus.OK
            status.message = "running" if counts["frames"] else f"waiting for frames on {camera}"
        with self.lock:
            labels = len(self.map.labels) if self.map is not None else 0
            render_ms = list(self.render_ms)
        p50, p99 = percentiles(render_ms)
        values: dict[str, Any] = {
            "camera_publishers": cameras,
            "state_publishers": states,
            "embedding_publishers": self._embedding_sub.get_publisher_count(),
            "overlay_subscribers": self.overlay.get_subscription_count(),
            "frames_received": counts["frames"],
            "bad_frames": counts["bad_frames"],
            "states_received": counts["states"],
            "embeddings_received": counts["embeddings"],
            "embeddings_rejected": counts["bad_embeddings"],
            "events_received": counts["events"],
            "map_labels": labels,
            "overlays_published": counts["overlays"],
            "markers_published": counts["markers"],
            "render_errors": counts["render_errors"],
            "render_p50_ms": p50,
            "render_p99_ms": p99,
        }
        status.values = key_values(values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

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
