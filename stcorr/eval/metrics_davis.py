"""The official DAVIS-2017 semi-supervised metric: region J, boundary F, and their statistics.

A port of davisvideochallenge/davis2017-evaluation @ ac7c43f (docs/methods.md 4.2-4.4):
``db_eval_iou``, ``f_measure`` / ``_seg2bmap`` (``davis2017/metrics.py``), ``db_statistics``
(``davis2017/utils.py:135-161``) and the object-weighted aggregation of
``evaluation_method.py``. Per object and frame, the first and last frames excluded; void
(255) GT pixels count as background and are not excluded, as in the official tool.

Departures, each on purpose (docs/methods.md 4.5):

- Boundary dilation by ``disk(r)`` is computed as "Euclidean distance to the nearest boundary
  pixel <= r" (exactly the same pixels as ``cv2.dilate`` with ``skimage.morphology.disk(r)``,
  without OpenCV), on the bounding box of the two boundaries only.
- Decay bins use int64 indices; the official ``uint8`` cast overflows past 256 evaluated frames.
- Predicted ids above the GT object count are ignored; the official tool exits instead.
  Missing predicted objects are empty masks (as the official zero padding does).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from stcorr.eval.labels import read_annotation
from stcorr.eval.readers import VOID, MaskSequence, read_davis

BOUND_TH = 0.008  # boundary tolerance as a fraction of the image diagonal (metrics.py:40)
STATS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def j_measure(gt: np.ndarray, pred: np.ndarray) -> float:
    """Region similarity J = |M & G| / |M | G|, 1 when the union is empty (``db_eval_iou``)."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    union = np.count_nonzero(gt | pred)
    return 1.0 if union == 0 else np.count_nonzero(gt & pred) / union


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """1-pixel boundary map of a binary mask, offset half a pixel toward the origin.

    ``b = seg ^ E | seg ^ S | seg ^ SE`` with E/S/SE the mask shifted left/up/up-left (zero
    fill); the last row keeps only the E term, the last column only the S term, and the
    bottom-right pixel is 0 (``_seg2bmap``, Martin 2003).
    """
    seg = mask.astype(bool)
    if seg.size == 0:
        return seg
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_radius(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Tolerance r in pixels: ``ceil(bound_th * diagonal)``; ``bound_th >= 1`` is pixels."""
    if bound_th >= 1:
        return math.ceil(bound_th)
    return math.ceil(bound_th * math.hypot(*shape[:2]))


def _within(points: np.ndarray, targets: np.ndarray, radius: int) -> int:
    """How many ``points`` lie within Euclidean distance ``radius`` of some ``targets`` pixel.

    Equals ``count(points & dilate(targets, disk(radius)))``: ``disk(r)`` holds the offsets
    with ``dy^2 + dx^2 <= r^2``.
    """
    if not targets.any() or not points.any():
        return 0
    rows = np.flatnonzero((points | targets).any(axis=1))
    cols = np.flatnonzero((points | targets).any(axis=0))
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # every boundary pixel is inside
    dist = distance_transform_edt(~targets[box])
    return int(np.count_nonzero(points[box] & (np.rint(dist**2) <= radius**2)))


def _support(mask: np.ndarray) -> tuple[slice, slice]:
    """Crop holding every boundary pixel: the mask's box plus one row/column before and after.

    ``seg2bmap`` of the crop equals the full map restricted to it (the extra row and column
    after the box are empty, so the last-row/column rules give 0 there).
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return (slice(max(0, rows[0] - 1), rows[-1] + 2), slice(max(0, cols[0] - 1), cols[-1] + 2))


def f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of a predicted mask against its GT mask (``f_measure``).

    Precision = matched predicted boundary / predicted boundary, recall = matched GT boundary
    / GT boundary, within ``boundary_radius``; no predicted boundary with some GT boundary:
    P = 1, R = 0; the reverse: P = 0, R = 1; neither: P = R = 1; F = 0 when P + R = 0.
    """
    radius = boundary_radius(pred.shape, bound_th)
    box = _support(gt.astype(bool) | pred.astype(bool))
    b_pred, b_gt = seg2bmap(pred[box]), seg2bmap(gt[box])
    n_pred, n_gt = int(b_pred.sum()), int(b_gt.sum())
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = _within(b_pred, b_gt, radius) / n_pred
        recall = _within(b_gt, b_pred, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall (fraction > 0.5) and decay of one object's per-frame values.

    Decay = mean(first bin) - mean(last bin) over 4 bins whose edges are
    ``round(linspace(1, n, 5) + 1e-10) - 1``, neighbours sharing their end points.
    """
    v = np.asarray(values, dtype=np.float64)
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)  # not uint8
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return (float(np.nanmean(v)), float(np.nanmean(v > 0.5)),
                float(np.nanmean(bins[0]) - np.nanmean(bins[3])))


