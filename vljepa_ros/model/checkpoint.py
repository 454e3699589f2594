"""Checkpoint directories: resolved config, safetensors weights, Y-encoder identity.

Layout of a checkpoint directory:

    config.json                   the resolved VLJepaConfig
    model.safetensors             X-encoder, predictor, heads, Y-decoder, temperature
    y_encoder.json                {"name", "model_type", "sha256"} of the Y-encoder weights
    y_encoder_delta.safetensors   optional: fine-tuned Y-encoder tensors over the base weights
    answer_bank.safetensors/.json optional: the training answers that ground label prompts
                                  (`grounding`)

The public Y-encoder weights are never copied: they come from their own folder or package, and
loading refuses a Y-encoder whose weights hash differs from the recorded one, because the
target space would silently change. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from .config import ConfigError, VLJepaConfig
from .errors import CheckpointError, WeightsError, YEncoderMismatchError
from .grounding import (
    BANK_INFO_NAME,
    BANK_NAME,
    AnswerBank,
    load_answer_bank,
    neighbours_for,
    save_answer_bank,
    text_space,
)
from .vljepa import VLJepa
from .weights import read_file, sha256_files, write_file
from .y_encoder import TextEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
IDENTITY_NAME = "y_encoder.json"
DELTA_NAME = "y_encoder_delta.safetensors"

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_CHECKPOINT = "vljepa-sim-tiny"


def shipped_checkpoints() -> list[str]:
    """Names of the checkpoints installed with the package."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A checkpoint directory from a path or the name of a shipped checkpoint."""
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_name)
    if "/" not in text and "\\" not in text and not text.startswith("."):
        shipped = SHIPPED_DIR / text
        if shipped.is_dir():
            return shipped
        raise CheckpointError(
            f"no shipped checkpoint named {text!r} in {SHIPPED_DIR}; shipped checkpoints: "
            f"{shipped_checkpoints() or 'none'}. Pass a checkpoint directory path instead "
            "(the default model is produced by the training pipeline)."
        )
    raise CheckpointError(
        f"checkpoint directory {path} does not exist; pass a directory containing "
        f"{CONFIG_NAME} and {WEIGHTS_NAME}, or one of the shipped names {shipped_checkpoints()}"
    )


