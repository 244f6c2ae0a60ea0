"""Moving textured objects over a panning textured background, with exact per-pixel labels.

Renders the synthetic training videos and the synthetic DAVIS-2017 sequences (semi-supervised VOS,
evaluated by label propagation as in Jabri et al., NeurIPS 2020 and Li & Liu, CVPR 2023). Each object
is a sprite (texture + hard silhouette) placed by an inverse-mapped coordinate grid: nearest lookup
for the silhouette (no anti-aliasing, so ``masks`` is exactly the topmost object per pixel) and
bilinear lookup for the texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from stcorr.data.synthetic import motion as mo
from stcorr.data.synthetic.shapes import random_shape
from stcorr.data.synthetic.textures import background, random_palette, texture

MAX_ATTEMPTS = 12  # redraw motions that miss a required property; deterministic via rng
FIRST_VISIBLE = 0.3  # share of each object that must be visible in frame 0 (DAVIS needs mask 0)
SPRITE_SIDE = (0.35, 0.6)  # sprite side as a share of min(H, W)


@dataclass(frozen=True)
class Sprite:
    """One object's appearance in its own frame.

    Attributes:
        texture: ``(S, S, 3)`` float32 RGB.
        shape: ``(S, S)`` bool silhouette, inside the inscribed disc.
    """

    texture: np.ndarray
    shape: np.ndarray


@dataclass(frozen=True)
class VideoScene:
    """A rendered clip and its exact ground truth.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 composite.
        masks: ``(T, H, W)`` uint8; 0 background, k object k (1-based).
        background: ``(T, H, W, 3)`` uint8 lit background layer.
        object_rgb: ``(K, T, H, W, 3)`` uint8 lit layer of object k+1 (0 where it is absent).
        object_alpha: ``(K, T, H, W)`` bool silhouette of object k+1, occluded or not.
        z_order: object ids from bottom to top.
        motions: per-object pose plans.
        lighting: the illumination plan.
    """

    frames: np.ndarray
    masks: np.ndarray
    background: np.ndarray
    object_rgb: np.ndarray
    object_alpha: np.ndarray
    z_order: tuple[int, ...]
    motions: tuple[mo.Motion, ...]
    lighting: mo.Illumination


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
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32) + np.float32(0.5)  # centres
    dy = yy[None] - motion.centers[:, 0, None, None].astype(np.float32)  # (T, H, W)
    dx = xx[None] - motion.centers[:, 1, None, None].astype(np.float32)
    cos = (np.cos(motion.angles) / motion.scales).astype(np.float32)[:, None, None]
    sin = (np.sin(motion.angles) / motion.scales).astype(np.float32)[:, None, None]
    u = cos * dx + sin * dy + np.float32(side / 2.0)  # sprite x: R(-angle) (p - c) / s
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


def panned_background(texture_rgb: np.ndarray, offsets: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop a moving window from a larger texture, bilinear for sub-pixel pan offsets.

    Args:
        texture_rgb: ``(H + 2 pad, W + 2 pad, 3)`` float32.
        offsets: ``(T, 2)`` window origin ``(y, x)`` per frame, at least 0 and at most 2 pad - 1.
        size: ``(H, W)``.

    Returns:
        ``(T, H, W, 3)`` float32.
    """
    h, w = size
    out = np.empty((len(offsets), h, w, 3), dtype=np.float32)
    for t, (oy, ox) in enumerate(offsets):
        y0, x0 = int(np.floor(oy)), int(np.floor(ox))
        fy, fx = np.float32(oy - y0), np.float32(ox - x0)
        win = texture_rgb[y0 : y0 + h + 1, x0 : x0 + w + 1]  # (h + 1, w + 1, 3)
        top = win[:-1, :-1] * (1 - fx) + win[:-1, 1:] * fx
        bottom = win[1:, :-1] * (1 - fx) + win[1:, 1:] * fx
        out[t] = top * (1 - fy) + bottom * fy
    return out


def _plan(rng: np.random.Generator, frames: int, size: tuple[int, int], sides: list[int]) -> list[mo.Motion]:
    """Object 1 exits and re-enters in long clips, object 2 crosses object 1, the rest roam."""
    plans: list[mo.Motion] = []
    for k, side in enumerate(sides):
        scales, angles = mo.scale_curve(rng, frames), mo.spin(rng, frames)
        radius = side / 2.0  # silhouettes stay inside the inscribed disc
        if k == 0 and frames >= mo.EXIT_MIN_FRAMES:
            centers = mo.exit_path(rng, frames, size, radius * float(scales.max()))
        elif k == 1:  # meet object 1 at t_m: occlusion (checked by _acceptable)
            first = plans[0]
            t_m = mo.meeting_frame(rng, first.centers, size)
            heading = rng.uniform(0.0, 2.0 * np.pi)
            reach = 0.35 * (radius * scales[t_m] + sides[0] / 2.0 * first.scales[t_m])
            anchor = first.centers[t_m] + reach * np.array([np.sin(heading), np.cos(heading)])
            centers = mo.drift_path(rng, frames, size, anchor, t_m)
        else:
            anchor = rng.uniform(mo.BOX[0] + 0.1, mo.BOX[1] - 0.1, size=2) * np.array(size)
            centers = mo.drift_path(rng, frames, size, anchor, int(rng.integers(frames)))
        plans.append(mo.Motion(centers, scales, angles))
    return plans


