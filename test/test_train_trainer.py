"""The training loop on real bags with the real MiniLM: outputs, resume, DDP, Y-encoder delta."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ros_support import REPO, python_env
from torch import nn

from vljepa_ros.data import captions
from vljepa_ros.data.bag import write_episode_bag
from vljepa_ros.data.sim import SimConfig, generate_episode
from vljepa_ros.model import Preprocessor, VLJepa, VLJepaRuntime
from vljepa_ros.model.weights import read_file, read_tensors
from vljepa_ros.train.config import CONFIG_NAME, StageConfig, load_train_config, read_labels
from vljepa_ros.train.dataset import ClipSampler, load_episodes
from vljepa_ros.train.targets import AnswerMaker
from vljepa_ros.train.trainer import LOG_NAME, SUMMARY_NAME, TrainError, lr_at, train, validate

# A model smaller than --quick's, so that several runs fit in a few seconds each.
MICRO = [
    "model.x_encoder.hidden_size=48",
    "model.x_encoder.num_layers=1",
    "model.x_encoder.crop_size=32",
    "model.x_encoder.num_frames=2",
    "model.predictor.hidden_size=64",
    "model.predictor.head_dim=32",
    "model.predictor.intermediate_size=128",
    "model.y_decoder.hidden_size=32",
    "model.y_decoder.intermediate_size=64",
    "stage1.steps=3",
    "stage1.batch_size=4",
    "stage1.warmup_steps=1",
    "stage2.steps=3",
    "stage2.batch_size=4",
    "stage2.warmup_steps=1",
    "decoder.steps=2",
    "decoder.batch_size=4",
    "decoder.warmup_steps=0",
    "checkpoint_every=2",
    "log_every=1",
    "progress=false",
    "augment.shift_px=2",
]


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short real simulated episodes (rosbag2 MCAP folders)."""
    folder = tmp_path_factory.mktemp("train_bags")
    config = SimConfig(image_size=40, max_duration_s=8.0, cycles=(1, 1))
    for seed in (11, 12):
        write_episode_bag(folder / f"episode_{seed}", generate_episode(config, seed))
    return folder


def _config(bags: Path, out: Path, *extra: str):
    return load_train_config(
        "config/train/quick.yaml", [*MICRO, f"data.paths=[{bags}]", f"out={out}", *extra]
    )


def test_a_run_writes_model_log_resolved_config_and_summary(bags: Path, tmp_path: Path) -> None:
    """A run leaves a loadable OUT/model with its config and summary, a CSV row per step, and
    OUT/last; the model's embeddings are unit vectors."""
    out = tmp_path / "run"
    config = _config(bags, out)
    result = train(config)
    assert result.steps == config.total_steps == 8
    assert load_train_config(out / "model" / CONFIG_NAME) == config
    assert load_train_config(out / "last" / CONFIG_NAME) == config
    rows = list(csv.DictReader((out / LOG_NAME).open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert {r["stage"] for r in rows} == {"stage1", "stage2", "decoder"}
    assert (out / "model" / SUMMARY_NAME).is_file()
    runtime = VLJepaRuntime.load(out / "model")
    clip = torch.randint(0, 255, (2, 40, 40, 3), dtype=torch.uint8)
    assert abs(float(runtime.embed_clip(clip).norm()) - 1) < 1e-4


@pytest.mark.parametrize(
    "extra",
    [(), ("stage2.state_weight=1.0", "stage2.object_weight=1.0", "stage2.meaning_weight=1.0")],
    ids=["plain", "training-aids"],
)
def test_an_interrupted_run_resumes_to_the_same_weights(
    bags: Path, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    """Interrupted mid-stage-2 and resumed with --resume, a run ends with exactly the weights
    of an uninterrupted run (model, optimizer and the objective's state and object heads
    restored; the text-side meaning term on)."""
    straight = train(_config(bags, tmp_path / "straight", *extra))

    def interrupt(step: int, stage: str, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    config = _config(bags, tmp_path / "resumed", *extra)
    with pytest.raises(KeyboardInterrupt):
        train(config, on_step=interrupt)
    assert (tmp_path / "resumed" / "last").is_dir()
    assert (tmp_path / "resumed" / "last" / "objective.safetensors").is_file() == bool(extra)
    resumed = train(config, resume=True)
    assert resumed.steps == straight.steps
    a = read_file(straight.model_dir / "model.safetensors")
    b = read_file(resumed.model_dir / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_needs_a_checkpoint_and_the_same_config(bags: Path, tmp_path: Path) -> None:
    """--resume without a checkpoint, a new run over an old one, and a resume with a changed
    config are all refused with a reason."""
    out = tmp_path / "run"
    with pytest.raises(TrainError, match="no checkpoint"):
        train(_config(bags, out), resume=True)
    train(_config(bags, out, "decoder.steps=0"))
    with pytest.raises(TrainError, match="--resume"):
        train(_config(bags, out, "decoder.steps=0"))
    with pytest.raises(TrainError, match="decoder"):
        train(_config(bags, out, "decoder.steps=5"), resume=True)


def test_the_ddp_path_trains_in_a_process_group(bags: Path, tmp_path: Path) -> None:
    """With a (one-process, gloo) process group, training runs through DistributedDataParallel."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        result = train(_config(bags, tmp_path / "ddp", "decoder.steps=0"))
    finally:
        dist.destroy_process_group()
    assert result.summary["distributed"] is True
    assert (result.model_dir / "model.safetensors").is_file()


RUNNER = """
import argparse, sys
from vljepa_ros.train.commands import add_train_parser
parser = argparse.ArgumentParser()
add_train_parser(parser.add_subparsers(dest="command"))
args = parser.parse_args(["train", *sys.argv[1:]])
sys.exit(args.handler(args))
"""


def test_torchrun_trains_with_two_processes(bags: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2` runs `vljepa train` data-parallel (gloo on CPU): one log,
    one model, a summary that counts both processes."""
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    argv = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), "--quick"]
    argv += ["--data", str(bags), "--out", str(out), "--no-progress"]
    argv += [x for item in [*MICRO, "decoder.steps=0"] for x in ("--set", item)]
    env = {**python_env(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "model" / SUMMARY_NAME).read_text())
    assert summary["world_size"] == 2
    assert summary["distributed"] is True
    rows = list(csv.DictReader((out / LOG_NAME).open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))


def test_the_y_encoder_delta_holds_only_the_adapted_top_layer(bags: Path, tmp_path: Path) -> None:
    """With y_encoder_layers=1 the checkpoint stores MiniLM's top layer only, trained."""
    result = train(_config(bags, tmp_path / "run", "y_encoder_layers=1", "decoder.steps=0"))
    delta = read_file(result.model_dir / "y_encoder_delta.safetensors")
    assert delta
    assert all(k.startswith("y_encoder.backbone.encoder.layer.5.") for k in delta)
    runtime = VLJepaRuntime.load(result.model_dir)
    folder = runtime.model.y_encoder.folder
    names = [k.removeprefix("y_encoder.backbone.") for k in delta]
    base = read_tensors(folder, names)
    assert any(not torch.equal(delta["y_encoder.backbone." + n], base[n]) for n in names)


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 0, 0.5),
        ("constant", 1, 1.0),
        ("constant", 9, 1.0),
        ("cosine", 1, 1.0),
        ("cosine", 10, 0.1),
    ],
)
def test_learning_rate_warms_up_then_follows_the_schedule(
    schedule: str, step: int, expected: float
) -> None:
    """Linear warmup over warmup_steps, then constant, or cosine down to lr * min_lr_ratio."""
    stage = StageConfig(steps=10, lr=1.0, warmup_steps=2, schedule=schedule, min_lr_ratio=0.1)
    assert lr_at(stage, step) == pytest.approx(expected)


