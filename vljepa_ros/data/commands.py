"""The `vljepa data` command group: `vljepa data sim` writes simulated episodes as MCAP bags.

Only argparse is imported at module level, so `vljepa --help` stays fast; the simulator is
imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


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


# Range options: (flag, SimConfig field, help). Each takes MIN MAX and replaces the default range,
# so held-out sets can shift the camera away from the training distribution.
RANGE_OPTIONS = (
    ("--cycles", "cycles", "pick-and-place cycles", int),
    ("--distractors", "distractors", "extra objects (0-3)", int),
    ("--azimuth", "azimuth_deg", "camera azimuth around the workspace, degrees (0-360)", float),
    ("--elevation", "elevation_deg", "camera elevation above the table, degrees", float),
    ("--distance", "distance_m", "camera distance to the look-at point, metres", float),
    ("--fov", "fov_deg", "vertical field of view, degrees", float),
    ("--speed", "speed", "mean end-effector speed of a move, m/s", float),
)


def _cmd_sim(args: argparse.Namespace) -> int:
    """Generate episodes; print a summary; 2 on a bad option or an existing output."""
    from tqdm import tqdm

    from vljepa_ros.data.generate import MANIFEST, existing_episodes, generate_dataset
    from vljepa_ros.data.sim import SimConfig

    overrides: dict[str, Any] = {
        "robot": args.robot,
        "robot_mesh": args.robot_mesh,
        "image_size": args.size,
        "fps": args.fps,
    }
    for flag, field, _, _ in RANGE_OPTIONS:
        value = getattr(args, flag[2:])
        if value is not None:
            overrides[field] = tuple(value)
    if args.shapes is not None:
        overrides["shapes"] = tuple(args.shapes)
    if args.colours is not None:
        overrides["colours"] = tuple(args.colours)
    if args.max_duration is not None:
        overrides["max_duration_s"] = args.max_duration
    try:
        config = SimConfig(**overrides)
    except ValueError as exc:
        print(f"vljepa data sim: {exc}", file=sys.stderr)
        return 2

    existing = existing_episodes(args.out, args.episodes)
    if existing and not args.overwrite:
        print(
            f"vljepa data sim: {len(existing)} episode folder(s) exist already, e.g. "
            f"{existing[0]} (--overwrite replaces them)",
            file=sys.stderr,
        )
        return 2

    bar = tqdm(total=args.episodes, unit="episode", disable=args.quiet, dynamic_ncols=True)

    def advance(entry: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix(frames=entry["frames"], refresh=False)

    try:
        manifest = generate_dataset(
            args.out,
            args.episodes,
            seed=args.seed,
            config=config,
            workers=args.workers,
            compressed=args.compressed,
            overwrite=args.overwrite,
            progress=advance,
        )
    finally:
        bar.close()
    totals = manifest["totals"]
    wall = totals["wall_s"]
    print(
        f"{manifest['episodes']} episodes, {totals['frames']} frames, "
        f"{totals['duration_s']:.0f} s of sim time, {totals['bytes'] / 1e6:.1f} MB in {wall:.1f} s "
        f"({60 * manifest['episodes'] / max(wall, 1e-9):.1f} episodes/min); "
        f"manifest: {Path(args.out) / MANIFEST}"
    )
    return 0


def add_data_parser(subparsers: Any) -> None:
    """Register the `data` command group (with `sim`) on an argparse subparsers object."""
    data = subparsers.add_parser("data", help="simulated robot episodes as ROS 2 MCAP bags")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sim = actions.add_parser(
        "sim",
        help="generate PyBullet pick-and-place episodes with per-frame ground truth",
        description=(
            "Generate scripted pick-and-place episodes (PyBullet, headless) as rosbag2 folders "
            "with MCAP storage: camera images, camera info, joint states, and per-frame "
            "ground-truth robot state and caption. See docs/data.md."
        ),
    )
    sim.add_argument("--out", type=Path, required=True, help="output folder (created)")
    sim.add_argument("--episodes", type=_positive_int, default=10, help="episodes to generate")
    sim.add_argument("--seed", type=_non_negative_int, default=0, help="base seed of the run")
    sim.add_argument(
        "--workers", type=_positive_int, default=1, help="processes (one pybullet client each)"
    )
    sim.add_argument("--size", type=int, default=160, help="square image size in pixels")
    sim.add_argument("--fps", type=float, default=10.0, help="camera frames per second")
    sim.add_argument(
        "--compressed",
        action="store_true",
        help="write JPEG sensor_msgs/CompressedImage on /camera/image_raw/compressed "
        "instead of raw rgb8 Image on /camera/image_raw (about 10x smaller)",
    )
    sim.add_argument("--robot", default="panda", choices=("panda",), help="robot arm")
    sim.add_argument(
        "--robot-mesh",
        default="collision",
        choices=("collision", "visual"),
        help="draw the arm with its light collision meshes (fast) or its detailed visual ones",
    )
    for flag, _, text, kind in RANGE_OPTIONS:
        sim.add_argument(flag, type=kind, nargs=2, metavar=("MIN", "MAX"), help=text)
    sim.add_argument("--shapes", nargs="+", metavar="SHAPE", help="object shapes to draw from")
    sim.add_argument("--colours", nargs="+", metavar="COLOUR", help="object colours to draw from")
    sim.add_argument("--max-duration", type=float, help="cut each episode at this sim time (s)")
    sim.add_argument("--overwrite", action="store_true", help="replace existing episode folders")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(handler=_cmd_sim)
