"""The geometry label propagation shares between its float32 and bf16-screened paths.

Windows (``window_offsets``), the tiling of a target frame and the ring's slots (``Plan``),
and the frame layouts both paths read (``normalised``, ``query_tiles``). The protocol itself
is described in stcorr.eval.propagation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Window = Literal["circle", "square"]
TILE = 8  # target tile side in cells: a tile is scored against its (8 + 2r)^2 key region


def window_offsets(radius: float, window: Window) -> Tensor:
    """Integer offsets ``(dy, dx)`` of the spatial window around a target cell.

    Args:
        radius: r in feature cells; ``circle`` keeps ``dy^2 + dx^2 < r^2``, ``square`` keeps
            ``|dy|, |dx| <= floor(r)``.
        window: ``"circle"`` or ``"square"``.

    Returns:
        ``(P, 2)`` long tensor of offsets, ``(0, 0)`` included.
    """
    reach = math.ceil(radius) if window == "circle" else math.floor(radius)
    d = torch.arange(-reach, reach + 1)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    keep = (dy**2 + dx**2).double() < radius**2 if window == "circle" else torch.ones_like(dy).bool()
    return torch.stack([dy[keep], dx[keep]], dim=1)  # (P, 2)


@dataclass(frozen=True)
class Plan:
    """Tiles, windows and ring slots, shared by every target frame.

    The ring holds the normalised restricted context frames channel-last, ``(H, m, W, C)``.
    While it grows (``t <= S``) frame f sits in slot f. Then, with an unrestricted first
    frame (CRW), S = n and frame f replaces slot ``f % n``; otherwise S = n + 1, frame 0
    keeps slot 0 and frame f replaces slot ``1 + (f - 1) % n``.
    """

    height: int
    width: int
    tile: int
    reach: int  # max |offset|: how far a tile's key region reaches past the tile
    group: int  # tiles per chunk
    n_context: int
    first_free: bool  # frame 0 is scored densely, outside the ring
    offsets: Tensor  # (P, 2) window offsets (dy, dx)
    invalid: Tensor  # (n_ty, n_tx, P_t, 1, P) candidate outside the image

    @property
    def side(self) -> int:
        return self.tile + 2 * self.reach

    @property
    def slots(self) -> int:
        return self.n_context if self.first_free else self.n_context + 1

    @property
    def shape(self) -> tuple[int, int]:
        return math.ceil(self.height / self.tile), math.ceil(self.width / self.tile)

    def slot(self, frame: int) -> int:
        if self.first_free:
            return frame % self.n_context
        return 0 if frame == 0 else 1 + (frame - 1) % self.n_context

    def pick(self, slots: int) -> Tensor:
        """``(P_t, m, P)`` flat index of each (cell, slot, window cell) in a tile's
        ``(side, m, side, P_t)`` affinity block."""
        cells = torch.arange(self.tile**2, device=self.offsets.device).view(-1, 1, 1)
        iy, ix = cells // self.tile, cells % self.tile  # (P_t, 1, 1)
        row = iy + self.offsets[:, 0] + self.reach  # (P_t, 1, P) region row, column
        col = ix + self.offsets[:, 1] + self.reach
        slot = torch.arange(slots, device=self.offsets.device).view(1, -1, 1)
        return ((row * slots + slot) * self.side + col) * self.tile**2 + cells


def make_plan(height: int, width: int, offsets: Tensor, n_context: int, first_free: bool,
          chunk: int, tile: int = TILE) -> Plan:
    """Tile the target frame and precompute which window cells fall outside the image."""
    tile = min(tile, max(1, math.isqrt(chunk)))
    cells = torch.arange(tile * tile, device=offsets.device)
    iy, ix = (cells // tile).view(-1, 1, 1), (cells % tile).view(-1, 1, 1)  # (P_t, 1, 1)
    dy, dx = offsets[:, 0], offsets[:, 1]
    n_ty, n_tx = math.ceil(height / tile), math.ceil(width / tile)
    y = torch.arange(n_ty, device=offsets.device).view(-1, 1, 1, 1, 1) * tile + iy
    x = torch.arange(n_tx, device=offsets.device).view(1, -1, 1, 1, 1) * tile + ix
    inside = (y + dy >= 0) & (y + dy < height) & (x + dx >= 0) & (x + dx < width)
    padding = (y >= height) | (x >= width)  # padded target cells: computed, then discarded
    return Plan(height, width, tile, int(offsets.abs().max()), max(1, chunk // tile**2),
                 n_context, first_free, offsets, ~(inside | padding))


def normalised(frame: Tensor) -> Tensor:
    """``(C, H, W)`` -> L2-normalised over C, channel-last ``(H, W, C)``, contiguous (later
    copies of the frame are then plain ones, not transposes)."""
    return F.normalize(frame.permute(1, 2, 0).contiguous(), dim=2)  # reduce along memory


def query_tiles(query: Tensor, plan: Plan) -> Tensor:
    """``(H, W, C)`` target features as ``(n_ty, n_tx, P_t, C)`` tiles (zero-padded at the edges)."""
    n_ty, n_tx = plan.shape
    tile = plan.tile
    padded = F.pad(query, (0, 0, 0, n_tx * tile - plan.width, 0, n_ty * tile - plan.height))
    return padded.reshape(n_ty, tile, n_tx, tile, -1).transpose(1, 2).reshape(n_ty, n_tx, tile * tile, -1)
