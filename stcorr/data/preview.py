"""A contact sheet of the first samples of a shard set: what a person checks before training."""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from typing import Any

import numpy as np
from PIL import Image

from stcorr.data.decode import decode_image, open_video
from stcorr.runtime import Storage

VIDEO_EXTS = ("mp4", "avi", "mkv", "webm")
IMAGE_EXTS = ("jpg", "png", "webp", "bmp")


def sample_grid(manifest: dict[str, Any], storage: Storage, *, count: int = 16, tile: int = 96) -> bytes:
    """PNG bytes of a grid of the first ``count`` samples (videos: first, middle and last frame).

    Args:
        manifest: a shard manifest (``shards[i]["url"]``).
        storage: where the shards live.
        count: samples to show.
        tile: side of one thumbnail in pixels.
    """
    thumbs: list[np.ndarray] = []
    for record in manifest.get("shards", []):
        for sample in _samples(storage.read_bytes(record["url"])):
            thumbs.append(_thumbnail(sample, tile))
            if len(thumbs) >= count:
                return _to_png(_tile(thumbs, tile))
    if not thumbs:
        raise ValueError("manifest lists no readable samples; nothing to preview")
    return _to_png(_tile(thumbs, tile))


def _samples(tar_bytes: bytes) -> list[dict[str, bytes]]:
    grouped: dict[str, dict[str, bytes]] = defaultdict(dict)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if handle is None:
                continue
            key, _, ext = member.name.partition(".")
            grouped[key][ext] = handle.read()
    return list(grouped.values())


def _thumbnail(sample: dict[str, bytes], tile: int) -> np.ndarray:
    meta = json.loads(sample.get("json", b"{}"))
    name = str(meta.get("source", "sample"))
    video = next((sample[e] for e in VIDEO_EXTS if e in sample), None)
    if video is not None:
        source = open_video(video, name=name)
        n = source.info.frames
        frames = list(source.get_frames(sorted({0, n // 2, n - 1})))
    else:
        frame_keys = sorted(k for k in sample if k.startswith("f") and k.endswith(".jpg"))
        if frame_keys:
            picks = sorted({frame_keys[0], frame_keys[len(frame_keys) // 2], frame_keys[-1]})
            frames = [decode_image(sample[k], name) for k in picks]
        else:
            image = next(sample[e] for e in IMAGE_EXTS if e in sample)
            frames = [decode_image(image, name)]
    strip = np.concatenate(
        [_fit(f, tile // len(frames) if len(frames) > 1 else tile, tile) for f in frames], 1
    )
    return _fit(strip, tile, tile)


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((max(width, 1), height), Image.Resampling.BILINEAR))


def _tile(thumbs: list[np.ndarray], tile: int) -> np.ndarray:
    cols = int(np.ceil(np.sqrt(len(thumbs))))
    rows = int(np.ceil(len(thumbs) / cols))
    grid = np.full((rows * (tile + 2), cols * (tile + 2), 3), 255, np.uint8)
    for i, thumb in enumerate(thumbs):
        r, c = divmod(i, cols)
        grid[r * (tile + 2) : r * (tile + 2) + tile, c * (tile + 2) : c * (tile + 2) + tile] = thumb[
            :tile, :tile
        ]
    return grid


def _to_png(grid: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    return buffer.getvalue()
