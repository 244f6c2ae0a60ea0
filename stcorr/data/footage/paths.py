"""Object trajectories of the footage benchmark: slow drifts, fast loops, passes behind, zooms.

Positions are ``(y, x)`` centres in output pixels (pixel centres at ``i + 0.5``) on a 1/8-px grid:
such numbers are exact in float32, so rendering an object in a window shifted by whole pixels
gives bit-for-bit the coverage of rendering it in the full frame, and two objects whose paths
differ by a whole-pixel offset get identical pixels.
"""

from __future__ import annotations

import numpy as np

QUANTUM = 8  # positions are multiples of 1 / QUANTUM px


def quantised(centers: np.ndarray) -> np.ndarray:
    """Round ``(T, 2)`` centres to the 1/8-px grid."""
    return np.round(np.asarray(centers, dtype=np.float64) * QUANTUM) / QUANTUM


def bounds(size: tuple[int, int], reach: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Range ``(lo, hi)`` ``(2,)`` of centres keeping a disc of radius ``reach`` ``margin`` px inside.

    Where the frame is too small for that, both are the frame's middle.
    """
    lo = np.full(2, reach + margin)
    hi = np.array(size, dtype=np.float64) - reach - margin
    mid = np.array(size, dtype=np.float64) / 2.0
    bad = lo > hi
    lo[bad], hi[bad] = mid[bad], mid[bad]
    return lo, hi


def _reflect(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fold positions ``(T, 2)`` back into ``[lo, hi]`` per axis, as a ball bouncing off walls."""
    span = np.maximum(hi - lo, 1e-9)
    q = np.mod(p - lo, 2.0 * span)
    return lo + np.where(q > span, 2.0 * span - q, q)


def drift(rng: np.random.Generator, frames: int, anchor: np.ndarray, speed: float,
          lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A straight path from ``anchor`` at ``speed`` px/frame, bouncing inside ``[lo, hi]``.

    Args:
        rng: random generator (draws the heading).
        frames: length T.
        anchor: ``(2,)`` centre at frame 0.
        speed: px/frame.
        lo, hi: ``(2,)`` range of the centre.

    Returns:
        ``(T, 2)`` centres.
    """
    heading = rng.uniform(0.0, 2.0 * np.pi)
    velocity = speed * np.array([np.sin(heading), np.cos(heading)])
    path = np.asarray(anchor, dtype=np.float64) + velocity * np.arange(frames)[:, None]
    return quantised(_reflect(path, lo, hi))


def loop(rng: np.random.Generator, frames: int, size: tuple[int, int], reach: float,
         step: float, margin: float) -> np.ndarray:
    """An ellipse around the frame centre, travelled with chords of at least ``step`` px.

    The chord between angles ``a`` and ``a + w`` is ``2 sin(w / 2) sqrt(rx^2 sin^2 + ry^2 cos^2)``,
    at least ``2 sin(w / 2) min(rx, ry)``; ``w`` is set so that this bound is ``step``.

    Args:
        rng: random generator.
        frames: length T.
        size: ``(H, W)``.
        reach: the object's largest extent from its centre; it stays ``margin`` px inside.
        step: least displacement per frame, px.
        margin: px between the object and the frame edge.

    Returns:
        ``(T, 2)`` centres.

    Raises:
        ValueError: the frame is too small for such a loop.
    """
    ry = size[0] / 2.0 - reach - margin
    rx = min(size[1] / 2.0 - reach - margin, ry * rng.uniform(1.0, 1.5))
    if min(rx, ry) * 2.0 <= step * 1.05:
        raise ValueError(f"fast loop: a frame of {size} cannot hold a {step:.0f} px/frame loop")
    omega = 2.0 * np.arcsin(step / (2.0 * min(rx, ry))) * rng.choice([-1.0, 1.0])
    angle = rng.uniform(0.0, 2.0 * np.pi) + omega * np.arange(frames)
    centre = np.array(size, dtype=np.float64) / 2.0
    return quantised(centre + np.stack([ry * np.sin(angle), rx * np.cos(angle)], axis=1))


def pass_behind(host: np.ndarray, hidden_at: int, velocity: np.ndarray) -> np.ndarray:
    """A path through ``host``'s centre at frame ``hidden_at``, at ``velocity`` ``(2,)`` relative to it.

    Args:
        host: ``(T, 2)`` centres of the object passed behind.
        hidden_at: the frame at which both centres coincide.
        velocity: px/frame relative to the host.

    Returns:
        ``(T, 2)`` centres.
    """
    t = np.arange(len(host), dtype=np.float64) - hidden_at
    return quantised(host + t[:, None] * velocity)


def geometric(start: float, end: float, frames: int) -> np.ndarray:
    """``(T,)`` values from ``start`` to ``end`` with a constant ratio per frame (a steady zoom)."""
    return np.asarray(start * (end / start) ** np.linspace(0.0, 1.0, frames))
