"""Correlation distillation, STT Eq. 2-3 and 8-9 (Li & Liu, CVPR 2023, arXiv 2209.07778).

Local (STT Eq. 8-9): the finer level's windowed correlation (res3, radius r0), pooled 2 x 2 onto the
coarser grid (res4, radius r1), is the pseudo-label of the coarser level's correlation, weighted
by an entropy-based selection of target positions. Global (STT Eq. 2-3): the student's res5
correlation imitates the frozen teacher's. Both pooled axes and both windows stay windowed: no
HW x HW matrix is built for the local term (the res5 global one is 64 x 64 at 256 px).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Selection = Literal["shannon", "reference_code", "none"]


def _parity_maps(r0: int, r1: int, device: torch.device) -> Tensor:
    """Fine displacement -> coarse displacement, per fine target parity a in {0, 1}.

    A fine target at 2Y + a and a fine reference at 2(Y + D) + c (c in {0, 1}) are a fine
    displacement dy = 2D + c - a apart; the map sums the two fine slots of each coarse slot D.

    Returns:
        ``(2, 2*r1 + 1, 2*r0 + 1)`` 0/1 matrix M[a, D + r1, dy + r0].
    """
    dy = torch.arange(-r0, r0 + 1, device=device)
    big_d = torch.arange(-r1, r1 + 1, device=device)
    a = torch.arange(2, device=device)
    c = dy[None, None, :] - 2 * big_d[None, :, None] + a[:, None, None]  # (2, 2r1+1, 2r0+1)
    return ((c == 0) | (c == 1)).to(torch.float32)


def pool_fine_correlation(
    fine: Tensor,
    fine_size: tuple[int, int],
    r0: int,
    r1: int,
    norm: Literal["sum", "mean"] = "sum",
) -> Tensor:
    """Pseudo-label T of STT Eq. 9: the fine correlation pooled 2 x 2 on both axes, windowed.

    The reference axis is pooled by sum (``norm="sum"``, rows sum to 1, the paper's intent) or by
    mean (``"mean"``, rows sum to 1/4 as in the reference code, docs/methods.md 2.6); the target axis
    is always averaged. The result is expressed in the coarse window's slots, which hold all of
    its mass when r0 <= 2 * r1 (r0 = 12, r1 = 6 at strides 4 / 8).

    Args:
        fine: ``(B, H0*W0, (2r0+1)^2)`` fine-level correlation weights.
        fine_size: (H0, W0), both even.
        r0: fine window radius.
        r1: coarse window radius.
        norm: "sum" or "mean" over the reference axis.

    Returns:
        ``(B, (H0/2)*(W0/2), (2r1+1)^2)``.

    Raises:
        ValueError: on odd fine sizes or a fine window wider than the coarse one can hold.
    """
    h0, w0 = fine_size
    if h0 % 2 or w0 % 2 or fine.shape[1:] != (h0 * w0, (2 * r0 + 1) ** 2):
        raise ValueError(
            f"local distillation: fine correlation {tuple(fine.shape)} with size {fine_size}, "
            f"radius {r0}; expected (B, H0*W0, (2r0+1)^2) with even H0, W0"
        )
    if (r0 + 1) // 2 > r1:
        raise ValueError(
            f"local distillation: fine radius {r0} reaches past coarse radius {r1}; "
            "expected r0 <= 2 * r1"
        )
    k0 = 2 * r0 + 1
    maps = _parity_maps(r0, r1, fine.device).to(fine.dtype)  # (2, 2r1+1, 2r0+1)
    grid = fine.reshape(fine.shape[0], h0 // 2, 2, w0 // 2, 2, k0, k0)  # (B, Y, a, X, b, dy, dx)
    pooled = torch.einsum("nyaxbpq,aup,bvq->nyxuv", grid, maps, maps)  # sum over both axes
    scale = 0.25 if norm == "sum" else 1.0 / 16.0  # target axis always averaged (4 cells)
    return (pooled * scale).reshape(fine.shape[0], (h0 // 2) * (w0 // 2), (2 * r1 + 1) ** 2)


def shannon_entropy(logits: Tensor) -> Tensor:
    """Shannon entropy H_i = -sum_k p_ik log p_ik of softmax(logits) over the last axis (STT Eq. 8).

    Args:
        logits: ``(..., K)``.

    Returns:
        ``(...)``; log K for a uniform row.
    """
    log_p = logits.log_softmax(dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def reference_code_entropy(logits: Tensor) -> Tensor:
    """The reference code's "entropy" E_i = sum_k -log(p_ik + 1e-12) (docs/methods.md 2.6, step 2).

    Not Shannon entropy: it is large for peaked rows. Kept for parity only.

    Args:
        logits: ``(..., K)``.

    Returns:
        ``(...)``.
    """
    return (-torch.log(logits.softmax(dim=-1) + 1e-12)).sum(dim=-1)


def entropy_selection(
    c2: Tensor, size: tuple[int, int], mode: Selection, keep_fraction: float
) -> Tensor:
    """Entropy-based selection weights w of the target positions (STT Eq. 8).

    The softmax runs over all (2r+1)^2 slots of the raw correlation, the out-of-frame zeros
    included, as in the reference code (``mmcv`` zero padding).

    Args:
        c2: ``(B, H*W, (2r+1)^2)`` raw coarse-level correlation.
        size: (H, W) of the coarse grid.
        mode: "shannon": keep the ``keep_fraction`` of each sample's positions with the lowest
            Shannon entropy (one threshold per sample). "reference_code": docs/methods.md 2.6 steps
            2-3 exactly (row-wise sort, row int(H * keep_fraction) - 1, keeps ~47 %). "none": 1.
        keep_fraction: share of positions kept.

    Returns:
        ``(B, H*W)`` float 0/1 weights, no gradient.

    Raises:
        ValueError: for "reference_code" with keep_fraction < 1 / H (no threshold row).
    """
    b, n = c2.shape[:2]
    c2 = c2.detach()
    if mode == "none":
        return c2.new_ones(b, n)
    if mode == "shannon":
        k = round(keep_fraction * n)
        lowest = shannon_entropy(c2).topk(k, dim=1, largest=False).indices  # (B, k)
        return c2.new_zeros(b, n).scatter_(1, lowest, 1.0)
    h, w = size
    row = int(h * keep_fraction) - 1
    if row < 0:
        raise ValueError(
            f"stt.selection=reference_code: keep_fraction {keep_fraction} leaves no threshold "
            f"row on a {h}-row grid; expected keep_fraction >= 1/{h}"
        )
    energy = reference_code_entropy(c2).reshape(b, h, w)
    ranked = energy.sort(dim=-1, descending=True).values  # each image row sorted on its own
    threshold = ranked[:, row : row + 1]  # (B, 1, W): row `row` of the row-sorted map
    return (energy > threshold).to(c2.dtype).reshape(b, n)


def local_distillation_loss(student: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Weighted MSE of STT Eq. 9: sum w (C1 - T)^2 / (sum w + 1e-12) over the dense C1 matrix.

    The selection w of a target position is broadcast over all HW reference positions, as in
    the reference code; entries outside the window are 0 - 0 and add nothing to the sum but
    count in sum w, so the value equals the dense formulation exactly.

    Args:
        student: ``(B, HW, K)`` coarse-level correlation weights C1.
        target: ``(B, HW, K)`` pseudo-label T (detached here).
        weights: ``(B, HW)`` selection w.

    Returns:
        Scalar loss.
    """
    err = (student - target.detach()).pow(2).sum(dim=-1)  # (B, HW)
    n_ref = student.shape[1]  # reference positions of the dense HW x HW matrix
    return (err * weights).sum() / (weights.sum() * n_ref + 1e-12)


def global_correlation(f_t: Tensor, f_r: Tensor, scale: float) -> Tensor:
    """Dense correlation softmax_j(<f_t,i, f_r,j> * scale) over the whole frame (STT Eq. 2).

    Args:
        f_t: ``(B, C, H, W)`` target features.
        f_r: ``(B, C, H, W)`` reference features.
        scale: 1/sqrt(C) for the student, 1/tau for the teacher.

    Returns:
        ``(B, HW, HW)`` rows summing to 1.
    """
    logits = torch.einsum("bci,bcj->bij", f_t.flatten(2), f_r.flatten(2))  # (B, HW, HW)
    return (logits * scale).softmax(dim=-1)


def global_distillation_loss(
    student_t: Tensor,
    student_r: Tensor,
    teacher_t: Tensor,
    teacher_r: Tensor,
    student_scaling: bool = True,
    tau: float = 0.07,
    teacher_normalize: bool = False,
) -> Tensor:
    """L_gc of STT Eq. 3: mean squared difference of student and teacher global correlations.

    Student: softmax_j(<g_t,i, g_r,j> / sqrt(C)) (``student_scaling``, else scale 1). Teacher:
    softmax_j(<h_t,i, h_r,j> / tau) of raw features (reference code) or L2-normalised ones
    (``teacher_normalize``); no gradient reaches it.

    Args:
        student_t: ``(B, C, H, W)`` student res5 of the target frame.
        student_r: ``(B, C, H, W)`` student res5 of the reference frame.
        teacher_t: ``(B, C', H, W)`` teacher res5 of the target frame.
        teacher_r: ``(B, C', H, W)`` teacher res5 of the reference frame.
        student_scaling: scale student dot products by 1/sqrt(C).
        tau: teacher temperature.
        teacher_normalize: L2-normalise teacher features over channels first.

    Returns:
        Scalar loss.

    Raises:
        ValueError: if student and teacher grids differ.
    """
    if student_t.shape[2:] != teacher_t.shape[2:]:
        raise ValueError(
            f"global distillation: student res5 grid {tuple(student_t.shape[2:])} differs from "
            f"teacher res5 grid {tuple(teacher_t.shape[2:])}; expected the same stride"
        )
    scale = 1.0 / math.sqrt(student_t.shape[1]) if student_scaling else 1.0
    student = global_correlation(student_t, student_r, scale)
    with torch.no_grad():  # no gradient to the teacher
        h_t, h_r = teacher_t.detach(), teacher_r.detach()
        if teacher_normalize:
            h_t, h_r = F.normalize(h_t, dim=1), F.normalize(h_r, dim=1)
        target = global_correlation(h_t, h_r, 1.0 / tau)
    return F.mse_loss(student, target)
