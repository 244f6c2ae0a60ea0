"""Scene palettes: grey, low-saturation or colourful, so colour alone rarely identifies a surface.

Real footage is mostly dull: grey roads and walls, brown-green vegetation, skin, clothes. A tracker
trained on vivid random colours learns to match hue and fails on such footage (and on camouflage,
where object and background share colours). So a fifth of the scenes are grey and a quarter nearly
grey, and every texture of a scene draws its colours from one small palette (``PALETTE_SIZE``).
Not more: STT reconstructs a dropped a/b channel (STT Eq. 4-7; Li & Liu, CVPR 2023), and a grey clip
has a = b = 0 everywhere: nothing to reconstruct, no gradient from that loss.
"""

from __future__ import annotations

import numpy as np

PALETTE_SIZE = 5  # colours per scene; small, so textures share colours (no unique-colour shortcut)
STYLES = ("grey", "muted", "vivid")
STYLE_P = (0.2, 0.25, 0.55)  # grey, low saturation, vivid: see the module docstring
MUTED_SATURATION = (0.1, 0.3)  # HSV saturation of a "muted" palette
VALUE = (20.0, 235.0)  # 0..255 levels, leaving head-room for grain and illumination


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] to RGB in [0, 1]; ``(..., 3)`` -> ``(..., 3)`` (the textbook hexcone formula)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i = sector.astype(np.intp) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def random_palette(rng: np.random.Generator, n: int = PALETTE_SIZE, style: str | None = None) -> np.ndarray:
    """Random scene palette.

    Args:
        rng: random generator.
        n: number of colours.
        style: ``grey`` (R = G = B), ``muted`` (HSV saturation in ``MUTED_SATURATION``) or ``vivid``
            (uniform RGB); ``None`` draws one with probabilities ``STYLE_P``.

    Returns:
        ``(n, 3)`` float32 RGB colours in ``VALUE`` (roughly, for ``muted``).

    Raises:
        ValueError: unknown ``style``.
    """
    style = style if style is not None else STYLES[int(rng.choice(len(STYLES), p=STYLE_P))]
    lo, hi = VALUE
    if style == "grey":
        return np.repeat(rng.uniform(lo, hi, size=(n, 1)), 3, axis=1).astype(np.float32)
    if style == "muted":
        hsv = np.stack(
            [rng.uniform(0.0, 1.0, n), rng.uniform(*MUTED_SATURATION, n), rng.uniform(lo, hi, n) / 255.0],
            axis=1,
        )
        return (255.0 * hsv_to_rgb(hsv)).astype(np.float32)
    if style == "vivid":
        return rng.uniform(lo, hi, size=(n, 3)).astype(np.float32)
    raise ValueError(f"palette style: expected one of {STYLES}, got {style!r}")
