"""Pictures of propagated labels: mask/part overlays, skeletons, strips and animated GIFs.

What people look at rather than read (CRW logs blended frames and pose skeletons, Jabri et
al., NeurIPS 2020, ``test_utils.py``; STT saves palette PNGs and skeleton PNGs): each sequence
gets one strip of evenly spaced frames and one animated GIF with the predictions drawn on.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stcorr.eval.labels import davis_palette

# JHMDB joint order: neck, belly, face, R/L shoulder, R/L hip, R/L elbow, R/L knee, R/L wrist,
# R/L ankle; limbs joining them (the skeleton of JHMDB's puppet model).
JHMDB_LIMBS = ((0, 2), (0, 1), (0, 3), (0, 4), (3, 7), (7, 11), (4, 8), (8, 12), (1, 5), (1, 6),
               (5, 9), (9, 13), (6, 10), (10, 14))
STRIP_FRAMES = 6
STRIP_HEIGHT = 160
CAPTION_HEIGHT = 16  # the band above each strip frame with the model and frame index
GIF_HEIGHT = 240
GIF_MAX_FRAMES = 120  # a DAVIS sequence (<= 104 frames) stays whole; longer videos are sampled


def overlay_ids(frame: np.ndarray, ids: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend colours of non-zero ids over a frame and draw each region's border opaque; id 0
    (background) stays as is.

    The colours are the DAVIS palette brought to full brightness (its 128-level red, green and
    blue vanish on dark footage), and the opaque border keeps a mask visible on any background.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        ids: ``(H, W)`` integer labels (0..255).
        alpha: opacity of the colour inside a region.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    colours = bright_palette()[np.clip(ids, 0, 255)].astype(np.float32)  # (H, W, 3)
    blend = (1 - alpha) * frame.astype(np.float32) + alpha * colours
    inside = (ids > 0)[..., None]
    border = (_edges(ids) & (ids > 0))[..., None]
    return np.where(border, colours, np.where(inside, blend, frame)).round().astype(np.uint8)


def bright_palette() -> np.ndarray:
    """The DAVIS palette, each colour scaled so its strongest channel is 255: ``(256, 3)`` uint8."""
    palette = davis_palette().astype(np.float32)
    peak = palette.max(axis=1, keepdims=True)
    return np.where(peak > 0, palette * 255.0 / np.maximum(peak, 1.0), 0).round().astype(np.uint8)


def _edges(ids: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels with a 4-neighbour of another id (both sides of a boundary)."""
    edge = np.zeros(ids.shape, dtype=bool)
    horizontal = ids[:, 1:] != ids[:, :-1]
    vertical = ids[1:] != ids[:-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:] |= vertical
    edge[:-1] |= vertical
    return edge


def draw_skeleton(frame: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Draw JHMDB limbs and joints; a joint with x < 0 (invisible) and its limbs are skipped.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        joints: ``(15, 2)`` (x, y) pixels.

    Returns:
        ``(H, W, 3)`` uint8 copy with the skeleton drawn.
    """
    img = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(img)
    palette = davis_palette()
    width = max(1, round(min(frame.shape[:2]) / 80))
    for i, (a, b) in enumerate(JHMDB_LIMBS):
        if joints[a, 0] >= 0 and joints[b, 0] >= 0:
            draw.line([tuple(joints[a]), tuple(joints[b])], fill=tuple(palette[i + 1]), width=width)
    for x, y in joints:
        if x >= 0:
            r = width + 1
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    return np.asarray(img)


def _resize(frame: np.ndarray, height: int) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(frame))
    if img.height == height:
        return img
    width = max(1, round(img.width * height / img.height))
    return img.resize((width, height), Image.Resampling.BILINEAR)


def _pick(count: int, total: int) -> list[int]:
    """``count`` evenly spaced indices from 0 to ``total - 1`` (all when fewer)."""
    if total <= count:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def strip_png(frames: Sequence[np.ndarray], *, count: int = STRIP_FRAMES,
              height: int = STRIP_HEIGHT, label: str | None = None) -> bytes:
    """Evenly spaced frames (first and last included) side by side, as PNG bytes.

    Args:
        frames: ``(H, W, 3)`` uint8 frames with the predictions drawn on.
        count: frames in the strip.
        height: strip height in pixels (frames keep their aspect ratio).
        label: the model's name; given, a caption band above each frame reads
            ``<label>, frame <index>``.
    """
    if not frames:
        raise ValueError("strip: no frames to draw; expected at least one")
    picked = _pick(count, len(frames))
    tiles = [_resize(frames[i], min(height, frames[i].shape[0])) for i in picked]
    gap, band = 2, CAPTION_HEIGHT if label else 0
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1),
                               max(t.height for t in tiles) + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=band - 4) if label else None
    x = 0
    for index, tile in zip(picked, tiles, strict=True):
        canvas.paste(tile, (x, band))
        if label:
            draw.rectangle([x, 0, x + tile.width - 1, band - 1], fill=(32, 32, 32))
            draw.text((x + 3, 1), f"{label}, frame {index}", fill=(255, 255, 255), font=font)
        x += tile.width + gap
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def animated_gif(frames: Sequence[np.ndarray], *, fps: float = 8.0, height: int = GIF_HEIGHT,
                 max_frames: int = GIF_MAX_FRAMES) -> bytes:
    """The frames as a looping animated GIF (PIL ``save_all``), as bytes.

    Args:
        frames: ``(H, W, 3)`` uint8 frames with the predictions drawn on.
        fps: playback rate.
        height: GIF height in pixels (never upscaled).
        max_frames: longer videos are sampled evenly down to this many frames.
    """
    if not frames:
        raise ValueError("gif: no frames to draw; expected at least one")
    size = min(height, frames[0].shape[0])
    # Fast-octree palettes: PIL's default GIF quantiser took ~1 s per 8 frames at 427x240, more
    # than a sequence's metrics; this one takes ~25 ms for the same look.
    images = [_resize(frames[i], size).quantize(256, method=Image.Quantize.FASTOCTREE)
              for i in _pick(max_frames, len(frames))]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0)
    return buf.getvalue()
