"""Benchmark metrics of label propagation: DAVIS J&F, VIP mIoU, JHMDB PCK.

- DAVIS-2017 J&F lives in ``metrics_davis`` (a port of the official tool) and is re-exported.
- VIP mIoU (docs/methods.md 3.3; CRW ``eval/eval_vip.py:63-146``): one confusion matrix over all
  frames of all videos (frame 0 included), IoU_c = TP / (TP + FP + FN), nanmean over the
  20 classes; GT pixels outside 0..19 (e.g. 255) are ignored, as mmseg's ``ignore_index``.
- JHMDB PCK (docs/methods.md 3.4; CRW ``eval/eval_pck.py:70-146``): per frame the reference length
  is 0.6 x the diagonal of the tight box around the GT joints; a joint is correct when
  ``||pred - gt|| <= alpha * ref``; PCK per joint over all frames, reported as the mean over
  the joints. Departure from CRW, which drops invisible predictions from both the count and
  the box: here an invisible prediction counts as wrong and the box uses every GT joint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stcorr.eval.metrics_davis import (
    STATS,
    davis_sequence_scores,
    davis_summary,
    db_statistics,
    f_measure,
    j_measure,
    score_davis_folder,
    score_davis_sequence,
    seg2bmap,
)

__all__ = [
    "PCK_ALPHAS",
    "STATS",
    "ConfusionMatrix",
    "davis_sequence_scores",
    "davis_summary",
    "db_statistics",
    "f_measure",
    "j_measure",
    "pck",
    "score_davis_folder",
    "score_davis_sequence",
    "seg2bmap",
]

PCK_ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5)
VIP_CLASSES = 20  # background + 19 human parts


class ConfusionMatrix:
    """Dataset-level confusion matrix for mIoU (rows: GT class, columns: predicted class)."""

    def __init__(self, n_classes: int = VIP_CLASSES) -> None:
        self.n_classes = n_classes
        self.matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame; GT ids outside ``0..n-1`` (void, 255) are ignored.

        Raises:
            ValueError: if the shapes differ or a prediction lies outside ``0..n-1``.
        """
        gt, pred = np.asarray(gt, dtype=np.int64), np.asarray(pred, dtype=np.int64)
        n = self.n_classes
        if gt.shape != pred.shape:
            raise ValueError(f"mIoU: prediction shape {pred.shape} differs from GT {gt.shape}; "
                             f"resize the prediction (nearest) to the GT size first")
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"mIoU: predicted ids must lie in 0..{n - 1}, got "
                             f"[{pred.min()}, {pred.max()}]")
        keep = (gt >= 0) & (gt < n)
        self.matrix += np.bincount(n * gt[keep] + pred[keep], minlength=n * n).reshape(n, n)

    def per_class_iou(self) -> np.ndarray:
        """IoU of each class, NaN for a class absent from both GT and predictions."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that occur (nanmean)."""
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pck(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], *,
        alphas: Sequence[float] = PCK_ALPHAS, skip_first: bool = True) -> dict[str, float]:
    """PCK@alpha over videos, as fractions in [0, 1].

    Args:
        preds: per video ``(T, J, 2)`` predicted (x, y) pixels; x < 0 marks an invisible joint.
        gts: per video ``(T, J, 2)`` GT (x, y) pixels.
        alphas: thresholds (both papers report 0.1 and 0.2; 0.1..0.5 are printed).
        skip_first: drop frame 0, which is the given GT (CRW; STT includes it).

    Returns:
        ``{"PCK@0.1": ..., ...}``: per-joint fraction correct, averaged over the joints.

    Raises:
        ValueError: if a prediction and its GT differ in shape.
    """
    dists, refs, visible = [], [], []
    for pred, gt in zip(preds, gts, strict=True):
        pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
        if pred.shape != gt.shape or gt.ndim != 3:
            raise ValueError(f"PCK: prediction shape {pred.shape} differs from GT {gt.shape}; "
                             f"expected (T, J, 2) each")
        if skip_first:
            pred, gt = pred[1:], gt[1:]
        extent = gt.max(axis=1) - gt.min(axis=1)  # (T, 2) tight box around the GT joints
        refs.append(np.repeat(0.6 * np.linalg.norm(extent, axis=1)[:, None], gt.shape[1], 1))
        dists.append(np.linalg.norm(pred - gt, axis=2))  # (T, J)
        visible.append(pred[..., 0] >= 0)
    dist, ref, vis = (np.concatenate(a) for a in (dists, refs, visible))
    out = {}
    for alpha in alphas:
        correct = vis & (dist <= alpha * ref)  # (frames, J)
        out[f"PCK@{alpha:g}"] = float(correct.mean(axis=0).mean())
    return out
