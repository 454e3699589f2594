"""Shared pieces of the tests that use real ROS 2 (rclpy over DDS) and the generated messages.

Importing this module isolates the tests' DDS traffic: a domain id of its own per test session
and discovery limited to this machine, inherited by every process the tests start.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

EMBEDDING_DIM = 1536
NON_ASCII = "Le robot saisit la tasse rouge — 机器人抓住了红色杯子 ✓"


def unit_vector(dim: int, seed: int) -> list[float]:
    """A deterministic L2-normalised vector whose values are exact in float32."""
    import numpy as np

    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    v /= np.linalg.norm(v)
    return [float(x) for x in v.astype(np.float32)]


def message_samples() -> dict[str, Any]:
    """One instance of every custom message with every field set to a non-default value."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel, TextEvent

    def header(sec: int) -> Header:
        return Header(stamp=Time(sec=sec, nanosec=123_456_789), frame_id="camera_optical_frame")

    labels = ["idle", "reaching", "grasping", "lifting", "transporting", "placing", "retreating"]
    return {
        "SemanticEmbedding": SemanticEmbedding(
            header=header(1_700_000_000),
            clip_start=Time(sec=1_699_999_999, nanosec=600_000_000),
            seq=2**40 + 7,
            model_id="vljepa-sim-tiny@3f2a9c1",
            query=f"What is the robot doing? {NON_ASCII}",
            embedding=unit_vector(EMBEDDING_DIM, seed=1),
            novelty=0.25,
            latency_ms=42.5,
        ),
        "StateLabel": StateLabel(
            header=header(1_700_000_001),
            seq=2**40 + 7,
            label="grasping",
            confidence=0.875,
            instant_label="lifting",
            instant_confidence=0.5,
            candidates=["grasping", "lifting", NON_ASCII],
            scores=[0.5, 0.375, 0.125],
            changed=True,
            since=Time(sec=1_699_999_990, nanosec=5),
        ),
        "TextEvent": TextEvent(
            header=header(1_700_000_002),
            event_id=2**63 + 11,
            segment_start=Time(sec=1_699_999_950, nanosec=1),
            segment_end=Time(sec=1_700_000_002, nanosec=2),
            text=NON_ASCII,
            label="placing",
            trigger=TextEvent.TRIGGER_SEMANTIC_SHIFT,
            novelty=0.625,
            steps=4_000_000_000,
            embedding=unit_vector(EMBEDDING_DIM, seed=2),
        ),
        "EmbeddingInfo": EmbeddingInfo(
            header=header(1_700_000_003),
            model_id="vljepa-sim-tiny@3f2a9c1",
            y_encoder_id="all-MiniLM-L6-v2@sha256:" + "ab" * 32,
            dim=EMBEDDING_DIM,
            query="What is the robot doing?",
            clip_frames=8,
            step_hz=10.0,
            labels=labels,
            label_prompts=[f"the robot arm is {name} — {NON_ASCII}" for name in labels],
            label_embeddings=[x for i in range(len(labels)) for x in unit_vector(EMBEDDING_DIM, i)],
        ),
    }


def message_fields(msg: Any) -> dict[str, Any]:
    """Every field of a ROS message as plain Python values, nested messages included."""
    out: dict[str, Any] = {}
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        if hasattr(value, "get_fields_and_field_types"):
            value = message_fields(value)
        elif not isinstance(value, (str, bytes, bool, int, float)):
            value = list(value)
        out[name] = value
    return out


def assert_fields_equal(expected: dict[str, Any], actual: dict[str, Any], path: str = "") -> None:
    """Compare two field dicts exactly (floats compared as float32 values, NaN-free)."""
    assert set(expected) == set(actual), f"{path}: fields differ: {set(expected) ^ set(actual)}"
    for key, want in expected.items():
        got = actual[key]
        where = f"{path}.{key}" if path else key
        if isinstance(want, dict):
            assert_fields_equal(want, got, where)
        elif isinstance(want, float):
            assert math.isclose(want, got, rel_tol=0, abs_tol=0), f"{where}: {want} != {got}"
        else:
            assert want == got, f"{where}: {str(want)[:80]} != {str(got)[:80]}"


def python_env() -> dict[str, str]:
    """Environment for a child Python process: this one's, with the checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start a Python script of the test folder in its own OS process."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class RosPeer:
    """This test process's side of a DDS conversation: a node spinning in a thread that keeps
    every message of the subscribed topics."""

    def __init__(self, name: str) -> None:
        import threading

        import rclpy

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.got: dict[str, list[Any]] = {}
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def keep(self, key: str, msg_type: Any, topic: str, qos: Any) -> None:
        """Subscribe and keep every message of `topic` under `key`."""
        self.got[key] = []

        def callback(msg: Any) -> None:
            with self.lock:
                self.got[key].append(msg)

        self.node.create_subscription(msg_type, topic, callback, qos)

    def snapshot(self, key: str) -> list[Any]:
        with self.lock:
            return list(self.got[key])

    def wait_for(self, what: Any, timeout: float, why: str) -> None:
        """Poll `what()` until true; fail naming `why` after `timeout` seconds."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {why}")

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def start_node(module: str, *params: str) -> subprocess.Popen[str]:
    """One of the package's nodes, with `name:=value` parameters, in its own process."""
    args = [sys.executable, "-m", f"vljepa_ros.nodes.{module}", "--ros-args"]
    for param in params:
        args += ["-p", param]
    return subprocess.Popen(
        args,
        cwd=REPO,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_node(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """SIGTERM the node, wait for it, and return what it printed."""
    process.terminate()
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output
