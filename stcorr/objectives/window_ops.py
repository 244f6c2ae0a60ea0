"""Tiled window kernels behind the local correlation of STT Eq. 4 (see ``correlation.py``).

Dot products and the frame transform run on tiles of t x t target positions against their
(t + 2r)^2 reference neighbourhood, one batched matmul per chunk of tile rows, inside custom
autograd functions that keep only their inputs for the backward pass. Nothing HW x HW exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# Bound on the elements of one chunk's reference tiles and tile scores (4 MiB in fp32): small
# enough to keep the peak at the (B, HW, K) outputs, large enough for efficient matmuls.
_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class _Tiling:
    """Geometry of t x t target tiles and their (t + 2r)^2 reference neighbourhoods."""

    height: int
    width: int
    radius: int
    tile: int
    chunk_elements: int = _CHUNK_ELEMENTS

    @property
    def span(self) -> int:
        return self.tile + 2 * self.radius

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile)

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile)

    @property
    def blocks(self) -> int:
        """m: t x t blocks per neighbourhood side (ceil((t + 2r) / t))."""
        return -(-self.span // self.tile)

    def pad_target(self, f: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> channels-last ``(B, rows*t, cols*t, C)``, zeros bottom/right."""
        out = f.new_zeros(f.shape[0], self.rows * self.tile, self.cols * self.tile, f.shape[1])
        out[:, : self.height, : self.width] = f.permute(0, 2, 3, 1)
        return out

    def pad_reference(self, f: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> channels-last ``(B, rows*t + 2r, cols*t + 2r, C)``, zeros round."""
        r = self.radius
        shape = (f.shape[0], self.rows * self.tile + 2 * r, self.cols * self.tile + 2 * r, f.shape[1])
        out = f.new_zeros(shape)
        out[:, r : r + self.height, r : r + self.width] = f.permute(0, 2, 3, 1)
        return out

    def window_index(self, device: torch.device) -> Tensor:
        """``(t*t, (2r+1)^2)``: flat index in the (t+2r)^2 neighbourhood of each window slot."""
        u = torch.arange(self.tile, device=device)
        d = torch.arange(2 * self.radius + 1, device=device)
        iy = u[:, None] + d  # (t, 2r+1): row inside the neighbourhood for (u, dy + r)
        idx = iy[:, None, :, None] * self.span + iy[None, :, None, :]  # (t, t, 2r+1, 2r+1)
        return idx.reshape(self.tile**2, -1)

    def chunks(self, batch: int, channels: int) -> list[tuple[int, int]]:
        """Ranges of tile rows whose reference tiles and tile scores stay under the bound."""
        per_row = batch * max(channels, self.tile**2) * self.cols * self.span**2
        step = max(1, self.chunk_elements // per_row)
        return [(y0, min(y0 + step, self.rows)) for y0 in range(0, self.rows, step)]

    def to_tiles(self, x: Tensor) -> Tensor:
        """Row-major ``(B, H*W, F)`` -> tile-major view ``(B, rows, cols, t, t, F)``, zero padded."""
        b, f, t = x.shape[0], x.shape[-1], self.tile
        x = x.reshape(b, self.height, self.width, f)
        if (self.rows * t, self.cols * t) != (self.height, self.width):
            x = F.pad(x, (0, 0, 0, self.cols * t - self.width, 0, self.rows * t - self.height))
        return x.reshape(b, self.rows, t, self.cols, t, f).permute(0, 1, 3, 2, 4, 5)

    def scatter_window(self, w: Tensor, idx: Tensor) -> Tensor:
        """Window slots ``(N, t*t, K)`` -> their neighbourhood positions ``(N, t*t, (t+2r)^2)``."""
        out = w.new_zeros(w.shape[0], self.tile**2, self.span**2)
        return out.scatter_(2, idx.expand(w.shape[0], -1, -1), w)  # slots are distinct per row

    def dense_windows(self, weights: Tensor, channels: int) -> Iterator[tuple[int, int, Tensor]]:
        """Per chunk of tile rows: (y0, y1, weights scattered to ``(B*n, t*t, (t+2r)^2)``)."""
        t, k = self.tile, (2 * self.radius + 1) ** 2
        w_tiles, idx = self.to_tiles(weights), self.window_index(weights.device)
        for y0, y1 in self.chunks(weights.shape[0], channels):
            yield y0, y1, self.scatter_window(w_tiles[:, y0:y1].reshape(-1, t * t, k), idx)

    def target_tiles(self, ft: Tensor, y0: int, y1: int) -> Tensor:
        """Tiles of tile rows y0..y1 -> ``(B * n, t*t, C)``, n = (y1 - y0) * cols."""
        b, c, t = ft.shape[0], ft.shape[3], self.tile
        band = ft[:, y0 * t : y1 * t].reshape(b, y1 - y0, t, self.cols, t, c)
        return band.permute(0, 1, 3, 2, 4, 5).reshape(-1, t * t, c)

    def reference_tiles(self, fr: Tensor, y0: int, y1: int) -> Tensor:
        """Neighbourhoods of tile rows y0..y1 -> ``(B * n, (t+2r)^2, C)``."""
        c, t, s = fr.shape[3], self.tile, self.span
        band = fr[:, y0 * t : y1 * t + 2 * self.radius]
        views = band.unfold(1, s, t).unfold(2, s, t)  # (B, n_rows, cols, C, s, s), no copy yet
        return views.permute(0, 1, 2, 4, 5, 3).reshape(-1, s * s, c)  # the one copy, C-runs

    def add_neighbourhoods(self, grad_r: Tensor, g_ref: Tensor, y0: int, y1: int) -> None:
        """Sum neighbourhood gradients ``(B*n, (t+2r)^2, C)`` onto the padded reference.

        ``grad_r`` is ``(B, (rows+m-1)*t, (cols+m-1)*t, C)``; each neighbourhood is m x m
        blocks of t x t (the last ones partial), and block (p, q) of tile (i, j) lands on
        block (i + p, j + q): m^2 non-overlapping slice additions instead of a fold.
        """
        b, c, t, s, m = grad_r.shape[0], grad_r.shape[3], self.tile, self.span, self.blocks
        blocks = grad_r.view(b, grad_r.shape[1] // t, t, grad_r.shape[2] // t, t, c)
        g_ref = g_ref.reshape(b, y1 - y0, self.cols, s, s, c)
        for p in range(m):
            hp = min(t, s - p * t)
            for q in range(m):
                wq = min(t, s - q * t)
                part = g_ref[:, :, :, p * t : p * t + hp, q * t : q * t + wq]
                blocks[:, y0 + p : y1 + p, :hp, q : q + self.cols, :wq] += part.permute(0, 1, 3, 2, 4, 5)


def _window_dot_forward(f_t: Tensor, f_r: Tensor, geo: _Tiling) -> Tensor:
    """Raw windowed dot products, ``(B, HW, (2r+1)^2)``; see ``local_dot_products``."""
    b, c = f_t.shape[:2]
    t, k = geo.tile, (2 * geo.radius + 1) ** 2
    ft, fr = geo.pad_target(f_t), geo.pad_reference(f_r)
    idx = geo.window_index(f_t.device)
    out = f_t.new_empty(b, geo.rows * t, geo.cols * t, k)  # row-major: no final reordering
    tiled = out.view(b, geo.rows, t, geo.cols, t, k)
    for y0, y1 in geo.chunks(b, c):
        a, ref = geo.target_tiles(ft, y0, y1), geo.reference_tiles(fr, y0, y1)
        scores = torch.bmm(a, ref.transpose(1, 2))  # (B*n, t*t, (t+2r)^2)
        picked = scores.gather(2, idx.expand(scores.shape[0], -1, -1))  # (B*n, t*t, K) slots
        picked = picked.view(b, y1 - y0, geo.cols, t, t, k).permute(0, 1, 3, 2, 4, 5)
        tiled[:, y0:y1] = picked
    if out.shape[1:3] != (geo.height, geo.width):
        out = out[:, : geo.height, : geo.width].contiguous()
    return out.view(b, geo.height * geo.width, k)


def _window_dot_backward(
    grad: Tensor, f_t: Tensor, f_r: Tensor, geo: _Tiling
) -> tuple[Tensor, Tensor]:
    """Gradients of the windowed dot products w.r.t. f_t and f_r (both ``(B, C, H, W)``)."""
    b, c = f_t.shape[:2]
    t, r, k, m = geo.tile, geo.radius, (2 * geo.radius + 1) ** 2, geo.blocks
    ft, fr = geo.pad_target(f_t), geo.pad_reference(f_r)
    g = geo.to_tiles(grad)  # (B, rows, cols, t, t, K)
    idx = geo.window_index(f_t.device)
    grad_t = torch.zeros_like(ft)
    grad_r = ft.new_zeros(b, (geo.rows + m - 1) * t, (geo.cols + m - 1) * t, c)
    for y0, y1 in geo.chunks(b, c):
        a, ref = geo.target_tiles(ft, y0, y1), geo.reference_tiles(fr, y0, y1)
        g_scores = geo.scatter_window(g[:, y0:y1].reshape(-1, t * t, k), idx)
        g_a = torch.bmm(g_scores, ref).reshape(b, y1 - y0, geo.cols, t, t, c)  # (.., t, t, C)
        grad_t.view(b, geo.rows, t, geo.cols, t, c)[:, y0:y1] = g_a.permute(0, 1, 3, 2, 4, 5)
        geo.add_neighbourhoods(grad_r, torch.bmm(g_scores.transpose(1, 2), a), y0, y1)
    h, w = geo.height, geo.width
    grad_f_t = grad_t[:, :h, :w].permute(0, 3, 1, 2)  # back to (B, C, H, W)
    return grad_f_t, grad_r[:, r : r + h, r : r + w].permute(0, 3, 1, 2)


def _window_apply_forward(weights: Tensor, values: Tensor, geo: _Tiling) -> Tensor:
    """out_i = sum_k w_ik v_(i + delta_k): ``(B, HW, K)``, ``(B, D, H, W)`` -> ``(B, D, H, W)``."""
    b, d, t = values.shape[0], values.shape[1], geo.tile
    vr = geo.pad_reference(values)
    out = values.new_empty(b, geo.rows * t, geo.cols * t, d)
    tiled = out.view(b, geo.rows, t, geo.cols, t, d)
    for y0, y1, dense_w in geo.dense_windows(weights, d):
        o = torch.bmm(dense_w, geo.reference_tiles(vr, y0, y1))  # (B*n, t*t, D)
        tiled[:, y0:y1] = o.view(b, y1 - y0, geo.cols, t, t, d).permute(0, 1, 3, 2, 4, 5)
    return out[:, : geo.height, : geo.width].permute(0, 3, 1, 2)


def _window_apply_values_grad(weights: Tensor, grad: Tensor, geo: _Tiling) -> Tensor:
    """Gradient of the frame transform w.r.t. the values: the transposed transform."""
    b, d, t, r, m = grad.shape[0], grad.shape[1], geo.tile, geo.radius, geo.blocks
    gt = geo.pad_target(grad)
    grad_v = gt.new_zeros(b, (geo.rows + m - 1) * t, (geo.cols + m - 1) * t, d)
    for y0, y1, dense_w in geo.dense_windows(weights, d):
        g_ref = torch.bmm(dense_w.transpose(1, 2), geo.target_tiles(gt, y0, y1))  # (.., s^2, D)
        geo.add_neighbourhoods(grad_v, g_ref, y0, y1)
    return grad_v[:, r : r + geo.height, r : r + geo.width].permute(0, 3, 1, 2)


class _WindowDot(torch.autograd.Function):
    """Windowed dot products that save only their inputs (no tiles) for the backward pass."""

    @staticmethod
    def forward(ctx: Any, f_t: Tensor, f_r: Tensor, geo: _Tiling) -> Tensor:
        ctx.save_for_backward(f_t, f_r)
        ctx.geo = geo
        return _window_dot_forward(f_t, f_r, geo)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        f_t, f_r = ctx.saved_tensors
        grad_t, grad_r = _window_dot_backward(grad.contiguous(), f_t, f_r, ctx.geo)
        return (
            grad_t if ctx.needs_input_grad[0] else None,
            grad_r if ctx.needs_input_grad[1] else None,
            None,
        )


class _WindowApply(torch.autograd.Function):
    """Frame transform on tiles; saves only its inputs for the backward pass."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, values: Tensor, geo: _Tiling) -> Tensor:
        ctx.save_for_backward(weights, values)
        ctx.geo = geo
        return _window_apply_forward(weights, values, geo)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        weights, values = ctx.saved_tensors
        grad_w = grad_v = None
        if ctx.needs_input_grad[0]:  # <grad_out_i, v_(i + delta_k)>: a windowed dot product
            grad_w = _window_dot_forward(grad.contiguous(), values, ctx.geo)
        if ctx.needs_input_grad[1]:
            grad_v = _window_apply_values_grad(weights, grad.contiguous(), ctx.geo)
        return grad_w, grad_v, None
