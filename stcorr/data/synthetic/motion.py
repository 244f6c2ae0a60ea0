"""Pose and lighting plans of a synthetic video: scale, rotation, exits, slow pans, illumination.

The plans make tracking non-trivial in the ways real videos are (and which label propagation on
DAVIS must survive, Jabri et al., NeurIPS 2020, Sec. 4): objects cross (occlusion), one object leaves
the frame and comes back, objects grow, shrink and turn, the camera pans and the light drifts.
How fast things move (log-normal speeds, turning paths, the training clips' pan) is
``kinematics.py``. All positions are ``(y, x)`` in pixels with pixel centres at ``i + 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXIT_MIN_FRAMES = 8  # from this clip length on, object 1 leaves the frame and comes back
EXIT_PLATEAU = 1.1  # bump = min(1, EXIT_PLATEAU * sin): fully out for ~27% of the clip
BOX = (0.1, 0.9)  # drifting objects keep their centres inside this share of the frame


@dataclass(frozen=True)
class Motion:
    """Pose of one object over time.

    Attributes:
        centers: ``(T, 2)`` float centre ``(y, x)`` in pixels.
        scales: ``(T,)`` scale factor of the sprite (1 = native sprite size).
        angles: ``(T,)`` rotation in radians.
    """

    centers: np.ndarray
    scales: np.ndarray
    angles: np.ndarray


@dataclass(frozen=True)
class Illumination:
    """Global lighting per frame: ``out = clip(gain * rgb + offset)``.

    Attributes:
        gain: ``(T, 3)`` per-channel gain (a drifting exposure with a slight white-balance drift).
        offset: ``(T,)`` additive offset on the 0..255 scale.
    """

    gain: np.ndarray
    offset: np.ndarray

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Light and quantise ``(T, H, W, 3)`` float RGB; returns ``(T, H, W, 3)`` uint8."""
        lit = rgb * self.gain[:, None, None, :].astype(np.float32)
        lit += self.offset[:, None, None, None].astype(np.float32)
        return np.rint(np.clip(lit, 0.0, 255.0, out=lit)).astype(np.uint8)

    def apply_at(self, rgb: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Light and quantise scattered pixels: ``rgb`` ``(N, 3)`` float seen in frames ``t`` ``(N,)``."""
        lit = rgb * self.gain[t].astype(np.float32) + self.offset[t, None].astype(np.float32)
        return np.rint(np.clip(lit, 0.0, 255.0, out=lit)).astype(np.uint8)


def _ramp(frames: int) -> np.ndarray:
    """0 -> 1 over the clip, ``(T,)``; all zeros for a single frame."""
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


def illumination(rng: np.random.Generator, frames: int) -> Illumination:
    """Gain drifting by 0.2-0.4 towards 1 and offset drifting the same way, so brightness moves.

    Args:
        rng: random generator.
        frames: clip length T.

    Returns:
        The lighting plan.
    """
    e = _ramp(frames)
    g0 = rng.uniform(0.75, 1.25)
    sign = 1.0 if g0 < 1.0 else -1.0  # drift towards 1 keeps gains in [0.75, 1.45]
    gain = g0 + sign * rng.uniform(0.2, 0.4) * e  # (T,)
    tint = rng.uniform(-0.06, 0.06, size=3)  # white balance drifts a little too
    o0 = rng.uniform(-10.0, 10.0)
    offset = o0 + sign * rng.uniform(0.0, 10.0) * e  # same direction: the drifts never cancel
    return Illumination(gain[:, None] * (1.0 + tint[None, :] * e[:, None]), offset)


def scale_curve(rng: np.random.Generator, frames: int) -> np.ndarray:
    """``s(t) = s0 exp(a sin(2 pi f t / T + phi))``, a in [0.15, 0.35]; ``(T,)``."""
    t = np.arange(frames)
    amp, cycles = rng.uniform(0.15, 0.35), rng.uniform(0.5, 1.5)
    wave = np.sin(2.0 * np.pi * cycles * t / max(frames, 1) + rng.uniform(0.0, 2.0 * np.pi))
    return np.asarray(rng.uniform(0.8, 1.1) * np.exp(amp * wave))


def spin(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Constant angular velocity of 0.02-0.08 rad/frame either way; ``(T,)``."""
    omega = rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.08)
    return np.asarray(rng.uniform(0.0, 2.0 * np.pi) + omega * np.arange(frames))


def exit_path(rng: np.random.Generator, frames: int, size: tuple[int, int], reach: float) -> np.ndarray:
    """A path that starts inside, leaves fully through one side, and comes back.

    Args:
        rng: random generator.
        frames: clip length T (>= ``EXIT_MIN_FRAMES`` for the object to be out at some frame).
        size: ``(H, W)``.
        reach: largest distance from the centre to any silhouette pixel over the clip.

    Returns:
        ``(T, 2)`` centres ``(y, x)``.
    """
    side = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
    axis = 1 if side < 2 else 0
    length, cross = size[axis], size[1 - axis]
    toward_far = side % 2 == 1
    p0 = rng.uniform(0.55, 0.75) * length  # start on the half nearer the exit side
    p0, p_out = (p0, length + reach + 1.0) if toward_far else (length - p0, -reach - 1.0)
    t = np.arange(frames)
    bump = np.minimum(1.0, EXIT_PLATEAU * np.sin(np.pi * t / max(frames - 1, 1)))
    along = p0 + (p_out - p0) * bump
    across = rng.uniform(0.3, 0.7) * cross + rng.uniform(-0.3, 0.3) * t
    path = np.empty((frames, 2))
    path[:, axis], path[:, 1 - axis] = along, across
    return path


def meeting_frame(rng: np.random.Generator, other: np.ndarray, size: tuple[int, int]) -> int:
    """A frame at which ``other`` (``(T, 2)`` centres) is inside ``BOX``, preferably mid-clip.

    Late frames are preferred over early ones, so objects meeting there start apart (DAVIS needs
    every object visible in frame 0).
    """
    frames = len(other)
    lo, hi = np.array(size) * BOX[0], np.array(size) * BOX[1]
    inside = np.flatnonzero(((other > lo) & (other < hi)).all(axis=1))
    t = np.arange(frames)
    middle = inside[(t[inside] >= 0.3 * (frames - 1)) & (t[inside] <= 0.8 * (frames - 1))]
    late = inside[t[inside] >= 0.5 * (frames - 1)]
    pool = middle if len(middle) else (late if len(late) else inside)
    return int(rng.choice(pool)) if len(pool) else frames // 2


def pan_offsets(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, int]:
    """A slow camera pan (the puppet benchmarks): ``(T, 2)`` offsets ``(y, x)`` in [0, 2 pad] and the pad."""
    heading = rng.uniform(0.0, 2.0 * np.pi)
    velocity = rng.uniform(0.2, 0.8) * np.array([np.sin(heading), np.cos(heading)])
    pad = int(np.ceil(0.8 * max(frames - 1, 0))) + 2
    return pad + velocity[None, :] * np.arange(frames)[:, None], pad
