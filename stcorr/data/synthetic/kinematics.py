"""How fast a synthetic clip's layers move: log-normal speeds, constant-speed paths, camera pan.

Every moving layer of a training clip (the panning background and each object) draws ONE speed
``v ~ LogNormal(ln median, sigma)`` with ``sigma = ln(p95 / median) / 1.645``, so the median and the
95th percentile of the per-frame displacement are exactly ``MotionSpec.speed_median`` and
``speed_p95``, and a heading uniform on the circle. It keeps that speed on every frame: a path
turns at its walls (the component that would leave flips; no mirror trick that shortens the step)
instead of slowing down, so the per-frame displacement of a layer is its drawn speed. A log-normal
has the heavy tail of real footage (most things creep, some dash: optical-flow statistics of real
video are heavy-tailed, Roth & Black, IJCV 2007). All positions are ``(y, x)`` in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stcorr.data.synthetic import motion as mo

Z95 = 1.6448536269514722  # 95th percentile of the standard normal
PAN_ROOM = 0.5  # the pan turns within this share of min(H, W): the canvas is ~1.5x the frame each side
BENCHMARK_SPEED = (1.5, 2.5)  # benchmarks' median and p95, px/frame per 96 px (was uniform 0.5-2.5)
EXIT_START = (0.0, 0.15)  # exiting object starts this share of the side inside the exit edge
EXIT_TRIES = 4  # start positions tried before an exit is given up for this speed


@dataclass(frozen=True)
class MotionSpec:
    """Motion statistics of a clip, in pixels per frame at the rendered size.

    Attributes:
        speed_median: median speed of a moving layer.
        speed_p95: its 95th percentile (``>= speed_median``).
        jitter: camera shake, uniform in ``[-jitter, jitter]`` per axis and frame, on the pan only.
        blur: smear each layer along its motion (``blur.py``).
        exit_bump: object 1 leaves and re-enters on ``motion.exit_path`` whatever its speed (the
            benchmarks: every sequence has an exit); otherwise it exits only where its drawn speed
            gets it out and back within the clip, and its speed stays log-normal.
    """

    speed_median: float
    speed_p95: float
    jitter: float = 0.0
    blur: bool = False
    exit_bump: bool = False

    @property
    def sigma(self) -> float:
        """Log-normal sigma with the requested 95th percentile."""
        return math.log(self.speed_p95 / self.speed_median) / Z95


def benchmark_motion(size: tuple[int, int]) -> MotionSpec:
    """The synthetic DAVIS benchmark's slow drift (the old generator's 0.5-2.5 px/frame per 96 px), no
    shake and no blur, so its frames stay an exact function of its masks."""
    scale = min(size) / 96.0
    return MotionSpec(BENCHMARK_SPEED[0] * scale, BENCHMARK_SPEED[1] * scale, exit_bump=True)


def draw_speed(rng: np.random.Generator, spec: MotionSpec) -> float:
    """One layer's speed in px/frame: ``median * exp(sigma * N(0, 1))``."""
    return float(spec.speed_median * math.exp(spec.sigma * rng.standard_normal()))


def heading(rng: np.random.Generator) -> np.ndarray:
    """A unit vector ``(y, x)`` with a uniform angle; ``(2,)``."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return np.array([np.sin(angle), np.cos(angle)])


def bounce_path(
    start: np.ndarray, step: np.ndarray, frames: int, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Constant-velocity path that turns at the walls ``lo``/``hi``, keeping ``|step|`` every frame.

    Args:
        start: ``(2,)`` position at frame 0, inside ``[lo, hi]``.
        step: ``(2,)`` displacement per frame.
        frames: T.
        lo: ``(2,)`` lower walls.
        hi: ``(2,)`` upper walls.

    Returns:
        ``(T, 2)`` positions. A component too fast to turn within ``hi - lo`` is clamped at a wall,
        the only case where a step is shorter than ``|step|`` (speeds over ~half the object box:
        a few layers in 10^4 at the default statistics; never the pan, whose canvas grows instead).
    """
    path = np.empty((frames, 2))
    p, v = np.asarray(start, dtype=np.float64).copy(), np.asarray(step, dtype=np.float64).copy()
    for t in range(frames):
        path[t] = p
        nxt = p + v
        out = (nxt < lo) | (nxt > hi)
        v[out] = -v[out]
        p = np.clip(p + v, lo, hi)
    return path


