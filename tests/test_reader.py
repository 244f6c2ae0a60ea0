"""Streaming shard reader: rank/worker splits, resampled epochs, clip augmentation, Lab, MoCo views.

Shards are written here with ``webdataset.TarWriter`` in the sample format of the shard writer.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from skimage.color import rgb2lab

from stcorr.data.augment import ClipSpec, clip_indices, crop_box, drop_ab_channel
from stcorr.data.reader import make_clip_dataset, make_image_dataset, make_loader

SMALL = ClipSpec(frames=3, frame_gap=2, crop_size=24, scale=(0.3, 1.0), ratio=(0.75, 1.33),
                 lab=True)


def _texture(seed: int, h: int = 40, w: int = 64) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def _mp4(frames: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def _moving(seed: int, n: int = 10) -> list[np.ndarray]:
    base = _texture(seed, 40, 112)
    return [base[:, 4 * t : 4 * t + 64].copy() for t in range(n)]


def _jpg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _video_sample(key: str, frames: list[np.ndarray], as_folder: bool = False) -> dict:
    meta = {"kind": "video", "source": f"{key}.mp4", "frames": len(frames), "fps": 8.0,
            "height": frames[0].shape[0], "width": frames[0].shape[1]}
    sample: dict = {"__key__": key, "json": json.dumps(meta).encode()}
    if as_folder:
        sample.update({f"f{i:06d}.jpg": _jpg(f) for i, f in enumerate(frames)})
    else:
        sample["mp4"] = _mp4(frames)
    return sample


def _write(path: Path, samples: list[dict]) -> str:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return str(path)


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """3 video shards holding 4, 1 and 2 samples (mp4 and frame folders mixed)."""
    root = tmp_path_factory.mktemp("uneven")
    urls, keys = [], []
    for s, count in enumerate([4, 1, 2]):
        samples = [_video_sample(f"s{s}v{i}", _moving(10 * s + i), as_folder=(i == 1))
                   for i in range(count)]
        keys += [sample["__key__"] for sample in samples]
        urls.append(_write(root / f"videos-{s:06d}.tar", samples))
    return urls, keys


def _keys(batches: Iterator[dict]) -> list[str]:
    return [key for batch in batches for key in batch["key"]]


def test_rank_and_worker_splits_are_disjoint_and_complete(
    uneven_shards: tuple[list[str], list[str]],
) -> None:
    urls, keys = uneven_shards  # 3 shards < 2 ranks x 2 workers: one worker gets none
    seen = []
    for rank in range(2):
        ds = make_clip_dataset(urls[::-1], rank=rank, world_size=2, clip=SMALL, seed=3,
                               shuffle_buffer=4)
        seen += _keys(make_loader(ds, batch_size=3, num_workers=2))
    assert sorted(seen) == sorted(keys)  # every sample once: complete and disjoint


def test_resampled_ranks_get_equal_full_batches(
    uneven_shards: tuple[list[str], list[str]],
) -> None:
    counts = []
    for rank in range(2):
        ds = make_clip_dataset(urls := uneven_shards[0], rank=rank, world_size=2, clip=SMALL,
                               seed=0, resampled=True, samples_per_rank=7)
        loader = make_loader(ds, batch_size=2, num_workers=2 if rank == 0 else 0)
        batches = list(loader)
        assert all(b["rgb"].shape == (2, 3, 3, 24, 24) for b in batches)
        counts.append(len(batches))
    assert counts == [3, 3] == [len(loader)] * 2 and len(urls) == 3
    with pytest.raises(ValueError, match="samples_per_rank"):
        make_clip_dataset(urls, rank=0, world_size=1, clip=SMALL, seed=0, resampled=True)


def test_clip_shapes_ranges_and_lab_against_skimage(
    uneven_shards: tuple[list[str], list[str]],
) -> None:
    ds = make_clip_dataset(uneven_shards[0], rank=0, world_size=1, clip=SMALL, seed=1)
    batch = next(iter(make_loader(ds, batch_size=4, num_workers=0)))
    rgb, lab = batch["rgb"], batch["lab"]
    assert rgb.shape == lab.shape == (4, 3, 3, 24, 24) and rgb.dtype == torch.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert (rgb[:, 0] - rgb[:, 2]).abs().mean() > 0.01  # moving content: frames differ
    assert torch.all(batch["frame_index"].diff(dim=1) == 2)  # (B, T), frame_gap 2
    top, left, h, w, flip = batch["crop"].T  # (5, B)
    assert torch.all((top + h <= 40) & (left + w <= 64) & (flip <= 1) & (h * w >= 0.3 * 40 * 64 - 64))
    # Second opinion: skimage's rgb2lab, then STT's (Lab - (50, 0, 0)) / (50, 127, 127).
    ref = rgb2lab(rgb.permute(0, 1, 3, 4, 2).double().numpy())  # (B, T, S, S, 3)
    ref = (ref - np.array([50.0, 0.0, 0.0])) / np.array([50.0, 127.0, 127.0])
    np.testing.assert_allclose(lab.permute(0, 1, 3, 4, 2).numpy(), ref, atol=2e-3)
    white = make_lab_of(torch.ones(1, 3, 1, 1))
    np.testing.assert_allclose(white.flatten().numpy(), [1.0, 0.0, 0.0], atol=1e-4)


def test_same_seed_same_clips_and_set_epoch_reseeds(
    uneven_shards: tuple[list[str], list[str]],
) -> None:
    def first_batch(seed: int, epoch: int) -> dict:
        ds = make_clip_dataset(uneven_shards[0], rank=0, world_size=1, clip=SMALL, seed=seed)
        loader = make_loader(ds, batch_size=7, num_workers=0, device="cpu")
        loader.set_epoch(epoch)
        return next(iter(loader))

    a, b, c = first_batch(4, 0), first_batch(4, 0), first_batch(4, 1)
    assert a["key"] == b["key"] and torch.equal(a["rgb"], b["rgb"])
    assert a["key"] != c["key"] or not torch.equal(a["crop"], c["crop"])


def make_lab_of(rgb: torch.Tensor) -> torch.Tensor:
    from stcorr.data.lab import normalize_lab, rgb_to_lab

    return normalize_lab(rgb_to_lab(rgb))


@pytest.mark.parametrize("as_folder", [False, True])
def test_static_video_gives_identical_frames_shared_crop(tmp_path: Path, as_folder: bool) -> None:
    still = _texture(7)  # textured, so two different crops (or flips) would not match
    url = _write(tmp_path / "static.tar", [_video_sample(f"still{i}", [still] * 8, as_folder)
                                           for i in range(6)])
    spec = ClipSpec(frames=4, frame_gap=2, crop_size=32, scale=(0.2, 0.5), ratio=(0.5, 2.0),
                    lab=False)
    ds = make_clip_dataset([url], rank=0, world_size=1, clip=spec, seed=5)
    clips = [item["rgb"] for item in ds]  # unbatched: (T, 3, S, S)
    assert len(clips) == 6 and clips[0].shape == (4, 3, 32, 32)
    for clip in clips:
        assert (clip - clip[0]).abs().max() < 2 / 255  # one crop and one flip for all T
    assert max((c - clips[0]).abs().mean() for c in clips[1:]) > 0.02  # crops differ per clip


def test_corrupt_video_in_shard_is_skipped_with_warning(tmp_path: Path) -> None:
    good = _video_sample("good", _moving(1))
    bad = _video_sample("broken", _moving(2))
    bad["mp4"] = bad["mp4"][: len(bad["mp4"]) // 2]
    image = {"__key__": "stray", "json": b"{}", "png": b"\x89PNG"}
    url = _write(tmp_path / "mixed.tar", [bad, good, image])
    ds = make_clip_dataset([url], rank=0, world_size=1, clip=SMALL, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = _keys(make_loader(ds, batch_size=2, num_workers=0))
    assert keys == ["good"]
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"^skipped unreadable sample .*mixed.tar:broken: .*mixed.tar:broken.mp4: "
                         r"cannot open video", m) for m in messages), messages
    assert any(re.search(r"mixed.tar:stray: expected a video sample", m) for m in messages)


def test_resampled_stream_gives_up_on_a_broken_setup(tmp_path: Path) -> None:
    missing = str(tmp_path / "videos-000000.tar")  # e.g. a wrong URL: every read fails
    ds = make_clip_dataset([missing], rank=0, world_size=1, clip=SMALL, seed=0,
                           resampled=True, samples_per_rank=4)
    with warnings.catch_warnings(record=True), pytest.raises(RuntimeError,
                                                             match="50 reads in a row failed"):
        list(make_loader(ds, batch_size=2, num_workers=0))


def test_drop_ab_channel_zeroes_one_of_a_b_and_scales_by_1_5() -> None:
    lab = torch.randn(2, 3, 5, 6)
    chosen = set()
    for seed in range(12):
        out, ch = drop_ab_channel(lab, np.random.default_rng(seed))
        chosen.add(ch)
        assert ch in (1, 2)
        assert torch.all(out[:, ch] == 0)
        for keep in {0, 1, 2} - {ch}:
            torch.testing.assert_close(out[:, keep], 1.5 * lab[:, keep])
    assert chosen == {1, 2}
    assert lab.abs().min() > 0  # input untouched


def test_reader_channel_dropout_matches_its_channel(
    uneven_shards: tuple[list[str], list[str]],
) -> None:
    spec = ClipSpec(frames=2, crop_size=16, ratio=(0.75, 1.33), channel_dropout=True)
    ds = make_clip_dataset(uneven_shards[0], rank=0, world_size=1, clip=spec, seed=2)
    batch = next(iter(make_loader(ds, batch_size=7, num_workers=1, device="cpu")))
    assert batch["rgb"].is_contiguous() and batch["rgb"].dtype == torch.float32
    for lab, dropped, ch in zip(batch["lab"], batch["lab_dropped"], batch["drop_channel"],
                                strict=True):
        assert torch.all(dropped[:, ch] == 0)
        torch.testing.assert_close(dropped[:, 0], 1.5 * lab[:, 0])
    assert set(batch["drop_channel"].tolist()) == {1, 2}


def test_clip_indices_and_crop_box_follow_their_ranges() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = clip_indices(20, 4, 3, rng)
        assert np.all(np.diff(idx) == 3) and idx[0] >= 0 and idx[-1] < 20
        top, left, h, w = crop_box(120, 200, (0.6, 1.0), (1.5, 2.0), rng)
        assert 0.6 * 24000 - 400 <= h * w <= 24000 and 1.4 <= w / h <= 2.1
        assert 0 <= top <= 120 - h and 0 <= left <= 200 - w
    assert clip_indices(5, 3, 4, rng) in ([0, 2, 4],)  # gap shrinks to fit: 2
    assert clip_indices(2, 4, 1, rng) == [0, 1, 1, 1]  # too short: last frame repeats


def test_two_views_differ_and_are_normalised(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    samples = []
    for i, ext in enumerate(["jpg", "png", "webp", "bmp"]):
        image = Image.fromarray(_texture(i, 48, 64))
        image = image.convert("L") if ext == "png" else image  # a grayscale one too
        buf = io.BytesIO()
        image.save(buf, {"jpg": "JPEG"}.get(ext, ext.upper()))
        samples.append({"__key__": f"img{i}", "json": b'{"kind": "image"}', ext: buf.getvalue()})
    url = _write(tmp_path / "images-000000.tar", samples)
    ds = make_image_dataset([url], rank=0, world_size=1, size=32, seed=int(rng.integers(9)))
    batch = next(iter(make_loader(ds, batch_size=4, num_workers=0)))
    q, k = batch["q"], batch["k"]
    assert q.shape == k.shape == (4, 3, 32, 32) and sorted(batch["key"]) == [
        "img0", "img1", "img2", "img3"]
    assert torch.all((q - k).flatten(1).abs().mean(1) > 0.05)  # two different views per image
    assert q.min() < -0.5 and q.max() > 0.5 and torch.isfinite(q).all()  # ImageNet-normalised


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_reads_shards_from_s3_api_server(
    uneven_shards: tuple[list[str], list[str]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                               "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STCORR_S3_ENDPOINT_URL", endpoint)
        client = boto3.client("s3", endpoint_url=endpoint)
        for _ in range(100):
            try:
                client.create_bucket(Bucket="wds")
                break
            except Exception:
                time.sleep(0.1)
        urls, keys = uneven_shards
        for url in urls:
            client.upload_file(url, "wds", f"train/{os.path.basename(url)}")
        s3_urls = [f"s3://wds/train/{os.path.basename(url)}" for url in urls]
        ds = make_clip_dataset(s3_urls, rank=0, world_size=1, clip=SMALL, seed=0)
        assert sorted(_keys(make_loader(ds, batch_size=4, num_workers=2))) == sorted(keys)
    finally:
        server.terminate()
        server.wait(timeout=10)
