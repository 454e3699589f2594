"""Small rclpy helpers shared by the nodes: parameters from a spec table, QoS, stamps, main().

Written against the rclpy API that Humble, Jazzy and Kilted share.
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import Image

from vljepa_ros.conversions import rgb_to_image
from vljepa_ros.params import Param

NS = 1_000_000_000
WARN_WINDOW = 10.0  # s: a node's diagnostics stay WARN (or ERROR) this long after a problem


def descriptor(spec: Param) -> ParameterDescriptor:
    """The ROS descriptor of a parameter: description, range, read-only flag."""
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    desc = ParameterDescriptor(name=spec.name, description=text, read_only=spec.read_only)
    if spec.min is not None and spec.max is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            desc.integer_range = [
                IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)
            ]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)
            ]
    return desc


def declare(node: Node, specs: Iterable[Param]) -> dict[str, Any]:
    """Declare every parameter and return the current values by name.

    Raises:
        ValueError: a value given at start-up (YAML, command line) breaks its constraint.
    """
    values: dict[str, Any] = {}
    for spec in specs:
        if isinstance(spec.default, list) and not spec.default:
            # an empty list has no type of its own: declare it as a string array
            param = node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor(spec))
        else:
            param = node.declare_parameter(spec.name, spec.default, descriptor(spec))
        value = param.value
        if isinstance(spec.default, list) and value is None:
            value = []
        reason = spec.check(value)
        if reason:
            raise ValueError(reason)
        values[spec.name] = list(value) if isinstance(value, (list, tuple)) else value
    return values


def on_change(
    node: Node,
    specs: Sequence[Param],
    apply: Callable[[dict[str, Any]], None],
) -> None:
    """Validate parameter changes against `specs`, then hand them to `apply`.

    `apply` gets only the changed values; if it raises ValueError the change is rejected with
    that message and the old values stay in force.
    """
    by_name = {spec.name: spec for spec in specs}

    def callback(params: list[Parameter]) -> SetParametersResult:
        changes: dict[str, Any] = {}
        for param in params:
            spec = by_name.get(param.name)
            if spec is None:
                continue  # use_sim_time and other parameters rclpy owns
            value = param.value
            value = list(value) if isinstance(value, (list, tuple)) else value
            reason = spec.check(value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            changes[param.name] = value
        if changes:
            try:
                apply(changes)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(callback)


def qos_input(reliability: str, depth: int) -> QoSProfile:
    """Camera input QoS: sensor data (best effort) by default, as REP-2003 asks."""
    if reliability == "best_effort":
        profile = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=depth,
            reliability=ReliabilityPolicy.BEST_EFFORT,
            durability=qos_profile_sensor_data.durability,
        )
        return profile
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE
    )


def qos_reliable(depth: int, latched: bool = False) -> QoSProfile:
    """Reliable keep-last output QoS; `latched` adds transient-local durability."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def image_message(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """A sensor_msgs/Image (rgb8) of a uint8 RGB (H, W, 3) array."""
    raw = rgb_to_image(rgb)
    msg = Image(
        height=raw.height,
        width=raw.width,
        encoding=raw.encoding,
        is_bigendian=raw.is_bigendian,
        step=raw.step,
        data=raw.data,
    )
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def key_values(values: dict[str, Any]) -> list[KeyValue]:
    """Diagnostics values as KeyValues: floats with two decimals, the rest as str()."""
    return [
        KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v))
        for k, v in values.items()
    ]


class RecentProblems:
    """Wall times of a node's recent problems (a dropped frame, a failed decode), so that its
    diagnostics level can say "in the last WARN_WINDOW seconds" and clear by itself."""

    def __init__(self, size: int = 10_000) -> None:
        self._times: deque[float] = deque(maxlen=size)

    def mark(self) -> None:
        """One problem, now."""
        self._times.append(time.monotonic())

    def count(self, now: float | None = None) -> int:
        """Problems within the last WARN_WINDOW seconds (thread-safe against mark())."""
        now = time.monotonic() if now is None else now
        return sum(1 for t in list(self._times) if now - t <= WARN_WINDOW)


def rate(times: Iterable[float], now: float, window: float = 5.0) -> float:
    """Events per second over the last `window` seconds, from their time.monotonic() times."""
    return sum(1 for t in list(times) if now - t <= window) / window


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of recent values (0 before the first)."""
    if not values:
        return 0.0, 0.0
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return float(p50), float(p99)


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    return Time(sec=int(ns // NS), nanosec=int(ns % NS))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(node_factory: Callable[[list[str]], Node]) -> int:
    """Start rclpy, spin the node until Ctrl-C or SIGTERM, and clean up; the exit code.

    The node is spun by a single-threaded executor: every node here does its heavy work (model
    steps, decoding, simulation) in a thread of its own, so callbacks are short. rclpy's
    multi-threaded executor re-submits callbacks that wait in its thread pool and spins on them
    while holding the GIL (ros2/rclpy#1452, fixed upstream by ros2/rclpy#1547 in late 2025, not
    in the Kilted wheels used here); under a 30 Hz camera on 2 cores that stalled the
    perception node for seconds at a time (docs/benchmarks.md).

    rclpy's own signal handlers are replaced by KeyboardInterrupt, so the context is still
    valid while the node's `close()` (if it has one) runs: a node can publish its last words.
    A configuration error raised while constructing the node (ValueError, or rclpy's
    parameter exceptions for a value out of range or of the wrong type) is printed as one line
    with the reason, and the process exits with status 2.
    """
    args = sys.argv
    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except ImportError:  # rclpy without signal options: its handlers shut the context down
        rclpy.init(args=args)
    # explicit, so a node started with SIGINT ignored (a background job) still stops on it
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    node: Node | None = None
    code = 0
    try:
        node = node_factory(args)
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    except (ValueError, ParameterException) as exc:
        # a bad parameter or configuration: one line with the reason, no traceback
        print(f"[error] {exc}", file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        # A node whose constructor raised is only referenced from reference cycles; collect it
        # while the context is valid, or its handles are finalised after shutdown (a segfault
        # at exit, seen once in CI instead of the status 2 this function promises).
        gc.collect()
        if rclpy.ok():
            rclpy.shutdown()
    return code