def path_through(
    anchor: np.ndarray, step: np.ndarray, t_anchor: int, frames: int, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """A ``bounce_path`` that is at ``anchor`` at frame ``t_anchor`` (run backwards, then forwards)."""
    anchor = np.clip(anchor, lo, hi)
    before = bounce_path(anchor, -step, t_anchor + 1, lo, hi)[::-1]  # (t_anchor + 1, 2), ends at anchor
    after = bounce_path(anchor, step, frames - t_anchor, lo, hi)
    return np.concatenate([before[:-1], after])


def box(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Walls of the object centres: ``motion.BOX`` of the frame, so objects stay mostly in view."""
    extent = np.array(size, dtype=np.float64)
    return mo.BOX[0] * extent, mo.BOX[1] * extent


def exit_bounce(
    rng: np.random.Generator, frames: int, size: tuple[int, int], reach: float, speed: float
) -> np.ndarray | None:
    """A constant-speed path that leaves fully through one side, turns outside and comes back.

    Args:
        rng: random generator.
        frames: T.
        size: ``(H, W)``.
        reach: largest distance from the centre to any silhouette pixel over the clip.
        speed: px/frame.

    Returns:
        ``(T, 2)`` centres, starting inside the frame, wholly out (centre beyond the edge by more
        than ``reach``) at some frame and inside the frame at the last; ``None`` if no start tried
        gives that at this speed (too slow to get out and back within the clip).
    """
    lo, hi = box(size)
    for _ in range(EXIT_TRIES):
        side = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
        axis, sign = (1 if side < 2 else 0), (1.0 if side % 2 else -1.0)
        normal = np.zeros(2)
        normal[axis] = sign  # outward
        angle = np.arctan2(normal[0], normal[1]) + rng.uniform(-np.pi / 4.0, np.pi / 4.0)
        step = speed * np.array([np.sin(angle), np.cos(angle)])
        edge = size[axis] if sign > 0 else 0.0
        walls = [lo.copy(), hi.copy()]
        beyond = reach + abs(step[axis]) + 1.0  # room to land wholly outside before turning
        walls[1 if sign > 0 else 0][axis] = edge + sign * beyond
        start = rng.uniform(lo, hi)
        start[axis] = edge - sign * rng.uniform(*EXIT_START) * size[axis]
        path = bounce_path(start, step, frames, walls[0], walls[1])
        out = sign * (path[:, axis] - edge)  # > 0 outside the exit edge
        if (out > reach).any() and out[-1] < 0.0:
            return path
    return None


@dataclass(frozen=True)
class CameraPan:
    """Where the frame window sits on the background canvas.

    Attributes:
        smooth: ``(T, 2)`` window origin ``(y, x)`` of the pan alone (constant speed, turning).
        offsets: ``(T, 2)`` the origin used: ``smooth`` plus the per-frame shake.
        pad: the canvas is ``(H + 2 pad, W + 2 pad)``.
        margin: pixels kept free around every window (for blur taps): ``offsets`` lie in
            ``[margin, 2 pad - margin - 1]``.
    """

    smooth: np.ndarray
    offsets: np.ndarray
    pad: int
    margin: int


def camera_pan(
    rng: np.random.Generator, frames: int, size: tuple[int, int], speed: float, jitter: float, margin: int
) -> CameraPan:
    """A pan at ``speed`` px/frame with a uniform heading, turning inside a bounded canvas, plus shake.

    The canvas pads the frame by ``PAN_ROOM / 2`` of its short side instead of by the pan's total
    travel (a 20 px/frame pan over 24 frames travels 460 px: a 652x716 canvas for 192x256 frames);
    it grows only for pans too fast to turn in that room. Its size does not depend on the speed
    otherwise, so the same seed gives the same background texture at any slower speed.

    Args:
        rng: random generator.
        frames: T.
        size: ``(H, W)``.
        speed: pan speed in px/frame.
        jitter: shake amplitude per axis in pixels.
        margin: border to keep around every window.

    Returns:
        The pan.
    """
    border = margin + jitter  # window origins stay >= margin and <= 2 pad - 1 - margin
    if frames == 1:
        pad = math.ceil(border + 0.5)
    else:
        pad = max(math.ceil(PAN_ROOM * min(size) / 2.0), math.ceil(speed + border + 1.0))
    lo, hi = np.full(2, border), np.full(2, 2.0 * pad - 1.0 - border)
    smooth = bounce_path(rng.uniform(lo, hi), speed * heading(rng), frames, lo, hi)
    offsets = smooth + rng.uniform(-jitter, jitter, size=smooth.shape)
    return CameraPan(smooth, offsets, pad, margin)
