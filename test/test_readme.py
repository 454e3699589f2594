"""The README tells the truth about the commands and parameters that exist."""

from __future__ import annotations

import re

from ros_support import REPO

from vljepa_ros.cli import build_parser
from vljepa_ros.params import NODE_PARAMS

README = (REPO / "README.md").read_text()


def test_every_node_parameter_is_documented() -> None:
    """Each declared parameter of each node has a row in the README's parameter tables."""
    for node, specs in NODE_PARAMS.items():
        section = README[README.index(f"**{node}**") :]
        for spec in specs:
            assert f"| `{spec.name}` |" in section, (node, spec.name)


def test_quick_start_has_the_two_commands() -> None:
    """The fresh-machine quick start is the set-up + demo command and the test command."""
    assert "bash scripts/setup.sh && .venv/bin/vljepa demo" in README
    assert "bash scripts/test.sh" in README
    assert (
        "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
        or "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    )


def test_every_vljepa_command_in_the_readme_exists() -> None:
    """`vljepa <command>` mentioned in the README is a subcommand of the CLI."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    mentioned = set(re.findall(r"vljepa ([\w-]+)", README)) - {"demo/", "for"}
    mentioned = {m for m in mentioned if m.islower() and m not in {"ros", "is"}}
    missing = sorted(m for m in mentioned if m not in commands)
    assert not missing, missing
