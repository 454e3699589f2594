"""VL-JEPA: the composed model (X-encoder, predictor, Y-encoder, Y-decoder, InfoNCE).

A clip and a query go in; the predicted embedding of the answer text comes out, L2-normalised
in the Y-encoder's space. The Y-encoder embeds targets, label prompts and candidate answers in
the same space; the Y-decoder turns an embedding back into text when it is needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import VLJepaConfig
from .errors import ModelError
from .hub import resolve_model_folder
from .losses import InfoNCELoss
from .predictor import Predictor, config_from_llama_folder, load_llama_layers
from .x_encoder import XEncoder, config_from_vjepa2_folder, load_vjepa2_encoder
from .y_decoder import YDecoder
from .y_encoder import TextEncoder


class VLJepa(nn.Module):
    """The whole model; `predict` is the per-step path, `loss` the training objective."""

    def __init__(self, cfg: VLJepaConfig, y_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.y_encoder = (
            y_encoder if y_encoder is not None else TextEncoder(cfg.y_encoder, cfg.embed_dim)
        )
        if self.y_encoder.cfg != cfg.y_encoder:
            raise ModelError("the given Y-encoder was built from a different YEncoderConfig")
        self.x_encoder = XEncoder(cfg.x_encoder)
        self.predictor = Predictor(
            cfg.predictor, cfg.x_encoder.hidden_size, cfg.y_encoder.hidden_size, cfg.embed_dim
        )
        vocab = len(self.y_encoder.tokenizer)
        if vocab > cfg.y_decoder.vocab_size:
            raise ModelError(
                f"y_decoder.vocab_size ({cfg.y_decoder.vocab_size}) is smaller than the Y-encoder "
                f"tokenizer's vocabulary ({vocab}) of {self.y_encoder.folder}"
            )
        bos, eos, pad = self.y_encoder.special_ids
        self.y_decoder = YDecoder(cfg.y_decoder, cfg.embed_dim, bos, eos, pad)
        self.loss_fn = InfoNCELoss(cfg.loss)

    # ------------------------------------------------------------------------ inference

    def encode_query(self, queries: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Query texts -> Y-encoder token states (B, Lq, Hq) and mask (B, Lq) for `predict`."""
        return self.y_encoder.encode_query(queries, self.cfg.predictor.max_query_tokens)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (N, D) L2-normalised target-space embeddings."""
        return self.y_encoder.encode(texts)

    def predict(
        self, video: torch.Tensor, query: torch.Tensor, query_mask: torch.Tensor | None
    ) -> torch.Tensor:
        # video (B, T, 3, S, S), query (B, Lq, Hq), query_mask (B, Lq) or None (no padding)
        # -> (B, D) L2-normalised
        visual = self.x_encoder(video)
        return F.normalize(self.predictor(visual, query, query_mask).float(), dim=-1)

    def forward(
        self, video: torch.Tensor, query: torch.Tensor, query_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return self.predict(video, query, query_mask)

    @torch.no_grad()
    def decode(self, embedding: torch.Tensor, max_length: int | None = None) -> list[str]:
        """(B, D) embeddings -> texts by greedy decoding with the Y-decoder."""
        rows = self.y_decoder.generate(embedding, max_length)
        decode = self.y_encoder.tokenizer.decode
        return [str(decode(r, skip_special_tokens=True)).strip() for r in rows]

    # ------------------------------------------------------------------------ training

    def loss(
        self,
        video: torch.Tensor,
        query: torch.Tensor,
        query_mask: torch.Tensor,
        target_ids: torch.Tensor,
        target_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Bidirectional InfoNCE between predicted and Y-encoded answer embeddings (fp32)."""
        pred = self.predict(video, query, query_mask)
        target = self.y_encoder(target_ids, target_mask)
        return self.loss_fn(pred, target)

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer groups: Y-encoder base weights at lr * lr_multiplier, the rest at lr."""
        base = {id(p) for n, p in self.y_encoder.named_parameters() if not n.startswith("head.")}
        main: list[nn.Parameter] = []
        slow: list[nn.Parameter] = []
        for p in self.parameters():
            if p.requires_grad:
                (slow if id(p) in base else main).append(p)
        groups = [{"params": main, "lr": lr, "weight_decay": weight_decay}]
        if slow:
            mult = self.cfg.y_encoder.lr_multiplier
            groups.append({"params": slow, "lr": lr * mult, "weight_decay": weight_decay})
        return groups

    # ------------------------------------------------------------------------ weights

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors stored in a checkpoint: everything but the public Y-encoder base weights."""
        skip = {"y_encoder." + n for n in self.y_encoder.base_tensor_names()}
        return {k: v for k, v in self.state_dict().items() if k not in skip}

    def y_encoder_delta(self) -> dict[str, torch.Tensor]:
        """Y-encoder base tensors being fine-tuned (requires_grad), keyed like the state dict."""
        names = set(self.y_encoder.base_tensor_names())
        return {
            "y_encoder." + n: p.detach()
            for n, p in self.y_encoder.named_parameters()
            if n in names and p.requires_grad
        }

    @classmethod
    def from_public(
        cls,
        cfg: VLJepaConfig,
        vjepa2: str | Path | None = None,
        llama: str | Path | None = None,
        llama_layers: Sequence[int] | None = None,
    ) -> VLJepa:
        """Build a model whose X-encoder and/or predictor shapes come from public checkpoints
        (folders or repo ids already in the local Hugging Face cache) and load their weights.

        The predictor keeps `cfg.predictor.num_layers` layers (default: the last ones) and its
        `max_query_tokens`; the X-encoder keeps the configured clip length and preprocessing.
        """
        vjepa2_folder = resolve_model_folder(str(vjepa2)) if vjepa2 is not None else None
        llama_folder = resolve_model_folder(str(llama)) if llama is not None else None
        if vjepa2_folder is not None:
            cfg = dataclasses.replace(
                cfg, x_encoder=config_from_vjepa2_folder(vjepa2_folder, cfg.x_encoder)
            )
        if llama_folder is not None:
            layers = len(llama_layers) if llama_layers is not None else cfg.predictor.num_layers
            predictor = config_from_llama_folder(
                llama_folder, layers, cfg.predictor.max_query_tokens
            )
            cfg = dataclasses.replace(cfg, predictor=predictor)
        model = cls(cfg)
        return model.load_public_weights(vjepa2_folder, llama_folder, llama_layers)

    def load_public_weights(
        self,
        vjepa2_folder: str | Path | None = None,
        llama_folder: str | Path | None = None,
        llama_layers: Sequence[int] | None = None,
    ) -> VLJepa:
        """Initialise the X-encoder from a V-JEPA 2 folder and/or the predictor blocks from
        Llama layers (default: the last `predictor.num_layers`). Shapes must match the config;
        use `config_from_vjepa2_folder` / `config_from_llama_folder` to derive them."""
        if vjepa2_folder is not None:
            load_vjepa2_encoder(self.x_encoder, vjepa2_folder)
        if llama_folder is not None:
            load_llama_layers(self.predictor, llama_folder, llama_layers)
        return self
