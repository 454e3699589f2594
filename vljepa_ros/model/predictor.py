"""Predictor: Llama-style transformer with bidirectional attention over [visual ; query] tokens.

Blocks follow Llama's layout and parameter names (RMSNorm, grouped-query attention with rotary
positions, SwiGLU MLP) so that any consecutive layers of a Hugging Face Llama checkpoint load
into them. Unlike Llama the attention is not causal: every token, visual ones included, sees
the query. Pad tokens are masked out of attention (as keys) and out of the mean pool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import PredictorConfig, RopeConfig
from .errors import WeightsError
from .weights import read_tensors, tensor_names


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 (Llama's convention)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_inv_freq(
    rope: RopeConfig, head_dim: int, device: torch.device | None = None
) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,) for plain RoPE or Llama-3 frequency scaling, fp32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (rope.theta**exponents)
    if rope.type == "default":
        return inv_freq
    # llama3: keep high frequencies, divide low ones by `factor`, blend in between.
    low_wavelen = rope.original_max_position / rope.low_freq_factor
    high_wavelen = rope.original_max_position / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (rope.original_max_position / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    blended = (1 - smooth) * scaled / rope.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


class Rotary(nn.Module):
    """cos/sin tables for 1-D positions, in the rotate-half layout of Llama checkpoints.

    Frequencies are computed in fp32 on every call (a few microseconds), so casting the model
    to bf16 never degrades them and no tensor is shared between inference and training.
    """

    def __init__(self, rope: RopeConfig, head_dim: int) -> None:
        super().__init__()
        self.rope, self.head_dim = rope, head_dim

    def forward(
        self, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # -> cos, sin: (L, head_dim), positions 0..L-1
        inv_freq = rope_inv_freq(self.rope, self.head_dim, device)
        positions = torch.arange(length, device=device, dtype=torch.float32)
        emb = torch.outer(positions, inv_freq).repeat(1, 2)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, L, head_dim) by position tables (L, head_dim) or (B, L, head_dim)."""
    if cos.dim() == 3:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    """Grouped-query self-attention with rotary positions and a key padding mask."""

    def __init__(
        self, dim: int, num_heads: int, num_kv_heads: int, head_dim: int, bias: bool
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        causal: bool = False,
    ) -> torch.Tensor:
        # x (B, L, D), key_mask (B, L) bool True = real token -> (B, L, D)
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]  # (B, 1, 1, L): which keys every query may see
            if causal:
                mask = mask & torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, length, -1))


