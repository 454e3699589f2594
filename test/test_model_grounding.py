"""Label prompts grounded in a checkpoint's answer bank (vljepa_ros.model.grounding): the
arithmetic on hand-made vectors, the files in a real checkpoint, and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vljepa_ros.model import CheckpointError, VLJepa, VLJepaRuntime, save_checkpoint
from vljepa_ros.model.checkpoint import DELTA_NAME, read_answer_bank, write_answer_bank
from vljepa_ros.model.grounding import BANK_INFO_NAME, BANK_NAME, AnswerBank, neighbours_for

QUERY = "what now?"
TEXTS = ["the arm waits", "the arm grabs the cup", "the arm lifts the cup", "the arm rests"]


def unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def bank_of(embeddings: torch.Tensor, neighbours: int) -> AnswerBank:
    texts = tuple(f"answer {i}" for i in range(len(embeddings)))
    return AnswerBank(embeddings, texts, QUERY, neighbours)


def test_a_prompt_is_pulled_to_the_mean_of_its_nearest_answers() -> None:
    """Grounded = normalise(prompt + mean direction of its k nearest answers): a prompt between
    two clusters but nearer the first moves to the first cluster's side."""
    answers = unit([1, 0.1, 0], [1, -0.1, 0], [0, 1, 0.1], [0, 1, -0.1])
    bank = bank_of(answers, neighbours=2)
    prompt = unit([0.6, 0.4, 0.5])
    grounded = bank.ground(prompt)[0]
    centre = F.normalize(answers[:2].mean(0), dim=0)
    assert torch.allclose(grounded, F.normalize(prompt[0] + centre, dim=0), atol=1e-6)
    assert abs(float(grounded.norm()) - 1) < 1e-6
    assert float(grounded @ answers[0]) > float(prompt[0] @ answers[0])
    assert float(grounded @ answers[2]) < float(prompt[0] @ answers[2])


def test_each_prompt_is_grounded_on_its_own() -> None:
    """Grounding a set of prompts gives each the row it gets alone: adding a label moves no
    other label's embedding."""
    torch.manual_seed(0)
    bank = bank_of(F.normalize(torch.randn(40, 8), dim=-1), neighbours=5)
    prompts = F.normalize(torch.randn(3, 8), dim=-1)
    together = bank.ground(prompts)
    for i in range(3):
        assert torch.allclose(together[i], bank.ground(prompts[i : i + 1])[0], atol=1e-6)


def test_neighbours_are_half_an_even_share_of_the_answers() -> None:
    assert neighbours_for(2913, 7) == 208
    assert neighbours_for(10, 7) == 1
    assert neighbours_for(0, 3) == 1


@pytest.fixture
def banked(tmp_path: Path, micro_model: VLJepa) -> Path:
    """The micro model saved as a checkpoint with an answer bank for QUERY."""
    folder = save_checkpoint(micro_model, tmp_path / "ckpt")
    write_answer_bank(micro_model, folder, [*TEXTS, TEXTS[0]], QUERY, labels=2)
    return folder


def test_the_bank_round_trips_through_the_checkpoint(banked: Path, micro_model: VLJepa) -> None:
    """Distinct texts, sorted, embedded by the checkpoint's own Y-encoder (fp16 on disk)."""
    bank = read_answer_bank(banked, micro_model.cfg.embed_dim)
    assert bank is not None
    assert bank.texts == tuple(sorted(TEXTS))
    assert bank.query == QUERY
    assert bank.neighbours == neighbours_for(len(TEXTS), 2) == 1
    expected = micro_model.encode_text(list(bank.texts)).detach()
    assert torch.allclose(bank.embeddings, expected, atol=2e-3)


def test_the_runtime_grounds_labels_for_the_banks_query_only(banked: Path) -> None:
    """label_embeddings: grounded for the bank's query, the prompts' own for another query or
    with grounded=False; classify uses the grounded ones."""
    runtime = VLJepaRuntime.load(banked)
    assert runtime.answer_bank is not None
    prompts = ["an arm holding a cup", "a resting arm"]
    own = runtime.encode_texts(prompts)
    grounded = runtime.label_embeddings(prompts, QUERY)
    assert torch.allclose(grounded, runtime.answer_bank.ground(own))
    assert not torch.allclose(grounded, own, atol=1e-3)
    assert torch.equal(runtime.label_embeddings(prompts, "another question?"), own)
    assert torch.equal(runtime.label_embeddings(prompts, QUERY, grounded=False), own)
    embedding = grounded[1] + 0.01 * grounded[0]
    assert runtime.classify_embedding(embedding, prompts, QUERY).index == 1


def test_a_checkpoint_without_a_bank_has_none(tmp_path: Path, micro_model: VLJepa) -> None:
    folder = save_checkpoint(micro_model, tmp_path / "plain")
    runtime = VLJepaRuntime.load(folder)
    assert runtime.answer_bank is None
    assert torch.equal(runtime.label_embeddings(["x"], QUERY), runtime.encode_texts(["x"]))


def test_saving_weights_over_a_checkpoint_drops_its_bank(banked: Path, micro_model: VLJepa) -> None:
    """A bank belongs to the weights it was embedded with: saving a model into the directory
    again removes it (`vljepa train` then writes a new one)."""
    save_checkpoint(micro_model, banked)
    assert not (banked / BANK_NAME).exists()
    assert not (banked / BANK_INFO_NAME).exists()
    assert VLJepaRuntime.load(banked).answer_bank is None


@pytest.mark.parametrize("missing", [BANK_NAME, BANK_INFO_NAME])
def test_half_a_bank_is_refused_naming_the_file(banked: Path, missing: str) -> None:
    (banked / missing).unlink()
    with pytest.raises(CheckpointError, match=r"answer_bank.*vljepa answer-bank"):
        VLJepaRuntime.load(banked)


def test_a_bank_of_another_text_space_is_refused(
    banked: Path, tmp_path: Path, micro_model: VLJepa
) -> None:
    """A bank embedded before the Y-encoder delta changed would ground prompts in another
    space: refused with the hashes and the rebuild hint."""
    other = tmp_path / "other"
    shutil.copytree(banked, other)
    info = json.loads((other / BANK_INFO_NAME).read_text())
    info["delta_sha256"] = "0" * 64
    (other / BANK_INFO_NAME).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"other Y-encoder weights.*rebuild"):
        VLJepaRuntime.load(other)
    # and a delta file appearing after the bank was written changes the space too
    assert not (banked / DELTA_NAME).exists()
    (banked / DELTA_NAME).write_bytes(b"not the bank's space")
    with pytest.raises(CheckpointError, match="other Y-encoder weights"):
        read_answer_bank(banked, micro_model.cfg.embed_dim)


@pytest.mark.parametrize("damage", ["json", "width", "texts"])
def test_a_corrupt_bank_is_refused(banked: Path, micro_model: VLJepa, damage: str) -> None:
    info_path = banked / BANK_INFO_NAME
    info = json.loads(info_path.read_text())
    if damage == "json":
        info_path.write_text("{not json")
    elif damage == "texts":
        info["texts"] = info["texts"][:-1]
        info_path.write_text(json.dumps(info))
    else:
        from vljepa_ros.model.weights import write_file

        write_file({"embeddings": torch.zeros(len(TEXTS), 5)}, banked / BANK_NAME)
    with pytest.raises(CheckpointError, match="answer bank"):
        read_answer_bank(banked, micro_model.cfg.embed_dim)
