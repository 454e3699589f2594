"""Label files: `labels: {label: prompt}` in YAML, optionally with `transitions: {from: {to:
rate}}` (state changes per second) and `duration_shapes: {label: k}` (phases of each state's
duration), the state tracker's transition model; read the same way by the nodes, training and
evaluation (only PyYAML is imported here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_LABELS_FILE = Path(__file__).resolve().parents[1] / "config" / "robot_states.yaml"


@dataclass(frozen=True)
class LabelSet:
    """What a labels file holds."""

    labels: dict[str, str]  # label -> prompt, in file order
    transitions: tuple[tuple[str, str, float], ...] = ()  # (from, to, changes per second)
    duration_shapes: tuple[tuple[str, int], ...] = ()  # (label, phases)


def read_labels_file(path: str | Path | None = None) -> dict[str, str]:
    """label -> prompt, in file order, from a labels file (default: the package's
    config/robot_states.yaml, the seven robot states); see read_label_set.

    Raises:
        ValueError: as read_label_set.
    """
    return read_label_set(path).labels


def read_label_set(path: str | Path | None = None) -> LabelSet:
    """The prompts and the transition model of a YAML file holding `labels` and optionally
    `transitions` and `duration_shapes` (which needs `transitions`).

    Raises:
        ValueError: naming the file and the problem: unreadable, not YAML, another layout, no
            label, an empty label or prompt, or a malformed `transitions` or `duration_shapes`.
    """
    path = Path(path) if path else DEFAULT_LABELS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"labels file {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"labels file {path} is not valid YAML: {exc}") from exc
    keys = {"labels", "transitions", "duration_shapes"}
    layout_ok = isinstance(data, dict) and "labels" in data and set(data) <= keys
    if not layout_ok or not isinstance(data["labels"], dict):
        raise ValueError(
            f"labels file {path} must hold labels: {{label: prompt}} and optionally "
            "transitions: {from: {to: rate}} and duration_shapes: {label: phases}, nothing else"
        )
    if not data["labels"]:
        raise ValueError(f"labels file {path}: labels is empty; give at least one label: prompt")
    labels: dict[str, str] = {}
    for label, prompt in data["labels"].items():
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"labels file {path}: label {label!r} must be a non-empty string")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"labels file {path}: label {label!r} needs a non-empty prompt")
        labels[label] = prompt
    transitions = _transitions(path, data.get("transitions") or {}, labels)
    shapes = _shapes(path, data.get("duration_shapes") or {}, labels)
    if shapes and not transitions:
        raise ValueError(f"labels file {path}: duration_shapes need transitions")
    return LabelSet(labels, transitions, shapes)


def _shapes(path: Path, section: object, labels: dict[str, str]) -> tuple[tuple[str, int], ...]:
    if not isinstance(section, dict):
        raise ValueError(f"labels file {path}: duration_shapes must be {{label: phases}}")
    for label, shape in section.items():
        if label not in labels:
            raise ValueError(
                f"labels file {path}: duration_shapes names {label!r}, which is not one of its "
                "labels"
            )
        if isinstance(shape, bool) or not isinstance(shape, int) or not 1 <= shape <= 64:
            raise ValueError(
                f"labels file {path}: duration shape of {label!r} must be a whole number of "
                f"phases in 1..64, got {shape!r}"
            )
    return tuple((label, shape) for label, shape in section.items())


def _transitions(
    path: Path, section: object, labels: dict[str, str]
) -> tuple[tuple[str, str, float], ...]:
    if not isinstance(section, dict):
        raise ValueError(f"labels file {path}: transitions must be {{from: {{to: rate}}}}")
    out = []
    for source, targets in section.items():
        if not isinstance(targets, dict):
            raise ValueError(f"labels file {path}: transitions of {source!r} must be {{to: rate}}")
        for target, rate in targets.items():
            for name in (source, target):
                if name not in labels:
                    raise ValueError(
                        f"labels file {path}: transition {source} -> {target} names "
                        f"{name!r}, which is not one of its labels"
                    )
            if source == target:
                raise ValueError(
                    f"labels file {path}: transition {source} -> {target} goes from a label to "
                    "itself; list only changes"
                )
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1e6:
                raise ValueError(
                    f"labels file {path}: transition {source} -> {target} needs a rate >= 0 "
                    f"(changes per second), got {rate!r}"
                )
            out.append((source, target, float(rate)))
    return tuple(out)
