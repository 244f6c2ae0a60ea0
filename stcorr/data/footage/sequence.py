"""One footage sequence in memory: background clip, camera, objects, composite and exact labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stcorr.config import FootageConfig
from stcorr.data.footage.camera import CameraPath, plan_camera, render_background
from stcorr.data.footage.checks import acceptable, object_record
from stcorr.data.footage.media import CLIPS, clip_frames
from stcorr.data.footage.plans import CHALLENGES, ObjectPlan, Stage, plan_objects
from stcorr.data.footage.render import Layers, composite
from stcorr.data.synthetic.seeds import item_rng

MAX_ATTEMPTS = 24  # object draws per sequence before giving up; deterministic via the rng
MIN_SIDE = 160  # px; below this the 480p plans (fast loop, pass behind) do not fit


@dataclass(frozen=True)
class FootageSequence:
    """A rendered sequence and everything needed to re-derive its labels.

    Attributes:
        name: folder name under ``JPEGImages/480p``.
        challenge: the primary challenge (one of ``CHALLENGES``).
        frames: ``(T, H, W, 3)`` uint8 composite (before JPEG).
        masks: ``(T, H, W)`` uint8 labels; 0 background, k object k.
        coverage: ``(K, T, H, W)`` bool silhouette of object k + 1, hidden or not.
        z_order: object ids bottom to top.
        objects: plan of object k at index k - 1.
        camera: the background's camera path.
    """

    name: str
    challenge: str
    frames: np.ndarray
    masks: np.ndarray
    coverage: np.ndarray
    z_order: tuple[int, ...]
    objects: tuple[ObjectPlan, ...]
    camera: CameraPath

    def record(self) -> dict[str, Any]:
        """JSON-ready description for ``sequences.json``."""
        size = (int(self.masks.shape[1]), int(self.masks.shape[2]))
        layers = Layers(self.frames, self.masks, self.coverage)
        return {"name": self.name, "challenge": self.challenge, **self.camera.record(size),
                "painter_order": list(self.z_order),
                "objects": [object_record(o, layers, k) for k, o in enumerate(self.objects, start=1)]}


def sequence_name(index: int) -> str:
    """``footage-<index>-<challenge>``."""
    return f"footage-{index:03d}-{CHALLENGES[index % len(CHALLENGES)]}"


def check_size(size: tuple[int, int]) -> None:
    """Raises ValueError for frames the plans cannot fill: short side < ``MIN_SIDE`` or portrait."""
    if min(size) < MIN_SIDE or size[1] < size[0]:
        raise ValueError(f"data.footage.size: expected (H, W) with W >= H >= {MIN_SIDE}, got {size}")


def footage_sequence(cfg: FootageConfig, index: int) -> FootageSequence:
    """Render sequence ``index``: a pure function of ``(cfg, index)``. Evaluation material only.

    Challenges cycle with the index (``CHALLENGES``), background clips too (``CLIPS``); the rest
    (start frame, stride, flip, camera path, photos, paths) is drawn from ``item_rng(seed,
    "footage", index)``. Object plans are redrawn until every object is well visible in frame 0
    and every challenge holds on the masks (``checks.acceptable``).

    Args:
        cfg: seed, frame count, frame size.
        index: sequence number.

    Returns:
        The sequence.

    Raises:
        ValueError: a frame size the plans cannot fill.
        RuntimeError: no acceptable draw in ``MAX_ATTEMPTS`` (a bug: the plans are built to hold).
    """
    check_size(cfg.size)
    rng = item_rng(cfg.seed, "footage", index)
    challenge, clip = CHALLENGES[index % len(CHALLENGES)], CLIPS[index % len(CLIPS)]
    camera = plan_camera(rng, clip, cfg.frames, cfg.size)
    background = render_background(clip_frames(clip, camera.indices.tolist()), camera, cfg.size)
    stage = Stage(cfg.frames, cfg.size, camera, background)
    for _ in range(MAX_ATTEMPTS):
        objects, z_order = plan_objects(rng, challenge, stage)
        layers = composite(background, [(o.cutout.sprite, o.motion) for o in objects], z_order)
        if acceptable(objects, layers, stage.unit):
            return FootageSequence(sequence_name(index), challenge, layers.frames, layers.masks,
                                   layers.coverage, z_order, tuple(objects), camera)
    raise RuntimeError(f"footage sequence {index} ({challenge}): no draw of its objects met the "
                       f"challenge in {MAX_ATTEMPTS} tries at size {cfg.size}, {cfg.frames} frames")
