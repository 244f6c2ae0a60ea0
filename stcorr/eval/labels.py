"""Label encoding and decoding for label propagation: masks, palettes and keypoint heat-maps.

The conventions are those of the two reference evaluations (docs/methods.md 3.1-3.4):

- First-frame masks become one-hot maps (K channels, background included) at feature
  resolution, either bilinear-resized soft maps (CRW, ``[VW] data/vos.py:229-263``) or a
  nearest-resized index map made one-hot (STT, ``vanilla_tracker.py:159-165``).
- Propagated soft maps are bilinearly upsampled to the image, optionally min-max normalised per
  channel (STT), and turned into an index map by argmax.
- Masks are written as indexed PNGs with the DAVIS palette (the PASCAL VOC colour map), so the
  official DAVIS tool reads them; annotations are read robustly (docs/methods.md 7.7).
- JHMDB joints become Gaussian heat-maps at feature resolution (CRW: sigma 0.5 cells, peak 1,
  ``[VW] data/jhmdb.py:287-311``) and are decoded as the value-weighted mean of the top-k
  cells (CRW: top-3 at feature resolution; STT: top-5 after upsampling).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: ``(256, 3)`` uint8, index 0 black, 1 dark red, ...

    Same bit-interleaving as ``davis2017/utils.py:color_map``.
    """
    idx = np.arange(256)
    cmap = np.zeros((256, 3), dtype=np.int64)
    for j in range(8):  # bit j of each of r, g, b comes from bits 3j, 3j+1, 3j+2 of the index
        for channel in range(3):
            cmap[:, channel] |= ((idx >> (3 * j + channel)) & 1) << (7 - j)
    return cmap.astype(np.uint8)


def one_hot(index_map: np.ndarray, n_labels: int | None = None) -> Tensor:
    """Index map -> one-hot maps, one channel per id 0..K-1 (background = channel 0).

    Args:
        index_map: ``(H, W)`` non-negative integer ids.
        n_labels: K; None = max id + 1.

    Returns:
        ``(K, H, W)`` float32.

    Raises:
        ValueError: if an id is negative or not below ``n_labels``.
    """
    ids = torch.as_tensor(np.asarray(index_map, dtype=np.int64))
    n = int(ids.max()) + 1 if n_labels is None else n_labels
    if int(ids.min()) < 0 or int(ids.max()) >= n:
        raise ValueError(f"index map: expected ids in [0, {n}), got [{int(ids.min())}, "
                         f"{int(ids.max())}]")
    return F.one_hot(ids, n).permute(2, 0, 1).float()


def first_frame_labels(index_map: np.ndarray, size: tuple[int, int], *,
                       n_labels: int | None = None,
                       mode: Literal["bilinear", "nearest"] = "bilinear") -> Tensor:
    """First-frame labels at feature resolution, as the propagation takes them.

    Args:
        index_map: ``(H, W)`` ids of frame 0.
        size: (h, w) of the feature map.
        n_labels: K; None = max id + 1.
        mode: ``"bilinear"``: one-hot, then bilinear resize (soft, CRW); ``"nearest"``:
            nearest resize of the ids (PIL-style cell centres), then one-hot (hard, STT).

    Returns:
        ``(K, h, w)`` float32 soft one-hot labels.
    """
    if mode == "nearest":
        ids = torch.as_tensor(np.asarray(index_map, dtype=np.float32))[None, None]
        small = F.interpolate(ids, size=size, mode="nearest-exact")[0, 0]  # (h, w)
        n = int(np.max(index_map)) + 1 if n_labels is None else n_labels
        return one_hot(small.round().long().numpy(), n)
    hot = one_hot(index_map, n_labels)[None]  # (1, K, H, W)
    return F.interpolate(hot, size=size, mode="bilinear", align_corners=False)[0]


