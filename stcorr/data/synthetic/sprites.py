"""Objects as sprites: a texture and a hard silhouette, placed by inverse-mapping the pixel grid.

Nearest lookup for the silhouette (no anti-aliasing, so a rendered label is exactly the topmost
object per pixel) and bilinear lookup for the texture. Shared by the synthetic scenes and the
real-footage benchmark (``stcorr.data.footage``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from stcorr.data.synthetic import motion as mo


@dataclass(frozen=True)
class Sprite:
    """One object's appearance in its own frame.

    Attributes:
        texture: ``(S, S, 3)`` float32 RGB.
        shape: ``(S, S)`` bool silhouette, inside the inscribed disc.
    """

    texture: np.ndarray
    shape: np.ndarray



def sprite_layer(sprite: Sprite, motion: mo.Motion, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Place a sprite in every frame by inverse-mapping the pixel grid into sprite coordinates.

    Args:
        sprite: texture and silhouette, side S.
        motion: centres ``(T, 2)``, scales ``(T,)``, angles ``(T,)``.
        size: ``(H, W)``.

    Returns:
        ``alpha`` ``(T, H, W)`` bool and ``colours`` ``(N, 3)`` float32, the texture at the N pixels
        of ``alpha`` in C order (``rgb[alpha] = colours``): only covered pixels are sampled.
    """
    side = sprite.shape.shape[0]
    ys = np.arange(size[0], dtype=np.float32) + np.float32(0.5)  # pixel centres
    xs = np.arange(size[1], dtype=np.float32) + np.float32(0.5)
    dy = ys[None, :, None] - motion.centers[:, 0, None, None].astype(np.float32)  # (T, H, 1)
    dx = xs[None, None, :] - motion.centers[:, 1, None, None].astype(np.float32)  # (T, 1, W)
    cos = (np.cos(motion.angles) / motion.scales).astype(np.float32)[:, None, None]
    sin = (np.sin(motion.angles) / motion.scales).astype(np.float32)[:, None, None]
    u = cos * dx + sin * dy + np.float32(side / 2.0)  # sprite x: R(-angle) (p - c) / s; (T, H, W)
    v = cos * dy - sin * dx + np.float32(side / 2.0)  # sprite y
    iu, iv = np.floor(u).astype(np.intp), np.floor(v).astype(np.intp)
    inb = (iu >= 0) & (iu < side) & (iv >= 0) & (iv < side)
    alpha = np.zeros(u.shape, dtype=bool)
    alpha[inb] = sprite.shape[iv[inb], iu[inb]]
    coords = np.stack([v[alpha] - 0.5, u[alpha] - 0.5])  # (2, N) sprite pixel-centre coordinates
    colours = np.empty((coords.shape[1], 3), dtype=np.float32)
    for ch in range(3):
        colours[:, ch] = ndimage.map_coordinates(sprite.texture[..., ch], coords, order=1, mode="nearest")
    return alpha, colours
