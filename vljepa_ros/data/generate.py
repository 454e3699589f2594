"""Generate a set of simulated episodes as bags, in parallel, with a manifest.

Layout of an output folder:

    OUT/manifest.json          what was generated: config, seeds, per-episode summaries
    OUT/episode_00000/         one rosbag2 folder per episode (metadata.yaml + .mcap)
    OUT/episode_00001/ ...

Episode i of a run with base seed S gets the seed `episode_seed(S, i)`; `generate_episode(config,
that seed)` reproduces it exactly, whatever the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vljepa_ros.data import bag
from vljepa_ros.data.sim import SimConfig, generate_episode

MANIFEST = "manifest.json"


def episode_seed(base_seed: int, index: int) -> int:
    """The seed of episode `index` of a run seeded with `base_seed` (independent streams)."""
    state = np.random.SeedSequence([base_seed, index]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def episode_name(index: int) -> str:
    """Folder name of episode `index`."""
    return f"episode_{index:05d}"


def existing_episodes(out: str | Path, episodes: int) -> list[Path]:
    """The episode folders among the first `episodes` that exist under `out` already."""
    folders = (Path(out) / episode_name(i) for i in range(episodes))
    return [folder for folder in folders if folder.exists()]


@dataclass(frozen=True)
class _Job:
    index: int
    seed: int
    folder: str
    config: SimConfig
    compressed: bool


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _run_job(job: _Job) -> dict[str, Any]:
    """Simulate and write one episode (runs in a worker process); returns its manifest entry."""
    start = time.perf_counter()
    episode = generate_episode(job.config, job.seed)
    folder = bag.write_episode_bag(job.folder, episode, compressed=job.compressed)
    entry = {"name": Path(job.folder).name, "index": job.index, **episode.summary()}
    entry["bytes"] = _folder_bytes(folder)
    entry["wall_s"] = round(time.perf_counter() - start, 3)
    return entry


def generate_dataset(
    out: str | Path,
    episodes: int,
    seed: int = 0,
    config: SimConfig | None = None,
    workers: int = 1,
    compressed: bool = False,
    overwrite: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Generate `episodes` bags under `out` and write `out/manifest.json`; returns its content.

    `workers` > 1 runs that many processes, each with its own pybullet DIRECT client.
    `progress` is called with each finished episode's manifest entry (in completion order).

    Raises:
        ValueError: episodes < 1, workers < 1 or a negative seed.
        FileExistsError: an episode folder exists already and `overwrite` is False.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    config = config or SimConfig()
    out = Path(out)
    jobs = [
        _Job(i, episode_seed(seed, i), str(out / episode_name(i)), config, compressed)
        for i in range(episodes)
    ]
    existing = existing_episodes(out, episodes)
    if existing and not overwrite:
        raise FileExistsError(
            f"{len(existing)} episode folder(s) exist already, e.g. {existing[0]}; "
            "choose another output folder or overwrite them"
        )
    for folder in existing:
        shutil.rmtree(folder)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    entries: list[dict[str, Any]] = []
    if workers == 1:
        for job in jobs:
            entries.append(_run_job(job))
            if progress:
                progress(entries[-1])
    else:
        # spawn: a fresh interpreter per worker, no physics state inherited from the parent.
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, episodes)) as pool:
            for entry in pool.imap_unordered(_run_job, jobs):
                entries.append(entry)
                if progress:
                    progress(entry)
    entries.sort(key=lambda e: e["index"])
    manifest = {
        "generator": "vljepa_ros.data.sim (PyBullet, scripted pick-and-place)",
        "seed": seed,
        "episodes": len(entries),
        "workers": workers,
        "compressed": compressed,
        "config": asdict(config),
        "topics": {
            "image": bag.COMPRESSED_TOPIC if compressed else bag.IMAGE_TOPIC,
            "camera_info": bag.CAMERA_INFO_TOPIC,
            "joint_states": bag.JOINT_STATES_TOPIC,
            "state": bag.STATE_TOPIC,
            "caption": bag.CAPTION_TOPIC,
        },
        "totals": {
            "frames": sum(e["frames"] for e in entries),
            "duration_s": round(sum(e["duration_s"] for e in entries), 3),
            "bytes": sum(e["bytes"] for e in entries),
            "grasp_failures": sum(e["grasp_failures"] for e in entries),
            "label_counts": {
                state: sum(e["label_counts"][state] for e in entries)
                for state in entries[0]["label_counts"]
            },
            "wall_s": round(time.perf_counter() - start, 3),
        },
        "items": entries,
    }
    text = json.dumps(manifest, indent=1)
    (out / MANIFEST).write_text(text + "\n")
    result: dict[str, Any] = json.loads(text)  # what the file holds (tuples become lists)
    return result
