"""sim_camera_node: a simulated arm doing pick-and-place, published as a camera (no hardware).

The PyBullet scene of `vljepa_ros.data.sim` runs ahead in a worker thread, one episode at a time
(a new seed each, so objects, camera pose, light and tasks keep changing); the node publishes its
frames at the configured rate, stamped with the node's clock at publication (so the stream looks
like a live camera, and use_sim_time works), on `image` (sensor_msgs/Image, rgb8) and, if
enabled, the arm's `joint_states`. Simulation runs faster than real time on a CPU; if it ever
falls behind, the last frame is held rather than published twice. An episode whose simulation
fails is logged with its seed and skipped; the next seed runs.

It publishes `/diagnostics` at 1 Hz (status "vljepa sim camera"): frames published and the
rate, episodes simulated and failed, frames buffered ahead, and ticks with no frame ready. WARN
while the simulation fell behind in the last 10 s, ERROR while an episode failed in the last
10 s.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from vljepa_ros.nodes.common import (
    WARN_WINDOW,
    RecentProblems,
    declare,
    image_message,
    key_values,
    rate,
    run,
)
from vljepa_ros.params import SIM_CAMERA as PARAMS


class SimCameraNode(Node):
    """Publishes simulated pick-and-place frames as a live camera."""

    def __init__(self) -> None:
        super().__init__("sim_camera_node")
        self.values = declare(self, PARAMS)
        from vljepa_ros.data.sim import SimConfig

        fps = int(self.values["fps"])
        self.config = SimConfig(
            robot=self.values["robot"],
            image_size=self.values["image_size"],
            fps=float(fps),
            physics_hz=fps * -(-240 // fps),  # at least 240 Hz, a multiple of fps
        )
        self.images = self.create_publisher(Image, "image", 5)
        self.joints = (
            self.create_publisher(JointState, "joint_states", 10)
            if self.values["publish_joint_states"]
            else None
        )
        self.frames: queue.Queue[tuple[Any, tuple[str, ...]]] = queue.Queue(maxsize=600)
        self.published = 0
        self.publish_times: deque[float] = deque(maxlen=300)
        self.episodes = self.failed_episodes = self.behind = 0
        self.failures, self.late = RecentProblems(), RecentProblems()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._simulate, name="vljepa-sim", daemon=True)
        self._worker.start()
        self.create_timer(1.0 / fps, self._publish)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"simulating a {self.values['robot']} arm, {self.values['image_size']} px at {fps} fps"
        )

    def _simulate(self) -> None:
        from vljepa_ros.data.sim import generate_episode

        seed = int(self.values["seed"])
        while not self._stop.is_set():
            try:
                episode = generate_episode(self.config, seed)
            except Exception as exc:  # one episode must not end the camera
                self.failed_episodes += 1
                self.failures.mark()
                self.get_logger().error(
                    f"simulating episode seed {seed} failed ({type(exc).__name__}: {exc}); "
                    "going on with the next seed",
                    throttle_duration_sec=5.0,
                )
                seed += 1
                continue
            self.episodes += 1
            for frame in episode.frames:
                while not self._stop.is_set():
                    try:
                        self.frames.put((frame, episode.joint_names), timeout=0.2)
                        break
                    except queue.Full:
                        continue
            seed += 1

    def _publish(self) -> None:
        try:
            frame, joint_names = self.frames.get_nowait()
        except queue.Empty:  # the simulation is behind: hold rather than repeat
            if self.published:
                self.behind += 1
                self.late.mark()
            return
        stamp = self.get_clock().now().to_msg()
        self.images.publish(image_message(frame.image, stamp, self.values["frame_id"]))
        if self.joints is not None:
            joints = JointState(
                name=list(joint_names),
                position=frame.joint_positions.tolist(),
                velocity=frame.joint_velocities.tolist(),
                effort=frame.joint_efforts.tolist(),
            )
            joints.header.stamp = stamp
            self.joints.publish(joints)
        self.published += 1
        self.publish_times.append(time.monotonic())

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        failed, late = self.failures.count(now), self.late.count(now)
        status = DiagnosticStatus(name="vljepa sim camera")
        if failed:
            status.level = DiagnosticStatus.ERROR
            status.message = f"{failed} episode(s) failed to simulate in the last {WARN_WINDOW:g} s"
        elif late:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"the simulation fell behind: {late} tick(s) without a new frame in the last "
                f"{WARN_WINDOW:g} s"
            )
        else:
            status.level = DiagnosticStatus.OK
            status.message = "publishing" if self.published else "simulating the first episode"
        status.values = key_values(
            {
                "frames_published": self.published,
                "publish_rate_hz": rate(self.publish_times, now),
                "episodes_simulated": self.episodes,
                "episodes_failed": self.failed_episodes,
                "frames_buffered": self.frames.qsize(),
                "ticks_without_frame": self.behind,
                "image_size": self.values["image_size"],
                "fps": self.values["fps"],
            }
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=10.0)


def main() -> int:
    return run(lambda args: SimCameraNode())


if __name__ == "__main__":
    raise SystemExit(main())
