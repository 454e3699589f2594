"""Resume checkpoints: the model checkpoint plus optimizer state and progress, never pickled.

A resume checkpoint is a model checkpoint directory (`model.save_checkpoint`: loadable by
`VLJepaRuntime.load`) with three more files:

    train_config.yaml        the resolved TrainConfig of the run
    optimizer.safetensors    the optimizer's per-parameter tensors, keyed "<index>.<name>"
    objective.safetensors    the training objective's own weights, when it has any
                             (objective.ContrastiveStep.state_head)
    trainer_state.json       step, stage, elapsed time, the optimizer's param groups

The random state needs no saving: every step draws from generators seeded by (seed, rank,
step), so a resumed run sees the same batches as an uninterrupted one. A checkpoint is written
to `<dir>.tmp` and swapped in with renames, so an interruption while writing leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vljepa_ros.model import CheckpointError, VLJepa, save_checkpoint
from vljepa_ros.model.weights import read_file, write_file
from vljepa_ros.train.config import CONFIG_NAME, TrainConfig

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
OBJECTIVE_NAME = "objective.safetensors"
STATE_VERSION = 1


@dataclass(frozen=True)
class Progress:
    """Where a run is: global steps done, the stage they belong to, training seconds so far."""

    step: int
    stage: str
    elapsed_s: float


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    """Split an optimizer state dict into tensors (for safetensors) and plain JSON data."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], plain: Any) -> dict[str, Any]:
    """Inverse of `optimizer_tensors`: a state dict for `Optimizer.load_state_dict`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, entry in plain["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": plain["param_groups"]}


def objective_tensors(objective: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a training objective holds beside the model it wraps (its `model.*`)."""
    return {
        name: value.detach()
        for name, value in objective.state_dict().items()
        if not name.startswith("model.")
    }


def save_state(
    directory: Path,
    model: VLJepa,
    optimizer: torch.optim.Optimizer | None,
    progress: Progress,
    config: TrainConfig,
    objective: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a resume checkpoint to `directory`, replacing any previous one atomically;
    `objective`: the objective's own tensors (`objective_tensors`), if any. A stage whose
    objective has none (the decoder stage) keeps the previous checkpoint's, so the heads of
    stage 2 can still be read after the run."""
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp)
    config.to_yaml(tmp / CONFIG_NAME)
    plain: Any = None
    if optimizer is not None:
        tensors, plain = optimizer_tensors(optimizer)
        write_file(tensors, tmp / OPTIMIZER_NAME)
    if objective:
        write_file(objective, tmp / OBJECTIVE_NAME)
    elif (directory / OBJECTIVE_NAME).is_file():
        shutil.copy2(directory / OBJECTIVE_NAME, tmp / OBJECTIVE_NAME)
    state = {
        "version": STATE_VERSION,
        "step": progress.step,
        "stage": progress.stage,
        "elapsed_s": progress.elapsed_s,
        "optimizer": plain,
    }
    (tmp / STATE_NAME).write_text(json.dumps(state, indent=1) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def find_state(directory: Path) -> Path | None:
    """The resume checkpoint at `directory`, or the previous one if a swap was interrupted."""
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / STATE_NAME).is_file():
            return candidate
    return None


def read_progress(directory: Path) -> tuple[Progress, Any]:
    """(progress, the optimizer's JSON part) of a resume checkpoint.

    Raises:
        CheckpointError: missing or corrupt trainer_state.json, or another format version.
    """
    path = directory / STATE_NAME
    try:
        data = json.loads(path.read_text())
        if data["version"] != STATE_VERSION:
            raise CheckpointError(f"{path} has format version {data['version']}")
        progress = Progress(int(data["step"]), str(data["stage"]), float(data["elapsed_s"]))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot read resume state {path}: {exc}") from exc
    return progress, data["optimizer"]


def load_optimizer(directory: Path, optimizer: torch.optim.Optimizer, plain: Any) -> None:
    """Restore an optimizer saved by `save_state` (it must hold the same parameters).

    Raises:
        CheckpointError: no optimizer state saved, or it does not fit this optimizer.
    """
    if plain is None:
        raise CheckpointError(f"{directory} holds no optimizer state")
    tensors = read_file(directory / OPTIMIZER_NAME) if (directory / OPTIMIZER_NAME).exists() else {}
    try:
        optimizer.load_state_dict(optimizer_state(tensors, plain))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer state in {directory} does not fit: {exc}") from exc


def load_objective(directory: Path, objective: nn.Module) -> None:
    """Restore the objective's own tensors saved by `save_state` (nothing to do if it has none).

    Raises:
        CheckpointError: they were not saved, or do not fit this objective.
    """
    expected = objective_tensors(objective)
    if not expected:
        return
    path = directory / OBJECTIVE_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run being resumed had no {sorted(expected)}")
    tensors = read_file(path)
    if set(tensors) != set(expected) or any(
        tensors[k].shape != v.shape for k, v in expected.items()
    ):
        raise CheckpointError(f"{path} does not fit this objective ({sorted(expected)})")
    objective.load_state_dict(tensors, strict=False)
