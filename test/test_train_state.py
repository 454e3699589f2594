"""Resume checkpoints: optimizer state through safetensors + JSON, atomic replacement."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vljepa_ros.model import CheckpointError, VLJepaRuntime
from vljepa_ros.train.config import TrainConfig
from vljepa_ros.train.objective import ContrastiveStep
from vljepa_ros.train.state import (
    OBJECTIVE_NAME,
    OPTIMIZER_NAME,
    STATE_NAME,
    Progress,
    find_state,
    load_objective,
    load_optimizer,
    objective_tensors,
    optimizer_state,
    optimizer_tensors,
    read_progress,
    save_state,
)


def _stepped_adamw() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(
        [
            {"params": net[0].parameters(), "lr": 1e-2, "lr_scale": 1.0},
            {"params": net[1].parameters(), "lr": 1e-3, "lr_scale": 0.1},
        ]
    )
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).square().sum().backward()
        opt.step()
    return net, opt


def test_optimizer_state_round_trips_through_tensors_and_json() -> None:
    """Splitting an AdamW state into tensors + plain data and back restores it exactly."""
    net, opt = _stepped_adamw()
    tensors, plain = optimizer_tensors(opt)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    fresh = torch.optim.AdamW([{"params": net[0].parameters()}, {"params": net[1].parameters()}])
    fresh.load_state_dict(optimizer_state(tensors, plain))
    for a, b in zip(opt.state.values(), fresh.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["step"], b["step"])
    assert fresh.param_groups[1]["lr_scale"] == 0.1


def test_save_state_writes_a_loadable_checkpoint_and_replaces_it(
    micro_model, tmp_path: Path
) -> None:
    """A resume checkpoint is a model checkpoint plus state; saving again swaps it atomically."""
    _, opt = _stepped_adamw()
    directory = tmp_path / "last"
    save_state(directory, micro_model, opt, Progress(3, "stage1", 1.5), TrainConfig())
    save_state(directory, micro_model, opt, Progress(5, "stage2", 2.5), TrainConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert (directory / OPTIMIZER_NAME).is_file()
    progress, plain = read_progress(directory)
    assert progress == Progress(5, "stage2", 2.5)
    _, fresh = _stepped_adamw()
    load_optimizer(directory, fresh, plain)
    assert VLJepaRuntime.load(directory).embed_dim == micro_model.cfg.embed_dim


def test_an_interrupted_swap_falls_back_to_the_previous_checkpoint(
    micro_model, tmp_path: Path
) -> None:
    """If only last.old survives a crash mid-swap, find_state returns it."""
    directory = tmp_path / "last"
    save_state(directory, micro_model, None, Progress(2, "stage1", 0.0), TrainConfig())
    directory.rename(tmp_path / "last.old")
    assert find_state(directory) == tmp_path / "last.old"
    assert find_state(tmp_path / "other") is None


def test_corrupt_state_is_a_checkpoint_error(micro_model, tmp_path: Path) -> None:
    """A damaged trainer_state.json is reported, naming the file."""
    directory = tmp_path / "last"
    save_state(directory, micro_model, None, Progress(2, "stage1", 0.0), TrainConfig())
    (directory / STATE_NAME).write_text("{")
    with pytest.raises(CheckpointError, match=STATE_NAME):
        read_progress(directory)


def test_the_objectives_state_head_round_trips_and_a_missing_one_is_an_error(
    micro_model, tmp_path: Path
) -> None:
    """The objective's own weights (the state head, not the model's) are saved beside the
    model and restored on resume; resuming a run that saved none into one with a head fails
    with the file's name, and an objective without own weights needs nothing."""
    torch.manual_seed(0)
    trained = ContrastiveStep(micro_model, state_classes=7)
    tensors = objective_tensors(trained)
    assert sorted(tensors) == ["state_head.bias", "state_head.weight"]
    directory = tmp_path / "last"
    save_state(directory, micro_model, None, Progress(4, "stage2", 1.0), TrainConfig(), tensors)
    fresh = ContrastiveStep(micro_model, state_classes=7)
    assert not torch.equal(fresh.state_head.weight, trained.state_head.weight)
    load_objective(directory, fresh)
    assert torch.equal(fresh.state_head.weight, trained.state_head.weight)
    load_objective(directory, ContrastiveStep(micro_model))  # no head: nothing to restore
    (directory / OBJECTIVE_NAME).unlink()
    with pytest.raises(CheckpointError, match=OBJECTIVE_NAME):
        load_objective(directory, fresh)


def test_the_decoder_stage_keeps_the_heads_of_stage_2(micro_model, tmp_path: Path) -> None:
    """A checkpoint of a stage whose objective has no weights of its own (the decoder stage)
    carries the previous checkpoint's objective file over, so stage 2's heads can be read after
    the run; a new stage-2 checkpoint replaces them."""
    torch.manual_seed(0)
    trained = ContrastiveStep(micro_model, state_classes=7)
    directory = tmp_path / "last"
    tensors = objective_tensors(trained)
    save_state(directory, micro_model, None, Progress(4, "stage2", 1.0), TrainConfig(), tensors)
    save_state(directory, micro_model, None, Progress(6, "decoder", 2.0), TrainConfig(), {})
    save_state(directory, micro_model, None, Progress(8, "decoder", 3.0), TrainConfig())
    fresh = ContrastiveStep(micro_model, state_classes=7)
    load_objective(directory, fresh)
    assert torch.equal(fresh.state_head.weight, trained.state_head.weight)
    other = {k: v + 1 for k, v in tensors.items()}
    save_state(directory, micro_model, None, Progress(9, "stage2", 4.0), TrainConfig(), other)
    load_objective(directory, fresh)
    assert torch.equal(fresh.state_head.weight, other["state_head.weight"])
