"""Motion blur: a box filter along a layer's per-frame displacement, as a camera's open shutter makes.

A layer moving ``d`` pixels per frame is smeared over ``SHUTTER * |d|`` pixels along ``d`` (a line
kernel: ``n`` equally spaced points, splatted bilinearly onto the pixel grid; ``n`` is odd, so the
centre tap is there and a blurred silhouette never loses its own pixels). Layers are blurred on their
own, premultiplied by their coverage, before they are stacked, so an object's edge blurs into what
is behind it as in real footage. Rotation and scale changes within one exposure are not blurred
(a few px at the rim at most; the translation is what the tracker must follow).
"""

from __future__ import annotations

import math

import numpy as np

SHUTTER = 0.5  # exposure as a share of the frame interval: the "180-degree shutter" of film and video
MIN_BLUR = 0.5  # px; a shorter smear is below the pixel grid and the layer is left sharp

Taps = tuple[np.ndarray, np.ndarray, np.ndarray]  # dy (n,) int, dx (n,) int, weight (n,) float32


def identity_taps() -> Taps:
    """The kernel that leaves a layer as it is."""
    return np.zeros(1, np.intp), np.zeros(1, np.intp), np.ones(1, np.float32)


def kernel_radius(speed: float) -> int:
    """Largest ``|dy|``, ``|dx|`` of ``line_taps`` for any displacement of length ``<= speed``."""
    return math.ceil(SHUTTER * speed / 2.0) + 1


def line_taps(step: np.ndarray) -> Taps:
    """Box filter along ``SHUTTER * step``, centred on the pixel.

    Args:
        step: ``(2,)`` displacement ``(y, x)`` in pixels over one frame.

    Returns:
        Integer offsets and weights (summing to 1) of the kernel; ``identity_taps()`` for a smear
        under ``MIN_BLUR``. The kernel is point-symmetric, so filtering and convolving agree.
    """
    smear = SHUTTER * np.asarray(step, dtype=np.float64)
    length = float(np.hypot(*smear))
    if length < MIN_BLUR:
        return identity_taps()
    n = 2 * math.ceil(length / 2.0) + 1  # odd, points <= 1 px apart
    points = np.linspace(-0.5, 0.5, n)[:, None] * smear[None, :]  # (n, 2)
    base = np.floor(points)
    frac = points - base
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])  # bilinear splat onto 4 pixels
    offsets = (base[:, None, :] + corners[None, :, :]).reshape(-1, 2).astype(np.intp)  # (4n, 2)
    share = np.where(corners[None, :, :] == 1, frac[:, None, :], 1.0 - frac[:, None, :]).prod(axis=2)
    keys, inverse = np.unique(offsets, axis=0, return_inverse=True)
    weights = np.bincount(inverse.ravel(), weights=share.ravel() / n)
    keep = weights > 1e-6
    return keys[keep, 0], keys[keep, 1], (weights[keep] / weights[keep].sum()).astype(np.float32)


def filter_window(source: np.ndarray, taps: Taps, radius: int) -> np.ndarray:
    """Apply a kernel to the inside of a padded window.

    Args:
        source: ``(h + 2 radius, w + 2 radius, C)`` float32 window.
        taps: kernel with ``|dy|, |dx| <= radius``.
        radius: the window's border.

    Returns:
        ``(h, w, C)`` float32: ``out[y, x] = sum_i w_i source[radius + y + dy_i, radius + x + dx_i]``.
    """
    h, w = source.shape[0] - 2 * radius, source.shape[1] - 2 * radius
    out = np.zeros((h, w, source.shape[2]), dtype=np.float32)
    for dy, dx, weight in zip(*taps, strict=True):
        y0, x0 = radius + int(dy), radius + int(dx)
        out += weight * source[y0 : y0 + h, x0 : x0 + w]
    return out


def smear_layer(layer: np.ndarray, taps: Taps) -> tuple[np.ndarray, int]:
    """Blur a premultiplied layer patch; the result grows by the kernel's radius on every side.

    Args:
        layer: ``(h, w, C)`` float32, zero outside the object (premultiplied colour and coverage).
        taps: the kernel.

    Returns:
        ``(h + 2 r, w + 2 r, C)`` float32 and ``r``.
    """
    radius = int(max(np.abs(taps[0]).max(), np.abs(taps[1]).max()))
    if radius == 0 and len(taps[2]) == 1:
        return layer, 0
    padded = np.pad(layer, ((2 * radius, 2 * radius), (2 * radius, 2 * radius), (0, 0)))
    return filter_window(padded, taps, radius), radius
