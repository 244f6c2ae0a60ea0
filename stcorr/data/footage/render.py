"""Compositing: objects pasted over the background in painter's order, labels from the same coverage.

Each object's coverage comes from ``stcorr.data.synthetic.scene.sprite_layer`` (nearest lookup of
the silhouette, bilinear lookup of the texture), evaluated per frame in a window around the object
only. Centres lie on the 1/8-px grid (``paths.QUANTUM``), so the window's whole-pixel shift is exact
in float32 and the coverage is bit-for-bit what the full-frame call gives. The composite is float
and quantised once; the label of a pixel is the topmost object covering it, so the ground truth is
exact with respect to the frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stcorr.data.synthetic import motion as mo
from stcorr.data.synthetic.scene import Sprite, sprite_layer


@dataclass(frozen=True)
class Layers:
    """A composited sequence.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 composite.
        masks: ``(T, H, W)`` uint8; 0 background, k object k.
        coverage: ``(K, T, H, W)`` bool silhouette of object k + 1, hidden or not.
    """

    frames: np.ndarray
    masks: np.ndarray
    coverage: np.ndarray


def _window(center: np.ndarray, extent: float, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Whole-pixel box ``(y0, y1, x0, x1)`` holding a disc of radius ``extent``; None if off-frame."""
    y0, x0 = (max(0, int(np.floor(c - extent)) - 1) for c in center)
    y1 = min(size[0], int(np.ceil(center[0] + extent)) + 1)
    x1 = min(size[1], int(np.ceil(center[1] + extent)) + 1)
    return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None


def paint(sprite: Sprite, motion: mo.Motion, t: int, size: tuple[int, int]
          ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
    """The coverage and colours of one object in frame ``t``, in a window around it.

    Args:
        sprite: texture and silhouette, side S.
        motion: pose plan; centres on the 1/8-px grid.
        t: frame.
        size: ``(H, W)``.

    Returns:
        ``None`` if the object's square is off-frame, else the window ``(y0, y1, x0, x1)``, its
        coverage ``(y1 - y0, x1 - x0)`` bool and the texture ``(N, 3)`` float32 at its N pixels.
    """
    side = sprite.shape.shape[0]
    extent = side / np.sqrt(2.0) * float(motion.scales[t]) + 1.0  # the rotated square's corners
    box = _window(motion.centers[t], extent, size)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    local = mo.Motion(motion.centers[t : t + 1] - np.array([y0, x0], dtype=np.float64),
                      motion.scales[t : t + 1], motion.angles[t : t + 1])
    alpha, colours = sprite_layer(sprite, local, (y1 - y0, x1 - x0))
    return box, alpha[0], colours


def composite(background: np.ndarray, objects: Sequence[tuple[Sprite, mo.Motion]],
              z_order: Sequence[int]) -> Layers:
    """Paste the objects over the background, bottom to top, and label each pixel by the top one.

    Args:
        background: ``(T, H, W, 3)`` float32 on 0..255.
        objects: sprite and motion of object k at index k - 1.
        z_order: object ids from bottom to top (painter's order).

    Returns:
        The composite, quantised once (round half to even, clipped to 0..255), and its labels.
    """
    frames, size = background.shape[0], background.shape[1:3]
    rgb = background.copy()
    masks = np.zeros((frames, *size), dtype=np.uint8)
    coverage = np.zeros((len(objects), frames, *size), dtype=bool)
    for k in z_order:
        sprite, motion = objects[k - 1]
        for t in range(frames):
            painted = paint(sprite, motion, t, (int(size[0]), int(size[1])))
            if painted is None:
                continue
            (y0, y1, x0, x1), alpha, colours = painted
            rgb[t, y0:y1, x0:x1][alpha] = colours
            masks[t, y0:y1, x0:x1][alpha] = k
            coverage[k - 1, t, y0:y1, x0:x1] = alpha
    return Layers(np.rint(np.clip(rgb, 0.0, 255.0)).astype(np.uint8), masks, coverage)
