"""The `vljepa eval` command: evaluate a checkpoint on held-out episode bags, write a report.

Only argparse is imported at module level, so `vljepa --help` stays fast; torch, the model and
matplotlib are imported when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vljepa_ros.stream.state_tracker import StateTrackerConfig

QUICK_EPISODES = 3


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _start(args: argparse.Namespace, name: str) -> tuple[float, Callable[[str], None]]:
    """Apply --threads; the start time and a progress printer (silent with --quiet)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"[{name} {time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr)

    return started, say


def _load_runtime(args: argparse.Namespace) -> Any:
    """The --checkpoint (default: the shipped one) on --device."""
    from vljepa_ros.model import VLJepaRuntime

    if args.checkpoint:
        return VLJepaRuntime.load(args.checkpoint, device=args.device)
    return VLJepaRuntime.load(device=args.device)


def _lagged(tracker: StateTrackerConfig, lag_steps: int | None) -> StateTrackerConfig:
    """`tracker` with --lag-steps when it was given."""
    return tracker if lag_steps is None else dataclasses.replace(tracker, lag_steps=lag_steps)


def _add_replay_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that replay bags through the perception pipeline."""
    parser.add_argument(
        "--checkpoint", default="", help="checkpoint folder or shipped name (default: the shipped)"
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="YAML `labels: {label: prompt}` with optional `transitions` and "
        "`duration_shapes` (default: config/robot_states.yaml)",
    )
    parser.add_argument(
        "--no-transitions",
        action="store_true",
        help="state tracker without a transition model (ignore or do not count the labels "
        "file's transition rates and duration shapes)",
    )
    parser.add_argument(
        "--lag-steps",
        type=_non_negative_int,
        default=None,
        help="steps the stabilised label waits for newer evidence (the node's lag_steps; "
        "default: the package default)",
    )
    parser.add_argument(
        "--query", default=None, help="query of the state readout (default: the model's default)"
    )
    parser.add_argument(
        "--no-grounding",
        action="store_true",
        help="label prompts as they are, not grounded in the checkpoint's answer bank (the "
        "node's ground_labels: false)",
    )
    parser.add_argument("--episodes", type=_positive_int, default=None, help="first N bags only")
    parser.add_argument("--step-hz", type=_positive_float, default=10.0, help="steps per second")
    parser.add_argument(
        "--sample-hz", type=_positive_float, default=10.0, help="clip frames per second"
    )
    parser.add_argument(
        "--clip-stride",
        type=_positive_int,
        default=1,
        help="clip frames are every Nth sampled frame (the node's clip_stride)",
    )
    parser.add_argument(
        "--frame-size", type=_positive_int, default=None, help="resize frames while reading"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def _cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate; print the targets table; 2 on bad input, 0 otherwise (targets are reported,
    not enforced: a report is the product even when a figure is missed)."""
    import torch

    from vljepa_ros.model import ModelError, VLJepaRuntime
    from vljepa_ros.stream.state_tracker import StateTrackerConfig
    from vljepa_ros.train import evaluate, report, selective

    torch.manual_seed(args.seed)
    started, say = _start(args, "eval")

    try:
        label_set = evaluate.load_label_set(args.labels)
        labels = label_set.labels
        rewordings = evaluate.load_rewordings(args.reworded) if args.reworded else None
        bags = evaluate.find_bags(args.data)
        episodes = args.episodes or (QUICK_EPISODES if args.quick else None)
        bags = bags[:episodes] if episodes else bags
        config = evaluate.EvalConfig(
            labels=labels,
            query=args.query,
            retrieval_query=args.retrieval_query,
            rewordings=rewordings,
            step_hz=args.step_hz,
            sample_hz=args.sample_hz,
            clip_stride=args.clip_stride,
            tracker=_lagged(
                StateTrackerConfig() if args.no_transitions else evaluate.tracker_for(label_set),
                args.lag_steps,
            ),
            ground_labels=not args.no_grounding,
            retrieval_clips=args.retrieval_clips,
            frame_size=args.frame_size,
            max_text_length=args.max_text_length,
            seed=args.seed,
            selective=selective.QUICK if args.quick else selective.SelectiveConfig(),
        )
        baseline = None
        if args.baseline_checkpoint:
            say(f"loading the per-frame baseline's model {args.baseline_checkpoint}")
            baseline = VLJepaRuntime.load(args.baseline_checkpoint, device=args.device)
        say(f"loading {args.checkpoint or 'the default checkpoint'}")
        runtime = _load_runtime(args)
        say(f"{len(bags)} episode(s) from {args.data}")
        result = evaluate.evaluate(
            runtime,
            bags,
            config,
            say,
            checkpoint=args.checkpoint or "",
            baseline=baseline,
            baseline_checkpoint=args.baseline_checkpoint,
        )
    except (evaluate.EvalError, ModelError, ValueError, FileNotFoundError) as exc:
        print(f"vljepa eval: {exc}", file=sys.stderr)
        return 2
    path = report.write_report(result, args.out, timelines=args.timelines)
    for row in result.report["targets"]:
        shown, bound = report.target_text(row)
        print(f"  {'ok  ' if row['met'] else 'MISS'} {row['name']}: {shown} (target {bound})")
    print(f"report: {path} ({time.perf_counter() - started:.0f} s)")
    return 0


