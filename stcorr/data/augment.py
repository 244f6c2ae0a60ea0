"""Clip sampling and image augmentations for both training stages.

Clips (STT stage 2, Li & Liu, CVPR 2023, reference ``configs/train/train.py:45-56``; docs/methods.md
2.2): T frames ``frame_gap`` apart from a uniformly random start, ONE RandomResizedCrop with wide
aspect ratios (w/h in [1.5, 2]) and ONE flip shared by all frames of the clip, squashed to
``crop_size`` squared. CRW (Jabri et al., NeurIPS 2020) crops each frame independently; this module
shares the crop because STT does (``same_on_clip=True``).

Channel dropout (STT ``framework.py:215-227``; docs/methods.md 2.4): one of a/b is zeroed and the
rest scaled by 3/(3-1) = 1.5; the dropped channel is the reconstruction target.

MoCo v2 two views (Chen et al., arXiv 2003.04297; STT stage 1 uses MoCo, STT Eq. 1): RandomResizedCrop
(scale 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, RandomGrayscale 0.2, GaussianBlur
(sigma 0.1-2) with p 0.5, horizontal flip. Every random draw comes from a ``numpy`` Generator
passed in, so runs are reproducible and no global RNG is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stcorr.data.decode import decode_image, open_video
from stcorr.data.lab import IMAGENET_MEAN, IMAGENET_STD, normalize_lab, rgb_to_lab

Box = tuple[int, int, int, int]  # top, left, height, width
# Shard sample entries (the shard writer's format): encoded video, frame folder, or one image.
VIDEO_EXTS = ("mp4", "avi", "mkv", "webm")
IMAGE_EXTS = ("jpg", "png", "webp", "bmp")
FRAME_KEY = "f{:06d}.jpg"


@dataclass(frozen=True)
class ClipSpec:
    """How one training clip is cut from a video. Defaults follow STT stage 2 (docs/methods.md 2.2)."""

    frames: int = 2  # T; STT trains on one reference + one target frame
    frame_gap: int = 1  # gap in stored frames; YouTube-VOS frames are already every 5th raw frame
    crop_size: int = 256  # S; STT squashes every crop to 256 x 256
    scale: tuple[float, float] = (0.6, 1.0)  # crop area fraction (STT area_range)
    ratio: tuple[float, float] = (1.5, 2.0)  # crop w/h (STT: wide crops, squashed later)
    flip_p: float = 0.5
    lab: bool = True  # also emit normalised Lab (the STT student's input)
    channel_dropout: bool = False  # drop one of a/b per clip (needs lab)

    def __post_init__(self) -> None:
        if self.frames < 1 or self.frame_gap < 1 or self.crop_size < 1:
            raise ValueError(f"ClipSpec: frames, frame_gap and crop_size must be >= 1, got {self}")
        if not (0 < self.scale[0] <= self.scale[1] <= 1 and 0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"ClipSpec: need 0 < scale lo <= hi <= 1 and 0 < ratio lo <= hi, "
                             f"got scale={self.scale} ratio={self.ratio}")
        if self.channel_dropout and not self.lab:
            raise ValueError("ClipSpec: channel_dropout=True needs lab=True")


def clip_indices(num_frames: int, frames: int, gap: int, rng: np.random.Generator) -> list[int]:
    """T frame indices ``gap`` apart from a uniformly random start (STT ``video_dataset.py:46-48``).

    A video too short for the requested span gets the largest gap that fits; one with fewer than
    T frames repeats its last frame (STT's shortest YouTube-VOS video has 4 frames, so this is rare).

    Raises:
        ValueError: ``num_frames`` < 1.
    """
    if num_frames < 1:
        raise ValueError(f"clip_indices: video has {num_frames} frames; expected at least 1")
    if frames == 1:
        return [int(rng.integers(num_frames))]
    gap = max(1, min(gap, (num_frames - 1) // (frames - 1)))
    span = (frames - 1) * gap
    start = int(rng.integers(max(num_frames - span, 1)))
    return [min(start + t * gap, num_frames - 1) for t in range(frames)]


def load_clip_frames(sample: dict[str, Any], spec: ClipSpec, rng: np.random.Generator,
                     threads: int = 1, decoder: str = "auto") -> tuple[np.ndarray, list[int]]:
    """Decode only the T frames a clip needs from an encoded-video or frame-folder sample
    (video with ``decoder``: ``auto``, ``decord`` or ``pyav``).

    Returns:
        ``(T, H, W, 3)`` uint8 RGB, and the T frame indices chosen.

    Raises:
        VideoDecodeError / ValueError: undecodable data, or not a video sample.
    """
    name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    ext = next((e for e in VIDEO_EXTS if e in sample), None)
    if ext is not None:
        video = open_video(sample[ext], backend=decoder, name=f"{name}.{ext}", threads=threads)
        indices = clip_indices(video.num_frames, spec.frames, spec.frame_gap, rng)
        return video.get_frames(indices), indices
    count = sum(1 for k in sample if k.startswith("f") and k.endswith(".jpg"))
    if count == 0 or FRAME_KEY.format(0) not in sample:
        raise ValueError(f"{name}: expected a video sample ({'/'.join(VIDEO_EXTS)} or f000000.jpg...), "
                       f"got keys {sorted(k for k in sample if not k.startswith('__'))}")
    indices = clip_indices(count, spec.frames, spec.frame_gap, rng)
    missing = [FRAME_KEY.format(i) for i in indices if FRAME_KEY.format(i) not in sample]
    if missing:
        raise ValueError(f"{name}: frame folder sample lacks {missing}; expected f000000.jpg "
                         f"to f{count - 1:06d}.jpg without gaps")
    frames = [decode_image(sample[FRAME_KEY.format(i)], f"{name}.{FRAME_KEY.format(i)}")
              for i in indices]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{name}: frames differ in size {sorted(shapes)}; expected one size")
    return np.stack(frames), indices


def load_image(sample: dict[str, Any]) -> torch.Tensor:
    """Decode the image of an image sample to ``(3, H, W)`` uint8 RGB.

    Raises:
        ValueError: not an image sample, or undecodable; the message names shard and key.
    """
    name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None:
        raise ValueError(f"{name}: expected an image sample ({'/'.join(IMAGE_EXTS)})")
    return torch.from_numpy(decode_image(sample[ext], f"{name}.{ext}")).permute(2, 0, 1)


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
    attempts: int = 20,
) -> Box:
    """RandomResizedCrop parameters: area fraction in ``scale``, w/h in ``ratio`` (log-uniform).

    Up to 20 attempts, then the central square, as STT's ``augmentation.py:186-320`` does.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def resize_crop_uint8(frames: np.ndarray, box: Box, size: int, flip: bool) -> torch.Tensor:
    """Crop one box out of every frame, squash it to ``size`` x ``size``, optionally flip.

    Works on uint8 in channels-last layout (a view of the decoded frames, no copy), where
    torch's bilinear resize has a fast path; the flip is applied before resizing, which gives
    the same pixels (bilinear resizing is mirror-symmetric). Float conversion waits for the
    whole batch.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        box: ``(top, left, height, width)`` shared by all T frames.

    Returns:
        ``(T, 3, size, size)`` uint8 tensor in channels-last memory layout.
    """
    top, left, h, w = box
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)[:, :, top : top + h, left : left + w]
    if flip:
        clip = clip.flip(-1)  # (T, 3, h, w)
    return F.interpolate(clip, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)  # (T, 3, S, S)


