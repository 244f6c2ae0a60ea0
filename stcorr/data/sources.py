"""What the shard stage can read, and how one input becomes one WebDataset sample.

Sources: ImageNet-style image folders (the still images of STT step 1, Li & Liu, CVPR 2023,
Sec. 3.1), YouTube-VOS/DAVIS JPEG frame folders and video files (the videos of STT step 2 and of
CRW, Jabri et al., NeurIPS 2020). Discovery is recursive and sorted, so the same folder always
yields the same items in the same order, and therefore the same shards.

Sample format (the shard reader reads exactly this):

- ``__key__``: derived from the relative path, ``[A-Za-z0-9_-]`` only (no dots: WebDataset splits
  the tar member name at the first dot), with a short hash that keeps it unique;
- ``json``: ``{"kind": "image"|"video", "source": <relative path>, "height", "width"}``; videos add
  ``"frames"`` and ``"fps"`` (``null`` for frame folders, which carry no frame rate);
- images: the original bytes under ``jpg``/``png``/``webp``/``bmp`` (re-encoded as ``jpg`` only
  when ``image_max_side`` asks for it);
- video files, ``encoded``: the file bytes under ``mp4``/``avi``/``mkv``/``webm``;
- video files, ``transcoded``: H.264 with a keyframe every ``keyint`` frames under ``mp4``, the
  json adding ``"keyint"``;
- frame folders (any mode) and video files in ``frames`` mode: ``f000000.jpg``, ``f000001.jpg``...
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from stcorr.data.decode import VideoSource, decode_image, open_video
from stcorr.data.transcode import output_size, transcode_h264

IMAGE_EXTS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}
VIDEO_EXTS = {".mp4": "mp4", ".avi": "avi", ".mkv": "mkv", ".webm": "webm"}
FRAME_EXTS = (".jpg", ".jpeg")
JPEG_QUALITY = 90  # re-encoded frames: visually lossless, ~4x smaller than PNG
DECODE_CHUNK = 32  # frames decoded at once in 'frames' mode: bounds memory on long videos

ItemKind = Literal["image", "video_file", "frame_folder"]
VideoFormat = Literal["encoded", "transcoded", "frames"]


class BadInput(ValueError):
    """One input that cannot be used (corrupt, truncated, empty); the writer skips and counts it.

    Args:
        path: the offending file or frame folder.
        reason: what is wrong with it, one line.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[BadInput], tuple[str, str]]:
        return (BadInput, (self.path, self.reason))  # keeps both fields across Ray/pickle


@dataclass(frozen=True)
class SourceItem:
    """One input: an image file, a video file or a folder of JPEG frames.

    Attributes:
        path: absolute path of the file or folder.
        name: path relative to the source root, with ``/`` separators (the sample's ``source``).
        kind: ``image``, ``video_file`` or ``frame_folder``.
    """

    path: str
    name: str
    kind: ItemKind


def discover_images(root: str | Path, *, key: str = "data.images") -> list[SourceItem]:
    """Every image under ``root`` (recursive, extensions case-insensitive), sorted by path.

    Raises:
        FileNotFoundError: ``root`` does not exist (the message names ``key``).
        ValueError: ``root`` holds no image.
    """
    base = _check_root(root, key, "an ImageNet-style folder of images")
    items = [SourceItem(str(p), _rel(p, base), "image") for p in _files(base, IMAGE_EXTS)]
    if not items:
        raise ValueError(f"{key}: {base} holds no images; looked for "
                         f"{' '.join(sorted(IMAGE_EXTS))} (any case, recursively)")
    return items


