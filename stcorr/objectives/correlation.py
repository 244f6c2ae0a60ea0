"""Windowed local correlation, STT Eq. 4 (Li & Liu, CVPR 2023, arXiv 2209.07778).

For target features f_t and reference features f_r on the same (H, W) grid,

    C_ij = softmax_{j in W_r(i)} ( <f_t,i , f_r,j> * scale ),

where W_r(i) is the (2r+1) x (2r+1) square of reference positions around i, out-of-frame
positions excluded. Window slot k = (dy + r) * (2r + 1) + (dx + r) holds displacement (dy, dx),
the channel order of ``F.unfold(kernel_size=2r+1, padding=r)``.

The reference code builds a dense HW x HW matrix and masks it (docs/methods.md 2.5); here nothing
HW x HW exists. Dot products and the frame transform run on tiles of t x t target positions
against their (t + 2r)^2 reference neighbourhood, one batched matmul per chunk of tile rows,
inside custom autograd functions that keep only their inputs for the backward pass; the window
softmax works in place. Memory is O(B * HW * (2r+1)^2) plus one chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from stcorr.objectives.window_ops import _CHUNK_ELEMENTS, _Tiling, _WindowApply, _WindowDot


@dataclass(frozen=True)
class LocalCorrelation:
    """Windowed correlation of one target/reference feature pair (STT Eq. 4).

    Attributes:
        weights: ``(B, HW, (2r+1)^2)`` softmax over each window; exactly 0 at invalid slots.
        raw: ``(B, HW, (2r+1)^2)`` unscaled dot products ``c2``; 0 where the reference
            position is outside the frame (as ``mmcv.ops.Correlation`` with zero padding).
        valid: ``(HW, (2r+1)^2)`` bool, True where the reference position is inside the frame.
        radius: window radius r in feature pixels (not image pixels).
        height: H of the feature grid.
        width: W of the feature grid.
    """

    weights: Tensor
    raw: Tensor
    valid: Tensor
    radius: int
    height: int
    width: int


def window_valid_mask(height: int, width: int, radius: int, device: torch.device) -> Tensor:
    """Which window slots of each position fall inside the frame.

    Returns:
        ``(H * W, (2r+1)^2)`` bool tensor.
    """
    d = torch.arange(-radius, radius + 1, device=device)
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    vy = ((ys[:, None] + d) >= 0) & ((ys[:, None] + d) < height)  # (H, 2r+1)
    vx = ((xs[:, None] + d) >= 0) & ((xs[:, None] + d) < width)  # (W, 2r+1)
    valid = vy[:, None, :, None] & vx[None, :, None, :]  # (H, W, 2r+1, 2r+1)
    return valid.reshape(height * width, (2 * radius + 1) ** 2)


def local_dot_products(
    f_t: Tensor, f_r: Tensor, radius: int, tile: int = 8, chunk_elements: int = _CHUNK_ELEMENTS
) -> Tensor:
    """Raw correlation ``c2``: <f_t,i, f_r,i+delta> for every delta in the window (STT Eq. 4).

    Equals ``mmcv.ops.Correlation(max_displacement=r)`` of the reference code: no scaling, and
    0 where i + delta leaves the frame.

    Args:
        f_t: ``(B, C, H, W)`` target features.
        f_r: ``(B, C, H, W)`` reference features on the same grid.
        radius: window radius r in feature pixels.
        tile: side of the target tiles that share one matmul (speed only, not the result).
        chunk_elements: bound on one chunk's unfolded reference tiles (memory only).

    Returns:
        ``(B, H*W, (2r+1)^2)``.

    Raises:
        ValueError: if the shapes differ or radius/tile is not positive.
    """
    if f_t.dim() != 4 or f_t.shape != f_r.shape:
        raise ValueError(
            f"local correlation: expected f_t and f_r of one shape (B, C, H, W), "
            f"got {tuple(f_t.shape)} and {tuple(f_r.shape)}"
        )
    if radius < 1 or tile < 1:
        raise ValueError(f"local correlation: radius and tile must be >= 1, got {radius}, {tile}")
    geo = _Tiling(f_t.shape[2], f_t.shape[3], radius, tile, chunk_elements)
    out: Tensor = _WindowDot.apply(f_t, f_r, geo)
    return out


class _WindowSoftmax(torch.autograd.Function):
    """softmax_k(raw * scale) over valid slots, computed in place: one (B, HW, K) tensor per pass."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # softmax in fp32
    def forward(ctx: Any, raw: Tensor, valid: Tensor, scale: float) -> Tensor:
        w = (raw * scale).masked_fill_(~valid, float("-inf"))
        w.sub_(w.amax(dim=-1, keepdim=True)).exp_()
        w.div_(w.sum(dim=-1, keepdim=True))
        ctx.save_for_backward(w)
        ctx.scale = scale
        return w

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (w,) = ctx.saved_tensors
        g = grad * w  # d raw = scale * w * (grad - sum_k grad_k w_k); 0 at invalid slots
        g.addcmul_(w, g.sum(dim=-1, keepdim=True), value=-1.0)
        return g.mul_(ctx.scale), None, None


