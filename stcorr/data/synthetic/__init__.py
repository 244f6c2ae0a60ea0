"""Synthetic data, deterministic by seed: stand-ins for ImageNet, YouTube-VOS, DAVIS-2017, VIP, JHMDB.

``generate(out, cfg)`` writes everything in the real data sets' layouts (see ``layout.py`` and
``benchmarks.py``); the lower-level functions return the same content in memory, with exact
ground truth, for tests and readers.
"""

from __future__ import annotations

from stcorr.data.synthetic.benchmarks import (
    davis_name,
    davis_scene,
    jhmdb_name,
    jhmdb_scene,
    pos_img,
    vip_name,
    vip_scene,
)
from stcorr.data.synthetic.layout import generate, image_path, image_sample, video_scene
from stcorr.data.synthetic.puppet import VIP_CLASSES, PuppetVideo, render_puppets
from stcorr.data.synthetic.scene import VideoScene, render_image, render_video
from stcorr.data.synthetic.seeds import item_rng
from stcorr.data.synthetic.skeleton import JHMDB_JOINTS
from stcorr.data.synthetic.writers import voc_palette, write_mp4

__all__ = [
    "JHMDB_JOINTS",
    "VIP_CLASSES",
    "PuppetVideo",
    "VideoScene",
    "davis_name",
    "davis_scene",
    "generate",
    "image_path",
    "image_sample",
    "item_rng",
    "jhmdb_name",
    "jhmdb_scene",
    "pos_img",
    "render_image",
    "render_puppets",
    "render_video",
    "video_scene",
    "vip_name",
    "vip_scene",
    "voc_palette",
    "write_mp4",
]
