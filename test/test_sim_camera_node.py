"""sim_camera_node: simulated frames published as a live camera, and its diagnostics."""

from __future__ import annotations

import time

import pytest
from ros_support import RosPeer, start_node, stop_node


def _statuses(peer: RosPeer) -> list[tuple[bytes, str, dict[str, str]]]:
    return [
        (s.level, s.message, {kv.key: kv.value for kv in s.values})
        for array in peer.snapshot("diag")
        for s in array.status
        if s.name == "vljepa sim camera"
    ]


def test_frames_and_joint_states_come_stamped_and_counted() -> None:
    """Over DDS: rgb8 frames of the configured size in the configured frame, stamps rising,
    joint states with the same stamps, and /diagnostics counting what was published."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import Image, JointState

    from vljepa_ros.nodes.common import qos_reliable, stamp_to_ns

    node = start_node("sim_camera_node", "image_size:=64", "fps:=10", "frame_id:=sim_cam")
    peer = RosPeer("test_sim_camera_peer")
    try:
        peer.keep("image", Image, "/image", qos_reliable(50))
        peer.keep("joints", JointState, "/joint_states", qos_reliable(50))
        peer.keep("diag", DiagnosticArray, "/diagnostics", 10)
        peer.wait_for(lambda: len(peer.snapshot("image")) >= 10, 120.0, "ten frames")
        images = peer.snapshot("image")
        assert {(m.height, m.width, m.encoding) for m in images} == {(64, 64, "rgb8")}
        assert {m.header.frame_id for m in images} == {"sim_cam"}
        stamps = [stamp_to_ns(m.header.stamp) for m in images]
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == len(stamps)
        joints = {stamp_to_ns(m.header.stamp) for m in peer.snapshot("joints")}
        assert set(stamps[:5]) <= joints
        assert len(peer.snapshot("joints")[0].name) == len(peer.snapshot("joints")[0].position)
        peer.wait_for(
            lambda: any(int(v["frames_published"]) >= 10 for _, _, v in _statuses(peer)),
            10.0,
            "diagnostics counting the frames",
        )
        level, _, values = next(d for d in _statuses(peer) if int(d[2]["frames_published"]) >= 10)
        assert level in (DiagnosticStatus.OK, DiagnosticStatus.WARN)  # WARN: the CPU is shared
        assert values["episodes_failed"] == "0"
        assert int(values["episodes_simulated"]) >= 1
        assert float(values["publish_rate_hz"]) > 0
        assert values["image_size"] == "64"
    finally:
        peer.close()
        output = stop_node(node)
        assert "Traceback" not in output, output[-3000:]


def test_a_failed_episode_is_logged_counted_and_the_next_seed_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fault injection, in this process: the simulation raises on the first seed (nothing
    sent to the node makes PyBullet fail on demand). The worker goes on with the next seed,
    frames are published, and the diagnostics count the failure and say ERROR."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from vljepa_ros.data import sim
    from vljepa_ros.nodes.sim_camera_node import SimCameraNode

    generate, seeds = sim.generate_episode, []

    def fails_first(config: sim.SimConfig, seed: int) -> sim.Episode:
        seeds.append(seed)
        if len(seeds) == 1:
            raise RuntimeError("injected failure")
        return generate(config, seed)

    monkeypatch.setattr(sim, "generate_episode", fails_first)
    rclpy.init(args=["sim_camera_node", "--ros-args", "-p", "image_size:=64", "-p", "seed:=7"])
    node = SimCameraNode()
    try:
        got: list[DiagnosticArray] = []
        node.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + 120
        while node.published < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert node.published >= 3
        assert seeds[:2] == [7, 8]
        assert (node.failed_episodes, node.episodes) == (1, 1)
        got.clear()
        node._publish_diagnostics()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        (status,) = got[0].status
        assert status.level == DiagnosticStatus.ERROR
        assert status.message.startswith("1 episode(s) failed to simulate")
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown()
