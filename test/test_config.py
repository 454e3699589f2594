"""Configuration files shipped in config/ load with safe YAML and say what the design says."""

from __future__ import annotations

import yaml
from ros_support import REPO

from vljepa_ros.data.captions import STATES as CANONICAL_STATES  # design.md's seven states


def test_robot_states_file_lists_the_canonical_states_in_order() -> None:
    """robot_states.yaml holds exactly design.md's seven states, each with its own prompt,
    and the state tracker's transition model over them."""
    data = yaml.safe_load((REPO / "config" / "robot_states.yaml").read_text())
    assert list(data) == ["labels", "transitions", "duration_shapes"]
    labels = data["labels"]
    assert list(labels) == list(CANONICAL_STATES)
    prompts = list(labels.values())
    assert all(isinstance(p, str) and len(p.split()) >= 5 for p in prompts), prompts
    assert len(set(prompts)) == len(prompts), "two states share a prompt"