def discover_videos(root: str | Path, *, key: str = "data.videos") -> list[SourceItem]:
    """Video files under ``root`` if there are any, else JPEG frame folders, sorted by path.

    A frame folder is any folder that directly holds ``.jpg`` frames, so both
    ``YouTubeVOS/train/JPEGImages/<vid>/00000.jpg`` and a root that is ``JPEGImages`` itself work.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` holds neither video files nor frame folders.
    """
    base = _check_root(root, key, "a folder of video files or of JPEG frame folders")
    files = [SourceItem(str(p), _rel(p, base), "video_file") for p in _files(base, VIDEO_EXTS)]
    if files:
        return files
    folders = sorted({p.parent for p in _files(base, dict.fromkeys(FRAME_EXTS, ""))})
    items = [SourceItem(str(f), _rel(f, base) if f != base else base.name, "frame_folder")
             for f in folders]
    if not items:
        raise ValueError(f"{key}: {base} holds no videos; looked for video files "
                         f"{' '.join(sorted(VIDEO_EXTS))} and folders of .jpg frames")
    return items


def item_files(item: SourceItem) -> list[tuple[str, Path]]:
    """The files behind an item as ``(relative name, path)``: the file, or a folder's frames."""
    if item.kind != "frame_folder":
        return [(item.name, Path(item.path))]
    return [(f"{item.name}/{p.name}", p) for p in frame_files(Path(item.path))]


