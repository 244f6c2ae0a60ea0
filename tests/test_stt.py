"""STT distillation terms (STT Eq. 2-3, 8-9) and the full objective (STT Eq. 10): closed forms, dense
second implementations written here, and one training step per Table 1 row."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stcorr.config import SttConfig
from stcorr.data.lab import normalize_lab, rgb_to_lab
from stcorr.models.resnet import build_backbone
from stcorr.objectives.correlation import local_correlation
from stcorr.objectives.distillation import (
    entropy_selection,
    global_distillation_loss,
    local_distillation_loss,
    pool_fine_correlation,
    reference_code_entropy,
    shannon_entropy,
)
from stcorr.objectives.stt import TABLE1_ROWS, SttObjective, required_taps, table1_config

pytestmark = pytest.mark.usefixtures("one_thread")


def windowed_to_dense(windowed: torch.Tensor, h: int, w: int, r: int) -> torch.Tensor:
    """(B, HW, (2r+1)^2) -> (B, HW, HW) by an explicit loop over target positions."""
    out = torch.zeros(windowed.shape[0], h * w, h * w, dtype=windowed.dtype)
    k = 2 * r + 1
    for y in range(h):
        for x in range(w):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        slot = (dy + r) * k + (dx + r)
                        out[:, y * w + x, (y + dy) * w + x + dx] = windowed[:, y * w + x, slot]
    return out


def dense_pooled(fine_dense: torch.Tensor, h0: int, w0: int, norm: str) -> torch.Tensor:
    """The reference code's pseudo-label: 2x2 average pooling over reference, then target."""
    b = fine_dense.shape[0]
    ref = F.avg_pool2d(fine_dense.reshape(b * h0 * w0, 1, h0, w0), 2)  # reference axis
    ref = ref.reshape(b, h0, w0, -1).permute(0, 3, 1, 2).reshape(-1, 1, h0, w0)
    both = F.avg_pool2d(ref, 2).reshape(b, -1, (h0 // 2) * (w0 // 2)).transpose(1, 2)
    return both * (4.0 if norm == "sum" else 1.0)


@pytest.mark.parametrize("norm", ["sum", "mean"])
def test_pooled_pseudo_label_equals_dense_pooling(norm: str) -> None:
    torch.manual_seed(0)
    h0, w0, r0, r1 = 8, 6, 4, 2
    fine = local_correlation(torch.randn(2, 5, h0, w0), torch.randn(2, 5, h0, w0), r0).weights
    pooled = pool_fine_correlation(fine, (h0, w0), r0, r1, norm)  # (B, HW1, (2r1+1)^2)
    dense = dense_pooled(windowed_to_dense(fine, h0, w0, r0), h0, w0, norm)
    assert torch.allclose(windowed_to_dense(pooled, h0 // 2, w0 // 2, r1), dense, atol=1e-6)
    row_sum = 1.0 if norm == "sum" else 0.25
    assert torch.allclose(pooled.sum(-1), torch.full((2, 12), row_sum), atol=1e-5)


def test_pooling_rejects_a_fine_window_wider_than_the_coarse_one() -> None:
    fine = torch.zeros(1, 16, 49)
    with pytest.raises(ValueError, match="r0 <= 2 \\* r1"):
        pool_fine_correlation(fine, (4, 4), 3, 1)


def test_shannon_entropy_closed_forms() -> None:
    assert torch.allclose(shannon_entropy(torch.zeros(3, 169)), torch.full((3,), math.log(169)))
    assert shannon_entropy(torch.tensor([[0.0, 100.0, 0.0]])) < 1e-30
    # the reference code's sum(-log p) is K log K for a uniform row, not log K
    assert torch.allclose(reference_code_entropy(torch.zeros(1, 4)), torch.tensor([4 * math.log(4)]))


def reference_code_selection_plain(c2: np.ndarray, h: int, w: int, keep: float) -> np.ndarray:
    """docs/methods.md 2.6 steps 2-3 with numpy loops."""
    p = np.exp(c2 - c2.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    energy = (-np.log(p + 1e-12)).sum(-1).reshape(-1, h, w)
    out = np.zeros_like(energy)
    row = int(h * keep) - 1
    for b in range(energy.shape[0]):
        ranked = np.stack([np.sort(energy[b, y])[::-1] for y in range(h)])
        for y in range(h):
            for x in range(w):
                out[b, y, x] = float(energy[b, y, x] > ranked[row, x])
    return out.reshape(energy.shape[0], -1)


def test_selection_modes_keep_their_fractions() -> None:
    torch.manual_seed(1)
    c2 = torch.randn(8, 32 * 32, 169, dtype=torch.float64)
    shannon = entropy_selection(c2, (32, 32), "shannon", 0.7)
    assert torch.all(shannon.sum(1) == round(0.7 * 1024))
    entropy = shannon_entropy(c2)
    for e, keep in zip(entropy, shannon, strict=True):  # one threshold per sample
        assert e[keep == 1].max() <= e[keep == 0].min()
    code = entropy_selection(c2, (32, 32), "reference_code", 0.7)
    expected = reference_code_selection_plain(c2.numpy(), 32, 32, 0.7)
    assert np.array_equal(code.numpy(), expected)
    assert 0.42 < code.mean() < 0.52  # ~47 % (docs/methods.md 2.6), not 70 %
    assert torch.all(entropy_selection(c2, (32, 32), "none", 0.7) == 1)


def test_local_distillation_loss_equals_dense_weighted_mse() -> None:
    torch.manual_seed(2)
    h, w, r = 4, 5, 2
    student = local_correlation(torch.randn(2, 3, h, w), torch.randn(2, 3, h, w), r).weights
    target = local_correlation(torch.randn(2, 3, h, w), torch.randn(2, 3, h, w), r).weights
    weights = (torch.rand(2, h * w) > 0.3).float()
    loss = local_distillation_loss(student, target, weights)
    s, t = windowed_to_dense(student, h, w, r), windowed_to_dense(target, h, w, r)
    dense_w = weights[:, :, None].expand_as(s)  # broadcast over every reference position
    expected = (dense_w * (s - t) ** 2).sum() / (dense_w.sum() + 1e-12)
    assert torch.allclose(loss, expected, atol=1e-7)


def test_global_distillation_is_zero_when_scalings_match() -> None:
    torch.manual_seed(3)
    g_t, g_r = torch.randn(2, 16, 3, 3), torch.randn(2, 16, 3, 3)
    assert global_distillation_loss(g_t, g_r, g_t, g_r, False, 1.0) < 1e-12
    assert global_distillation_loss(g_t, g_r, g_t, g_r, True, math.sqrt(16)) < 1e-12
    assert global_distillation_loss(g_t, g_r, g_t, g_r, True, 0.07) > 1e-4


def clip_batch(b: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lab_dropped, lab_clean, rgb) of a random clip pair, channel b (2) dropped."""
    rgb = torch.rand(b, 2, 3, size, size)
    lab = normalize_lab(rgb_to_lab(rgb))
    dropped = lab.clone()
    dropped[:, :, 2] = 0.0
    return dropped * 1.5, lab, rgb


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return build_backbone("stt_teacher")  # frozen by every objective, so one serves all rows


@pytest.mark.parametrize("row", sorted(TABLE1_ROWS))
def test_every_table1_row_runs_a_training_step(row: str, teacher: torch.nn.Module) -> None:
    torch.manual_seed(4)
    config = table1_config(row)
    student = build_backbone("stt_student", out=required_taps(config))
    teacher.train()  # the objective must put it back in eval mode
    objective = SttObjective(config, student, teacher).train()
    out = objective(*clip_batch(b=1), torch.tensor([2]))
    out["loss"].backward()
    terms = sum(out[k] for k in out if k.startswith("rec_"))
    terms = terms + config.alpha * out.get("lc", 0.0) + config.beta * out.get("gc", 0.0)
    assert torch.allclose(out["loss"], terms)
    assert ("lc" in out) == config.local_distill and ("gc" in out) == config.global_distill
    assert all(p.grad is not None for p in student.parameters())  # gradients reach the student
    assert all(p.grad is None for p in teacher.parameters())  # and never the teacher
    assert not teacher.training or not config.global_distill  # the teacher stays in eval mode
    assert out["reconstruction"].shape == (1, 1, 64, 64) and torch.isfinite(out["psnr"])


def test_per_clip_channels_equal_one_shared_channel() -> None:
    torch.manual_seed(5)
    config = table1_config("pyramid")
    student = build_backbone("stt_student", out=required_taps(config)).eval()
    objective = SttObjective(config, student)
    batch = clip_batch()
    assert torch.allclose(objective(*batch, 2)["loss"], objective(*batch, torch.tensor([2, 2]))["loss"])


def test_inconsistent_configs_raise() -> None:
    student = build_backbone("stt_student")
    with pytest.raises(ValueError, match="no teacher"):
        SttObjective(SttConfig(global_distill=True), student, None)
    bad = SttConfig(levels=("res4",), radii=(6,), global_distill=False)
    with pytest.raises(ValueError, match="local_distill needs"):
        SttObjective(bad, student)
    with pytest.raises(ValueError, match="unknown"):
        table1_config("no such row")


def test_lab_to_rgb_inverts_rgb_to_lab_and_matches_skimage() -> None:
    from skimage.color import lab2rgb

    from stcorr.data.lab import lab_to_rgb

    torch.manual_seed(6)
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    rgb[0, :, 0, 0] = 0.002  # very dark: the linear branches of both directions
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-6)
    lab = rgb_to_lab(rgb)
    lab[:, 2] = 0.0  # a dropped b channel, as the student sees it
    expected = torch.from_numpy(lab2rgb(lab[1].permute(1, 2, 0).numpy())).permute(2, 0, 1)
    assert torch.allclose(lab_to_rgb(lab)[1], expected, atol=1e-5)


def test_rgb_student_sees_the_dropped_clip_converted_to_rgb() -> None:
    """student_input='rgb' == a Lab student fed by hand with the RGB of the dropped clip."""
    from stcorr.data.lab import denormalize_lab, lab_to_rgb, normalize_rgb

    torch.manual_seed(7)
    config = table1_config("pyramid").model_copy(update={"student_input": "rgb"})
    student = build_backbone("stt_student", out=required_taps(config)).eval()
    dropped, clean, rgb = clip_batch()
    dropped = dropped / 1.5  # a valid normalised Lab clip (b dropped to neutral)
    as_rgb = normalize_rgb(lab_to_rgb(denormalize_lab(dropped)))
    by_hand = SttObjective(config.model_copy(update={"student_input": "lab"}), student)(as_rgb, clean, rgb, 2)
    out = SttObjective(config, student)(dropped, clean, rgb, 2)
    assert torch.allclose(out["loss"], by_hand["loss"])
    assert not torch.allclose(out["loss"], SttObjective(config.model_copy(
        update={"student_input": "lab"}), student)(dropped, clean, rgb, 2)["loss"])
