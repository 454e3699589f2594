"""`vljepa train`: the parser, fast import, and the real --quick run end to end."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_support import REPO, python_env

from vljepa_ros.data.bag import read_episode
from vljepa_ros.model import VLJepaRuntime
from vljepa_ros.train.commands import add_train_parser
from vljepa_ros.train.config import CONFIG_NAME, load_train_config, read_labels
from vljepa_ros.train.targets import frame_objects
from vljepa_ros.train.trainer import LOG_NAME


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vljepa")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(*argv: str) -> int:
    args = _parser().parse_args(["train", *argv])
    return int(args.handler(args))


def test_importing_the_command_does_not_import_torch() -> None:
    """commands.py keeps `vljepa --help` fast: importing it loads neither torch nor the model."""
    code = (
        "import sys, vljepa_ros.train.commands\n"
        "assert 'torch' not in sys.modules and 'vljepa_ros.model' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=python_env(), cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_parser_reads_every_option() -> None:
    """--data, --val-data, --out, --resume and repeated --set reach the handler's namespace."""
    argv = "train --data a b --val-data c --out o --resume --set seed=1 --set stage1.steps=2"
    args = _parser().parse_args(argv.split())
    assert args.data == [Path("a"), Path("b")]
    assert args.val_data == [Path("c")]
    assert args.out == Path("o")
    assert args.resume
    assert args.set == ["seed=1", "stage1.steps=2"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--quick", "--config", "config/train/default.yaml"], "exclude"),
        (["--quick", "--set", "stage1.stepz=3"], "stage1.stepz"),
        (["--quick", "--data", "/no/such/bag"], "does not exist"),
    ],
)
def test_bad_invocations_exit_2_with_a_reason(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Conflicting options, unknown config keys and missing data exit 2 and say why."""
    assert _run(*argv, "--out", str(tmp_path / "out"), "--no-progress") == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`vljepa train --quick` as shipped: generates two episodes, trains, writes OUT/model."""
    out = tmp_path_factory.mktemp("quick") / "run"
    assert _run("--quick", "--out", str(out), "--no-progress") == 0
    return out


def _losses(out: Path) -> dict[str, list[float]]:
    losses: dict[str, list[float]] = {}
    for row in csv.DictReader((out / LOG_NAME).open()):
        losses.setdefault(row["stage"], []).append(float(row["loss"]))
    return losses


@pytest.mark.parametrize("stage", ["stage1", "stage2", "decoder"])
def test_quick_training_lowers_the_loss_of_every_stage(quick_run: Path, stage: str) -> None:
    """Over each stage of --quick, the mean loss of the last five steps is below the first five."""
    losses = _losses(quick_run)[stage]
    assert len(losses) >= 10
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_quick_checkpoint_loads_and_classifies(quick_run: Path) -> None:
    """The written checkpoint loads with VLJepaRuntime, scores every label prompt for a clip,
    and answers 'what object is involved?' correctly on most clips of its episodes."""
    runtime = VLJepaRuntime.load(quick_run / "model")
    query = load_train_config(quick_run / "model" / CONFIG_NAME).queries.object
    labels = read_labels("config/robot_states.yaml")
    prompts = list(labels.values())
    episodes = [read_episode(p) for p in sorted((quick_run / "sim_data").glob("episode_*"))]
    frames = runtime.cfg.x_encoder.num_frames
    objects = sorted({o for ep in episodes for o in frame_objects(ep.captions) if o})
    candidates = [f"the {colour} {shape}" for colour, shape in objects]
    correct = total = 0
    for episode in episodes:
        truth = frame_objects(episode.captions)
        for end in range(frames, len(episode.frames), 8):
            clip = episode.frames[end - frames + 1 : end + 1]
            choice = runtime.classify(clip, prompts)
            assert choice.scores.shape == (len(prompts),)
            assert choice.text in prompts
            answer = runtime.answer(clip, query, candidates)
            correct += answer.text == "the {} {}".format(*truth[end])
            total += 1
    assert len(candidates) >= 2
    assert correct / total >= 0.8
    assert isinstance(runtime.decode(runtime.embed_clip(clip)), str)
