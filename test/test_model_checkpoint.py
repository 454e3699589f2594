"""Tests of vljepa_ros.model.checkpoint: round trips, identity checks, corrupt files."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import copy_tokenizer
from transformers import BertConfig, BertModel

from vljepa_ros.model import (
    CheckpointError,
    VLJepa,
    YEncoderMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from vljepa_ros.model.checkpoint import DELTA_NAME, resolve_checkpoint


def predict(model: VLJepa) -> torch.Tensor:
    video = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    query, mask = model.encode_query(["what now?", "is the gripper closed?"])
    with torch.no_grad():
        return model.predict(video, query, mask)


@pytest.fixture
def saved(tmp_path: Path, micro_model: VLJepa) -> Path:
    """The micro model saved as a checkpoint directory."""
    return save_checkpoint(micro_model, tmp_path / "ckpt")


def test_save_load_gives_identical_outputs(saved: Path, micro_model: VLJepa) -> None:
    """A saved and reloaded model predicts and decodes exactly as before."""
    loaded = load_checkpoint(saved)
    assert loaded.cfg == micro_model.cfg
    assert torch.equal(predict(loaded), predict(micro_model))
    emb = torch.randn(1, 32)
    assert loaded.decode(emb, 6) == micro_model.decode(emb, 6)


def test_directory_layout(saved: Path, micro_model: VLJepa) -> None:
    """config.json, model.safetensors and the Y-encoder identity; no pickle, no base weights."""
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["config.json", "model.safetensors", "y_encoder.json"]
    identity = json.loads((saved / "y_encoder.json").read_text())
    assert identity["sha256"] == micro_model.y_encoder.sha256
    assert identity["name"] == micro_model.cfg.y_encoder.source


def test_different_y_encoder_is_refused(
    tmp_path: Path, saved: Path, micro_model: VLJepa, minilm_folder: Path
) -> None:
    """A checkpoint whose Y-encoder folder now holds other weights is refused, naming both."""
    other = tmp_path / "other_bert"
    torch.manual_seed(123)
    BertModel(BertConfig(**micro_model.y_encoder.backbone.config.to_dict())).save_pretrained(other)
    copy_tokenizer(minilm_folder, other)
    config = json.loads((saved / "config.json").read_text())
    config["y_encoder"]["source"] = str(other)
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(YEncoderMismatchError) as info:
        load_checkpoint(saved)
    message = str(info.value)
    assert micro_model.y_encoder.sha256 in message
    assert str(other) in message
    assert micro_model.cfg.y_encoder.source in message


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights_are_refused_naming_the_file(saved: Path, damage: str) -> None:
    """A truncated or garbled model.safetensors raises CheckpointError naming it."""
    path = saved / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json" + data[16:])
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(saved)


@pytest.mark.parametrize("name", ["config.json", "y_encoder.json"])
def test_corrupt_json_is_refused_naming_the_file(saved: Path, name: str) -> None:
    """Broken JSON files raise CheckpointError naming the file."""
    (saved / name).write_text("{ not json")
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(saved)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "y_encoder.json"])
def test_missing_file_is_refused_naming_it(saved: Path, name: str) -> None:
    """A checkpoint missing one of its files fails fast naming the file."""
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(saved)


def test_weights_of_another_shape_are_refused(saved: Path, micro_config, tmp_path: Path) -> None:
    """Weights that do not match the recorded config are refused."""
    config = json.loads((saved / "config.json").read_text())
    config["predictor"]["intermediate_size"] = 96
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(saved)


def test_missing_directory_names_the_path(tmp_path: Path) -> None:
    """A checkpoint path that does not exist fails with the path."""
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_unknown_shipped_name_lists_what_is_shipped() -> None:
    """An unknown checkpoint name names the searched directory and the shipped names."""
    with pytest.raises(
        CheckpointError, match="no shipped checkpoint named 'no-such-model'"
    ) as info:
        resolve_checkpoint("no-such-model")
    assert "checkpoints" in str(info.value)


def test_fine_tuned_y_encoder_tensors_travel_as_a_delta(
    tmp_path: Path, micro_config, bert_folder: Path
) -> None:
    """With a trainable Y-encoder its tensors are saved in a delta file and restored on load,
    while the identity still names the untouched base weights."""
    cfg = dataclasses.replace(
        micro_config, y_encoder=dataclasses.replace(micro_config.y_encoder, trainable=True)
    )
    torch.manual_seed(0)
    model = VLJepa(cfg).eval()
    with torch.no_grad():
        model.y_encoder.backbone.embeddings.word_embeddings.weight.add_(0.5)
    out = save_checkpoint(model, tmp_path / "tuned")
    assert (out / DELTA_NAME).is_file()
    loaded = load_checkpoint(out)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(["a cup"]), model.encode_text(["a cup"]))
    shutil.rmtree(out)
