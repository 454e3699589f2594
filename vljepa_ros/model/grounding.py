"""Label prompts grounded in the answers a checkpoint was trained on (its answer bank).

The state label of a step is the label prompt nearest the predicted embedding. A prompt in words
the model never saw ("the robot's hand travels to an item it wants to pick") can land nearer
another state's answers in the text space than its own, and all reworded prompts lie closer
together than the trained ones, so accuracy falls when a user rewords the labels
(docs/evaluation.md, "Reworded prompts").

The answer bank is the Y-encoder embeddings of the distinct answers the model was trained to
predict for its default query (the label prompts and every caption paraphrase it could draw).
A grounded label embedding is the normalised sum of the prompt's own embedding and the mean
direction of the `neighbours` bank answers nearest it: the prompt keeps its say, and it is
pulled to where the model's predictions for what it describes actually lie. Each prompt is
grounded on its own, so adding a label does not move the others. Grounding applies only to
embeddings predicted for the bank's query; `docs/evaluation.md` has the figures.

Files in a checkpoint directory:

    answer_bank.safetensors   {"embeddings": (N, D) fp16}
    answer_bank.json          {"query", "neighbours", "y_encoder_sha256", "delta_sha256", "texts"}

The two hashes tie the bank to the text space it was embedded in: a checkpoint whose Y-encoder
weights changed refuses a stale bank instead of grounding prompts in another space.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .errors import CheckpointError, WeightsError
from .weights import read_file, sha256_files, write_file

BANK_NAME = "answer_bank.safetensors"
BANK_INFO_NAME = "answer_bank.json"
REBUILD_HINT = (
    "rebuild it with `vljepa answer-bank --checkpoint DIR --data BAGS`, or delete both files"
)


def neighbours_for(answers: int, labels: int) -> int:
    """Bank answers averaged per prompt: half of what one label would get if the answers were
    split evenly among the labels the model was trained with (at least 1)."""
    return max(1, answers // (2 * max(1, labels)))


@dataclass(frozen=True)
class AnswerBank:
    """Unit embeddings (N, D) of a checkpoint's training answers for one query."""

    embeddings: torch.Tensor  # (N, D) fp32, L2-normalised rows
    texts: tuple[str, ...]
    query: str
    neighbours: int

    def ground(self, prompts: torch.Tensor) -> torch.Tensor:
        """(K, D) unit prompt embeddings -> (K, D) unit grounded embeddings."""
        prompts = F.normalize(prompts.float(), dim=-1)
        k = min(self.neighbours, len(self.embeddings))
        nearest = (prompts @ self.embeddings.T).topk(k, dim=1).indices  # (K, k)
        centre = F.normalize(self.embeddings[nearest].mean(1), dim=-1)  # (K, D)
        return F.normalize(prompts + centre, dim=-1)


def text_space(directory: Path, y_encoder_sha256: str, delta_name: str) -> dict[str, str]:
    """The hashes that identify a checkpoint's text space: the base Y-encoder weights and the
    fine-tuned delta file ("" without one)."""
    delta = directory / delta_name
    return {
        "y_encoder_sha256": y_encoder_sha256,
        "delta_sha256": sha256_files([delta]) if delta.is_file() else "",
    }


def save_answer_bank(
    directory: Path,
    embeddings: torch.Tensor,
    texts: Sequence[str],
    query: str,
    neighbours: int,
    space: dict[str, str],
) -> None:
    """Write a bank into a checkpoint directory (fp16 embeddings, JSON sidecar)."""
    if embeddings.dim() != 2 or len(embeddings) != len(texts) or not len(texts):
        raise ValueError(f"{len(texts)} texts for embeddings of shape {tuple(embeddings.shape)}")
    write_file({"embeddings": embeddings.to(torch.float16)}, directory / BANK_NAME)
    info: dict[str, Any] = {"query": query, "neighbours": int(neighbours), **space}
    info["texts"] = list(texts)
    (directory / BANK_INFO_NAME).write_text(json.dumps(info, indent=1) + "\n")


def load_answer_bank(directory: Path, embed_dim: int, space: dict[str, str]) -> AnswerBank | None:
    """A checkpoint directory's answer bank, or None when it has none.

    Raises:
        CheckpointError: one of the two files without the other, a corrupt file, a bank of
            another width, or one embedded with other Y-encoder weights than the checkpoint's.
    """
    path, info_path = directory / BANK_NAME, directory / BANK_INFO_NAME
    if not path.exists() and not info_path.exists():
        return None
    for present, absent in ((path, info_path), (info_path, path)):
        if present.exists() and not absent.exists():
            raise CheckpointError(f"{present} has no {absent.name} beside it; {REBUILD_HINT}")
    try:
        info = json.loads(info_path.read_text())
        texts = tuple(str(t) for t in info["texts"])
        query, neighbours = str(info["query"]), int(info["neighbours"])
        recorded = {key: str(info[key]) for key in space}
        embeddings = read_file(path)["embeddings"].float()
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, WeightsError) as exc:
        raise CheckpointError(f"corrupt answer bank in {directory}: {exc}; {REBUILD_HINT}") from exc
    if embeddings.dim() != 2 or embeddings.shape != (len(texts), embed_dim) or neighbours < 1:
        raise CheckpointError(
            f"answer bank {path} holds embeddings of shape {tuple(embeddings.shape)} for "
            f"{len(texts)} texts with {neighbours} neighbours; the model's embeddings are "
            f"{embed_dim}-d; {REBUILD_HINT}"
        )
    if recorded != space:
        raise CheckpointError(
            f"answer bank {path} was embedded with other Y-encoder weights ({recorded}) than "
            f"the checkpoint's ({space}); {REBUILD_HINT}"
        )
    return AnswerBank(F.normalize(embeddings, dim=-1), texts, query, neighbours)
