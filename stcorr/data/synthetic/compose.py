"""Stacking a clip's layers: object patches at their poses, the panned background, optional blur.

Objects are rendered per frame in a window around them (``sprite_layer`` on the window: cost grows
with the object, not the frame). Frames are stacked bottom to top, unlit; lighting and quantisation
come once, afterwards. Without blur a layer is copied onto the pixels of its silhouette, so each
pixel is exactly its topmost layer and the masks are exactly the pixels. With blur, a layer is the
"over" composite of its premultiplied, smeared colour and coverage: coverage is fractional near
moving edges, while masks and silhouettes stay those of the frame's central pose (the plan's pose
at integer t), the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stcorr.data.synthetic import blur
from stcorr.data.synthetic import motion as mo
from stcorr.data.synthetic.kinematics import CameraPan
from stcorr.data.synthetic.sprites import Sprite, sprite_layer


@dataclass(frozen=True)
class Patch:
    """One object in one frame: its silhouette in a window of the frame, and the colours there.

    Attributes:
        top: window row in the frame.
        left: window column in the frame.
        alpha: ``(h, w)`` bool silhouette.
        colours: ``(N, 3)`` float32 texture at the N pixels of ``alpha`` in C order.
    """

    top: int
    left: int
    alpha: np.ndarray
    colours: np.ndarray


def object_patches(sprite: Sprite, motion: mo.Motion, size: tuple[int, int]) -> list[Patch]:
    """One ``Patch`` per frame: the window holds the scaled silhouette's disc, clipped to the frame.

    Assumes silhouettes inside the sprite's inscribed disc (``shapes.random_shape``): the window
    is then about half the rotated square's area.
    """
    side = sprite.shape.shape[0]
    patches = []
    for t in range(len(motion.centers)):
        extent = side / 2.0 * float(motion.scales[t]) + 2.0  # disc radius and a pixel either way
        cy, cx = motion.centers[t]
        y0, x0 = max(0, int(np.floor(cy - extent))), max(0, int(np.floor(cx - extent)))
        y1, x1 = min(size[0], int(np.ceil(cy + extent)) + 1), min(size[1], int(np.ceil(cx + extent)) + 1)
        if y1 <= y0 or x1 <= x0:  # wholly outside the frame
            patches.append(Patch(0, 0, np.zeros((0, 0), bool), np.zeros((0, 3), np.float32)))
            continue
        local = mo.Motion(motion.centers[t : t + 1] - np.array([y0, x0], dtype=np.float64),
                          motion.scales[t : t + 1], motion.angles[t : t + 1])  # fmt: skip
        alpha, colours = sprite_layer(sprite, local, (y1 - y0, x1 - x0))
        patches.append(Patch(y0, x0, alpha[0], colours))
    return patches


def silhouettes(patches: list[Patch], size: tuple[int, int]) -> np.ndarray:
    """``(T, H, W)`` bool: the patches' silhouettes placed in the frame."""
    alpha = np.zeros((len(patches), *size), dtype=bool)
    for t, p in enumerate(patches):
        alpha[t, p.top : p.top + p.alpha.shape[0], p.left : p.left + p.alpha.shape[1]] = p.alpha
    return alpha


def velocities(positions: np.ndarray) -> np.ndarray:
    """Per-frame displacement ``(T, 2)`` around each frame: central differences, one-sided at the ends."""
    if len(positions) < 2:
        return np.zeros_like(positions)
    return np.gradient(positions, axis=0)


