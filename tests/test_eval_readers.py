"""Benchmark readers on tiny layouts written here, and robust annotation reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from stcorr.eval.labels import davis_palette, read_annotation, write_palette_png
from stcorr.eval.readers import BenchmarkLayoutError, read_davis, read_jhmdb, read_vip


def blob(h: int = 8, w: int = 12, value: int = 1) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.int64)
    mask[2:5, 3:7] = value
    return mask


def write_frames(folder: Path, n: int, size: tuple[int, int], ext: str, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n):
        Image.new("RGB", size).save(folder / f"{t + start:05d}{ext}")


def make_davis(root: Path, names: tuple[str, ...] = ("bear", "car")) -> Path:
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n\n")
    for name in names:
        write_frames(root / "JPEGImages" / "480p" / name, 3, (12, 8), ".jpg")
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for t in range(3):
            write_palette_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", blob())
    return root


def test_read_davis_lists_frames_and_masks(tmp_path: Path) -> None:
    seqs = read_davis(make_davis(tmp_path / "davis"))
    assert [s.name for s in seqs] == ["bear", "car"]
    bear = seqs[0]
    assert [p.name for p in bear.frames] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert [p.name for p in bear.annotations] == ["00000.png", "00001.png", "00002.png"]
    assert read_annotation(bear.annotations[0]).tolist() == blob().tolist()


def test_read_davis_wrong_layout_is_one_line(tmp_path: Path) -> None:
    root = make_davis(tmp_path / "davis")
    for png in (root / "Annotations" / "480p" / "bear").iterdir():
        png.unlink()
    (root / "Annotations" / "480p" / "bear").rmdir()
    with pytest.raises(BenchmarkLayoutError) as err:
        read_davis(root)
    assert str(err.value) == (
        f"davis: Annotations/480p/bear not found under {root}; expected the DAVIS-2017 layout "
        "(JPEGImages/480p, Annotations/480p, ImageSets/2017/val.txt)")
    with pytest.raises(BenchmarkLayoutError, match=r"ImageSets/2017/val\.txt not found under"):
        read_davis(tmp_path)
    with pytest.raises(BenchmarkLayoutError, match="nowhere not found"):
        read_davis(tmp_path / "nowhere")


def test_read_davis_size_mismatch_and_empty_first_mask(tmp_path: Path) -> None:
    root = make_davis(tmp_path / "davis", ("bear",))
    bad = root / "Annotations" / "480p" / "bear" / "00001.png"
    write_palette_png(bad, np.zeros((9, 12), dtype=np.int64))
    with pytest.raises(ValueError, match=r"00001.png: mask is 12x9 but frame .*00001.jpg is 12x8"):
        read_davis(root)
    write_palette_png(bad, blob())
    write_palette_png(root / "Annotations" / "480p" / "bear" / "00000.png",
                      np.zeros((8, 12), dtype=np.int64))
    with pytest.raises(ValueError, match=r"00000\.png: first-frame mask has no object"):
        read_davis(root)


def make_vip(root: Path) -> Path:
    base = root / "VIP_Fine"
    (base / "lists").mkdir(parents=True)
    (base / "lists" / "val_videos.txt").write_text("videos1\n")
    write_frames(base / "Images" / "videos1", 2, (12, 8), ".jpg", start=1)
    (base / "Annotations" / "Category_ids" / "videos1").mkdir(parents=True)
    for t in (1, 2):  # grey class ids
        Image.fromarray(blob(value=13).astype(np.uint8)).save(
            base / "Annotations" / "Category_ids" / "videos1" / f"{t:05d}.png")
    return root


def test_read_vip_accepts_parent_or_vip_fine(tmp_path: Path) -> None:
    root = make_vip(tmp_path / "vip")
    for given in (root, root / "VIP_Fine"):
        (seq,) = read_vip(given)
        assert seq.name == "videos1" and len(seq.frames) == 2
        assert read_annotation(seq.annotations[1]).max() == 13
    with pytest.raises(BenchmarkLayoutError, match=r"^vip: VIP_Fine not found under .*$"):
        read_vip(tmp_path)
    (root / "VIP_Fine" / "lists" / "val_videos.txt").unlink()
    with pytest.raises(BenchmarkLayoutError, match=r"VIP_Fine/lists/val_videos\.txt not found"):
        read_vip(root)


def make_jhmdb(root: Path, n_frames: int = 3) -> Path:
    name = "brush_hair/clip_a"
    write_frames(root / "Frames" / name, n_frames, (10, 6), ".png", start=1)  # 1-based
    pos = np.arange(2 * 15 * n_frames, dtype=np.float64).reshape(2, 15, n_frames) + 1
    (root / "joint_positions" / name).mkdir(parents=True)
    savemat(str(root / "joint_positions" / name / "joint_positions.mat"), {"pos_img": pos})
    (root / "testlist_split1.txt").write_text(
        f"{name}\n/data/jhmdb/Frames/{name}.avi extra column\n")
    return root


def test_read_jhmdb_converts_joints(tmp_path: Path) -> None:
    root = make_jhmdb(tmp_path / "jhmdb")
    first, second = read_jhmdb(root)  # the split lists the clip twice, in two spellings
    assert first.name == second.name == "brush_hair/clip_a"
    assert [p.name for p in first.frames] == ["00001.png", "00002.png", "00003.png"]
    assert first.joints.shape == (3, 15, 2)
    pos = np.arange(2 * 15 * 3, dtype=np.float64).reshape(2, 15, 3)  # 0-based
    assert first.joints[2, 4].tolist() == [pos[0, 4, 2], pos[1, 4, 2]]


def test_read_jhmdb_errors(tmp_path: Path) -> None:
    root = make_jhmdb(tmp_path / "jhmdb")
    (root / "Frames" / "brush_hair" / "clip_a" / "00003.png").unlink()
    with pytest.raises(ValueError, match=r"joint_positions.mat: pos_img is 2x15x3 for 2 frames"):
        read_jhmdb(root)
    (root / "joint_positions" / "brush_hair" / "clip_a" / "joint_positions.mat").unlink()
    with pytest.raises(BenchmarkLayoutError, match=r"joint_positions/brush_hair/clip_a/"
                                                   r"joint_positions\.mat not found under"):
        read_jhmdb(root)
    with pytest.raises(BenchmarkLayoutError, match=r"split file .* not found"):
        read_jhmdb(tmp_path)


def test_binary_masks_read_as_one_object(tmp_path: Path) -> None:
    mask = blob(value=255).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([mask] * 3, -1)).save(tmp_path / "rgb.png")
    Image.fromarray(np.stack([mask, np.full_like(mask, 200)], -1)).save(tmp_path / "la.png")
    for name in ("grey.png", "rgb.png", "la.png"):
        assert read_annotation(tmp_path / name).tolist() == blob().tolist()


def test_palette_and_colour_annotations(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2], [3, 0, 255]])
    write_palette_png(tmp_path / "p.png", ids)
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert read_annotation(tmp_path / "p.png").tolist() == ids.tolist()
    Image.fromarray(davis_palette()[ids]).save(tmp_path / "colours.png")  # CRW-style colours
    assert read_annotation(tmp_path / "colours.png").tolist() == ids.tolist()
    odd = np.array([[[0, 0, 0], [10, 20, 30]], [[5, 5, 200], [0, 0, 0]]], dtype=np.uint8)
    Image.fromarray(odd).save(tmp_path / "odd.png")  # not palette colours: enumerated
    assert read_annotation(tmp_path / "odd.png").tolist() == [[0, 2], [1, 0]]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"broken.png: cannot read image .*expected a PNG mask"):
        read_annotation(tmp_path / "broken.png")
