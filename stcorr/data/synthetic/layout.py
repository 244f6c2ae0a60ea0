"""``generate``: every synthetic data set of the embedded demo, written in the real layouts.

Still images stand in for ImageNet (STT step 1, Li & Liu, CVPR 2023, Sec. 3.1), videos for
YouTube-VOS / Kinetics (STT step 2; CRW, Jabri et al., NeurIPS 2020), and the benchmarks for
DAVIS-2017, VIP and JHMDB. Layout under ``out``:

- ``images/group_<g:02d>/img_<i:06d>.jpg`` (spread over ``IMAGE_GROUPS`` sub-folders);
- ``videos/mp4/vid_<i:04d>.mp4`` (PyAV, libx264 or mpeg4, ``FPS`` frames per second);
- ``videos/frames/JPEGImages/vid_<i:04d>/<t:05d>.jpg`` (the same clips, YouTube-VOS style);
- ``davis/``, ``vip/``, ``jhmdb/`` as described in ``benchmarks.py``;
- ``README.txt``: what was generated, with which seed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stcorr.config import SynthConfig
from stcorr.data.synthetic import benchmarks as bm
from stcorr.data.synthetic import writers as wr
from stcorr.data.synthetic.kinematics import MotionSpec
from stcorr.data.synthetic.look import NATURAL_LOOK
from stcorr.data.synthetic.scene import VideoScene, render_image, render_video
from stcorr.data.synthetic.seeds import item_rng

IMAGE_GROUPS = 8  # sub-folders of images/, so readers must search recursively


def image_sample(cfg: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """In-memory still image ``index``: ``(S, S, 3)`` uint8 and its ``(S, S)`` label map."""
    return render_image(item_rng(cfg.seed, "images", index), cfg.image_size)


def training_motion(cfg: SynthConfig) -> MotionSpec:
    """The training videos' motion statistics, shake and blur (``data.synth``)."""
    return MotionSpec(cfg.speed_median, cfg.speed_p95, cfg.jitter, cfg.motion_blur)


def video_scene(cfg: SynthConfig, index: int) -> VideoScene:
    """In-memory training video ``index``."""
    rng = item_rng(cfg.seed, "videos", index)
    motion = training_motion(cfg)
    return render_video(rng, cfg.video_frames, cfg.video_size, cfg.objects, motion, NATURAL_LOOK)


def image_path(index: int) -> str:
    """Relative path of image ``index`` under ``images/``."""
    return f"group_{index % IMAGE_GROUPS:02d}/img_{index:06d}.jpg"


def write_images(root: Path, cfg: SynthConfig) -> None:
    """Write ``cfg.images`` JPEG images under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(cfg.images):
        path = root / image_path(i)
        path.parent.mkdir(exist_ok=True)
        wr.write_jpeg(path, image_sample(cfg, i)[0])


def write_videos(root: Path, cfg: SynthConfig) -> None:
    """Write ``cfg.videos`` clips as MP4 files and as JPEG frame folders under ``root``."""
    (root / "mp4").mkdir(parents=True)
    (root / "frames" / "JPEGImages").mkdir(parents=True)
    for i in range(cfg.videos):
        scene = video_scene(cfg, i)
        wr.write_mp4(root / "mp4" / f"vid_{i:04d}.mp4", scene.frames)
        folder = root / "frames" / "JPEGImages" / f"vid_{i:04d}"
        folder.mkdir()
        for t, frame in enumerate(scene.frames):
            wr.write_jpeg(folder / f"{t:05d}.jpg", frame)


def check_config(cfg: SynthConfig) -> None:
    """Reject sizes the writers cannot honour, before anything is written.

    Raises:
        ValueError: one line naming the ``data.synth`` key and what was expected.
    """
    h, w = cfg.video_size
    if cfg.videos and (h % 2 or w % 2):
        raise ValueError(
            f"data.synth.video_size: expected even (height, width) for yuv420p MP4, got {(h, w)}"
        )
    if min(cfg.video_size) < 8 or cfg.image_size < 8:
        raise ValueError(
            f"data.synth.video_size/image_size: expected sides >= 8, got {cfg.video_size}, {cfg.image_size}"
        )
    if min(cfg.benchmark_size) < 16:
        raise ValueError(f"data.synth.benchmark_size: expected sides >= 16, got {cfg.benchmark_size}")
    if cfg.speed_p95 < cfg.speed_median:
        raise ValueError(
            f"data.synth.speed_p95: expected >= speed_median ({cfg.speed_median}), got {cfg.speed_p95}"
        )


def _readme(cfg: SynthConfig) -> str:
    return (
        "Synthetic data for stcorr, written by stcorr.data.synthetic.generate.\n"
        f"seed: {cfg.seed}\n"
        f"config: {cfg.model_dump_json()}\n"
        f"images: {cfg.images} JPEGs {cfg.image_size}x{cfg.image_size} in images/group_*/\n"
        f"videos: {cfg.videos} clips of {cfg.video_frames} frames {cfg.video_size[0]}x{cfg.video_size[1]}"
        f" as videos/mp4/*.mp4 ({wr.FPS} fps) and videos/frames/JPEGImages/*/\n"
        f"davis: {cfg.davis_sequences} sequences, vip: {cfg.vip_sequences}, jhmdb: {cfg.jhmdb_sequences};"
        f" {cfg.benchmark_frames} frames {cfg.benchmark_size[0]}x{cfg.benchmark_size[1]} each\n"
        "Everything is a pure function of the seed: the same seed gives byte-identical files.\n"
    )


def generate(out: Path, cfg: SynthConfig) -> dict[str, Path]:
    """Write every synthetic data set under ``out``; idempotent (same seed, same bytes).

    Each top-level folder is written to a hidden staging folder and then swapped in, so an
    interrupted run never leaves a half-written folder under its final name, and files left by
    an earlier, larger config disappear.

    Args:
        out: the synthetic root (``data.synthetic_root``).
        cfg: sizes and seed.

    Returns:
        Roots for the readers: ``images`` (image folder), ``videos_mp4`` (folder of .mp4),
        ``videos_frames`` (YouTube-VOS root holding ``JPEGImages/``), ``davis``, ``vip`` (holds
        ``VIP_Fine/``) and ``jhmdb``.

    Raises:
        ValueError: a size the writers cannot honour (see ``check_config``).
    """
    check_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path, SynthConfig], None]] = {
        "images": write_images, "videos": write_videos, "davis": bm.write_davis,
        "vip": bm.write_vip, "jhmdb": bm.write_jhmdb,
    }  # fmt: skip
    for name, write in writers.items():
        staging = out / f".{name}.partial"
        if staging.exists():
            shutil.rmtree(staging)  # left by an interrupted run
        staging.mkdir()
        write(staging, cfg)
        wr.replace_dir(staging, out / name)
    (out / "README.txt").write_text(_readme(cfg))
    return {
        "images": out / "images",
        "videos_mp4": out / "videos" / "mp4",
        "videos_frames": out / "videos" / "frames",
        "davis": out / "davis",
        "vip": out / "vip",
        "jhmdb": out / "jhmdb",
    }
