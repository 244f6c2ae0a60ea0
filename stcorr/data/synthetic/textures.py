"""Procedural textures for the synthetic scenes: smooth noise, stripes and blobs.

The point of the synthetic data is that dense correspondence is learnable (every surface carries
local detail that moves with it, as in the videos STT and CRW train on: Li & Liu, CVPR 2023;
Jabri et al., NeurIPS 2020) while raw colour matching stays imperfect: every texture of a scene
mixes colours drawn, with replacement, from one small scene palette, so two surfaces often share
a colour and only their pattern tells them apart.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PALETTE_SIZE = 5  # colours per scene; small, so textures share colours (no unique-colour shortcut)
GRAIN = 10.0  # std of the fine grain (0..255 scale): local detail for matching at stride 4-8
TEXTURE_KINDS = ("noise", "stripes", "blobs")


def random_palette(rng: np.random.Generator, n: int = PALETTE_SIZE) -> np.ndarray:
    """Random scene palette.

    Args:
        rng: random generator.
        n: number of colours.

    Returns:
        ``(n, 3)`` float32 RGB colours in [20, 235], leaving head-room for grain and illumination.
    """
    return rng.uniform(20.0, 235.0, size=(n, 3)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to [0, 1].

    Large blurs are done on a coarser grid and upsampled bilinearly: the result is smooth either
    way, and a 100-tap kernel at full resolution was the slowest step of the whole generator.

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        sigma: blur in pixels; larger means bigger features.

    Returns:
        ``(h, w)`` float32 in [0, 1].
    """
    step = max(1, int(sigma // 2))  # keep >= 2 px of blur on the coarse grid
    coarse = (shape[0] // step + 2, shape[1] // step + 2)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), sigma / step, mode="wrap")
    if step > 1:
        noise = ndimage.zoom(noise, step, order=1, grid_mode=False)
    noise = noise[: shape[0], : shape[1]]
    lo, hi = float(noise.min()), float(noise.max())
    return ((noise - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def _stripes(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Sinusoidal stripes of random period and angle, warped by smooth noise; ``(h, w)`` in [0, 1]."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(5.0, 14.0)
    warp = 2.5 * smooth_noise(rng, shape, sigma=max(h, w) / 8.0)  # wavy, not ruler-straight
    phase = 2.0 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + 2.0 * np.pi * warp
    return (0.5 + 0.5 * np.sin(phase)).astype(np.float32)


def _blobs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Soft-edged spots: thresholded smooth noise, lightly blurred; ``(h, w)`` in [0, 1]."""
    noise = smooth_noise(rng, shape, sigma=rng.uniform(2.0, 4.0))
    spots = (noise > rng.uniform(0.45, 0.6)).astype(np.float32)
    return np.asarray(ndimage.gaussian_filter(spots, 1.0, mode="wrap"), dtype=np.float32)


def pattern(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """One scalar pattern in [0, 1].

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        kind: one of ``TEXTURE_KINDS``.

    Returns:
        ``(h, w)`` float32 in [0, 1].

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "noise":
        return smooth_noise(rng, shape, sigma=rng.uniform(2.0, 5.0))
    if kind == "stripes":
        return _stripes(rng, shape)
    if kind == "blobs":
        return _blobs(rng, shape)
    raise ValueError(f"texture kind: expected one of {TEXTURE_KINDS}, got {kind!r}")


def texture(
    rng: np.random.Generator, shape: tuple[int, int], palette: np.ndarray, kind: str | None = None
) -> np.ndarray:
    """A two-colour textured patch with fine grain.

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        palette: ``(n, 3)`` scene palette; the two colours are drawn from it with replacement.
        kind: pattern kind; ``None`` picks one of ``TEXTURE_KINDS`` at random.

    Returns:
        ``(h, w, 3)`` float32 RGB, roughly in [0, 255] (not clipped; illumination clips later).
    """
    kind = kind if kind is not None else TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    colours = palette[rng.choice(len(palette), size=2, replace=False)]  # (2, 3), shared by others
    t = pattern(rng, shape, kind)[..., None]  # (h, w, 1)
    grain = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.7, mode="wrap")[..., None]
    rgb = colours[0] * (1.0 - t) + colours[1] * t + GRAIN * grain / max(float(grain.std()), 1e-6)
    return rgb.astype(np.float32)


def background(rng: np.random.Generator, shape: tuple[int, int], palette: np.ndarray) -> np.ndarray:
    """A background: a large-scale noise layer blended with a second, finer texture.

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        palette: ``(n, 3)`` scene palette.

    Returns:
        ``(h, w, 3)`` float32 RGB.
    """
    coarse = texture(rng, shape, palette, kind="noise")
    fine = texture(rng, shape, palette)
    mix = smooth_noise(rng, shape, sigma=max(shape) / 6.0)[..., None]  # (h, w, 1)
    return (coarse * (1.0 - mix) + fine * mix).astype(np.float32)
