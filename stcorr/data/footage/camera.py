"""The background: a virtual camera (window) panning and zooming over a real clip's frames.

The window keeps the output's aspect (854:480 for DAVIS 480p), moves and changes size linearly
over the sequence, and is resampled to the output size with a Lanczos filter. Clips with a
locked-off camera (carphone) always get both a pan and a zoom, so no background is static.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from stcorr.data.footage.media import Clip

MOTIONS = ("pan", "zoom", "pan+zoom")
MAX_STRIDE = 3  # temporal stride over the clip's frames; more and the clip stutters
PAN_SPEED = (2.0, 6.0)  # output px/frame at 480p: a slow hand-held pan
ZOOM_RATIO = 1.25  # the window's side changes at least this much over a zooming sequence


@dataclass(frozen=True)
class CameraPath:
    """Where the camera looks in each output frame.

    Attributes:
        clip: the background clip.
        indices: ``(T,)`` clip frame shown in each output frame.
        boxes: ``(T, 4)`` window ``(x0, y0, x1, y1)`` in the (flipped) clip frame's pixels.
        flip: the clip is mirrored left-right before the window is cut.
        motion: one of ``MOTIONS``.
    """

    clip: Clip
    indices: np.ndarray
    boxes: np.ndarray
    flip: bool
    motion: str

    def record(self, size: tuple[int, int]) -> dict[str, Any]:
        """JSON-ready summary: frames used, zoom ratio and mean pan speed in output px/frame."""
        heights = self.boxes[:, 3] - self.boxes[:, 1]
        centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2.0  # (T, 2) (x, y)
        px = size[0] / heights[:-1]  # output px per clip px, per frame pair
        pan = np.linalg.norm(np.diff(centres, axis=0), axis=1) * px if len(px) else np.zeros(1)
        return {"clip": f"{self.clip.name}.mp4", "source_frames": [int(i) for i in self.indices],
                "flip": self.flip, "camera_motion": self.motion,
                "zoom_ratio": round(float(heights[0] / heights[-1]), 4),
                "pan_px_per_frame": round(float(pan.mean()), 3),
                "first_box_xyxy": [round(float(v), 2) for v in self.boxes[0]],
                "last_box_xyxy": [round(float(v), 2) for v in self.boxes[-1]]}


def _indices(rng: np.random.Generator, clip: Clip, frames: int) -> np.ndarray:
    """Shot, start and stride over the clip; a sequence longer than its shot runs back and forth."""
    shots = clip.shots()
    fitting = [s for s in shots if s[1] - s[0] >= frames] or [max(shots, key=lambda s: s[1] - s[0])]
    lo, hi = fitting[int(rng.integers(len(fitting)))]
    length = hi - lo
    stride = int(rng.integers(1, MAX_STRIDE + 1))
    stride = max(1, min(stride, (length - 1) // max(frames - 1, 1)))
    start = int(rng.integers(0, max(1, length - stride * (frames - 1))))
    raw = start + stride * np.arange(frames)
    period = max(2 * (length - 1), 1)
    folded = np.mod(raw, period)  # ping-pong: only reached when frames > length
    return lo + np.where(folded < length, folded, period - folded)


def _zooms(rng: np.random.Generator, motion: str, static: bool) -> tuple[float, float]:
    """Window height as a share of the largest window, at the first and last frame."""
    if motion == "pan":
        z = rng.uniform(0.6, 0.85)  # leaves room to pan
        return z, z
    small = rng.uniform(0.65 if static else 0.55, 0.8)  # carphone is tiny: do not magnify it 9x
    big = rng.uniform(small * ZOOM_RATIO, 1.0)
    return (small, big) if rng.random() < 0.5 else (big, small)


def plan_camera(rng: np.random.Generator, clip: Clip, frames: int, size: tuple[int, int]) -> CameraPath:
    """Draw a camera path: frames, flip, and a window panning and/or zooming over the clip.

    Args:
        rng: random generator.
        clip: background clip.
        frames: sequence length T.
        size: output ``(H, W)``; the window keeps its aspect.

    Returns:
        The path; every window lies inside the clip frame.
    """
    indices = _indices(rng, clip, frames)
    flip = bool(rng.random() < 0.5)
    motion = "pan+zoom" if clip.static else str(rng.choice(MOTIONS))
    full_h = min(float(clip.height), clip.width * size[0] / size[1])  # largest window's height
    z0, z1 = _zooms(rng, motion, clip.static)
    h = full_h * np.linspace(z0, z1, frames)  # (T,)
    w = h * size[1] / size[0]
    lo = np.stack([w / 2.0, h / 2.0], axis=1)  # (T, 2) (x, y): the window centre's range
    hi = np.stack([clip.width - w / 2.0, clip.height - h / 2.0], axis=1)
    start = rng.uniform(lo[0], hi[0]) if motion != "zoom" else rng.uniform(lo.max(0), hi.min(0))
    end = start
    if motion != "zoom":
        heading = rng.uniform(0.0, 2.0 * np.pi)
        speed = rng.uniform(*PAN_SPEED) * min(size) / 480.0 * h[0] / size[0]  # clip px/frame
        end = np.clip(start + speed * (frames - 1) * np.array([np.cos(heading), np.sin(heading)]),
                      lo[-1], hi[-1])
    ramp = np.linspace(0.0, 1.0, frames)[:, None]
    centre = start + (end - start) * ramp  # linear in centre and size: stays inside (convex)
    boxes = np.concatenate([centre - np.stack([w, h], 1) / 2.0, centre + np.stack([w, h], 1) / 2.0], 1)
    return CameraPath(clip, indices, boxes, flip, motion)


def render_background(clip_rgb: np.ndarray, camera: CameraPath, size: tuple[int, int]) -> np.ndarray:
    """Cut the camera's windows out of the clip frames and resample them to ``size``.

    Args:
        clip_rgb: ``(T, H_c, W_c, 3)`` uint8, the frames ``camera.indices``.
        camera: the path.
        size: output ``(H, W)``.

    Returns:
        ``(T, H, W, 3)`` float32 on 0..255 (Lanczos, antialiased when the window is larger).
    """
    out = np.empty((len(clip_rgb), *size, 3), dtype=np.float32)
    for t, frame in enumerate(clip_rgb):
        image = Image.fromarray(np.ascontiguousarray(frame[:, ::-1] if camera.flip else frame))
        x0, y0, x1, y1 = (float(v) for v in camera.boxes[t])
        out[t] = np.asarray(image.resize((size[1], size[0]), Image.Resampling.LANCZOS, box=(x0, y0, x1, y1)))
    return out
