"""What each challenge promises, measured on the rendered labels; and per-object statistics.

A draw of the object plans is kept only if every promise holds on its masks (the same numbers a
reader of the benchmark would measure), so the benchmark's claims are facts about its files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stcorr.data.footage.plans import ObjectPlan
from stcorr.data.footage.render import Layers

FIRST_VISIBLE = 0.5  # share of each object's silhouette visible in frame 0
MIN_PIXELS = 1500.0  # px of each object visible in frame 0, at 480p
FAST_BAR = 40.0  # px/frame the fast object's mask centroid moves at least, every frame pair
SCALE_BAR = 2.0  # largest over smallest visible area of the scale-change object


def visible_area(layers: Layers, k: int) -> np.ndarray:
    """``(T,)`` pixels labelled k."""
    return (layers.masks == k).sum(axis=(1, 2))


def centroids(masks: np.ndarray, k: int) -> np.ndarray:
    """``(T, 2)`` mean ``(y, x)`` of the pixels labelled k (NaN where there are none)."""
    out = np.full((len(masks), 2), np.nan)
    for t, frame in enumerate(masks):
        ys, xs = np.nonzero(frame == k)
        if len(ys):
            out[t] = ys.mean(), xs.mean()
    return out


def _touches_edge(silhouette: np.ndarray) -> bool:
    """True where a ``(H, W)`` silhouette is empty or reaches the frame border (may be cut off)."""
    border = silhouette[0].any() or silhouette[-1].any() or silhouette[:, 0].any() or silhouette[:, -1].any()
    return bool(border or not silhouette.any())


def _hidden_inside(layers: Layers, k: int) -> bool:
    """Object k is wholly hidden while wholly in frame at some frame, and seen again later."""
    seen = visible_area(layers, k)
    for t in np.flatnonzero(seen == 0):
        if not _touches_edge(layers.coverage[k - 1, t]) and (seen[t + 1 :] > 0).any():
            return True
    return False


def _exits_and_returns(layers: Layers, k: int) -> bool:
    """Object k is wholly out of frame at some frame and back in frame later."""
    inside = layers.coverage[k - 1].sum(axis=(1, 2))
    gone = np.flatnonzero(inside == 0)
    return bool(len(gone) and gone[0] > 0 and (visible_area(layers, k)[gone[0] :] > 0).any())


def _holds(tag: str, objects: Sequence[ObjectPlan], layers: Layers, k: int, unit: float) -> bool:
    """Does object k's challenge ``tag`` hold on the masks?"""
    if tag == "fast-motion":
        steps = np.linalg.norm(np.diff(centroids(layers.masks, k), axis=0), axis=1)
        return bool((steps >= FAST_BAR * unit).all())  # NaN (object unseen) fails too
    if tag == "exit-reentry":
        return _exits_and_returns(layers, k)
    if tag == "occlusion":
        return _hidden_inside(layers, k)
    if tag == "scale-change":
        area = visible_area(layers, k)
        return bool(area.min() > 0 and area.max() >= SCALE_BAR * area.min())
    if tag == "twins":
        mates = [j + 1 for j, o in enumerate(objects) if "twins" in o.tags and j + 1 != k]
        return not any((layers.coverage[k - 1] & layers.coverage[j - 1]).any() for j in mates)
    return True


def acceptable(objects: Sequence[ObjectPlan], layers: Layers, unit: float) -> bool:
    """Every object well visible in frame 0, and every challenge tag holding.

    Args:
        objects: the plans, object k at index k - 1.
        layers: their composite.
        unit: output px per px at 480p (``MIN_PIXELS`` and ``FAST_BAR`` scale with it).
    """
    for k, item in enumerate(objects, start=1):
        seen = float(visible_area(layers, k)[0])
        if seen < FIRST_VISIBLE * float(item.full_area()[0]) or seen < MIN_PIXELS * unit**2:
            return False
        if not all(_holds(tag, objects, layers, k, unit) for tag in item.tags):
            return False
    return True


def object_record(item: ObjectPlan, layers: Layers, k: int) -> dict[str, Any]:
    """JSON-ready facts of object k: tags, source, speeds of its centre, visible areas."""
    steps = np.linalg.norm(np.diff(item.motion.centers, axis=0), axis=1)
    area = visible_area(layers, k)
    return {
        "id": k,
        "tags": list(item.tags),
        "source": item.cutout.source,
        "sprite_side": int(item.cutout.sprite.shape.shape[0]),
        "scale_range": [round(float(item.motion.scales.min()), 4), round(float(item.motion.scales.max()), 4)],
        "mean_speed_px_per_frame": round(float(steps.mean()), 3),
        "max_speed_px_per_frame": round(float(steps.max()), 3),
        "min_area_px": int(area.min()),
        "max_area_px": int(area.max()),
        "frames_invisible": [int(t) for t in np.flatnonzero(area == 0)],
    }
