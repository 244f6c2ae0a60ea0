"""A 2D articulated figure with JHMDB's 15 joints, driven by simple periodic actions.

The synthetic JHMDB benchmark (keypoint propagation, PCK; Jabri et al., NeurIPS 2020, Sec. 4.2)
needs joints that are the articulation points of what is drawn, so the same skeleton drives the
puppet renderer. The figure faces the camera: its right side is on the image's left. Angles are in
radians with 0 = limb pointing straight down and positive turning towards image +x. Lengths are in
body heights (crown to sole = 1) until ``fit_to_frame`` converts them to pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

JHMDB_JOINTS = (
    "neck", "belly", "face", "right shoulder", "left shoulder", "right hip", "left hip",
    "right elbow", "left elbow", "right knee", "left knee", "right wrist", "left wrist",
    "right ankle", "left ankle",
)  # fmt: skip
J = {name: i for i, name in enumerate(JHMDB_JOINTS)}
ACTIONS = ("walk", "wave", "jump")
MARGIN = 0.09  # body heights around the joints that hair, hat and shoes may need


@dataclass(frozen=True)
class Body:
    """Segment lengths and radii of one figure, in body heights."""

    torso: float = 0.30  # belly -> neck
    head: float = 0.11  # neck -> face (centre of the head)
    head_r: float = 0.065
    shoulder: float = 0.10  # half width at the shoulders
    hip: float = 0.06  # half width at the hips
    upper_arm: float = 0.16
    forearm: float = 0.14
    thigh: float = 0.22
    shin: float = 0.21
    arm_r: float = 0.03
    leg_r: float = 0.04


def random_body(rng: np.random.Generator) -> Body:
    """The default proportions, each jittered by up to 8%."""
    base = Body()
    return replace(base, **{f.name: getattr(base, f.name) * rng.uniform(0.92, 1.08) for f in fields(Body)})


def _walk(rng: np.random.Generator, t: np.ndarray) -> dict[str, np.ndarray]:
    """Legs scissor, arms swing against them, the body bobs and moves sideways."""
    phase = 2.0 * np.pi * t / rng.uniform(8.0, 14.0) + rng.uniform(0.0, 2.0 * np.pi)
    swing = rng.uniform(0.35, 0.6) * np.sin(phase)
    bend = 0.7 * np.maximum(0.0, np.sin(phase + np.pi / 2.0))
    heading = rng.choice([-1.0, 1.0])
    return {
        "leg_r": swing - 0.05, "leg_l": -swing + 0.05,
        "knee_r": bend, "knee_l": 0.7 * np.maximum(0.0, -np.sin(phase + np.pi / 2.0)),
        "arm_r": -0.15 - 0.6 * swing, "arm_l": 0.15 + 0.6 * swing,
        "elbow_r": -0.3 - 0.2 * swing, "elbow_l": 0.3 + 0.2 * swing,
        "lean": np.full_like(t, 0.05 * heading),
        "step": heading * rng.uniform(0.01, 0.025) * t,
        "rise": 0.012 * np.abs(np.sin(phase)),
    }  # fmt: skip


def _wave(rng: np.random.Generator, t: np.ndarray) -> dict[str, np.ndarray]:
    """One arm raised and waving; the rest sways gently."""
    phase = 2.0 * np.pi * t / rng.uniform(4.0, 8.0) + rng.uniform(0.0, 2.0 * np.pi)
    sway = 0.04 * np.sin(0.3 * phase)
    side = rng.choice([-1.0, 1.0])  # -1: the right arm (image left) waves
    raised = side * (2.3 + 0.25 * np.sin(phase))  # pointing up and outwards
    hanging = -side * (0.15 + 0.05 * np.sin(phase))
    flap, rest, zero = side * 0.7 * np.sin(phase), np.full_like(t, -side * 0.2), np.zeros_like(t)
    waving, still = {"arm": raised, "elbow": flap}, {"arm": hanging, "elbow": rest}
    right, left = (waving, still) if side < 0 else (still, waving)
    return {
        "arm_r": right["arm"], "arm_l": left["arm"], "elbow_r": right["elbow"], "elbow_l": left["elbow"],
        "leg_r": -0.08 + sway, "leg_l": 0.08 + sway, "knee_r": zero, "knee_l": zero,
        "lean": sway, "step": rng.uniform(-0.008, 0.008) * t, "rise": zero,
    }  # fmt: skip


def _jump(rng: np.random.Generator, t: np.ndarray) -> dict[str, np.ndarray]:
    """Crouch, leap with arms thrown up, land; repeated."""
    p = np.sin(2.0 * np.pi * t / rng.uniform(6.0, 10.0) + rng.uniform(0.0, 2.0 * np.pi))
    air, crouch = np.maximum(0.0, p), np.maximum(0.0, -p)
    arms = 0.3 + 2.2 * air
    return {
        "arm_r": -arms, "arm_l": arms, "elbow_r": -0.4 * crouch, "elbow_l": 0.4 * crouch,
        "leg_r": -0.1 - 0.5 * crouch, "leg_l": 0.1 + 0.5 * crouch,
        "knee_r": 1.0 * crouch, "knee_l": -1.0 * crouch,
        "lean": np.zeros_like(t), "step": rng.uniform(-0.01, 0.01) * t,
        "rise": 0.15 * air - 0.08 * crouch,
    }  # fmt: skip


def pose_angles(rng: np.random.Generator, action: str, frames: int) -> dict[str, np.ndarray]:
    """Joint angles, sideways step and rise over time for one action.

    Args:
        rng: random generator (period, phase, amplitude, direction).
        action: one of ``ACTIONS``.
        frames: clip length T.

    Returns:
        ``(T,)`` arrays: ``arm_r/arm_l`` (upper arm), ``elbow_r/elbow_l`` (forearm relative to it),
        ``leg_r/leg_l`` (thigh), ``knee_r/knee_l`` (shin relative to thigh), ``lean`` (torso),
        ``step`` (x shift) and ``rise`` (upward shift), the last two in body heights.

    Raises:
        ValueError: unknown action.
    """
    makers = {"walk": _walk, "wave": _wave, "jump": _jump}
    if action not in makers:
        raise ValueError(f"puppet action: expected one of {ACTIONS}, got {action!r}")
    t = np.arange(frames, dtype=np.float64)
    return {k: np.asarray(v, dtype=np.float64) for k, v in makers[action](rng, t).items()}


def _dir(angle: np.ndarray) -> np.ndarray:
    """Unit vectors ``(T, 2)`` as ``(x, y)`` for angles from straight down (y grows downwards)."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def joints(body: Body, pose: dict[str, np.ndarray]) -> np.ndarray:
    """Forward kinematics from the belly outwards.

    Args:
        body: proportions.
        pose: output of ``pose_angles``.

    Returns:
        ``(T, 15, 2)`` joints ``(x, y)`` in body heights, in ``JHMDB_JOINTS`` order.
    """
    lean = pose["lean"]
    up = -_dir(lean)  # (T, 2)
    across = np.stack([np.cos(lean), -np.sin(lean)], axis=-1)  # towards image +x, perpendicular to up
    out = np.zeros((len(lean), len(JHMDB_JOINTS), 2))
    belly = np.stack([pose["step"], -pose["rise"]], axis=-1)
    out[:, J["belly"]] = belly
    out[:, J["neck"]] = belly + body.torso * up
    out[:, J["face"]] = out[:, J["neck"]] + body.head * up
    for side, sign in (("right", -1.0), ("left", 1.0)):  # the figure's right is the image's left
        s = side[0]
        shoulder = out[:, J["neck"]] + sign * body.shoulder * across
        hip = belly + sign * body.hip * across - 0.03 * up
        elbow = shoulder + body.upper_arm * _dir(pose[f"arm_{s}"])
        knee = hip + body.thigh * _dir(pose[f"leg_{s}"])
        out[:, J[f"{side} shoulder"]], out[:, J[f"{side} hip"]] = shoulder, hip
        out[:, J[f"{side} elbow"]], out[:, J[f"{side} knee"]] = elbow, knee
        out[:, J[f"{side} wrist"]] = elbow + body.forearm * _dir(pose[f"arm_{s}"] + pose[f"elbow_{s}"])
        out[:, J[f"{side} ankle"]] = knee + body.shin * _dir(pose[f"leg_{s}"] + pose[f"knee_{s}"])
    return out


