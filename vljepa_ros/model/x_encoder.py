"""X-encoder: the V-JEPA 2 video ViT (encoder only) from `transformers`.

Wraps `transformers`' `VJEPA2Encoder` so that the state dict keys are exactly those of a
`VJEPA2Model` checkpoint's `encoder.*` tensors: a public V-JEPA 2 folder loads without any
renaming, and V-JEPA 2's own (mask-token) predictor is never built.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import VJEPA2Config
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Encoder

from .config import XEncoderConfig
from .errors import WeightsError
from .weights import read_tensors, tensor_names

ENCODER_PREFIXES = ("encoder.", "vjepa2.encoder.")


def hf_config(cfg: XEncoderConfig) -> VJEPA2Config:
    """The `VJEPA2Config` that builds an encoder of this shape."""
    config = VJEPA2Config(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size,
        tubelet_size=cfg.tubelet_size,
        crop_size=cfg.crop_size,
        frames_per_clip=cfg.num_frames,
        layer_norm_eps=cfg.layer_norm_eps,
        qkv_bias=cfg.qkv_bias,
    )
    config._attn_implementation = cfg.attn_implementation
    return config


class _ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a skip connection (ResNet's basic block)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        last = nn.BatchNorm2d(width)
        nn.init.zeros_(last.weight)  # the block starts as the identity
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            last,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ConvStem(nn.Module):
    """Convolutional tubelet embedding: a drop-in for V-JEPA 2's `patch_embeddings`.

    The frames of a tubelet are stacked as channels (so the first layer sees motion between
    them), then log2(patch_size) stride-2 3x3 convolutions with batch norm and ReLU double the
    channels up to `hidden_size` (from `stem_width`, each followed by `stem_blocks` residual
    blocks), and a 1x1 `proj` gives the token. Early convolutions make a
    ViT trained from scratch converge much faster than a linear patch embedding (Xiao et al.,
    "Early Convolutions Help Transformers See Better", 2021); the token grid, count and order
    are the same as the patch embedding's, so the transformer above is unchanged.

    With `stem_frame_branch`, a second stack of the same convolutions sees the newest frame of
    each tubelet alone, and `proj` reads both branches' channels.
    """

    def __init__(self, cfg: XEncoderConfig) -> None:
        super().__init__()
        self.tubelet_size = cfg.tubelet_size
        self.patch_size = cfg.patch_size
        stages = cfg.patch_size.bit_length() - 1  # patch_size = 2 ** stages
        if cfg.stem_width:
            widths = [min(cfg.hidden_size, cfg.stem_width << i) for i in range(stages)]
        else:
            widths = [max(8, cfg.hidden_size >> (stages - 1 - i)) for i in range(stages)]

        def convs(channels: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for width in widths:
                layers += [
                    nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                layers += [_ResidualBlock(width) for _ in range(cfg.stem_blocks)]
                channels = width
            return nn.Sequential(*layers)

        self.convs = convs(3 * cfg.tubelet_size)
        self.frame_convs = convs(3) if cfg.stem_frame_branch else None
        branches = 2 if cfg.stem_frame_branch else 1
        self.proj = nn.Conv2d(branches * widths[-1], cfg.hidden_size, 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, N, D), tokens ordered (time, row, column) like the patch embed
        b, c, t, h, w = video.shape
        k = self.tubelet_size
        x = video.reshape(b, c, t // k, k, h, w).permute(0, 2, 3, 1, 4, 5)  # (B, T', k, C, H, W)
        features = self.convs(x.reshape(b * (t // k), k * c, h, w))
        if self.frame_convs is not None:  # the newest frame of each tubelet on its own
            newest = self.frame_convs(x[:, :, -1].reshape(b * (t // k), c, h, w))
            features = torch.cat([features, newest], dim=1)
        x = self.proj(features)  # (B T', D, H', W')
        x = x.reshape(b, t // k, *x.shape[1:]).transpose(1, 2)  # (B, D, T', H', W')
        return x.flatten(2).transpose(1, 2)


class XEncoder(nn.Module):
    """Frames -> visual tokens. Input is already preprocessed (see `preprocess.py`)."""

    def __init__(self, cfg: XEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = VJEPA2Encoder(hf_config(cfg))
        self._init_weights()
        if cfg.stem == "conv":
            # replaces the registered patch embedding: same (B, C, T, H, W) -> (B, N, D)
            self.encoder.embeddings.add_module("patch_embeddings", ConvStem(cfg))
        if cfg.frozen:
            self.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self) -> None:
        """V-JEPA 2's initialisation: truncated normal for linear/conv weights, zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        # (B, T, C, H, W) normalised float -> (B, N, D) with N = T/t * (H/p) * (W/p)
        _, t, c, h, w = video.shape
        cfg = self.cfg
        if c != 3 or h != cfg.crop_size or w != cfg.crop_size:
            raise ValueError(
                f"X-encoder expects (B, T, 3, {cfg.crop_size}, {cfg.crop_size}) input, got "
                f"{tuple(video.shape)}; run frames through Preprocessor first"
            )
        if t % cfg.tubelet_size != 0:
            raise ValueError(f"clip length {t} is not a multiple of tubelet {cfg.tubelet_size}")
        out = self.encoder(pixel_values_videos=video)
        return out.last_hidden_state

    def train(self, mode: bool = True) -> XEncoder:
        # A frozen encoder stays in eval mode (no dropout / drop-path) while the rest trains.
        super().train(mode and not self.cfg.frozen)
        return self


