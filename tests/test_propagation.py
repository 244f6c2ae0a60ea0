"""Label propagation against a plain dense implementation, and label coding round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stcorr.eval.labels import (
    decode_keypoints,
    first_frame_labels,
    joints_to_heatmaps,
    labels_to_index,
    one_hot,
)
from stcorr.eval.propagation import propagate, window_offsets


def dense_propagate(feats: torch.Tensor, lab0: torch.Tensor, *, n_context: int, topk: int,
                    radius: float, tau: float, restrict_first: bool,
                    window: str) -> torch.Tensor:
    """The reference approach: each target's full affinity to every context cell at once."""
    n_frames, _, h, w = feats.shape
    f = F.normalize(feats, dim=1).flatten(2)  # (T, C, HW)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy = (yy.flatten()[:, None] - yy.flatten()[None]).double()
    dx = (xx.flatten()[:, None] - xx.flatten()[None]).double()
    if window == "circle":
        near = dy**2 + dx**2 < radius**2
    else:
        near = (dy.abs() <= int(radius)) & (dx.abs() <= int(radius))
    out = [lab0.flatten(1)]
    for t in range(1, n_frames):
        ctx = [0, *range(max(0, t - n_context), t)]  # frame 0 + up to n previous frames
        aff = f[t].T @ torch.cat([f[c] for c in ctx], 1)  # (HW, len(ctx) * HW)
        free = window == "circle" and not restrict_first
        allowed = torch.cat([torch.ones_like(near) if (j == 0 and free) else near
                             for j in range(len(ctx))], 1)
        aff = aff.masked_fill(~allowed, float("-inf")) / tau
        vals, idx = aff.topk(min(topk, aff.shape[1]), dim=1)
        labels = torch.cat([out[c] for c in ctx], 1)  # (K, len(ctx) * HW)
        out.append((labels[:, idx] * vals.softmax(1)).sum(-1))
    return torch.stack(out).view(n_frames, -1, h, w)


CASES = [  # (T, C, H, W), n_context, topk, radius, window, restrict_first, chunk
    ((9, 12, 13, 11), 3, 5, 4.5, "circle", False, None),
    ((7, 12, 10, 17), 2, 7, 3.0, "circle", True, 64),
    ((8, 12, 11, 9), 3, 6, 2.5, "square", False, 20),
    ((5, 8, 5, 6), 4, 40, 2.0, "square", False, 1000),
]


@pytest.mark.parametrize(("shape", "n", "k", "r", "window", "first", "chunk"), CASES)
def test_propagate_equals_dense(shape: tuple[int, int, int, int], n: int, k: int, r: float,
                                window: str, first: bool, chunk: int | None) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    feats = torch.randn(*shape, generator=gen, dtype=torch.float64)
    lab0 = torch.rand(3, *shape[2:], generator=gen, dtype=torch.float64).softmax(0)
    got = propagate(feats, lab0, n_context=n, topk=k, radius=r, temperature=0.1,
                    restrict_first=first, window=window, chunk=chunk)  # type: ignore[arg-type]
    want = dense_propagate(feats, lab0, n_context=n, topk=k, radius=r, tau=0.1,
                           restrict_first=first, window=window)
    assert got.shape == want.shape == (shape[0], 3, *shape[2:])
    assert (got - want).abs().max().item() < 1e-5
    assert torch.equal(got[0], lab0)


