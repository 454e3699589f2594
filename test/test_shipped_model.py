"""The shipped default checkpoint `vljepa-sim-tiny`: present, loadable by name, within its size
budget, described by its model card, and producing embeddings and text."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from ros_support import REPO

from vljepa_ros.model import DEFAULT_CHECKPOINT, VLJepaRuntime, shipped_checkpoints
from vljepa_ros.model.checkpoint import SHIPPED_DIR

FOLDER = SHIPPED_DIR / DEFAULT_CHECKPOINT
BUDGET_MB = 50


@pytest.fixture(scope="module")
def runtime() -> VLJepaRuntime:
    torch.set_num_threads(1)
    return VLJepaRuntime.load(DEFAULT_CHECKPOINT)


def test_the_default_is_shipped_within_its_size_budget() -> None:
    assert DEFAULT_CHECKPOINT in shipped_checkpoints()
    size_mb = sum(p.stat().st_size for p in FOLDER.iterdir() if p.is_file()) / 1e6
    assert size_mb <= BUDGET_MB, f"{FOLDER} holds {size_mb:.1f} MB"
    assert {p.suffix for p in FOLDER.iterdir()} <= {".json", ".safetensors", ".yaml", ".md"}


def test_it_loads_by_name_with_the_trained_configuration(runtime: VLJepaRuntime) -> None:
    cfg = runtime.cfg
    assert cfg.name == DEFAULT_CHECKPOINT
    assert cfg.default_query == "what is the robot doing?"
    assert cfg.x_encoder.stem == "conv"
    assert runtime.model_id.startswith(DEFAULT_CHECKPOINT)


def test_the_model_card_gives_the_commands_seeds_and_figures() -> None:
    """The card quotes the exact generation and training commands of config/train/default.yaml
    and the evaluation figures."""
    card = (FOLDER / "README.md").read_text()
    header = (REPO / "config" / "train" / "default.yaml").read_text().split("\nseed:")[0]
    commands = [line.lstrip("# ").strip() for line in header.splitlines() if "vljepa " in line]
    assert len(commands) == 3
    for command in commands:
        assert command in card, command
    for figure in ("stabilised accuracy", "macro-F1", "edit score", "flicker", "R@1"):
        assert re.search(re.escape(figure), card, re.IGNORECASE), figure


def test_it_embeds_clips_and_decodes_text(runtime: VLJepaRuntime) -> None:
    """Different clips give different unit embeddings, and the Y-decoder writes words."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 8, 96, 96, 3), dtype=np.uint8)
    frames[1] = frames[1] // 4  # a much darker scene
    emb = runtime.embed_clips(frames)
    assert emb.shape == (2, runtime.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert float(emb[0] @ emb[1]) < 0.9999
    text = runtime.decode(emb[0])
    assert re.search(r"[a-z]{3,}", text), text


def test_its_answer_bank_widens_the_margins_of_reworded_prompts(runtime: VLJepaRuntime) -> None:
    """The shipped answer bank loads (tied to the checkpoint's Y-encoder weights), holds the
    default label prompts, and grounding each held-out rewording in it widens its margin: the
    mean training paraphrase of every state is nearer its own reworded prompt, against the
    nearest other one, by more on average than with the rewordings as they are."""
    import torch.nn.functional as F

    from vljepa_ros.data.captions import HELDOUT_PROMPTS, TRAIN_TEMPLATES
    from vljepa_ros.train.config import read_labels

    bank = runtime.answer_bank
    assert bank is not None
    assert bank.query == runtime.cfg.default_query
    assert set(read_labels(REPO / "config" / "robot_states.yaml").values()) <= set(bank.texts)
    names = list(TRAIN_TEMPLATES)
    paraphrases = [[t.format(obj="green can") for t in texts] for texts in TRAIN_TEMPLATES.values()]
    means = F.normalize(torch.stack([runtime.encode_texts(p).mean(0) for p in paraphrases]), dim=-1)
    for k in range(2):
        prompts = [HELDOUT_PROMPTS[name][k] for name in names]
        margins = []
        for grounded in (False, True):
            scores = means @ runtime.label_embeddings(prompts, grounded=grounded).T
            others = (scores - 10 * torch.eye(len(names))).max(1).values
            margins.append(float((scores.diag() - others).mean()))
        assert margins[1] > margins[0] + 0.05, (k, margins)