def fit_to_frame(
    rng: np.random.Generator,
    unit_joints: np.ndarray,
    size: tuple[int, int],
    height: float,
    span: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, float]:
    """Scale and place a figure so every joint (plus ``MARGIN``) stays inside the frame all clip long.

    Args:
        rng: random generator (placement within the free room).
        unit_joints: ``(T, 15, 2)`` joints in body heights.
        size: ``(H, W)``.
        height: wanted body height in pixels; shrunk if the motion would not fit.
        span: share of the frame width the figure must stay in (keeps two puppets apart).

    Returns:
        ``(T, 15, 2)`` joints ``(x, y)`` in pixels (0-based, pixel ``i`` centred at ``i``) and the
        body height in pixels actually used.
    """
    lo = unit_joints.reshape(-1, 2).min(axis=0) - MARGIN  # (2,) as (x, y)
    hi = unit_joints.reshape(-1, 2).max(axis=0) + MARGIN
    start = np.array([max(1.0, span[0] * size[1]), 1.0])  # joints within [1, side - 2]
    stop = np.array([min(size[1] - 2.0, span[1] * size[1]), size[0] - 2.0])
    scale = float(min(height, *((stop - start) / (hi - lo))))
    free = (stop - start) - scale * (hi - lo)  # (2,) >= 0
    origin = start - scale * lo + rng.uniform(0.0, 1.0, size=2) * free
    return origin + scale * unit_joints, scale
