"""Memory-bounded recurrent label propagation (the evaluation protocol of both papers).

Label propagation as in CRW (Jabri et al., NeurIPS 2020, Sec. 3.4; ``[VW] code/test.py``) and
STT (Li & Liu, CVPR 2023, Sec. 4.1; ``[STT] vanilla_tracker.py``): for target frame t the
context is frame 0 plus frames ``max(0, t - n) .. t - 1`` (STT's order, no padding, so frame 0
is there twice while ``t <= n``); every target cell keeps the top-k affinities ``<q, k> / tau``
over all context cells jointly, softmax-normalises them and averages the context labels with
those weights; the soft prediction is fed back as context.

Spatial restriction (radius r in feature cells, not image pixels):

- ``circle`` (CRW): a candidate counts if its Euclidean grid distance to the target cell is
  ``< r`` (strict); the first frame is unrestricted unless ``restrict_first``.
- ``square`` (STT ``mode='square'``): ``|dy|, |dx| <= floor(r)``, applied to every context
  frame including the first (``with_first_neighbor=True``), whatever ``restrict_first`` says.

Departure from the reference code, for memory (docs/methods.md 7.2, ~40 GB in CRW issue #4): no
frame's full ``HW x (n+1)HW`` affinity is ever built. Target cells are processed in 8x8
tiles; a tile is multiplied only with the key region within r of it in every restricted
context frame (one batched GEMM reading a channel-last ring of context frames in place), each
cell's window is gathered from that by index, and top-k runs over ``n * |window| + HW_0``
candidates per cell. Memory is bounded by ``n_context`` and ``chunk``, not by T; results
equal the dense computation up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from stcorr.eval.propagation_plan import Plan, Window, make_plan, normalised, query_tiles, window_offsets
from stcorr.eval.propagation_screen import SCREEN_TILE, propagate_screened

Screen = Literal["bfloat16", "off"]
DEFAULT_CHUNK = 512  # target cells per chunk (8 tiles): ~40 MB of scratch at n = 20, r = 12


def _check_inputs(feats: Tensor, first_labels: Tensor, n_context: int, topk: int,
                  radius: float, temperature: float, window: str, chunk: int | None) -> None:
    """Raise a one-line ValueError for malformed propagation arguments."""
    if feats.ndim != 4 or not feats.is_floating_point():
        raise ValueError(f"feats: expected a float (T, C, H, W) tensor, got {tuple(feats.shape)}")
    if first_labels.ndim != 3 or first_labels.shape[1:] != feats.shape[2:]:
        raise ValueError(
            f"first_labels: expected (K, {feats.shape[2]}, {feats.shape[3]}) at feature "
            f"resolution, got {tuple(first_labels.shape)}"
        )
    if window not in ("circle", "square"):
        raise ValueError(f"window: expected 'circle' or 'square', got {window!r}")
    for name, value in (("n_context", n_context), ("topk", topk), ("radius", radius),
                        ("temperature", temperature), ("chunk", chunk or 1)):
        if value <= 0:
            raise ValueError(f"{name}: expected a positive value, got {value}")


@dataclass(frozen=True)
class _Context:
    """What target frame t is propagated from."""

    ring: Tensor  # (H, m, W, C) normalised restricted context frames
    labels: Tensor  # (K, blocks * HW): frame 0 if scored densely, the m slots, [frame 0]
    first: Tensor | None  # (C, HW) normalised frame 0, scored densely (CRW), or None
    pick: Tensor  # (P_t, m, P), see Plan.pick
    duplicate: bool  # STT holds frame 0 twice while t <= n: score slot 0 a second time


@torch.no_grad()
def propagate(feats: Tensor, first_labels: Tensor, *, n_context: int = 20, topk: int = 10,
              radius: float = 12, temperature: float = 0.05, restrict_first: bool = False,
              window: Window = "circle", chunk: int | None = None,
              screen: Screen = "off") -> Tensor:
    """Propagate first-frame labels through a video by top-k feature affinities.

    Args:
        feats: ``(T, C, H, W)`` features of every frame; L2-normalised over C here, one
            frame at a time (no normalised copy of the whole video is made).
        first_labels: ``(K, H, W)`` soft one-hot labels of frame 0 at feature resolution.
        n_context: preceding frames in the context besides frame 0 (both papers: 20).
        topk: affinities kept per target cell (CRW/STT: 10).
        radius: r, spatial restriction in feature cells (CRW: 12).
        temperature: tau of the softmax over the top-k affinities (CRW: 0.05, STT: 0.07).
        restrict_first: apply the ``circle`` window to the first frame as well.
        window: ``"circle"`` (CRW) or ``"square"`` (STT); see the module docstring.
        chunk: target cells scored together (in 8x8 tiles; 12x12 with the screen); None =
            512, or a row of tiles with the screen. Peak memory grows with it and with
            ``n_context``, never with T.
        screen: ``"bfloat16"`` finds each cell's top-k candidates with bf16 affinities and
            re-scores them exactly (stcorr.eval.propagation_screen: several times faster
            where bf16 is native, the same labels but for rare near-ties); ``"off"``: exact
            affinities throughout.

    Returns:
        ``(T, K, H, W)`` soft labels in the dtype of ``feats``; frame 0 is ``first_labels``.

    Raises:
        ValueError: on malformed shapes or non-positive parameters.
    """
    _check_inputs(feats, first_labels, n_context, topk, radius, temperature, window, chunk)
    if screen not in ("bfloat16", "off"):
        raise ValueError(f"screen: expected 'bfloat16' or 'off', got {screen!r}")
    n_frames, channels, height, width = feats.shape
    offsets = window_offsets(radius, window).to(feats.device)
    first_free = window == "circle" and not restrict_first
    if screen == "bfloat16":
        row = SCREEN_TILE**2 * math.ceil(width / SCREEN_TILE)
        plan = make_plan(height, width, offsets, n_context, first_free, chunk or row, SCREEN_TILE)
        return propagate_screened(feats, first_labels, plan, (topk, temperature))
    plan = make_plan(height, width, offsets, n_context, first_free, chunk or DEFAULT_CHUNK)
    out = feats.new_empty((n_frames, first_labels.shape[0], height, width))
    out[0] = first_labels.to(out)
    first = F.normalize(feats[0], dim=0).reshape(channels, -1) if plan.first_free else None
    store = feats.new_empty(height * plan.slots * width * channels)  # the ring's memory
    ring = store[:0].view(height, 0, width, channels)  # grows to S slots, then cycles
    ring_labels = out.new_empty((0, *out.shape[1:]))
    scratch = feats.new_zeros(plan.group * plan.side**2 * plan.slots * plan.tile**2)
    query, pick = normalised(feats[0]), plan.pick(1)
    for t in range(1, n_frames):
        if ring.shape[1] < plan.slots:  # growing: frame t-1 takes slot t-1
            ring = _grow(store, ring, query)
            ring_labels = torch.cat([ring_labels, out[t - 1:t]])
            pick = plan.pick(ring.shape[1])
        else:
            ring[:, plan.slot(t - 1)], ring_labels[plan.slot(t - 1)] = query, out[t - 1]
        duplicate = not plan.first_free and t <= n_context
        blocks = [out[0:1]] * plan.first_free + [ring_labels] + [out[0:1]] * duplicate
        labels = torch.cat(blocks).flatten(2).transpose(0, 1).flatten(1)  # (K, blocks * HW)
        query = normalised(feats[t])
        ctx = _Context(ring, labels, first, pick, duplicate)
        out[t] = _propagate_frame(query, ctx, scratch, plan, (topk, temperature))
    return out


def _grow(store: Tensor, ring: Tensor, frame: Tensor) -> Tensor:
    """The ring with one more slot, holding ``frame``, re-laid out inside ``store`` in place.

    Rows move to higher offsets, so they are moved last row first; a row whose old and new
    places overlap (row y < m) goes through a temporary copy.

    Args:
        store: flat buffer of ``H * S * W * C``; ring: ``(H, m, W, C)`` view of its start;
        frame: ``(H, W, C)``.

    Returns:
        ``(H, m + 1, W, C)`` view of ``store``.
    """
    height, slots, width, channels = ring.shape
    grown = store[:height * (slots + 1) * width * channels].view(height, slots + 1, width,
                                                                 channels)
    for y in reversed(range(height)):
        grown[y, :slots] = ring[y].clone() if y < slots else ring[y]
        grown[y, slots] = frame[y]
    return grown


def _propagate_frame(query: Tensor, ctx: _Context, scratch: Tensor, plan: Plan,
                     step: tuple[int, float]) -> Tensor:
    """Labels of one target frame, ``plan.group`` tiles at a time.

    Args:
        query: ``(H, W, C)`` normalised target features.
        ctx: the frame's context; scratch: flat buffer for the tiles' affinities.
        step: (topk, tau).

    Returns:
        ``(K, H, W)`` soft labels.
    """
    n_labels, tile, slots = ctx.labels.shape[0], plan.tile, ctx.ring.shape[1]
    n_ty, n_tx = plan.shape
    tiles = query_tiles(query, plan)  # (n_ty, n_tx, P_t, C)
    block = scratch[:plan.group * plan.side**2 * slots * tile**2].view(
        plan.group, plan.side, slots, plan.side, tile**2)  # (G, side, m, side, P_t)
    out = query.new_empty((n_labels, n_ty * tile, n_tx * tile))
    for ty in range(n_ty):
        for g0 in range(0, n_tx, plan.group):
            g1 = min(g0 + plan.group, n_tx)
            for g in range(g0, g1):
                _tile_affinity(tiles[ty, g], ctx.ring, block[g - g0], (ty, g), plan)
            weights, src = _chunk_topk(tiles[ty, g0:g1], block[:g1 - g0], ctx, plan, (ty, g0),
                                       step)
            vals = ctx.labels[:, src.flatten()].view(n_labels, *src.shape)  # (K, G, P_t, k)
            pred = (vals * weights).sum(-1).view(n_labels, g1 - g0, tile, tile)
            out[:, ty * tile:(ty + 1) * tile, g0 * tile:g1 * tile] = (
                pred.transpose(1, 2).reshape(n_labels, tile, -1))
    return out[:, :plan.height, :plan.width]


def _tile_affinity(q: Tensor, ring: Tensor, block: Tensor, at: tuple[int, int],
                   plan: Plan) -> None:
    """Affinities of one tile's cells to its key region in every ring slot, into ``block``.

    One batched GEMM over (key row, slot) reads the ring in place (the two dimensions merge
    because the slice keeps every slot). Region cells outside the image keep stale finite
    values; ``plan.invalid`` masks them.

    Args:
        q: ``(P_t, C)`` target features; ring: ``(H, m, W, C)``;
        block: ``(side, m, side, P_t)``; at: (tile row, tile column).
    """
    top, left = at[0] * plan.tile - plan.reach, at[1] * plan.tile - plan.reach
    ya, yb = max(0, top), min(plan.height, top + plan.side)
    xa, xb = max(0, left), min(plan.width, left + plan.side)
    keys = ring[ya:yb, :, xa:xb].reshape(-1, xb - xa, ring.shape[-1])  # (rows*m, len, C) view
    rhs = q.T.expand(keys.shape[0], -1, -1)  # (rows*m, C, P_t), shared
    rows = block[ya - top:yb - top]  # (rows, m, side, P_t)
    if xb - xa == plan.side:
        torch.bmm(keys, rhs, out=rows.view(keys.shape[0], plan.side, -1))
    else:  # clipped at the left/right border
        rows[:, :, xa - left:xb - left] = torch.bmm(keys, rhs).view(
            yb - ya, -1, xb - xa, q.shape[0])


def _chunk_topk(q: Tensor, block: Tensor, ctx: _Context, plan: Plan, at: tuple[int, int],
                step: tuple[int, float]) -> tuple[Tensor, Tensor]:
    """Top-k softmax weights of a chunk of tiles and the label index of each kept candidate.

    Args:
        q: ``(G, P_t, C)`` target features; block: ``(G, side, m, side, P_t)`` affinities.
        at: (tile row, first tile column); step: (topk, tau).

    Returns:
        weights ``(G, P_t, k)`` and flat indices ``block * HW + y * W + x`` into the labels.
    """
    topk, tau = step
    n_tiles, n_cells = q.shape[:2]
    local = block.reshape(n_tiles, -1).gather(1, ctx.pick.view(1, -1).expand(n_tiles, -1))
    local = local.view(n_tiles, n_cells, ctx.pick.shape[1], -1)  # (G, P_t, m, P)
    if ctx.duplicate:  # frame 0 a second time; its labels are the last block
        local = torch.cat([local, local[:, :, :1]], dim=2)
    local.masked_fill_(plan.invalid[at[0], at[1]:at[1] + n_tiles], float("-inf"))
    n_win = local.shape[3]
    top, idx = local.view(n_tiles, n_cells, -1).topk(min(topk, local[0, 0].numel()), dim=2)
    src = _label_index(idx // n_win, idx % n_win, plan, at, 0 if ctx.first is None else 1)
    if ctx.first is not None:  # merge with frame 0's top-k: the top-k of the union is exact
        dense = (q @ ctx.first).topk(min(topk, ctx.first.shape[1]), dim=2)  # (G, P_t, k)
        top, best = torch.cat([top, dense.values], 2).topk(min(topk, top.shape[2] * 2), dim=2)
        src = torch.cat([src, dense.indices], 2).gather(2, best)
    return (top / tau).softmax(dim=2), src  # -inf (outside the image) gets weight 0


def _label_index(slot: Tensor, win: Tensor, plan: Plan, at: tuple[int, int],
                 n_free: int) -> Tensor:
    """Flat label index of window cell ``win`` of ring slot ``slot`` for each target cell."""
    tile, n_tiles = plan.tile, slot.shape[0]
    cell = torch.arange(tile * tile, device=slot.device)
    y = at[0] * tile + cell.div(tile, rounding_mode="floor").view(1, -1, 1)  # (1, P_t, 1)
    tiles = torch.arange(at[1], at[1] + n_tiles, device=slot.device).view(-1, 1, 1)
    x = tiles * tile + (cell % tile).view(1, -1, 1)  # (G, P_t, 1)
    cy = (y + plan.offsets[win, 0]).clamp(0, plan.height - 1)  # masked picks have weight 0
    cx = (x + plan.offsets[win, 1]).clamp(0, plan.width - 1)
    return (slot + n_free) * (plan.height * plan.width) + cy * plan.width + cx
