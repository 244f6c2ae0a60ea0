"""Frame reconstruction and its pyramid, STT Eq. 5-7 (Li & Liu, CVPR 2023, arXiv 2209.07778).

The target frame's dropped Lab channel is rebuilt as a correlation-weighted sum of the reference
frame's channel inside each window (STT Eq. 5), compared with the true channel (STT Eq. 6), at every
pyramid level (STT Eq. 7, summed). As in the reference code (docs/methods.md 2.5) the reference channel
is down-sampled MAST-style (top-left pixel of each d x d block, d = the level's stride) and the
reconstruction is bilinearly up-sampled to image size before the loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from stcorr.objectives.correlation import LocalCorrelation, apply_local_correlation

RecLoss = Literal["l1", "smooth_l1"]


def level_stride(image_size: tuple[int, int], corr: LocalCorrelation) -> int:
    """Stride d of a correlation's grid in image pixels.

    Raises:
        ValueError: if the image is not d times the grid on both axes.
    """
    h, w = image_size
    d = h // corr.height
    if d < 1 or h != d * corr.height or w != d * corr.width:
        raise ValueError(
            f"reconstruction: image {h}x{w} is not an integer multiple of the feature grid "
            f"{corr.height}x{corr.width}; expected image size = stride * feature size"
        )
    return d


def reconstruct(corr: LocalCorrelation, ref_channel: Tensor) -> Tensor:
    """STT Eq. 5: rebuild the target channel from the reference channel, at image size.

    Args:
        corr: windowed correlation of target and reference features at one level.
        ref_channel: ``(B, 1, S, S)`` reference frame channel at image resolution.

    Returns:
        ``(B, 1, S, S)`` reconstruction, bilinearly up-sampled from the level's grid.
    """
    d = level_stride((ref_channel.shape[-2], ref_channel.shape[-1]), corr)
    values = ref_channel[:, :, ::d, ::d]  # (B, 1, H, W): top-left pixel of each d x d block
    rec = apply_local_correlation(corr.weights, values, corr.radius)  # (B, 1, H, W)
    return F.interpolate(rec, size=ref_channel.shape[-2:], mode="bilinear", align_corners=False)


def copy_reconstruction(corr: LocalCorrelation, ref_channel: Tensor) -> Tensor:
    """The reconstruction that copies the reference at the same place: STT Eq. 5 with the identity
    correlation (every weight on displacement 0), through the same sampling and up-sampling.

    Its PSNR is what reconstruction scores without any correspondence; a model that does not
    beat it has learned "copy the same position", not motion.

    Returns:
        ``(B, 1, S, S)``.
    """
    d = level_stride((ref_channel.shape[-2], ref_channel.shape[-1]), corr)
    values = ref_channel[:, :, ::d, ::d]  # (B, 1, H, W), as ``reconstruct`` samples it
    return F.interpolate(values, size=ref_channel.shape[-2:], mode="bilinear", align_corners=False)


def reconstruction_loss(
    rec: Tensor, target: Tensor, kind: RecLoss = "l1", weight: float = 1.0
) -> Tensor:
    """STT Eq. 6: mean L1 (paper) or smooth-L1 (reference code) of weight * rec vs weight * target.

    The reference code scales both sides by 20 inside smooth-L1 (docs/methods.md 2.5), which moves
    smooth-L1's quadratic zone; with L1 the weight is a plain factor.

    Args:
        rec: ``(B, 1, S, S)`` reconstruction.
        target: ``(B, 1, S, S)`` true target channel.
        kind: "l1" or "smooth_l1".
        weight: scale applied to both sides.

    Returns:
        Scalar loss.
    """
    if kind == "l1":
        return F.l1_loss(weight * rec, weight * target)
    return F.smooth_l1_loss(weight * rec, weight * target)


def reconstruction_psnr(rec: Tensor, target: Tensor, data_range: float = 2.0) -> Tensor:
    """PSNR in dB of a reconstruction (diagnostic, no gradient).

    Args:
        rec: ``(B, 1, S, S)``.
        target: ``(B, 1, S, S)``.
        data_range: peak-to-peak range; 2.0 for normalised a/b (a / 127 spans about [-1, 1]).

    Returns:
        Scalar PSNR over the batch.
    """
    mse = (rec.detach() - target.detach()).pow(2).mean()
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def pyramid_reconstruction(
    corrs: Mapping[str, LocalCorrelation],
    ref_channel: Tensor,
    target_channel: Tensor,
    kind: RecLoss = "l1",
    weight: float = 1.0,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """STT Eq. 7: reconstruction loss at every pyramid level (their sum is L_rec^p).

    Args:
        corrs: level name ("res3", "res4") -> its windowed correlation.
        ref_channel: ``(B, 1, S, S)`` reference frame's dropped channel (clean).
        target_channel: ``(B, 1, S, S)`` target frame's dropped channel (clean).
        kind: "l1" or "smooth_l1".
        weight: scale inside the loss (reference code: 20).

    Returns:
        (losses, reconstructions): ``{"rec_<level>": scalar}`` and
        ``{"<level>": (B, 1, S, S)}``.
    """
    losses: dict[str, Tensor] = {}
    images: dict[str, Tensor] = {}
    for level, corr in corrs.items():
        rec = reconstruct(corr, ref_channel)
        losses[f"rec_{level}"] = reconstruction_loss(rec, target_channel, kind, weight)
        images[level] = rec
    return losses, images