def _cmd_tune_tracker(args: argparse.Namespace) -> int:
    """Replay annotated bags, grid-search the state tracker, write the best as a parameter
    file; 2 on bad input."""
    from vljepa_ros.data.bag import read_episode
    from vljepa_ros.model import ModelError
    from vljepa_ros.stream.state_tracker import StateTrackerConfig
    from vljepa_ros.train import evaluate, tune

    started, say = _start(args, "tune")

    try:
        label_set = evaluate.load_label_set(args.labels)
        labels = label_set.labels
        bags = evaluate.find_bags(args.data)[: args.episodes]
        config = evaluate.EvalConfig(
            labels=labels,
            query=args.query,
            step_hz=args.step_hz,
            sample_hz=args.sample_hz,
            clip_stride=args.clip_stride,
            tracker=_lagged(evaluate.tracker_for(label_set), args.lag_steps),
            ground_labels=not args.no_grounding,
        )
        runtime = _load_runtime(args)
        streams = []
        for i, path in enumerate(bags):
            say(f"replaying {path.name} ({i + 1}/{len(bags)})")
            episode = read_episode(path, size=args.frame_size)
            streams.append(evaluate.labelled_stream(runtime, episode, config, path.name))
        matrix = config.label_matrix(runtime, list(labels.values()))
        transitions, shapes = (
            ((), ())
            if args.no_transitions
            else (
                tune.estimate_transitions(streams, list(labels)),
                tune.estimate_duration_shapes(streams, list(labels)),
            )
        )
        grid = tune.TrackerGrid()
        base = StateTrackerConfig(
            transitions=transitions,
            duration_shapes=shapes,
            lag_steps=config.tracker.lag_steps,
        )
        say(f"{len(grid.configs(base))} tracker settings over {len(streams)} episodes")
        trials = tune.tune_tracker(
            streams,
            list(labels),
            matrix,
            grid,
            args.max_flicker,
            base=base,
            progress=lambda done, total: (
                say(f"{done}/{total} settings") if done % 200 == 0 else None
            ),
            workers=args.workers,
        )
    except (evaluate.EvalError, ModelError, ValueError, FileNotFoundError) as exc:
        print(f"vljepa tune-tracker: {exc}", file=sys.stderr)
        return 2
    current = tune.run_trial(config.tracker, streams, list(labels), matrix)
    print("setting                 accuracy  macro-F1  edit   flicker")
    for name, trial in [("current defaults", current)] + [
        (f"best {k + 1}", t) for k, t in enumerate(trials[:5])
    ]:
        print(
            f"{name:<22} {100 * trial.accuracy:7.1f}%  {trial.macro_f1:8.3f}  {trial.edit:5.1f}"
            f"  {trial.flicker:7.2f}"
        )
    best = trials[0]
    if best.flicker > args.max_flicker:
        print(f"no setting keeps flicker within {args.max_flicker:g}; the best is written anyway")
    note = f"{len(streams)} episodes from {args.data}, checkpoint {args.checkpoint or 'default'}"
    # the labels file goes with the settings: they were tuned with its rates (or without any)
    labels_path = args.labels_out or args.out.with_name(f"{args.out.stem}_labels.yaml")
    tune.write_transitions(labels, transitions, labels_path, note, shapes)
    print(
        f"wrote {labels_path} (label prompts, {len(transitions)} transition rates, "
        f"{len(shapes)} duration shapes)"
    )
    path = tune.write_params(best, args.out, note, labels_path.resolve())
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")
    return 0


