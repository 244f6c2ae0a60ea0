"""Moving textured objects over a panning textured background, with exact per-pixel labels.

Renders the synthetic training videos and the synthetic DAVIS-2017 sequences (semi-supervised VOS,
evaluated by label propagation as in Jabri et al., NeurIPS 2020 and Li & Liu, CVPR 2023). Each object
is a sprite (texture + hard silhouette, ``sprites.py``) coloured as ``look.py`` says and moving at
a log-normal speed (``kinematics.py``); layers are stacked, optionally motion-blurred, by
``compose.py``. ``render_video``'s defaults are the benchmarks' scenes (slow, sharp, vivid); the
training clips ask for their motion statistics and ``NATURAL_LOOK``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stcorr.data.synthetic import blur, compose
from stcorr.data.synthetic import kinematics as kin
from stcorr.data.synthetic import motion as mo
from stcorr.data.synthetic.compose import panned_background
from stcorr.data.synthetic.look import BENCHMARK_LOOK, NATURAL_LOOK, LookSpec, draw_look
from stcorr.data.synthetic.sprites import Sprite, sprite_layer
from stcorr.data.synthetic.textures import background

__all__ = ["Sprite", "VideoScene", "panned_background", "render_image", "render_video", "sprite_layer"]

MAX_ATTEMPTS = 12  # redraw motions that miss a required property; deterministic via rng
FIRST_VISIBLE = 0.3  # share of each object that must be visible in frame 0 (DAVIS needs mask 0)


@dataclass(frozen=True)
class VideoScene:
    """A rendered clip and its exact ground truth.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 composite.
        masks: ``(T, H, W)`` uint8; 0 background, k object k (1-based): the topmost silhouette at
            the frame's central pose, blur or not.
        background: ``(T, H, W, 3)`` uint8 lit (and blurred) background layer.
        object_rgb: ``(K, T, H, W, 3)`` uint8 lit (and blurred) colour of object k+1 on its
            silhouette (0 where it is absent).
        object_alpha: ``(K, T, H, W)`` bool silhouette of object k+1, occluded or not.
        z_order: object ids from bottom to top.
        motions: per-object pose plans.
        lighting: the illumination plan.
        camera: the background's pan (smooth path and shaken window origins).
    """

    frames: np.ndarray
    masks: np.ndarray
    background: np.ndarray
    object_rgb: np.ndarray
    object_alpha: np.ndarray
    z_order: tuple[int, ...]
    motions: tuple[mo.Motion, ...]
    lighting: mo.Illumination
    camera: kin.CameraPan


def _plan(
    rng: np.random.Generator, frames: int, size: tuple[int, int], sides: list[int], speeds: list[float],
    spec: kin.MotionSpec,
) -> tuple[list[mo.Motion], bool]:  # fmt: skip
    """Object 1 exits and re-enters (when it can), object 2 crosses object 1, the rest roam.

    Returns:
        The plans and whether object 1 is planned to leave the frame.
    """
    plans: list[mo.Motion] = []
    lo, hi = kin.box(size)
    exits = False
    for k, side in enumerate(sides):
        scales, angles = mo.scale_curve(rng, frames), mo.spin(rng, frames)
        radius = side / 2.0  # silhouettes stay inside the inscribed disc
        centers = None
        if k == 0 and frames >= mo.EXIT_MIN_FRAMES:
            reach = radius * float(scales.max())
            if spec.exit_bump:
                centers = mo.exit_path(rng, frames, size, reach)
            else:
                centers = kin.exit_bounce(rng, frames, size, reach, speeds[k])
            exits = centers is not None
        elif k == 1:  # meet object 1 at t_m: occlusion (checked by _acceptable)
            first = plans[0]
            t_m = mo.meeting_frame(rng, first.centers, size)
            reach = 0.35 * (radius * scales[t_m] + sides[0] / 2.0 * first.scales[t_m])
            anchor = first.centers[t_m] + reach * kin.heading(rng)
            centers = kin.path_through(anchor, speeds[k] * kin.heading(rng), t_m, frames, lo, hi)
        if centers is None:
            anchor = rng.uniform(mo.BOX[0] + 0.1, mo.BOX[1] - 0.1, size=2) * np.array(size)
            t_a = int(rng.integers(frames))
            centers = kin.path_through(anchor, speeds[k] * kin.heading(rng), t_a, frames, lo, hi)
        plans.append(mo.Motion(centers, scales, angles))
    return plans, exits


@dataclass(frozen=True)
class _Layout:
    """Where the objects are: plans, stacking order, silhouettes, per-frame patches and labels."""

    plans: tuple[mo.Motion, ...]
    z_order: tuple[int, ...]
    alpha: np.ndarray  # (K, T, H, W) bool
    patches: list[list[compose.Patch]]  # [k][t]
    masks: np.ndarray  # (T, H, W) uint8
    exits: bool  # object 1 is planned to leave the frame and come back


def _drawn_layout(rng: np.random.Generator, frames: int, size: tuple[int, int], sprites: list[Sprite],
                  speeds: list[float], spec: kin.MotionSpec) -> _Layout:
    """A layout that passes :func:`_acceptable`, drawn up to ``MAX_ATTEMPTS`` times (the last
    draw is kept whatever it shows)."""
    layout = _layout(rng, frames, size, sprites, speeds, spec)
    for _ in range(MAX_ATTEMPTS - 1):
        if _acceptable(layout):
            break
        layout = _layout(rng, frames, size, sprites, speeds, spec)
    return layout


def _layout(
    rng: np.random.Generator, frames: int, size: tuple[int, int], sprites: list[Sprite], speeds: list[float],
    spec: kin.MotionSpec,
) -> _Layout:  # fmt: skip
    """One draw of the object paths and stacking order (speeds fixed), rendered to silhouettes and labels."""
    plans, exits = _plan(rng, frames, size, [s.shape.shape[0] for s in sprites], speeds, spec)
    z_order = tuple(int(k) + 1 for k in rng.permutation(len(sprites)))
    patches = [compose.object_patches(s, plan, size) for s, plan in zip(sprites, plans, strict=True)]
    alpha = np.stack([compose.silhouettes(p, size) for p in patches])  # (K, T, H, W)
    masks = np.zeros((frames, *size), dtype=np.uint8)
    for k in z_order:  # painter's order: the last one drawn is on top
        masks[alpha[k - 1]] = k
    return _Layout(tuple(plans), z_order, alpha, patches, masks, exits)


def _acceptable(layout: _Layout) -> bool:
    """Every object well visible in frame 0, some overlap, and a planned exit really happens."""
    objects = layout.alpha.shape[0]
    for k in range(objects):
        full = layout.alpha[k, 0].sum()
        if full == 0 or (layout.masks[0] == k + 1).sum() < FIRST_VISIBLE * full:
            return False
    if objects >= 2 and not (layout.alpha.sum(axis=0) >= 2).any():
        return False
    if layout.exits:
        area = layout.alpha[0].sum(axis=(1, 2))
        if not (area == 0).any() or area[-1] == 0:
            return False
    return True


def render_video(
    rng: np.random.Generator,
    frames: int,
    size: tuple[int, int],
    objects: int,
    motion: kin.MotionSpec | None = None,
    look: LookSpec | None = None,
) -> VideoScene:
    """Render a clip of ``objects`` moving textured objects with exact labels.

    Scales and rotations change over time, objects cross (occlusion), object 1 leaves the frame and
    re-enters (``frames >= EXIT_MIN_FRAMES``; with log-normal speeds only when its speed allows),
    the background pans and the light drifts. Every object shows at least ``FIRST_VISIBLE`` of
    itself in frame 0. Motions that miss one of these are redrawn (up to ``MAX_ATTEMPTS`` times)
    with the same sprites and speeds (so the redraws leave the speed distribution as drawn).

    Args:
        rng: random generator; the clip is a pure function of its state.
        frames: clip length T.
        size: ``(H, W)``.
        objects: number of objects K.
        motion: speeds, shake and blur; ``None`` is ``kinematics.benchmark_motion(size)``.
        look: palette style and camouflage; ``None`` is ``BENCHMARK_LOOK``.

    Returns:
        The scene. Without blur, ``frames[masks == k] == object_rgb[k - 1][masks == k]`` and
        ``frames[masks == 0] == background[masks == 0]`` hold exactly. With blur they hold where
        no blurred edge reaches (coverage 0 or 1), and ``masks`` stays the exact silhouette of
        each frame's central pose: the ground truth is the pose, the pixels show the exposure.

    Raises:
        ValueError: non-positive ``frames`` or ``objects``, or a side below 8 pixels.
    """
    if frames < 1 or objects < 1 or min(size) < 8:
        raise ValueError(
            f"render_video: expected frames >= 1, objects >= 1, size >= 8, got {frames}, {objects}, {size}"
        )
    spec = motion if motion is not None else kin.benchmark_motion(size)
    # Appearance first, the variable number of layout draws last: the same seed gives the same
    # look (sprites, background, light) whatever the motion statistics.
    appearance = draw_look(rng, size, objects, look if look is not None else BENCHMARK_LOOK)
    lighting = mo.illumination(rng, frames)
    speeds = [kin.draw_speed(rng, spec) for _ in range(objects + 1)]  # the objects', then the pan's
    margin = blur.kernel_radius(speeds[-1]) if spec.blur else 0
    camera = kin.camera_pan(rng, frames, size, speeds[-1], spec.jitter, margin)
    canvas_shape = (size[0] + 2 * camera.pad, size[1] + 2 * camera.pad)
    canvas = background(rng, canvas_shape, appearance.palette, appearance.bg_colours, appearance.bg_kind)
    layout = _drawn_layout(rng, frames, size, appearance.sprites, speeds, spec)
    bg = compose.background_frames(canvas, camera, size, spec.blur)
    composite, colours = compose.stack(bg, layout.patches, layout.plans, layout.z_order, spec.blur)
    object_rgb = np.zeros((objects, frames, *size, 3), dtype=np.uint8)
    for k in range(objects):
        alpha = layout.alpha[k]
        object_rgb[k][alpha] = lighting.apply_at(colours[k], np.nonzero(alpha)[0])
    return VideoScene(
        lighting.apply(composite), layout.masks, lighting.apply(bg), object_rgb, layout.alpha,
        layout.z_order, layout.plans, lighting, camera,
    )  # fmt: skip


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A still image: 1-4 textured objects on a textured background (ImageNet stand-in).

    Args:
        rng: random generator.
        size: side of the square image.

    Returns:
        ``image`` ``(size, size, 3)`` uint8 and its label map ``(size, size)`` uint8.
    """
    scene = render_video(rng, 1, (size, size), int(rng.integers(1, 5)), look=NATURAL_LOOK)
    return scene.frames[0], scene.masks[0]
