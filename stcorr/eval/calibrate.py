"""BatchNorm statistics for the random-encoder baseline, from unlabeled training frames.

A randomly initialised network keeps BatchNorm's initial running statistics (mean 0, variance
1), which fit no real activations: every layer then rescales its input arbitrarily and the
features say less than the architecture can. Recomputing the statistics on a few unlabeled
frames (no labels, no gradient, no weight changes) is the fair random baseline. The frames come
from the *training* videos, never from an evaluation benchmark, so nothing about the test
sequences leaks into the baseline.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from stcorr.data.decode import open_video
from stcorr.data.sources import discover_videos, frame_files
from stcorr.eval.features import ModelSpec, build_network, normalise
from stcorr.models.contract import pack
from stcorr.models.resnet import encoder_state_dict

CALIBRATION_SEED = 0


def training_frames(source: str | Path, count: int, seed: int = CALIBRATION_SEED) -> list[np.ndarray]:
    """``count`` frames spread over the videos of a training source, deterministic by seed.

    Args:
        source: folder of video files or of JPEG frame folders (``data.videos``).
        count: frames to return, taken round-robin over the videos (random frame of each).

    Returns:
        Up to ``count`` arrays ``(H, W, 3)`` uint8 RGB (sizes may differ between videos).

    Raises:
        FileNotFoundError / ValueError: the source is missing or holds no videos.
    """
    items = discover_videos(source, key="evaluate calibration source (data.videos)")
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    for i, item in enumerate(items[:count]):
        share = len(range(i, count, len(items)))  # round-robin: video i serves picks i, i + n, ...
        if item.kind == "frame_folder":
            paths = frame_files(Path(item.path))
            for p in sorted(rng.choice(len(paths), size=min(share, len(paths)), replace=False)):
                with Image.open(paths[p]) as img:
                    frames.append(np.asarray(img.convert("RGB")))
        else:
            video = open_video(item.path, name=item.name)
            picks = sorted(rng.choice(video.num_frames, size=min(share, video.num_frames), replace=False))
            frames.extend(video.get_frames([int(p) for p in picks]))
    return frames


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, inputs: list[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by their plain average over ``inputs``.

    Weights and affine parameters stay as they are; only ``running_mean``/``running_var`` move
    (momentum ``None`` = cumulative average, so the order of the frames does not matter beyond
    float rounding). The network is left in eval mode.

    Args:
        net: the backbone.
        inputs: normalised ``(1, 3, H, W)`` tensors, one per frame.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for x in inputs:
        net(x)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    net.eval()


def calibrated_random(spec: ModelSpec, source: str | Path, count: int) -> ModelSpec:
    """The ``random`` baseline of ``spec`` with BatchNorm statistics from training frames.

    Args:
        spec: a ``ModelSpec`` of kind "random" (its contract says how frames are fed).
        source: the training video source.
        count: frames to average over.

    Returns:
        A copy of ``spec`` whose ``weights`` file holds the recalibrated network (same seeded
        weights), with a note saying so for the report.
    """
    assert spec.kind == "random", "only the random baseline is recalibrated"
    net = build_network(spec)
    assert net is not None, "the random baseline has a network"
    frames = training_frames(source, count)
    inputs = [normalise(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255.0, spec.input)
              for f in frames]
    recalibrate_batchnorm(net, inputs)
    folder = Path(tempfile.mkdtemp(prefix="stcorr-random-"))
    path = folder / "random-bn-recalibrated.pt"
    torch.save(pack(encoder_state_dict(net), spec.contract), path)
    note = (f"BatchNorm statistics recalibrated on {len(frames)} unlabeled training frames "
            f"(never evaluation frames); {spec.input} input like the candidate")
    return replace(spec, weights=str(path), notes=(*spec.notes, note))
