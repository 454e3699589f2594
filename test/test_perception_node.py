"""perception_node in its own process, fed over real DDS by this test process.

The model is a micro VL-JEPA with random weights over the real MiniLM text encoder, saved as a
real checkpoint: the node's behaviour (stamps, seq, labels, diagnostics, parameters) does not
depend on trained weights.
"""

from __future__ import annotations

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


class Peer(RosPeer):
    """A camera publisher and subscribers to every output of the perception node."""

    def __init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from sensor_msgs.msg import Image

        from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel
        from vljepa_ros.nodes.common import qos_reliable

        super().__init__("test_camera_peer")
        self.camera = self.node.create_publisher(Image, "/image", qos_reliable(50))
        self.keep("embedding", SemanticEmbedding, "/vljepa/embedding", qos_reliable(100))
        self.keep("state", StateLabel, "/vljepa/state", qos_reliable(100))
        self.keep("info", EmbeddingInfo, "/vljepa/embedding_info", qos_reliable(5, latched=True))
        self.keep("diag", DiagnosticArray, "/diagnostics", 10)
        self.set_params = self.node.create_client(SetParameters, "/perception_node/set_parameters")

    def send_frames(self, count: int, hz: float = 15.0) -> list[int]:
        """Publish `count` good rgb8 frames stamped now; return their stamps."""
        from vljepa_ros.nodes.common import image_message, ns_to_stamp

        stamps = []
        rng = np.random.default_rng(0)
        for _ in range(count):
            rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
            stamp = self.node.get_clock().now().nanoseconds
            self.camera.publish(image_message(rgb, ns_to_stamp(stamp), "test_camera_optical_frame"))
            stamps.append(stamp)
            time.sleep(1.0 / hz)
        return stamps

    def set_parameter(self, name: str, value: Any) -> Any:
        """Call /perception_node/set_parameters; return the SetParametersResult."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        assert self.set_params.wait_for_service(timeout_sec=10.0)
        request = SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()]
        )
        future = self.set_params.call_async(request)
        self.wait_for(future.done, 10.0, f"set_parameters({name})")
        return future.result().results[0]

    def diagnostic_values(self) -> dict[str, str]:
        """Key/values of the newest perception diagnostics status."""
        arrays = [a for a in self.snapshot("diag") if a.status]
        assert arrays, "no diagnostics received"
        status = arrays[-1].status[0]
        return {kv.key: kv.value for kv in status.values} | {"_level": status.level}


@pytest.fixture(scope="module")
def running(micro_checkpoint: Path) -> Iterator[tuple[subprocess.Popen[str], Peer]]:
    """One perception node for the module, with a short camera timeout."""
    node = start_node(
        "perception_node",
        f"checkpoint:={micro_checkpoint}",
        "input_reliability:=reliable",
        "input_depth:=50",
        "camera_timeout:=1.5",
        "min_dwell:=0.0",
    )
    peer = Peer()
    try:
        peer.wait_for(lambda: bool(peer.snapshot("info")), 60.0, "EmbeddingInfo (node start)")
        yield node, peer
    finally:
        peer.close()
        print(stop_node(node)[-3000:])


def test_embeddings_and_labels_carry_the_input_stamps(running: tuple) -> None:
    """Each step publishes a unit embedding and a label with a sent frame's stamp and frame_id."""
    _, peer = running
    stamps = peer.send_frames(30)
    peer.wait_for(lambda: len(peer.snapshot("embedding")) >= 5, 30.0, "5 embeddings")
    peer.wait_for(lambda: len(peer.snapshot("state")) >= 5, 10.0, "5 state labels")
    from vljepa_ros.nodes.common import stamp_to_ns

    embeddings = peer.snapshot("embedding")
    for msg in embeddings:
        assert stamp_to_ns(msg.header.stamp) in stamps
        assert msg.header.frame_id == "test_camera_optical_frame"
        assert len(msg.embedding) == 384
        assert np.linalg.norm(np.asarray(msg.embedding)) == pytest.approx(1.0, abs=1e-4)
        assert stamp_to_ns(msg.clip_start) <= stamp_to_ns(msg.header.stamp)
        assert msg.latency_ms > 0
    seqs = [m.seq for m in embeddings]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    by_seq = {m.seq: m for m in embeddings}
    # the stabilised label is about the step lag_steps earlier (none yet on the first ones)
    lag = StateTrackerConfig().lag_steps
    described = 0
    for label in peer.snapshot("state"):
        if not label.candidates:  # a silent-camera notice, not a step
            continue
        if label.seq in by_seq:
            assert label.header.stamp == by_seq[label.seq].header.stamp
            assert label.instant_label in peer.snapshot("info")[-1].labels
        about = stamp_to_ns(label.label_stamp)
        if label.seq - lag in by_seq and about:
            assert about == stamp_to_ns(by_seq[label.seq - lag].header.stamp)
            described += 1
        elif label.seq < lag:
            assert (about, label.label) == (0, "unknown")
    assert described


