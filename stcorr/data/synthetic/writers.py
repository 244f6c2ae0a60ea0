"""Byte-deterministic writers for the synthetic data: JPEG, PNG (palette, grey, RGB), MP4, MAT.

Same arrays in, same bytes out: no timestamps anywhere (the MAT header's "Created on" is fixed,
the MP4 carries no creation time, x264 runs single-threaded on its plain C code paths).
"""

from __future__ import annotations

import io
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from stcorr.data.transcode import encode_mp4

JPEG_QUALITY = 95  # near-lossless, so the JPEG frames stay close to the rendered ground truth
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by stcorr.data.synthetic"
FPS = 10
MP4_CODECS = ("libx264", "mpeg4")  # first available wins; libx264 needs even sides (yuv420p)
# x264 on its C code paths only. With its SIMD paths, on a 2-vCPU AMD EPYC (Zen 4) VM, about 1 in
# 1,000 encodes of the same 8 frames came out different (a few grey levels), in bursts: 13 times
# in ~15,000 with AVX-512, never in 7,000 held to AVX2 nor in 7,700 on the C paths. The C paths do
# not depend on the CPU's instruction sets; their bytes differ from the SIMD paths' (same quality:
# 2.65 vs 2.66 mean abs error on a demo clip), and they encode about half as fast.
X264_NO_ASM = "asm=0"
# On the C paths, x264's "medium" preset took 0.55 s per 24-frame 192x256 demo clip (13 s of the
# demo's ~30 s of data generation); "faster" takes 0.23 s for files of the same size at crf 16 and
# 0.2 dB lower PSNR (39.8 vs 40.0 dB).
X264_PRESET = "faster"


def voc_palette() -> list[int]:
    """The PASCAL VOC / DAVIS colour map: 256 RGB triplets, flattened (0 black, 1 (128, 0, 0), ...)."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):  # spread the label's bits over the high bits of r, g, b
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Write ``(H, W, 3)`` uint8 as a baseline JPEG."""
    Image.fromarray(rgb).save(path, format="JPEG", quality=JPEG_QUALITY)


def write_png_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write ``(H, W, 3)`` uint8 as a lossless RGB PNG."""
    Image.fromarray(rgb).save(path, format="PNG")


def write_png_indexed(path: Path, labels: np.ndarray) -> None:
    """Write ``(H, W)`` uint8 labels as a mode "P" PNG with the VOC palette (DAVIS annotations)."""
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(voc_palette())  # L -> P, pixel values unchanged
    image.save(path, format="PNG")


def write_png_gray(path: Path, labels: np.ndarray) -> None:
    """Write ``(H, W)`` uint8 labels as a mode "L" PNG (VIP ``Category_ids``)."""
    Image.fromarray(labels.astype(np.uint8)).save(path, format="PNG")


def write_mat(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a MATLAB 5 file with ``scipy.io.savemat``, with a fixed header text instead of the date.

    Raises:
        ValueError: the header would not fit the 116 bytes MATLAB reserves for it.
    """
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, arrays)
    data = bytearray(buffer.getvalue())
    if len(MAT_HEADER) > 116:
        raise ValueError(f"{path}: MAT header text longer than 116 bytes")
    data[:116] = MAT_HEADER.ljust(116, b" ")  # savemat writes time.asctime() there
    path.write_bytes(bytes(data))


def mp4_codec() -> str:
    """The first of ``MP4_CODECS`` this PyAV build can encode.

    Raises:
        RuntimeError: none of them is available.
    """
    import av

    for name in MP4_CODECS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # PyAV raises UnknownCodecError or ValueError by version
            continue
        return name
    raise RuntimeError(f"PyAV: no MP4 video encoder available; expected one of {MP4_CODECS}")


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS, codec: str | None = None) -> str:
    """Encode ``(T, H, W, 3)`` uint8 frames as an MP4 with PyAV; one packet per frame in, T out.

    Args:
        path: output file.
        frames: the clip; H and W must be even (yuv420p).
        fps: frame rate.
        codec: ``libx264`` or ``mpeg4``; ``None`` takes the first available.

    Returns:
        The codec used.

    Raises:
        ValueError: odd frame sides.
    """
    _, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: expected even frame sides for yuv420p, got {h}x{w}")
    codec = codec or mp4_codec()
    if codec == "libx264":
        options = {"crf": "16", "preset": X264_PRESET, "bf": "0", "threads": "1",
                   "x264-params": X264_NO_ASM}
        bit_rate = None
    else:
        options = {"threads": "1"}
        bit_rate = 4_000_000  # ~3.7 mean abs error on 0..255 at 96x128, like crf 16
    path.write_bytes(encode_mp4(frames, rate=Fraction(fps), size=(h, w), codec=codec,
                                options=options, bit_rate=bit_rate))
    return codec


def write_lines(path: Path, lines: list[str]) -> None:
    """Write one item per line, newline-terminated."""
    path.write_text("".join(f"{line}\n" for line in lines))


def replace_dir(staging: Path, final: Path) -> None:
    """Move a finished ``staging`` folder to ``final``, dropping what was there (stale items go too)."""
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
