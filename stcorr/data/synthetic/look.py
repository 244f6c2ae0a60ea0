"""How a synthetic scene is coloured: its palette, the background's base texture, the sprites.

Training clips and still images take ``NATURAL_LOOK``: palettes are often grey or muted
(``palette.py``), and a share of objects wear the background's own two colours in another pattern
(camouflage, one of the challenges of the real-footage benchmark), so that only texture tells them
apart and matching raw colour is no shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stcorr.data.synthetic.shapes import random_shape
from stcorr.data.synthetic.sprites import Sprite
from stcorr.data.synthetic.textures import random_kind, random_palette, texture

SPRITE_SIDE = (0.35, 0.6)  # sprite side as a share of min(H, W)
CAMOUFLAGE = 0.3  # share of objects wearing the background's colours in another pattern


@dataclass(frozen=True)
class LookSpec:
    """How a scene is coloured.

    Attributes:
        palette_style: ``palette.random_palette``'s style; ``None`` draws grey, muted or vivid.
        camouflage: share of objects wearing the background's colours in another pattern.
    """

    palette_style: str | None = None
    camouflage: float = CAMOUFLAGE


NATURAL_LOOK = LookSpec()  # training videos and still images: no colour shortcut to lean on
# The synthetic benchmarks are smoke tests (the real challenge is data.footage): vivid palettes and
# no camouflage keep them trackable by colour, so a Lab baseline still beats copying the first mask.
BENCHMARK_LOOK = LookSpec("vivid", 0.0)


@dataclass(frozen=True)
class Look:
    """A scene's appearance.

    Attributes:
        palette: ``(n, 3)`` scene palette.
        bg_colours: ``(2, 3)`` the background base texture's colours.
        bg_kind: its pattern kind.
        sprites: one per object.
        camouflaged: per object, whether it wears ``bg_colours`` (in a pattern other than ``bg_kind``).
    """

    palette: np.ndarray
    bg_colours: np.ndarray
    bg_kind: str
    sprites: list[Sprite]
    camouflaged: tuple[bool, ...]


def draw_look(
    rng: np.random.Generator, size: tuple[int, int], objects: int, spec: LookSpec = NATURAL_LOOK
) -> Look:
    """Draw the appearance; a ``spec.camouflage`` share of objects wear the background's two colours.

    Args:
        rng: random generator.
        size: ``(H, W)`` of the frame (sprite sides are a share of its short side).
        objects: number of sprites.
        spec: palette style and camouflage share.

    Returns:
        The look.
    """
    palette = random_palette(rng, style=spec.palette_style)
    bg_colours = palette[rng.choice(len(palette), size=2, replace=False)]
    bg_kind = random_kind(rng)
    sprites, camouflaged = [], []
    for _ in range(objects):
        side = max(4, round(rng.uniform(*SPRITE_SIDE) * min(size)))
        camouflaged.append(bool(rng.uniform() < spec.camouflage))
        if camouflaged[-1]:  # same colours, another pattern: only texture tells them apart
            kind = random_kind(rng, exclude=bg_kind)
            tex = texture(rng, (side, side), palette, kind=kind, colours=bg_colours[rng.permutation(2)])
        else:
            tex = texture(rng, (side, side), palette)
        sprites.append(Sprite(tex, random_shape(rng, side)))
    return Look(palette, bg_colours, bg_kind, sprites, tuple(camouflaged))
