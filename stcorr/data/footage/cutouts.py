"""Objects cut from real photos: a photo crop as texture, a hard silhouette to cut it with.

Silhouettes are scikit-image's horse, the logo's own cut-out, or a smooth random shape
(``stcorr.data.synthetic.shapes``). Textures are crops of scikit-image's photos or, for
camouflage, of the background clip itself. Each cut-out is a ``Sprite`` of the synthetic renderer,
so placing it (``sprite_layer``) gives the exact coverage the ground truth is made of.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from stcorr.data.footage import media
from stcorr.data.synthetic.scene import Sprite
from stcorr.data.synthetic.shapes import random_shape

SILHOUETTES = ("shape", "shape", "shape", "horse", "horse", "logo")  # drawn uniformly: half random shapes
HORSE_GROW = 1.3  # the horse fills 23% of its square, a random shape 38%: sqrt(38 / 23) evens the areas
CROP_SHARE = (0.35, 0.9)  # texture crop side as a share of the photo's short side


@dataclass(frozen=True)
class Cutout:
    """One object's appearance and where it came from.

    Attributes:
        sprite: texture ``(S, S, 3)`` float32 on 0..255 and silhouette ``(S, S)`` bool.
        source: provenance for ``sequences.json`` (photo or clip, crop box, silhouette, tint).
        reach: largest distance from the sprite centre to a silhouette pixel's corner, sprite px.
        inner: radius of a disc around the sprite centre that lies inside the silhouette, sprite px.
    """

    sprite: Sprite
    source: dict[str, Any]
    reach: float
    inner: float


def cutout(texture: np.ndarray, shape: np.ndarray, source: dict[str, Any]) -> Cutout:
    """Wrap a texture ``(S, S, 3)`` and silhouette ``(S, S)`` bool, measuring reach and inner radius."""
    side = shape.shape[0]
    iy, ix = np.nonzero(shape)
    off_y, off_x = np.abs(iy + 0.5 - side / 2.0) + 0.5, np.abs(ix + 0.5 - side / 2.0) + 0.5
    reach = float(np.hypot(off_y, off_x).max()) if len(iy) else 0.0
    c = side // 2  # the pixel holding the centre; its centre is within 1/sqrt(2) px of it
    inner = float(ndimage.distance_transform_edt(shape)[c, c]) - 1.5 if shape[c, c] else 0.0
    sprite = Sprite(np.ascontiguousarray(texture, dtype=np.float32), shape)
    return Cutout(sprite, source, reach, max(inner, 0.0))


def _resize(image: np.ndarray, side: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """Lanczos resample of the ``box`` (x0, y0, x1, y1) of ``(H, W, 3)`` uint8 to ``(side, side, 3)``."""
    out = Image.fromarray(np.ascontiguousarray(image)).resize((side, side), Image.Resampling.LANCZOS, box=box)
    return np.asarray(out, dtype=np.float32)


def texture_crop(rng: np.random.Generator, image: np.ndarray, side: int) -> tuple[np.ndarray, list[int]]:
    """A random square crop of ``image`` ``(H, W, 3)`` uint8, resized to ``(side, side, 3)`` float32.

    Returns:
        The texture and its crop box ``[x0, y0, x1, y1]`` in the image's pixels.
    """
    h, w = image.shape[:2]
    crop = max(8, round(rng.uniform(*CROP_SHARE) * min(h, w)))
    y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    box = [x0, y0, x0 + crop, y0 + crop]
    return _resize(image, side, (x0, y0, x0 + crop, y0 + crop)), box


def _square_silhouette(mask: np.ndarray, side: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Centre a silhouette in the square whose inscribed disc holds it; resize to ``side``.

    Returns:
        ``(side, side)`` bool and the square's box ``(x0, y0, x1, y1)`` in ``mask``'s pixels.
    """
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max() + 1) / 2.0, (xs.min() + xs.max() + 1) / 2.0
    half = float(np.hypot(np.abs(ys + 0.5 - cy) + 0.5, np.abs(xs + 0.5 - cx) + 0.5).max()) + 1.0
    box = (cx - half, cy - half, cx + half, cy + half)
    pad = int(np.ceil(half))  # the square may reach past the image: pad with "outside"
    padded = Image.fromarray(np.pad(mask, pad).astype(np.float32))
    shifted = tuple(v + pad for v in box)
    soft = np.asarray(padded.resize((side, side), Image.Resampling.BILINEAR, box=shifted))
    return soft >= 0.5, box  # hard mask: ground truth needs no partial pixels