@dataclass(frozen=True)
class _Layout:
    """Where the objects are: plans, stacking order, silhouettes, sampled colours and labels."""

    plans: tuple[mo.Motion, ...]
    z_order: tuple[int, ...]
    alpha: np.ndarray  # (K, T, H, W) bool
    colours: tuple[np.ndarray, ...]  # K x (N_k, 3) float32
    masks: np.ndarray  # (T, H, W) uint8


def _layout(rng: np.random.Generator, frames: int, size: tuple[int, int], sprites: list[Sprite]) -> _Layout:
    """One draw of the object motions and stacking order, rendered to silhouettes and labels."""
    plans = tuple(_plan(rng, frames, size, [s.shape.shape[0] for s in sprites]))
    z_order = tuple(int(k) + 1 for k in rng.permutation(len(sprites)))
    layers = [sprite_layer(sprite, plan, size) for sprite, plan in zip(sprites, plans, strict=True)]
    alpha = np.stack([a for a, _ in layers])  # (K, T, H, W)
    masks = np.zeros((frames, *size), dtype=np.uint8)
    for k in z_order:  # painter's order: the last one drawn is on top
        masks[alpha[k - 1]] = k
    return _Layout(plans, z_order, alpha, tuple(c for _, c in layers), masks)


def _acceptable(layout: _Layout) -> bool:
    """Every object well visible in frame 0, some overlap, and the planned exit really happens."""
    objects, frames = layout.alpha.shape[:2]
    for k in range(objects):
        full = layout.alpha[k, 0].sum()
        if full == 0 or (layout.masks[0] == k + 1).sum() < FIRST_VISIBLE * full:
            return False
    if objects >= 2 and not (layout.alpha.sum(axis=0) >= 2).any():
        return False
    if frames >= mo.EXIT_MIN_FRAMES:
        area = layout.alpha[0].sum(axis=(1, 2))
        if not (area == 0).any() or area[-1] == 0:
            return False
    return True


def render_video(rng: np.random.Generator, frames: int, size: tuple[int, int], objects: int) -> VideoScene:
    """Render a clip of ``objects`` moving textured objects with exact labels.

    Scales and rotations change over time, objects cross (occlusion), object 1 leaves the frame and
    re-enters when ``frames >= EXIT_MIN_FRAMES``, the background pans and the light drifts. Every
    object shows at least ``FIRST_VISIBLE`` of itself in frame 0. Motions that miss one of these
    are redrawn (up to ``MAX_ATTEMPTS`` times) with the same sprites.

    Args:
        rng: random generator; the clip is a pure function of its state.
        frames: clip length T.
        size: ``(H, W)``.
        objects: number of objects K.

    Returns:
        The scene; ``frames[masks == k] == object_rgb[k - 1][masks == k]`` and
        ``frames[masks == 0] == background[masks == 0]`` hold exactly.

    Raises:
        ValueError: non-positive ``frames`` or ``objects``, or a side below 8 pixels.
    """
    if frames < 1 or objects < 1 or min(size) < 8:
        raise ValueError(
            f"render_video: expected frames >= 1, objects >= 1, size >= 8, got {frames}, {objects}, {size}"
        )
    palette = random_palette(rng)
    sides = [max(4, round(rng.uniform(*SPRITE_SIDE) * min(size))) for _ in range(objects)]
    sprites = [Sprite(texture(rng, (s, s), palette), random_shape(rng, s)) for s in sides]
    layout = _layout(rng, frames, size, sprites)
    for _ in range(MAX_ATTEMPTS - 1):
        if _acceptable(layout):
            break
        layout = _layout(rng, frames, size, sprites)
    offsets, pad = mo.pan_offsets(rng, frames)
    bg_texture = background(rng, (size[0] + 2 * pad, size[1] + 2 * pad), palette)
    lighting = mo.illumination(rng, frames)

    bg = lighting.apply(panned_background(bg_texture, offsets, size))
    object_rgb = np.zeros((objects, frames, *size, 3), dtype=np.uint8)
    for k in range(objects):
        alpha = layout.alpha[k]
        object_rgb[k][alpha] = lighting.apply_at(layout.colours[k], np.nonzero(alpha)[0])
    frames_rgb = bg.copy()
    for k in layout.z_order:
        frames_rgb[layout.alpha[k - 1]] = object_rgb[k - 1][layout.alpha[k - 1]]
    return VideoScene(
        frames_rgb, layout.masks, bg, object_rgb, layout.alpha, layout.z_order, layout.plans, lighting
    )


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A still image: 1-4 textured objects on a textured background (ImageNet stand-in).

    Args:
        rng: random generator.
        size: side of the square image.

    Returns:
        ``image`` ``(size, size, 3)`` uint8 and its label map ``(size, size)`` uint8.
    """
    scene = render_video(rng, 1, (size, size), int(rng.integers(1, 5)))
    return scene.frames[0], scene.masks[0]
