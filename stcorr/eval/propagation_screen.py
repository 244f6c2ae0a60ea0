"""bf16-screened top-k for label propagation: the float32 result at a fraction of its cost.

``propagate(..., screen="bfloat16")`` (stcorr.eval.propagation) runs here. The protocol is
the one the module docstring of ``stcorr.eval.propagation`` describes (CRW, Jabri et al.,
NeurIPS 2020, Sec. 3.4; STT, Li & Liu, CVPR 2023, Sec. 4.1); only how each target cell's
top-k is found differs:

1. screen: every candidate's ``<q, k> - 1`` (``shifted``) is computed in bfloat16 by plain
   2-D GEMMs (AMX/AVX512-BF16 via oneDNN: ~8x float32 here; bf16 ``bmm`` is not routed
   there and runs ~50x slower). A tile's key region is one contiguous matrix of a banded
   bf16 ring, ``(n_tx, H, side, m, C')``: band ``tx`` holds the ``side`` key columns tile
   column ``tx`` reaches, in every slot (~4x the ring's bytes);
2. select: the top-k' (k' = ``SCREEN_MARGIN`` * k) of the screened values, found without
   sorting all ~27,000 candidates of a cell: the top-k' elements lie in the k' blocks with
   the largest maxima (a block: one key cell in every slot; ``FIRST_BLOCK`` cells of frame
   0), so only those blocks' elements are ranked;
3. re-score: the k' candidates' affinities are recomputed from the exact keys (a gather and
   a dot product in the dtype of ``feats``) and the top-k of those is kept.

The result equals float32 propagation unless bf16 rounding (~1e-3 on a unit-norm affinity
before the shift, ~1e-4 after) pushes one of a cell's true top-k below k' others: a
near-tie. docs/methods.md 3.1 gives the measured rates; benchmarks/evaluation.py reports the
argmax agreement with the dense float32 computation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from stcorr.eval.propagation import _Plan

SCREEN_MARGIN = 4  # k' = 4k re-scored exactly: 2k moved 2.6% of cells of the near-tie test, 4k 0.2%
SCREEN_DTYPE = torch.bfloat16
SHIFT_PAD = 32  # channels appended: one carries the shift, the rest keep AMX's 32-wide K tiles
FIRST_BLOCK = 16  # frame 0's key cells per block: ~sqrt(HW / k') balances the two top-k


def window_mask(plan: _Plan, radius: float, circle: bool) -> Tensor:
    """Which region cells each tile cell may not take: outside the image or the window.

    Returns:
        ``(n_ty, n_tx, side, side, P_t)`` bool, True = excluded (the same in every slot).
    """
    n_ty, n_tx = plan.shape
    d = torch.arange(plan.side) - plan.reach  # region row/column offset from the tile's corner
    cell = torch.arange(plan.tile**2)
    iy, ix = cell // plan.tile, cell % plan.tile
    dy = d.view(-1, 1, 1) - iy  # (side, 1, P_t): key row minus target row
    dx = d.view(1, -1, 1) - ix  # (1, side, P_t)
    if circle:
        far = (dy**2 + dx**2).double() >= radius**2
    else:
        far = (dy.abs() > plan.reach) | (dx.abs() > plan.reach)
    y = torch.arange(n_ty).view(-1, 1, 1, 1, 1) * plan.tile + d.view(-1, 1, 1)  # key rows
    x = torch.arange(n_tx).view(1, -1, 1, 1, 1) * plan.tile + d.view(1, -1, 1)
    outside = (y < 0) | (y >= plan.height)  # (n_ty, 1, side, 1, 1)
    outside = outside | (x < 0) | (x >= plan.width)  # (n_ty, n_tx, side, side, 1)
    return far | outside


def shifted(x: Tensor, value: float) -> Tensor:
    """``(..., C)`` -> bf16 ``(..., C + SHIFT_PAD)`` whose channel C is ``value``.

    Keys carry -1 and queries 1, so the screen computes ``<q, k> - 1``: the affinities near 1
    that compete for a cell's top-k land near 0, where bf16 is fine-grained (near 1 its
    spacing, 2^-8, ties most of a cell's candidates on real features: argmax agreement
    0.9993 at k' = 4k without the shift).
    """
    out = x.new_zeros((*x.shape[:-1], x.shape[-1] + SHIFT_PAD), dtype=SCREEN_DTYPE)
    out[..., :x.shape[-1]] = x
    out[..., x.shape[-1]] = value
    return out


def banded(frame: Tensor, plan: _Plan) -> Tensor:
    """``(H, W, C)`` normalised frame -> ``(n_tx, H, side, C')`` shifted bf16 key columns per
    tile column (``shifted``; C' = C + SHIFT_PAD).

    Columns outside the image are zero; ``window_mask`` excludes them.
    """
    height, width, _ = frame.shape
    n_tx = plan.shape[1]
    keys = shifted(frame, -1.0)
    channels = keys.shape[2]
    padded = keys.new_zeros((height, n_tx * plan.tile + 2 * plan.reach, channels))
    padded[:, plan.reach:plan.reach + width] = keys
    return padded.as_strided((n_tx, height, plan.side, channels),
                             (plan.tile * channels, padded.stride(0), channels, 1))


def grown_bands(bands: Tensor) -> Tensor:
    """The banded ring with one more (empty) slot at the end: ``(n_tx, H, side, m + 1, C)``."""
    n_tx, height, side, slots, channels = bands.shape
    grown = bands.new_empty((n_tx, height, side, slots + 1, channels))
    grown[:, :, :, :slots] = bands
    return grown


def _first_candidates(q: Tensor, first: Tensor, hw: int, kk: int) -> tuple[Tensor, Tensor]:
    """Screened top-kk of frame 0 (unrestricted) for ``(N, C')`` shifted bf16 queries.

    Blocks are ``FIRST_BLOCK`` consecutive key cells; ``first`` is zero-padded past ``hw``
    cells to whole blocks, and the padding scores -inf.

    Returns:
        values and key cell index ``y * W + x``, each ``(N, kk)``.
    """
    scores = first @ q.T  # (HW padded, N): key-major, so block maxima reduce across cells
    scores[hw:] = float("-inf")
    blocks = scores.view(-1, FIRST_BLOCK, q.shape[0])  # (blocks, L, N)
    maxima = blocks.amax(1).T  # (N, blocks)
    best = maxima.topk(min(kk, maxima.shape[1]), dim=1).indices  # (N, kb)
    keys = (best.unsqueeze(2) * FIRST_BLOCK + torch.arange(FIRST_BLOCK, device=q.device))
    elems = scores[keys, torch.arange(q.shape[0], device=q.device).view(-1, 1, 1)]  # (N, kb, L)
    top, pos = elems.flatten(1).topk(min(kk, elems[0].numel()), dim=1)
    return top, keys.flatten(1).gather(1, pos)


def _region_candidates(scores: Tensor, mask: Tensor, duplicate: bool,
                       kk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Screened top-kk of a chunk's region scores; a block is one key cell in every slot.

    The window is the same for every slot, so it masks the block maxima, not the scores.

    Args:
        scores: ``(G, side, side, m, P_t)`` bf16 affinities (key row, key column, slot, cell);
        mask: ``(G, side, side, P_t)`` excluded key cells (``window_mask``);
        duplicate: slot 0 counts twice (STT's frame 0 while ``t <= n``).

    Returns:
        values, key row, key column and slot (``m`` = slot 0 again), each ``(G, P_t, kk)``.
    """
    n_tiles, side, _, _, n_cells = scores.shape
    maxima = scores.amax(3).masked_fill_(mask, float("-inf"))
    maxima = maxima.permute(0, 3, 1, 2).reshape(n_tiles, n_cells, side * side)
    kept, best = maxima.topk(min(kk, side * side), dim=2)  # (G, P_t, kb)
    row, col = best // side, best % side
    tile = torch.arange(n_tiles, device=scores.device).view(-1, 1, 1)
    cell = torch.arange(n_cells, device=scores.device).view(1, -1, 1)
    elems = scores[tile, row, col, :, cell]  # (G, P_t, kb, m)
    elems.masked_fill_((kept == float("-inf")).unsqueeze(3), float("-inf"))  # < kb in window
    if duplicate:
        elems = torch.cat([elems, elems[..., :1]], 3)
    top, pos = elems.flatten(2).topk(min(kk, elems[0, 0].numel()), dim=2)  # (G, P_t, kk)
    blk = pos // elems.shape[3]
    return top, row.gather(2, blk), col.gather(2, blk), pos % elems.shape[3]


def screened_chunk(q: Tensor, scores: Tensor, mask: Tensor, ctx: _ScreenContext, plan: _Plan,
                   at: tuple[int, int], step: tuple[int, float]) -> tuple[Tensor, Tensor]:
    """Top-k softmax weights of a chunk of tiles and the label index of each kept candidate.

    Args:
        q: ``(G, P_t, C)`` target features (exact); scores: ``(G, side, side, m, P_t)``
            bf16 region affinities; mask: ``(G, side, side, P_t)`` key cells excluded;
        at: (tile row, first tile column); step: (k, tau).

    Returns:
        weights ``(G, P_t, k)`` and flat indices ``block * HW + y * W + x`` into the labels.
    """
    topk, tau = step
    kk, hw = SCREEN_MARGIN * topk, plan.height * plan.width
    n_tiles, n_cells = q.shape[:2]
    m, n_free = scores.shape[3], int(ctx.first is not None)
    top, row, col, slot = _region_candidates(scores, mask, ctx.duplicate, kk)
    tiles = torch.arange(at[1], at[1] + n_tiles, device=q.device).view(-1, 1, 1)
    y = at[0] * plan.tile - plan.reach + row  # region row/column -> image row/column
    x = tiles * plan.tile - plan.reach + col
    y, x = y.clamp(0, plan.height - 1), x.clamp(0, plan.width - 1)  # masked: weight 0
    key = slot.remainder(m) * hw + y * plan.width + x  # row of ctx.table
    src = (slot + n_free) * hw + y * plan.width + x  # column of ctx.labels
    if ctx.first is not None:  # frame 0 unrestricted: blocks are its key rows
        f_top, f_idx = _first_candidates(shifted(q.flatten(0, 1), 1.0), ctx.first, hw, kk)
        f_idx = f_idx.view(n_tiles, n_cells, -1)
        top = torch.cat([top, f_top.view(n_tiles, n_cells, -1)], 2)
        key = torch.cat([key, f_idx + (ctx.table.shape[0] - 1) * hw], 2)
        src = torch.cat([src, f_idx], 2)
        top, best = top.topk(min(kk, top.shape[2]), dim=2)
        key, src = key.gather(2, best), src.gather(2, best)
    keys = ctx.table.view(-1, q.shape[2]).index_select(0, key.flatten()).view(*key.shape, -1)
    exact = (keys @ q.unsqueeze(3)).squeeze(3)  # (G, P_t, kk)
    exact = exact.masked_fill(top == float("-inf"), float("-inf"))
    exact, best = exact.topk(min(topk, exact.shape[2]), dim=2)
    return (exact / tau).softmax(dim=2), src.gather(2, best)


class _ScreenContext:
    """What target frame t is propagated from, in the screened path.

    Attributes:
        bands: ``(n_tx, H, side, m, C')`` shifted bf16 banded ring (see ``banded``).
        table: ``(S + 1, H * W, C)`` exact normalised keys: the ring's slots, then frame 0.
        labels: ``(K, blocks * HW)`` as in the float32 path.
        first: ``(HW, C')`` shifted bf16 frame 0 scored densely (CRW; zero-padded to whole
            ``FIRST_BLOCK``s), or None.
        duplicate: STT holds frame 0 twice while ``t <= n``.
    """

    def __init__(self, bands: Tensor, table: Tensor, labels: Tensor, first: Tensor | None,
                 duplicate: bool) -> None:
        self.bands, self.table, self.labels = bands, table, labels
        self.first, self.duplicate = first, duplicate


def screened_frame(query: Tensor, ctx: _ScreenContext, mask: Tensor, scratch: Tensor,
                   plan: _Plan, step: tuple[int, float]) -> Tensor:
    """Labels of one target frame, ``plan.group`` tiles at a time, with a bf16 screen.

    Args:
        query: ``(H, W, C)`` normalised target features; mask: see ``window_mask``;
        scratch: flat bf16 buffer for a chunk's region scores; step: (k, tau).

    Returns:
        ``(K, H, W)`` soft labels.
    """
    n_labels, tile, m = ctx.labels.shape[0], plan.tile, ctx.bands.shape[3]
    n_ty, n_tx = plan.shape
    from stcorr.eval.propagation import query_tiles  # it imports this module

    tiles = query_tiles(query, plan)  # (n_ty, n_tx, P_t, C)
    low = shifted(tiles, 1.0)
    block = scratch[:plan.group * plan.side**2 * m * tile**2].view(
        plan.group, plan.side, plan.side, m, tile**2)  # (G, side, side, m, P_t)
    out = query.new_empty((n_labels, n_ty * tile, n_tx * tile))
    for ty in range(n_ty):
        top = ty * tile - plan.reach
        ya, yb = max(0, top), min(plan.height, top + plan.side)
        for g0 in range(0, n_tx, plan.group):
            g1 = min(g0 + plan.group, n_tx)
            for g in range(g0, g1):  # one plain GEMM per tile: its region is contiguous
                keys = ctx.bands[g, ya:yb].reshape(-1, ctx.bands.shape[-1])
                torch.mm(keys, low[ty, g].T, out=block[g - g0, ya - top:yb - top].view(
                    -1, tile**2))  # rows outside the image keep stale values: masked
            weights, src = screened_chunk(tiles[ty, g0:g1], block[:g1 - g0], mask[ty, g0:g1], ctx,
                                          plan, (ty, g0), step)
            vals = ctx.labels[:, src.flatten()].view(n_labels, *src.shape)  # (K, G, P_t, k)
            pred = (vals * weights).sum(-1).view(n_labels, g1 - g0, tile, tile)
            out[:, ty * tile:(ty + 1) * tile, g0 * tile:g1 * tile] = (
                pred.transpose(1, 2).reshape(n_labels, tile, -1))
    return out[:, :plan.height, :plan.width]


@torch.no_grad()
def propagate_screened(feats: Tensor, first_labels: Tensor, plan: _Plan, radius: float,
                       circle: bool, step: tuple[int, float]) -> Tensor:
    """``propagate(..., screen="bfloat16")``: the same loop over target frames and ring slots
    (``_Plan``), with a banded bf16 ring for the screen and a table of exact keys beside it.

    Args:
        feats, first_labels: as ``propagate``; plan: its tiles, windows and slots;
        radius, circle: the window; step: (k, tau).

    Returns:
        ``(T, K, H, W)`` soft labels in the dtype of ``feats``.
    """
    n_frames, channels, height, width = feats.shape
    out = feats.new_empty((n_frames, first_labels.shape[0], height, width))
    out[0] = first_labels.to(out)
    table = feats.new_empty((plan.slots + 1, height * width, channels))
    table[-1] = _normalised(feats[0]).reshape(-1, channels)
    first = None  # (HW padded to FIRST_BLOCK, C') shifted bf16 frame 0
    if plan.first_free:
        first = F.pad(shifted(table[-1], -1.0), (0, 0, 0, -table.shape[1] % FIRST_BLOCK))
    bands = feats.new_empty((plan.shape[1], height, plan.side, 0, channels + SHIFT_PAD),
                            dtype=SCREEN_DTYPE)
    mask = window_mask(plan, radius, circle).to(feats.device)
    scratch = bands.new_empty(plan.group * plan.side**2 * plan.slots * plan.tile**2)
    ring_labels = out.new_empty((0, *out.shape[1:]))
    query = table[-1].view(height, width, channels)
    for t in range(1, n_frames):
        slot = plan.slot(t - 1)
        if bands.shape[3] < plan.slots:  # growing: frame t-1 takes slot t-1
            bands = grown_bands(bands)
            ring_labels = torch.cat([ring_labels, out[t - 1:t]])
        else:
            ring_labels[slot] = out[t - 1]
        bands[:, :, :, slot] = banded(query, plan)
        table[slot] = query.reshape(-1, channels)
        duplicate = not plan.first_free and t <= plan.n_context
        blocks = [out[0:1]] * plan.first_free + [ring_labels] + [out[0:1]] * duplicate
        labels = torch.cat(blocks).flatten(2).transpose(0, 1).flatten(1)  # (K, blocks * HW)
        query = _normalised(feats[t])
        ctx = _ScreenContext(bands, table, labels, first, duplicate)
        out[t] = screened_frame(query, ctx, mask, scratch, plan, step)
    return out


def _normalised(frame: Tensor) -> Tensor:
    """``(C, H, W)`` -> L2-normalised over C, channel-last ``(H, W, C)``."""
    return F.normalize(frame, dim=0).permute(1, 2, 0)
