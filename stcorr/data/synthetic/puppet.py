"""Articulated, textured "puppets" with VIP part labels and JHMDB joints.

Stand-ins for the human part propagation (VIP, 20 classes, mIoU) and pose propagation (JHMDB,
15 joints, PCK) benchmarks that both papers evaluate on (Li & Liu, CVPR 2023, Tab. 3; Jabri et al.,
NeurIPS 2020, Sec. 4.2). Each body part is a capsule, trapezoid or ellipse attached to the skeleton
of ``skeleton.py`` and carries its own texture in the part's frame, so texture moves with the limb.
Parts are drawn in painter's order with hard edges: the label map is exactly the topmost part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from stcorr.data.synthetic import motion as mo
from stcorr.data.synthetic import skeleton as sk
from stcorr.data.synthetic.compose import panned_background
from stcorr.data.synthetic.textures import background, random_palette, texture

VIP_CLASSES = (
    "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks", "pants",
    "gloves", "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm", "right-leg",
    "left-leg", "right-shoe", "left-shoe",
)  # fmt: skip
C = {name: i for i, name in enumerate(VIP_CLASSES)}
SKIN = ("torso-skin", "face", "right-arm", "left-arm", "right-leg", "left-leg")
SKIN_TONES = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36]])
TEXTURE_SIDE = 32  # texture tile per part, wrapped along the part


@dataclass(frozen=True)
class Part:
    """One body part in its own frame: ``u`` along ``axis`` from ``origin``, ``v`` across it.

    Attributes:
        cls: VIP class id.
        kind: ``capsule`` (|p - segment| <= w0), ``trapezoid`` (0 <= u <= length, |v| <= w(u)) or
            ``ellipse`` (semi-axes ``length`` along, ``w0`` across).
        origin: ``(T, 2)`` ``(x, y)`` pixels.
        axis: ``(T, 2)`` unit vector.
        length: ``(T,)`` pixels.
        w0: half width at the origin (radius for a capsule).
        w1: half width at the far end (trapezoid only).
    """

    cls: int
    kind: Literal["capsule", "trapezoid", "ellipse"]
    origin: np.ndarray
    axis: np.ndarray
    length: np.ndarray
    w0: float
    w1: float = 0.0


@dataclass(frozen=True)
class PuppetVideo:
    """A rendered puppet clip with its ground truth.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8.
        parts: ``(T, H, W)`` uint8 VIP class per pixel (0 background).
        background: ``(T, H, W, 3)`` uint8 lit background layer.
        joints: ``(P, T, 15, 2)`` float64 ``(x, y)``, 0-based, pixel ``i`` centred at ``i``.
        visible: ``(P, T, 15)`` bool, joint inside the frame.
        actions: action of each puppet.
    """

    frames: np.ndarray
    parts: np.ndarray
    background: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    actions: tuple[str, ...]


@dataclass(frozen=True)
class Outfit:
    """Which clothes a puppet wears (VIP class ids)."""

    top: int
    bottom: int | None
    hat: bool
    glasses: bool
    scarf: bool
    gloves: bool
    socks: bool


def random_outfit(rng: np.random.Generator) -> Outfit:
    """Top (upper clothes, coat or dress), bottom (pants or skirt) and optional accessories."""
    top = (C["upper-clothes"], C["coat"], C["dress"])[int(rng.integers(3))]
    bottom = None if top == C["dress"] else (C["pants"], C["skirt"])[int(rng.integers(2))]
    hat, glasses, scarf, gloves, socks = (bool(x) for x in rng.random(5) < [0.4, 0.3, 0.3, 0.3, 0.5])
    return Outfit(top, bottom, hat, glasses, scarf, gloves, socks)


def _seg(cls: int, a: np.ndarray, b: np.ndarray, radius: float) -> Part:
    """Capsule from ``a`` to ``b`` (``(T, 2)`` each)."""
    d = b - a
    length = np.maximum(np.linalg.norm(d, axis=-1), 1e-6)
    return Part(cls, "capsule", a, d / length[:, None], length, radius)


def _ell(cls: int, centre: np.ndarray, axis: np.ndarray, along: float, across: float) -> Part:
    return Part(cls, "ellipse", centre, axis, np.full(len(centre), along), across)


def _trap(cls: int, origin: np.ndarray, axis: np.ndarray, length: float, w0: float, w1: float) -> Part:
    return Part(cls, "trapezoid", origin, axis, np.full(len(origin), length), w0, w1)


def _head_parts(jt: np.ndarray, up: np.ndarray, across: np.ndarray, r: float, outfit: Outfit) -> list[Part]:
    """Face, hair, glasses and hat around the ``face`` joint (head radius ``r`` pixels)."""
    face = jt[:, sk.J["face"]]
    parts = [_ell(C["face"], face, up, r, 0.82 * r)]
    if not outfit.hat:
        parts.append(_ell(C["hair"], face + 0.7 * r * up, up, 0.4 * r, 0.85 * r))  # fringe
    if outfit.glasses:
        eyes = face + 0.15 * r * up
        parts.append(_seg(C["sun-glasses"], eyes - 0.5 * r * across, eyes + 0.5 * r * across, 0.2 * r))
    if outfit.hat:
        parts.append(_ell(C["hat"], face + 0.8 * r * up, up, 0.45 * r, 1.2 * r))
    return parts


def _limb_parts(jt: np.ndarray, side: str, body: sk.Body, hp: float, outfit: Outfit) -> list[Part]:
    """Sleeve, forearm and hand of one side (``right``/``left``); legs are drawn separately."""
    shoulder, elbow, wrist = (jt[:, sk.J[f"{side} {j}"]] for j in ("shoulder", "elbow", "wrist"))
    skin = C[f"{side}-arm"]
    sleeve = outfit.top if outfit.top != C["dress"] else skin
    forearm = C["coat"] if outfit.top == C["coat"] else skin
    hand_dir = (wrist - elbow) / np.maximum(np.linalg.norm(wrist - elbow, axis=-1), 1e-6)[:, None]
    r = body.arm_r * hp
    return [
        _seg(sleeve, shoulder, elbow, 1.25 * r),
        _seg(forearm, elbow, wrist, r),
        _seg(C["gloves"] if outfit.gloves else skin, wrist, wrist + 0.05 * hp * hand_dir, 1.2 * r),
    ]


def _leg_parts(
    jt: np.ndarray, down: np.ndarray, across: np.ndarray, body: sk.Body, hp: float, outfit: Outfit
) -> list[Part]:
    """Skin, socks, trousers or skirt and shoes of both legs."""
    parts: list[Part] = []
    r = body.leg_r * hp
    belly = jt[:, sk.J["belly"]]
    for side in ("right", "left"):
        hip, knee, ankle = (jt[:, sk.J[f"{side} {j}"]] for j in ("hip", "knee", "ankle"))
        parts += [_seg(C[f"{side}-leg"], hip, knee, r), _seg(C[f"{side}-leg"], knee, ankle, 0.9 * r)]
        if outfit.socks and outfit.bottom != C["pants"]:
            parts.append(_seg(C["socks"], ankle, ankle + 0.3 * (knee - ankle), 0.95 * r))
        if outfit.bottom == C["pants"]:
            parts += [_seg(C["pants"], hip, knee, 1.2 * r), _seg(C["pants"], knee, ankle, 1.1 * r)]
    if outfit.bottom == C["pants"]:
        parts.append(_trap(C["pants"], belly, down, 0.1 * hp, 1.6 * body.hip * hp, 1.6 * body.hip * hp))
    elif outfit.bottom == C["skirt"]:
        parts.append(_trap(C["skirt"], belly, down, 0.24 * hp, 1.5 * body.hip * hp, 2.6 * body.hip * hp))
    for side in ("right", "left"):
        ankle = jt[:, sk.J[f"{side} ankle"]]
        parts.append(_ell(C[f"{side}-shoe"], ankle + 0.02 * hp * down, across, 0.045 * hp, 0.025 * hp))
    return parts


def build_parts(jt: np.ndarray, body: sk.Body, hp: float, outfit: Outfit) -> list[Part]:
    """All parts of one puppet, bottom to top.

    Args:
        jt: ``(T, 15, 2)`` joints in pixels.
        body: proportions (body heights).
        hp: body height in pixels.
        outfit: clothes.

    Returns:
        Parts in painter's order.
    """
    neck, belly, face = jt[:, sk.J["neck"]], jt[:, sk.J["belly"]], jt[:, sk.J["face"]]
    up = (neck - belly) / np.linalg.norm(neck - belly, axis=-1, keepdims=True)  # (T, 2)
    across = np.stack([-up[:, 1], up[:, 0]], axis=-1)  # image +x when upright
    r_head = body.head_r * hp
    parts = [_ell(C["hair"], face + 0.2 * r_head * up, up, 1.2 * r_head, 1.1 * r_head)]
    parts += _leg_parts(jt, -up, across, body, hp, outfit)
    extra = 0.12 if outfit.top == C["coat"] else 0.03  # a coat hangs below the belt
    w_hip, w_sh = 1.5 * body.hip * hp, 1.05 * body.shoulder * hp
    parts.append(_trap(outfit.top, belly - extra * hp * up, up, (body.torso + extra) * hp, w_hip, w_sh))
    if outfit.top == C["dress"]:
        parts.append(_trap(C["dress"], belly, -up, 0.28 * hp, w_hip, 2.0 * w_hip))
    parts.append(_seg(C["torso-skin"], neck - 0.02 * hp * up, neck + 0.5 * body.head * hp * up, 0.03 * hp))
    parts.append(_trap(C["torso-skin"], neck, -up, 0.06 * hp, 0.035 * hp, 0.0))  # V-neck
    if outfit.scarf:
        half = 0.7 * body.shoulder * hp * across
        parts.append(_seg(C["scarf"], neck - half, neck + half, 0.028 * hp))
        parts.append(_seg(C["scarf"], neck + 0.5 * half, neck + 0.5 * half - 0.12 * hp * up, 0.022 * hp))
    parts += _limb_parts(jt, "right", body, hp, outfit) + _limb_parts(jt, "left", body, hp, outfit)
    return parts + _head_parts(jt, up, across, r_head, outfit)


def part_geometry(part: Part, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise one part with hard edges.

    Args:
        part: the part, over T frames.
        size: ``(H, W)``.

    Returns:
        ``mask`` ``(T, H, W)`` bool and the part-frame coordinates ``u``, ``v`` ``(T, H, W)``.
    """
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)  # pixel i centred at i
    dx = xx[None] - part.origin[:, 0, None, None].astype(np.float32)  # (T, H, W)
    dy = yy[None] - part.origin[:, 1, None, None].astype(np.float32)
    ax = part.axis[:, 0, None, None].astype(np.float32)
    ay = part.axis[:, 1, None, None].astype(np.float32)
    u, v = dx * ax + dy * ay, dy * ax - dx * ay  # along, across
    length = part.length[:, None, None].astype(np.float32)
    if part.kind == "capsule":
        mask = np.hypot(u - np.clip(u, 0.0, length), v) <= part.w0
    elif part.kind == "trapezoid":
        half = part.w0 + (part.w1 - part.w0) * u / length
        mask = (u >= 0.0) & (u <= length) & (np.abs(v) <= half)
    else:
        mask = (u / length) ** 2 + (v / part.w0) ** 2 <= 1.0
    return mask, u, v