def save_checkpoint(model: VLJepa, directory: str | Path) -> Path:
    """Write `model` as a checkpoint directory (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.cfg.to_json(directory / CONFIG_NAME)
    write_file(model.checkpoint_state_dict(), directory / WEIGHTS_NAME)
    identity = model.y_encoder.identity()
    (directory / IDENTITY_NAME).write_text(json.dumps(identity, indent=2) + "\n")
    delta = model.y_encoder_delta()
    delta_path = directory / DELTA_NAME
    if delta:
        write_file(delta, delta_path)
    elif delta_path.exists():
        delta_path.unlink()
    for name in (BANK_NAME, BANK_INFO_NAME):  # a bank belongs to the weights it was made with
        (directory / name).unlink(missing_ok=True)
    return directory


def read_identity(directory: Path) -> dict[str, str]:
    path = directory / IDENTITY_NAME
    try:
        data = json.loads(path.read_text())
        return {"name": str(data["name"]), "sha256": str(data["sha256"])}
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint file {path} is missing") from exc
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"corrupt checkpoint file {path}: {exc}") from exc


def read_config(directory: Path) -> VLJepaConfig:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return VLJepaConfig.from_json(path)
    except ConfigError as exc:
        raise CheckpointError(f"invalid checkpoint config {path}: {exc}") from exc


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return read_file(path)
    except WeightsError as exc:
        raise CheckpointError(f"corrupt checkpoint file {path}: {exc}") from exc


def load_checkpoint(
    path_or_name: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VLJepa:
    """Load a checkpoint directory (or shipped name) into a `VLJepa` in eval mode."""
    directory = resolve_checkpoint(path_or_name)
    cfg = read_config(directory)
    identity = read_identity(directory)
    weights = _read_weights(directory / WEIGHTS_NAME)
    delta_path = directory / DELTA_NAME
    delta = _read_weights(delta_path) if delta_path.exists() else {}

    try:
        y_encoder = TextEncoder(cfg.y_encoder, cfg.embed_dim)
    except WeightsError as exc:
        raise CheckpointError(f"checkpoint {directory}: cannot load its Y-encoder: {exc}") from exc
    if y_encoder.sha256 != identity["sha256"]:
        raise YEncoderMismatchError(
            f"checkpoint {directory} was trained with Y-encoder {identity['name']!r} "
            f"(sha256 {identity['sha256']}), but {cfg.y_encoder.source!r} resolves to "
            f"{y_encoder.folder} with weights sha256 {y_encoder.sha256}; the embedding spaces "
            "differ, refusing to load"
        )
    y_encoder.check_dtype(dtype)

    model = VLJepa(cfg, y_encoder)
    expected = model.checkpoint_state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint file {directory / WEIGHTS_NAME} does not match its config: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    state = model.state_dict()
    bad_delta = sorted(k for k in delta if k not in state)
    if bad_delta:
        raise CheckpointError(f"checkpoint file {delta_path} names unknown tensors {bad_delta[:5]}")
    for key, tensor in {**weights, **delta}.items():
        if tensor.shape != state[key].shape:
            raise CheckpointError(
                f"checkpoint tensor {key} has shape {tuple(tensor.shape)}, the config builds "
                f"{tuple(state[key].shape)}"
            )
    with torch.no_grad():
        for key, tensor in {**weights, **delta}.items():
            state[key].copy_(tensor)
    return model.to(device=device, dtype=dtype).eval()


def checkpoint_id(path_or_name: str | Path) -> str:
    """`<directory name>@<short hash>`: the identity that messages and reports carry.

    The hash is the first 8 hex digits of the SHA-256 over the weights files (`model.safetensors`,
    then `y_encoder_delta.safetensors` when there is one), so two checkpoints that share a
    directory name (every `vljepa train` run writes `model/`) still tell apart, and a retrained
    checkpoint copied over an old one does too.
    """
    directory = resolve_checkpoint(path_or_name)
    files = [directory / name for name in (WEIGHTS_NAME, DELTA_NAME)]
    digest = sha256_files(path for path in files if path.is_file())
    return f"{directory.name}@{digest[:8]}"


def checkpoint_bytes(path_or_name: str | Path) -> int:
    """Size on disk of a checkpoint directory's files."""
    directory = resolve_checkpoint(path_or_name)
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _text_space(directory: Path) -> dict[str, str]:
    return text_space(directory, read_identity(directory)["sha256"], DELTA_NAME)


def write_answer_bank(
    model: VLJepa, path_or_name: str | Path, texts: Sequence[str], query: str, labels: int
) -> AnswerBank:
    """Embed the distinct `texts` (the answers `model` was trained on for `query`) with its
    Y-encoder and write them as the answer bank of the checkpoint directory `model` was saved
    to; `labels`: how many label prompts it was trained with (sets the neighbours)."""
    directory = resolve_checkpoint(path_or_name)
    distinct = sorted(set(texts))
    if not distinct:
        raise CheckpointError(f"no answer texts to bank for {directory}")
    with torch.inference_mode():
        embeddings = model.encode_text(distinct).float().cpu()
    neighbours = neighbours_for(len(distinct), labels)
    save_answer_bank(directory, embeddings, distinct, query, neighbours, _text_space(directory))
    return AnswerBank(embeddings, tuple(distinct), query, neighbours)


def read_answer_bank(path_or_name: str | Path, embed_dim: int) -> AnswerBank | None:
    """The answer bank of a checkpoint directory (or shipped name), None if it has none.

    Raises:
        CheckpointError: see `grounding.load_answer_bank`.
    """
    directory = resolve_checkpoint(path_or_name)
    return load_answer_bank(directory, embed_dim, _text_space(directory))
