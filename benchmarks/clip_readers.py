"""The contenders of benchmarks/data_throughput.py: how each one reads the same clips.

(a) ``run_shards``: stcorr's reader on the shards (local paths, or ``s3://`` URLs through its
own code path); (b) ``run_frame_folders``: one JPEG per frame through PIL (local files, or one
boto3 GET each), then the same crop/resize/batching as (a); (c) ``run_bare_decode``: decord on
the shards' mp4 bytes, nothing else. ``serve_s3`` puts the same data on a real S3 API server
on loopback for the object-storage setting. The contract is data_throughput.py's docstring.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import decord
import numpy as np
import torch
import webdataset as wds
from clip_data import Sizes  # benchmarks/ is on the path
from PIL import Image

from stcorr.data.augment import ClipSpec, collate_clips, finish_clips, resize_crop_uint8
from stcorr.data.reader import make_clip_dataset, make_loader

BUCKET = "stcorr-bench"
Plan = list[tuple[str, list[int], list[int]]]  # key, frame indices, (top, left, h, w, flip)


def run_shards(root: Path, spec: ClipSpec, batch: int, passes: int, worker_only: bool = False,
               mode: str = "transcoded", decoder: str = "decord",
               s3: str | None = None) -> list[dict[str, Any]]:
    """(a): the real reader, one worker's view (num_workers=0), same seed every pass.

    ``worker_only``: stop at the uint8 batches a DataLoader worker hands over, before the
    float conversion that ``make_loader`` does in the consuming process (on the GPU if given).
    ``mode``: which shard set (``transcoded`` or ``encoded``). ``decoder``: the reader's.
    ``s3``: read the same shards as ``s3://BUCKET/<mode>/...`` from this S3 endpoint.
    """
    urls = sorted(str(p) for p in (root / mode).glob("videos-*.tar"))
    if s3 is not None:
        urls = [f"s3://{BUCKET}/{mode}/{Path(url).name}" for url in urls]
    dataset = make_clip_dataset(urls, rank=0, world_size=1, clip=spec, seed=0, shuffle_buffer=1,
                                decoder=decoder, s3_endpoint_url=s3)
    if worker_only:
        return [b for _ in range(passes) for b in dataset.batched(batch, finish=False)]
    loader = make_loader(dataset, batch_size=batch, num_workers=0)
    return [b for _ in range(passes) for b in loader]


def scale_box(crop: list[int], shard_hw: tuple[int, int],
              folder_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(a)'s crop box (top, left, h, w in the shard's frames) as the same region of the frame
    folder's frames, which may be larger (hd720)."""
    (sh, sw), (fh, fw) = shard_hw, folder_hw
    top, left = round(crop[0] * fh / sh), round(crop[1] * fw / sw)
    return top, left, min(round(crop[2] * fh / sh), fh - top), min(round(crop[3] * fw / sw), fw - left)


def run_frame_folders(root: Path, plan: Plan, sizes: Sizes, spec: ClipSpec, batch: int,
                      passes: int, s3: str | None = None) -> list[torch.Tensor]:
    """(b): PIL, one file per frame, then the same crop/resize and float batching as (a).

    ``s3``: GET each frame ``s3://BUCKET/frames/<key>/<i>.jpg`` from this S3 endpoint instead,
    one request per frame through one boto3 client (made here, as a reading process makes one).
    """
    if s3 is None:
        return _frame_folders(lambda key, i: root / "frames" / key / f"{i:05d}.jpg", plan, sizes,
                              spec, batch, passes)
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=s3)

    def get(key: str, i: int) -> io.BytesIO:
        obj = client.get_object(Bucket=BUCKET, Key=f"frames/{key}/{i:05d}.jpg")
        return io.BytesIO(obj["Body"].read())

    return _frame_folders(get, plan, sizes, spec, batch, passes)


def _frame_folders(source: Callable[[str, int], Any], plan: Plan, sizes: Sizes, spec: ClipSpec,
                   batch: int, passes: int) -> list[torch.Tensor]:
    """(b)'s loop; ``source(key, i)`` is what PIL opens for frame ``i`` of video ``key``."""
    out, rng = [], np.random.default_rng(0)
    for _ in range(passes):
        for start in range(0, len(plan), batch):
            items = []
            for key, indices, crop in plan[start : start + batch]:
                frames = np.stack([np.asarray(Image.open(source(key, i)).convert("RGB"))
                                   for i in indices])
                box = scale_box(crop, sizes[key], frames.shape[1:3])
                clip = resize_crop_uint8(frames, box, spec.crop_size, bool(crop[4]))
                items.append({"rgb": clip, "key": key, "frame_index": indices, "crop": crop})
            out.append(finish_clips(spec, collate_clips(items), rng)["rgb"])  # (B, T, 3, S, S)
    return out


def run_bare_decode(blobs: dict[str, bytes], plan: Plan, passes: int) -> int:
    """(c): decord ``VideoReader`` on the in-memory mp4 + ``get_batch`` of the plan's frames
    (copied out to numpy); nothing else: no tar, no checks, no crop, no batching."""
    frames = 0
    for _ in range(passes):
        for key, indices, _ in plan:
            reader = decord.VideoReader(io.BytesIO(blobs[key]), ctx=decord.cpu(0), num_threads=1)
            frames += len(reader.get_batch(indices).asnumpy())
    return frames


def shard_videos(root: Path, mode: str = "transcoded") -> dict[str, bytes]:
    """Key -> the mp4 bytes held by the ``mode`` shards (what (a) decodes, for (c))."""
    blobs = {}
    for url in sorted((root / mode).glob("videos-*.tar")):
        for sample in wds.WebDataset(str(url), shardshuffle=False, empty_check=False):
            blobs[sample["__key__"]] = sample["mp4"]
    return blobs


def serve_s3(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto_server on 127.0.0.1 (tests/s3server.py) and upload the transcoded shards and
    the frame folders of ``root`` to ``s3://BUCKET/`` through ``stcorr.runtime.storage``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3server import AWS_ENV, start_moto

    from stcorr.runtime import Storage

    os.environ.update(AWS_ENV)  # moto takes any credentials; boto3 must find some
    server, url = start_moto()
    store = Storage(endpoint_url=url)
    store._client_for(f"s3://{BUCKET}").create_bucket(Bucket=BUCKET)
    for path in sorted((root / "transcoded").glob("videos-*.tar")):
        store.write_file(f"s3://{BUCKET}/transcoded/{path.name}", path)
    for path in sorted((root / "frames").rglob("*.jpg")):
        store.write_bytes(f"s3://{BUCKET}/{path.relative_to(root).as_posix()}", path.read_bytes())
    return server, url


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (the S3 server), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