def window_softmax(raw: Tensor, valid: Tensor, scale: float = 1.0) -> Tensor:
    """softmax_k(raw * scale) over the valid window slots; invalid slots get exactly 0.

    Args:
        raw: ``(B, HW, K)`` dot products (not modified).
        valid: ``(HW, K)`` bool; every row has at least its centre slot valid.
        scale: multiplier inside the softmax.

    Returns:
        ``(B, HW, K)`` rows summing to 1 over the valid slots.
    """
    out: Tensor = _WindowSoftmax.apply(raw, valid, scale)
    return out


def local_correlation(
    f_t: Tensor, f_r: Tensor, radius: int, scale: float | None = None, tile: int = 8
) -> LocalCorrelation:
    """Windowed local correlation C of STT Eq. 4, with its raw dot products ``c2``.

    Args:
        f_t: ``(B, C, H, W)`` target features.
        f_r: ``(B, C, H, W)`` reference features.
        radius: window radius r in feature pixels.
        scale: multiplier of the dot products inside the softmax; None = 1/sqrt(C), the
            reference code's ``scaling=True``.
        tile: tile side of the matmul (speed only).

    Returns:
        A ``LocalCorrelation`` (weights and raw both ``(B, HW, (2r+1)^2)``).
    """
    scale = 1.0 / math.sqrt(f_t.shape[1]) if scale is None else scale
    raw = local_dot_products(f_t, f_r, radius, tile)  # (B, HW, (2r+1)^2)
    h, w = f_t.shape[2], f_t.shape[3]
    valid = window_valid_mask(h, w, radius, f_t.device)
    weights = window_softmax(raw, valid, scale)
    return LocalCorrelation(weights, raw, valid, radius, h, w)


def apply_local_correlation(weights: Tensor, values: Tensor, radius: int, tile: int = 8) -> Tensor:
    """Frame transform: out_i = sum_j C_ij v_j over the window of i (STT Eq. 5).

    Runs on the same tiles as the correlation; memory is O(B * HW * (2r+1)^2) for any D.

    Args:
        weights: ``(B, HW, (2r+1)^2)`` from ``local_correlation``.
        values: ``(B, D, H, W)`` reference values on the correlation's grid.
        radius: the correlation's window radius r.
        tile: tile side of the matmul (speed only).

    Returns:
        ``(B, D, H, W)``.

    Raises:
        ValueError: if the grids disagree.
    """
    b, _, h, w = values.shape
    k = (2 * radius + 1) ** 2
    if weights.shape != (b, h * w, k):
        raise ValueError(
            f"apply_local_correlation: weights {tuple(weights.shape)} do not match values "
            f"{tuple(values.shape)} with radius {radius}; expected ({b}, {h * w}, {k})"
        )
    out: Tensor = _WindowApply.apply(weights, values, _Tiling(h, w, radius, tile))
    return out