@pytest.mark.parametrize(("shape", "n", "k", "r", "window", "first", "chunk"), CASES)
def test_screened_propagate_equals_dense(shape: tuple[int, int, int, int], n: int, k: int,
                                         r: float, window: str, first: bool,
                                         chunk: int | None) -> None:
    """The bf16 screen (emulated where bf16 is not native) re-scores exactly: same labels."""
    gen = torch.Generator().manual_seed(sum(shape))
    feats = torch.randn(*shape, generator=gen, dtype=torch.float64)
    lab0 = torch.rand(3, *shape[2:], generator=gen, dtype=torch.float64).softmax(0)
    got = propagate(feats, lab0, n_context=n, topk=k, radius=r, temperature=0.1,
                    restrict_first=first, window=window, chunk=chunk,  # type: ignore[arg-type]
                    screen="bfloat16")
    want = dense_propagate(feats, lab0, n_context=n, topk=k, radius=r, tau=0.1,
                           restrict_first=first, window=window)
    assert got.dtype == torch.float64 and got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize(("shape", "n", "r", "window", "first"), [
    ((4, 64, 3, 3), 1, 1.5, "circle", False),  # 9 cells of frame 0 + <= 9 of the ring < k
    ((5, 64, 2, 4), 2, 1.0, "circle", True),
    ((6, 64, 4, 3), 3, 1.0, "square", False),  # STT: frame 0 twice while t <= n
])
def test_screened_propagate_fewer_candidates_than_k(shape: tuple[int, int, int, int], n: int,
                                                    r: float, window: str, first: bool) -> None:
    """Where a cell has fewer candidates than k (and k' = 3k), the screen keeps them all and
    the missing ones weigh 0, as the float32 path does."""
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(*shape, generator=gen, dtype=torch.float64)
    lab0 = torch.rand(3, *shape[2:], generator=gen, dtype=torch.float64).softmax(0)
    args = {"n_context": n, "topk": 40, "radius": r, "window": window, "restrict_first": first}
    exact = propagate(feats, lab0, **args)  # type: ignore[arg-type]
    screened = propagate(feats, lab0, **args, screen="bfloat16")  # type: ignore[arg-type]
    assert (screened - exact).abs().max().item() < 1e-9


def test_screened_propagate_near_ties_float32() -> None:
    """Smooth drifting features, 32 channels (a cell's candidates within ~1e-3 of each other):
    where bf16 rounding reorders a near-tie the labels move a little, rarely (0.9% of cells
    here at k' = 3k, by < 0.012), and the argmax not at all."""
    gen = torch.Generator().manual_seed(3)
    base = F.interpolate(torch.randn(1, 32, 4, 5, generator=gen), size=(24, 30),
                         mode="bilinear", align_corners=False)[0]
    feats = torch.stack([base.roll(t // 2, dims=2) + 0.05 * torch.randn(32, 24, 30, generator=gen)
                         for t in range(8)])
    lab0 = torch.rand(3, 24, 30, generator=gen).softmax(0)
    args = {"n_context": 4, "topk": 10, "radius": 6}
    exact = propagate(feats, lab0, **args)  # type: ignore[arg-type]
    screened = propagate(feats, lab0, **args, screen="bfloat16")  # type: ignore[arg-type]
    moved = (screened - exact).abs().amax(1)  # (T, H, W)
    assert (moved > 1e-5).float().mean().item() < 0.02 and moved.max().item() < 0.05
    assert torch.equal(screened.argmax(1), exact.argmax(1))


def test_propagate_float32_chunks_agree() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 16, 12, 19, generator=gen)
    lab0 = torch.rand(2, 12, 19, generator=gen).softmax(0)
    runs = [propagate(feats, lab0, n_context=3, radius=5, chunk=c) for c in (1, 64, 4096)]
    for other in runs[1:]:
        assert (other - runs[0]).abs().max().item() < 1e-5
    assert runs[0].dtype == torch.float32


def test_identical_frames_top1_returns_first_labels() -> None:
    frame = torch.randn(1, 8, 9, 10, generator=torch.Generator().manual_seed(1))
    feats = frame.repeat(6, 1, 1, 1)
    lab0 = torch.rand(4, 9, 10, generator=torch.Generator().manual_seed(2)).softmax(0)
    out = propagate(feats, lab0, n_context=3, topk=1, radius=3)
    assert torch.equal(out, lab0.expand_as(out))


