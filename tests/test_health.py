"""Learning-health diagnostics against closed forms: each check fires exactly when it should."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from stcorr.config import SttConfig
from stcorr.data.lab import normalize_lab, rgb_to_lab
from stcorr.models.resnet import build_backbone
from stcorr.objectives.correlation import LocalCorrelation, window_valid_mask
from stcorr.objectives.crw import walk_loss
from stcorr.objectives.gradients import gradient_shares
from stcorr.objectives.moco import MoCo
from stcorr.objectives.reconstruction import copy_reconstruction, reconstruct, reconstruction_psnr
from stcorr.objectives.stt import SttObjective
from stcorr.train.health import assess_crw, assess_pretrain, assess_stt, final

pytestmark = pytest.mark.usefixtures("one_thread")


class _Tiny(nn.Module):
    out_channels = {"res5": 8}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"res5": self.body(x)}


def _moco_history(images: int, queue: int, steps: int = 6, batch: int = 4) -> list[dict[str, float]]:
    """MoCo steps cycling over ``images`` distinct images; the logged scalars per step."""
    torch.manual_seed(0)
    moco = MoCo(_Tiny(), dim=4, hidden=16, queue=queue, momentum=0.9, tau=0.2).train()
    pixels = torch.randn(images, 3, 16, 16)
    history = []
    for step in range(steps):
        ids = torch.arange(step * batch, (step + 1) * batch) % images
        out = moco(pixels[ids], pixels[ids] + 0.01 * torch.randn(batch, 3, 16, 16), ids)
        keys = ("loss", "acc1", "acc1_chance", "positive_in_queue")
        history.append({k: float(out[k].detach()) for k in keys})
    return history


def test_a_queue_holding_the_positives_is_flagged() -> None:
    crowded = _moco_history(images=4, queue=8)  # every image is in the queue from step 2 on
    assert [h["positive_in_queue"] for h in crowded] == [0.0] + [1.0] * 5
    assert crowded[0]["acc1_chance"] == pytest.approx(100 / 9)
    health = assess_pretrain(crowded, queue=8, images=4)
    assert any("queue = 8 >= 4 distinct images" in f and "100% of queries" in f for f in health.findings)
    roomy = _moco_history(images=64, queue=8)  # 24 images seen, never twice: no false negatives
    assert all(h["positive_in_queue"] == 0.0 for h in roomy)
    assert not any("distinct images" in f for f in assess_pretrain(roomy, queue=8, images=64).findings)


def test_pretrain_at_chance_learned_nothing_and_well_above_it_did() -> None:
    k = 1024
    at_chance = [{"loss": math.log(1 + k), "acc1": 100 / (1 + k)}] * 6
    health = assess_pretrain(at_chance, queue=k, images=256)
    assert not health.learned
    verdict = next(f for f in health.findings if "learned nothing" in f)
    assert "top-1 accuracy 0.1% (chance 0.10%)" in verdict and "ln(1+K) = 6.93" in verdict
    assert "the queue holds copies of the positives" in verdict
    good = assess_pretrain([{"loss": 2.0, "acc1": 60.0}] * 6, queue=128, images=512)
    assert good.learned and good.findings == [] and "pretrain health: ok" in good.line()


def test_final_is_the_mean_of_the_last_third() -> None:
    history = [{"x": float(i)} for i in range(9)] + [{"y": 1.0}]
    assert final(history, "x") == pytest.approx((6 + 7 + 8) / 3)
    assert final(history, "z") is None


def _identity_correlation(b: int, h: int, w: int, r: int) -> LocalCorrelation:
    k = (2 * r + 1) ** 2
    weights = torch.zeros(b, h * w, k)
    weights[:, :, k // 2] = 1.0  # all weight on displacement (0, 0)
    return LocalCorrelation(weights, weights.clone(), window_valid_mask(h, w, r, torch.device("cpu")),
                            r, h, w)


def test_an_identity_copy_batch_scores_the_copy_psnr() -> None:
    torch.manual_seed(1)
    ref, tgt = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    corr = _identity_correlation(2, 8, 8, 3)  # stride 4
    assert torch.equal(reconstruct(corr, ref), copy_reconstruction(corr, ref))
    copied = reconstruction_psnr(copy_reconstruction(corr, ref), tgt)
    assert reconstruction_psnr(reconstruct(corr, ref), tgt) == copied


def test_gradient_shares_of_scaled_terms() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    tap = x * 1.0
    shares = gradient_shares({"a": 2.0 * tap.sum(), "b": 3.0 * tap.sum(), "c": tap.detach().sum()}, [tap])
    assert float(shares["a"]) == pytest.approx(0.4) and float(shares["b"]) == pytest.approx(0.6)
    assert float(shares["c"]) == 0.0


def test_stt_flags_a_two_by_two_res5_grid_and_no_gain_over_copying() -> None:
    torch.manual_seed(2)
    student = build_backbone("stt_student", out=("res3", "res4", "res5"))
    objective = SttObjective(SttConfig(global_distill=True), student, build_backbone("stt_teacher")).train()
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4), size=(64, 64), mode="bilinear")
    rgb = torch.stack([smooth, smooth], dim=1)  # a static pair: copying the same place is right
    lab = normalize_lab(rgb_to_lab(rgb))
    out = objective(lab * 1.5, lab, rgb, 1, diagnose=True)
    assert float(out["gc_grid"]) == 2.0 and float(out["copy_psnr"]) > 30.0
    shares = [float(out[f"grad_share_{t}"]) for t in ("rec", "lc", "gc")]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    history = [{k: float(v.detach()) for k, v in out.items() if v.dim() == 0}] * 3
    health = assess_stt(history, global_distill=True, crop=64)
    assert any("2x2 res5 grid (crop 64 px" in f for f in health.findings)
    assert not health.learned and any("learned nothing: reconstruction PSNR" in f for f in health.findings)
    moving = [{"psnr": 27.0, "copy_psnr": 22.0, "psnr_gain": 5.0, "gc_grid": 4.0, "grad_share_rec": 0.7,
               "grad_share_lc": 0.2, "grad_share_gc": 0.1}] * 3
    assert assess_stt(moving, global_distill=True, crop=128).findings == []


def test_crw_walk_accuracy_against_chance() -> None:
    n = 16
    q = torch.eye(n)[None, None].expand(2, 4, n, n).contiguous()  # nodes that never change
    out = walk_loss(q, tau=0.05)
    assert float(out["walk_acc"]) == 1.0 and float(out["walk_chance"]) == pytest.approx(1 / n)
    assert assess_crw([{k: float(out[k]) for k in ("walk_acc", "walk_chance", "loss")}]).learned
    lost = assess_crw([{"walk_acc": 1.5 / n, "walk_chance": 1 / n, "loss": 2.7}])
    assert not lost.learned and "walk accuracy 9.4% vs chance 6.2%" in lost.findings[0]


def test_moco_on_a_tiny_generated_set_beats_chance_within_a_few_dozen_steps() -> None:
    """64 generated images, 48-px views, a 32-key queue (smaller than the data): after 40 steps
    the top-1 accuracy is well above chance and the health check says it learned."""
    import numpy as np

    from stcorr.config import SynthConfig
    from stcorr.data.augment import moco_view
    from stcorr.data.synthetic import image_sample

    cfg = SynthConfig(image_size=64)
    images = [torch.from_numpy(image_sample(cfg, i)[0]).permute(2, 0, 1) for i in range(64)]
    torch.manual_seed(0)
    moco = MoCo(build_backbone("stt_teacher", out=("res5",)), dim=32, hidden=128, queue=32,
                momentum=0.99, tau=0.2).train()
    params = [p for p in moco.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng, history = np.random.default_rng(0), []
    for _ in range(40):
        ids = rng.choice(64, 16, replace=False)
        views = [torch.stack([moco_view(images[i], 48, rng) for i in ids]) for _ in range(2)]
        out = moco(*views, torch.as_tensor(ids))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        history.append({k: float(out[k].detach()) for k in ("loss", "acc1", "positive_in_queue")})
    chance = 100.0 / 33
    assert history[0]["acc1"] == 100.0  # the random initial queue: trivially easy at first
    assert final(history, "acc1") > 10 * chance
    health = assess_pretrain(history, queue=32, images=64)
    assert health.learned and health.findings == [], health.findings


def test_setup_warnings_before_training() -> None:
    from stcorr.train.health import setup_warnings

    assert "1024 >= 256 distinct images" in setup_warnings("pretrain", {"queue": 1024, "images": 256})[0]
    assert setup_warnings("pretrain", {"queue": 256, "images": 1024}) == []
    on = setup_warnings("finetune", {"objective": "stt", "global_distill": True, "crop": 64})
    assert "2x2 res5 grid (crop 64 px" in on[0]
    off = setup_warnings("finetune", {"objective": "stt", "global_distill": False, "crop": 96})
    assert "global distillation (STT Eq. 2-3) is off: at crop 96 px the res5 grid would be 3x3" in off[0]
    assert setup_warnings("finetune", {"objective": "stt", "global_distill": True, "crop": 128}) == []
    assert setup_warnings("finetune", {"objective": "crw", "crop": 64}) == []
