"""Contrastive random walk (CRW), Jabri, Owens & Efros, NeurIPS 2020 (arXiv 2006.14613).

The nodes of a clip's frames form a space-time graph; the transition between consecutive frames
is P_{t->t+1} = row-softmax(q_t q_{t+1}^T / tau). A palindrome walk 0 -> k -> 0 must return to
its start node: L_k = mean_i -log(W_k[i, i]), with W_k = P_{0->1} ... P_{k-1->k} P_{k->k-1} ...
P_{1->0}, for k = 2..T-1 (the code never uses the length-1 palindrome), L = mean_k L_k.
Follows the released code (docs/methods.md 1.3-1.7): 7x7 grid of 64 px patches at stride 32, each
jittered by RandomResizedCrop(64, scale (0.7, 0.9)); ResNet-18 with layer3/layer4 at stride 1 and
reflect padding; spatial mean -> Linear(512, 128) -> L2-normalise; edge dropout sets affinities to
-1e20 before the temperature.
Departures (docs/methods.md 1.10): forward and backward transitions draw independent dropout masks
(the code writes the forward mask in place, so backward edges see both masks: rate ~0.19 instead of
p); patch jitter runs on the GPU in `forward` (training mode only), and a crop box that does not fit
is clamped instead of re-drawn (torchvision retries 10 times).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcorr.config import CrwConfig
from stcorr.models.resnet import build_backbone, encoder_state_dict

EPS = 1e-20  # as the code: log(W + 1e-20); needs fp32 (1e-20 underflows in fp16)
DROPPED = -1e20  # a dropped edge's affinity, before dividing by tau


def transitions(q: Tensor, tau: float, edge_dropout: float = 0.0) -> tuple[Tensor, Tensor]:
    """Forward and backward transition matrices between consecutive frames.

    Args:
        q: (B, T, N, C) L2-normalised node embeddings.
        tau: temperature.
        edge_dropout: probability p of dropping each edge (independent masks per direction).

    Returns:
        (P_fwd, P_bwd), each (B, T-1, N, N) and row-stochastic; P_fwd[:, t] = P_{t->t+1},
        P_bwd[:, t] = P_{t+1->t}.
    """
    a = torch.einsum("btnc,btmc->btnm", q[:, :-1], q[:, 1:])  # A_t = q_t q_{t+1}^T: (B, T-1, N, N)
    a_fwd, a_bwd = a, a.transpose(-1, -2)
    if edge_dropout > 0:
        a_fwd = a_fwd.masked_fill(torch.rand_like(a_fwd) < edge_dropout, DROPPED)
        a_bwd = a_bwd.masked_fill(torch.rand_like(a_bwd) < edge_dropout, DROPPED)
    return F.softmax(a_fwd / tau, dim=-1), F.softmax(a_bwd / tau, dim=-1)


def palindrome_walks(p_fwd: Tensor, p_bwd: Tensor) -> dict[int, Tensor]:
    """Return-walk matrices W_k for k = 2..T-1, multiplied left to right (the fixed order).

    Args:
        p_fwd: (B, T-1, N, N) forward transitions.
        p_bwd: (B, T-1, N, N) backward transitions.

    Returns:
        {k: (B, N, N)}; row i is the distribution of the walk's end node from start node i.
    """
    walks: dict[int, Tensor] = {}
    out_path, back_path = p_fwd[:, 0], p_bwd[:, 0]  # P_{0->1}, P_{1->0}
    for k in range(2, p_fwd.shape[1] + 1):
        out_path = out_path @ p_fwd[:, k - 1]  # P_{0->1} ... P_{k-1->k}
        back_path = p_bwd[:, k - 1] @ back_path  # P_{k->k-1} ... P_{1->0}
        walks[k] = out_path @ back_path
    return walks


def walk_loss(q: Tensor, tau: float, edge_dropout: float = 0.0) -> dict[str, Tensor]:
    """CRW loss of a clip's node embeddings, computed in fp32 even under autocast.

    Args:
        q: (B, T, N, C) L2-normalised node embeddings, T >= 3.
        tau: temperature.
        edge_dropout: edge dropout rate p.

    Returns:
        "loss" (mean over k of L_k), "xent_k{k}" and "acc_k{k}" (detached) per k, "walk_acc"
        (their mean: share of walks whose most likely end is their start) next to its chance
        level "walk_chance" = 1/N, and "affinity": the first pair's P_{0->1}, (B, N, N), detached.

    Raises:
        ValueError: fewer than 3 frames (no palindrome of length >= 2).
    """
    if q.dim() != 4 or q.shape[1] < 3:
        raise ValueError(f"CRW node embeddings {tuple(q.shape)}: expected (B, T>=3, N, C)")
    with torch.autocast(device_type=q.device.type, enabled=False):
        p_fwd, p_bwd = transitions(q.float(), tau, edge_dropout)
        walks = palindrome_walks(p_fwd, p_bwd)
        out: dict[str, Tensor] = {}
        target = torch.arange(q.shape[2], device=q.device)  # the walk must return to node i
        losses = []
        for k, w in walks.items():
            xent = -torch.log(torch.diagonal(w, dim1=-2, dim2=-1) + EPS).mean()
            losses.append(xent)
            out[f"xent_k{k}"] = xent.detach()
            out[f"acc_k{k}"] = (w.argmax(dim=-1) == target).float().mean()
        out["loss"] = torch.stack(losses).mean()
        out["walk_acc"] = torch.stack([out[f"acc_k{k}"] for k in walks]).mean()
        out["walk_chance"] = q.new_tensor(1.0 / q.shape[2])
        out["affinity"] = p_fwd[:, 0].detach()
    return out


class CRW(nn.Module):
    """Contrastive random walk on patch nodes (paper) or feature-map cells ("dense").

    Args:
        arch: backbone ("resnet18" in the paper), built with the `crw` preset (res5, stride 8).
        nodes: "patches" (grid of patches, one node each) or "dense" (every res5 cell a node).
        patch_size: patch side in pixels (64).
        patch_stride: patch stride in pixels (32).
        dim: node embedding size (128).
        tau: walk temperature.
        edge_dropout: edge dropout rate p.
        jitter: per-patch RandomResizedCrop(patch_size, scale (0.7, 0.9)) in training mode.

    Edge dropout and jitter apply in training mode only; `eval()` gives the deterministic walk.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        nodes: str = "patches",
        patch_size: int = 64,
        patch_stride: int = 32,
        dim: int = 128,
        tau: float = 0.05,
        edge_dropout: float = 0.1,
        jitter: bool = True,
    ) -> None:
        super().__init__()
        if nodes not in ("patches", "dense"):
            raise ValueError(f"CRW nodes {nodes!r}: expected 'patches' or 'dense'")
        self.nodes, self.patch_size, self.patch_stride = nodes, patch_size, patch_stride
        self.tau, self.edge_dropout, self.jitter = tau, edge_dropout, jitter
        self.encoder = build_backbone("crw", arch, out=("res5",))
        self.head = nn.Linear(self.encoder.out_channels["res5"], dim)  # selfsim_fc, head depth 0

    @classmethod
    def from_config(cls, cfg: CrwConfig, arch: str = "resnet18") -> CRW:
        """Build from the `finetune.crw` config section."""
        return cls(
            arch,
            nodes=cfg.nodes,
            patch_size=cfg.patch_size,
            patch_stride=cfg.patch_stride,
            dim=cfg.dim,
            tau=cfg.tau,
            edge_dropout=cfg.edge_dropout,
            jitter=cfg.jitter,
        )

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        """CRW loss of a batch of clips.

        Args:
            frames: (B, T, 3, H, W) normalised frames, T >= 3.

        Returns:
            The `walk_loss` dict ("loss", "xent_k{k}", "acc_k{k}", "affinity").

        Raises:
            ValueError: wrong rank, too few frames, or frames smaller than a patch.
        """
        if frames.dim() != 5 or frames.shape[1] < 3 or frames.shape[2] != 3:
            raise ValueError(f"CRW frames {tuple(frames.shape)}: expected (B, T>=3, 3, H, W)")
        q = self.embed(frames)  # (B, T, N, C)
        return walk_loss(q, self.tau, self.edge_dropout if self.training else 0.0)

    def encoder_state(self) -> dict[str, Tensor]:
        """The backbone's weights in torchvision key names (evaluate with preset `crw`, res4)."""
        return encoder_state_dict(self.encoder)

    def embed(self, frames: Tensor) -> Tensor:
        """Node embeddings (B, T, N, dim), L2-normalised; N = 49 for 256 px patch grids."""
        b, t = frames.shape[:2]
        if self.nodes == "dense":
            feats = self.encoder(frames.flatten(0, 1))["res5"]  # (B*T, C, h, w)
            cells = feats.flatten(2).transpose(1, 2)  # (B*T, h*w, C)
            return F.normalize(self.head(cells), dim=-1).view(b, t, cells.shape[1], -1)
        patches = extract_patches(frames, self.patch_size, self.patch_stride)  # (B, T, N, 3, P, P)
        n = patches.shape[2]
        flat = patches.flatten(0, 2)  # (B*T*N, 3, P, P)
        if self.training and self.jitter:
            flat = random_resized_crop(flat, scale=(0.7, 0.9))
        pooled = self.encoder(flat)["res5"].mean(dim=(2, 3))  # (B*T*N, C) spatial mean
        return F.normalize(self.head(pooled), dim=-1).view(b, t, n, -1)


