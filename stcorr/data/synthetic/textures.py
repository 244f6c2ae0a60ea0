"""Procedural textures for the synthetic scenes: noise, stripes, blobs, 1/f noise, pebbles, octaves.

The point of the synthetic data is that dense correspondence is learnable (every surface carries
local detail that moves with it, as in the videos STT and CRW train on: Li & Liu, CVPR 2023;
Jabri et al., NeurIPS 2020) while raw colour matching stays imperfect: every texture of a scene
mixes colours drawn from one small scene palette (``palette.py``: often grey or nearly grey), so two
surfaces often share colours and only their pattern tells them apart. The natural-image-like kinds
follow what real surfaces look like: a 1/f^beta power spectrum with beta near 2 (``pink``; van der
Schaaf & van Hateren, Vision Res. 1996), cells with their own shade and dark borders (``pebbles``:
gravel, cobbles, foliage) and detail at several scales at once (``octaves``).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from stcorr.data.synthetic.palette import PALETTE_SIZE, random_palette

__all__ = ["PALETTE_SIZE", "TEXTURE_KINDS", "background", "pattern", "pink_noise", "random_palette",
           "texture"]  # fmt: skip

GRAIN = 10.0  # std of the fine grain (0..255 scale): local detail for matching at stride 4-8
CHROMA_SIGMA = 2.0  # px; colour changes are this much smoother than brightness changes
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601 luma weights
GRAIN_SIGMA = 0.7  # px; the grain is white noise blurred this much
TRUNCATE = 3.0  # Gaussian kernels end at 3 sigma
TEXTURE_KINDS = ("noise", "stripes", "blobs", "pink", "pebbles", "octaves")
PINK_BETA = (1.5, 2.5)  # power-spectrum exponent of ``pink``; natural images sit near 2
PEBBLE_CELL = (6.0, 20.0)  # pebble size in pixels: a few per stride-8 feature cell up to ~2 cells
MORTAR = 0.12  # pebble border half-width as a share of the cell size; darkened to MORTAR_SHADE
MORTAR_SHADE = 0.45
OCTAVES = 4  # octaves of ``octaves``, sigma halving each time from 12-32 px down to 1.5-4 px


def gaussian_kernel(sigma: float) -> np.ndarray:
    """1-D Gaussian taps out to ``TRUNCATE`` sigma (at least one either side), summing to 1."""
    radius = max(1, int(TRUNCATE * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return k / k.sum()


GRAIN_STD = float(np.sum(gaussian_kernel(GRAIN_SIGMA) ** 2))  # std of blurred unit noise (separable kernel)


def gaussian_blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur of a 2-D field: two ``correlate1d`` passes (``gaussian_filter`` spends
    more time in Python than in C on the small fields here)."""
    k = gaussian_kernel(sigma)
    return ndimage.correlate1d(ndimage.correlate1d(field, k, axis=0, mode="wrap"), k, axis=1, mode="wrap")


def _unit(field: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] (an affine map: the spectrum's shape is kept); float32."""
    lo, hi = float(field.min()), float(field.max())
    return ((field - lo) / max(hi - lo, 1e-6)).astype(np.float32)


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
    noise = gaussian_blur(rng.standard_normal(coarse, dtype=np.float32), sigma / step)
    if step > 1:  # bilinear upsampling, one axis at a time (3-5x faster than ndimage.zoom)
        noise = _upsample(_upsample(noise, shape[0], step, axis=0), shape[1], step, axis=1)
    return _unit(noise[: shape[0], : shape[1]])


def _upsample(grid: np.ndarray, n_out: int, step: int, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis``: output i samples ``grid`` at ``i / step``; float32."""
    pos = np.arange(n_out) / step
    left = np.floor(pos).astype(np.intp)  # left + 1 < grid.shape[axis]: the grid has 2 spare rows
    frac = (pos - left).astype(np.float32)
    frac = frac[:, None] if axis == 0 else frac[None, :]
    a, b = np.take(grid, left, axis=axis), np.take(grid, left + 1, axis=axis)
    return a + frac * (b - a)


def pink_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Gaussian noise with power spectrum ``|F(f)|^2 ~ f^-beta`` (white noise shaped in Fourier space).

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        beta: spectral exponent; 2 is the average natural image, larger is smoother.

    Returns:
        ``(h, w)`` float32 in [0, 1]; periodic (it tiles without seams).
    """
    h, w = shape
    spectrum = sfft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])  # cycles per pixel
    f[0, 0] = 1.0  # the mean is dropped below; avoids 0 ** -beta
    gain = (f ** (-beta / 2.0)).astype(np.float32)  # amplitude ~ f^(-beta/2): power ~ f^-beta
    gain[0, 0] = 0.0
    return _unit(sfft.irfft2(spectrum * gain, s=shape))


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
    return gaussian_blur(spots, 1.0)