def test_identical_orthogonal_frames_default_params_return_first_labels() -> None:
    h, w = 6, 7
    frame = torch.eye(h * w).view(h * w, h, w)  # each cell its own direction
    feats = frame.unsqueeze(0).repeat(25, 1, 1, 1)
    lab0 = one_hot(np.random.default_rng(0).integers(0, 3, (h, w)), 3)
    out = propagate(feats, lab0)  # n 20, top-10, r 12, tau 0.05, circle
    assert (out - lab0).abs().max().item() < 1e-6


def test_window_offsets_circle_is_strict_and_square_inclusive() -> None:
    circle = {tuple(o) for o in window_offsets(2.0, "circle").tolist()}
    assert circle == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}  # d^2 < 4 only
    assert len(window_offsets(2.5, "square")) == 25  # |d| <= floor(2.5)
    inside = sum(dy * dy + dx * dx < 144 for dy in range(-12, 13) for dx in range(-12, 13))
    assert len(window_offsets(12, "circle")) == inside == 437  # (0, +-12) etc. excluded


def test_propagate_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match=r"first_labels: expected \(K, 4, 5\)"):
        propagate(torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 6))
    with pytest.raises(ValueError, match="radius"):
        propagate(torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 5), radius=0)
    with pytest.raises(ValueError, match="screen"):
        propagate(torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 5), screen="fp8")  # type: ignore[arg-type]


def test_first_frame_labels_soft_and_hard() -> None:
    ids = np.kron(np.array([[0, 1], [2, 0]]), np.ones((4, 4), dtype=np.int64))  # (8, 8)
    soft = first_frame_labels(ids, (2, 2))
    hard = first_frame_labels(ids, (2, 2), mode="nearest")
    assert torch.equal(hard, one_hot(np.array([[0, 1], [2, 0]]), 3))
    assert torch.allclose(soft.sum(0), torch.ones(2, 2))
    half = first_frame_labels(ids, (4, 4))  # bilinear: cell centres on a 2-pixel grid
    assert torch.allclose(half[:, 0, 0], torch.tensor([1.0, 0, 0]))


def test_labels_to_index_upsamples_and_argmaxes() -> None:
    soft = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.1, 0.9], [0.8, 0.2]]])  # (2, 2, 2)
    ids = labels_to_index(soft, (4, 4))
    assert ids.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    scaled = torch.stack([soft[0] * 0.1, soft[1]])  # min-max undoes the channel scale
    assert labels_to_index(scaled, (2, 2), minmax=True).tolist() == [[0, 1], [1, 0]]


def test_heatmaps_round_trip_and_invisible_joint() -> None:
    joints = np.array([[3.0, 2.0], [0.4, 4.6], [np.nan, 1.0], [-9.0, -9.0]])
    maps = joints_to_heatmaps(joints, (6, 7), sigma=0.5)
    assert maps.shape == (4, 6, 7) and maps[0, 2, 3] == 1.0 and maps[1, 5, 0] == 1.0
    assert maps[0, 2, 4] == pytest.approx(np.exp(-2.0))  # one cell away, sigma 0.5
    assert maps[2].sum() == 0 and maps[3].sum() == 0
    coords = decode_keypoints(maps, topk=5)  # centre + its 4 symmetric neighbours
    assert coords[0].tolist() == pytest.approx([3.0, 2.0])
    assert coords[2].tolist() == [-1.0, -1.0] and coords[3].tolist() == [-1.0, -1.0]
    with_bg = joints_to_heatmaps(joints, (6, 7), background=True)
    assert with_bg.shape == (5, 6, 7) and with_bg[0, 0, 6] == 1.0 and with_bg[0, 2, 3] == 0.0
    up = decode_keypoints(maps[:1], topk=1, size=(12, 14))  # STT: decode after upsampling
    assert abs(up[0, 0] - 6.5) <= 0.5 and abs(up[0, 1] - 4.5) <= 0.5

