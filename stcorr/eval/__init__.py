"""Evaluation by label propagation: propagation, label coding, metrics, benchmark readers.

``propagate`` (both papers' protocol, memory-bounded), ``labels`` (one-hot, palette PNGs,
keypoint heat-maps), ``metrics`` (official DAVIS-2017 J&F, VIP mIoU, JHMDB PCK) and
``readers`` (DAVIS-2017, VIP, JHMDB folder layouts).
"""

from __future__ import annotations

from stcorr.eval.labels import (
    davis_palette,
    decode_keypoints,
    first_frame_labels,
    joints_to_heatmaps,
    labels_to_index,
    one_hot,
    read_annotation,
    write_palette_png,
)
from stcorr.eval.metrics import (
    ConfusionMatrix,
    davis_sequence_scores,
    davis_summary,
    pck,
    score_davis_folder,
    score_davis_sequence,
)
from stcorr.eval.propagation import propagate
from stcorr.eval.readers import (
    BenchmarkLayoutError,
    MaskSequence,
    PoseSequence,
    read_davis,
    read_jhmdb,
    read_vip,
)

__all__ = [
    "BenchmarkLayoutError",
    "ConfusionMatrix",
    "MaskSequence",
    "PoseSequence",
    "davis_palette",
    "davis_sequence_scores",
    "davis_summary",
    "decode_keypoints",
    "first_frame_labels",
    "joints_to_heatmaps",
    "labels_to_index",
    "one_hot",
    "pck",
    "propagate",
    "read_annotation",
    "read_davis",
    "read_jhmdb",
    "read_vip",
    "score_davis_folder",
    "score_davis_sequence",
    "write_palette_png",
]
