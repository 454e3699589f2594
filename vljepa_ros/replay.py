"""`vljepa replay`: the nodes' pipeline over a recorded bag, offline, into an MCAP file.

Frames of the bag's image topic go through the same classes as the nodes (PerceptionPipeline,
then OnlineSegmenter or the offline temporal Ward clustering, then the Y-decoder), in capture
stamp order, as fast as the machine allows. The output is a ROS 2 MCAP file (CDR, with full
message definitions, readable by ros2 bag, rosbags and Foxglove) holding /vljepa/embedding,
/vljepa/state, /vljepa/events and /vljepa/embedding_info, stamped and logged at the input's
capture stamps. The same input and settings give the same messages.

No ROS installation is needed: messages are written with rosbags' type store, which learns this
package's message definitions from its .msg files.
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vljepa_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
MESSAGES = ("SemanticEmbedding", "StateLabel", "TextEvent", "EmbeddingInfo")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
NS = 1_000_000_000


def message_folder() -> Path:
    """Where this package's .msg files are: the checkout, a pip prefix, or a ROS install."""
    candidates = [PACKAGE_ROOT / "msg", Path(sys.prefix) / "share" / "vljepa_ros" / "msg"]
    for folder in candidates:
        if all((folder / f"{name}.msg").is_file() for name in MESSAGES):
            return folder
    try:
        from ament_index_python.packages import get_package_share_directory

        folder = Path(get_package_share_directory("vljepa_ros")) / "msg"
        if all((folder / f"{name}.msg").is_file() for name in MESSAGES):
            return folder
        candidates.append(folder)
    except (ImportError, LookupError, OSError):  # no ROS, or not a sourced workspace
        pass
    raise FileNotFoundError(
        "vljepa_ros message definitions (*.msg) not found in "
        + ", ".join(str(c) for c in candidates)
    )


def typestore() -> Any:
    """A rosbags type store with ROS 2 Kilted's types and this package's messages."""
    from rosbags.typesys import Stores, get_typestore
    from rosbags.typesys.msg import get_types_from_msg

    store = get_typestore(Stores.ROS2_KILTED)
    folder = message_folder()
    for name in MESSAGES:
        text = (folder / f"{name}.msg").read_text(encoding="utf-8")
        store.register(get_types_from_msg(text, f"vljepa_ros/msg/{name}"))
    return store


@dataclass(frozen=True)
class ReplayConfig:
    """What the replay computes (the nodes' parameters, from a parameter file or defaults)."""

    step_hz: float = 10.0
    decoder: str = "online"  # or "offline": temporal Ward clustering
    segments_per_minute: float = 6.0  # offline clustering: N = duration * this
    max_text_length: int = 32

    def __post_init__(self) -> None:
        if self.decoder not in ("online", "offline"):
            raise ValueError(f"decoder must be 'online' or 'offline', got '{self.decoder}'")
        if not 0 < self.step_hz <= 120:
            raise ValueError(f"step_hz must be in (0, 120], got {self.step_hz}")
        if self.segments_per_minute <= 0:
            raise ValueError(
                f"segments_per_minute must be positive, got {self.segments_per_minute}"
            )