def _octaves(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Fractal sum of smooth noise, sigma halving and amplitude falling by a gain each octave."""
    sigma, gain = rng.uniform(12.0, 32.0), rng.uniform(0.45, 0.7)
    total = np.zeros(shape, dtype=np.float32)
    for octave in range(OCTAVES):
        total += gain**octave * smooth_noise(rng, shape, sigma / 2**octave)
    return _unit(total)


def pebbles(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi cells of a jittered grid (one seed per grid square; Worley, SIGGRAPH 1996).

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        cell: grid pitch in pixels (the typical pebble diameter).

    Returns:
        ``shade`` ``(h, w)`` float32 in [0, 1], one random value per cell, and ``mortar``
        ``(h, w)`` float32 in [MORTAR_SHADE, 1], a brightness factor that darkens the borders.
    """
    h, w = shape
    rows, cols = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2  # with a ring of seeds around
    jitter = rng.uniform(0.15, 0.85, size=(2, rows, cols)).astype(np.float32)
    sy = ((np.arange(rows, dtype=np.float32)[:, None] - 1.0 + jitter[0]) * np.float32(cell)).ravel()
    sx = ((np.arange(cols, dtype=np.float32)[None, :] - 1.0 + jitter[1]) * np.float32(cell)).ravel()
    values = rng.uniform(0.0, 1.0, size=rows * cols).astype(np.float32)
    yy = (np.arange(h, dtype=np.float32) + 0.5)[:, None]  # (h, 1) pixel centres
    xx = (np.arange(w, dtype=np.float32) + 0.5)[None, :]  # (1, w)
    gy, gx = (yy // cell).astype(np.intp) + 1, (xx // cell).astype(np.intp) + 1
    d1 = np.full(shape, np.inf, dtype=np.float32)  # squared distance to the nearest seed
    d2 = np.full(shape, np.inf, dtype=np.float32)  # ... and to the second nearest
    shade = np.zeros(shape, dtype=np.float32)
    for dy in (-1, 0, 1):  # the 3x3 neighbouring squares hold the nearest seed and, nearly always, the next
        for dx in (-1, 0, 1):
            idx = (gy + dy) * cols + (gx + dx)  # (h, w) flat index of the candidate seed
            d = (yy - sy[idx]) ** 2 + (xx - sx[idx]) ** 2
            nearer = d < d1
            d2 = np.where(nearer, d1, np.minimum(d2, d))
            shade = np.where(nearer, values[idx], shade)
            d1 = np.minimum(d1, d)
    edge = 0.5 * (np.sqrt(d2) - np.sqrt(d1))  # ~ distance to the cell border
    mortar = MORTAR_SHADE + (1.0 - MORTAR_SHADE) * np.clip(edge / (MORTAR * cell), 0.0, 1.0)
    return shade, mortar.astype(np.float32)


def _pattern_and_shade(
    rng: np.random.Generator, shape: tuple[int, int], kind: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """``pattern`` plus, for ``pebbles``, the brightness factor of its dark borders."""
    if kind == "noise":
        return smooth_noise(rng, shape, sigma=rng.uniform(2.0, 5.0)), None
    if kind == "stripes":
        return _stripes(rng, shape), None
    if kind == "blobs":
        return _blobs(rng, shape), None
    if kind == "pink":
        return pink_noise(rng, shape, rng.uniform(*PINK_BETA)), None
    if kind == "pebbles":
        return pebbles(rng, shape, rng.uniform(*PEBBLE_CELL))
    if kind == "octaves":
        return _octaves(rng, shape), None
    raise ValueError(f"texture kind: expected one of {TEXTURE_KINDS}, got {kind!r}")


def pattern(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """One scalar pattern in [0, 1].

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        kind: one of ``TEXTURE_KINDS``.

    Returns:
        ``(h, w)`` float32 in [0, 1] (``pebbles``: the cell shades times the border darkening).

    Raises:
        ValueError: unknown ``kind``.
    """
    values, shade = _pattern_and_shade(rng, shape, kind)
    return values if shade is None else values * shade


def random_kind(rng: np.random.Generator, exclude: str | None = None) -> str:
    """A kind of ``TEXTURE_KINDS`` drawn uniformly, other than ``exclude``."""
    kinds = [k for k in TEXTURE_KINDS if k != exclude]
    return kinds[int(rng.integers(len(kinds)))]


def texture(
    rng: np.random.Generator,
    shape: tuple[int, int],
    palette: np.ndarray,
    kind: str | None = None,
    colours: np.ndarray | None = None,
    grain: bool = True,
) -> np.ndarray:
    """A two-colour textured patch with fine grain.

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        palette: ``(n, 3)`` scene palette; the two colours are two different entries of it.
        kind: pattern kind; ``None`` picks one of ``TEXTURE_KINDS`` at random.
        colours: ``(2, 3)`` the two colours to use instead (camouflage: the background's colours).
        grain: add the fine grain (``add_grain``); off for layers blended before it is added.

    Returns:
        ``(h, w, 3)`` float32 RGB, roughly in [0, 255] (not clipped; illumination clips later).
    """
    kind = kind if kind is not None else random_kind(rng)
    if colours is None:
        colours = palette[rng.choice(len(palette), size=2, replace=False)]  # (2, 3), shared by others
    t, shade = _pattern_and_shade(rng, shape, kind)
    c0, c1 = np.asarray(colours[0], np.float32), np.asarray(colours[1], np.float32)
    # Chroma follows a smoothed copy of the pattern, luminance the pattern itself (same Y as an
    # unsmoothed mix): natural images keep their fine detail in luminance (why 4:2:0 video works).
    tc = _unit(gaussian_blur(t, CHROMA_SIGMA))
    rgb = c0 + tc[..., None] * (c1 - c0)  # (h, w, 3)
    rgb += ((t - tc) * float(LUMA @ (c1 - c0)))[..., None]
    if shade is not None:
        rgb *= shade[..., None]
    return add_grain(rng, rgb) if grain else rgb


def add_grain(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Add grey grain of std ``GRAIN`` (white noise blurred by ``GRAIN_SIGMA``) to ``(h, w, 3)`` in place."""
    noise = gaussian_blur(rng.standard_normal(rgb.shape[:2], dtype=np.float32), GRAIN_SIGMA)
    noise *= np.float32(GRAIN / GRAIN_STD)
    rgb += noise[..., None]
    return rgb


def background(
    rng: np.random.Generator,
    shape: tuple[int, int],
    palette: np.ndarray,
    colours: np.ndarray | None = None,
    kind: str | None = None,
) -> np.ndarray:
    """A background: a base texture with patches of a second, large-scale one blended in.

    Args:
        rng: random generator.
        shape: ``(h, w)``.
        palette: ``(n, 3)`` scene palette.
        colours: ``(2, 3)`` the base texture's colours; ``None`` draws them from ``palette``.
        kind: the base texture's pattern; ``None`` draws one.

    Returns:
        ``(h, w, 3)`` float32 RGB; the base covers at least half of it (camouflaged objects wear
        its colours, so they must be what the background mostly shows).
    """
    base = texture(rng, shape, palette, kind=kind, colours=colours, grain=False)
    large = ("noise", "pink", "octaves")[int(rng.integers(3))]
    patches = texture(rng, shape, palette, kind=large, grain=False)
    field = smooth_noise(rng, shape, sigma=max(shape) / 6.0)
    mix = np.clip((field - rng.uniform(0.5, 0.8)) / 0.2, 0.0, 1.0)[..., None]  # (h, w, 1)
    base += mix * (patches - base)
    return add_grain(rng, base)  # once, on the blend: the same grain strength everywhere
