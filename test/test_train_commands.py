"""`vljepa train`: the parser, fast import, and the real --quick run end to end."""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ros_support import REPO, python_env

from vljepa_ros.data.bag import read_episode
from vljepa_ros.model import VLJepaRuntime
from vljepa_ros.model.checkpoint import read_answer_bank
from vljepa_ros.model.grounding import BANK_INFO_NAME, BANK_NAME
from vljepa_ros.train.commands import add_answer_bank_parser, add_train_parser
from vljepa_ros.train.config import CONFIG_NAME, load_train_config, read_labels
from vljepa_ros.train.targets import frame_objects
from vljepa_ros.train.trainer import LOG_NAME


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vljepa")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_answer_bank_parser(sub)
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


def _bank(*argv: str) -> int:
    args = _parser().parse_args(["answer-bank", *argv])
    return int(args.handler(args))


def test_quick_run_writes_the_answer_bank_that_answer_bank_rebuilds(
    quick_run: Path, tmp_path: Path
) -> None:
    """`vljepa train` leaves an answer bank for the default query holding the label prompts
    and the caption paraphrases; `vljepa answer-bank` writes the same one again from the run's
    bags, whether it reads them or the run's frame cache."""
    model = quick_run / "model"
    runtime = VLJepaRuntime.load(model)
    bank = runtime.answer_bank
    assert bank is not None
    assert bank.query == runtime.cfg.default_query
    labels = read_labels("config/robot_states.yaml")
    texts = set(bank.texts)
    states = {read_episode(p).states[-1] for p in (quick_run / "sim_data").glob("episode_*")}
    assert {labels[s] for s in states if s} <= texts
    assert any("the robot" in t and t not in labels.values() for t in texts)
    for cache in ([], ["--cache", str(quick_run / "cache")]):
        copy = tmp_path / f"copy{len(cache)}"
        shutil.copytree(model, copy)
        (copy / BANK_NAME).unlink()
        (copy / BANK_INFO_NAME).unlink()
        assert _bank("--checkpoint", str(copy), "--data", str(quick_run / "sim_data"), *cache) == 0
        again = read_answer_bank(copy, runtime.embed_dim)
        assert again is not None
        assert again.texts == bank.texts
        assert again.neighbours == bank.neighbours
        assert torch.allclose(again.embeddings, bank.embeddings, atol=1e-3)


def test_answer_bank_needs_the_training_config(
    quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "no_config"
    shutil.copytree(quick_run / "model", copy)
    (copy / CONFIG_NAME).unlink()
    assert _bank("--checkpoint", str(copy), "--data", str(quick_run / "sim_data")) == 2
    assert f"{copy / CONFIG_NAME} is missing" in capsys.readouterr().err
