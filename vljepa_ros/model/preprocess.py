"""The one place where camera frames become X-encoder input.

uint8 RGB frames (T, H, W, 3) -> float (B, T, 3, S, S): resize the shortest edge to
S * resize_scale (bilinear, antialiased), centre-crop S x S, scale to [0, 1], normalise with the
encoder's mean/std (ImageNet for V-JEPA 2). A single image is repeated to fill a clip (as the
paper does for images); a clip whose length is not a multiple of the tubelet is padded by
repeating its last frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import XEncoderConfig
from .errors import ModelError

FrameArray = np.ndarray | torch.Tensor


def _as_uint8_tensor(frames: FrameArray | Sequence[FrameArray]) -> torch.Tensor:
    if isinstance(frames, (list, tuple)):
        frames = torch.stack([_as_uint8_tensor(f) for f in frames])
    tensor = (
        torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    )
    if not isinstance(tensor, torch.Tensor):
        raise ModelError(f"frames must be a numpy array or tensor, got {type(frames).__name__}")
    if tensor.dtype != torch.uint8:
        raise ModelError(f"frames must be uint8 RGB, got dtype {tensor.dtype}")
    if tensor.shape[-1] != 3:
        raise ModelError(f"frames must be (..., H, W, 3) RGB, got shape {tuple(tensor.shape)}")
    return tensor


class Preprocessor:
    """Frames -> normalised clip tensor on a device, matching an `XEncoderConfig`."""

    def __init__(
        self,
        cfg: XEncoderConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype
        self.mean = torch.tensor(cfg.image_mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.image_std, device=self.device).view(1, 3, 1, 1)

    def clip_length(self, t: int) -> int:
        """Frames actually fed to the encoder for a clip of `t` frames."""
        if t == 1:
            return self.cfg.num_frames
        tub = self.cfg.tubelet_size
        return -(-t // tub) * tub

    def __call__(self, frames: FrameArray | Sequence[FrameArray]) -> torch.Tensor:
        """(H, W, 3) | (T, H, W, 3) | (B, T, H, W, 3) uint8 -> (B, T', 3, S, S) float."""
        video = _as_uint8_tensor(frames)
        if video.dim() == 3:
            video = video.unsqueeze(0)
        if video.dim() == 4:
            video = video.unsqueeze(0)
        if video.dim() != 5 or video.shape[1] == 0:
            raise ModelError(f"expected (B, T, H, W, 3) frames, got shape {tuple(video.shape)}")
        b, t, h, w, _ = video.shape
        x = video.to(self.device, non_blocking=True).reshape(b * t, h, w, 3)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B*T, 3, H, W)
        x = self._resize_crop(x)
        x = (x - self.mean) / self.std
        x = x.view(b, t, 3, self.cfg.crop_size, self.cfg.crop_size)
        target = self.clip_length(t)
        if target != t:
            extra = x[:, -1:].expand(b, target - t, *x.shape[2:])
            x = torch.cat([x, extra], dim=1)
        return x.to(self.dtype).contiguous()  # (B, T', 3, S, S)

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 3, H, W) -> (N, 3, S, S)
        size = self.cfg.crop_size
        h, w = x.shape[-2:]
        # Same size rule as transformers' VJEPA2VideoProcessor ("shortest_edge", truncating).
        short = int(size * self.cfg.resize_scale)
        new_h = max(size, int(short * h / min(h, w)))
        new_w = max(size, int(short * w / min(h, w)))
        if (new_h, new_w) != (h, w):
            x = F.interpolate(
                x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
            )
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return x[..., top : top + size, left : left + size]