def labels_to_index(soft: Tensor, size: tuple[int, int], *, minmax: bool = False) -> np.ndarray:
    """Soft labels at feature resolution -> index map at image resolution.

    Args:
        soft: ``(K, h, w)`` propagated labels of one frame.
        size: (H, W) of the image.
        minmax: per-channel min-max normalisation after upsampling (STT,
            ``vanilla_tracker.py:234-252``); channels whose maximum is 0 are left as they are.

    Returns:
        ``(H, W)`` int64 label ids (argmax channel).
    """
    up = F.interpolate(soft[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    if minmax:
        lo = up.amin(dim=(1, 2), keepdim=True)
        hi = up.amax(dim=(1, 2), keepdim=True)
        up = torch.where(hi > 0, (up - lo) / (hi - lo + 1e-12), up)
    return up.argmax(dim=0).numpy().astype(np.int64)


def write_palette_png(path: str | Path, index_map: np.ndarray) -> None:
    """Write ids as an indexed PNG with the DAVIS palette (atomically: temp file, rename).

    Raises:
        ValueError: if an id is outside 0..255.
    """
    ids = np.asarray(index_map)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"{path}: ids must lie in 0..255 for a palette PNG, got "
                         f"[{ids.min()}, {ids.max()}]")
    img = Image.fromarray(ids.astype(np.uint8))  # 'L'; putpalette turns it into 'P' as is
    img.putpalette(davis_palette().flatten().tolist())
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def read_annotation(path: str | Path) -> np.ndarray:
    """Read a mask PNG as ids, whatever way it was stored.

    Palette ("P") values are ids; grey values are ids, except a mask whose values are only
    0 and 255, which is ONE object (DAVIS-2016-style binary masks would otherwise read as
    object 255, docs/methods.md 7.7); RGB colours map to their DAVIS palette index when all of them
    are palette colours, else black is 0 and the other colours get 1, 2, ... in sorted order.
    DAVIS void (255 in a palette PNG) stays 255: map it to 0 before making one-hot labels.

    Returns:
        ``(H, W)`` int64 ids.

    Raises:
        ValueError: if the file cannot be read as an image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "PA", "1"):  # palette indices (or a bilevel mask) are the ids
                return np.asarray(img.getchannel(0) if mode == "PA" else img).astype(np.int64)
            if mode in ("LA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                arr = np.asarray(img.getchannel(0) if mode == "LA" else img.convert("RGB"))
            else:  # L, I;16, I, F: grey values
                arr = np.asarray(img)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc}); expected a PNG mask") from exc
    if arr.ndim == 3:
        if not (arr == arr[..., :1]).all():
            return _colour_ids(arr)
        arr = arr[..., 0]  # grey stored as RGB
    values = np.unique(arr)
    if values.size and values[-1] == 255 and set(values.tolist()) <= {0, 255}:
        return (arr == 255).astype(np.int64)
    return arr.astype(np.int64)


def _colour_ids(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` colours -> ids: palette index if all are palette colours, else enumerated."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    colours, inverse = np.unique(codes, return_inverse=True)
    if set(colours.tolist()) <= {0, 0xFFFFFF}:  # black/white mask: one object
        return (codes == 0xFFFFFF).astype(np.int64)
    pal = davis_palette().astype(np.int64)
    pal_codes = {int(c): i for i, c in reversed(list(enumerate(
        (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2])))}
    if all(int(c) in pal_codes for c in colours):
        ids = np.array([pal_codes[int(c)] for c in colours], dtype=np.int64)
    else:  # sorted codes put black first when present
        ids = np.arange(len(colours), dtype=np.int64) + (0 if colours[0] == 0 else 1)
    return ids[inverse.reshape(codes.shape)]


def joints_to_heatmaps(joints: np.ndarray, size: tuple[int, int], *, sigma: float = 0.5,
                       background: bool = False) -> Tensor:
    """Joints -> un-normalised Gaussian heat-maps with peak 1 (CRW, sigma in map cells).

    Each Gaussian is centred on the cell nearest the joint and drawn within ``ceil(3 sigma)``
    cells; a joint whose window misses the map, or a non-finite joint, gives an all-zero map.
    Departure from ``draw_labelmap_np``: the window is symmetric (CRW's 4-cell window for
    sigma 0.5 stops one cell short on the far side, where the value is exp(-8)).

    Args:
        joints: ``(J, 2)`` (x, y) in map cells (image pixels / stride).
        size: (h, w) of the map.
        sigma: Gaussian sigma in cells (CRW: 0.5).
        background: prepend a channel that is 1 where every joint map is 0 (CRW).

    Returns:
        ``(J, h, w)`` float32, or ``(J + 1, h, w)`` with the background channel first.
    """
    h, w = size
    maps = np.zeros((len(joints), h, w), dtype=np.float32)
    reach = math.ceil(3 * sigma)
    for j, (x, y) in enumerate(np.asarray(joints, dtype=np.float64)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
        xs = np.arange(max(0, cx - reach), min(w, cx + reach + 1))
        ys = np.arange(max(0, cy - reach), min(h, cy + reach + 1))
        if xs.size and ys.size:
            d2 = (ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2
            maps[j, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = np.exp(-d2 / (2 * sigma**2))
    out = torch.from_numpy(maps)
    if background:
        out = torch.cat([(out.sum(0, keepdim=True) == 0).float(), out])
    return out


def decode_keypoints(heatmaps: Tensor, *, topk: int = 3,
                     size: tuple[int, int] | None = None) -> np.ndarray:
    """Joint coordinates from heat-maps: value-weighted mean of the top-k cells per joint.

    Args:
        heatmaps: ``(J, h, w)`` non-negative maps, one per joint (no background channel).
        topk: cells averaged (CRW: 3 at feature resolution; STT: 5 after upsampling).
        size: (H, W) to bilinearly upsample to first (STT); None = decode at map resolution.

    Returns:
        ``(J, 2)`` float64 (x, y) in cells of the decoded map; ``(-1, -1)`` for an all-zero
        map (invisible).
    """
    maps = heatmaps.float()
    if size is not None:
        maps = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
    width = maps.shape[2]
    flat = maps.flatten(1)  # (J, N)
    vals, ids = flat.topk(min(topk, flat.shape[1]), dim=1)
    total = vals.sum(1, keepdim=True)
    weights = vals / total.clamp_min(1e-30)
    coords = torch.stack([((ids % width) * weights).sum(1), ((ids // width) * weights).sum(1)], 1)
    coords[(flat.sum(1) == 0) | (total[:, 0] <= 0)] = -1
    return coords.double().numpy()
