"""DAVIS J&F (hand-counted boundaries, official edge cases), VIP mIoU and JHMDB PCK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

from stcorr.eval.labels import write_palette_png
from stcorr.eval.metrics import (
    ConfusionMatrix,
    davis_sequence_scores,
    davis_summary,
    db_statistics,
    f_measure,
    j_measure,
    pck,
    score_davis_folder,
    seg2bmap,
)
from stcorr.eval.metrics_davis import boundary_radius


def moving_squares(n_frames: int = 6, h: int = 24, w: int = 32) -> np.ndarray:
    """Two objects drifting right; (T, H, W) ids."""
    gt = np.zeros((n_frames, h, w), dtype=np.int64)
    for t in range(n_frames):
        gt[t, 3:10, 2 + t:9 + t] = 1
        gt[t, 12:20, 15 + t:22 + t] = 2
    return gt


def test_gt_against_itself_scores_exactly_one() -> None:
    gt = moving_squares()
    records = davis_sequence_scores(gt, gt.copy())
    assert len(records) == 2
    summary = davis_summary(records)
    assert summary == {"J&F-Mean": 1.0, "J-Mean": 1.0, "J-Recall": 1.0, "J-Decay": 0.0,
                       "F-Mean": 1.0, "F-Recall": 1.0, "F-Decay": 0.0}


def test_seg2bmap_of_a_square_by_hand() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 2:5] = True
    # inside: right column and bottom row; outside: the row above and column left of it
    inside = {(2, 4), (3, 4), (4, 4), (4, 2), (4, 3)}
    outside = {(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (3, 1), (4, 1)}
    assert set(zip(*np.nonzero(seg2bmap(mask)), strict=True)) == inside | outside


def test_seg2bmap_edge_rules() -> None:
    full = np.ones((4, 5), dtype=bool)  # no inner change; only the image-border rules act
    assert not seg2bmap(full).any()
    left = np.zeros((4, 5), dtype=bool)
    left[:, :3] = True  # a vertical edge reaching the last row: column 2 in every row
    assert set(zip(*np.nonzero(seg2bmap(left)), strict=True)) == {(r, 2) for r in range(4)}


def edge_mask(col: int, size: int = 12) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[:, : col + 1] = True  # boundary = column `col`, 12 pixels
    return mask


@pytest.mark.parametrize(("shift", "expected"), [(0, 1.0), (1, 1.0), (2, 1.0), (3, 0.0)])
def test_boundary_tolerance(shift: int, expected: float) -> None:
    # radius 2 pixels (bound_th >= 1 is used as pixels): a shift <= 2 matches, 3 does not
    assert f_measure(edge_mask(4), edge_mask(4 + shift), bound_th=2) == expected


def test_f_and_j_with_an_unmatched_blob_by_hand() -> None:
    gt = edge_mask(4)  # 60 pixels, boundary 12
    pred = edge_mask(4)
    pred[2:4, 9:11] = True  # 2x2 blob: 3 inside + 5 outside boundary pixels, far from gt
    precision, recall = 12 / 20, 1.0
    assert f_measure(gt, pred, bound_th=2) == pytest.approx(
        2 * precision * recall / (precision + recall))  # 0.75
    assert j_measure(gt, pred) == pytest.approx(60 / 64)


def test_empty_masks_edge_cases() -> None:
    gt, empty = edge_mask(4), np.zeros((12, 12), dtype=bool)
    assert j_measure(gt, empty) == 0.0 and f_measure(gt, empty) == 0.0  # P = 1, R = 0
    assert f_measure(empty, gt) == 0.0  # P = 0, R = 1
    assert j_measure(empty, empty) == 1.0 and f_measure(empty, empty) == 1.0


def test_dilation_matches_skimage_disk_reference() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        gt, pred = rng.random((30, 41)) > 0.7, rng.random((30, 41)) > 0.8
        r = boundary_radius(pred.shape, 0.05)
        bp, bg = seg2bmap(pred), seg2bmap(gt)
        p = (bp & binary_dilation(bg, disk(r))).sum() / bp.sum()
        rc = (bg & binary_dilation(bp, disk(r))).sum() / bg.sum()
        assert f_measure(gt, pred, bound_th=0.05) == pytest.approx(2 * p * rc / (p + rc))
    assert boundary_radius((480, 854)) == 8 and boundary_radius((480, 1152)) == 10


def test_decay_four_bins_by_hand() -> None:
    v = np.array([1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0])  # bin edges 0, 2, 4, 6, 8
    mean, recall, decay = db_statistics(v)
    assert mean == pytest.approx(5 / 9) and recall == pytest.approx(5 / 9)
    assert decay == pytest.approx(1.0 - 0.2 / 3)


def test_decay_long_sequence_does_not_overflow() -> None:
    v = np.linspace(1, 0, 300)  # edges 0, 75, 150, 224, 299: past uint8 range
    _, _, decay = db_statistics(v)
    assert decay == pytest.approx(v[0:76].mean() - v[224:300].mean())


def test_missing_and_extra_predicted_objects() -> None:
    gt = moving_squares()
    pred = np.where(gt == 2, 0, gt)  # object 2 never predicted
    pred[:, 0, 0] = 7  # an id above the GT object count: ignored
    obj1, obj2 = davis_sequence_scores(gt, pred)
    assert obj1["J-Mean"] == 1.0 and obj1["F-Mean"] == 1.0
    assert obj2["J-Mean"] == 0.0 and obj2["F-Mean"] == 0.0 and obj2["J-Recall"] == 0.0
    assert davis_summary([obj1, obj2])["J&F-Mean"] == 0.5


def test_first_and_last_frames_are_not_scored() -> None:
    gt = moving_squares()
    pred = gt.copy()
    pred[0] = 0
    pred[-1] = 0
    assert davis_summary(davis_sequence_scores(gt, pred))["J&F-Mean"] == 1.0


def write_davis(root: Path, seqs: dict[str, np.ndarray]) -> None:
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(seqs) + "\n")
    for name, masks in seqs.items():
        for sub in ("JPEGImages", "Annotations"):
            (root / sub / "480p" / name).mkdir(parents=True)
        for t, mask in enumerate(masks):
            Image.new("RGB", mask.shape[::-1]).save(root / "JPEGImages" / "480p" / name
                                                    / f"{t:05d}.jpg")
            write_palette_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", mask)


def test_score_davis_folder_reads_results_like_the_official_tool(tmp_path: Path) -> None:
    two, one = moving_squares(5), (moving_squares(4) == 1).astype(np.int64)
    write_davis(tmp_path / "davis", {"two": two, "one": one})
    res = tmp_path / "results"
    for name, masks in (("two", two), ("one", one)):
        (res / name).mkdir(parents=True)
        for t, mask in enumerate(masks):
            if name == "one":  # a 0/255 grey mask: ONE object, not 255 of them
                Image.fromarray((mask * 255).astype(np.uint8)).save(res / name / f"{t:05d}.png")
            else:
                write_palette_png(res / name / f"{t:05d}.png", mask)
    summary, rows = score_davis_folder(tmp_path / "davis", res)
    assert summary["J&F-Mean"] == 1.0 and summary["J-Decay"] == 0.0
    assert [r["Sequence"] for r in rows] == ["two_1", "two_2", "one_1"]
    (res / "two" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"00002\.png: result mask not found"):
        score_davis_folder(tmp_path / "davis", res, sequences=["two"])


def test_confusion_matrix_miou_by_hand() -> None:
    cm = ConfusionMatrix(n_classes=3)
    cm.update(np.array([[0, 0, 1, 1]]), np.array([[0, 1, 1, 1]]))
    cm.update(np.array([[255, 1]]), np.array([[2, 1]]))  # 255 ignored
    iou = cm.per_class_iou()
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(3 / 4)
    assert np.isnan(iou[2])  # class 2 never in GT nor predicted (the 255 pixel is ignored)
    assert cm.miou() == pytest.approx((1 / 2 + 3 / 4) / 2)
    with pytest.raises(ValueError, match="predicted ids"):
        cm.update(np.array([0]), np.array([3]))


def test_pck_by_hand() -> None:
    gt = np.array([[[0, 0], [3, 4]]] * 3, dtype=float)  # box diagonal 5 -> ref 3.0
    pred = gt.copy()
    pred[1] = [[0.3, 0.0], [3.0, 4.5]]  # errors 0.3 (= 0.1 * ref) and 0.5
    pred[2] = [[-1, -1], [3.0, 4.0]]  # invisible joint counts as wrong
    pred[0] = [[-1, -1], [-1, -1]]  # frame 0 is skipped (CRW)
    out = pck([pred], [gt])
    assert out["PCK@0.1"] == pytest.approx((1 / 2 + 1 / 2) / 2)  # 0.3 <= 0.1 * 3 counts
    assert out["PCK@0.2"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    with_first = pck([pred], [gt], alphas=(0.5,), skip_first=False)
    assert with_first == {"PCK@0.5": pytest.approx((1 / 3 + 2 / 3) / 2)}
