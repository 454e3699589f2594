"""End-to-end benchmark over real DDS: camera process -> perception_node -> this process.

`vljepa bench e2e` measures what a robot team sees: a camera publisher in its own process at a
set rate and size with real capture stamps, the perception node in its own process, and this
process consuming the embeddings. It reports capture-to-publication latency p50/p99 (the node's
latency_ms, from the header stamps), capture-to-receipt latency, the step rate per camera, input
frames dropped or stale (from the node's /diagnostics), CPU use and peak resident memory of the
perception process, and the overhead ratio: end-to-end p50 over the p50 of the model call timed
inside the node in the same run (what the pipeline adds to the model). For reference it also
times the model alone in this process before the graph starts, back to back and at the node's
step rate, with the ratios over those. With --minutes it also reports per-minute figures (soak):
memory growth after the first minute, last-minute p99 over first-minute p99, and whether every
step's seq is accounted for.

ROS is imported inside the functions, so importing this module needs no ROS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NS = 1_000_000_000


def camera_main(argv: list[str]) -> int:
    """The camera process: publish `count` cameras of rgb8 frames at `hz` until killed."""
    import argparse

    import rclpy
    from sensor_msgs.msg import Image

    from vljepa_ros.nodes.common import image_message, qos_input

    parser = argparse.ArgumentParser(prog="bench camera")
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--cameras", type=int, default=1)
    args = parser.parse_args(argv)
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    pubs = [
        node.create_publisher(Image, f"/bench/cam{i}/image", qos_input("best_effort", 5))
        for i in range(args.cameras)
    ]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), np.uint8) for _ in range(8)]
    period = 1.0 / args.hz
    next_time = time.monotonic()
    k = 0
    try:
        while rclpy.ok():
            stamp = node.get_clock().now().to_msg()
            for i, pub in enumerate(pubs):
                pub.publish(image_message(frames[k % len(frames)], stamp, f"cam{i}"))
            k += 1
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
    except KeyboardInterrupt:
        pass
    return 0


@dataclass
class _Proc:
    """CPU time and memory of a process, from /proc (Linux)."""

    pid: int

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        """(resident now, peak resident) in MB."""
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
        )
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


@dataclass
class _Minute:
    latencies: list[float] = field(default_factory=list)
    rss_mb: float = 0.0


def model_only_latency(
    checkpoint: str | None, width: int, height: int, threads: int, step_hz: float, steps: int = 60
) -> dict[str, float]:
    """p50 ms of embedding one clip (T shrunk frames, preprocessing included), in this process,
    with as many torch threads as the node uses: back to back, and one clip every 1/step_hz s
    as the node runs it (on this machine a model called every 100 ms takes 1.2-1.8 ms longer
    per call than one called back to back; docs/benchmarks.md)."""
    import torch

    torch.set_num_threads(threads)

    from vljepa_ros.model import VLJepaRuntime
    from vljepa_ros.stream.pipeline import PerceptionPipeline, PipelineConfig

    runtime = VLJepaRuntime.load(checkpoint) if checkpoint else VLJepaRuntime.load()
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="", labels={"a": "a", "b": "b"}))
    rng = np.random.default_rng(0)
    frame = pipe.shrink(rng.integers(0, 256, (height, width, 3), np.uint8))
    clip = np.stack([frame] * pipe.clip_frames)[None]

    def p50(period: float) -> float:
        times = []
        next_start = time.perf_counter()
        for i in range(steps + 10):
            time.sleep(max(0.0, next_start - time.perf_counter()))
            start = time.perf_counter()
            runtime.embed_clips(clip)
            if i >= 10:
                times.append((time.perf_counter() - start) * 1000)
            next_start = start + period
        return float(np.percentile(times, 50))

    with torch.inference_mode():
        return {"back_to_back": p50(0.0), "paced": p50(1.0 / step_hz)}


_SPLIT = ("arrival_delay", "convert", "step", "model", "latency")


def run_e2e(
    checkpoint: str | None,
    duration: float,
    cameras: int = 1,
    hz: float = 30.0,
    width: int = 640,
    height: int = 480,
    warmup: float = 10.0,
    minutes: int = 0,
    cpu_threads: int = 0,
) -> dict[str, Any]:
    """Run the three-process benchmark; return its figures."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    from vljepa_ros.msg import SemanticEmbedding
    from vljepa_ros.nodes.common import qos_reliable, stamp_to_ns
    from vljepa_ros.params import NODE_PARAMS, inference_threads

    threads = inference_threads(cpu_threads)
    (step_hz,) = (p.default for p in NODE_PARAMS["perception_node"] if p.name == "step_hz")
    model_p50 = model_only_latency(checkpoint, width, height, threads, step_hz)
    # Fast DDS's default transports lose most 640x480 rgb8 frames (0.9 MB) sent best effort
    # between processes here; its LARGE_DATA builtin transports carry them (README).
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")  # this consumer too
    topics = "[" + ", ".join(f"/bench/cam{i}/image" for i in range(cameras)) + "]"
    names = "[" + ", ".join(f"cam{i}" for i in range(cameras)) + "]"
    perception_cmd = [sys.executable, "-m", "vljepa_ros.nodes.perception_node", "--ros-args",
                      "-p", f"image_topics:={topics}", "-p", f"cpu_threads:={threads}"]  # fmt: skip
    if cameras > 1:
        perception_cmd += ["-p", f"camera_names:={names}"]
    if checkpoint:
        perception_cmd += ["-p", f"checkpoint:={checkpoint}"]
    perception = subprocess.Popen(perception_cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    camera = subprocess.Popen(
        [sys.executable, "-m", "vljepa_ros.benchmarks", "camera", "--hz", str(hz),
         "--width", str(width), "--height", str(height), "--cameras", str(cameras)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_consumer", context=context)
    lock = threading.Lock()
    measuring = threading.Event()
    records: dict[str, list[tuple[int, float, float]]] = {f"cam{i}": [] for i in range(cameras)}
    diagnostics: dict[str, dict[str, str]] = {}

    def on_embedding(camera_name: str, msg: Any) -> None:
        received = node.get_clock().now().nanoseconds
        if measuring.is_set():
            with lock:
                receipt_ms = (received - stamp_to_ns(msg.header.stamp)) / 1e6
                records[camera_name].append((msg.seq, msg.latency_ms, receipt_ms))

    def on_diagnostics(msg: Any) -> None:
        with lock:
            for status in msg.status:  # the perception node's cameras (not the decoder's)
                if status.name.startswith("vljepa perception"):
                    diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    for i in range(cameras):
        name = f"cam{i}"
        topic = f"/vljepa/{name}/embedding" if cameras > 1 else "/vljepa/embedding"
        node.create_subscription(
            SemanticEmbedding, topic, lambda m, n=name: on_embedding(n, m), qos_reliable(50)
        )
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    proc = _Proc(perception.pid)
    result: dict[str, Any] = {}
    try:
        # wait until every camera's frames reach the node, then warm up, then measure
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if perception.poll() is not None:
                raise RuntimeError(f"perception_node exited with status {perception.returncode}")
            if camera.poll() is not None:
                raise RuntimeError(f"the camera process exited with status {camera.returncode}")
            with lock:
                received = [int(d.get("frames_received", 0)) for d in diagnostics.values()]
            if len(received) == cameras and min(received) > 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(
                f"no frames of some of the {cameras} camera(s) reached perception_node in 180 s "
                f"(frames per camera: {received}); the DDS transport did not connect"
            )
        time.sleep(warmup)
        with lock:
            before = {k: dict(v) for k, v in diagnostics.items()}
        cpu0, wall0 = proc.cpu_seconds(), time.monotonic()
        measuring.set()
        per_minute: list[_Minute] = []
        total = minutes * 60.0 if minutes else duration
        while time.monotonic() - wall0 < total:
            time.sleep(min(60.0, total - (time.monotonic() - wall0)) if minutes else total)
            with lock:
                latencies = [r[1] for rs in records.values() for r in rs]
            minute = _Minute(latencies=latencies[sum(len(m.latencies) for m in per_minute):],
                             rss_mb=proc.memory_mb()[0])  # fmt: skip
            per_minute.append(minute)
        measuring.clear()
        cpu1, wall1 = proc.cpu_seconds(), time.monotonic()
        rss, peak = proc.memory_mb()
        time.sleep(1.5)  # one more diagnostics message
        with lock:
            after = {k: dict(v) for k, v in diagnostics.items()}
            recs = {k: list(v) for k, v in records.items()}
        elapsed = wall1 - wall0
        node_lat = np.array([r[1] for rs in recs.values() for r in rs] or [np.nan])
        receipt = np.array([r[2] for rs in recs.values() for r in rs] or [np.nan])
        counters = ("frames_received", "bad_frames", "stale_frames", "steps_published")
        drops = {}
        for key in counters:
            drops[key] = sum(int(a.get(key, 0)) - int(before.get(n, {}).get(key, 0))
                             for n, a in after.items())  # fmt: skip
        busy = max((int(a.get("steps_deferred_busy", 0)) for a in after.values()), default=0)
        seq_gaps = 0
        for rs in recs.values():
            seqs = [r[0] for r in rs]
            if seqs:
                seq_gaps += (seqs[-1] - seqs[0] + 1) - len(set(seqs))
        p50 = float(np.nanpercentile(node_lat, 50))
        node_model = float(np.median([float(a.get("model_p50_ms", "nan")) for a in after.values()]))
        result = {
            "cameras": cameras,
            "camera": f"{hz:g} Hz {width}x{height} rgb8",
            "seconds": round(elapsed, 1),
            "steps_per_s_per_camera": round(len(node_lat) / elapsed / cameras, 2),
            "steps_per_s_total": round(len(node_lat) / elapsed, 2),
            "latency_p50_ms": round(p50, 1),
            "latency_p99_ms": round(float(np.nanpercentile(node_lat, 99)), 1),
            "receipt_latency_p50_ms": round(float(np.nanpercentile(receipt, 50)), 1),
            "node_model_p50_ms": round(node_model, 1),
            "overhead_ratio": round(p50 / node_model, 2),
            "model_only_paced_p50_ms": round(model_p50["paced"], 1),
            "model_only_back_to_back_p50_ms": round(model_p50["back_to_back"], 1),
            "step_hz": step_hz,
            "torch_threads": threads,
            "overhead_ratio_vs_paced": round(p50 / model_p50["paced"], 2),
            "overhead_ratio_vs_back_to_back": round(p50 / model_p50["back_to_back"], 2),
            "node_input_rate_hz": [float(a.get("input_rate_hz", 0)) for a in after.values()],
            # the node's own split of its latency over its last 500 frames and steps
            "node_p50_ms": [
                {key: float(a.get(f"{key}_p50_ms", "nan")) for key in _SPLIT}
                for a in after.values()
            ],
            "frames_received_by_node": drops["frames_received"],
            "stale_frames": drops["stale_frames"],
            "bad_frames": drops["bad_frames"],
            "steps_deferred_busy": busy,
            "seq_not_received": seq_gaps,
            "perception_cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "perception_rss_mb": round(rss, 1),
            "perception_peak_rss_mb": round(peak, 1),
        }
        if minutes:
            first, last = per_minute[0], per_minute[-1]
            base = per_minute[1].rss_mb if len(per_minute) > 1 else first.rss_mb
            result["per_minute"] = [
                {"minute": i + 1, "p50_ms": round(float(np.percentile(m.latencies, 50)), 1),
                 "p99_ms": round(float(np.percentile(m.latencies, 99)), 1),
                 "rss_mb": round(m.rss_mb, 1)}
                for i, m in enumerate(per_minute) if m.latencies
            ]  # fmt: skip
            result["rss_growth_after_first_minute_percent"] = round(
                100 * (last.rss_mb - base) / base, 1
            )
            result["last_over_first_minute_p99"] = round(
                float(np.percentile(last.latencies, 99) / np.percentile(first.latencies, 99)), 2
            )
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        for process in (camera, perception):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    return result


def print_result(result: dict[str, Any], json_path: Path | None) -> None:
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key != "per_minute":
            print(f"{key:<{width}}  {value}")
    for row in result.get("per_minute", []):
        print(f"  minute {row['minute']:>2}: p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
              f"rss {row['rss_mb']} MB")  # fmt: skip
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


def bench_main(args: Any) -> int:
    """`vljepa bench e2e`: one run per --cameras value; figures printed and optionally JSON."""
    results = []
    for count in args.cameras:
        result = run_e2e(args.checkpoint, args.duration, count, args.hz, args.width, args.height,
                         args.warmup, args.minutes, args.cpu_threads)  # fmt: skip
        print(f"--- {count} camera(s)")
        print_result(result, None)
        results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "camera":
        sys.exit(camera_main(sys.argv[2:]))
    print("usage: python -m vljepa_ros.benchmarks camera [--hz HZ ...]", file=sys.stderr)
    sys.exit(2)
