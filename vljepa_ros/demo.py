"""`vljepa demo`: the whole node graph on the simulated camera, watched from this process.

Starts sim_camera_node, perception_node, decoder_node and overlay_node (each its own process,
over real DDS, with config/perception.yaml and the shipped model), prints the text events as they
arrive, and after `duration` seconds (or Ctrl-C) stops the graph and writes to the output folder:
overlay.mp4 (what /vljepa/overlay showed), summary.png (timeline of labels and events, and the
embedding map) and events.jsonl.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vljepa_ros.launcher import run_graph


@dataclass
class Recording:
    """What the demo saw, appended from ROS callbacks (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    start_ns: int | None = None
    # t, stable, instant, and the time of the step the stable label is about (None: not yet)
    states: list[tuple[float, str, str, float | None]] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    label_embeddings: np.ndarray | None = None
    video: Any = None
    video_frames: int = 0

    def t(self, stamp_ns: int) -> float:
        if self.start_ns is None:
            self.start_ns = stamp_ns
        return (stamp_ns - self.start_ns) / 1e9


class Watcher:
    """A node in this process that records the graph's topics."""

    def __init__(self, out: Path, recording: Recording) -> None:
        import rclpy
        from sensor_msgs.msg import Image

        from vljepa_ros.msg import EmbeddingInfo, SemanticEmbedding, StateLabel, TextEvent
        from vljepa_ros.nodes.common import qos_reliable

        self.out = out
        self.rec = recording
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vljepa_demo", context=self.context)
        sub = self.node.create_subscription
        sub(StateLabel, "/vljepa/state", self._state, qos_reliable(50))
        sub(SemanticEmbedding, "/vljepa/embedding", self._embedding, qos_reliable(50))
        sub(EmbeddingInfo, "/vljepa/embedding_info", self._info, qos_reliable(1, latched=True))
        sub(TextEvent, "/vljepa/events", self._event, qos_reliable(100, latched=True))
        sub(Image, "/vljepa/overlay", self._overlay, qos_reliable(5))
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _state(self, msg: Any) -> None:
        from vljepa_ros.nodes.common import stamp_to_ns

        with self.rec.lock:
            t = self.rec.t(stamp_to_ns(msg.header.stamp))
            about = stamp_to_ns(msg.label_stamp)
            self.rec.states.append(
                (t, msg.label, msg.instant_label, self.rec.t(about) if about else None)
            )

    def _embedding(self, msg: Any) -> None:
        with self.rec.lock:
            self.rec.embeddings.append(np.asarray(msg.embedding, dtype=np.float32))

    def _info(self, msg: Any) -> None:
        with self.rec.lock:
            self.rec.labels = list(msg.labels)
            matrix = np.asarray(msg.label_embeddings, dtype=np.float32)
            self.rec.label_embeddings = matrix.reshape(len(msg.labels), int(msg.dim))

    def _event(self, msg: Any) -> None:
        from vljepa_ros.nodes.common import stamp_to_ns

        with self.rec.lock:
            t0 = self.rec.t(stamp_to_ns(msg.segment_start))
            t1 = self.rec.t(stamp_to_ns(msg.segment_end))
            event = {"event_id": msg.event_id, "start_s": round(t0, 2), "end_s": round(t1, 2),
                     "label": msg.label, "trigger": msg.trigger, "text": msg.text}  # fmt: skip
            self.rec.events.append(event)
        print(f"[{t1:6.1f} s] ({msg.trigger}) {msg.label}: {msg.text}", flush=True)

    def _overlay(self, msg: Any) -> None:
        import cv2

        from vljepa_ros.conversions import ImageConversionError, image_to_rgb

        try:
            rgb = image_to_rgb(msg)
        except ImageConversionError:
            return
        with self.rec.lock:
            if self.rec.video is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]
                size = (rgb.shape[1], rgb.shape[0])
                self.rec.video = cv2.VideoWriter(str(self.out / "overlay.mp4"), fourcc, 10, size)
                cv2.imwrite(str(self.out / "overlay_first.png"), rgb[:, :, ::-1])
            self.rec.video.write(rgb[:, :, ::-1])
            self.rec.video_frames += 1
            if self.rec.video_frames % 50 == 0:  # a recent frame, for the README and a look
                cv2.imwrite(str(self.out / "overlay_frame.png"), rgb[:, :, ::-1])

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        with self.rec.lock:
            if self.rec.video is not None:
                self.rec.video.release()