def read_frames(
    path: Path, image_topic: str | None, compressed: bool = False, reorder_s: float = 1.0
) -> Iterator[tuple[int, str, np.ndarray]]:
    """(stamp_ns, frame_id, rgb) of the bag's image topic in capture-stamp order.

    Messages are read in log order and re-sorted by header stamp within `reorder_s` seconds.
    Frames that cannot be converted are skipped with a warning on stderr.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        wanted = IMAGE_TYPES[1:] if compressed else IMAGE_TYPES
        images = sorted(
            (c for c in reader.connections if c.msgtype in wanted),
            key=lambda c: (IMAGE_TYPES.index(c.msgtype), c.topic),
        )
        if image_topic is not None:
            images = [c for c in images if c.topic == image_topic]
        if not images:
            topics = sorted({(c.topic, c.msgtype) for c in reader.connections})
            raise ValueError(f"no image topic {image_topic or ''} in {path}; topics: {topics}")
        topic = images[0].topic
        connections = [c for c in images if c.topic == topic]
        pending: list[tuple[int, int, str, Any]] = []
        messages = reader.messages(connections=connections)
        for order, (connection, log_time, raw) in enumerate(messages):
            msg: Any = reader.deserialize(raw, connection.msgtype)
            stamp = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec) or log_time
            heapq.heappush(pending, (stamp, order, msg.header.frame_id, msg))
            while pending and pending[0][0] < stamp - reorder_s * NS:
                yield from _convert(heapq.heappop(pending))
        while pending:
            yield from _convert(heapq.heappop(pending))


def _convert(item: tuple[int, int, str, Any]) -> Iterator[tuple[int, str, np.ndarray]]:
    stamp, _, frame_id, msg = item
    try:
        rgb = compressed_to_rgb(msg) if hasattr(msg, "format") else image_to_rgb(msg)
    except ImageConversionError as exc:
        print(f"[replay] skipped a frame at {stamp} ns: {exc}", file=sys.stderr)
        return
    yield stamp, frame_id, rgb


class _Writer:
    """MCAP output: rosbags serialises, the mcap library writes, schemas carry full msgdefs."""

    def __init__(self, path: Path) -> None:
        from mcap.writer import Writer

        self.store = typestore()
        self.stream = path.open("wb")
        self.writer = Writer(self.stream)
        self.writer.start(profile="ros2", library="vljepa_ros replay")
        self.channels: dict[str, int] = {}

    def channel(self, topic: str, msgtype: str) -> int:
        if topic not in self.channels:
            msgdef, _ = self.store.generate_msgdef(msgtype, ros_version=2)
            schema = self.writer.register_schema(msgtype, "ros2msg", msgdef.encode())
            self.channels[topic] = self.writer.register_channel(topic, "cdr", schema)
        return self.channels[topic]

    def write(self, topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
        data = self.store.serialize_cdr(msg, msgtype)
        self.writer.add_message(self.channel(topic, msgtype), stamp_ns, bytes(data), stamp_ns)

    def close(self) -> None:
        self.writer.finish()
        self.stream.close()


class _Messages:
    """Builders for the output messages as rosbags dataclasses."""

    def __init__(self, store: Any) -> None:
        self.t = store.types

    def time(self, ns: int) -> Any:
        return self.t["builtin_interfaces/msg/Time"](sec=int(ns // NS), nanosec=int(ns % NS))

    def header(self, ns: int, frame_id: str) -> Any:
        return self.t["std_msgs/msg/Header"](stamp=self.time(ns), frame_id=frame_id)


def replay(
    bag: Path,
    out: Path,
    checkpoint: str | None,
    params: dict[str, dict[str, Any]],
    config: ReplayConfig,
    image_topic: str | None = None,
    compressed: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Replay `bag` into `out`; returns message counts per output topic."""
    import torch
    from tqdm import tqdm

    from vljepa_ros.model import VLJepaRuntime
    from vljepa_ros.params import pipeline_config, segmenter_config
    from vljepa_ros.stream.joiner import JoinedStep, StepJoiner
    from vljepa_ros.stream.pipeline import PerceptionPipeline
    from vljepa_ros.stream.segmenter import OnlineSegmenter, Segment, temporal_ward_segments

    runtime = VLJepaRuntime.load(checkpoint) if checkpoint else VLJepaRuntime.load()
    pipe_cfg = pipeline_config(params["perception_node"], runtime.cfg.default_query)
    pipeline = PerceptionPipeline(runtime, pipe_cfg)
    segmenter = OnlineSegmenter(segmenter_config(params["decoder_node"]))
    writer = _Writer(out)
    build = _Messages(writer.store)
    t = build.t
    counts = dict.fromkeys(("embedding", "state", "events", "embedding_info"), 0)
    period = round(NS / config.step_hz)
    last_step: int | None = None
    frame_id = ""
    steps: list[tuple[int, np.ndarray, str]] = []  # for the offline decoder
    segments: list[Segment] = []
    # each embedding paired with the label about its step, as the decoder node pairs them
    # (capture time stands in for arrival time)
    joiner = StepJoiner(max_wait=params["decoder_node"]["label_wait"])

    def decode(joined: list[JoinedStep]) -> None:
        nonlocal segments
        for step in joined:
            if config.decoder == "online":
                segments += segmenter.step(step.embedding, step.stamp_ns, step.seq, step.label)
            else:
                steps.append((step.stamp_ns, step.embedding, step.label))

    frames = read_frames(bag, image_topic, compressed)
    bar = tqdm(frames, unit=" frames", disable=not progress, desc="replay")
    for stamp, frame_id, rgb in bar:
        if not counts["embedding_info"]:
            matrix = pipeline.label_matrix
            info = t["vljepa_ros/msg/EmbeddingInfo"](
                header=build.header(stamp, frame_id), model_id=runtime.model_id,
                y_encoder_id=runtime.y_encoder_id, dim=int(matrix.shape[1]),
                query=pipe_cfg.query, clip_frames=pipeline.clip_frames,
                step_hz=float(config.step_hz), labels=list(pipe_cfg.labels),
                label_prompts=list(pipe_cfg.labels.values()),
                label_embeddings=matrix.astype(np.float32).reshape(-1),
            )  # fmt: skip
            writer.write("/vljepa/embedding_info", "vljepa_ros/msg/EmbeddingInfo", info, stamp)
            counts["embedding_info"] += 1
        pipeline.offer("camera", rgb, stamp, stamp)
        if last_step is not None and stamp - last_step < period:
            continue
        for result in pipeline.step():
            last_step = result.stamp_ns
            header = build.header(result.stamp_ns, frame_id)
            embedding = t["vljepa_ros/msg/SemanticEmbedding"](
                header=header, clip_start=build.time(result.clip_start_ns), seq=result.seq,
                model_id=runtime.model_id, query=pipe_cfg.query,
                embedding=result.embedding.astype(np.float32), novelty=result.novelty,
                latency_ms=0.0,
            )  # fmt: skip
            s = result.state
            state = t["vljepa_ros/msg/StateLabel"](
                header=header, seq=result.seq, label=s.label,
                label_stamp=build.time(s.label_stamp_ns or 0), confidence=s.confidence,
                instant_label=s.instant_label, instant_confidence=s.instant_confidence,
                candidates=s.candidates, scores=np.asarray(s.scores, dtype=np.float32),
                changed=s.changed, since=build.time(s.since_ns),
            )  # fmt: skip
            writer.write("/vljepa/embedding", "vljepa_ros/msg/SemanticEmbedding", embedding,
                         result.stamp_ns)  # fmt: skip
            writer.write("/vljepa/state", "vljepa_ros/msg/StateLabel", state, result.stamp_ns)
            counts["embedding"] += 1
            counts["state"] += 1
            now = result.stamp_ns
            decode(joiner.add_embedding(result.seq, now, result.embedding, frame_id, now))
            if s.label_stamp_ns is not None:  # None: the tracker's lag is still filling
                decode(joiner.add_label(s.label_stamp_ns, s.label, now))
        bar.set_postfix(steps=counts["embedding"])
    for s in pipeline.flush("camera"):  # the last steps' labels: the bag has ended
        assert s.label_stamp_ns is not None  # a flush describes every step it returns
        decode(joiner.add_label(s.label_stamp_ns, s.label, s.label_stamp_ns))
    decode(joiner.flush())
    if config.decoder == "online":
        segments += segmenter.flush("shutdown")
    elif steps:
        segments = _offline_segments(steps, config.segments_per_minute, temporal_ward_segments)
    if segments:
        texts = runtime.decode_batch(
            torch.from_numpy(np.stack([seg.embedding for seg in segments])),
            config.max_text_length,
        )
        for event_id, (seg, text) in enumerate(zip(segments, texts, strict=True)):
            event = t["vljepa_ros/msg/TextEvent"](
                header=build.header(seg.end_ns, frame_id), event_id=event_id,
                segment_start=build.time(seg.start_ns), segment_end=build.time(seg.end_ns),
                text=text, label=seg.label, trigger=seg.trigger, novelty=seg.novelty,
                steps=seg.steps, embedding=seg.embedding.astype(np.float32),
            )  # fmt: skip
            writer.write("/vljepa/events", "vljepa_ros/msg/TextEvent", event, seg.end_ns)
            counts["events"] += 1
    writer.close()
    return counts


def _offline_segments(
    steps: list[tuple[int, np.ndarray, str]], per_minute: float, ward: Any
) -> list[Any]:
    """One segment per run of the temporal Ward clustering, N from the stream's duration."""
    from vljepa_ros.stream.segmenter import Segment

    duration_min = (steps[-1][0] - steps[0][0]) / NS / 60
    n = max(1, min(len(steps), round(duration_min * per_minute)))
    embeddings = np.stack([s[1] for s in steps])
    segments = []
    previous = None
    for start, end in ward(embeddings, n):
        mean = embeddings[start:end].mean(axis=0)
        mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        # the most common label; ties: the first seen (deterministic, unlike a set's order)
        label = Counter(s[2] for s in steps[start:end]).most_common(1)[0][0]
        novelty = 0.0 if previous is None else float(1.0 - previous @ mean)
        previous = mean
        segments.append(Segment(steps[start][0], steps[end - 1][0], end - start, mean, label,
                                "semantic_shift", novelty))  # fmt: skip
    return segments
