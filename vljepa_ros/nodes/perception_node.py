"""perception_node: camera frames in; SemanticEmbedding, StateLabel and diagnostics out.

A managed (lifecycle) node. configure loads the model and embeds the label prompts; activate
subscribes to the cameras and starts stepping; deactivate stops and releases GPU memory;
cleanup drops the model. With `autostart` (default) the node configures and activates itself, so
a plain launch works. The computing is done by `vljepa_ros.stream.pipeline.PerceptionPipeline`;
this node converts messages, owns time, threads and parameters, and publishes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore[no-redef]

from vljepa_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb
from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel
from vljepa_ros.nodes.common import (
    WARN_WINDOW,
    RecentProblems,
    declare,
    key_values,
    ns_to_stamp,
    on_change,
    percentiles,
    qos_input,
    qos_reliable,
    rate,
    run,
    stamp_to_ns,
)
from vljepa_ros.params import PERCEPTION as PARAMS
from vljepa_ros.params import PIPELINE_PARAMS, inference_threads, pipeline_config
from vljepa_ros.stream.pipeline import PerceptionPipeline, StepResult

# rclpy reports publishers of another message type from Iron on
_TYPE_EVENTS = "incompatible_type" in SubscriptionEventCallbacks.__init__.__code__.co_varnames
SPECS = {p.name: p for p in PARAMS}


class _Stats:
    """Counters and recent latencies of one camera, read by the diagnostics timer."""

    def __init__(self) -> None:
        self.frames = 0
        self.bad = 0
        self.steps = 0
        self.dropped: dict[str, int] = {}
        self.incompatible = 0  # publishers on the topic with an incompatible QoS or type
        self.latencies_ms: deque[float] = deque(maxlen=500)
        # where the latency goes: capture stamp -> callback, conversion, step (the model call
        # in it on its own)
        self.arrival_ms: deque[float] = deque(maxlen=500)
        self.convert_ms: deque[float] = deque(maxlen=500)
        self.step_ms: deque[float] = deque(maxlen=500)
        self.model_ms: deque[float] = deque(maxlen=500)
        self.frame_times: deque[float] = deque(maxlen=300)
        self.step_times: deque[float] = deque(maxlen=300)
        self.last_frame_wall: float | None = None
        self.problems = RecentProblems()  # dropped frames and stream restarts

    def bad_frame(self) -> None:
        """A frame that could not be converted."""
        self.bad += 1
        self.problems.mark()

    def dropped_frame(self, kind: str) -> None:
        """A frame the clip buffer refused (stale, future, duplicate) or a stream restart."""
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        self.problems.mark()


class PerceptionNode(LifecycleNode):
    """Lifecycle node hosting the VL-JEPA model for one or more cameras."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("perception_node", **kwargs)
        self.values = declare(self, PARAMS)
        self.cameras = self._camera_names()
        self.stats = {name: _Stats() for name in self.cameras}
        self.busy_deferred = 0  # step requests made while a step ran
        self._threads = 0  # torch threads, set by configure
        self.pipeline: PerceptionPipeline | None = None
        self.runtime: Any = None
        self.model_id = ""
        self._work = threading.Event()
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._worker: threading.Thread | None = None
        self._subs: list[Any] = []
        self._silent: set[str] = set()
        self._frame_ids: dict[str, str] = {}
        self._active = False
        self._failure = ""
        self._activated_wall = time.monotonic()
        self._pubs: dict[str, tuple[Any, Any]] = {}
        self._info_pub: dict[str, Any] = {}
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        on_change(self, PARAMS, self._apply_changes)
        if self.values["autostart"]:
            # Without a lifecycle manager nobody would retry: a failed configure ends the process.
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                failure = self._failure
                self.destroy_node()  # now, while the context is valid
                raise ValueError(f"perception_node could not configure: {failure}")
            self.trigger_activate()

    # ------------------------------------------------------------------ set-up

    def _camera_names(self) -> list[str]:
        topics = self.values["image_topics"]
        if not topics or any(not t.strip() for t in topics):
            raise ValueError(f"image_topics must name at least one topic, got {topics}")
        names = [n for n in self.values["camera_names"] if n.strip()]
        if not names:
            names = [f"cam{i}" for i in range(len(topics))] if len(topics) > 1 else [""]
        if len(names) != len(topics) or len(set(names)) != len(names):
            raise ValueError(f"camera_names {names} must be distinct, one per image topic {topics}")
        return names

    def _topic(self, camera: str, leaf: str) -> str:
        return f"vljepa/{camera}/{leaf}" if camera else f"vljepa/{leaf}"

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from transformers.utils import logging as hf_logging

        from vljepa_ros.model import ModelError, VLJepaRuntime

        hf_logging.disable_progress_bar()  # weight-loading bars would flood the node's log

        import torch

        device = self.values["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._threads = inference_threads(self.values["cpu_threads"])
        torch.set_num_threads(self._threads)
        checkpoint = self.values["checkpoint"] or None
        try:
            if checkpoint is None:
                self.runtime = VLJepaRuntime.load(device=device, dtype=self.values["dtype"])
            else:
                self.runtime = VLJepaRuntime.load(checkpoint, device, self.values["dtype"])
            config = pipeline_config(self.values, self.runtime.cfg.default_query)
            self.pipeline = PerceptionPipeline(self.runtime, config, self.cameras)
        except (ModelError, ValueError, RuntimeError) as exc:
            self._failure = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            self.runtime = self.pipeline = None
            return TransitionCallbackReturn.FAILURE
        self.model_id = getattr(self.runtime, "model_id", "") or str(checkpoint or "default")
        for camera in self.cameras:
            self._pubs[camera] = (
                self.create_lifecycle_publisher(
                    SemanticEmbedding, self._topic(camera, "embedding"), qos_reliable(10)
                ),
                self.create_lifecycle_publisher(
                    StateLabel, self._topic(camera, "state"), qos_reliable(10)
                ),
            )
            self._info_pub[camera] = self.create_publisher(
                EmbeddingInfo, self._topic(camera, "embedding_info"), qos_reliable(1, latched=True)
            )
        self.get_logger().info(
            f"model {self.model_id} on {device} ({self.values['dtype']}, "
            f"{self._threads} CPU threads), "
            f"{len(config.labels)} labels, query {config.query!r}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.pipeline is not None
        if self.runtime.device.type == "cuda":
            self.runtime.model.to(self.runtime.device)
        msg_type = CompressedImage if self.values["compressed"] else Image
        qos = qos_input(self.values["input_reliability"], self.values["input_depth"])
        for camera, topic in zip(self.cameras, self.values["image_topics"], strict=True):
            self._subs.append(
                self.create_subscription(
                    msg_type,
                    topic,
                    lambda msg, cam=camera: self._on_image(cam, msg),
                    qos,
                    event_callbacks=self._event_callbacks(camera, topic),
                )
            )
        self._stop.clear()
        self._worker = threading.Thread(
            target=self._work_loop, name="vljepa-inference", daemon=True
        )
        self._worker.start()
        self._publish_info()
        self._active = True
        self._activated_wall = time.monotonic()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._halt()
        if self.runtime is not None and self.runtime.device.type == "cuda":
            import torch

            self.runtime.model.to("cpu")
            torch.cuda.empty_cache()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        for pair in self._pubs.values():
            for pub in pair:
                self.destroy_lifecycle_publisher(pub)
        for pub in self._info_pub.values():
            self.destroy_publisher(pub)
        self._pubs.clear()
        self._info_pub.clear()
        self.pipeline = self.runtime = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._halt()
        return TransitionCallbackReturn.SUCCESS

    def _halt(self) -> None:
        """Stop stepping and unsubscribe (deactivate, cleanup, shutdown)."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs.clear()
        self._stop.set()
        self._work.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    def close(self) -> None:
        """Called by `run` at exit."""
        self._halt()

    # ------------------------------------------------------------------ callbacks

    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        stats = self.stats[camera]
        stats.frames += 1
        stats.arrival_ms.append(
            (self.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) / 1e6
        )
        wall = time.monotonic()
        stats.frame_times.append(wall)
        stats.last_frame_wall = wall
        if camera in self._silent:
            self._silent.discard(camera)
            self.get_logger().info(f"camera {camera or 'image'} is back")
        pipeline = self.pipeline
        if pipeline is None:
            return
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg, self.values["max_image_pixels"])
            else:
                rgb = image_to_rgb(msg, self.values["max_image_pixels"])
        except ImageConversionError as exc:
            stats.bad_frame()
            self.get_logger().warning(
                f"dropped a malformed frame ({stats.bad} so far): {exc}", throttle_duration_sec=5.0
            )
            return
        except Exception as exc:  # a frame the checks missed must not take the node down
            stats.bad_frame()
            self.get_logger().error(
                f"dropped a frame that failed to convert ({stats.bad} bad so far): "
                f"{type(exc).__name__}: {exc}",
                throttle_duration_sec=5.0,
            )
            return
        outcome = pipeline.offer(
            camera, rgb, stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds
        )
        stats.convert_ms.append((time.monotonic() - wall) * 1000)
        if outcome.value not in ("sampled", "skipped"):
            stats.dropped_frame(outcome.value)
            if outcome.value != "reset":
                self.get_logger().warning(
                    f"dropped a frame: {outcome.value}", throttle_duration_sec=5.0
                )
        self._frame_ids[camera] = msg.header.frame_id
        if outcome.value == "sampled" and pipeline.wants_step(camera, self.values["step_hz"]):
            self._request_step()

    def _request_step(self) -> None:
        """Wake the worker for a step on the newest clips (steps follow sampled frames).

        A request made while a step runs is deferred, not queued: the worker steps again as
        soon as it is free, on the newest clips of the cameras that want a step then (one
        pending request at most, however many arrived). Without this, a camera whose frame
        came in during another camera's step waited for the next trigger (with 4 cameras:
        123 ms instead of about 20; docs/benchmarks.md).
        """
        if self._busy.locked():
            self.busy_deferred += 1
        self._work.set()

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            self._work.wait()
            self._work.clear()
            if self._stop.is_set():
                return
            with self._busy:
                pipeline = self.pipeline
                if pipeline is None:
                    continue
                step_hz = self.values["step_hz"]
                due = [c for c in self.cameras if pipeline.wants_step(c, step_hz)]
                start = time.monotonic()
                try:
                    results = pipeline.step(due)
                except Exception as exc:  # keep serving: log and count
                    self.get_logger().error(f"step failed: {exc}", throttle_duration_sec=5.0)
                    continue
                step_ms = (time.monotonic() - start) * 1000
                for camera in due:
                    self.stats[camera].step_ms.append(step_ms)
                for result in results:
                    self._publish_step(result)

    # ------------------------------------------------------------------ outputs

    def _header(self, camera: str, stamp_ns: int) -> Header:
        return Header(stamp=ns_to_stamp(stamp_ns), frame_id=self._frame_ids.get(camera, ""))

    def _publish_step(self, result: StepResult) -> None:
        camera = result.camera
        stats = self.stats[camera]
        header = self._header(camera, result.stamp_ns)
        assert self.pipeline is not None
        latency_ms = (self.get_clock().now().nanoseconds - result.stamp_ns) / 1e6
        state = result.state
        embedding_pub, state_pub = self._pubs[camera]
        embedding_pub.publish(
            SemanticEmbedding(
                header=header,
                clip_start=ns_to_stamp(result.clip_start_ns),
                seq=result.seq,
                model_id=self.model_id,
                query=self.pipeline.config.query,
                embedding=result.embedding.tolist(),
                novelty=result.novelty,
                latency_ms=latency_ms,
            )
        )
        label = "unknown" if camera in self._silent else state.label
        state_pub.publish(
            StateLabel(
                header=header,
                seq=result.seq,
                label=label,
                label_stamp=ns_to_stamp(state.label_stamp_ns or 0),
                confidence=state.confidence,
                instant_label=state.instant_label,
                instant_confidence=state.instant_confidence,
                candidates=state.candidates,
                scores=state.scores,
                changed=state.changed,
                since=ns_to_stamp(state.since_ns),
            )
        )
        stats.steps += 1
        stats.model_ms.append(result.model_ms)
        stats.step_times.append(time.monotonic())
        stats.latencies_ms.append(latency_ms)

    def _event_callbacks(self, camera: str, topic: str) -> Any:
        """Warn about (and count) publishers whose QoS or message type cannot match ours."""

        def incompatible(what: str) -> None:
            self.stats[camera].incompatible += 1
            self.get_logger().warning(
                f"{topic}: a publisher with an incompatible {what} cannot reach this node "
                f"(expects {'CompressedImage' if self.values['compressed'] else 'Image'}, "
                f"input_reliability {self.values['input_reliability']}); its frames are not "
                "received",
                throttle_duration_sec=5.0,
            )

        kwargs: dict[str, Any] = {"incompatible_qos": lambda _info: incompatible("QoS")}
        if _TYPE_EVENTS:
            kwargs["incompatible_type"] = lambda _info: incompatible("message type")
        return SubscriptionEventCallbacks(**kwargs)

    def _announce_silence(self, camera: str, why: str) -> None:
        """A silent camera's label becomes unknown: one StateLabel says so (no step runs)."""
        if self.pipeline is None:
            return
        self.pipeline.reset(camera)
        seq = max(0, self.pipeline.cameras[camera].seq - 1)
        now = self.get_clock().now().nanoseconds
        self._pubs[camera][1].publish(
            StateLabel(
                header=self._header(camera, now),
                seq=seq,
                label="unknown",
                label_stamp=ns_to_stamp(now),
                instant_label="unknown",
                changed=True,
                since=ns_to_stamp(now),
            )
        )
        topic = self._subs[self.cameras.index(camera)].topic_name  # resolved, remapped
        self.get_logger().error(f"camera {camera or 'image'} on {topic}: {why}; label unknown")

    def _publish_info(self) -> None:
        if self.pipeline is None:
            return
        config = self.pipeline.config
        matrix = self.pipeline.label_matrix
        for camera, pub in self._info_pub.items():
            pub.publish(
                EmbeddingInfo(
                    header=self._header(camera, self.get_clock().now().nanoseconds),
                    model_id=self.model_id,
                    y_encoder_id=str(getattr(self.runtime, "y_encoder_id", "")),
                    dim=int(matrix.shape[1]),
                    query=config.query,
                    clip_frames=self.pipeline.clip_frames,
                    step_hz=float(self.values["step_hz"]),
                    labels=list(config.labels),
                    label_prompts=list(config.labels.values()),
                    label_embeddings=matrix.astype(np.float32).reshape(-1).tolist(),
                )
            )

    def _apply_changes(self, changes: dict[str, Any]) -> None:
        """Validate and apply run-time parameter changes (ValueError rejects them all)."""
        read_only = [name for name in changes if SPECS[name].read_only]
        if read_only:
            raise ValueError(f"{', '.join(read_only)} cannot change at run time")
        values = {**self.values, **changes}
        if self.pipeline is not None and PIPELINE_PARAMS & set(changes):
            config = pipeline_config(values, self.runtime.cfg.default_query)
            self.pipeline.reconfigure(config)
        self.values = values
        if {"query", "labels", "labels_file", "step_hz"} & set(changes):
            self._publish_info()

    def _publish_diagnostics(self) -> None:
        now_wall = time.monotonic()
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        for camera in self.cameras:
            stats = self.stats[camera]
            last = stats.last_frame_wall
            silent_for = now_wall - max(last or 0.0, self._activated_wall)
            active = self._active
            status = DiagnosticStatus(
                name=f"vljepa perception: {camera or 'camera'}", hardware_id=self.model_id
            )
            if active and silent_for > self.values["camera_timeout"]:
                status.level = DiagnosticStatus.ERROR
                status.message = (
                    f"no frames for {silent_for:.1f} s since activation"
                    if last is None or last < self._activated_wall
                    else f"camera silent for {silent_for:.1f} s"
                )
                if camera not in self._silent:
                    self._silent.add(camera)
                    self._announce_silence(camera, status.message)
            elif recent := stats.problems.count(now_wall):
                status.level = DiagnosticStatus.WARN
                status.message = (
                    f"running; {recent} frame(s) dropped or stream restart(s) in the last "
                    f"{WARN_WINDOW:g} s (totals below)"
                )
            else:
                status.level = DiagnosticStatus.OK
                status.message = "running" if active else "inactive"
            lat = percentiles(stats.latencies_ms)
            values = {
                "input_rate_hz": rate(stats.frame_times, now_wall),
                "step_rate_hz": rate(stats.step_times, now_wall),
                "latency_p50_ms": lat[0],
                "latency_p99_ms": lat[1],
                "arrival_delay_p50_ms": percentiles(stats.arrival_ms)[0],
                "convert_p50_ms": percentiles(stats.convert_ms)[0],
                "step_p50_ms": percentiles(stats.step_ms)[0],
                "model_p50_ms": percentiles(stats.model_ms)[0],
                "frames_received": stats.frames,
                "steps_published": stats.steps,
                "bad_frames": stats.bad,
                "stale_frames": stats.dropped.get("stale", 0),
                "future_frames": stats.dropped.get("future", 0),
                "duplicate_frames": stats.dropped.get("duplicate", 0),
                "stream_resets": stats.dropped.get("reset", 0),
                "steps_deferred_busy": self.busy_deferred,
                "incompatible_publishers": stats.incompatible,
                "device": str(getattr(self.runtime, "device", self.values["device"])),
                "cpu_threads": self._threads,
                "model_id": self.model_id,
            }
            status.values = key_values(values)
            array.status.append(status)
        self._diag_pub.publish(array)


def main() -> int:
    return run(lambda args: PerceptionNode())


if __name__ == "__main__":
    raise SystemExit(main())