def add_tune_parser(subparsers: Any) -> None:
    """Register the `tune-tracker` command."""
    parser = subparsers.add_parser(
        "tune-tracker",
        help="choose the state tracker's smoothing, thresholds and dwell on annotated bags",
        description=(
            "Replay annotated episode bags (not the ones you evaluate on) through the "
            "perception pipeline, run every setting of a grid of the state tracker's "
            "temperature, smoothing, enter/exit thresholds, switch margin and minimum dwell, "
            "with transition rates and duration shapes counted from the bags' ground truth, and "
            "write the most accurate one whose flicker stays within --max-flicker as a "
            "perception_node parameter file, with the prompts and rates in a labels file it "
            "names. See docs/evaluation.md."
        ),
    )
    _add_replay_options(parser)
    parser.add_argument("--data", type=Path, required=True, help="folder of annotated bags")
    parser.add_argument("--out", type=Path, required=True, help="parameter file to write")
    parser.add_argument(
        "--labels-out",
        type=Path,
        default=None,
        help="labels file with the counted transition rates (default: OUT's name + _labels.yaml)",
    )
    parser.add_argument(
        "--max-flicker",
        type=_positive_float,
        default=1.5,
        help="most predicted label switches per ground-truth switch allowed",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="processes that run the grid's settings (the result does not depend on it)",
    )
    parser.set_defaults(handler=_cmd_tune_tracker)


def add_eval_parser(subparsers: Any) -> None:
    """Register the `eval` command on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on held-out episodes; write a Markdown report with plots",
        description=(
            "Replay held-out episode bags (with ground-truth state and caption topics) through "
            "the perception pipeline and write OUT/report.md, OUT/metrics.json and PNG plots: "
            "robot-state accuracy, macro-F1, confusion, edit score, F1@k, flicker, reworded "
            "prompts, retrieval, caption CIDEr-D, a per-frame baseline and selective decoding. "
            "See docs/evaluation.md."
        ),
    )
    _add_replay_options(parser)
    parser.add_argument("--data", type=Path, required=True, help="folder of episode bags")
    parser.add_argument("--out", type=Path, required=True, help="report folder (created)")
    parser.add_argument(
        "--reworded",
        type=Path,
        default=None,
        help="YAML `labels: {label: [prompt, ...]}` of held-out rewordings "
        "(default: the built-in held-out prompts of the seven robot states)",
    )
    parser.add_argument(
        "--baseline-checkpoint",
        default="",
        help="model of the per-frame baseline, e.g. one trained on one-frame clips "
        "(default: the evaluated model, the newest frame repeated to fill its clip)",
    )
    parser.add_argument(
        "--retrieval-query",
        default=None,
        help="query the retrieval clips are embedded with (default: the model's default)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a fast look: the first {QUICK_EPISODES} bags (unless --episodes) and shorter "
        "selective-decoding sweeps",
    )
    parser.add_argument(
        "--retrieval-clips", type=_positive_int, default=100, help="retrieval gallery size"
    )
    parser.add_argument(
        "--max-text-length",
        type=_positive_int,
        default=32,
        help="longest decoded text in tokens (the decoder node's max_text_length)",
    )
    parser.add_argument(
        "--timelines", type=int, default=None, help="timeline plots for the first N episodes"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the retrieval sample")
    parser.set_defaults(handler=_cmd_eval)
