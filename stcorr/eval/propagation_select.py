"""Step 2 of the bf16 screen (stcorr.eval.propagation_screen): each cell's top-k' candidates.

A cell has ~27,000 screened candidates at n = 20 (its window in every ring slot, and all of
frame 0 for CRW); sorting them all would cost more than scoring them. A block is one window
cell in every slot, or ``FIRST_BLOCK`` consecutive key cells of frame 0. The top-k' elements
lie in the k' blocks with the largest maxima, so one top-k over the blocks' maxima
(window cells only, region and frame 0 together) and one over those blocks' elements find
them. Every screened score is negative (``propagation_screen.KEY_SHIFT``), so maxima and
top-k run on the bits as int16: the largest negative bf16 is the smallest integer (sign and
magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

FIRST_BLOCK = 20  # frame 0's key cells per block: ~sqrt(HW / k') balances the two top-k
# stages; as long as a region block at the papers' n = 20, it widens no gather


def _amax(scores: Tensor, dim: int) -> Tensor:
    """``scores.amax(dim)`` for negative bf16 scores, ~4x faster: read as int16 (sign and
    magnitude), the largest negative bf16 is the smallest integer."""
    return scores.view(torch.int16).amin(dim).view(scores.dtype)


def _topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``scores.topk(k, dim=-1)`` for negative bf16 scores, on the bits as ``_amax`` (~10%
    faster)."""
    values, index = scores.view(torch.int16).topk(k, dim=-1, largest=False)
    return values.view(scores.dtype), index


def block_maxima(scores: Tensor, window: Tensor, invalid: Tensor,
                 first: Tensor | None) -> Tensor:
    """Each cell's block maxima: its window's region blocks (one key cell in every slot),
    then frame 0's blocks.

    The window is the same for every slot, so only the maxima of its cells are kept.

    Args:
        scores: ``(G, side, side, m, P_t)`` bf16 region affinities (key row, key column,
            slot, cell); window: ``(G', P_t, P)`` (``propagation_screen.window_cells``);
        invalid: ``(G, P_t, P)`` window cells outside the image (``Plan.invalid``);
        first: ``(HW padded, G * P_t)`` bf16 affinities to frame 0 (padding -inf), or None.

    Returns:
        ``(G, P_t, P [+ HW padded / FIRST_BLOCK])``.
    """
    n_tiles, n_cells = scores.shape[0], scores.shape[-1]
    region = _amax(scores, 3)  # (G, side, side, P_t)
    maxima = region.take(window[:n_tiles]).masked_fill_(invalid, float("-inf"))  # (G, P_t, P)
    if first is None:
        return maxima
    first_maxima = _amax(first.view(-1, FIRST_BLOCK, first.shape[1]), 1)  # (blocks, G * P_t)
    return torch.cat([maxima, first_maxima.T.view(n_tiles, n_cells, -1)], 2)


@dataclass(frozen=True)
class Blocks:
    """Where a chunk's scores lie in the flat scratch buffer, block by block.

    Region block ``b < P`` is window cell b of the target cell (``window_cells``); its
    element ``j`` is slot ``j`` (``j < m``, of ``stride`` slots allocated). Frame-0 block
    ``b >= P`` holds key cells ``(b - P) * FIRST_BLOCK + j``. Element ``j`` lies ``j * P_t``
    (region) or ``j * G * P_t`` (frame 0) past element 0, so one gather reads both kinds.
    """

    tiles: int  # G
    side: int
    slots: int  # m
    stride: int  # slots allocated in the ring and in the region's scores (>= m)
    cells: int  # P_t
    duplicate: bool  # slot 0 counts twice (STT's frame 0 while t <= n)
    first_at: int  # offset of frame 0's (HW padded, G * P_t) scores, or -1 if none
    window: Tensor  # (P_t, P) region cell row * side + column of each window cell

    def region(self, best: Tensor) -> Tensor:
        """Region cell ``row * side + column`` of each block in ``best`` (``(G, P_t, kb)``;
        frame-0 blocks get an arbitrary one)."""
        window = self.window.expand(best.shape[0], -1, -1)
        return window.gather(2, best.clamp(max=window.shape[2] - 1))

    @property
    def width(self) -> int:
        """Elements gathered per block: the longer of the two kinds."""
        return max(self.slots, FIRST_BLOCK) if self.first_at >= 0 else self.slots

    def start(self, best: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Flat offset of element 0 of each block in ``best`` (``(G, P_t, kb)``), how many
        elements it has, and how far apart they lie."""
        tile = torch.arange(self.tiles, device=best.device).view(-1, 1, 1)
        cell = torch.arange(self.cells, device=best.device).view(1, -1, 1)
        offset = (tile * self.side**2 + self.region(best)) * self.stride * self.cells + cell
        if self.first_at < 0:
            return offset, torch.full_like(best, self.slots), torch.full_like(best, self.cells)
        queries = self.tiles * self.cells
        key = (best - self.window.shape[1]).clamp(min=0) * FIRST_BLOCK
        in_first = best >= self.window.shape[1]
        return (torch.where(in_first, self.first_at + key * queries + tile * self.cells + cell,
                            offset),
                torch.where(in_first, FIRST_BLOCK, self.slots),
                torch.where(in_first, queries, self.cells))


def candidates(scratch: Tensor, maxima: Tensor, blocks: Blocks,
               kk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Screened top-kk of each cell over the region and frame 0 together.

    The top-kk elements lie in the kk blocks with the largest maxima, so only those blocks'
    elements are ranked.

    Args:
        scratch: flat bf16 buffer holding the chunk's scores (``Blocks`` says where), with
            ``width * G * P_t`` elements to spare at its end;
        maxima: ``(G, P_t, blocks)`` (``block_maxima``).

    Returns:
        values, block index and element index (``m``: slot 0 again), each ``(G, P_t, kk)``.
    """
    kept, best = _topk(maxima, min(kk, maxima.shape[2]))  # (G, P_t, kb)
    j = torch.arange(blocks.width, device=scratch.device)
    start, length, step = blocks.start(best)
    offset = step.unsqueeze(3) * j
    elems = scratch.take(offset.add_(start.unsqueeze(3)))  # (G, P_t, kb, width)
    length.masked_fill_(kept == float("-inf"), 0)  # outside the window: < kb candidates
    if bool((length < blocks.width).any()):  # at n = 20 and a full context, none is short
        elems.masked_fill_(j >= length.unsqueeze(3), float("-inf"))
    if blocks.duplicate:
        elems = torch.cat([elems, elems[..., :1]], 3)
    top, pos = _topk(elems.flatten(2), min(kk, elems[0, 0].numel()))  # (G, P_t, kk)
    return top, best.gather(2, pos // elems.shape[3]), pos % elems.shape[3]