def frame_scores(gt: np.ndarray, pred: np.ndarray, n_objects: int) -> np.ndarray:
    """J and F of objects 1..n in one frame: ``(2, n)``; a missing object is an empty mask."""
    if gt.shape != pred.shape:
        raise ValueError(f"prediction is {pred.shape[1]}x{pred.shape[0]} but GT is "
                         f"{gt.shape[1]}x{gt.shape[0]}; expected the same size")
    gt = np.where(gt == VOID, 0, gt)  # void counts as background (davis.py:88-90)
    out = np.empty((2, n_objects))
    for k in range(1, n_objects + 1):
        out[0, k - 1] = j_measure(gt == k, pred == k)
        out[1, k - 1] = f_measure(gt == k, pred == k)
    return out


def object_records(j: np.ndarray, f: np.ndarray) -> list[dict[str, float]]:
    """Per-object statistics from ``(n_objects, frames)`` J and F tables."""
    records = []
    for jo, fo in zip(j, f, strict=True):
        values = (*db_statistics(jo), *db_statistics(fo))
        records.append(dict(zip(STATS, values, strict=True)))
    return records


def davis_sequence_scores(gt: np.ndarray, pred: np.ndarray,
                          n_objects: int | None = None) -> list[dict[str, float]]:
    """Per-object J/F statistics of one sequence, frames 1..T-2 (semi-supervised).

    Args:
        gt: ``(T, H, W)`` int GT ids (255 = void, read as background).
        pred: ``(T, H, W)`` int predicted ids; ids above ``n_objects`` are ignored.
        n_objects: objects 1..n to score; None = the largest id in the first GT frame.

    Returns:
        One dict per object (object k at index k-1) with the keys of ``STATS``.

    Raises:
        ValueError: on mismatched shapes or fewer than 3 frames.
    """
    if gt.shape != pred.shape or gt.ndim != 3 or gt.shape[0] < 3:
        raise ValueError(f"davis: expected GT and prediction of the same (T >= 3, H, W) shape, "
                         f"got {gt.shape} and {pred.shape}")
    n = int(np.where(gt[0] == VOID, 0, gt[0]).max()) if n_objects is None else n_objects
    scores = np.stack([frame_scores(gt[t], pred[t], n) for t in range(1, gt.shape[0] - 1)], -1)
    return object_records(scores[0], scores[1])  # scores: (2, n, T - 2)


def davis_summary(per_object_records: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Global DAVIS scores: every statistic averaged over ALL objects (object-weighted).

    Returns:
        ``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}``
        with ``J&F-Mean = (J-Mean + F-Mean) / 2``.
    """
    if not per_object_records:
        raise ValueError("davis: no objects to summarise; expected at least one object record")
    out = {key: float(np.mean([r[key] for r in per_object_records])) for key in STATS}
    return {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2, **out}


def score_davis_sequence(seq: MaskSequence, results_root: str | Path) -> list[dict[str, float]]:
    """Score ``<results_root>/<seq>/<frame>.png`` against one GT sequence, frame by frame.

    Raises:
        FileNotFoundError: a result mask is missing (one line naming it).
        ValueError: a result mask of another size than its GT mask.
    """
    first = read_annotation(seq.annotations[0])
    n_objects = int(np.where(first == VOID, 0, first).max())
    if len(seq.annotations) < 3:
        raise ValueError(f"davis: {seq.name} has {len(seq.annotations)} frames; expected >= 3")
    scores = []
    for ann in seq.annotations[1:-1]:
        path = Path(results_root) / seq.name / ann.name
        if not path.exists():
            raise FileNotFoundError(f"{path}: result mask not found; expected an indexed PNG "
                                    f"<results>/{seq.name}/{ann.name} for every GT frame")
        gt, pred = read_annotation(ann), read_annotation(path)
        if gt.shape != pred.shape:
            raise ValueError(f"{path}: mask is {pred.shape[1]}x{pred.shape[0]} but GT {ann} is "
                             f"{gt.shape[1]}x{gt.shape[0]}; expected the same size")
        scores.append(frame_scores(gt, pred, n_objects))
    table = np.stack(scores, -1)  # (2, n_objects, T - 2)
    return object_records(table[0], table[1])


def score_davis_folder(gt_root: str | Path, results_root: str | Path, *,
                       sequences: Sequence[str] | None = None,
                       ) -> tuple[dict[str, float], list[dict[str, str | float]]]:
    """Evaluate a results folder like ``evaluation_method.py --task semi-supervised``.

    Args:
        gt_root: the DAVIS-2017 folder (val list ``ImageSets/2017/val.txt``).
        results_root: ``<results_root>/<seq>/<frame>.png`` indexed PNGs, GT frame names.
        sequences: sequence names; None = the val list.

    Returns:
        The global dict of ``davis_summary`` and per-object rows
        ``{"Sequence": "<seq>_<k>", <STATS>...}`` (the official per-sequence table).
    """
    rows: list[dict[str, str | float]] = []
    records: list[dict[str, float]] = []
    for seq in read_davis(gt_root, sequences=sequences):
        for k, rec in enumerate(score_davis_sequence(seq, results_root), start=1):
            records.append(rec)
            rows.append({"Sequence": f"{seq.name}_{k}", **rec})
    return davis_summary(records), rows

