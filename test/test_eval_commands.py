"""The `vljepa eval` and `vljepa tune-tracker` commands: options, exit codes and what they
write."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vljepa_ros.labels import read_label_set, read_labels_file
from vljepa_ros.train.eval_commands import add_eval_parser, add_tune_parser


def parse(*argv: str, command: str = "eval") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vljepa")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    add_tune_parser(subparsers)
    return parser.parse_args([command, *argv])


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two short simulated episodes (48 px, about 6 s each)."""
    from vljepa_ros.data.bag import write_episode_bag
    from vljepa_ros.data.sim import SimConfig, generate_episode

    folder = tmp_path_factory.mktemp("bags")
    config = SimConfig(image_size=48, max_duration_s=6.0, cycles=(1, 1), idle_s=(0.5, 1.0))
    for k in range(2):
        write_episode_bag(folder / f"episode_{k:05d}", generate_episode(config, 700 + k))
    return folder


def test_defaults_follow_the_nodes() -> None:
    """Defaults: the shipped checkpoint, the model's query, 10 Hz steps, 100 retrieval clips."""
    args = parse("--data", "d", "--out", "o")
    assert args.checkpoint == ""
    assert args.query is None
    assert (args.step_hz, args.sample_hz) == (10.0, 10.0)
    assert args.retrieval_clips == 100
    assert args.max_text_length == 32
    assert args.labels is None
    assert args.lag_steps is None  # the node's default
    assert not args.quick


@pytest.mark.parametrize(
    "argv",
    [
        ("--out", "o"),
        ("--data", "d"),
        ("--data", "d", "--out", "o", "--episodes", "0"),
        ("--data", "d", "--out", "o", "--step-hz", "-1"),
        ("--data", "d", "--out", "o", "--lag-steps", "-1"),
    ],
)
def test_bad_options_exit(argv: tuple[str, ...]) -> None:
    """Missing --data/--out and non-positive counts or rates are usage errors."""
    with pytest.raises(SystemExit):
        parse(*argv)


def test_module_does_not_import_torch() -> None:
    """Registering the command imports argparse only, so `vljepa --help` stays fast."""
    code = (
        "import sys, vljepa_ros.train.eval_commands as m; "
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_eval_writes_the_report(micro_checkpoint: Path, bags: Path, tmp_path: Path, capsys) -> None:
    """--quick over a folder of bags: exit 0, report.md, metrics.json and every plot."""
    out = tmp_path / "report"
    args = parse(
        "--checkpoint", str(micro_checkpoint), "--data", str(bags), "--out", str(out),
        "--quick", "--max-text-length", "4", "--retrieval-clips", "6", "--quiet",
        "--baseline-checkpoint", str(micro_checkpoint),
    )  # fmt: skip
    assert args.handler(args) == 0
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "metrics.json", "confusion.png", "embedding_map.png"} <= files
    assert {"selective_decoding.png", "timeline_episode_00000.png"} <= files
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["episodes"] == ["episode_00000", "episode_00001"]
    assert metrics["retrieval"]["clips"] == 6
    assert metrics["model"]["baseline"]["checkpoint"] == str(micro_checkpoint)
    assert metrics["model"]["baseline"]["clip_frames"] == 4
    text = (out / "report.md").read_text()
    assert "## Selective decoding" in text
    assert "| method | setting | decodes/min | decoder CPU s/min | decoder wall s/min |" in text
    printed = capsys.readouterr().out
    accuracy = metrics["state"]["stabilised"]["accuracy"]
    assert f"stabilised accuracy: {100 * accuracy:.1f}% (target >= 90.0%)" in printed
    assert "nan" not in printed
    assert f"report: {out / 'report.md'}" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--data", "{empty}"), "no rosbag2 folder"),
        (("--data", "{bags}", "--labels", "{missing}"), "cannot be read"),
        (("--data", "{bags}", "--checkpoint", "{missing}"), ""),
        (("--data", "{bags}", "--baseline-checkpoint", "{missing}"), "missing"),
    ],
)
def test_eval_bad_input_exits_2(
    extra: tuple[str, ...], message: str, bags: Path, tmp_path: Path, capsys
) -> None:
    """No bags, an unreadable labels file or a missing checkpoint: exit 2 with a message."""
    names = {"empty": tmp_path, "bags": bags, "missing": tmp_path / "missing"}
    argv = [a.format(**names) for a in extra]
    args = parse(*argv, "--out", str(tmp_path / "out"), "--quiet")
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vljepa eval: ")
    assert message in err


def test_tune_tracker_writes_a_parameter_file(
    micro_checkpoint: Path, bags: Path, tmp_path: Path, capsys
) -> None:
    """Over a folder of bags: exit 0, the five best settings printed, and a parameter file the
    strict loader accepts holding the best setting and the lag it was tuned with."""
    from vljepa_ros.params import load_params_file

    out = tmp_path / "tracker.yaml"
    args = parse(
        "--checkpoint", str(micro_checkpoint), "--data", str(bags), "--out", str(out), "--quiet",
        "--lag-steps", "2", command="tune-tracker",
    )  # fmt: skip
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "current defaults" in printed
    assert "best 5" in printed
    values = load_params_file(out)["perception_node"]
    assert 0.0 <= values["exit_threshold"] <= values["enter_threshold"] <= 1.0
    assert values["lag_steps"] == 2
    assert "stabilised accuracy" in out.read_text()
    # the counted transition rates go into a labels file that the parameter file names
    labels_file = tmp_path / "tracker_labels.yaml"
    assert f"wrote {labels_file} (label prompts, 42 transition rates, " in printed
    assert values["labels_file"] == str(labels_file.resolve())
    label_set = read_label_set(labels_file)
    labels, transitions = label_set.labels, label_set.transitions
    assert labels == read_labels_file(None)
    assert len(transitions) == len(labels) * (len(labels) - 1)
    assert all(rate > 0 for _, _, rate in transitions)
    reaching = {target: rate for source, target, rate in transitions if source == "reaching"}
    assert max(reaching, key=reaching.__getitem__) == "grasping"  # what the episodes do


def test_tune_tracker_without_transitions_names_a_labels_file_without_rates(
    micro_checkpoint: Path, bags: Path, tmp_path: Path
) -> None:
    """--no-transitions: tuned without a transition model, and the labels file the parameters
    name has none either (the default file's rates would not match the tuning)."""
    from vljepa_ros.params import load_params_file, pipeline_config

    out = tmp_path / "tracker.yaml"
    args = parse(
        "--checkpoint", str(micro_checkpoint), "--data", str(bags), "--out", str(out), "--quiet",
        "--no-transitions", "--episodes", "1", command="tune-tracker",
    )  # fmt: skip
    assert args.handler(args) == 0
    values = load_params_file(out)["perception_node"]
    assert values["labels_file"] == str((tmp_path / "tracker_labels.yaml").resolve())
    assert read_label_set(values["labels_file"]).transitions == ()
    assert pipeline_config(values, "q").tracker.transitions == ()


def test_tune_tracker_bad_input_exits_2(tmp_path: Path, capsys) -> None:
    """A folder without bags: exit 2 naming the problem."""
    args = parse("--data", str(tmp_path), "--out", str(tmp_path / "t.yaml"), "--quiet",
                 command="tune-tracker")  # fmt: skip
    assert args.handler(args) == 2
    assert capsys.readouterr().err.startswith("vljepa tune-tracker: no rosbag2 folder")
