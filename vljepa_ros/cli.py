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


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="vljepa",
        description="VL-JEPA perception for ROS 2: run, train, evaluate and benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", help="versions and whether ROS and the messages import")
    info.set_defaults(handler=_cmd_info)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vljepa` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
