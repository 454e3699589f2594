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


def _cmd_answer_bank(args: argparse.Namespace) -> int:
    """Write a checkpoint's answer bank from its training bags; 2 on bad input."""
    from vljepa_ros.data.bag import BagReadError
    from vljepa_ros.model import ConfigError, ModelError, load_checkpoint, resolve_checkpoint
    from vljepa_ros.train.config import CONFIG_NAME, load_train_config, read_labels
    from vljepa_ros.train.dataset import episode_labels, find_bags
    from vljepa_ros.train.trainer import write_bank

    try:
        directory = resolve_checkpoint(args.checkpoint)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise ConfigError(
                f"{config_path} is missing: the answer bank needs the training config the "
                "checkpoint was trained with (its labels file, queries and data topics)"
            )
        config = load_train_config(config_path)
        labels = read_labels(config.data.labels_file)
        x_cfg = config.model.x_encoder
        bags = find_bags(args.data)
        frames = []
        for bag in bags:
            try:
                frames += episode_labels(
                    bag, config.data, x_cfg.crop_size, x_cfg.resize_scale, args.cache
                )
            except BagReadError as exc:
                raise BagReadError(f"{bag}: {exc}") from exc
        model = load_checkpoint(directory)
        bank = write_bank(model, directory, config, frames, labels)
    except (ModelError, ConfigError, FileNotFoundError, BagReadError) as exc:
        print(f"vljepa answer-bank: {exc}", file=sys.stderr)
        return 2
    if bank is None:
        print(
            f"vljepa answer-bank: the model's default query {config.model.default_query!r} is "
            "none of the training config's queries, or no frame answers it; nothing written",
            file=sys.stderr,
        )
        return 2
    print(
        f"wrote {directory}: {len(bank.texts)} answers to {bank.query!r} from {len(bags)} "
        f"episodes, {bank.neighbours} neighbours per label prompt"
    )
    return 0


def add_answer_bank_parser(subparsers: Any) -> None:
    """Register the `answer-bank` command on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "answer-bank",
        help="write a checkpoint's answer bank, which grounds label prompts (vljepa train "
        "writes one)",
        description=(
            "Embed every answer a checkpoint was trained on for its default query, read from "
            "its training bags with its train_config.yaml, and write them into the checkpoint "
            "(answer_bank.safetensors and answer_bank.json). The perception node grounds each "
            "label prompt in these answers (parameter ground_labels), so reworded prompts keep "
            "working. `vljepa train` writes the bank itself; this is for checkpoints trained "
            "before it did, or after their bags changed. See docs/evaluation.md."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or shipped name")
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="the bags the checkpoint was trained on"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="frame cache of the training run: its entries are read instead of the bags",
    )
    parser.set_defaults(handler=_cmd_answer_bank)
