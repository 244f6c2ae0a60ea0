"""Small image panels logged during training: what people look at rather than read."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _grey(channel: Tensor, lo: float, hi: float) -> np.ndarray:
    """(H, W) -> (H, W, 3) uint8, scaled by the given range (shared by target and reconstruction)."""
    scaled = ((channel.detach().float() - lo) / max(hi - lo, 1e-6)).clamp(0, 1)
    return _to_uint8(scaled.expand(3, *scaled.shape))


def reconstruction_panel(batch: dict[str, Any], reconstruction: Tensor) -> np.ndarray:
    """Reference | target | target's dropped channel | its reconstruction, for the first clip.

    Args:
        batch: the step's batch (``rgb (B,T,3,S,S)``, ``lab (B,T,3,S,S)``, ``drop_channel``).
        reconstruction: ``(B, 1, S, S)`` reconstructed channel of the target (finest level).
    """
    rgb, lab = batch["rgb"][0], batch["lab"][0]
    channel = int(batch["drop_channel"][0]) if "drop_channel" in batch else 1
    target = lab[-1, channel]
    rec = F.interpolate(reconstruction[:1].float(), size=target.shape, mode="bilinear", align_corners=False)[
        0, 0
    ]
    lo, hi = float(target.min()), float(target.max())
    tiles = [_to_uint8(rgb[0]), _to_uint8(rgb[-1]), _grey(target, lo, hi), _grey(rec, lo, hi)]
    return np.concatenate(tiles, axis=1)


def affinity_panel(rgb: Tensor, affinity: Tensor) -> np.ndarray:
    """First two frames of the first clip and the walk's first transition matrix as a heat map.

    Args:
        rgb: ``(B, T, 3, S, S)`` clips in [0, 1].
        affinity: ``(B, N, N)`` row-stochastic transition matrix between frames 0 and 1.
    """
    frames = [_to_uint8(rgb[0, 0]), _to_uint8(rgb[0, 1])]
    size = frames[0].shape[0]
    matrix = affinity[0].detach().float()
    matrix = (matrix / matrix.max().clamp_min(1e-12)).unsqueeze(0).unsqueeze(0)
    heat = F.interpolate(matrix, size=(size, size), mode="nearest")[0, 0]
    colour = torch.stack([heat, heat.sqrt(), 1 - heat])  # bright = likely transition
    return np.concatenate([*frames, _to_uint8(colour)], axis=1)
