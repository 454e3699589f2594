"""Bidirectional InfoNCE between predicted and target embeddings, always in fp32.

Under mixed precision the similarity logits are computed in fp32 with autocast disabled: in
bf16/fp16 the softmax over a batch of near-equal logits is too coarse and the loss stalls near
ln(B). The temperature is log-parameterised and clamped to a configured range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import LossConfig


def info_nce(
    pred: torch.Tensor, target: torch.Tensor, temperature: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE: row i of `pred` must pick row i of `target` and vice versa.

    pred, target: (B, D) (normalised here). Returns the mean of both directions, a scalar fp32.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"info_nce expects two (B, D) tensors, got {pred.shape}, {target.shape}")
    device_type = pred.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        p = F.normalize(pred.float(), dim=-1)
        t = F.normalize(target.float(), dim=-1)
        temp = torch.as_tensor(temperature, dtype=torch.float32, device=p.device)
        logits = p @ t.T / temp
        labels = torch.arange(p.shape[0], device=p.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class InfoNCELoss(nn.Module):
    """InfoNCE with a learnable (or fixed) temperature exp(log_t), clamped to [min, max]."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(cfg.temperature)), requires_grad=cfg.learnable_temperature
        )

    @property
    def temperature(self) -> torch.Tensor:
        low, high = math.log(self.cfg.min_temperature), math.log(self.cfg.max_temperature)
        return self.log_temperature.float().clamp(low, high).exp()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # pred (B, D), target (B, D) -> scalar fp32
        return info_nce(pred, target, self.temperature)
