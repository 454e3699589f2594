"""The `vljepa` console script installed by scripts/setup.sh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ros_support import REPO

VLJEPA = Path(sys.prefix) / "bin" / "vljepa"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VLJEPA), *args], capture_output=True, text=True, cwd="/", timeout=120
    )


def test_help_lists_every_subcommand() -> None:
    """`vljepa --help` names each subcommand the parser defines."""
    from vljepa_ros.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert commands, "the parser defines no subcommand"
    for name in commands:
        assert name in result.stdout, name


def test_info_sees_ros_and_the_generated_messages() -> None:
    """`vljepa info`, run from outside the checkout, imports rclpy and vljepa_ros.msg."""
    result = _run("info")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert " ok" in lines["rclpy"], result.stdout
    assert " ok" in lines["vljepa_ros.msg"], result.stdout


def test_unknown_subcommand_is_an_error_with_usage() -> None:
    """A typo in the subcommand exits non-zero and says which choices exist."""
    result = _run("trian")
    assert result.returncode == 2
    assert "invalid choice: 'trian'" in result.stderr


def test_the_command_runs_the_checkout_sources() -> None:
    """The editable install makes `vljepa` use this checkout's modules, not a stale copy."""
    result = subprocess.run(
        [sys.executable, "-c", "import vljepa_ros.cli as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == (REPO / "vljepa_ros" / "cli.py").resolve()