def test_diagnostics_say_where_the_latency_goes(running: tuple) -> None:
    """The diagnostics split the step latency: capture-to-callback delay, conversion, step and
    the model call in it are measured, each part of the next; the torch thread count is
    reported."""
    _, peer = running
    from vljepa_ros.params import inference_threads

    count = len(peer.snapshot("embedding"))
    peer.send_frames(20)
    peer.wait_for(lambda: len(peer.snapshot("embedding")) > count + 3, 30.0, "new embeddings")
    time.sleep(1.2)  # the next diagnostics message counts them
    values = peer.diagnostic_values()
    keys = ("arrival_delay", "convert", "step", "model")
    split = {k: float(values[f"{k}_p50_ms"]) for k in keys}
    assert all(v > 0 for v in split.values()), split
    assert split["model"] <= split["step"] <= float(values["latency_p50_ms"]), (split, values)
    assert int(values["cpu_threads"]) == inference_threads(0)


def test_embedding_info_describes_the_stream(running: tuple) -> None:
    """The latched EmbeddingInfo lists the configured labels with unit prompt embeddings."""
    _, peer = running
    info = peer.snapshot("info")[-1]
    assert info.labels == [
        "idle", "reaching", "grasping", "lifting", "transporting", "placing", "retreating"
    ]  # fmt: skip
    assert info.dim == 384
    matrix = np.asarray(info.label_embeddings).reshape(len(info.labels), info.dim)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-4)
    assert "sha256" in info.y_encoder_id.lower() or len(info.y_encoder_id) > 40


def test_rejected_parameter_changes_keep_the_old_value(running: tuple) -> None:
    """Out-of-range, read-only and unreadable-file changes are refused with a reason."""
    _, peer = running
    for name, value, reason in [
        ("temperature", -1.0, "temperature"),
        ("checkpoint", "/elsewhere", "checkpoint"),
        ("labels_file", "/no/such/labels.yaml", "/no/such/labels.yaml"),
        ("labels", ["no colon here"], "label: prompt"),
        ("exit_threshold", 0.9, "exit_threshold"),
    ]:
        result = peer.set_parameter(name, value)
        assert not result.successful, name
        assert reason in result.reason, (name, result.reason)
    assert peer.snapshot("info")[-1].labels[0] == "idle"


def test_accepted_change_applies_without_restart(running: tuple) -> None:
    """A new query and inline labels take effect at once and are re-announced."""
    _, peer = running
    assert peer.set_parameter("query", "is the robot holding something?").successful
    assert peer.set_parameter("labels", ["holding: the gripper holds an object",
                                         "empty: the gripper is empty"]).successful  # fmt: skip
    peer.wait_for(lambda: peer.snapshot("info")[-1].labels == ["holding", "empty"], 5.0, "info")
    assert peer.snapshot("info")[-1].query == "is the robot holding something?"
    count = len(peer.snapshot("state"))
    peer.send_frames(15)
    peer.wait_for(lambda: len(peer.snapshot("state")) > count + 2, 20.0, "new labels in use")
    assert set(peer.snapshot("state")[-1].candidates) <= {"holding", "empty"}
    assert peer.snapshot("embedding")[-1].query == "is the robot holding something?"


