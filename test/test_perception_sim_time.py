"""perception_node with use_sim_time, in its own process, fed simulated time on /clock.

A module of its own: no other perception node may run beside it (they would answer on the same
/diagnostics topic with wall-clock stamps).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ros_support import RosPeer, start_node, stop_node

NS = 1_000_000_000


def test_use_sim_time_follows_the_clock_topic(micro_checkpoint: Path) -> None:
    """With use_sim_time the node's clock is /clock: frames stamped in simulated time (500 s
    after the epoch, which the wall clock would call decades stale) are stepped, the outputs
    carry those stamps, and the diagnostics are stamped in simulated time too. When the clock
    jumps back (a bag loop), the node starts its clips over and steps the new frames."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from vljepa_ros.msg import SemanticEmbedding
    from vljepa_ros.nodes.common import image_message, qos_reliable, stamp_to_ns

    node = start_node(
        "perception_node",
        f"checkpoint:={micro_checkpoint}",
        "input_reliability:=reliable",
        "use_sim_time:=true",
    )
    peer = RosPeer("test_sim_clock")
    try:
        clock = peer.node.create_publisher(Clock, "/clock", 10)
        camera = peer.node.create_publisher(Image, "/image", qos_reliable(10))
        peer.keep("embedding", SemanticEmbedding, "/vljepa/embedding", qos_reliable(100))
        peer.keep("diag", DiagnosticArray, "/diagnostics", 10)
        peer.wait_for(lambda: camera.get_subscription_count() > 0, 60.0, "perception node")
        rgb = np.zeros((48, 64, 3), dtype=np.uint8)

        def tick(sim_ns: int) -> None:
            """Simulated time moves to sim_ns, and a frame captured then is sent."""
            stamp = Time(sec=sim_ns // NS, nanosec=sim_ns % NS)
            clock.publish(Clock(clock=stamp))
            camera.publish(image_message(rgb, stamp, "camera_optical_frame"))
            time.sleep(0.1)

        sim_ns, sent = 500 * NS, []
        deadline = time.monotonic() + 40
        # the node's timers run on simulated time too, so the clock keeps going until both came
        while time.monotonic() < deadline and (
            len(peer.snapshot("embedding")) < 5 or not peer.snapshot("diag")
        ):
            sim_ns += NS // 10
            tick(sim_ns)
            sent.append(sim_ns)
        got = peer.snapshot("embedding")
        assert len(got) >= 5, "no steps on simulated-time frames"
        assert {stamp_to_ns(m.header.stamp) for m in got} <= set(sent)
        assert peer.snapshot("diag"), "no diagnostics"
        diag_ns = stamp_to_ns(peer.snapshot("diag")[-1].header.stamp)
        assert 500 * NS < diag_ns <= sim_ns
        # the bag loops: simulated time jumps back to 100 s; steps follow the new frames
        loop_ns, looped = 100 * NS, []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {
            stamp_to_ns(m.header.stamp) for m in peer.snapshot("embedding")
        } & set(looped[1:]):
            loop_ns += NS // 10
            tick(loop_ns)
            looped.append(loop_ns)
        embeddings = peer.snapshot("embedding")
        after_loop = [m for m in embeddings if stamp_to_ns(m.header.stamp) < sent[0]]
        assert after_loop, "no steps after the clock jumped back"
        assert after_loop[0].seq > got[-1].seq  # one run: seq keeps counting
        assert node.poll() is None
    finally:
        peer.close()
        stop_node(node)