def test_validation_scores_the_objectives_heads_on_the_same_clips(
    bags: Path, tmp_path: Path
) -> None:
    """Known answer: a head that always says one class is right on exactly the share of the
    validation clips that have that class; a run with the training aids and validation data
    records the heads' accuracy beside the state accuracy in its summary."""
    config = _config(bags, tmp_path / "unit")
    labels = read_labels(config.data.labels_file)
    size, scale = config.model.x_encoder.crop_size, config.model.x_encoder.resize_scale
    episodes = load_episodes([bags], config.data, size, scale, tmp_path / "cache")
    sampler = ClipSampler(episodes, AnswerMaker(labels), config.model.x_encoder.num_frames, 0.0)
    clips = sampler.evenly_spaced(40)
    frames = [sampler.episodes[e].labels[i] for e, i in clips]
    model = VLJepa(config.model)

    def always(index: int, classes: int) -> nn.Linear:
        head = nn.Linear(config.model.x_encoder.hidden_size, classes)
        nn.init.zeros_(head.weight)
        with torch.no_grad():
            head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(index), classes).float())
        return head

    heads = {"state": always(1, len(labels)), "colour": always(0, len(captions.COLOURS))}
    state_acc, head_acc = validate(
        model, sampler, clips, labels, Preprocessor(config.model.x_encoder), heads
    )
    assert 0.0 <= state_acc <= 1.0
    second = list(labels)[1]
    assert head_acc["state"] == pytest.approx(sum(f.state == second for f in frames) / len(frames))
    with_object = [f for f in frames if f.has_object]
    first_colour = next(iter(captions.COLOURS))
    expected = sum(f.colour == first_colour for f in with_object) / len(with_object)
    assert head_acc["colour"] == pytest.approx(expected)
    assert set(head_acc) == {"state", "colour"}
    assert validate(model, sampler, clips, labels, Preprocessor(config.model.x_encoder))[1] == {}

    run = _config(
        bags,
        tmp_path / "run",
        f"data.val_paths=[{bags}]",
        "val_clips=16",
        "val_every=2",
        "stage2.state_weight=1.0",
        "stage2.object_weight=1.0",
    )
    summary = json.loads((train(run).model_dir / SUMMARY_NAME).read_text())
    steps = [row["step"] for row in summary["val_state_accuracy"]]
    assert [row["step"] for row in summary["val_head_accuracy"]] == [s for s in steps if s > 3]
    for row in summary["val_head_accuracy"]:
        assert set(row) == {"step", "state", "colour", "shape"}
        assert all(0.0 <= row[k] <= 1.0 for k in ("state", "colour", "shape"))
