"""Y-encoder: a sentence-embedding text model loaded from a local Hugging Face folder.

Any `transformers.AutoModel` encoder works (BERT-style such as all-MiniLM-L6-v2, Gemma3 text
models such as EmbeddingGemma). The sentence embedding is the mean of the token states over
non-pad tokens, followed by the folder's sentence-transformers Dense modules if it has any, then
an optional linear head into the shared space, then L2 normalisation. The backbone's token
states also serve as the predictor's query tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import YEncoderConfig
from .errors import ModelError, WeightsError
from .hub import resolve_model_folder
from .weights import read_file, sha256_files, weight_files

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.Tanh": nn.Tanh,
}


def _sentence_modules(folder: Path) -> list[nn.Module]:
    """Dense layers declared by a sentence-transformers `modules.json` (mean pooling only)."""
    spec_path = folder / "modules.json"
    if not spec_path.is_file():
        return []
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read {spec_path}: {exc}") from exc
    layers: list[nn.Module] = []
    for entry in spec:
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        sub = folder / entry.get("path", "")
        if kind == "Pooling":
            pooling = json.loads((sub / "config.json").read_text())
            mean = pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens")
            if not mean:
                raise WeightsError(f"{sub}: only mean pooling is supported, got {pooling}")
        elif kind == "Dense":
            conf = json.loads((sub / "config.json").read_text())
            act = conf.get("activation_function", "torch.nn.modules.activation.Tanh")
            if act not in _ACTIVATIONS or conf.get("use_residual", False):
                raise WeightsError(f"{sub}: unsupported Dense module (activation {act})")
            linear = nn.Linear(conf["in_features"], conf["out_features"], conf.get("bias", True))
            state = read_file(sub / "model.safetensors")
            linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
            layers += [linear, _ACTIVATIONS[act]()]
        elif kind not in ("Transformer", "Normalize"):
            raise WeightsError(f"{spec_path}: unsupported sentence-transformers module {kind}")
    return layers


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, L, H) token states over the True positions of (B, L) -> (B, H)."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class TextEncoder(nn.Module):
    """Texts -> L2-normalised embeddings in the shared space; also query token states."""

    def __init__(self, cfg: YEncoderConfig, embed_dim: int) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.cfg = cfg
        self.folder = resolve_model_folder(cfg.source)
        try:
            self.backbone = AutoModel.from_pretrained(
                str(self.folder), local_files_only=True, dtype=torch.float32
            )
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot load text encoder from {self.folder}: {exc}") from exc
        self.backbone.eval()
        self.dense = nn.Sequential(*_sentence_modules(self.folder))
        hidden = int(self.backbone.config.hidden_size)
        width = hidden
        for layer in self.dense:
            if isinstance(layer, nn.Linear):
                width = layer.out_features
        if hidden != cfg.hidden_size or width != cfg.embedding_size:
            raise WeightsError(
                f"text encoder {self.folder} has hidden size {hidden} and embedding size {width}; "
                f"the config says hidden_size={cfg.hidden_size}, "
                f"embedding_size={cfg.embedding_size}"
            )
        self.head: nn.Module = (
            nn.Linear(cfg.embedding_size, embed_dim, bias=False)
            if cfg.projection
            else nn.Identity()
        )
        if isinstance(self.head, nn.Linear):
            nn.init.normal_(self.head.weight, std=cfg.embedding_size**-0.5)
        self.backbone.requires_grad_(cfg.trainable)
        self.dense.requires_grad_(cfg.trainable)

    # ----------------------------------------------------------------------- identity

    @property
    def model_type(self) -> str:
        return str(self.backbone.config.model_type)

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the backbone weight file(s): the identity of the target space."""
        return sha256_files(weight_files(self.folder))

    def identity(self) -> dict[str, Any]:
        return {"name": self.cfg.source, "model_type": self.model_type, "sha256": self.sha256}

    def check_dtype(self, dtype: torch.dtype) -> None:
        """Refuse precisions a backbone cannot run in (EmbeddingGemma overflows in fp16)."""
        if dtype == torch.float16 and self.model_type.startswith("gemma"):
            raise ModelError(
                f"{self.model_type} text encoder ({self.cfg.source}) overflows in fp16; "
                "use fp32 or bf16"
            )

    def base_tensor_names(self) -> list[str]:
        """State-dict names that come from the public folder (not stored in checkpoints)."""
        return [k for k in self.state_dict() if k.startswith(("backbone.", "dense."))]

    # ----------------------------------------------------------------------- tokens

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def special_ids(self) -> tuple[int, int, int]:
        """(begin, end, pad) token ids of the tokenizer, used by the Y-decoder."""
        tok = self.tokenizer
        bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        if bos is None or eos is None:
            raise ModelError(f"tokenizer of {self.folder} has no begin/end token")
        return int(bos), int(eos), int(pad)

    def tokenize(
        self, texts: Sequence[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> input ids (B, L) and attention mask (B, L) bool, on the encoder's device."""
        batch = self.tokenizer(
            [self.cfg.text_prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=max_length or self.cfg.max_length,
            return_tensors="pt",
        )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device).bool()

    def token_states(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # (B, L) ids, (B, L) mask -> (B, L, hidden)
        out = self.backbone(input_ids=input_ids, attention_mask=mask.long())
        return out.last_hidden_state

    # ----------------------------------------------------------------------- embeddings

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # (B, L) ids, (B, L) mask -> (B, D) L2-normalised
        pooled = mean_pool(self.token_states(input_ids, mask), mask)
        return F.normalize(self.head(self.dense(pooled)).float(), dim=-1)

    # ----------------------------------------------------------------------- split forward

    def layer_stack(self) -> nn.ModuleList | None:
        """The backbone's transformer layers when it is a BERT-style encoder (token embeddings,
        then `encoder.layer` fed the hidden states and the attention mask, nothing else), so its
        forward can be split between layers (`hidden_after`, `embed_from`); None otherwise."""
        layers = getattr(getattr(self.backbone, "encoder", None), "layer", None)
        if isinstance(layers, nn.ModuleList) and hasattr(self.backbone, "embeddings"):
            return layers
        return None

    def hidden_after(self, input_ids: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
        # (B, L) ids, (B, L) mask -> (B, L, hidden): token states after the first `count` layers
        out = self.backbone(
            input_ids=input_ids, attention_mask=mask.long(), output_hidden_states=True
        )
        return out.hidden_states[count]

    def embed_from(self, hidden: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
        # (B, L, hidden) states after layer `start`, (B, L) mask -> (B, D) L2-normalised: the
        # same as forward() on the texts, running only layers start.. (see layer_stack)
        from transformers.masking_utils import create_bidirectional_mask

        layers = self.layer_stack()
        if layers is None:
            raise ModelError(f"text encoder {self.folder} cannot run from cached layer states")
        attention = create_bidirectional_mask(
            config=self.backbone.config, inputs_embeds=hidden, attention_mask=mask.long()
        )
        for layer in list(layers)[start:]:
            hidden = layer(hidden, attention)
        pooled = mean_pool(hidden, mask)
        return F.normalize(self.head(self.dense(pooled)).float(), dim=-1)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Texts -> (N, D) L2-normalised fp32 embeddings."""
        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of strings, not one string")
        chunks = [
            self(*self.tokenize(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
        if not chunks:
            return torch.empty(0, self.head_dim, device=self.device)
        return torch.cat(chunks)

    def encode_query(
        self, texts: Sequence[str], max_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query texts -> token states (B, Lq, hidden) and mask (B, Lq) for the predictor."""
        ids, mask = self.tokenize(texts, max_length=max_length)
        return self.token_states(ids, mask), mask

    @property
    def head_dim(self) -> int:
        return (
            self.head.out_features if isinstance(self.head, nn.Linear) else self.cfg.embedding_size
        )

    def train(self, mode: bool = True) -> TextEncoder:
        # The public backbone keeps eval mode (no dropout) unless it is being fine-tuned.
        super().train(mode)
        self.backbone.train(mode and self.cfg.trainable)
        return self