def config_from_vjepa2_folder(
    folder: str | Path, base: XEncoderConfig | None = None
) -> XEncoderConfig:
    """`XEncoderConfig` matching a V-JEPA 2 folder's `config.json` (clip length kept from base)."""
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read V-JEPA 2 config {path}: {exc}") from exc
    if data.get("model_type") != "vjepa2":
        raise WeightsError(f"{path} is not a V-JEPA 2 config (model_type={data.get('model_type')})")
    base = base or XEncoderConfig()
    hf = VJEPA2Config(**{k: v for k, v in data.items() if k not in ("architectures",)})
    num_frames = base.num_frames - base.num_frames % hf.tubelet_size or hf.tubelet_size
    return XEncoderConfig(
        hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads,
        mlp_ratio=float(hf.mlp_ratio),
        patch_size=int(hf.patch_size),  # type: ignore[arg-type]
        tubelet_size=hf.tubelet_size,
        crop_size=hf.crop_size,
        num_frames=num_frames,
        layer_norm_eps=hf.layer_norm_eps,
        qkv_bias=hf.qkv_bias,
        attn_implementation=base.attn_implementation,
        frozen=base.frozen,
        resize_scale=base.resize_scale,
        image_mean=base.image_mean,
        image_std=base.image_std,
    )


def load_vjepa2_encoder(encoder: XEncoder, folder: str | Path) -> XEncoder:
    """Copy the `encoder.*` tensors of a V-JEPA 2 checkpoint folder into `encoder` (strict)."""
    folder = Path(folder)
    names = tensor_names(folder)
    prefix = next((p for p in ENCODER_PREFIXES if any(n.startswith(p) for n in names)), None)
    if prefix is None:
        raise WeightsError(f"no V-JEPA 2 encoder tensors (encoder.*) in {folder}")
    wanted = {n: "encoder." + n[len(prefix) :] for n in names if n.startswith(prefix)}
    tensors = read_tensors(folder, list(wanted))
    state = {wanted[n]: t for n, t in tensors.items()}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(
            f"V-JEPA 2 encoder in {folder} does not match the configured X-encoder: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise WeightsError(
                f"{folder}: tensor {key} has shape {tuple(tensor.shape)}, X-encoder expects "
                f"{tuple(own[key].shape)}"
            )
    encoder.load_state_dict(state, strict=True)
    return encoder
