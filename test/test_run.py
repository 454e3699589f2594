"""`vljepa run` with the simulated camera: the whole graph, each node its own process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import yaml
from ros_support import REPO, RosPeer, python_env


def test_graph_publishes_every_topic_and_stops_cleanly_on_sigint(
    micro_checkpoint: Path, tmp_path: Path
) -> None:
    """Embeddings, labels and events arrive in this process; SIGINT stops all nodes cleanly."""
    from vljepa_ros.msg import SemanticEmbedding, StateLabel, TextEvent
    from vljepa_ros.nodes.common import qos_reliable

    params = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    params["decoder_node"]["ros__parameters"]["max_interval"] = 2.0  # events without training
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    vljepa = Path(sys.executable).parent / "vljepa"
    run = subprocess.Popen(
        [str(vljepa), "run", "--sim-camera", "true", "--checkpoint", str(micro_checkpoint),
         "--params-file", str(params_file)],
        cwd="/", env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    peer = RosPeer("test_run_peer")
    try:
        peer.keep("embedding", SemanticEmbedding, "/vljepa/embedding", qos_reliable(100))
        peer.keep("state", StateLabel, "/vljepa/state", qos_reliable(100))
        peer.keep("events", TextEvent, "/vljepa/events", qos_reliable(100, latched=True))
        peer.wait_for(
            lambda: len(peer.snapshot("events")) >= 2 and len(peer.snapshot("state")) >= 10,
            150.0,
            "embeddings, labels and two events from the graph",
        )
        embeddings = peer.snapshot("embedding")
        assert embeddings[-1].header.frame_id == "camera_optical_frame"
        assert len(embeddings[-1].embedding) == 384
        events = peer.snapshot("events")
        assert [e.event_id for e in events] == list(range(len(events)))
        assert {e.trigger for e in events} <= {"max_interval", "label_change", "semantic_shift"}
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
        assert run.returncode == 0, output[-4000:]
        assert "killed" not in output
        assert "Traceback" not in output, output[-4000:]
        # every event decoder_node logged, the shutdown flush included, reached this process
        logged = [
            line for line in output.splitlines() if "[decoder_node]" in line and ": [" in line
        ]
        peer.wait_for(
            lambda: len(peer.snapshot("events")) == len(logged), 10.0, "every logged event"
        )
        last_open_segment = logged[-1].split(": [", 1)[1].split("]", 1)[0]
        assert peer.snapshot("events")[-1].trigger == last_open_segment
    finally:
        peer.close()
        if run.poll() is None:
            run.kill()
            run.communicate()