def write_summary(rec: Recording, path: Path) -> None:
    """Timeline of stable/instant labels with the events, and the embedding map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vljepa_ros.overlay import EmbeddingMap, EmbeddingTrail

    labels = rec.labels or sorted({s[1] for s in rec.states} - {"unknown"})
    rows = {name: i for i, name in enumerate([*labels, "unknown"])}
    fig, (timeline, mapping) = plt.subplots(
        1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [2.4, 1]}
    )
    if rec.states:
        t = np.array([s[0] for s in rec.states])
        instant = np.array([rows.get(s[2], rows["unknown"]) for s in rec.states])
        timeline.scatter(t, instant, s=8, c="tab:red", label="instant label", zorder=2)
        # each stabilised label at the time of the step it is about (the tracker's lag)
        about = [(s[3], rows.get(s[1], rows["unknown"])) for s in rec.states if s[3] is not None]
        if about:
            stable_t, stable = np.array(about).T
            timeline.step(stable_t, stable, where="post", c="tab:blue", lw=2.5,
                          label="stabilised label")  # fmt: skip
    for event in rec.events:
        timeline.axvline(event["end_s"], c="0.6", lw=0.8, zorder=1)
        timeline.text(event["end_s"], len(rows) - 0.4, f" {event['text'][:28]}", rotation=90,
                      fontsize=7, va="top", ha="right", color="0.3")  # fmt: skip
    timeline.set_yticks(list(rows.values()), list(rows))
    timeline.set_xlabel("time (s)")
    timeline.set_title(f"robot state ({len(rec.states)} steps, {len(rec.events)} text events)")
    timeline.legend(loc="upper left", fontsize=8, ncol=2)
    timeline.set_ylim(-0.5, len(rows) + 0.9)

    if rec.label_embeddings is not None and len(rec.labels) >= 2 and rec.embeddings:
        emb_map = EmbeddingMap(rec.labels, rec.label_embeddings)
        trail = EmbeddingTrail(length=len(rec.embeddings))
        for vector in rec.embeddings:
            trail.add(vector)
        anchors = emb_map.to_unit(emb_map.anchors)
        instant = emb_map.to_unit(emb_map.project(np.stack(list(trail.instant))))
        stable = emb_map.to_unit(emb_map.project(np.stack(list(trail.stable))))
        mapping.scatter(instant[:, 0], instant[:, 1], s=6, c="tab:red", alpha=0.5,
                        label="instant embedding")  # fmt: skip
        mapping.plot(stable[:, 0], stable[:, 1], c="tab:blue", lw=1.5, label="stabilised meaning")
        for name, (x, y) in zip(rec.labels, anchors, strict=True):
            mapping.scatter([x], [y], marker="D", c="k", s=25)
            mapping.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        mapping.legend(loc="lower right", fontsize=7)
    mapping.set_title("embedding map (fixed projection of the label prompts)")
    mapping.set_xlim(-1.05, 1.05)
    mapping.set_ylim(-1.05, 1.05)
    mapping.set_xticks([])
    mapping.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(out: Path, duration: float, checkpoint: str | None, device: str) -> int:
    """Run the graph for `duration` seconds, record it, write the outputs; the exit status."""
    out.mkdir(parents=True, exist_ok=True)
    recording = Recording()
    watcher = Watcher(out, recording)
    print(f"[demo] running the graph on the simulated camera for {duration:g} s "
          f"(Ctrl-C stops it early); text events appear below", flush=True)  # fmt: skip
    started = time.monotonic()
    try:
        status = run_graph(
            {"sim_camera": "true", "checkpoint": checkpoint, "device": device},
            duration=duration,
        )
    finally:
        time.sleep(0.5)  # the decoder's shutdown event
        watcher.close()
    with recording.lock:
        (out / "events.jsonl").write_text(
            "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in recording.events)
        )
        write_summary(recording, out / "summary.png")
        steps, frames, events = len(recording.states), recording.video_frames, len(recording.events)
    elapsed = time.monotonic() - started
    print(f"[demo] {elapsed:.0f} s: {steps} steps, {events} text events, {frames} overlay frames")
    print(f"[demo] wrote {out / 'overlay.mp4'}, {out / 'summary.png'}, {out / 'events.jsonl'}")
    return status
