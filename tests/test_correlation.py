"""Windowed local correlation (STT Eq. 4) and frame reconstruction (STT Eq. 5-7) against plain dense
versions written here: an HW x HW masked softmax, explicit loops, closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stcorr.objectives.correlation import (
    apply_local_correlation,
    local_correlation,
    local_dot_products,
    window_valid_mask,
)
from stcorr.objectives.reconstruction import pyramid_reconstruction, reconstruct

pytestmark = pytest.mark.usefixtures("one_thread")


def dense_window_mask(h: int, w: int, r: int) -> torch.Tensor:
    """(HW, HW) bool: reference j inside the (2r+1)^2 square around target i."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None]).abs() <= r) & ((xs[:, None] - xs[None]).abs() <= r)


def dense_attention(f_t: torch.Tensor, f_r: torch.Tensor, r: int, scale: float) -> torch.Tensor:
    """The reference code's formulation: HW x HW dot products, window mask, softmax."""
    h, w = f_t.shape[2:]
    logits = torch.einsum("bci,bcj->bij", f_t.flatten(2), f_r.flatten(2)) * scale
    return logits.masked_fill(~dense_window_mask(h, w, r), float("-inf")).softmax(-1)


def to_dense(windowed: torch.Tensor, h: int, w: int, r: int) -> torch.Tensor:
    """(B, HW, (2r+1)^2) window slots -> (B, HW, HW), by an explicit loop over positions."""
    out = torch.zeros(windowed.shape[0], h * w, h * w, dtype=windowed.dtype)
    for y in range(h):
        for x in range(w):
            for k in range((2 * r + 1) ** 2):
                yy, xx = y + k // (2 * r + 1) - r, x + k % (2 * r + 1) - r
                if 0 <= yy < h and 0 <= xx < w:
                    out[:, y * w + x, yy * w + xx] = windowed[:, y * w + x, k]
    return out


@pytest.mark.parametrize(
    ("h", "w", "r", "tile", "chunk"),
    [(7, 9, 2, 3, 1 << 22), (10, 6, 3, 4, 1), (5, 5, 4, 8, 1 << 22), (12, 12, 6, 8, 1)],
)
def test_windowed_softmax_equals_dense_masked_softmax(h, w, r, tile, chunk) -> None:
    torch.manual_seed(0)
    f_t, f_r = torch.randn(2, 6, h, w), torch.randn(2, 6, h, w)
    raw = local_dot_products(f_t, f_r, r, tile=tile, chunk_elements=chunk)
    corr = local_correlation(f_t, f_r, r, tile=tile)
    dense = dense_attention(f_t, f_r, r, 1.0 / math.sqrt(6))
    assert (to_dense(corr.weights, h, w, r) - dense).abs().max() < 1e-5
    assert torch.allclose(raw, corr.raw, atol=1e-5)
    # rows sum to 1 over the valid slots and are exactly 0 at out-of-frame slots
    assert torch.allclose(corr.weights.sum(-1), torch.ones(2, h * w), atol=1e-5)
    assert torch.all(corr.weights[:, ~corr.valid] == 0)
    assert torch.all(corr.raw[:, ~corr.valid] == 0)


def test_valid_mask_counts_match_closed_form() -> None:
    h, w, r = 9, 7, 2
    valid = window_valid_mask(h, w, r, torch.device("cpu")).reshape(h, w, -1)
    assert valid[0, 0].sum() == (r + 1) ** 2  # corner: a quarter window plus the axes
    assert valid[4, 3].sum() == (2 * r + 1) ** 2  # interior: the whole window
    assert valid[0, 3].sum() == (r + 1) * (2 * r + 1)  # top edge: half a window


def test_raw_correlation_is_shifted_dot_product_with_zero_padding() -> None:
    torch.manual_seed(1)
    h, w, r = 6, 5, 2
    f_t, f_r = torch.randn(1, 4, h, w), torch.randn(1, 4, h, w)
    raw = local_dot_products(f_t, f_r, r).reshape(1, h, w, 2 * r + 1, 2 * r + 1)
    padded = F.pad(f_r, (r, r, r, r))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted = padded[:, :, r + dy : r + dy + h, r + dx : r + dx + w]
            expected = (f_t * shifted).sum(1)  # (1, H, W)
            assert torch.allclose(raw[..., dy + r, dx + r], expected, atol=1e-5)


