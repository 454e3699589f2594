"""The training objectives: multi-query InfoNCE over clips, and the Y-decoder's cross-entropy.

`ContrastiveStep` runs the X-encoder once per clip and the predictor once per (clip, query)
row, so several questions about the same clip cost one video encoding. The loss is the
model's bidirectional InfoNCE with one change, `masked_info_nce`: a batch holds many answers
that mean the same thing (every "no, the gripper is empty", two paraphrases of "the arm grabs
the red block", a label prompt and a caption of the same state). Treating those as negatives
would ask the model to tell apart texts that only differ in wording, which no clip can do, and
would push the prompt of a state away from the clips of that state. So pairs with the same
meaning key (`targets.AnswerMaker`) or the same text are removed from each row's negatives; the
positive of row i stays its own answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vljepa_ros.model import VLJepa


def same_meaning(keys: Sequence[object], texts: Sequence[str]) -> torch.Tensor:
    """(N, N) bool: rows i and j have equal meaning keys or equal texts."""
    key_ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    text_ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    k = torch.tensor([key_ids[x] for x in keys])
    t = torch.tensor([text_ids[x] for x in texts])
    return (k[:, None] == k[None, :]) | (t[:, None] == t[None, :])


def masked_info_nce(
    pred: torch.Tensor,
    target: torch.Tensor,
    temperature: torch.Tensor | float,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE where `same[i, j]` (i != j) removes j from row i's negatives.

    pred, target: (N, D), normalised here; same: (N, N) bool or None. fp32 scalar.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = F.normalize(pred.float(), dim=-1)
        t = F.normalize(target.float(), dim=-1)
        temp = torch.as_tensor(temperature, dtype=torch.float32, device=p.device)
        logits = p @ t.T / temp
        if same is not None:
            eye = torch.eye(len(p), dtype=torch.bool, device=p.device)
            logits = logits.masked_fill(same.to(p.device) & ~eye, float("-inf"))
        labels = torch.arange(len(p), device=p.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class ContrastiveStep(nn.Module):
    """Loss of one batch of (clip, query, answer) rows; wraps the model for DDP."""

    def __init__(self, model: VLJepa) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        video: torch.Tensor,
        clip_index: torch.Tensor,
        query_states: torch.Tensor,
        query_mask: torch.Tensor,
        query_index: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        text_index: torch.Tensor,
        same: torch.Tensor,
    ) -> torch.Tensor:
        # video (B, T, 3, S, S); clip_index (N,) row -> clip
        # query_states (Q, Lq, Hq) and query_mask (Q, Lq) of the distinct queries, query_index (N,)
        # text_ids, text_mask (U, L) of the distinct answers, text_index (N,); same (N, N)
        visual = self.model.x_encoder(video)  # (B, V, Hx)
        pred = self.model.predictor(
            visual[clip_index], query_states[query_index], query_mask[query_index]
        )  # (N, D)
        answers = self.model.y_encoder(text_ids, text_mask)  # (U, D)
        return masked_info_nce(
            pred, answers[text_index], self.model.loss_fn.temperature, same.to(pred.device)
        )


class DecoderStep(nn.Module):
    """Next-token loss of the Y-decoder on (Y-encoder(text), text), with conditioning noise."""

    def __init__(self, model: VLJepa) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, embedding: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        # embedding (B, D) unit vectors; ids, mask (B, L) = [bos, text, eos, pad...]
        return self.model.y_decoder.loss(embedding, ids, mask)
