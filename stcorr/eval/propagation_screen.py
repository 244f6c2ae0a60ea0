"""bf16-screened top-k for label propagation: the float32 result at a fraction of its cost.

``propagate(..., screen="bfloat16")`` (stcorr.eval.propagation) runs here. The protocol is
the one the module docstring of ``stcorr.eval.propagation`` describes (CRW, Jabri et al.,
NeurIPS 2020, Sec. 3.4; STT, Li & Liu, CVPR 2023, Sec. 4.1); only how each target cell's
top-k is found differs:

1. screen: every candidate's ``<q, k> - 1 - 2^-7`` (``shifted``) is computed in bfloat16 by
   plain 2-D GEMMs (AMX/AVX512-BF16 via oneDNN: ~8x float32 here; bf16 ``bmm`` is not routed
   there and runs ~50x slower). A tile's key region is one contiguous matrix of a banded
   bf16 ring, ``(n_tx, H, side, m, C')``: band ``tx`` holds the ``side`` key columns tile
   column ``tx`` reaches, in every slot (~3-4x the ring's bytes); frame 0 (CRW) is one GEMM
   per chunk;
2. select (stcorr.eval.propagation_select): the top-k' (k' = ``SCREEN_MARGIN`` * k) of the
   screened values, found through block maxima without sorting a cell's ~27,000 candidates;
3. re-score: the k' candidates' affinities are recomputed from the exact keys (a gather and
   a dot product in the dtype of ``feats``, one tile at a time) and the top-k of those is
   kept.

The result equals float32 propagation unless bf16 rounding (~1e-3 on a unit-norm affinity
before the shift, ~1e-4 after) pushes one of a cell's true top-k below k' others: a
near-tie. docs/methods.md 3.1 gives the measured rates; benchmarks/evaluation.py reports the
argmax agreement with the dense float32 computation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from stcorr.eval.propagation_plan import Plan, normalised, query_tiles
from stcorr.eval.propagation_select import FIRST_BLOCK, Blocks, block_maxima, candidates

# The screen's tile: its GEMMs run ~1.7x faster per cell at 144 query cells than at 64 (AMX),
# more than paying for the larger key region, and 60 rows (DAVIS 480p at stride 8) split into
# whole tiles. Its chunk defaults to a whole tile row (~80 MB of scratch on DAVIS-sized maps):
# the screen's per-chunk work is mostly fixed-cost ops.
SCREEN_TILE = 12
SCREEN_MARGIN = 3  # k' = 3k re-scored exactly: 2k moved 2.6% of cells of the near-tie test, 3k 0.9%
SCREEN_DTYPE = torch.bfloat16
SHIFT_PAD = 32  # channels appended: one carries the shift, the rest keep AMX's 32-wide K tiles
KEY_SHIFT = -(1 + 2**-7)  # exact in bf16; past every rounded <q, k> (<= 1 + 2^-8): scores < 0


class WindowCells(NamedTuple):
    """Where each cell's window lies in a tile's key region, in the two forms the screen reads.

    Attributes:
        offsets: ``(plan.group, P_t, P)`` flat offsets ``((g * side + row) * side + column) *
            P_t + cell`` into a chunk's ``(G, side, side, P_t)`` block maxima;
        cells: ``(P_t, P)`` region cell ``row * side + column``;
        image: ``(P_t, P)`` image cell relative to the tile's corner, ``(iy + dy) * W + ix +
            dx``.
        All follow ``plan.offsets``' order (``plan.invalid`` marks those outside the image).
    """

    offsets: Tensor
    cells: Tensor
    image: Tensor


def window_cells(plan: Plan) -> WindowCells:
    """Each tile cell's window cells in its tile's key region (see ``WindowCells``)."""
    cell = torch.arange(plan.tile**2, device=plan.offsets.device).view(-1, 1)
    row = cell // plan.tile + plan.offsets[:, 0] + plan.reach  # (P_t, P)
    col = cell % plan.tile + plan.offsets[:, 1] + plan.reach
    tile = torch.arange(plan.group, device=plan.offsets.device).view(-1, 1, 1) * plan.side
    image = (row - plan.reach) * plan.width + col - plan.reach
    return WindowCells(((tile + row) * plan.side + col) * plan.tile**2 + cell,
                       row * plan.side + col, image)


def shifted(x: Tensor, value: float) -> Tensor:
    """``(..., C)`` -> bf16 ``(..., C + SHIFT_PAD)`` whose channel C is ``value``.

    Keys carry ``KEY_SHIFT`` (-1 - 2^-7) and queries 1, so the screen computes
    ``<q, k> - 1 - 2^-7``: the affinities near 1 that compete for a cell's top-k land near 0,
    where bf16 is fine-grained (near 1 its spacing, 2^-8, ties most of a cell's candidates on
    real features: argmax agreement 0.9993 at k' = 4k without the shift), and every score is
    negative, so block maxima can be taken on the bits (``_amax``).
    """
    out = x.new_zeros((*x.shape[:-1], x.shape[-1] + SHIFT_PAD), dtype=SCREEN_DTYPE)
    out[..., :x.shape[-1]] = x
    out[..., x.shape[-1]] = value
    return out


def banded(frame: Tensor, plan: Plan) -> Tensor:
    """``(H, W, C)`` normalised frame -> ``(n_tx, H, side, C')`` shifted bf16 key columns per
    tile column (``shifted``; C' = C + SHIFT_PAD).

    Columns outside the image are zero; ``Plan.invalid`` excludes them.
    """
    height, width, _ = frame.shape
    n_tx = plan.shape[1]
    channels = frame.shape[2] + SHIFT_PAD
    padded = frame.new_zeros((height, n_tx * plan.tile + 2 * plan.reach, channels),
                             dtype=SCREEN_DTYPE)
    inside = padded[:, plan.reach:plan.reach + width]
    inside[..., :frame.shape[2]] = frame  # as ``shifted(frame, KEY_SHIFT)``, in place
    inside[..., frame.shape[2]] = KEY_SHIFT
    return padded.as_strided((n_tx, height, plan.side, channels),
                             (plan.tile * channels, padded.stride(0), channels, 1))


def grown_bands(bands: Tensor, capacity: int) -> Tensor:
    """The banded ring re-allocated for ``capacity`` slots: ``(n_tx, H, side, capacity, C')``.

    Empty slots are zero (their keys score 0, above every real score, which is negative):
    the region GEMMs run over them, ``Blocks`` excludes them. The ring doubles while it
    fills, so filling copies ~2 rings' bytes, not ~n/2.
    """
    n_tx, height, side, slots, channels = bands.shape
    grown = bands.new_empty((n_tx, height, side, capacity, channels))
    grown[:, :, :, :slots] = bands
    grown[:, :, :, slots:] = 0
    return grown


def screened_chunk(q: Tensor, scratch: Tensor, maxima: Tensor, blocks: Blocks,
                   ctx: _ScreenContext, window: WindowCells, plan: Plan, at: tuple[int, int],
                   step: tuple[int, float]) -> tuple[Tensor, Tensor]:
    """Top-k softmax weights of a chunk of tiles and the label index of each kept candidate.

    Args:
        q: ``(G, P_t, C)`` target features (exact); scratch, blocks: the chunk's bf16 scores;
        maxima: their block maxima (``block_maxima``); window: see ``window_cells``;
        at: (tile row, first tile column); step: (k, tau).

    Returns:
        weights ``(G, P_t, k)`` and flat indices ``block * HW + y * W + x`` into the labels.
    """
    topk, tau = step
    kk, hw, regions = SCREEN_MARGIN * topk, plan.height * plan.width, window.cells.shape[1]
    top, best, j = candidates(scratch, maxima, blocks, kk)
    tiles = torch.arange(at[1], at[1] + blocks.tiles, device=q.device).view(-1, 1, 1)
    corner = at[0] * plan.tile * plan.width + tiles * plan.tile  # each tile's first cell
    image = window.image.expand(blocks.tiles, -1, -1).gather(2, best.clamp(max=regions - 1))
    cell = (corner + image).clamp_(0, hw - 1)  # outside the image: masked, weight 0
    n_free = int(blocks.first_at >= 0)
    element = j.clamp(max=blocks.slots - (not blocks.duplicate))  # masked ones: any valid slot
    key = element.remainder(blocks.slots) * hw + cell  # row of ctx.table
    src = (element + n_free) * hw + cell  # column of ctx.labels (m: the duplicate frame 0)
    if n_free:  # frame 0, unrestricted: its key cells are the blocks' elements
        first = ((best - regions).clamp(min=0) * FIRST_BLOCK + j).clamp(max=hw - 1)
        in_first = best >= regions
        key = torch.where(in_first, first + (ctx.table.shape[0] - 1) * hw, key)
        src = torch.where(in_first, first, src)
    exact = _rescored(q, ctx.table.view(-1, q.shape[2]), key)
    exact = exact.masked_fill(top == float("-inf"), float("-inf"))
    exact, kept = exact.topk(min(topk, exact.shape[2]), dim=2)
    return (exact / tau).softmax(dim=2), src.gather(2, kept)


def _rescored(q: Tensor, table: Tensor, key: Tensor) -> Tensor:
    """Exact affinities ``<q, table[key]>``: ``(G, P_t, C)``, ``(rows, C)``, ``(G, P_t, kk)``
    -> ``(G, P_t, kk)``. One tile at a time, so its gathered keys (~2 MB) stay in cache for
    the dot products (~25% faster than the chunk at once)."""
    out = q.new_empty(key.shape)
    rows = q.new_empty((key[0].numel(), q.shape[2]))
    for g in range(key.shape[0]):
        torch.index_select(table, 0, key[g].flatten(), out=rows)
        torch.bmm(rows.view(*key.shape[1:], -1), q[g].unsqueeze(2), out=out[g].unsqueeze(2))
    return out


class _ScreenContext:
    """What target frame t is propagated from, in the screened path.

    Attributes:
        bands: ``(n_tx, H, side, m, C')`` shifted bf16 banded ring (see ``banded``).
        table: ``(S + 1, H * W, C)`` exact normalised keys: the ring's slots, then frame 0.
        labels: ``(K, blocks * HW)`` as in the float32 path.
        first: ``(HW, C')`` shifted bf16 frame 0 scored densely (CRW; zero-padded to whole
            ``FIRST_BLOCK``s), or None.
        duplicate: STT holds frame 0 twice while ``t <= n``.
        slots: the ring's filled slots m (``bands`` may have room for more: ``grown_bands``).
    """

    def __init__(self, bands: Tensor, table: Tensor, labels: Tensor, first: Tensor | None,
                 duplicate: bool, slots: int) -> None:
        self.bands, self.table, self.labels = bands, table, labels
        self.first, self.duplicate, self.slots = first, duplicate, slots


def _chunk_scores(low: Tensor, ctx: _ScreenContext, window: WindowCells, scratch: Tensor,
                  plan: Plan, at: tuple[int, int]) -> tuple[Tensor, Blocks]:
    """A chunk's bf16 scores, written into ``scratch``, and their block maxima.

    Region: one plain GEMM per tile (its key region is contiguous in the banded ring); rows
    outside the image keep stale values, never read (``plan.invalid``). Frame 0 (CRW): one
    GEMM for the chunk.

    Args:
        low: ``(G, P_t, C')`` shifted bf16 queries; window: see ``window_cells``;
        at: (tile row, first tile column).
    """
    n_tiles, n_cells = low.shape[:2]
    side, stride, hw = plan.side, ctx.bands.shape[3], plan.height * plan.width
    region = plan.group * side**2 * stride * n_cells
    block = scratch[:region].view(plan.group, side, side, stride, n_cells)
    top = at[0] * plan.tile - plan.reach
    ya, yb = max(0, top), min(plan.height, top + side)
    for g in range(n_tiles):
        keys = ctx.bands[at[1] + g, ya:yb].reshape(-1, ctx.bands.shape[-1])
        torch.mm(keys, low[g].T, out=block[g, ya - top:yb - top].view(-1, n_cells))
    first = None
    if ctx.first is not None:  # (HW padded, G * P_t) after the region's scores
        first = scratch[region:region + ctx.first.shape[0] * n_tiles * n_cells].view(
            ctx.first.shape[0], n_tiles * n_cells)
        torch.mm(ctx.first, low.flatten(0, 1).T, out=first)  # one GEMM: ~3x a tile's speed
        first[hw:] = float("-inf")  # padding to whole blocks
    blocks = Blocks(n_tiles, side, ctx.slots, stride, n_cells, ctx.duplicate,
                     region if first is not None else -1, window.cells)
    invalid = plan.invalid[at[0], at[1]:at[1] + n_tiles, :, 0]  # (G, P_t, P)
    return block_maxima(block[:n_tiles], window.offsets, invalid, first), blocks


def screened_frame(query: Tensor, ctx: _ScreenContext, window: WindowCells, scratch: Tensor,
                   plan: Plan, step: tuple[int, float]) -> Tensor:
    """Labels of one target frame, ``plan.group`` tiles at a time, with a bf16 screen.

    Args:
        query: ``(H, W, C)`` normalised target features; window: see ``window_cells``;
        scratch: flat bf16 buffer for a chunk's scores (region, then frame 0); step: (k, tau).

    Returns:
        ``(K, H, W)`` soft labels.
    """
    n_labels, tile = ctx.labels.shape[0], plan.tile
    n_ty, n_tx = plan.shape
    tiles = query_tiles(query, plan)  # (n_ty, n_tx, P_t, C)
    low = shifted(tiles, 1.0)
    out = query.new_empty((n_labels, n_ty * tile, n_tx * tile))
    for ty in range(n_ty):
        for g0 in range(0, n_tx, plan.group):
            g1 = min(g0 + plan.group, n_tx)
            maxima, blocks = _chunk_scores(low[ty, g0:g1], ctx, window, scratch, plan, (ty, g0))
            weights, src = screened_chunk(tiles[ty, g0:g1], scratch, maxima, blocks, ctx,
                                          window, plan, (ty, g0), step)
            vals = ctx.labels[:, src.flatten()].view(n_labels, *src.shape)  # (K, G, P_t, k)
            pred = (vals * weights).sum(-1).view(n_labels, g1 - g0, tile, tile)
            out[:, ty * tile:(ty + 1) * tile, g0 * tile:g1 * tile] = (
                pred.transpose(1, 2).reshape(n_labels, tile, -1))
    return out[:, :plan.height, :plan.width]


@torch.no_grad()
def propagate_screened(feats: Tensor, first_labels: Tensor, plan: Plan,
                       step: tuple[int, float]) -> Tensor:
    """``propagate(..., screen="bfloat16")``: the same loop over target frames and ring slots
    (``Plan``), with a banded bf16 ring for the screen and a table of exact keys beside it.

    Args:
        feats, first_labels: as ``propagate``; plan: its tiles, windows and slots;
        step: (k, tau).

    Returns:
        ``(T, K, H, W)`` soft labels in the dtype of ``feats``.
    """
    n_frames, channels, height, width = feats.shape
    out = feats.new_empty((n_frames, first_labels.shape[0], height, width))
    out[0] = first_labels.to(out)
    table = feats.new_empty((plan.slots + 1, height * width, channels))
    table[-1] = normalised(feats[0]).reshape(-1, channels)
    first = None  # (HW padded to FIRST_BLOCK, C') shifted bf16 frame 0
    if plan.first_free:
        first = F.pad(shifted(table[-1], KEY_SHIFT), (0, 0, 0, -table.shape[1] % FIRST_BLOCK))
    bands = feats.new_empty((plan.shape[1], height, plan.side, 0, channels + SHIFT_PAD),
                            dtype=SCREEN_DTYPE)
    window = window_cells(plan)
    first_keys = 0 if first is None else first.shape[0]
    spare = plan.slots + FIRST_BLOCK  # candidates reads up to a block's width past its start
    scratch = bands.new_empty(plan.group * plan.tile**2
                              * (plan.side**2 * plan.slots + first_keys + spare))
    ring_labels = out.new_empty((0, *out.shape[1:]))
    query = table[-1].view(height, width, channels)
    for t in range(1, n_frames):
        slot = plan.slot(t - 1)
        if ring_labels.shape[0] < plan.slots:  # filling: frame t-1 takes slot t-1
            if bands.shape[3] == ring_labels.shape[0]:
                bands = grown_bands(bands, min(plan.slots, 2 * bands.shape[3] or 1))
            ring_labels = torch.cat([ring_labels, out[t - 1:t]])
        else:
            ring_labels[slot] = out[t - 1]
        bands[:, :, :, slot] = banded(query, plan)
        table[slot] = query.reshape(-1, channels)
        duplicate = not plan.first_free and t <= plan.n_context
        blocks = [out[0:1]] * plan.first_free + [ring_labels] + [out[0:1]] * duplicate
        labels = torch.cat(blocks).flatten(2).transpose(0, 1).flatten(1)  # (K, blocks * HW)
        query = normalised(feats[t])
        ctx = _ScreenContext(bands, table, labels, first, duplicate, ring_labels.shape[0])
        out[t] = screened_frame(query, ctx, window, scratch, plan, step)
    return out