def crop(canvas: np.ndarray, origin: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear window ``(h, w, 3)`` float32 of ``canvas`` whose top-left pixel sits at ``origin``."""
    h, w = shape
    y0, x0 = int(np.floor(origin[0])), int(np.floor(origin[1]))
    fy, fx = np.float32(origin[0] - y0), np.float32(origin[1] - x0)
    win = canvas[y0 : y0 + h + 1, x0 : x0 + w + 1]  # (h + 1, w + 1, 3)
    top = win[:-1, :-1] * (1 - fx) + win[:-1, 1:] * fx
    bottom = win[1:, :-1] * (1 - fx) + win[1:, 1:] * fx
    return np.asarray(top * (1 - fy) + bottom * fy, dtype=np.float32)


def background_frames(
    canvas: np.ndarray, camera: CameraPan, size: tuple[int, int], smear: bool
) -> np.ndarray:
    """The background seen through the moving window, smeared along the pan if ``smear``.

    Args:
        canvas: ``(H + 2 pad, W + 2 pad, 3)`` float32 texture.
        camera: the pan; its ``margin`` covers the blur kernel.
        size: ``(H, W)``.
        smear: blur along the pan's per-frame displacement (the shake is sub-pixel: not blurred).

    Returns:
        ``(T, H, W, 3)`` float32.
    """
    out = np.empty((len(camera.offsets), *size, 3), dtype=np.float32)
    steps = velocities(camera.smooth)
    for t, origin in enumerate(camera.offsets):
        taps = blur.line_taps(steps[t]) if smear else blur.identity_taps()
        r = int(max(np.abs(taps[0]).max(), np.abs(taps[1]).max()))
        if r == 0 and len(taps[2]) == 1:
            out[t] = crop(canvas, origin, size)
            continue
        assert r <= camera.margin, "the pan keeps a margin for the widest kernel"
        window = crop(canvas, origin - r, (size[0] + 2 * r, size[1] + 2 * r))
        out[t] = blur.filter_window(window, taps, r)
    return out


def stack_frame(canvas: np.ndarray, patch: Patch, taps: blur.Taps) -> np.ndarray:
    """Lay one object patch over a frame, in place: a copy when sharp, "over" when smeared.

    Args:
        canvas: ``(H, W, 3)`` float32 frame so far.
        patch: the object in this frame.
        taps: its blur kernel (``identity_taps()`` for none).

    Returns:
        ``(N, 3)`` float32 the layer's colour (smeared and un-premultiplied, which is exact where
        its coverage is 1) at the patch's N silhouette pixels, C order.
    """
    h, w = patch.alpha.shape
    if len(taps[2]) == 1:  # sharp: a plain copy, exact
        canvas[patch.top : patch.top + h, patch.left : patch.left + w][patch.alpha] = patch.colours
        return patch.colours
    layer = np.zeros((h, w, 4), dtype=np.float32)
    layer[patch.alpha, :3] = patch.colours
    layer[patch.alpha, 3] = 1.0
    smeared, r = blur.smear_layer(layer, taps)
    own = smeared[r : r + h, r : r + w][patch.alpha]  # (N, 4); coverage >= the centre tap's weight
    y0, x0 = patch.top - r, patch.left - r
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + smeared.shape[0], canvas.shape[0]), min(x0 + smeared.shape[1], canvas.shape[1])
    if cy1 > cy0 and cx1 > cx0:
        part = smeared[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        region = canvas[cy0:cy1, cx0:cx1]
        region *= 1.0 - part[..., 3:]
        region += part[..., :3]
    return own[:, :3] / own[:, 3:]


def stack(
    background: np.ndarray,
    patches: list[list[Patch]],
    motions: tuple[mo.Motion, ...],
    z_order: tuple[int, ...],
    smear: bool,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Composite the objects over the background, frame by frame, bottom to top.

    Args:
        background: ``(T, H, W, 3)`` float32 background layer.
        patches: ``patches[k][t]`` of object k+1.
        motions: their plans (for the blur's per-frame displacement).
        z_order: object ids from bottom to top.
        smear: blur every object along its motion.

    Returns:
        ``(T, H, W, 3)`` float32 unlit frames, and per object the ``(N_k, 3)`` colours at its
        silhouette pixels in C order of its ``(T, H, W)`` silhouette.
    """
    frames = background.copy()
    colours: list[list[np.ndarray]] = [[] for _ in patches]
    steps = [velocities(m.centers) for m in motions]
    for t in range(len(frames)):
        for k in z_order:
            taps = blur.line_taps(steps[k - 1][t]) if smear else blur.identity_taps()
            colours[k - 1].append(stack_frame(frames[t], patches[k - 1][t], taps))
    return frames, [np.concatenate(c) if c else np.zeros((0, 3), np.float32) for c in colours]


def panned_background(texture_rgb: np.ndarray, offsets: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop a moving window from a larger texture, bilinear for sub-pixel pan offsets (no blur).

    Args:
        texture_rgb: ``(H + 2 pad, W + 2 pad, 3)`` float32.
        offsets: ``(T, 2)`` window origin ``(y, x)`` per frame, at least 0 and at most 2 pad - 1.
        size: ``(H, W)``.

    Returns:
        ``(T, H, W, 3)`` float32.
    """
    return np.stack([crop(texture_rgb, origin, size) for origin in offsets])