def test_silent_camera_reports_error_and_unknown(running: tuple) -> None:
    """After camera_timeout without frames: a diagnostics ERROR and the label "unknown"; when
    the camera resumes, steps follow its new frames and the diagnostics error clears."""
    _, peer = running
    from diagnostic_msgs.msg import DiagnosticStatus

    from vljepa_ros.nodes.common import stamp_to_ns

    peer.send_frames(5)
    time.sleep(0.5)
    peer.wait_for(
        lambda: peer.diagnostic_values()["_level"] == DiagnosticStatus.ERROR, 6.0, "ERROR"
    )
    # the notice: a StateLabel of no step (no candidates), "unknown" about the moment it is sent
    peer.wait_for(lambda: not peer.snapshot("state")[-1].candidates, 3.0, "the silence notice")
    notice = peer.snapshot("state")[-1]
    assert notice.label == notice.instant_label == "unknown"
    assert stamp_to_ns(notice.label_stamp) == stamp_to_ns(notice.header.stamp) > 0
    assert peer.diagnostic_values()["_level"] == DiagnosticStatus.ERROR
    assert peer.snapshot("state")[-1].changed
    # the camera resumes: steps again, and the diagnostics error clears
    stepped = len(peer.snapshot("embedding"))
    resumed = peer.send_frames(20)
    peer.wait_for(lambda: len(peer.snapshot("embedding")) > stepped + 2, 10.0, "steps again")
    peer.wait_for(
        lambda: peer.diagnostic_values()["_level"] != DiagnosticStatus.ERROR, 6.0, "no ERROR"
    )
    assert stamp_to_ns(peer.snapshot("embedding")[-1].header.stamp) in resumed


BAD_CONFIGURATION = {
    "checkpoint path missing": ("checkpoint:=/no/such/checkpoint", "/no/such/checkpoint"),
    "unsupported device": ("device:=tpu", "tpu"),
    "cuda without a GPU": ("device:=cuda", "CUDA is not available"),
    "out-of-range number": ("temperature:=-1.0", "temperature"),
    "wrong type": ("sample_hz:=fast", "sample_hz"),
    "unknown choice": ("dtype:=fp8", "dtype"),
    "label file missing": ("labels_file:=/no/such/labels.yaml", "/no/such/labels.yaml"),
    "malformed inline label": ("labels:=[no colon]", "label: prompt"),
}


@pytest.mark.parametrize("kind", list(BAD_CONFIGURATION))
def test_bad_configuration_fails_fast_with_the_reason(kind: str, micro_checkpoint: Path) -> None:
    """Each bad start-up setting ends the node with status 2 and a one-line reason."""
    import torch

    param, reason = BAD_CONFIGURATION[kind]
    if kind == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU (the case needs one without)")
    params = (
        [param] if param.startswith("checkpoint") else [f"checkpoint:={micro_checkpoint}", param]
    )
    _fails_fast_with(params, reason)


def _fails_fast_with(params: list[str], reason: str) -> None:
    """A perception node started with `params` ends with status 2, printing `reason` and no
    traceback."""
    node = start_node("perception_node", *params)
    output, _ = node.communicate(timeout=120)
    assert node.returncode == 2, output[-2000:]
    assert reason in output, output[-2000:]
    assert "Traceback" not in output, output[-2000:]


def _broken_copy(micro_checkpoint: Path, where: Path, kind: str) -> list[str]:
    """Parameters that start the node on a damaged copy of the checkpoint or bad label files;
    returns them (the reason each must print is in BAD_FILES)."""
    import json
    import shutil

    ckpt = where / "ckpt"
    shutil.copytree(micro_checkpoint, ckpt)
    params = [f"checkpoint:={ckpt}"]
    if kind == "checkpoint truncated":
        weights = ckpt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind == "Y-encoder hash mismatch":
        identity = json.loads((ckpt / "y_encoder.json").read_text())
        identity["sha256"] = "0" * 64
        (ckpt / "y_encoder.json").write_text(json.dumps(identity))
    elif kind == "empty label list":
        (where / "labels.yaml").write_text("labels: {}\n")
        params.append(f"labels_file:={where / 'labels.yaml'}")
    elif kind == "label file malformed":
        (where / "labels.yaml").write_text("labels: [idle: {\n")
        params.append(f"labels_file:={where / 'labels.yaml'}")
    return params