def test_gradients_match_dense_autograd() -> None:
    torch.manual_seed(2)
    h, w, r = 7, 6, 2
    f_t = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    f_r = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, h * w, (2 * r + 1) ** 2, dtype=torch.float64)
    (local_dot_products(f_t, f_r, r, tile=4, chunk_elements=1) * g).sum().backward()
    grads = (f_t.grad.clone(), f_r.grad.clone())
    f_t.grad, f_r.grad = None, None
    dense = torch.einsum("bci,bcj->bij", f_t.flatten(2), f_r.flatten(2))
    (dense * to_dense(g, h, w, r)).sum().backward()  # same loss, written densely
    assert torch.allclose(grads[0], f_t.grad, atol=1e-10)
    assert torch.allclose(grads[1], f_r.grad, atol=1e-10)


def test_softmax_gradients_match_dense_attention() -> None:
    torch.manual_seed(6)
    h, w, r = 6, 5, 2
    f_t = torch.randn(1, 4, h, w, dtype=torch.float64, requires_grad=True)
    f_r = torch.randn(1, 4, h, w, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, h * w, h * w, dtype=torch.float64)
    (to_dense(local_correlation(f_t, f_r, r, scale=0.3).weights, h, w, r) * g).sum().backward()
    grads = (f_t.grad.clone(), f_r.grad.clone())
    f_t.grad, f_r.grad = None, None
    (dense_attention(f_t, f_r, r, 0.3) * g).sum().backward()
    assert torch.allclose(grads[0], f_t.grad, atol=1e-10)
    assert torch.allclose(grads[1], f_r.grad, atol=1e-10)


def test_apply_equals_dense_attention_times_values() -> None:
    torch.manual_seed(3)
    h, w, r = 8, 7, 3
    f_t, f_r, values = torch.randn(2, 5, h, w), torch.randn(2, 5, h, w), torch.randn(2, 3, h, w)
    corr = local_correlation(f_t, f_r, r, scale=0.5)
    out = apply_local_correlation(corr.weights, values, r)
    dense = dense_attention(f_t, f_r, r, 0.5) @ values.flatten(2).transpose(1, 2)  # (B, HW, D)
    assert torch.allclose(out.flatten(2).transpose(1, 2), dense, atol=1e-5)


def test_apply_gradients_match_dense_autograd() -> None:
    torch.manual_seed(5)
    h, w, r = 6, 7, 2
    weights = torch.rand(2, h * w, (2 * r + 1) ** 2, dtype=torch.float64, requires_grad=True)
    values = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, h, w, dtype=torch.float64)
    (apply_local_correlation(weights, values, r, tile=4) * g).sum().backward()
    grads = (weights.grad.clone(), values.grad.clone())
    weights.grad, values.grad = None, None
    dense = to_dense(weights, h, w, r) @ values.flatten(2).transpose(1, 2)  # (B, HW, D)
    (dense * g.flatten(2).transpose(1, 2)).sum().backward()
    valid = window_valid_mask(h, w, r, torch.device("cpu"))
    assert torch.allclose(grads[0][:, valid], weights.grad[:, valid], atol=1e-10)
    assert torch.allclose(grads[1], values.grad, atol=1e-10)


def one_hot_features(h: int, w: int, scale: float) -> torch.Tensor:
    """(1, HW, H, W): orthogonal per position, so each position matches only itself."""
    return (torch.eye(h * w) * scale).reshape(1, h * w, h, w)


def test_identical_frames_reconstruct_the_reference() -> None:
    torch.manual_seed(4)
    image = torch.rand(1, 1, 12, 12)
    feats = one_hot_features(12, 12, 30.0)
    corr = local_correlation(feats, feats, 3, scale=1.0)  # stride 1: grid = image
    assert torch.allclose(reconstruct(corr, image), image, atol=1e-5)
    coarse = one_hot_features(6, 6, 30.0)  # stride 2: MAST down-sampling, then bilinear up
    corrs = {"res3": corr, "res4": local_correlation(coarse, coarse, 2, scale=1.0)}
    losses, images = pyramid_reconstruction(corrs, image, image, "l1", 20.0)
    expected = F.interpolate(image[:, :, ::2, ::2], size=(12, 12), mode="bilinear")
    assert torch.allclose(images["res4"], expected, atol=1e-5)
    assert losses["rec_res3"] < 1e-4


def test_bad_shapes_raise_one_line_errors() -> None:
    with pytest.raises(ValueError, match="expected f_t and f_r of one shape"):
        local_dot_products(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5), 1)
    corr = local_correlation(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), 1)
    with pytest.raises(ValueError, match="not an integer multiple"):
        reconstruct(corr, torch.zeros(1, 1, 10, 10))
