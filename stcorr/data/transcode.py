"""Shard-time re-encoding of video files for random access (``shard.video_format: transcoded``).

A clip decodes from the keyframe at or before its first frame. Web video and Kinetics are stored
with x264's defaults: a keyframe every 250 frames and B-frames, so a 4-frame clip in the middle of
a 10 s video decodes ~125 frames to use 4. Re-encoded with a keyframe every ``keyint`` frames, no
B-frames and x264's ``fastdecode`` tune (no CABAC, no deblocking filter), a clip decodes at most
``keyint - 1`` frames more than it spans, each one cheaper. ``short_side`` also scales the video
down once here instead of at every read (Kinetics as CRW reads it is short side 256).

The encoder runs single-threaded (the shard stage runs one Ray task per shard) with x264's SIMD
paths: its C paths encode ~4x slower (26 vs 102 frames/s at 602x256), which at Kinetics scale is
hundreds of core-hours. So, unlike the synthetic MP4s (``stcorr/data/synthetic/writers.py``), a
re-run on some CPUs can write different bytes now and then; resume does not care, since each shard
is checked against its own record.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction

import numpy as np

DEFAULT_FPS = 25.0  # where the container carries no frame rate


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(H, W) of the re-encoded video: scaled so the short side is at most ``short_side``,
    then rounded down to even sides (yuv420p), never below 2."""
    scale = min(1.0, short_side / min(height, width)) if short_side else 1.0
    return max(2, round(height * scale) // 2 * 2), max(2, round(width * scale) // 2 * 2)


def x264_options(keyint: int, crf: int) -> dict[str, str]:
    """libx264 options: a keyframe every ``keyint`` frames, no B-frames, fast to decode, constant
    quality ``crf`` (0 lossless .. 51; x264's default is 23)."""
    return {"g": str(keyint), "bf": "0", "tune": "fastdecode", "crf": str(crf), "preset": "fast",
            "threads": "1"}


def encode_mp4(frames: Iterable[np.ndarray], *, rate: Fraction, size: tuple[int, int], codec: str,
               options: dict[str, str], bit_rate: int | None = None) -> bytes:
    """Encode RGB frames as a yuv420p MP4 in memory, single-threaded; one packet per frame in.

    Args:
        frames: ``(H0, W0, 3)`` uint8 frames in display order; frames of another size than
            ``size`` are scaled (area filter).
        rate: frame rate.
        size: (H, W) of the output, even sides.
        codec: a PyAV encoder name (``libx264``, ``mpeg4``).
        options: the encoder's options.
        bit_rate: target bit rate, for encoders without a quality mode.

    Returns:
        The MP4 file's bytes.
    """
    import av

    height, width = size
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        assert isinstance(stream, av.VideoStream), "a video codec gives a video stream"
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if frame.shape[:2] != (height, width):
                picture = picture.reformat(width=width, height=height, interpolation="AREA")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())  # flush delayed packets
    return buffer.getvalue()


def transcode_h264(frames: Iterable[np.ndarray], fps: float | None, size: tuple[int, int],
                   keyint: int, crf: int) -> bytes:
    """Encode RGB frames as an H.264 MP4 in memory with ``x264_options(keyint, crf)``.

    Args:
        frames: ``(H0, W0, 3)`` uint8 frames in display order, any size.
        fps: frame rate of the source; ``None`` or 0 means ``DEFAULT_FPS``.
        size: (H, W) of the output, even sides.
        keyint: frames between keyframes.
        crf: x264's constant rate factor (lower: larger files, closer to the frames, slower to
            decode).

    Returns:
        The MP4 file's bytes.
    """
    rate = Fraction(fps or DEFAULT_FPS).limit_denominator(1001)
    return encode_mp4(frames, rate=rate, size=size, codec="libx264", options=x264_options(keyint, crf))