BAD_FILES = {
    "checkpoint truncated": "model.safetensors",
    "Y-encoder hash mismatch": "0" * 64,
    "empty label list": "labels is empty",
    "label file malformed": "labels.yaml is not valid YAML",
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_fail_fast_naming_the_problem(
    kind: str, micro_checkpoint: Path, tmp_path: Path
) -> None:
    """A damaged checkpoint or label file ends the node with status 2 and a reason that names
    the file or value at fault, never a bare traceback."""
    _fails_fast_with(_broken_copy(micro_checkpoint, tmp_path, kind), BAD_FILES[kind])


def test_a_pickle_beside_the_weights_is_never_run(micro_checkpoint: Path, tmp_path: Path) -> None:
    """A checkpoint folder holding an extra pickle (one that would create a file when
    unpickled) loads from its safetensors, and the pickle's payload never runs."""
    import pickle
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(micro_checkpoint, ckpt)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    for name in ("pytorch_model.bin", "model.pkl", "optimizer.pt"):
        (ckpt / name).write_bytes(pickle.dumps(Payload()))
    node = start_node("perception_node", f"checkpoint:={ckpt}", "input_reliability:=reliable")
    peer = Peer()
    try:
        peer.wait_for(lambda: bool(peer.snapshot("info")), 60.0, "EmbeddingInfo (node start)")
        peer.send_frames(12)
        peer.wait_for(lambda: bool(peer.snapshot("state")), 10.0, "a state label")
    finally:
        peer.close()
        output = stop_node(node)
    assert "Traceback" not in output, output[-2000:]
    assert not marker.exists()


def test_two_cameras_get_their_own_outputs(micro_checkpoint: Path) -> None:
    """image_topics with two cameras: each camera's steps on vljepa/<name>/... with its frame_id."""
    from sensor_msgs.msg import Image

    from vljepa_ros.msg import SemanticEmbedding, StateLabel
    from vljepa_ros.nodes.common import image_message, qos_reliable

    node = start_node(
        "perception_node",
        f"checkpoint:={micro_checkpoint}",
        "input_reliability:=reliable",
        "image_topics:=[/left/image, /right/image]",
        "camera_names:=[left, right]",
    )
    peer = RosPeer("test_two_cameras")
    try:
        publishers = {
            name: peer.node.create_publisher(Image, f"/{name}/image", qos_reliable(10))
            for name in ("left", "right")
        }
        for name in ("left", "right"):
            peer.keep(name, SemanticEmbedding, f"/vljepa/{name}/embedding", qos_reliable(50))
            peer.keep(f"{name}_state", StateLabel, f"/vljepa/{name}/state", qos_reliable(50))
        peer.wait_for(
            lambda: all(p.get_subscription_count() for p in publishers.values()), 60.0, "node"
        )
        rgb = np.zeros((48, 64, 3), dtype=np.uint8)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(
            len(peer.snapshot(n)) >= 3 for n in ("left", "right", "left_state", "right_state")
        ):
            for name, publisher in publishers.items():
                stamp = peer.node.get_clock().now().to_msg()
                publisher.publish(image_message(rgb, stamp, f"{name}_optical_frame"))
            time.sleep(0.07)
        for name in ("left", "right"):
            got = peer.snapshot(name)
            assert len(got) >= 3, name
            assert {m.header.frame_id for m in got} == {f"{name}_optical_frame"}
            seqs = [m.seq for m in got]
            assert seqs == sorted(set(seqs))
    finally:
        peer.close()
        stop_node(node)
