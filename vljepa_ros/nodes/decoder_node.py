"""decoder_node: the silent embedding stream in, a TextEvent out only when the meaning changes.

Steps (a SemanticEmbedding and the StateLabel about its step, joined by stamp: with the state
tracker's lag that label comes with a later step) feed an `OnlineSegmenter`; every segment it
closes is decoded once, on its average-pooled embedding, by the Y-decoder in a worker thread, and
published on vljepa/events (reliable, keep last 100, transient local). On shutdown the open
segment is flushed and decoded before the node exits.

A label that comes more than `label_wait` after its embedding is counted and warned about: its
step was segmented with the previous label. An embedding that cannot be decoded (not of the
model's length, NaN or infinite values, all zeros) is dropped, counted and warned about, and the
stream goes on without that step. A segment whose decoding fails is still published, with empty
text, and the error is logged and counted.

It publishes `/diagnostics` at 1 Hz: publishers matched on its two inputs, steps received and
segmented, events published (per trigger), late labels, embeddings rejected, segments dropped
because decoding fell behind, decode errors, the decode queue and decode time p50/p99, and the
model the embeddings come from. WARN while nothing publishes embeddings (a wrong remap or
namespace looks like this), while they come from another model than the decoder's (its text is
then meaningful only if the two share the embedding space), or while labels came late,
embeddings were rejected or segments were dropped in the last 10 s; ERROR while decoding failed
in the last 10 s.

Event ids count from 0 in every run of the node. A decoder that starts on a stream already in
progress (its first step has seq > 0, e.g. after the decoder was restarted) marks its first
event with the trigger stream_reset, so consumers know that steps before it were not seen.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import Header

from vljepa_ros.conversions import EmbeddingError, embedding_to_array
from vljepa_ros.msg import SemanticEmbedding, StateLabel, TextEvent
from vljepa_ros.nodes.common import (
    WARN_WINDOW,
    RecentProblems,
    declare,
    key_values,
    ns_to_stamp,
    on_change,
    percentiles,
    qos_reliable,
    run,
    stamp_to_ns,
)
from vljepa_ros.params import DECODER as PARAMS
from vljepa_ros.params import segmenter_config
from vljepa_ros.stream.joiner import JoinedStep, StepJoiner
from vljepa_ros.stream.segmenter import TRIGGERS, OnlineSegmenter, Segment


class _Stats:
    """What the decoder has seen and done, read by the diagnostics timer."""

    def __init__(self) -> None:
        self.embeddings = 0
        self.labels = 0
        self.steps = 0
        self.events = dict.fromkeys(TRIGGERS, 0)
        self.rejected = 0
        self.dropped = 0
        self.decode_errors = 0
        self.decode_ms: deque[float] = deque(maxlen=200)
        self.warnings = RecentProblems()  # late labels, rejected embeddings, dropped segments
        self.errors = RecentProblems()  # failed decodes
        self.stream_model = ""  # model_id of the last embedding received


class DecoderNode(Node):
    """Selective decoding of the embedding stream into text events."""

    def __init__(self) -> None:
        super().__init__("decoder_node")
        self.values = declare(self, PARAMS)
        from transformers.utils import logging as hf_logging

        from vljepa_ros.model import ModelError, VLJepaRuntime

        hf_logging.disable_progress_bar()
        try:
            checkpoint = self.values["checkpoint"]
            if checkpoint:
                self.runtime = VLJepaRuntime.load(checkpoint, self.values["device"])
            else:
                self.runtime = VLJepaRuntime.load(device=self.values["device"])
        except ModelError as exc:
            raise ValueError(f"decoder_node could not load its model: {exc}") from exc
        self.segmenter = OnlineSegmenter(segmenter_config(self.values))
        self.joiner = StepJoiner(max_wait=self.values["label_wait"])
        self.lock = threading.Lock()  # segmenter and joiner: callbacks vs. shutdown flush
        self.event_id = 0
        self.frame_id = ""
        self._mark_reset: bool | None = None  # decided by the first step seen
        self._jobs: queue.Queue[Segment | None] = queue.Queue(maxsize=100)
        self.stats = _Stats()
        self.events = self.create_publisher(
            TextEvent, "vljepa/events", qos_reliable(100, latched=True)
        )
        self._embedding_sub = self.create_subscription(
            SemanticEmbedding, "vljepa/embedding", self._on_embedding, qos_reliable(50)
        )
        self._state_sub = self.create_subscription(
            StateLabel, "vljepa/state", self._on_state, qos_reliable(50)
        )
        self.create_timer(0.1, self._on_timer)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        on_change(self, PARAMS, self._apply_changes)
        self._worker = threading.Thread(target=self._decode_loop, name="vljepa-decoder")
        self._worker.start()
        self.get_logger().info(f"decoding with {self.runtime.model_id}")

    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_embedding(self, msg: SemanticEmbedding) -> None:
        self.stats.embeddings += 1
        self.stats.stream_model = msg.model_id
        try:
            embedding = embedding_to_array(msg.embedding, self.runtime.embed_dim)
        except EmbeddingError as exc:
            self.stats.rejected += 1
            self.stats.warnings.mark()
            self.get_logger().warning(
                f"dropped the embedding of step {msg.seq} from {msg.model_id or 'a publisher'}: "
                f"{exc} ({self.stats.rejected} so far)",
                throttle_duration_sec=5.0,
            )
            return
        with self.lock:
            steps = self.joiner.add_embedding(
                msg.seq, stamp_to_ns(msg.header.stamp), embedding, msg.header.frame_id, self._now()
            )
            self._segment(steps)

    def _on_state(self, msg: StateLabel) -> None:
        self.stats.labels += 1
        about = stamp_to_ns(msg.label_stamp)
        if not about:  # the tracker's lag is still filling: the label is about no step yet
            return
        with self.lock:
            late = self.joiner.late_labels
            self._segment(self.joiner.add_label(about, msg.label, self._now()))
            if self.joiner.late_labels > late:
                self.stats.warnings.mark()
                self.get_logger().warning(
                    f"a StateLabel came after its step had waited label_wait "
                    f"({self.values['label_wait']} s) and was segmented with the previous label "
                    f"({self.joiner.late_labels} so far): set label_wait above the perception "
                    "node's lag_steps / step_hz",
                    throttle_duration_sec=5.0,
                )

    def _on_timer(self) -> None:
        with self.lock:
            self._segment(self.joiner.expire(self._now()))

    def _segment(self, steps: list[JoinedStep]) -> None:
        for step in steps:
            self.stats.steps += 1
            self.frame_id = step.frame_id
            if self._mark_reset is None:
                self._mark_reset = step.seq > 0
            for segment in self.segmenter.step(step.embedding, step.stamp_ns, step.seq, step.label):
                self._submit(segment)

    def _submit(self, segment: Segment) -> None:
        if self._mark_reset:
            segment = dataclasses.replace(segment, trigger="stream_reset")
            self._mark_reset = False
        try:
            self._jobs.put_nowait(segment)
        except queue.Full:
            self.stats.dropped += 1
            self.stats.warnings.mark()
            self.get_logger().warning(
                "decoder is behind: a segment was dropped", throttle_duration_sec=5.0
            )

    def _decode_loop(self) -> None:
        import torch

        while True:
            segment = self._jobs.get()
            if segment is None:
                return
            start = time.perf_counter()
            try:
                text = self.runtime.decode(
                    torch.from_numpy(segment.embedding), self.values["max_text_length"]
                )
            except Exception as exc:  # one failed decode must not end the worker
                with self.lock:
                    self.stats.decode_errors += 1
                    self.stats.errors.mark()
                self.get_logger().error(
                    f"decoding a segment failed ({type(exc).__name__}: {exc}); its event is "
                    "published with empty text",
                    throttle_duration_sec=5.0,
                )
                text = ""
            else:
                with self.lock:
                    self.stats.decode_ms.append(1000.0 * (time.perf_counter() - start))
            self._publish(segment, text)

    def _publish(self, segment: Segment, text: str) -> None:
        event = TextEvent(
            header=Header(stamp=ns_to_stamp(segment.end_ns), frame_id=self.frame_id),
            event_id=self.event_id,
            segment_start=ns_to_stamp(segment.start_ns),
            segment_end=ns_to_stamp(segment.end_ns),
            text=text,
            label=segment.label,
            trigger=segment.trigger,
            novelty=segment.novelty,
            steps=segment.steps,
            embedding=segment.embedding.tolist(),
        )
        self.event_id += 1
        self.stats.events[segment.trigger] += 1
        self.events.publish(event)
        self.get_logger().info(f"[{segment.trigger}] {segment.label}: {text}")

    def _publish_diagnostics(self) -> None:
        stats = self.stats
        errors, warnings = stats.errors.count(), stats.warnings.count()
        with self.lock:  # the worker thread appends to it
            decode_ms = list(stats.decode_ms)
        topic = self._embedding_sub.topic_name
        publishers = self._embedding_sub.get_publisher_count()
        model = self.runtime.model_id
        status = DiagnosticStatus(name="vljepa decoder", hardware_id=model)
        if errors:
            status.level = DiagnosticStatus.ERROR
            status.message = f"{errors} decode(s) failed in the last {WARN_WINDOW:g} s"
        elif not publishers:
            status.level = DiagnosticStatus.WARN
            status.message = f"nothing publishes on {topic} (check the remapping or namespace)"
        elif stats.stream_model and stats.stream_model != model:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"embeddings come from model {stats.stream_model}, the decoder decodes with "
                f"{model}: give both nodes the same checkpoint"
            )
        elif warnings:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"running; {warnings} late label(s), rejected embedding(s) or dropped "
                f"segment(s) in the last {WARN_WINDOW:g} s (totals below)"
            )
        else:
            status.level = DiagnosticStatus.OK
            status.message = "running" if stats.steps else f"waiting for steps on {topic}"
        p50, p99 = percentiles(decode_ms)
        values: dict[str, Any] = {
            "embedding_publishers": publishers,
            "state_publishers": self._state_sub.get_publisher_count(),
            "embeddings_received": stats.embeddings,
            "labels_received": stats.labels,
            "steps_segmented": stats.steps,
            "events_published": self.event_id,
            **{f"events_{trigger}": n for trigger, n in stats.events.items()},
            "late_labels": self.joiner.late_labels,
            "embeddings_rejected": stats.rejected,
            "segments_dropped": stats.dropped,
            "decode_errors": stats.decode_errors,
            "decode_queue": self._jobs.qsize(),
            "decode_p50_ms": p50,
            "decode_p99_ms": p99,
            "device": str(self.runtime.device),
            "model_id": model,
            "stream_model_id": stats.stream_model,
        }
        status.values = key_values(values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def _apply_changes(self, changes: dict[str, Any]) -> None:
        read_only = [name for name in changes if name in ("checkpoint", "device")]
        if read_only:
            raise ValueError(f"{', '.join(read_only)} cannot change at run time")
        values = {**self.values, **changes}
        config = segmenter_config(values)  # ValueError rejects the change
        with self.lock:
            self.segmenter.config = config
            self.joiner.max_wait_ns = round(values["label_wait"] * 1e9)
        self.values = values

    def close(self) -> None:
        """Segment the steps still waiting for their labels, flush the open segment, decode
        what is queued, and stop the worker."""
        with self.lock:
            self._segment(self.joiner.flush())
            for segment in self.segmenter.flush("shutdown"):
                self._submit(segment)
        self._jobs.put(None)
        self._worker.join(timeout=30.0)
        # the last events must reach their readers before the writer is destroyed
        wait = getattr(self.events, "wait_for_all_acked", None)
        if wait is not None:
            wait(Duration(seconds=3.0))


def main() -> int:
    return run(lambda args: DecoderNode())


if __name__ == "__main__":
    raise SystemExit(main())
