"""Track objects through your own video: propagate a first-frame mask, write masks and an overlay.

The DAVIS protocol (label propagation, CRW, Jabri et al., NeurIPS 2020, Sec. 3.4; STT, Li & Liu,
CVPR 2023, Sec. 4.1) applied to any video file: frames decoded with decord (PyAV fallback),
features of the chosen model, the first-frame mask propagated with the ``evaluate`` settings,
one palette PNG per frame and an overlay video (MP4 via PyAV, or an animated GIF when no MP4
encoder works). Frames are decoded twice, in chunks, so memory holds features, not pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from stcorr.config import EvaluateConfig
from stcorr.data.decode import VideoSource, open_video
from stcorr.eval import visualize as vis
from stcorr.eval.features import FeatureExtractor, ModelSpec
from stcorr.eval.labels import first_frame_labels, labels_to_index, read_annotation, write_palette_png
from stcorr.eval.protocols import apply_protocol
from stcorr.eval.readers import VOID
from stcorr.eval.sequence import propagate_labels

CHUNK = 16  # frames decoded at once
Progress = Callable[[str, int, int], None]  # (phase, frames done, frames total)


@dataclass(frozen=True)
class TrackResult:
    """Where ``track_video`` wrote its outputs."""

    masks: list[Path]
    overlay: Path
    frames: int


def first_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """The first-frame mask as ids (void 255 -> background), checked against the frame size.

    Raises:
        ValueError: unreadable mask, a size other than ``size = (H, W)``, or no object.
    """
    ids = read_annotation(path)
    if ids.shape != size:
        raise ValueError(f"{path}: mask is {ids.shape[1]}x{ids.shape[0]} but the video frames "
                         f"are {size[1]}x{size[0]}; expected the same size")
    ids = np.where(ids == VOID, 0, ids)
    if not ids.any():
        raise ValueError(f"{path}: first-frame mask has no object; expected at least one "
                         f"non-zero id to propagate")
    return ids


def _chunks(source: VideoSource, frames: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, frames, CHUNK):
        yield start, source.get_frames(range(start, min(frames, start + CHUNK)))


def _features(source: VideoSource, frames: int, extractor: FeatureExtractor,
              progress: Progress | None) -> torch.Tensor:
    """``(T, C, h, w)`` features of the first ``frames`` frames, decoded chunk by chunk."""
    parts = []
    for start, chunk in _chunks(source, frames):
        parts.append(extractor(chunk))
        if progress:
            progress("features", start + len(chunk), frames)
    return torch.cat(parts)


class OverlayWriter:
    """Stream overlay frames into an MP4 (PyAV); fall back to a GIF if encoding fails.

    Thumbnails (<= ``vis.GIF_HEIGHT`` pixels high) are kept so that a failure at any frame
    still yields a GIF of the whole video.
    """

    def __init__(self, stem: Path, fps: float) -> None:
        self.stem, self.fps = stem, fps
        self.thumbs: list[np.ndarray] = []
        self.mode: Literal["new", "mp4", "gif"] = "new"
        self._container: Any = None
        self._stream: Any = None

    def add(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 frame."""
        step = max(1, round(frame.shape[0] / vis.GIF_HEIGHT))
        self.thumbs.append(frame[::step, ::step])
        h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2  # yuv420p needs even sides
        if self.mode == "new":
            self._open(w, h)
        if self.mode == "mp4":
            try:
                import av

                data = np.ascontiguousarray(frame[:h, :w])
                self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(data, format="rgb24")))
            except Exception:  # any encoder failure: finish as a GIF instead
                self._abort()

    def _open(self, width: int, height: int) -> None:
        try:
            import av

            from stcorr.data.synthetic.writers import mp4_codec

            self.mode = "mp4"
            self._container = av.open(str(self.stem.with_suffix(".mp4")), mode="w", format="mp4")
            self._stream = self._container.add_stream(mp4_codec(), rate=max(1, round(self.fps)))
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = "yuv420p"
        except Exception:  # no encoder, no muxer, unwritable: finish as a GIF instead
            self._abort()

    def _abort(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        self.mode, self._container, self._stream = "gif", None, None
        self.stem.with_suffix(".mp4").unlink(missing_ok=True)

    def close(self) -> Path:
        """Finish the file; returns the ``.mp4`` or, after a failure, the ``.gif`` path."""
        if self.mode == "mp4":
            try:
                self._container.mux(self._stream.encode())  # flush delayed packets
                self._container.close()
                return self.stem.with_suffix(".mp4")
            except Exception:  # a failing flush: the GIF still shows every frame
                self._abort()
        gif = self.stem.with_suffix(".gif")
        gif.write_bytes(vis.animated_gif(self.thumbs, fps=self.fps, max_frames=len(self.thumbs)))
        return gif


def track_video(video: str | Path, mask: str | Path, model: ModelSpec, out_dir: str | Path,
                cfg: EvaluateConfig, *, max_frames: int | None = None,
                progress: Progress | None = None) -> TrackResult:
    """Propagate ``mask`` (frame 0) through ``video``; write ``%05d.png`` masks and an overlay.

    Args:
        video: a video file (anything decord or PyAV reads).
        mask: first-frame mask PNG (palette, grey or colour; see ``read_annotation``).
        model: from ``load_model`` ("lab", a checkpoint file or a registry alias).
        out_dir: output folder (created).
        cfg: propagation settings (the ``evaluate`` section).
        max_frames: track only the first frames.
        progress: called as ``(phase, done, total)`` with phase "features" or "writing".

    Raises:
        VideoDecodeError: the video cannot be decoded; ValueError: a bad mask (see
        ``first_mask``).
    """
    cfg = apply_protocol(cfg, "davis", model.stride, model.contract)  # your video: DAVIS's settings
    source = open_video(video)
    info = source.info
    frames = min(info.frames, max_frames or info.frames)
    size = (info.height, info.width)
    ids0 = first_mask(mask, size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feats = _features(source, frames, FeatureExtractor(model, precision=cfg.precision), progress)
    stt = cfg.window == "square"
    first = first_frame_labels(ids0, (feats.shape[2], feats.shape[3]), mode="nearest" if stt else "bilinear")
    soft = propagate_labels(feats, first, cfg)  # (T, K, h, w)
    writer = OverlayWriter(out / "overlay", info.fps or 25.0)
    masks = []
    for start, chunk in _chunks(source, frames):
        for i, frame in enumerate(chunk):
            t = start + i
            ids = ids0 if t == 0 else labels_to_index(soft[t], size, minmax=stt)
            masks.append(out / f"{t:05d}.png")
            write_palette_png(masks[-1], ids)
            writer.add(vis.overlay_ids(frame, ids))
        if progress:
            progress("writing", start + len(chunk), frames)
    return TrackResult(masks, writer.close(), frames)
