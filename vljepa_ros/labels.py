"""Label files: `labels: {label: prompt}` in YAML, read the same way by the nodes, training and
evaluation (only PyYAML is imported here)."""

from __future__ import annotations

from pathlib import Path

import yaml

DEFAULT_LABELS_FILE = Path(__file__).resolve().parents[1] / "config" / "robot_states.yaml"


def read_labels_file(path: str | Path | None = None) -> dict[str, str]:
    """label -> prompt, in file order, from a YAML file holding exactly one key, `labels`
    (default: the package's config/robot_states.yaml, the seven robot states).

    Raises:
        ValueError: naming the file and the problem: unreadable, not YAML, another layout, no
            label, or an empty label or prompt.
    """
    path = Path(path) if path else DEFAULT_LABELS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"labels file {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"labels file {path} is not valid YAML: {exc}") from exc
    layout_ok = isinstance(data, dict) and set(data) == {"labels"}
    if not layout_ok or not isinstance(data["labels"], dict):
        raise ValueError(f"labels file {path} must hold exactly one key, labels: {{label: prompt}}")
    if not data["labels"]:
        raise ValueError(f"labels file {path}: labels is empty; give at least one label: prompt")
    labels: dict[str, str] = {}
    for label, prompt in data["labels"].items():
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"labels file {path}: label {label!r} must be a non-empty string")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"labels file {path}: label {label!r} needs a non-empty prompt")
        labels[label] = prompt
    return labels