def augment_clip(frames: np.ndarray, spec: ClipSpec,
                 rng: np.random.Generator) -> tuple[torch.Tensor, tuple[int, ...]]:
    """One shared crop and one shared flip for all frames.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.

    Returns:
        ``(T, 3, S, S)`` uint8 clip, and ``(top, left, height, width, flipped)`` as drawn.
    """
    box = crop_box(frames.shape[1], frames.shape[2], spec.scale, spec.ratio, rng)
    flip = bool(rng.random() < spec.flip_p)
    return resize_crop_uint8(frames, box, spec.crop_size, flip), (*box, int(flip))


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack uint8 clips ``(T, 3, S, S)`` (and their keys, frame indices, crops) into a batch."""
    frames, _, size, _ = items[0]["rgb"].shape
    # Rows keep the clips' channels-last layout, so filling them is a plain memory copy; the
    # transpose to contiguous happens with the float conversion in finish_clips.
    rgb = torch.empty((len(items), frames, size, size, 3), dtype=torch.uint8)
    rgb = rgb.permute(0, 1, 4, 2, 3)  # (B, T, 3, S, S)
    for row, item in zip(rgb, items, strict=True):
        row.copy_(item["rgb"])
    return {"rgb": rgb, "key": [item["key"] for item in items],
            "frame_index": torch.tensor([item["frame_index"] for item in items]),  # (B, T)
            "crop": torch.tensor([item["crop"] for item in items])}  # (B, 5)


def finish_clips(spec: ClipSpec, batch: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, Any]:
    """uint8 RGB -> float RGB in [0, 1] (+ normalised Lab, + a/b dropout), one pass per batch.

    Runs where the batch is consumed (on the GPU in training), see ``reader.make_loader``.
    """
    rgb = batch["rgb"].to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    batch = {**batch, "rgb": rgb}
    if spec.lab:
        batch["lab"] = normalize_lab(rgb_to_lab(rgb))  # (B, T, 3, S, S)
    if spec.channel_dropout:
        dropped = [drop_ab_channel(clip, rng) for clip in batch["lab"]]
        batch["lab_dropped"] = torch.stack([clip for clip, _ in dropped])  # (B, T, 3, S, S)
        batch["drop_channel"] = torch.tensor([ch for _, ch in dropped])  # (B,) in {1, 2}
    return batch


def drop_ab_channel(lab: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """Zero one of the a/b channels in every frame and scale all channels by 3/(3-1) = 1.5.

    STT ``framework.py:215-227`` (docs/methods.md 2.4). L (index 0) is never dropped. STT draws one
    channel per batch; we draw per clip (call once per clip), which only adds variety.

    Args:
        lab: ``(..., 3, H, W)`` normalised Lab; not modified.
        rng: source of the channel choice.

    Returns:
        The dropped-and-scaled copy, and the dropped channel index (1 = a, 2 = b), which is
        the reconstruction target.
    """
    channel = int(rng.integers(1, 3))
    out = lab.clone()
    out[..., channel, :, :] = 0.0
    return out * 1.5, channel


@dataclass(frozen=True)
class ViewSpec:
    """MoCo v2's view augmentations; the defaults are the paper's (224-px views of ImageNet)."""

    scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area range
    jitter: float = 0.4  # ColorJitter brightness/contrast/saturation (hue: a quarter of it)
    grayscale_p: float = 0.2
    blur_p: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"ViewSpec: need 0 < scale lo <= hi <= 1, got scale={self.scale}")


def moco_view(image: torch.Tensor, size: int, rng: np.random.Generator,
              spec: ViewSpec = ViewSpec()) -> torch.Tensor:
    """One MoCo v2 view of an image, ImageNet-normalised.

    Args:
        image: ``(3, H, W)`` uint8 RGB.
        size: output side S.
        spec: crop scale, colour jitter and the probabilities of grey and blur.

    Returns:
        ``(3, S, S)`` float32.
    """
    import torchvision.transforms.v2.functional as TF

    box = crop_box(image.shape[1], image.shape[2], spec.scale, (3 / 4, 4 / 3), rng, attempts=10)
    view: Any = TF.resized_crop(image, *box, size=[size, size], antialias=True)
    view = TF.to_dtype(view, torch.float32, scale=True)  # (3, S, S) in [0, 1]
    if rng.random() < 0.8:
        view = _color_jitter(view, rng, spec.jitter, spec.jitter, spec.jitter, spec.jitter / 4)
    if rng.random() < spec.grayscale_p:
        view = TF.rgb_to_grayscale(view, num_output_channels=3)
    if rng.random() < spec.blur_p:
        kernel = 2 * round(0.05 * size) + 1  # 23 at S = 224, as in SimCLR/MoCo v2 ports
        view = TF.gaussian_blur(view, [kernel, kernel], [float(rng.uniform(0.1, 2.0))] * 2)
    if rng.random() < 0.5:
        view = TF.horizontal_flip(view)
    return TF.normalize(view, list(IMAGENET_MEAN), list(IMAGENET_STD))


def _color_jitter(
    view: torch.Tensor, rng: np.random.Generator, brightness: float, contrast: float,
    saturation: float, hue: float,
) -> torch.Tensor:
    """torchvision ColorJitter semantics (random order of the four), drawn from ``rng``."""
    import torchvision.transforms.v2.functional as TF

    ops = [
        lambda v: TF.adjust_brightness(v, float(rng.uniform(1 - brightness, 1 + brightness))),
        lambda v: TF.adjust_contrast(v, float(rng.uniform(1 - contrast, 1 + contrast))),
        lambda v: TF.adjust_saturation(v, float(rng.uniform(1 - saturation, 1 + saturation))),
        lambda v: TF.adjust_hue(v, float(rng.uniform(-hue, hue))),
    ]
    for i in rng.permutation(len(ops)):
        view = ops[i](view)
    return view
