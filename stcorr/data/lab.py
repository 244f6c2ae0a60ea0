"""RGB <-> CIE Lab (D65) in torch, and the normalisations both papers use.

STT feeds the student Lab input normalised with mean (50, 0, 0) and std (50, 127, 127)
(reference code ``configs/train/train.py:42-43``); the teacher and CRW see RGB with ImageNet
statistics. The conversion matches ``skimage.color.rgb2lab`` (sRGB, D65, 2 degree observer).
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAB_MEAN = (50.0, 0.0, 0.0)
LAB_STD = (50.0, 127.0, 127.0)

# sRGB (linear) -> XYZ, D65; rows are X, Y, Z.
_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Convert RGB in [0, 1] to Lab (L in [0, 100], a and b roughly in [-110, 110]).

    Args:
        rgb: ``(..., 3, H, W)`` float tensor in [0, 1].

    Returns:
        ``(..., 3, H, W)`` Lab tensor of the same dtype.
    """
    rgb = rgb.clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = _RGB_TO_XYZ.to(rgb)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear)
    xyz = xyz / _WHITE_D65.to(rgb).view(3, 1, 1)
    eps = 0.008856
    f = torch.where(xyz > eps, xyz.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    lightness = torch.where(xyz[..., 1, :, :] > eps, 116.0 * fy - 16.0, 903.3 * xyz[..., 1, :, :])
    return torch.stack([lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Convert Lab back to RGB in [0, 1]: the exact inverse of :func:`rgb_to_lab` (then clamped).

    Args:
        lab: ``(..., 3, H, W)`` Lab tensor (L in [0, 100]).

    Returns:
        ``(..., 3, H, W)`` RGB in [0, 1]; out-of-gamut colours are clipped.
    """
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0
    eps_f = 0.008856 ** (1.0 / 3.0)
    x, z = (torch.where(f > eps_f, f**3, (f - 16.0 / 116.0) / 7.787) for f in (fx, fz))
    # Y comes from L directly: the forward direction used 903.3 * Y below L = 8 (Y = 0.008856).
    y = torch.where(lightness > 8.0, fy**3, lightness / 903.3)
    xyz = torch.stack([x, y, z], dim=-3) * _WHITE_D65.to(lab).view(3, 1, 1)
    linear = torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_RGB_TO_XYZ.to(lab)), xyz).clamp(0.0, 1.0)
    gamma = 1.055 * linear.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055
    return torch.where(linear > 0.0031308, gamma, 12.92 * linear)


def normalize_lab(lab: torch.Tensor) -> torch.Tensor:
    """Lab -> the STT network input: (Lab - (50, 0, 0)) / (50, 127, 127); ``(..., 3, H, W)``."""
    mean = torch.tensor(LAB_MEAN).to(lab).view(3, 1, 1)
    std = torch.tensor(LAB_STD).to(lab).view(3, 1, 1)
    return (lab - mean) / std


def denormalize_lab(lab: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`normalize_lab`; ``(..., 3, H, W)``."""
    mean = torch.tensor(LAB_MEAN).to(lab).view(3, 1, 1)
    std = torch.tensor(LAB_STD).to(lab).view(3, 1, 1)
    return lab * std + mean


def normalize_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> ImageNet-normalised input; ``(..., 3, H, W)``."""
    mean = torch.tensor(IMAGENET_MEAN).to(rgb).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).to(rgb).view(3, 1, 1)
    return (rgb - mean) / std
