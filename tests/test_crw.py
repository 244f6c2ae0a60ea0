"""Contrastive random walk (Jabri et al., NeurIPS 2020): closed forms and a loop-by-loop walk."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stcorr.config import CrwConfig
from stcorr.objectives.crw import (
    CRW,
    extract_patches,
    random_resized_crop,
    transitions,
    walk_loss,
)


def _random_nodes(b: int, t: int, n: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, t, n, c, generator=g), dim=-1)


def test_identical_frames_with_orthogonal_nodes_return_home() -> None:
    q = torch.eye(6)[:5].expand(2, 4, 5, 6)  # one-hot nodes, the same in every frame
    out = walk_loss(q, tau=0.05)
    assert out["loss"].item() < 1e-6
    assert out["acc_k2"].item() == out["acc_k3"].item() == 1.0
    assert set(out) == {"loss", "xent_k2", "xent_k3", "acc_k2", "acc_k3", "walk_acc", "walk_chance",
                        "affinity"}
    assert out["walk_acc"].item() == 1.0 and out["walk_chance"].item() == pytest.approx(1 / 5)


def test_uniform_transitions_give_log_n() -> None:
    n = 7
    same = torch.ones(1, 5, n, 3) / math.sqrt(3)  # all affinities equal -> P = 1/N exactly
    assert abs(walk_loss(same, tau=0.05)["loss"].item() - math.log(n)) < 1e-6
    hot = walk_loss(_random_nodes(2, 4, n, 16), tau=1e4)  # high tau -> near-uniform rows
    assert abs(hot["loss"].item() - math.log(n)) < 1e-3


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_transition_rows_sum_to_one(p: float) -> None:
    p_fwd, p_bwd = transitions(_random_nodes(2, 4, 9, 8), tau=0.05, edge_dropout=p)
    assert p_fwd.shape == p_bwd.shape == (2, 3, 9, 9)
    torch.testing.assert_close(p_fwd.sum(-1), torch.ones(2, 3, 9))
    torch.testing.assert_close(p_bwd.sum(-1), torch.ones(2, 3, 9))


def test_edge_dropout_masks_are_independent_with_rate_p() -> None:
    torch.manual_seed(0)
    p_fwd, p_bwd = transitions(_random_nodes(4, 3, 40, 8), tau=1.0, edge_dropout=0.5)
    dropped_fwd, dropped_bwd = p_fwd == 0, p_bwd.transpose(-1, -2) == 0
    for dropped in (dropped_fwd, dropped_bwd):
        assert abs(dropped.float().mean().item() - 0.5) < 0.03  # not 1 - 0.5^2 = 0.75
    both = (dropped_fwd & dropped_bwd).float().mean().item()
    assert abs(both - 0.25) < 0.03  # independent masks: P(both dropped) = p^2


def _loop_loss(q: torch.Tensor, tau: float) -> torch.Tensor:
    """Second opinion: softmax by hand, each palindrome multiplied out as the code's `aar`."""
    b_size, t_len = q.shape[:2]
    total = []
    for k in range(2, t_len):  # never the length-1 palindrome
        per_clip = []
        for b in range(b_size):
            fwd, bwd = [], []
            for t in range(t_len - 1):
                e = torch.exp(q[b, t] @ q[b, t + 1].T / tau)
                fwd.append(e / e.sum(dim=1, keepdim=True))
                e_back = e.T
                bwd.append(e_back / e_back.sum(dim=1, keepdim=True))
            chain = fwd[:k] + bwd[:k][::-1]
            walk = chain[0]
            for step in chain[1:]:
                walk = walk @ step
            per_clip.append(-torch.log(torch.diagonal(walk) + 1e-20))
        total.append(torch.cat(per_clip).mean())
    return torch.stack(total).mean()


def test_vectorised_loss_equals_explicit_loops() -> None:
    q = _random_nodes(2, 6, 10, 12, seed=3).double()
    out = walk_loss(q, tau=0.1)
    torch.testing.assert_close(out["loss"].double(), _loop_loss(q, 0.1), rtol=1e-5, atol=1e-6)
    assert {k for k in out if k.startswith("xent")} == {"xent_k2", "xent_k3", "xent_k4", "xent_k5"}


def test_patch_grid_order_and_identity_crop() -> None:
    frames = torch.randn(1, 2, 3, 256, 256)
    patches = extract_patches(frames, 64, 32)
    assert patches.shape == (1, 2, 49, 3, 64, 64)  # 7x7 grid, row-major
    torch.testing.assert_close(patches[0, 1, 7 * 2 + 5], frames[0, 1, :, 64:128, 160:224])
    flat = patches[0, 0]
    same = random_resized_crop(flat, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(same, flat, atol=1e-4, rtol=0)  # full-size box: identity
    jittered = random_resized_crop(flat, scale=(0.7, 0.9))
    assert jittered.shape == flat.shape and not torch.allclose(jittered, flat)


def test_full_module_forward_backward_at_256px() -> None:
    torch.manual_seed(0)
    # patch stride 64 (4x4 grid) instead of 32 keeps this CPU test within its time budget
    cfg = CrwConfig(patch_stride=64)
    model = CRW.from_config(cfg, "resnet18").train()
    out = model(torch.randn(1, 4, 3, 256, 256))
    assert out["affinity"].shape == (1, 16, 16) and not out["affinity"].requires_grad
    assert torch.isfinite(out["loss"]) and {"xent_k2", "xent_k3"} <= set(out)
    out["loss"].backward()
    for param in (model.head.weight, model.encoder.conv1.weight, model.encoder.layer4[1].conv2.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_dense_nodes_and_bad_input() -> None:
    model = CRW(nodes="dense", dim=16).train()
    out = model(torch.randn(1, 3, 3, 48, 32))
    assert out["affinity"].shape == (1, 24, 24)  # 6x4 res5 cells at stride 8
    out["loss"].backward()
    assert model.head.weight.grad is not None
    assert "layer4.1.conv2.weight" in model.encoder_state()
    with pytest.raises(ValueError, match="expected \\(B, T>=3, 3, H, W\\)"):
        model(torch.randn(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match="expected at least one 64x64 patch"):
        CRW()(torch.randn(1, 3, 3, 32, 32))
