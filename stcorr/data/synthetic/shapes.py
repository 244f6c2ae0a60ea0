"""Random object silhouettes (ellipses, star-shaped polygons, wobbly blobs) as binary masks.

Masks are hard (no anti-aliasing) so that a rendered pixel's label is exactly the topmost object
covering it: the ground truth the synthetic DAVIS benchmark needs.
"""

from __future__ import annotations

import numpy as np

SHAPE_KINDS = ("ellipse", "polygon", "blob")
MIN_FILL = 0.2  # a silhouette covers at least this share of its square, so objects are not slivers


def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a ``size x size`` square mapped to [-1, 1]; ``(size, size)`` each."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    v, u = np.meshgrid(c, c, indexing="ij")
    return u, v


def _ellipse(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = rng.uniform(0.55, 0.95, size=2)
    phi = rng.uniform(0.0, np.pi)
    x = u * np.cos(phi) + v * np.sin(phi)
    y = -u * np.sin(phi) + v * np.cos(phi)
    return np.asarray((x / a) ** 2 + (y / b) ** 2 <= 1.0)


def _polygon(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Star-shaped polygon around the origin: inside iff closer than the edge along the same ray."""
    n = int(rng.integers(3, 9))
    # Jitter of +-0.2 of the even spacing keeps every gap below pi even for triangles (1.4 * 2pi/3).
    angles = (np.arange(n) + rng.uniform(-0.2, 0.2, size=n)) * 2.0 * np.pi / n
    radii = rng.uniform(0.55, 0.95, size=n)
    px, py = radii * np.cos(angles), radii * np.sin(angles)  # (n,)
    theta = np.mod(np.arctan2(v, u) - angles[0], 2.0 * np.pi) + angles[0]
    i = np.clip(np.searchsorted(angles, theta, side="right") - 1, 0, n - 1)  # edge i -> i+1
    j = (i + 1) % n
    ex, ey = px[j] - px[i], py[j] - py[i]
    dx, dy = np.cos(theta), np.sin(theta)
    # Distance from the origin to edge i along the ray (dx, dy): cross(P_i, E) / cross(d, E).
    edge_r = (px[i] * ey - py[i] * ex) / (dx * ey - dy * ex)
    return np.asarray(np.hypot(u, v) <= edge_r)


def _blob(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Radius modulated by a few low harmonics: r(phi) = r0 (1 + sum_k a_k cos(k phi + psi_k))."""
    phi = np.arctan2(v, u)
    r = np.ones_like(phi)
    for k in (2, 3, 4):
        r += rng.uniform(0.0, 0.15) * np.cos(k * phi + rng.uniform(0.0, 2.0 * np.pi))
    return np.asarray(np.hypot(u, v) <= 0.65 * r)


def random_shape(rng: np.random.Generator, size: int, kind: str | None = None) -> np.ndarray:
    """A random silhouette centred in a square; it stays inside the inscribed disc of radius 1.

    Args:
        rng: random generator.
        size: side of the square in pixels.
        kind: one of ``SHAPE_KINDS``; ``None`` picks one at random.

    Returns:
        ``(size, size)`` bool mask.

    Raises:
        ValueError: unknown ``kind``.
    """
    kind = kind if kind is not None else SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    makers = {"ellipse": _ellipse, "polygon": _polygon, "blob": _blob}
    if kind not in makers:
        raise ValueError(f"shape kind: expected one of {SHAPE_KINDS}, got {kind!r}")
    u, v = _unit_grid(size)
    for _ in range(8):  # resample the rare sliver; deterministic because rng is
        mask = makers[kind](rng, u, v)
        if mask.mean() >= MIN_FILL:
            return mask
    return np.asarray(np.hypot(u, v) <= 0.8)  # fallback: a disc