def source_fingerprint(items: Iterable[SourceItem]) -> str:
    """sha256 over the sorted ``(relative path, size, mtime_ns)`` of every file behind ``items``."""
    entries = []
    for item in items:
        for name, path in item_files(item):
            stat = path.stat()
            entries.append(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def sample_key(name: str) -> str:
    """A stable WebDataset key for the relative path ``name``: safe characters, no dots, unique."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:96] or "item"
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def frame_files(folder: Path) -> list[Path]:
    """The JPEG frames directly in ``folder``, in natural order (``2.jpg`` before ``10.jpg``)."""
    frames = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTS]
    return sorted(frames, key=lambda p: [int(t) if t.isdigit() else t
                                         for t in re.split(r"(\d+)", p.name)])


def encode_sample(item: SourceItem, *, video_format: VideoFormat = "encoded",
                  max_video_frames: int | None = None, image_max_side: int | None = None,
                  video_keyint: int = 8, video_short_side: int | None = None, video_crf: int = 18
                  ) -> dict[str, str | bytes]:
    """Build the WebDataset sample for ``item`` (format in the module docstring), validating it.

    Images are fully decoded; video files are opened and their first and last frames decoded
    (a truncated file fails either here or when it is opened), not the whole stream, except in
    ``transcoded`` mode (``stcorr.data.transcode``), which decodes every frame it keeps.

    Raises:
        BadInput: the input is corrupt, truncated, empty or unreadable.
    """
    try:
        if item.kind == "image":
            return _image_sample(item, image_max_side)
        if item.kind == "frame_folder":
            return _frame_folder_sample(item, max_video_frames)
        if video_format == "frames":
            return _video_frames_sample(item, max_video_frames)
        if video_format == "transcoded":
            return _video_transcoded_sample(item, max_video_frames, video_keyint, video_short_side,
                                            video_crf)
        return _video_file_sample(item)
    except BadInput:
        raise
    except (ValueError, OSError) as err:  # VideoDecodeError is a ValueError
        raise BadInput(item.path, _reason(err, item.path)) from err


def _image_sample(item: SourceItem, max_side: int | None) -> dict[str, str | bytes]:
    data = Path(item.path).read_bytes()
    image = decode_image(data, item.path)  # (H, W, 3)
    height, width = image.shape[:2]
    ext = IMAGE_EXTS[Path(item.path).suffix.lower()]
    if max_side is not None and max(height, width) > max_side:
        data, (height, width) = _shrink(image, max_side), _fit(height, width, max_side)
        ext = "jpg"
    meta = {"kind": "image", "source": item.name, "height": height, "width": width}
    return {"__key__": sample_key(item.name), "json": _json(meta), ext: data}


def _video_file_sample(item: SourceItem) -> dict[str, str | bytes]:
    data = Path(item.path).read_bytes()
    video = open_video(data, name=item.path)
    info = video.info  # decodes frame 0
    if info.frames > 1:
        video.get_frames([info.frames - 1])  # truncation past the header shows up here
    meta = {"kind": "video", "source": item.name, "frames": info.frames, "fps": info.fps,
            "height": info.height, "width": info.width}
    ext = VIDEO_EXTS[Path(item.path).suffix.lower()]
    return {"__key__": sample_key(item.name), "json": _json(meta), ext: data}


def _video_transcoded_sample(item: SourceItem, max_frames: int | None, keyint: int,
                             short_side: int | None, crf: int) -> dict[str, str | bytes]:
    video = open_video(item.path, name=item.path, threads=1)
    info = video.info
    count = min(info.frames, max_frames or info.frames)
    height, width = output_size(info.height, info.width, short_side)
    data = transcode_h264(_decode_in_chunks(video, count), info.fps, (height, width), keyint, crf)
    meta = {"kind": "video", "source": item.name, "frames": count, "fps": info.fps,
            "height": height, "width": width, "keyint": keyint, "crf": crf}
    return {"__key__": sample_key(item.name), "json": _json(meta), "mp4": data}


def _video_frames_sample(item: SourceItem, max_frames: int | None) -> dict[str, str | bytes]:
    video = open_video(item.path, name=item.path)
    info = video.info
    count = min(info.frames, max_frames or info.frames)
    sample: dict[str, str | bytes] = {"__key__": sample_key(item.name)}
    for index, frame in enumerate(_decode_in_chunks(video, count)):
        sample[f"f{index:06d}.jpg"] = _jpeg(frame)
    meta = {"kind": "video", "source": item.name, "frames": count, "fps": info.fps,
            "height": info.height, "width": info.width}
    sample["json"] = _json(meta)
    return sample


def _frame_folder_sample(item: SourceItem, max_frames: int | None) -> dict[str, str | bytes]:
    frames = frame_files(Path(item.path))[:max_frames]
    if not frames:
        raise BadInput(item.path, "frame folder holds no .jpg frames")
    datas = [path.read_bytes() for path in frames]
    for path, data in zip(frames, datas, strict=True):
        if not data.startswith(b"\xff\xd8"):  # cheap check on every frame: the JPEG SOI marker
            raise BadInput(str(path), "not a JPEG frame (no SOI marker); expected a .jpg frame")
    # Full decode of the first and last frames only: a whole YouTube-VOS folder would cost ~1 s.
    first = decode_image(datas[0], str(frames[0]))  # (H, W, 3)
    decode_image(datas[-1], str(frames[-1]))
    sample: dict[str, str | bytes] = {"__key__": sample_key(item.name)}
    sample.update({f"f{index:06d}.jpg": data for index, data in enumerate(datas)})
    meta = {"kind": "video", "source": item.name, "frames": len(frames), "fps": None,
            "height": int(first.shape[0]), "width": int(first.shape[1])}
    sample["json"] = _json(meta)
    return sample


def _decode_in_chunks(video: VideoSource, count: int) -> Iterator[np.ndarray]:
    for start in range(0, count, DECODE_CHUNK):
        indices = list(range(start, min(start + DECODE_CHUNK, count)))
        yield from video.get_frames(indices)  # (T, H, W, 3), one frame at a time


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _fit(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _shrink(image: np.ndarray, max_side: int) -> bytes:
    from PIL import Image

    height, width = _fit(image.shape[0], image.shape[1], max_side)
    small = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
    return _jpeg(np.asarray(small))


def _json(meta: dict[str, object]) -> bytes:
    return json.dumps(meta, sort_keys=True).encode()


def _reason(err: BaseException, path: str) -> str:
    text = (str(err).splitlines() or [type(err).__name__])[0]
    return text.removeprefix(f"{path}: ") or type(err).__name__


def _check_root(root: str | Path, key: str, expected: str) -> Path:
    base = Path(root).expanduser().resolve()
    if not base.exists():
        raise FileNotFoundError(f"{key}: {root} not found; expected {expected}")
    if not base.is_dir():
        raise NotADirectoryError(f"{key}: {root} is a file; expected {expected}")
    return base


def _files(base: Path, exts: dict[str, str]) -> list[Path]:
    found: list[Path] = []
    for folder, subdirs, names in os.walk(base, followlinks=True):
        subdirs.sort()
        found.extend(Path(folder, n) for n in names
                     if Path(n).suffix.lower() in exts and not n.startswith("."))
    return sorted(found)


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()