def extract_patches(frames: Tensor, size: int, stride: int) -> Tensor:
    """Row-major grid of patches (skimage `view_as_windows` order, remainder dropped).

    Args:
        frames: (B, T, 3, H, W).

    Returns:
        (B, T, N, 3, size, size) with N = (1 + (H - size) // stride) * (1 + (W - size) // stride).

    Raises:
        ValueError: frames smaller than one patch.
    """
    h, w = frames.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"CRW frames {h}x{w}: expected at least one {size}x{size} patch")
    grid = frames.unfold(3, size, stride).unfold(4, size, stride)  # (B, T, 3, nh, nw, P, P)
    grid = grid.permute(0, 1, 3, 4, 2, 5, 6)  # (B, T, nh, nw, 3, P, P)
    return grid.flatten(2, 3)


def random_resized_crop(
    x: Tensor, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> Tensor:
    """Independent RandomResizedCrop per image, resized back to the input size (bilinear).

    Args:
        x: (M, C, S, S) images.
        scale: range of the crop area as a fraction of the image.
        ratio: range of the crop aspect ratio w/h (log-uniform).

    Returns:
        (M, C, S, S) crops.
    """
    m = x.shape[0]
    area = torch.empty(m, device=x.device).uniform_(*scale)
    log_r = torch.empty(m, device=x.device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    w = torch.sqrt(area * log_r.exp()).clamp(max=1.0)  # fractions of the side; clamp, not retry
    h = torch.sqrt(area / log_r.exp()).clamp(max=1.0)
    x0 = torch.rand(m, device=x.device) * (1 - w)
    y0 = torch.rand(m, device=x.device) * (1 - h)
    theta = torch.zeros(m, 2, 3, device=x.device, dtype=x.dtype)  # maps output to input coords
    theta[:, 0, 0], theta[:, 0, 2] = w, 2 * x0 + w - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * y0 + h - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False)
