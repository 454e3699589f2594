"""The `vljepa train` command.

Only argparse is imported at module level, so `vljepa --help` stays fast; torch, the model and
the data readers are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "config/train/default.yaml"
QUICK_CONFIG = "config/train/quick.yaml"


def build_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of the command line: the config file, then --data/--out, then --set."""
    from vljepa_ros.train.config import load_train_config, resolve_path

    path = args.config or (QUICK_CONFIG if args.quick else DEFAULT_CONFIG)
    overrides: list[str] = []
    if args.data:
        overrides.append(f"data.paths={[str(p) for p in args.data]}")
    if args.val_data:
        overrides.append(f"data.val_paths={[str(p) for p in args.val_data]}")
    if args.out is not None:
        overrides.append(f"out={str(args.out)!r}")
    if args.no_progress:
        overrides.append("progress=false")
    return load_train_config(resolve_path(path), [*overrides, *args.set])


def _cmd_train(args: argparse.Namespace) -> int:
    """Train; 0 when done, 2 on a bad config or unusable data, 130 when interrupted."""
    if args.quick and args.config:
        print("vljepa train: --quick and --config exclude each other", file=sys.stderr)
        return 2
    from vljepa_ros.data.bag import BagReadError
    from vljepa_ros.model import ConfigError
    from vljepa_ros.train.trainer import TrainError, train

    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"vljepa train: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(config, resume=args.resume)
    except (TrainError, FileNotFoundError, BagReadError, ConfigError) as exc:
        print(f"vljepa train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nvljepa train: interrupted; continue with the same command plus --resume "
            f"(last checkpoint: {Path(config.out) / 'last'})",
            file=sys.stderr,
        )
        return 130
    summary = result.summary
    print(
        f"trained {result.steps} steps on {summary['episodes']} episodes "
        f"({summary['frames']} frames) in {summary['train_s_total']:.0f} s; "
        f"model: {result.model_dir}"
    )
    return 0


def add_train_parser(subparsers: Any) -> None:
    """Register the `train` command on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from MCAP bags (caption pretraining, queries, Y-decoder)",
        description=(
            "Train VL-JEPA on ROS 2 bags with an image topic and state/caption annotations "
            "(or /joint_states to derive states from): caption pretraining, query-conditioned "
            "fine-tuning, then the Y-decoder. Writes OUT/model (a checkpoint), OUT/last "
            "(resume checkpoint), OUT/train_log.csv and OUT/train_config.yaml. "
            "See docs/training.md."
        ),
    )
    parser.add_argument(
        "--config", type=Path, default=None, help=f"training YAML (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"use {QUICK_CONFIG}: a small model on two short simulated episodes (< 2 min)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=None,
        help="bag folders, .mcap files, or folders searched for them (sets data.paths)",
    )
    parser.add_argument(
        "--val-data", type=Path, nargs="+", default=None, help="held-out bags (data.val_paths)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (sets out)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from OUT/last"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set stage1.steps=100 (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_cmd_train)
