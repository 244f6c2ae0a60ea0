"""Video and image decoding behind one interface (decord first, PyAV as the fallback).

Both papers decode frames with library readers (CRW: torchvision ``VideoClips`` on PyAV;
STT: cv2 on JPEG frame folders, docs/methods.md 1.2 and 2.2). Here every reader returns the same
thing: ``(T, H, W, 3)`` uint8 RGB for the requested frame indices, so clip sampling does not
care whether the video came from a path, from bytes inside a shard, from decord or from PyAV.

decord and av are imported lazily: importing ``stcorr.data`` must not pay for them.
"""

from __future__ import annotations

import bisect
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BACKENDS = ("decord", "pyav")


class VideoDecodeError(ValueError):
    """A video that cannot be decoded (corrupt, truncated, empty); the message names the source."""


@dataclass(frozen=True)
class VideoInfo:
    """Container facts of one video stream."""

    frames: int
    fps: float
    height: int
    width: int


class VideoSource(Protocol):
    """An opened video: random access to frames by index."""

    @property
    def num_frames(self) -> int:
        """Number of frames, known without decoding any."""
        ...

    @property
    def info(self) -> VideoInfo:
        """Frames, fps and frame size (may decode one frame to learn the size)."""
        ...

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices``; returns ``(T, H, W, 3)`` uint8 RGB."""
        ...


def available_backends() -> list[str]:
    """Names of the backends whose library imports here, in ``auto`` preference order."""
    names = []
    for backend, module in (("decord", "decord"), ("pyav", "av")):
        try:
            __import__(module)
        except ImportError:
            continue
        names.append(backend)
    return names


def open_video(
    source: str | Path | bytes,
    *,
    backend: str = "auto",
    name: str | None = None,
    threads: int = 0,
) -> VideoSource:
    """Open a video file or in-memory encoded video for frame-indexed decoding.

    Args:
        source: a path, or the encoded file's bytes (e.g. the ``mp4`` entry of a shard sample).
        backend: ``"decord"``, ``"pyav"`` or ``"auto"``: decord if importable, with PyAV
            retried where decord fails (it cannot copy out frames narrower than 80 pixels).
        name: what error messages call the source; defaults to the path, or ``<bytes>``.
        threads: decoder threads (0 = the library's default); 1 suits DataLoader workers.

    Returns:
        A ``VideoSource``.

    Raises:
        VideoDecodeError: the source cannot be opened as a video or has no frames.
        ValueError: unknown backend, or the requested backend is not installed.
    """
    label = name or (str(source) if isinstance(source, str | Path) else "<bytes>")
    chosen = resolve_backend(backend)
    if isinstance(source, str | Path) and not Path(source).is_file():
        raise VideoDecodeError(f"{label}: no such video file; expected a readable video path")
    if chosen == "pyav":
        return _PyAVSource(source, label, threads)
    if backend == "decord" or "pyav" not in available_backends():
        return _DecordSource(source, label, threads)
    try:
        return _DecordSource(source, label, threads, fallback=True)
    except VideoDecodeError:
        return _PyAVSource(source, label, threads)  # raises for data that neither can read


def resolve_backend(backend: str) -> str:
    """The backend ``backend`` (``auto`` included) names here.

    Raises:
        ValueError: unknown backend, or its library is not installed.
    """
    if backend not in (*BACKENDS, "auto"):
        choices = ", ".join(BACKENDS)
        raise ValueError(f"backend={backend!r}: unknown; expected auto or one of {choices}")
    available = available_backends()
    if backend == "auto":
        if not available:
            raise ValueError("backend='auto': neither decord nor av is installed")
        return available[0]
    if backend not in available:
        raise ValueError(f"backend={backend!r}: its library is not installed here")
    return backend


def _check_indices(indices: Sequence[int], frames: int, label: str) -> list[int]:
    wanted = [int(i) for i in indices]
    if not wanted:
        raise IndexError(f"{label}: no frame indices requested")
    bad = [i for i in wanted if i < 0 or i >= frames]
    if bad:
        raise IndexError(f"{label}: frame indices {bad} out of range; video has {frames} frames")
    return wanted


class _DecordSource:
    """decord ``VideoReader`` on a path or on ``io.BytesIO`` (docs/stack.md 5.1: both work)."""

    def __init__(self, source: str | Path | bytes, label: str, threads: int,
                 fallback: bool = False) -> None:
        import decord

        from stcorr.data.native_stderr import held_native_stderr

        decord.logging.set_level(decord.logging.QUIET)  # FFmpeg's log: our errors say it in one line
        self._label = label
        self._retry = (source, threads) if fallback else None
        target: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        try:
            with held_native_stderr():  # decord's own "ERROR opening" log line
                self._reader = decord.VideoReader(target, ctx=decord.cpu(0), num_threads=threads)
                self._frames = len(self._reader)
        except Exception as err:  # decord raises DECORDError, RuntimeError or AssertionError
            raise VideoDecodeError(f"{label}: cannot open video (corrupt, truncated or empty?); "
                                   f"decord said: {_first_line(err)}") from err

    @property
    def num_frames(self) -> int:
        return self._frames

    @cached_property
    def info(self) -> VideoInfo:
        # decord exposes no frame size without decoding, so decode frame 0 once.
        first = self.get_frames([0])
        fps = float(self._reader.get_avg_fps())
        return VideoInfo(self._frames, fps, int(first.shape[1]), int(first.shape[2]))

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        wanted = _check_indices(indices, self._frames, self._label)
        try:
            batch = self._reader.get_batch(wanted)
        except Exception as err:
            if self._retry is not None:  # e.g. decord's size check on narrow frames
                return _PyAVSource(self._retry[0], self._label, self._retry[1]).get_frames(wanted)
            raise VideoDecodeError(f"{self._label}: cannot decode frames {wanted} "
                                   f"(truncated?); decord said: {_first_line(err)}") from err
        # Another module may have called decord.bridge.set_bridge("torch").
        array = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
        return np.ascontiguousarray(array, dtype=np.uint8)  # (T, H, W, 3)


class _PyAVSource:
    """PyAV decoder. Where the stream's packets carry timestamps (MP4, MKV, WebM from any sane
    muxer), frames are found by seeking to the keyframe before them, as decord does; otherwise
    (or where the packet count disagrees with the header) it decodes from frame 0.

    The container stays open for the source's lifetime (opening one costs ~1 ms, about as much
    as decoding two 456x256 frames), as decord's reader does.
    """

    def __init__(self, source: str | Path | bytes, label: str, threads: int) -> None:
        self._source = source
        self._label = label
        self._threads = threads
        try:
            self._container = self._open()
            stream = self._configured(self._container)
            frames = int(stream.frames) or _count_frames(self._container)
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            self._info = VideoInfo(frames, float(rate), int(stream.codec_context.height),
                                   int(stream.codec_context.width))
        except Exception as err:  # av.error.FFmpegError, IndexError (no video stream), ...
            raise VideoDecodeError(f"{label}: cannot open video (corrupt, truncated or empty?); "
                                   f"pyav said: {_first_line(err)}") from err
        if self._info.frames <= 0:
            raise VideoDecodeError(f"{label}: video has 0 frames; expected at least one")

    def _open(self) -> Any:
        import av

        target: Any = io.BytesIO(self._source) if isinstance(self._source, bytes) else str(
            self._source)
        return av.open(target, mode="r")

    @property
    def num_frames(self) -> int:
        return self._info.frames

    @property
    def info(self) -> VideoInfo:
        return self._info

    @cached_property
    def _index(self) -> _PtsIndex | None:
        """Timestamps of the frames in display order, by demuxing (no decoding); None where
        seeking by them cannot be trusted."""
        try:
            stream = self._container.streams.video[0]
            packets = [(p.pts, p.is_keyframe) for p in self._container.demux(stream) if p.size > 0]
        except Exception:
            return None  # get_frames' sequential decode reports the error
        stamps = [pts for pts, _ in packets]
        if (len(packets) != self._info.frames or None in stamps
                or len(set(stamps)) != len(stamps)):
            return None
        return _PtsIndex(packets)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        wanted = _check_indices(indices, self._info.frames, self._label)
        try:
            index = self._index
            decoded = (self._decode_sequential(wanted) if index is None
                       else self._decode_seeking(wanted, index))
        except Exception as err:
            raise VideoDecodeError(f"{self._label}: decoding failed (truncated?); "
                                   f"pyav said: {_first_line(err)}") from err
        missing = sorted(set(wanted) - decoded.keys())
        if missing:
            raise VideoDecodeError(f"{self._label}: stream ended before frames {missing}; "
                                   f"header claimed {self._info.frames} frames (truncated?)")
        return np.stack([decoded[i] for i in wanted])  # (T, H, W, 3)

    def _configured(self, container: Any) -> Any:
        """The video stream, its decoder threads set (possible only before it first decodes)."""
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if self._threads:
            stream.codec_context.thread_count = self._threads
        return stream

    def _decode_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        needed = set(wanted)
        decoded: dict[int, np.ndarray] = {}
        with self._open() as container:
            for position, frame in enumerate(container.decode(self._configured(container))):
                if position in needed:
                    decoded[position] = frame.to_ndarray(format="rgb24")
                if position >= max(wanted):
                    break
        return decoded

    def _decode_seeking(self, wanted: list[int], index: _PtsIndex) -> dict[int, np.ndarray]:
        """Seek to the keyframe before the first pending frame, decode forward; seek again
        only where a later keyframe skips at least one frame."""
        pending = sorted(set(wanted))
        decoded: dict[int, np.ndarray] = {}
        container = self._container
        stream = container.streams.video[0]
        while pending:
            start = len(decoded)
            container.seek(index.pts[index.keyframe_before(pending[0])], stream=stream,
                           backward=True)
            for frame in container.decode(stream):
                position = index.position.get(frame.pts)
                if position is None:
                    continue  # a frame before the keyframe (open GOP): not ours
                if position == pending[0]:
                    decoded[pending.pop(0)] = frame.to_ndarray(format="rgb24")
                if not pending or position > pending[0] or (
                        index.keyframe_before(pending[0]) > position + 1):
                    break
            if len(decoded) == start:
                break  # nothing new after a seek: the stream ends early; caller reports
        return decoded


class _PtsIndex:
    """Display-order positions of a stream's frames by timestamp, and its keyframes."""

    def __init__(self, packets: list[tuple[int, bool]]) -> None:
        self.pts = sorted(pts for pts, _ in packets)
        self.position = {pts: i for i, pts in enumerate(self.pts)}
        keys = {pts for pts, key in packets if key}
        self._keyframes = [i for i, pts in enumerate(self.pts) if pts in keys] or [0]

    def keyframe_before(self, position: int) -> int:
        """The last keyframe at or before ``position`` (0 if none is)."""
        return self._keyframes[max(bisect.bisect_right(self._keyframes, position) - 1, 0)]


def _count_frames(container: Any) -> int:
    """Frame count by demuxing (no decoding) for containers whose header has none (webm, mkv)."""
    stream = container.streams.video[0]
    count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0)
    return count


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = re.sub(r"^\[Errno -?\d+\] ", "", text[0]) if text else type(err).__name__  # FFmpeg's code
    return line[:200]


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, WebP, BMP, ...) to ``(H, W, 3)`` uint8 RGB.

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped).

    Raises:
        ValueError: the bytes are not a decodable image; the message names ``name``.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")  # forces the full decode inside the try
    except Exception as err:
        raise ValueError(f"{name}: cannot decode image; expected JPEG/PNG/WebP/BMP bytes "
                         f"({_first_line(err)})") from err
    return np.array(rgb, dtype=np.uint8)  # writable (np.asarray of a PIL image is read-only)
