"""The `vljepa` command: one entry point for the package's jobs.

Each subcommand imports what it needs when it runs, so `vljepa --help` stays fast and works
without ROS or a GPU.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _cmd_info(args: argparse.Namespace) -> int:
    """Print versions and whether the ROS side (rclpy, generated messages) is importable."""
    import vljepa_ros

    print(f"vljepa_ros {vljepa_ros.__version__} (python {platform.python_version()})")
    for name in ("torch", "transformers", "numpy", "rclpy", "vljepa_ros.msg"):
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # report every failure kind: missing libs, ABI errors
            print(f"  {name:<16} unavailable: {type(exc).__name__}: {exc}")
            continue
        version = getattr(module, "__version__", "")
        print(f"  {name:<16} ok {version}".rstrip())
    try:
        import torch

        if torch.cuda.is_available():
            print(f"  cuda             available: {torch.cuda.get_device_name(0)}")
        else:
            print("  cuda             not available")
    except ImportError:
        pass
    return 0


def _steps_at_least_50(text: str) -> int:
    value = int(text)
    if value < 50:
        raise argparse.ArgumentTypeError("percentiles need at least 50 timed steps")
    return value


def _add_bench_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bench model` (declared here so that --help does not import torch)."""
    parser.add_argument("--preset", default="tiny", help="model preset: tiny, vitl, vitl_minilm")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--steps", type=_steps_at_least_50, default=100, help="timed steps (>= 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--frames", type=int, default=None, help="clip length (preset default)")
    parser.add_argument("--size", type=int, default=None, help="crop size (preset default)")
    parser.add_argument("--batch", type=int, default=1, help="clips per step")
    parser.add_argument("--query-tokens", type=int, default=16, help="query tokens per clip")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")


def _cmd_bench_model(args: argparse.Namespace) -> int:
    """Time X-encoder + predictor steps of a model preset on a device."""
    from vljepa_ros.model import bench

    return bench.main(args)


def _cmd_run(args: argparse.Namespace) -> int:
    """Start the launch file's node graph, each node in its own process."""
    from vljepa_ros.launcher import run_graph

    given = {name: getattr(args, name) for name in args.launch_names}
    return run_graph(given, duration=args.duration)


def _cmd_demo(args: argparse.Namespace) -> int:
    """The whole graph on the simulated camera for a while, recorded to a folder."""
    from vljepa_ros.demo import run_demo

    return run_demo(args.out, args.duration, args.checkpoint, args.device)


def _cmd_replay(args: argparse.Namespace) -> int:
    """The nodes' pipeline over a bag, offline, into an MCAP file."""
    from vljepa_ros.params import load_params_file
    from vljepa_ros.replay import ReplayConfig, replay

    params = load_params_file(args.params_file or _package_file("config", "perception.yaml"))
    config = ReplayConfig(
        step_hz=params["perception_node"]["step_hz"],
        decoder=args.decoder,
        segments_per_minute=args.segments_per_minute,
        max_text_length=params["decoder_node"]["max_text_length"],
    )
    counts = replay(
        args.bag, args.out, args.checkpoint, params, config, args.image_topic, args.compressed
    )
    print(f"wrote {args.out}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


def _package_file(*parts: str) -> Path:
    from vljepa_ros.launcher import share_dir

    return share_dir().joinpath(*parts)


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    from vljepa_ros.launcher import add_run_arguments, launch_arguments, share_dir

    run = sub.add_parser(
        "run",
        help="start the node graph of launch/perception.launch.py (no ros2 launch needed)",
        description="Start the node graph of launch/perception.launch.py from the same "
        "parameter file, each node in its own process. Options mirror the launch arguments.",
    )
    try:
        arguments = launch_arguments(share_dir() / "launch" / "perception.launch.py")
    except FileNotFoundError:
        arguments = []
    add_run_arguments(run, arguments)
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.set_defaults(handler=_cmd_run, launch_names=[a.name for a in arguments])


def _cmd_bench_e2e(args: argparse.Namespace) -> int:
    """The three-process benchmark over real DDS."""
    from vljepa_ros.benchmarks import bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="vljepa",
        description="VL-JEPA perception for ROS 2: run, train, evaluate and benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", help="versions and whether ROS and the messages import")
    info.set_defaults(handler=_cmd_info)

    demo = sub.add_parser(
        "demo",
        help="the full node graph on a simulated camera; prints text events, writes a video",
        description="Start the simulated camera, perception, decoder and overlay nodes (each "
        "its own process, real DDS, config/perception.yaml, the shipped model), print the text "
        "events as they arrive, then write overlay.mp4, summary.png and events.jsonl.",
    )
    demo.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    demo.add_argument("--out", type=Path, default=Path("vljepa_demo"), help="output folder")
    demo.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    demo.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto")
    demo.set_defaults(handler=_cmd_demo)

    _add_run_parser(sub)

    from vljepa_ros.data.commands import add_data_parser
    from vljepa_ros.train.commands import add_answer_bank_parser, add_train_parser
    from vljepa_ros.train.eval_commands import add_eval_parser, add_tune_parser

    add_data_parser(sub)
    add_train_parser(sub)
    add_answer_bank_parser(sub)
    add_eval_parser(sub)
    add_tune_parser(sub)

    rep = sub.add_parser(
        "replay",
        help="run the nodes' pipeline over a bag offline and write the outputs to an MCAP file",
        description="Replay a bag (rosbag2 folder or .mcap file) through the same pipeline as "
        "the nodes, in capture-stamp order, as fast as possible and deterministically; write "
        "/vljepa/embedding, /vljepa/state, /vljepa/events and /vljepa/embedding_info (ROS 2 "
        "CDR, input stamps) to an MCAP file.",
    )
    rep.add_argument("bag", type=Path, help="input bag: rosbag2 folder or .mcap file")
    rep.add_argument("--out", type=Path, required=True, help="output .mcap file")
    rep.add_argument("--image-topic", default=None, help="image topic (default: the first one)")
    rep.add_argument("--compressed", action="store_true", help="read a CompressedImage topic")
    rep.add_argument("--params-file", type=Path, default=None,
                     help="parameter file (default: config/perception.yaml)")  # fmt: skip
    rep.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    rep.add_argument("--decoder", choices=("online", "offline"), default="online",
                     help="online segmenter (as decoder_node) or offline temporal Ward "
                     "clustering (the paper's evaluated method)")  # fmt: skip
    rep.add_argument("--segments-per-minute", type=float, default=6.0,
                     help="offline decoder: segments per minute of stream")  # fmt: skip
    rep.set_defaults(handler=_cmd_replay)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="TARGET", required=True)
    bench_model = bench_sub.add_parser(
        "model", help="per-step latency, steps/s and TFLOP/s of a model preset on a device"
    )
    _add_bench_model_arguments(bench_model)
    bench_model.set_defaults(handler=_cmd_bench_model)
    e2e = bench_sub.add_parser(
        "e2e",
        help="camera process -> perception_node -> consumer over real DDS: latency, rate, "
        "drops, CPU, memory, overhead over the model alone; --minutes for a soak",
    )
    e2e.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    e2e.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    e2e.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    e2e.add_argument("--cameras", type=int, nargs="+", default=[1], help="e.g. 1 2 4")
    e2e.add_argument("--hz", type=float, default=30.0, help="camera frame rate")
    e2e.add_argument("--width", type=int, default=640)
    e2e.add_argument("--height", type=int, default=480)
    e2e.add_argument("--minutes", type=int, default=0, help="soak: per-minute figures")
    e2e.add_argument(
        "--cpu-threads",
        type=int,
        default=0,
        help="torch threads of the node and of the model-only figure (0: all cores but one)",
    )
    e2e.add_argument("--json", type=Path, default=None, help="also write the figures here")
    e2e.set_defaults(handler=_cmd_bench_e2e)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vljepa` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