class SwiGLU(nn.Module):
    """Llama MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block with Llama's parameter names."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        intermediate: int,
        eps: float,
        attention_bias: bool = False,
        mlp_bias: bool = False,
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dim, eps)
        self.self_attn = Attention(dim, num_heads, num_kv_heads, head_dim, attention_bias)
        self.post_attention_layernorm = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, intermediate, mlp_bias)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        causal: bool = False,
    ) -> torch.Tensor:
        # (B, L, D) -> (B, L, D)
        x = x + self.self_attn(self.input_layernorm(x), rotary, key_mask, causal)
        return x + self.mlp(self.post_attention_layernorm(x))


def init_linear_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) weights and zero biases for every Linear/Embedding in `module`."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)


class Predictor(nn.Module):
    """(visual tokens, query tokens) -> one vector in the shared space (not normalised)."""

    def __init__(self, cfg: PredictorConfig, visual_dim: int, query_dim: int, out_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.visual_proj = nn.Linear(visual_dim, h)
        self.query_proj = nn.Linear(query_dim, h)
        self.blocks = nn.ModuleList(
            Block(
                h,
                cfg.num_heads,
                cfg.num_kv_heads,
                cfg.head_dim,
                cfg.intermediate_size,
                cfg.rms_norm_eps,
                cfg.attention_bias,
                cfg.mlp_bias,
            )
            for _ in range(cfg.num_layers)
        )
        self.norm = RMSNorm(h, cfg.rms_norm_eps)
        self.head = nn.Linear(h, out_dim)
        self.rotary = Rotary(cfg.rope, cfg.head_dim)
        init_linear_weights(self)
        # The input projections keep the unit per-dimension variance of the encoders' normalised
        # tokens (std 1/sqrt(fan_in)). With Llama's 0.02 the differences between clips shrank to
        # about 0.1% of the pooled output and a predictor trained from scratch collapsed to one
        # answer for every clip (docs/training.md, "Pilot runs").
        for proj in (self.visual_proj, self.query_proj):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)

    def forward_tokens(
        self, visual: torch.Tensor, query: torch.Tensor, query_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # visual (B, N, Dv), query (B, Lq, Dq), query_mask (B, Lq) bool or None (no padding)
        # -> hidden (B, N + Lq, H), mask (B, N + Lq) bool or None; queries follow visual tokens
        b, n, _ = visual.shape
        x = torch.cat([self.visual_proj(visual), self.query_proj(query.to(visual.dtype))], dim=1)
        mask = None
        if query_mask is not None:
            visual_mask = torch.ones(b, n, dtype=torch.bool, device=visual.device)
            query_mask = query_mask.to(device=visual.device, dtype=torch.bool)
            mask = torch.cat([visual_mask, query_mask], dim=1)
        rotary = self.rotary(x.shape[1], x.device, x.dtype)
        for block in self.blocks:
            x = block(x, rotary, mask)
        return self.norm(x), mask

    def forward(
        self, visual: torch.Tensor, query: torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # visual (B, N, Dv), query (B, Lq, Dq), query_mask (B, Lq) or None -> (B, out_dim)
        # Without a mask (no padding) attention runs unmasked: the fastest SDPA kernels apply.
        hidden, mask = self.forward_tokens(visual, query, query_mask)
        if mask is None:
            pooled = hidden.mean(1)
        else:
            weights = mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(pooled)


# ------------------------------------------------------------------ Hugging Face Llama folders


def _llama_json(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read Llama config {path}: {exc}") from exc
    if data.get("model_type") != "llama":
        raise WeightsError(f"{path} is not a Llama config (model_type={data.get('model_type')})")
    return data


def config_from_llama_folder(
    folder: str | Path, num_layers: int = 8, max_query_tokens: int = 512
) -> PredictorConfig:
    """`PredictorConfig` with the block shapes and rotary settings of a Llama folder."""
    from transformers import LlamaConfig

    folder = Path(folder)
    data = _llama_json(folder)
    if data.get("hidden_act", "silu") != "silu":
        raise WeightsError(f"{folder}: hidden_act {data['hidden_act']!r} is not supported (silu)")
    hf = LlamaConfig.from_pretrained(str(folder))
    rp = dict(hf.rope_parameters or {})
    rope_type = rp.get("rope_type", "default")
    if rope_type not in ("default", "llama3"):
        raise WeightsError(f"{folder}: rope type {rope_type!r} is not supported (default, llama3)")
    rope = RopeConfig(
        type=rope_type,
        theta=float(rp.get("rope_theta", 10000.0)),
        factor=float(rp.get("factor", 1.0)),
        low_freq_factor=float(rp.get("low_freq_factor", 1.0)),
        high_freq_factor=float(rp.get("high_freq_factor", 4.0)),
        original_max_position=int(
            rp.get("original_max_position_embeddings", hf.max_position_embeddings)
        ),
    )
    if num_layers > hf.num_hidden_layers:
        raise WeightsError(f"{folder} has {hf.num_hidden_layers} layers, {num_layers} requested")
    return PredictorConfig(
        hidden_size=hf.hidden_size,
        num_layers=num_layers,
        num_heads=hf.num_attention_heads,
        num_kv_heads=hf.num_key_value_heads or hf.num_attention_heads,
        head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
        intermediate_size=hf.intermediate_size,
        rms_norm_eps=float(hf.rms_norm_eps),
        attention_bias=bool(hf.attention_bias),
        mlp_bias=bool(hf.mlp_bias),
        max_query_tokens=max_query_tokens,
        rope=rope,
    )


def load_llama_layers(
    predictor: Predictor, folder: str | Path, layers: Sequence[int] | None = None
) -> Predictor:
    """Copy Llama decoder layers (default: the last `num_layers`) and the final norm in.

    The input projections and the head are not part of Llama and keep their initialisation.
    """
    folder = Path(folder)
    total = int(_llama_json(folder)["num_hidden_layers"])
    count = len(predictor.blocks)
    chosen = list(layers) if layers is not None else list(range(total - count, total))
    if len(chosen) != count or not all(0 <= i < total for i in chosen):
        raise WeightsError(
            f"layers {chosen} do not select {count} of the {total} layers in {folder}"
        )
    names = tensor_names(folder)
    prefix = "model." if any(n.startswith("model.layers.") for n in names) else ""
    wanted: dict[str, str] = {}
    block_keys = [k for k in predictor.state_dict() if k.startswith("blocks.0.")]
    for j, i in enumerate(chosen):
        for key in block_keys:
            leaf = key[len("blocks.0.") :]
            wanted[f"{prefix}layers.{i}.{leaf}"] = f"blocks.{j}.{leaf}"
    wanted[f"{prefix}norm.weight"] = "norm.weight"
    tensors = read_tensors(folder, list(wanted))
    own = predictor.state_dict()
    for src, dst in wanted.items():
        if tensors[src].shape != own[dst].shape:
            raise WeightsError(
                f"{folder}: {src} has shape {tuple(tensors[src].shape)}, predictor {dst} "
                f"expects {tuple(own[dst].shape)}"
            )
    with torch.no_grad():
        for src, dst in wanted.items():
            own[dst].copy_(tensors[src])
    return predictor
