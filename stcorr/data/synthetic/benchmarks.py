"""Synthetic DAVIS-2017, VIP and JHMDB benchmarks in the real data sets' on-disk layouts.

The three label-propagation tasks both papers report (Li & Liu, CVPR 2023, Tab. 2-3; Jabri et al.,
NeurIPS 2020, Tab. 1-3), with exact ground truth:

- ``davis/JPEGImages/480p/<seq>/<t:05d>.jpg``, ``davis/Annotations/480p/<seq>/<t:05d>.png`` (mode
  "P", VOC palette, value = object id, every frame), ``davis/ImageSets/2017/val.txt``;
- ``vip/VIP_Fine/Images/<seq>/<t:06d>.jpg``, ``vip/VIP_Fine/Annotations/Category_ids/<seq>/<t:06d>.png``
  (mode "L", value = part class 0..19), ``vip/VIP_Fine/lists/val_videos.txt``;
- ``jhmdb/Frames/<action>/<seq>/<t:05d>.png`` (1-based names), ``jhmdb/joint_positions/<action>/
  <seq>/joint_positions.mat`` (``pos_img`` ``(2, 15, T)``, 1-based ``(x, y)``), ``jhmdb/testlist_split1.txt``.

Frames are smaller than the real ones (``SynthConfig.benchmark_size``); the folder names are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stcorr.config import SynthConfig
from stcorr.data.synthetic import writers as wr
from stcorr.data.synthetic.puppet import PuppetVideo, render_puppets
from stcorr.data.synthetic.scene import VideoScene, render_video
from stcorr.data.synthetic.seeds import item_rng
from stcorr.data.synthetic.skeleton import ACTIONS


def davis_name(index: int) -> str:
    return f"davis-{index:03d}"


def vip_name(index: int) -> str:
    return f"vip-{index:03d}"


def jhmdb_name(index: int) -> tuple[str, str]:
    """``(action, sequence)`` of JHMDB item ``index``; actions cycle so few items cover them all."""
    action = ACTIONS[index % len(ACTIONS)]
    return action, f"{action}-{index:03d}"


def davis_scene(cfg: SynthConfig, index: int) -> VideoScene:
    """In-memory DAVIS sequence ``index``: ``cfg.objects`` objects, all visible in frame 0."""
    rng = item_rng(cfg.seed, "davis", index)
    return render_video(rng, cfg.benchmark_frames, cfg.benchmark_size, cfg.objects)


def vip_scene(cfg: SynthConfig, index: int) -> PuppetVideo:
    """In-memory VIP sequence ``index``: one or two puppets."""
    rng = item_rng(cfg.seed, "vip", index)
    return render_puppets(rng, cfg.benchmark_frames, cfg.benchmark_size, int(rng.integers(1, 3)))


def jhmdb_scene(cfg: SynthConfig, index: int) -> PuppetVideo:
    """In-memory JHMDB sequence ``index``: one puppet doing ``jhmdb_name(index)[0]``."""
    rng = item_rng(cfg.seed, "jhmdb", index)
    return render_puppets(rng, cfg.benchmark_frames, cfg.benchmark_size, 1, (jhmdb_name(index)[0],))


def write_davis(root: Path, cfg: SynthConfig) -> None:
    """Write ``cfg.davis_sequences`` sequences under ``root`` (the DAVIS root)."""
    names = [davis_name(i) for i in range(cfg.davis_sequences)]
    for i, name in enumerate(names):
        scene = davis_scene(cfg, i)
        images = root / "JPEGImages" / "480p" / name
        labels = root / "Annotations" / "480p" / name
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for t in range(len(scene.frames)):
            wr.write_jpeg(images / f"{t:05d}.jpg", scene.frames[t])
            wr.write_png_indexed(labels / f"{t:05d}.png", scene.masks[t])
    (root / "ImageSets" / "2017").mkdir(parents=True)
    wr.write_lines(root / "ImageSets" / "2017" / "val.txt", names)


def write_vip(root: Path, cfg: SynthConfig) -> None:
    """Write ``cfg.vip_sequences`` sequences under ``root`` (the folder holding ``VIP_Fine``)."""
    fine = root / "VIP_Fine"
    names = [vip_name(i) for i in range(cfg.vip_sequences)]
    for i, name in enumerate(names):
        scene = vip_scene(cfg, i)
        images = fine / "Images" / name
        labels = fine / "Annotations" / "Category_ids" / name
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for t in range(len(scene.frames)):
            wr.write_jpeg(images / f"{t:06d}.jpg", scene.frames[t])
            wr.write_png_gray(labels / f"{t:06d}.png", scene.parts[t])
    (fine / "lists").mkdir(parents=True)
    wr.write_lines(fine / "lists" / "val_videos.txt", names)


def pos_img(scene: PuppetVideo) -> np.ndarray:
    """JHMDB's ``pos_img`` of the first puppet: ``(2, 15, T)``, 1-based, x in row 0 and y in row 1."""
    return np.ascontiguousarray(scene.joints[0].transpose(2, 1, 0)) + 1.0  # (T, 15, 2) -> (2, 15, T)


def write_jhmdb(root: Path, cfg: SynthConfig) -> None:
    """Write ``cfg.jhmdb_sequences`` sequences under ``root`` (the JHMDB root)."""
    items = [jhmdb_name(i) for i in range(cfg.jhmdb_sequences)]
    for i, (action, name) in enumerate(items):
        scene = jhmdb_scene(cfg, i)
        frames = root / "Frames" / action / name
        joints = root / "joint_positions" / action / name
        frames.mkdir(parents=True)
        joints.mkdir(parents=True)
        for t in range(len(scene.frames)):
            wr.write_png_rgb(frames / f"{t + 1:05d}.png", scene.frames[t])  # JHMDB counts from 1
        wr.write_mat(joints / "joint_positions.mat", {"pos_img": pos_img(scene)})
    wr.write_lines(root / "testlist_split1.txt", [f"{action}/{name}" for action, name in items])
