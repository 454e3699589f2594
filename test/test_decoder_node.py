"""decoder_node in its own process: selective decoding of a stream sent over real DDS."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_support import RosPeer, start_node, stop_node

from vljepa_ros.stream.state_tracker import StateTrackerConfig

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
LAG = StateTrackerConfig().lag_steps  # the perception node's default
DIM = 384


def _scene(index: int, steps: int, seed: int = 0) -> np.ndarray:
    """`steps` noisy unit vectors around scene `index`'s direction (scenes are orthogonal)."""
    rng = np.random.default_rng(seed + 97 * index)
    out = np.zeros((steps, DIM))
    out[:, index] = 1.0
    out += 0.02 * rng.standard_normal((steps, DIM))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class StreamPeer(RosPeer):
    """Plays the perception node (embeddings and labels) and keeps the decoder's events."""

    def __init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from vljepa_ros.msg import SemanticEmbedding, StateLabel, TextEvent
        from vljepa_ros.nodes.common import qos_reliable

        super().__init__("test_stream_peer")
        self.embeddings = self.node.create_publisher(
            SemanticEmbedding, "/vljepa/embedding", qos_reliable(50)
        )
        self.states = self.node.create_publisher(StateLabel, "/vljepa/state", qos_reliable(50))
        self.keep("events", TextEvent, "/vljepa/events", qos_reliable(100, latched=True))
        self.keep("diag", DiagnosticArray, "/diagnostics", 10)

    def diagnostics(self, since: int = 0) -> list[tuple[bytes, str, dict[str, str]]]:
        """(level, message, values) of the decoder's diagnostics statuses, from the
        `since`-th /diagnostics message on."""
        return [
            (s.level, s.message, {kv.key: kv.value for kv in s.values})
            for array in self.snapshot("diag")[since:]
            for s in array.status
            if s.name == "vljepa decoder"
        ]

    def status(
        self, since: int, test: Any, why: str, timeout: float = 10.0
    ) -> tuple[bytes, str, dict[str, str]]:
        """The first of the decoder's statuses from the `since`-th /diagnostics message on for
        which `test((level, message, values))` holds, waited for up to `timeout` s."""
        self.wait_for(lambda: any(map(test, self.diagnostics(since))), timeout, why)
        return next(d for d in self.diagnostics(since) if test(d))

    def wait_for_decoder(self) -> None:
        """Until the decoder's own diagnostics say its readers have matched these publishers.
        (Seeing its readers from this side is not enough: discovery runs both ways, and a step
        published before the decoder's side has matched is lost to its volatile reader.)"""
        since = len(self.snapshot("diag"))

        def matched() -> bool:
            return any(
                int(v["embedding_publishers"]) > 0 and int(v["state_publishers"]) > 0
                for _, _, v in self.diagnostics(since)
            )

        self.wait_for(matched, 60.0, "the decoder's diagnostics to report both inputs matched")

    def play(
        self,
        vectors: np.ndarray,
        labels: list[str],
        first_seq: int,
        start_ns: int,
        pause: float = 0.005,
    ) -> None:
        """Publish one step per vector at 20 steps/s of stream time (sent `pause` s apart), each
        StateLabel with the label of the step LAG steps earlier, as the perception node's
        default tracker lag does (none on the first LAG steps)."""
        from vljepa_ros.msg import SemanticEmbedding, StateLabel
        from vljepa_ros.nodes.common import ns_to_stamp

        stamps = [ns_to_stamp(start_ns + k * NS // 20) for k in range(len(vectors))]
        for k, vector in enumerate(vectors):
            stamp = stamps[k]
            seq = first_seq + k
            msg = SemanticEmbedding(seq=seq, embedding=vector.astype(np.float32).tolist())
            msg.header.stamp, msg.header.frame_id = stamp, "cam_frame"
            state = StateLabel(seq=seq, label="unknown")
            if k >= LAG:
                state.label, state.label_stamp = labels[k - LAG], stamps[k - LAG]
            state.header.stamp = stamp
            self.embeddings.publish(msg)
            self.states.publish(state)
            time.sleep(pause)


@pytest.fixture
def decoder(micro_checkpoint: Path) -> Iterator[tuple[subprocess.Popen[str], StreamPeer]]:
    node = start_node(
        "decoder_node",
        f"checkpoint:={micro_checkpoint}",
        "shift_threshold:=0.3",
        "persistence:=2",
    )
    peer = StreamPeer()
    try:
        peer.wait_for_decoder()
        yield node, peer
    finally:
        peer.close()
        if node.poll() is None:
            print(stop_node(node)[-3000:])


def test_one_event_per_change_with_the_segment_stamps(decoder: tuple) -> None:
    """Scene A then B (labels change with it): one event for A, stamped with A's steps."""
    _, peer = decoder
    peer.play(np.vstack([_scene(0, 12), _scene(1, 12)]), ["idle"] * 12 + ["reaching"] * 12, 0, T0)
    peer.wait_for(lambda: len(peer.snapshot("events")) >= 1, 20.0, "the first event")
    from vljepa_ros.nodes.common import stamp_to_ns

    (event,) = peer.snapshot("events")
    assert event.trigger in ("label_change", "semantic_shift")
    assert (event.event_id, event.label, event.steps) == (0, "idle", 12)
    assert stamp_to_ns(event.segment_start) == T0
    assert stamp_to_ns(event.segment_end) == T0 + 11 * NS // 20
    assert event.header.stamp == event.segment_end
    assert event.header.frame_id == "cam_frame"
    assert isinstance(event.text, str)
    assert event.embedding[0] > 0.95  # the mean of scene A points along its direction


def test_diagnostics_count_the_stream(decoder: tuple) -> None:
    """/diagnostics: both inputs matched, every message counted, the steps segmented once their
    labels came (the last LAG steps after label_wait), and the one event under its trigger."""
    from diagnostic_msgs.msg import DiagnosticStatus

    _, peer = decoder
    peer.play(np.vstack([_scene(0, 12), _scene(1, 12)]), ["idle"] * 12 + ["reaching"] * 12, 0, T0)
    peer.wait_for(lambda: len(peer.snapshot("events")) >= 1, 20.0, "the first event")
    (event,) = peer.snapshot("events")
    level, message, values = peer.status(
        len(peer.snapshot("diag")),
        lambda d: d[2]["steps_segmented"] == "24",
        "diagnostics counting the 24 steps",
    )
    assert (level, message) == (DiagnosticStatus.OK, "running")
    assert values["embeddings_received"] == values["labels_received"] == "24"
    assert values["events_published"] == values[f"events_{event.trigger}"] == "1"
    assert values["events_stream_reset"] == values["segments_dropped"] == "0"
    assert values["late_labels"] == values["decode_errors"] == values["decode_queue"] == "0"
    assert float(values["decode_p50_ms"]) > 0.0
    assert int(values["embedding_publishers"]) >= 1
    assert int(values["state_publishers"]) >= 1


def test_bad_embeddings_are_dropped_counted_and_the_stream_goes_on(decoder: tuple) -> None:
    """Embeddings the decoder cannot use (NaN, infinite, all zeros, another length, empty) are
    dropped and counted, the diagnostics WARN, and the good steps around them still make their
    event; an embedding from another model than the decoder's makes the diagnostics say so."""
    from diagnostic_msgs.msg import DiagnosticStatus

    from vljepa_ros.msg import SemanticEmbedding

    node, peer = decoder
    good = _scene(0, 1)[0]
    bad = [np.full(DIM, np.nan), np.where(np.arange(DIM) == 3, np.inf, good), np.zeros(DIM),
           good[: DIM // 2], np.zeros(0)]  # fmt: skip
    for k, vector in enumerate(bad):
        msg = SemanticEmbedding(seq=1000 + k, embedding=vector.astype(np.float32).tolist())
        peer.embeddings.publish(msg)
    peer.play(np.vstack([_scene(0, 12), _scene(1, 12)]), ["idle"] * 12 + ["reaching"] * 12, 0, T0)
    peer.wait_for(lambda: len(peer.snapshot("events")) >= 1, 20.0, "the first event")
    (event,) = peer.snapshot("events")
    assert (event.label, event.steps) == ("idle", 12)
    level, message, values = peer.status(
        len(peer.snapshot("diag")),
        lambda d: d[2]["steps_segmented"] == "24",
        "diagnostics counting the 24 good steps",
    )
    assert level == DiagnosticStatus.WARN
    assert "5 late label(s), rejected embedding(s)" in message
    assert values["embeddings_received"] == "29"
    assert values["embeddings_rejected"] == "5"
    assert values["decode_errors"] == "0"

    other = SemanticEmbedding(seq=24, model_id="another-model", embedding=good.tolist())
    other.header.stamp.sec = T0 // NS + 5
    peer.embeddings.publish(other)
    level, message, values = peer.status(
        len(peer.snapshot("diag")),
        lambda d: "another-model" in d[1],
        "diagnostics naming the other model",
    )
    assert level == DiagnosticStatus.WARN
    assert values["stream_model_id"] == "another-model"
    assert values["model_id"] in message
    assert node.poll() is None


def test_diagnostics_warn_when_nothing_publishes(micro_checkpoint: Path) -> None:
    """A decoder whose input nobody publishes (a wrong remap looks like this) says so."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    peer = RosPeer("test_diag_reader")
    peer.keep("diag", DiagnosticArray, "/diagnostics", 10)
    node = start_node("decoder_node", f"checkpoint:={micro_checkpoint}")
    try:
        peer.wait_for(lambda: len(peer.snapshot("diag")) >= 1, 60.0, "the decoder's diagnostics")
        (status,) = peer.snapshot("diag")[0].status
        assert status.level == DiagnosticStatus.WARN
        assert status.message.startswith("nothing publishes on /vljepa/embedding")
        assert {kv.key: kv.value for kv in status.values}["embedding_publishers"] == "0"
    finally:
        peer.close()
        stop_node(node)


def test_perception_restart_flushes_as_stream_reset(decoder: tuple) -> None:
    """Seq going back to 0 (perception restarted) closes the open segment as stream_reset."""
    _, peer = decoder
    peer.play(_scene(0, 10), ["idle"] * 10, 0, T0)
    peer.play(_scene(0, 5), ["idle"] * 5, 0, T0 + 30 * NS)
    peer.wait_for(lambda: len(peer.snapshot("events")) >= 1, 20.0, "the reset event")
    (event,) = peer.snapshot("events")
    assert (event.trigger, event.steps) == ("stream_reset", 10)


def test_shutdown_flushes_the_open_segment(decoder: tuple) -> None:
    """SIGTERM decodes and publishes the open segment (trigger shutdown) before exiting."""
    node, peer = decoder
    peer.play(_scene(2, 8), ["lifting"] * 8, 0, T0)
    time.sleep(1.0)  # let the decoder receive the steps
    node.send_signal(signal.SIGTERM)
    node.wait(timeout=30)
    assert node.returncode == 0
    peer.wait_for(lambda: len(peer.snapshot("events")) >= 1, 10.0, "the shutdown event")
    (event,) = peer.snapshot("events")
    assert (event.trigger, event.label, event.steps) == ("shutdown", "lifting", 8)


def test_restarted_decoder_resumes_and_marks_the_reset(micro_checkpoint: Path) -> None:
    """A decoder killed mid-stream and started again resumes; its first event is stream_reset."""
    peer = StreamPeer()
    first = start_node("decoder_node", f"checkpoint:={micro_checkpoint}")
    try:
        peer.wait_for_decoder()
        peer.play(
            np.vstack([_scene(0, 10), _scene(1, 10)]), ["idle"] * 10 + ["reaching"] * 10, 0, T0
        )
        peer.wait_for(lambda: len(peer.snapshot("events")) >= 1, 20.0, "an event before the kill")
        first.kill()
        first.wait(timeout=10)
        before = len(peer.snapshot("events"))
        second = start_node("decoder_node", f"checkpoint:={micro_checkpoint}")
        try:
            # the stream goes on while the new decoder starts (its subscriptions cannot be told
            # from the killed one's, which DDS may still list): play until events come again
            seq, deadline = 20, time.monotonic() + 60
            while len(peer.snapshot("events")) <= before and time.monotonic() < deadline:
                labels = ["lifting"] * 10 + ["placing"] * 10
                peer.play(
                    np.vstack([_scene(2, 10), _scene(3, 10)]), labels, seq, T0 + seq * NS // 20
                )
                seq += 20
                time.sleep(0.5)
            after = peer.snapshot("events")[before:]
            assert after, "no event after the restart"
            assert after[0].trigger == "stream_reset"
            assert after[0].event_id == 0  # ids count within a run
            ids = [e.event_id for e in after]
            assert len(ids) == len(set(ids))
        finally:
            stop_node(second)
    finally:
        peer.close()
        if first.poll() is None:
            first.kill()


def _set_parameter(peer: StreamPeer, name: str, value: object) -> object:
    """Set one decoder_node parameter through its service; the SetParametersResult."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = peer.node.create_client(SetParameters, "/decoder_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    future = client.call_async(request)
    peer.wait_for(future.done, 10.0, "set_parameters")
    return future.result().results[0]


def test_label_wait_below_the_lag_is_applied_and_warned_about(decoder: tuple) -> None:
    """label_wait changed at run time takes effect: at 0.01 s, below the labels' lag of LAG steps
    sent 0.05 s apart, each step goes out before its label, and the node says so."""
    node, peer = decoder
    assert _set_parameter(peer, "label_wait", 0.01).successful
    peer.play(_scene(0, 12), ["idle"] * 12, 0, T0, pause=0.05)
    time.sleep(0.5)
    output = stop_node(node)
    assert "segmented with the previous label" in output, output[-3000:]
    assert "label_wait (0.01 s)" in output


def test_bad_segmenter_parameter_is_rejected(decoder: tuple) -> None:
    """An out-of-range shift threshold is refused with the parameter's name."""
    _, peer = decoder
    for name, value in [("shift_threshold", 0.0), ("persistence", 0), ("device", "cuda")]:
        result = _set_parameter(peer, name, value)
        assert not result.successful
        assert name in result.reason


def test_a_failed_decode_is_published_with_empty_text_and_counted(micro_checkpoint: Path) -> None:
    """Fault injection, in this process: the model's decode raises once (nothing on this
    machine makes the real one fail on demand). The worker thread survives, that segment's event
    still goes out with empty text, the failure is counted, and the next segment decodes."""
    import rclpy
    import torch
    from rclpy.executors import SingleThreadedExecutor

    from vljepa_ros.msg import TextEvent
    from vljepa_ros.nodes.common import qos_reliable
    from vljepa_ros.nodes.decoder_node import DecoderNode
    from vljepa_ros.stream.segmenter import Segment

    rclpy.init(args=["decoder_node", "--ros-args", "-p", f"checkpoint:={micro_checkpoint}"])
    node = DecoderNode()
    try:
        got: list[TextEvent] = []
        node.create_subscription(
            TextEvent, "vljepa/events", got.append, qos_reliable(100, latched=True)
        )
        decode, calls = node.runtime.decode, []

        def fails_once(*args: object) -> str:
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("injected failure")
            return decode(*args)

        node.runtime.decode = fails_once
        vector = _scene(0, 1)[0].astype(np.float32)
        for k in range(2):
            start = T0 + k * NS
            node._submit(Segment(start, start + NS // 2, 5, vector, "idle", "semantic_shift", 0.0))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert [e.event_id for e in got] == [0, 1]
        assert got[0].text == ""
        assert got[1].text == decode(torch.from_numpy(vector), node.values["max_text_length"])
        assert node.stats.decode_errors == 1
        assert node._worker.is_alive()
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown()
