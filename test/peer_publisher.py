"""Publisher process for test_messages_dds: publishes every sample message until killed.

Usage: python test/peer_publisher.py TOPIC_PREFIX SECONDS
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_support import message_samples  # the script's folder is first on sys.path


def main() -> int:
    prefix, seconds = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("vljepa_test_peer_publisher")
    qos = QoSProfile(
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    samples = message_samples()
    pubs = {
        name: (node.create_publisher(type(msg), f"{prefix}/{name}", qos), msg)
        for name, msg in samples.items()
    }
    print("publisher ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pub, msg in pubs.values():
            pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.2)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