def _tinted(rng: np.random.Generator, name: str,
            texture: np.ndarray) -> tuple[np.ndarray, list[float] | None]:
    """Grey photos get a random colour cast, so they read as coloured objects, not as grey patches."""
    if name not in media.GREY_PHOTOS:
        return texture, None
    tint = rng.uniform(0.45, 1.0, size=3)
    tint /= tint.max()
    return texture * tint.astype(np.float32), [round(float(v), 4) for v in tint]


class PhotoCutter:
    """Cuts the photo objects of one sequence, never reusing a photo there (the logo counts as
    one): in a sequence only the twins should look alike."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def _pick(self, rng: np.random.Generator, choices: tuple[str, ...]) -> str:
        fresh = [c for c in choices if c not in self.used] or list(choices)
        name = str(rng.choice(fresh))
        self.used.add(name)
        return name

    def __call__(self, rng: np.random.Generator, side: int, silhouette: str | None = None) -> Cutout:
        """A photo cut-out of sprite side ``side``.

        Args:
            rng: random generator.
            side: sprite side S in pixels (``HORSE_GROW`` times that for the horse).
            silhouette: ``"shape"`` (random smooth shape over a photo crop), ``"horse"`` (the
                horse filled with a photo crop), ``"logo"`` (the logo with its own pixels), or
                ``"ellipse"`` (a random ellipse, solid enough to hide another object); None draws
                from ``SILHOUETTES`` (the logo only while unused).

        Returns:
            The cut-out; its ``source`` names the photo, the crop and the silhouette.
        """
        kinds = SILHOUETTES if "logo" not in self.used else tuple(k for k in SILHOUETTES if k != "logo")
        kind = silhouette or str(rng.choice(kinds))
        if kind == "logo":
            self.used.add("logo")
            return _logo_cutout(side)
        name = self._pick(rng, media.PHOTOS)
        side = round(side * HORSE_GROW) if kind == "horse" else side
        texture, crop = texture_crop(rng, media.photo(name), side)
        texture, tint = _tinted(rng, name, texture)
        if kind == "horse":
            shape, _ = _square_silhouette(media.horse(), side)
        else:
            shape = random_shape(rng, side, "ellipse" if kind == "ellipse" else None)
        source = {"photo": name, "crop_xyxy": crop, "silhouette": kind, "tint": tint}
        return cutout(texture, shape, source)


def _logo_cutout(side: int) -> Cutout:
    """scikit-image's logo, cut out along its own outline (``media.logo``)."""
    rgb, alpha = media.logo()
    shape, box = _square_silhouette(alpha, side)
    h, w = rgb.shape[:2]
    pad = int(np.ceil(max(0.0, -box[0], -box[1], box[2] - w, box[3] - h)))
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    texture = _resize(padded, side, (box[0] + pad, box[1] + pad, box[2] + pad, box[3] + pad))
    return cutout(texture, shape, {"photo": "logo", "silhouette": "logo cut-out"})


def clip_cutout(rng: np.random.Generator, frame: np.ndarray, side: int, crop: int,
                source: dict[str, Any]) -> Cutout:
    """A random-shape object textured with a ``crop`` x ``crop`` window of a clip frame.

    Args:
        rng: random generator.
        frame: ``(H_c, W_c, 3)`` uint8 clip frame (already flipped like the background).
        side: sprite side S.
        crop: window side in clip pixels (clipped to the frame).
        source: provenance (clip name and frame index); the crop box is added.
    """
    h, w = frame.shape[:2]
    crop = int(min(crop, h, w))
    y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    texture = _resize(frame, side, (x0, y0, x0 + crop, y0 + crop))
    shape = random_shape(rng, side)
    return cutout(texture, shape, {**source, "crop_xyxy": [x0, y0, x0 + crop, y0 + crop],
                                   "silhouette": "shape"})


def recoloured(item: Cutout, mean: np.ndarray, std: np.ndarray) -> Cutout:
    """Match the silhouette's per-channel mean and std to ``mean``, ``std`` ``(3,)`` (camouflage).

    The texture's statistics are taken over the silhouette only: that is what is seen.
    """
    tex, shape = item.sprite.texture, item.sprite.shape
    inside = tex[shape]  # (N, 3)
    t_mean, t_std = inside.mean(axis=0), np.maximum(inside.std(axis=0), 1.0)
    matched = (tex - t_mean) / t_std * std.astype(np.float32) + mean.astype(np.float32)
    np.clip(matched, 0.0, 255.0, out=matched)
    source = {**item.source, "matched_mean": [round(float(v), 2) for v in mean],
              "matched_std": [round(float(v), 2) for v in std]}
    return replace(item, sprite=Sprite(matched.astype(np.float32), shape), source=source)
