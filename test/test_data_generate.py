"""Tests of vljepa_ros.data.generate and vljepa_ros.data.commands: datasets of bags, manifest,
seeds, parallel workers and the `vljepa data sim` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from vljepa_ros.data import bag
from vljepa_ros.data.commands import add_data_parser
from vljepa_ros.data.generate import (
    MANIFEST,
    episode_name,
    episode_seed,
    generate_dataset,
)
from vljepa_ros.data.sim import SimConfig, generate_episode

TINY = SimConfig(image_size=24, cycles=(1, 1), distractors=(0, 1), idle_s=(0.2, 0.4))


def _stable(entry: dict[str, Any]) -> dict[str, Any]:
    """A manifest entry without the timing, which differs from run to run."""
    return {k: v for k, v in entry.items() if k != "wall_s"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Two tiny episodes generated in this process."""
    out = tmp_path_factory.mktemp("dataset")
    return out, generate_dataset(out, 2, seed=5, config=TINY, workers=1)


def test_episode_seeds_are_deterministic_and_distinct() -> None:
    """episode_seed is a pure function of (base seed, index) and differs across both."""
    seeds = {episode_seed(base, i) for base in range(4) for i in range(50)}
    assert len(seeds) == 200
    assert episode_seed(3, 7) == episode_seed(3, 7)


def test_dataset_has_one_bag_per_episode_and_a_manifest(
    dataset: tuple[Path, dict[str, Any]],
) -> None:
    """Each episode is a bag folder; manifest.json lists them with seeds, counts and sizes."""
    out, manifest = dataset
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert [item["name"] for item in manifest["items"]] == [episode_name(0), episode_name(1)]
    for item in manifest["items"]:
        folder = out / item["name"]
        assert (folder / "metadata.yaml").is_file()
        assert item["bytes"] == sum(f.stat().st_size for f in folder.iterdir())
        data = bag.read_episode(folder)
        assert len(data.frames) == item["frames"]
        assert {s: data.states.count(s) for s in item["label_counts"]} == item["label_counts"]
    assert manifest["totals"]["frames"] == sum(i["frames"] for i in manifest["items"])
    assert manifest["config"]["image_size"] == 24
    assert manifest["topics"]["image"] == bag.IMAGE_TOPIC


def test_manifest_seed_reproduces_the_episode(dataset: tuple[Path, dict[str, Any]]) -> None:
    """generate_episode(config, the manifest's seed) gives the episode in the bag."""
    _, manifest = dataset
    item = manifest["items"][1]
    assert item["seed"] == episode_seed(5, 1)
    episode = generate_episode(TINY, item["seed"])
    assert episode.label_counts() == item["label_counts"]
    assert len(episode.frames) == item["frames"]


def test_parallel_workers_write_the_same_episodes(
    dataset: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Two worker processes produce the same manifest entries as one process."""
    _, serial = dataset
    parallel = generate_dataset(tmp_path, 2, seed=5, config=TINY, workers=2)
    assert [_stable(e) for e in parallel["items"]] == [_stable(e) for e in serial["items"]]


def test_existing_episodes_are_kept_unless_overwrite(
    dataset: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A second run into the same folder fails; with overwrite it replaces the episodes."""
    out = tmp_path / "again"
    generate_dataset(out, 1, seed=1, config=TINY)
    with pytest.raises(FileExistsError, match="exist already"):
        generate_dataset(out, 1, seed=2, config=TINY)
    manifest = generate_dataset(out, 1, seed=2, config=TINY, overwrite=True)
    assert manifest["items"][0]["seed"] == episode_seed(2, 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"episodes": 0}, "episodes"), ({"workers": 0}, "workers"), ({"seed": -1}, "seed")],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, int], match: str) -> None:
    """Zero episodes or workers and negative seeds raise ValueError."""
    arguments: dict[str, Any] = {"episodes": 1, "seed": 0, "workers": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_dataset(tmp_path, config=TINY, **arguments)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vljepa")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    result: int = args.handler(args)
    return result


def test_cli_sim_writes_a_compressed_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`data sim` with options writes the episodes, the manifest and a one-line summary."""
    out = tmp_path / "cli"
    rc = _run(
        "data", "sim", "--out", str(out), "--episodes", "2", "--seed", "4", "--size", "32",
        "--compressed", "--cycles", "1", "1", "--distractors", "0", "0", "--max-duration", "4",
        "--quiet",
    )  # fmt: skip
    assert rc == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["episodes"] == 2
    assert manifest["compressed"] is True
    assert manifest["config"]["image_size"] == 32
    assert manifest["config"]["max_duration_s"] == 4
    assert all(item["duration_s"] <= 6 for item in manifest["items"])
    assert bag.read_episode(out / episode_name(0)).image_topic == bag.COMPRESSED_TOPIC
    assert "2 episodes" in capsys.readouterr().out


def test_cli_shifts_the_camera_and_objects(tmp_path: Path) -> None:
    """The range and list options reach the simulator: a held-out set with a shifted camera and
    other objects records cameras and objects inside the ranges asked for."""
    out = tmp_path / "shifted"
    rc = _run(
        "data", "sim", "--out", str(out), "--episodes", "2", "--seed", "9001", "--size", "32",
        "--cycles", "1", "1", "--distractors", "0", "1", "--max-duration", "3",
        "--azimuth", "90", "120", "--elevation", "62", "70", "--distance", "1.35", "1.5",
        "--fov", "35", "38", "--shapes", "brick", "--colours", "white", "black", "--quiet",
    )  # fmt: skip
    assert rc == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["config"]["elevation_deg"] == [62.0, 70.0]
    for item in manifest["items"]:
        camera = item["camera"]
        assert 90 <= camera["azimuth_deg"] <= 120
        assert 62 <= camera["elevation_deg"] <= 70
        assert 1.35 <= camera["distance_m"] <= 1.5
        assert 35 <= camera["fov_deg"] <= 38
        assert {o["shape"] for o in item["objects"]} == {"brick"}
        assert {o["colour"] for o in item["objects"]} <= {"white", "black"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cycles", "3", "1"], "SimConfig.cycles"),
        (["--fps", "7"], "SimConfig.fps"),
        (["--size", "4"], "SimConfig.image_size"),
        (["--elevation", "50", "20"], "SimConfig.elevation_deg"),
        (["--shapes", "pyramid"], "SimConfig.shapes"),
    ],
)
def test_cli_reports_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """An invalid simulator option exits with 2 and the config's message, writing nothing."""
    assert _run("data", "sim", "--out", str(tmp_path / "x"), "--quiet", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_refuses_to_overwrite(
    dataset: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """An output folder that holds the episodes already exits with 2 and says --overwrite."""
    out, _ = dataset
    assert _run("data", "sim", "--out", str(out), "--episodes", "1", "--quiet") == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["data"],
        ["data", "sim"],
        ["data", "sim", "--out", "x", "--episodes", "0"],
        ["data", "sim", "--out", "x", "--workers", "0"],
        ["data", "sim", "--out", "x", "--robot", "ur5"],
    ],
)
def test_cli_argument_errors_exit_with_usage(argv: list[str]) -> None:
    """A missing action or --out, a count below 1 or an unknown robot is an argparse error."""
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2