def _part_textures(rng: np.random.Generator, classes: set[int], palette: np.ndarray) -> dict[int, np.ndarray]:
    """One texture per class; skin classes share a skin tone but each gets its own pattern."""
    tone = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))] * rng.uniform(0.9, 1.05)
    skin = np.stack([tone, tone * 0.8]).astype(np.float32)  # (2, 3)
    skin_ids = {C[name] for name in SKIN}
    side = (TEXTURE_SIDE, TEXTURE_SIDE)
    return {
        c: texture(rng, side, skin, kind="noise") if c in skin_ids else texture(rng, side, palette)
        for c in sorted(classes)
    }


def _draw(part: Part, tex: np.ndarray, colour: np.ndarray, labels: np.ndarray) -> None:
    """Paint ``part`` over ``colour`` ``(T, H, W, 3)`` and ``labels`` ``(T, H, W)`` in place."""
    mask, u, v = part_geometry(part, labels.shape[1:])
    coords = np.stack([v[mask] + TEXTURE_SIDE / 2.0, u[mask]])  # (2, N) rows, cols; wraps
    labels[mask] = part.cls
    for ch in range(3):
        colour[..., ch][mask] = ndimage.map_coordinates(tex[..., ch], coords, order=1, mode="grid-wrap")


def render_puppets(
    rng: np.random.Generator,
    frames: int,
    size: tuple[int, int],
    people: int,
    actions: tuple[str, ...] | None = None,
) -> PuppetVideo:
    """Render ``people`` puppets acting over a panning textured background under drifting light.

    Args:
        rng: random generator; the clip is a pure function of its state.
        frames: clip length T.
        size: ``(H, W)``.
        people: number of puppets P; later ones are drawn on top (they may occlude earlier ones).
        actions: action per puppet (``skeleton.ACTIONS``); ``None`` picks at random.

    Returns:
        The clip; every joint stays inside the frame (``visible`` is all true by construction).

    Raises:
        ValueError: ``actions`` does not have one entry per puppet, or the frame is under 16 px.
    """
    if actions is not None and len(actions) != people:
        raise ValueError(f"render_puppets: expected {people} actions, got {len(actions)}")
    if min(size) < 16 or frames < 1:
        raise ValueError(f"render_puppets: expected frames >= 1 and size >= 16, got {frames}, {size}")
    palette = random_palette(rng, style="vivid")  # a smoke test: see look.BENCHMARK_LOOK
    offsets, pad = mo.pan_offsets(rng, frames)
    bg = panned_background(background(rng, (size[0] + 2 * pad, size[1] + 2 * pad), palette), offsets, size)
    lighting = mo.illumination(rng, frames)
    colour, labels = bg.copy(), np.zeros((frames, *size), dtype=np.uint8)
    all_joints, chosen = [], []
    for p in range(people):
        action = actions[p] if actions is not None else sk.ACTIONS[int(rng.integers(len(sk.ACTIONS)))]
        body = sk.random_body(rng)
        unit = sk.joints(body, sk.pose_angles(rng, action, frames))
        span = (p / people, (p + 1) / people) if people <= 2 else (0.0, 1.0)  # two stay apart
        jt, hp = sk.fit_to_frame(rng, unit, size, rng.uniform(0.6, 0.95) * size[0], span)
        parts = build_parts(jt, body, hp, random_outfit(rng))
        textures = _part_textures(rng, {part.cls for part in parts}, palette)
        for part in parts:
            _draw(part, textures[part.cls], colour, labels)
        all_joints.append(jt)
        chosen.append(action)
    joints = np.stack(all_joints)  # (P, T, 15, 2)
    limits = np.array([size[1] - 1, size[0] - 1], dtype=np.float64)
    visible = np.asarray(((joints >= 0.0) & (joints <= limits)).all(axis=-1))  # (P, T, 15)
    return PuppetVideo(lighting.apply(colour), labels, lighting.apply(bg), joints, visible, tuple(chosen))
