"""Synthetic data: exact ground truth, on-disk layouts read back, determinism, real MP4s, scene properties."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat
from synthcfg import tiny

from stcorr.config import SynthConfig
from stcorr.data.synthetic import (
    JHMDB_JOINTS,
    VIP_CLASSES,
    davis_name,
    davis_scene,
    generate,
    image_path,
    image_sample,
    jhmdb_name,
    jhmdb_scene,
    render_puppets,
    render_video,
    vip_name,
    vip_scene,
    voc_palette,
    write_mp4,
)
from stcorr.data.synthetic.motion import Motion
from stcorr.data.synthetic.scene import Sprite, sprite_layer
from stcorr.data.synthetic.shapes import random_shape

# DAVIS / PASCAL VOC colours of ids 0..4: black, (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128).
VOC_FIRST_FIVE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128]




def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_image(path: Path) -> tuple[str, np.ndarray, list[int] | None]:
    """Mode, pixels and palette of an image file, closing the file."""
    with Image.open(path) as image:
        return image.mode, np.asarray(image), image.getpalette()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthConfig, dict[str, Path], Path]:
    cfg = tiny()
    out = tmp_path_factory.mktemp("synth") / "data"
    return cfg, generate(out, cfg), out


# ---------------------------------------------------------------- ground truth in memory


def test_masks_are_the_topmost_object_pixel_by_pixel() -> None:
    scene = render_video(np.random.default_rng(0), 5, (20, 28), 3)
    frames, height, width = scene.masks.shape
    for t in range(frames):
        for y in range(height):
            for x in range(width):
                top = 0
                for k in scene.z_order:  # bottom to top, written plainly
                    if scene.object_alpha[k - 1, t, y, x]:
                        top = k
                assert scene.masks[t, y, x] == top
                source = scene.background if top == 0 else scene.object_rgb[top - 1]
                assert (scene.frames[t, y, x] == source[t, y, x]).all()
    assert (scene.object_rgb[~scene.object_alpha] == 0).all()
    assert set(np.unique(scene.masks)) == {0, 1, 2, 3}


def test_sprite_layer_pastes_and_rotates_the_silhouette_exactly() -> None:
    shape = random_shape(np.random.default_rng(1), 8)
    sprite = Sprite(np.zeros((8, 8, 3), np.float32), shape)
    still = Motion(np.array([[10.0, 10.0]]), np.ones(1), np.zeros(1))
    alpha, _ = sprite_layer(sprite, still, (20, 20))
    expected = np.zeros((20, 20), bool)
    expected[6:14, 6:14] = shape
    np.testing.assert_array_equal(alpha[0], expected)
    turned = Motion(np.array([[10.0, 10.0]]), np.ones(1), np.full(1, np.pi / 2))
    alpha, colours = sprite_layer(sprite, turned, (20, 20))
    expected[6:14, 6:14] = np.rot90(shape, -1)  # (y, x) <- shape[7 - x', y'] for +90 degrees
    np.testing.assert_array_equal(alpha[0], expected)
    assert colours.shape == (int(shape.sum()), 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scene_has_scale_change_exit_reentry_occlusion_and_light_drift(seed: int) -> None:
    scene = render_video(np.random.default_rng(seed), 12, (48, 64), 3)
    area = scene.object_alpha.sum(axis=(2, 3))  # (K, T)
    exit_area = area[0]
    gone = np.flatnonzero(exit_area == 0)
    assert exit_area[0] > 0 and len(gone) > 0 and exit_area[gone[-1] + 1 :].max() > 0
    assert (area[1:].max(axis=1) / area[1:].min(axis=1)).max() > 1.3  # grows or shrinks
    assert (scene.object_alpha.sum(axis=0) >= 2).any()  # two silhouettes on one pixel
    brightness = scene.background.reshape(12, -1).mean(axis=1)
    assert abs(brightness[-1] - brightness[0]) > 5.0
    assert set(np.unique(scene.masks[0])) == {0, 1, 2, 3}  # every object visible in frame 0


def test_puppet_labels_joints_and_class_lists() -> None:
    clip = render_puppets(np.random.default_rng(4), 6, (48, 64), 1, ("walk",))
    background = clip.parts == 0
    np.testing.assert_array_equal(clip.frames[background], clip.background[background])
    assert clip.parts.max() < len(VIP_CLASSES) and clip.visible.all()
    assert clip.joints.shape == (1, 6, 15, 2)
    assert (
        (clip.joints >= 0).all() and (clip.joints[..., 0] <= 63).all() and (clip.joints[..., 1] <= 47).all()
    )
    head = {VIP_CLASSES.index(c) for c in ("face", "hair", "sun-glasses", "hat")}
    for t in range(6):  # the head is drawn last, so the face joint's pixel shows a head class
        x, y = np.rint(clip.joints[0, t, JHMDB_JOINTS.index("face")]).astype(int)
        assert clip.parts[t, y, x] in head
    assert VIP_CLASSES == (
        "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks",
        "pants", "gloves", "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm",
        "right-leg", "left-leg", "right-shoe", "left-shoe",
    )  # fmt: skip
    assert JHMDB_JOINTS == (
        "neck", "belly", "face", "right shoulder", "left shoulder", "right hip", "left hip",
        "right elbow", "left elbow", "right knee", "left knee", "right wrist", "left wrist",
        "right ankle", "left ankle",
    )  # fmt: skip


def test_voc_palette_matches_the_davis_colours() -> None:
    palette = np.array(voc_palette()).reshape(256, 3)
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
                5: (128, 0, 128), 7: (128, 128, 128), 8: (64, 0, 0), 255: (224, 224, 192)}  # fmt: skip
    for index, rgb in expected.items():
        assert tuple(palette[index]) == rgb


# ---------------------------------------------------------------- files on disk


def test_layout_images_and_readme(generated: tuple[SynthConfig, dict[str, Path], Path]) -> None:
    cfg, roots, out = generated
    files = sorted(roots["images"].rglob("*.jpg"))
    assert [str(p.relative_to(roots["images"])) for p in files] == sorted(image_path(i) for i in range(3))
    assert len({p.parent for p in files}) == 3  # spread over sub-folders
    decoded = read_image(roots["images"] / image_path(1))[1].astype(float)
    assert np.abs(decoded - image_sample(cfg, 1)[0]).mean() < 6.0
    assert "seed: 3" in (out / "README.txt").read_text()


def test_davis_annotations_read_back_exactly(generated: tuple[SynthConfig, dict[str, Path], Path]) -> None:
    cfg, roots, _ = generated
    davis = roots["davis"]
    names = (davis / "ImageSets" / "2017" / "val.txt").read_text().splitlines()
    assert names == [davis_name(0), davis_name(1)]
    for i, name in enumerate(names):
        scene = davis_scene(cfg, i)
        assert len(list((davis / "JPEGImages" / "480p" / name).glob("*.jpg"))) == cfg.benchmark_frames
        for t in range(cfg.benchmark_frames):
            mode, labels, palette = read_image(davis / "Annotations" / "480p" / name / f"{t:05d}.png")
            assert mode == "P" and palette is not None and palette[: 3 * 5] == VOC_FIRST_FIVE
            np.testing.assert_array_equal(labels, scene.masks[t])
        assert set(np.unique(scene.masks[0])) == set(range(cfg.objects + 1))


def test_vip_annotations_read_back_exactly(generated: tuple[SynthConfig, dict[str, Path], Path]) -> None:
    cfg, roots, _ = generated
    fine = roots["vip"] / "VIP_Fine"
    assert (fine / "lists" / "val_videos.txt").read_text().splitlines() == [vip_name(0)]
    scene = vip_scene(cfg, 0)
    for t in range(cfg.benchmark_frames):
        mode, labels, _ = read_image(fine / "Annotations" / "Category_ids" / vip_name(0) / f"{t:06d}.png")
        assert mode == "L" and labels.max() <= 19
        np.testing.assert_array_equal(labels, scene.parts[t])
        assert (fine / "Images" / vip_name(0) / f"{t:06d}.jpg").is_file()
    assert len(np.unique(scene.parts)) >= 8  # several part classes present


def test_jhmdb_frames_and_joints_read_back_exactly(
    generated: tuple[SynthConfig, dict[str, Path], Path],
) -> None:
    cfg, roots, _ = generated
    jhmdb = roots["jhmdb"]
    items = [jhmdb_name(i) for i in range(2)]
    assert (jhmdb / "testlist_split1.txt").read_text().splitlines() == [f"{a}/{s}" for a, s in items]
    assert items[0][0] != items[1][0]  # actions differ
    height, width = cfg.benchmark_size
    for i, (action, name) in enumerate(items):
        scene = jhmdb_scene(cfg, i)
        pngs = sorted((jhmdb / "Frames" / action / name).glob("*.png"))
        assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(1, cfg.benchmark_frames + 1)]
        for t, p in enumerate(pngs):
            np.testing.assert_array_equal(read_image(p)[1], scene.frames[t])
        pos = loadmat(jhmdb / "joint_positions" / action / name / "joint_positions.mat")["pos_img"]
        assert pos.shape == (2, 15, cfg.benchmark_frames)
        for t in range(cfg.benchmark_frames):
            for j in range(15):
                assert pos[0, j, t] == scene.joints[0, t, j, 0] + 1  # 1-based x
                assert pos[1, j, t] == scene.joints[0, t, j, 1] + 1  # 1-based y
        shown = scene.visible[0].T  # (15, T)
        assert shown.all()
        assert ((pos[0] >= 1) & (pos[0] <= width) & (pos[1] >= 1) & (pos[1] <= height))[shown].all()


def test_mp4_decodes_with_decord_and_pyav(generated: tuple[SynthConfig, dict[str, Path], Path]) -> None:
    cfg, roots, _ = generated
    videos = sorted(roots["videos_mp4"].glob("*.mp4"))
    assert [p.name for p in videos] == ["vid_0000.mp4", "vid_0001.mp4"]
    for path in videos:
        jpegs = sorted((roots["videos_frames"] / "JPEGImages" / path.stem).glob("*.jpg"))
        reference = np.stack([read_image(p)[1] for p in jpegs]).astype(float)
        for source in (str(path), io.BytesIO(path.read_bytes())):
            reader = decord.VideoReader(source)
            assert len(reader) == cfg.video_frames
            clip = reader.get_batch(list(range(len(reader)))).asnumpy()
            assert clip.shape == (cfg.video_frames, *cfg.video_size, 3)
            assert np.abs(clip - reference).mean() < 12.0
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == cfg.video_frames


def test_mpeg4_fallback_decodes(tmp_path: Path) -> None:
    frames = render_video(np.random.default_rng(5), 6, (32, 64), 2).frames
    path = tmp_path / "clip.mp4"
    assert write_mp4(path, frames, codec="mpeg4") == "mpeg4"
    clip = decord.VideoReader(io.BytesIO(path.read_bytes())).get_batch(list(range(6))).asnumpy()
    assert clip.shape == frames.shape and np.abs(clip.astype(float) - frames).mean() < 12.0


# ---------------------------------------------------------------- determinism and bad input


def same_tree(again: Path, first: Path) -> None:
    """Every file byte-identical, .mp4 included (x264 runs on its C paths: see writers.py)."""
    assert tree_hashes(again) == tree_hashes(first)


def test_same_seed_same_bytes_and_stale_files_go(
    generated: tuple[SynthConfig, dict[str, Path], Path], tmp_path: Path
) -> None:
    cfg, _, first = generated
    again = tmp_path / "again"
    generate(again, cfg)
    same_tree(again, first)
    (again / "images" / "stale.jpg").write_bytes(b"old")
    generate(again, cfg)
    same_tree(again, first)


def test_other_seed_differs_and_items_do_not_depend_on_count(tmp_path: Path) -> None:
    only_images = dict(videos=0, davis_sequences=0, vip_sequences=0, jhmdb_sequences=0)
    a = tree_hashes(generate(tmp_path / "a", tiny(3, images=2, **only_images))["images"])
    b = tree_hashes(generate(tmp_path / "b", tiny(3, images=3, **only_images))["images"])
    c = tree_hashes(generate(tmp_path / "c", tiny(4, images=2, **only_images))["images"])
    assert a == {k: b[k] for k in a}  # item i is the same however many are generated
    assert all(a[k] != c[k] for k in a)


def test_odd_video_size_is_rejected_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.synth\.video_size: expected even") as err:
        generate(tmp_path / "x", tiny(video_size=(33, 64)))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x").exists()
