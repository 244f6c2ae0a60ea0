"""Synthetic training videos that need correspondence: layer speeds against the config, camera shake,
motion blur, textures and palettes (tests/test_synthetic.py holds ground truth, layouts and files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthcfg import tiny

from stcorr.config import SynthConfig
from stcorr.data.lab import normalize_lab, rgb_to_lab
from stcorr.data.synthetic import (
    blur,
    compose,
    generate,
    image_sample,
    video_scene,
)
from stcorr.data.synthetic import kinematics as kin
from stcorr.data.synthetic.look import BENCHMARK_LOOK, CAMOUFLAGE, draw_look
from stcorr.data.synthetic.palette import STYLE_P, hsv_to_rgb, random_palette
from stcorr.data.synthetic.scene import VideoScene
from stcorr.data.synthetic.textures import TEXTURE_KINDS, pattern, pink_noise, texture
from stcorr.objectives.reconstruction import reconstruction_psnr

# ---------------------------------------------------------------- motion statistics


def layer_paths(scene: VideoScene) -> list[np.ndarray]:
    """``(T, 2)`` path of every moving layer: each object's centre and the background's smooth pan."""
    return [m.centers for m in scene.motions] + [scene.camera.smooth]


@pytest.mark.parametrize(
    ("size", "frames", "median", "p95"),
    [((48, 64), 8, 2.0, 8.0), ((96, 128), 4, 4.5, 18.0)],  # 8 frames: object 1 may exit; the defaults
)
def test_layer_speeds_are_log_normal_with_the_configured_median_and_p95(
    size: tuple[int, int], frames: int, median: float, p95: float
) -> None:
    # Small frames keep 120 clips fast; speeds are in px/frame at video_size, whatever it is.
    cfg = tiny(0, video_size=size, video_frames=frames, objects=3, speed_median=median, speed_p95=p95,
               motion_blur=False)  # fmt: skip
    steps = []
    for i in range(120):
        for path in layer_paths(video_scene(cfg, i)):
            step = np.linalg.norm(np.diff(path, axis=0), axis=1)  # (T - 1,) px per frame pair
            np.testing.assert_allclose(step, step[0], rtol=1e-9)  # a layer keeps its speed: turns, no braking
            steps.append(step)
    every = np.concatenate(steps)  # 120 clips x 4 layers x (T - 1) frame pairs
    assert np.median(every) == pytest.approx(cfg.speed_median, rel=0.15)
    assert np.percentile(every, 95) == pytest.approx(cfg.speed_p95, rel=0.15)


def test_speed_draws_hit_median_and_p95_exactly_in_the_limit() -> None:
    spec = kin.MotionSpec(4.5, 18.0)
    rng = np.random.default_rng(0)
    speeds = np.array([kin.draw_speed(rng, spec) for _ in range(20000)])
    assert np.median(speeds) == pytest.approx(4.5, rel=0.03)
    assert np.percentile(speeds, 95) == pytest.approx(18.0, rel=0.04)
    assert spec.sigma == pytest.approx(np.log(4.0) / 1.6449, rel=1e-4)


def test_camera_shake_is_sub_pixel_and_added_to_the_smooth_pan() -> None:
    cfg = tiny(0, video_size=(48, 64), video_frames=8, jitter=0.5)
    shakes, offsets = [], []
    for i in range(4):
        camera = video_scene(cfg, i).camera
        shakes.append(camera.offsets - camera.smooth)
        offsets.append(camera.offsets)
    shake, origin = np.concatenate(shakes), np.concatenate(offsets)  # (4 T, 2)
    assert np.abs(shake).max() <= cfg.jitter and np.abs(shake).max() > 0.8 * cfg.jitter
    assert (np.abs(origin - np.rint(origin)) > 1e-6).all()  # never on the pixel grid
    assert len(np.unique(np.round(shake, 6))) == shake.size  # independent per frame and axis
    still = tiny(0, video_size=(48, 64), video_frames=8, jitter=0.0)
    camera = video_scene(still, 0).camera
    np.testing.assert_array_equal(camera.offsets, camera.smooth)


def test_a_fast_object_leaves_and_comes_back_a_slow_one_cannot() -> None:
    rng = np.random.default_rng(0)
    path = kin.exit_bounce(rng, 24, (192, 256), 40.0, 15.0)
    assert path is not None
    outside = np.maximum.reduce([-path[:, 0], path[:, 0] - 192, -path[:, 1], path[:, 1] - 256])
    assert outside[0] < 0 and (outside > 40.0).any() and outside[-1] < 0
    np.testing.assert_allclose(np.linalg.norm(np.diff(path, axis=0), axis=1), 15.0)
    assert kin.exit_bounce(rng, 24, (192, 256), 40.0, 1.0) is None  # 23 px of travel: cannot


def test_generator_rejects_p95_below_median(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.synth\.speed_p95: expected >= speed_median"):
        generate(tmp_path / "x", tiny(speed_median=5.0, speed_p95=4.0))


def ab_copy_psnr(cfg: SynthConfig, clips: int, gap: int = 2) -> float:
    """PSNR of copying a/b (normalised Lab) from frame t to frame t + gap at the same pixel.

    ``reconstruction_psnr`` (data range 2.0) on one batch holding every pair of every clip: its
    MSE is pooled, then turned into dB (accumulated here, so the batch never sits in memory).
    """
    squared, count = 0.0, 0
    for i in range(clips):
        rgb = torch.from_numpy(video_scene(cfg, i).frames).permute(0, 3, 1, 2).float() / 255.0
        ab = normalize_lab(rgb_to_lab(rgb))[:, 1:]  # (T, 2, H, W)
        squared += float((ab[gap:] - ab[:-gap]).pow(2).sum())
        count += ab[gap:].numel()
    rms = torch.tensor(squared / count).sqrt().reshape(1, 1, 1, 1)
    return float(reconstruction_psnr(torch.zeros_like(rms), rms, data_range=2.0))  # MSE = rms^2


def test_copying_the_same_position_no_longer_reconstructs_the_frame() -> None:
    new = SynthConfig(images=0)  # the default training clips: 192x256, 24 frames
    old = new.model_copy(update=dict(speed_median=1.0, speed_p95=2.5, jitter=0.0, motion_blur=False))
    fast, slow = ab_copy_psnr(new, 8), ab_copy_psnr(old, 8)  # same looks, only the motion differs
    assert fast < 30.0, fast  # identical frames: infinite
    assert slow - fast >= 3.0, (slow, fast)


# ---------------------------------------------------------------- motion blur


def test_line_taps_are_a_centred_box_along_the_motion() -> None:
    dy, dx, w = blur.line_taps(np.array([0.0, 8.0]))  # 8 px/frame to the right: a 4 px smear
    assert w.sum() == pytest.approx(1.0) and (dy == 0).all()
    assert set(dx.tolist()) == {-2, -1, 0, 1, 2} and np.allclose(w, w[::-1])
    assert blur.kernel_radius(8.0) >= np.abs(dx).max()
    dy, dx, w = blur.line_taps(np.array([0.3, -0.4]))  # under MIN_BLUR: left sharp
    assert (dy.tolist(), dx.tolist(), w.tolist()) == ([0], [0], [1.0])


def test_a_panned_background_is_smeared_along_the_pan_only() -> None:
    canvas = np.random.default_rng(0).uniform(0, 255, (80, 80, 3)).astype(np.float32)
    smooth = np.stack([np.full(3, 20.0), 20.0 + 10.0 * np.arange(3)], axis=1)  # 10 px/frame along x
    camera = kin.CameraPan(smooth, smooth, 40, blur.kernel_radius(10.0))
    sharp = compose.background_frames(canvas, camera, (32, 32), smear=False)[1].mean(axis=-1)
    smeared = compose.background_frames(canvas, camera, (32, 32), smear=True)[1].mean(axis=-1)
    along = np.diff(smeared, axis=1).var() / np.diff(sharp, axis=1).var()
    across = np.diff(smeared, axis=0).var() / np.diff(sharp, axis=0).var()
    assert along < 0.3 and across > 2.0 * along


def test_blur_keeps_masks_of_the_central_pose_and_interiors_exact() -> None:
    sharp = video_scene(tiny(0, video_size=(96, 128), video_frames=8, motion_blur=False), 1)
    blurred = video_scene(tiny(0, video_size=(96, 128), video_frames=8, motion_blur=True), 1)
    np.testing.assert_array_equal(blurred.masks, sharp.masks)  # blur draws nothing from the rng
    np.testing.assert_array_equal(blurred.object_alpha, sharp.object_alpha)
    assert (blurred.frames != sharp.frames).mean() > 0.5
    for k in range(1, blurred.object_alpha.shape[0] + 1):  # interiors: coverage 1, frame = layer
        on = blurred.masks == k
        same = (blurred.frames[on] == blurred.object_rgb[k - 1][on]).all(axis=-1)
        assert same.mean() > 0.5
    assert (blurred.object_rgb[~blurred.object_alpha] == 0).all()


# ---------------------------------------------------------------- textures and palettes


def radial_power_slope(field: np.ndarray) -> float:
    """Slope of the radially averaged power spectrum in log-log, over 2-32 cycles per side."""
    n = field.shape[0]
    power = np.abs(np.fft.fftshift(np.fft.fft2(field - field.mean()))) ** 2
    yy, xx = np.indices(power.shape) - n // 2
    radius = np.rint(np.hypot(yy, xx)).astype(int)
    mean = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
    k = np.arange(2, 33)
    return float(np.polyfit(np.log(k), np.log(mean[k]), 1)[0])


@pytest.mark.parametrize("beta", [1.5, 2.0, 2.5])
def test_pink_noise_has_a_one_over_f_spectrum(beta: float) -> None:
    slope = radial_power_slope(pink_noise(np.random.default_rng(0), (128, 128), beta))
    assert slope == pytest.approx(-beta, abs=0.25)


def test_pink_pattern_falls_between_f_minus_1_5_and_f_minus_3() -> None:
    for seed in range(4):
        slope = radial_power_slope(pattern(np.random.default_rng(seed), (128, 128), "pink"))
        assert -3.0 <= slope <= -1.5, slope


@pytest.mark.parametrize("kind", TEXTURE_KINDS)
def test_every_texture_kind_is_finite_and_varied(kind: str) -> None:
    rng = np.random.default_rng(1)
    values = pattern(rng, (48, 64), kind)
    assert values.shape == (48, 64) and values.min() >= 0.0 and values.max() <= 1.0 and values.std() > 0.05
    rgb = texture(rng, (48, 64), random_palette(rng, style="vivid"), kind=kind)
    assert rgb.dtype == np.float32 and np.isfinite(rgb).all()


def test_palettes_are_grey_muted_or_vivid_in_the_configured_shares() -> None:
    styles = []
    for seed in range(2000):
        rgb = random_palette(np.random.default_rng(seed))
        chroma = (rgb.max(axis=1) - rgb.min(axis=1)) / rgb.max(axis=1)  # HSV saturation
        styles.append(0 if chroma.max() < 1e-6 else 1 if chroma.max() <= 0.3 + 1e-4 else 2)
    assert np.bincount(styles, minlength=3) / len(styles) == pytest.approx(STYLE_P, abs=0.03)
    grey = hsv_to_rgb(np.array([[0.3, 0.0, 0.5]]))
    assert np.allclose(grey, 0.5)


def test_camouflaged_objects_wear_the_background_colours() -> None:
    flags, inside = [], []
    for seed in range(200):
        look = draw_look(np.random.default_rng(seed), (64, 96), 3)
        flags += look.camouflaged
        lo, hi = look.bg_colours.min(axis=0) - 30.0, look.bg_colours.max(axis=0) + 30.0
        for sprite, hidden in zip(look.sprites, look.camouflaged, strict=True):
            if hidden:  # its colours are the background's: the typical pixel lies between them
                typical = np.median(sprite.texture.reshape(-1, 3), axis=0)
                inside.append(bool(((typical >= lo) & (typical <= hi)).all()))
    assert np.mean(flags) == pytest.approx(CAMOUFLAGE, abs=0.05)
    assert all(inside) and len(inside) > 100
    plain = draw_look(np.random.default_rng(0), (64, 96), 3, BENCHMARK_LOOK)  # smoke-test benchmarks
    assert not any(plain.camouflaged) and np.ptp(plain.palette, axis=1).min() > 0  # vivid: not grey


def test_same_seed_same_arrays() -> None:
    cfg = tiny(5, video_size=(48, 64), video_frames=8)
    a, b = video_scene(cfg, 2), video_scene(cfg, 2)
    for name in ("frames", "masks", "background", "object_rgb", "object_alpha"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.camera.offsets, b.camera.offsets)
    np.testing.assert_array_equal(image_sample(cfg, 1)[0], image_sample(cfg, 1)[0])
    assert not np.array_equal(video_scene(cfg, 3).frames, a.frames)
