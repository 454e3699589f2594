"""Y-decoder: a small causal text decoder conditioned on one embedding (prefix conditioning).

The paper does not describe its decoder. This one maps the (L2-normalised) embedding to
`num_prefix_tokens` prefix vectors, then runs Llama-style causal blocks over
[prefix ; token embeddings] and predicts the next token. It uses the Y-encoder's tokenizer
vocabulary, so it is trained on (Y-encoder(text), text) pairs without any new tokenizer.
Gaussian noise on the conditioning during training makes it tolerate the predictor's
embeddings, which never match the text embeddings exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import RopeConfig, YDecoderConfig
from .predictor import Block, RMSNorm, Rotary, init_linear_weights


class YDecoder(nn.Module):
    """(embedding (B, D), tokens) -> next-token logits; greedy `generate` for inference."""

    def __init__(
        self, cfg: YDecoderConfig, embed_dim: int, bos_id: int, eos_id: int, pad_id: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        h = cfg.hidden_size
        head_dim = h // cfg.num_heads
        self.prefix = nn.Linear(embed_dim, cfg.num_prefix_tokens * h)
        self.tokens = nn.Embedding(cfg.vocab_size, h)
        self.blocks = nn.ModuleList(
            Block(
                h, cfg.num_heads, cfg.num_heads, head_dim, cfg.intermediate_size, cfg.rms_norm_eps
            )
            for _ in range(cfg.num_layers)
        )
        self.norm = RMSNorm(h, cfg.rms_norm_eps)
        self.rotary = Rotary(RopeConfig(theta=cfg.rope_theta), head_dim)
        init_linear_weights(self)

    def _condition(self, embedding: torch.Tensor) -> torch.Tensor:
        # (B, D) -> (B, K, H) prefix tokens
        emb = F.normalize(embedding.float(), dim=-1).to(self.prefix.weight.dtype)
        if self.training and self.cfg.noise_std > 0:
            noise = torch.randn_like(emb) * (self.cfg.noise_std / math.sqrt(emb.shape[-1]))
            emb = F.normalize(emb + noise, dim=-1)
        return self.prefix(emb).view(emb.shape[0], self.cfg.num_prefix_tokens, -1)

    def forward(
        self,
        embedding: torch.Tensor,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        last_only: bool = False,
    ) -> torch.Tensor:
        # embedding (B, D), input_ids (B, L), mask (B, L) bool -> logits (B, L, V):
        # logits[:, i] predict the token after input_ids[:, i]; with last_only, (B, 1, V) for the
        # last position only (greedy decoding needs no more, and the vocabulary head dominates)
        prefix = self._condition(embedding)
        x = torch.cat([prefix, self.tokens(input_ids)], dim=1)
        k = prefix.shape[1]
        ones = torch.ones(x.shape[0], k, dtype=torch.bool, device=x.device)
        key_mask = torch.cat([ones, mask.bool()], dim=1)
        rotary = self.rotary(x.shape[1], x.device, x.dtype)
        for block in self.blocks:
            x = block(x, rotary, key_mask, causal=True)
        hidden = self.norm(x[:, -1:] if last_only else x[:, k:])
        return F.linear(hidden, self.tokens.weight)  # tied input/output embeddings

    def loss(self, embedding: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy (fp32) on [bos, text, eos] sequences from `targets`."""
        logits = self(embedding, ids[:, :-1], mask[:, :-1])
        target = ids[:, 1:].masked_fill(~mask[:, 1:].bool(), -100)
        return F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=-100)

    def targets(self, tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> ids (B, L) = [bos, tokens..., eos, pad...] and mask (B, L) bool."""
        room = self.cfg.max_length - 2
        rows = [
            [self.bos_id, *tokenizer(t, add_special_tokens=False)["input_ids"][:room], self.eos_id]
            for t in texts
        ]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        device = self.tokens.weight.device
        return ids.to(device), mask.to(device)

    @torch.no_grad()
    def generate(self, embedding: torch.Tensor, max_length: int | None = None) -> list[list[int]]:
        """Greedy decoding of (B, D) embeddings -> token ids per row (no bos/eos)."""
        steps = (max_length or self.cfg.max_length) - 1
        b = embedding.shape[0]
        device = self.tokens.weight.device
        ids = torch.full((b, 1), self.bos_id, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        for _ in range(steps):
            mask = torch.ones_like(ids, dtype=torch.bool)
            logits = self(embedding.to(device), ids, mask, last_only=True)[:, -1]
            nxt = logits.argmax(-1).masked_fill(done, self.pad_id)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
        out = []
        for row in ids[:, 1:].tolist():
            out.append(row[: row.index(self.eos_id)] if self.eos_id in row else row)
        return out
