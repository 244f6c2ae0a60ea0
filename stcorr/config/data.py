"""The generated data's config sections: the synthetic training set and its smoke benchmarks
(``data.synth``), and the real-footage benchmark (``data.footage``), evaluation material only.

Split from :mod:`stcorr.config.sections`, which holds the pipeline's other sections.
"""

from __future__ import annotations

from pydantic import Field

from stcorr.config.types import NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class SynthConfig(Section):
    seed: int = Field(0, description="Everything synthetic is a pure function of this seed.")
    images: NonNegInt = Field(
        1024,
        description="Still images for contrastive pretraining. MoCo's queue (pretrain.moco.queue) must "
        "stay below this, or it holds keys of the very images it is contrasted with.",
    )
    image_size: PosInt = Field(
        128, description="Side of a synthetic still image in pixels; 128 leaves room for MoCo's "
        "random crops (scale 0.2-1) at pretrain.image_size.",
    )
    videos: NonNegInt = Field(24, description="Training videos.")
    video_frames: PosInt = Field(24, description="Frames per training video.")
    video_size: tuple[PosInt, PosInt] = Field(
        (192, 256),
        description="(height, width) of training videos. 192x256 keeps objects several stride-8 cells "
        "wide after the finetune crop (area 0.6-1, w/h 1.5-2, squashed to finetune.crop_size) and "
        "generates in seconds; the speeds below are in pixels at this size.",
    )
    objects: PosInt = Field(3, description="Moving textured objects per video.")
    speed_median: PosFloat = Field(
        4.5,
        description="Median speed (px/frame at video_size) of every moving layer of a training video "
        "(the background's pan and each object); speeds are log-normal. The finetune crop (typically "
        "~245x140 of 256x192) squashed to S = finetune.crop_size makes a res3 cell (stride 4) ~8-10 "
        "source px across and ~4-6 down at S = 96-128, so 4.5 px/frame moves a typical point 1-2 "
        "cells between frames 2 apart, where 0.5-2.5 px/frame at 96x128 moved it under a third of a "
        "cell and copying the same position reconstructed the frame.",
    )
    speed_p95: PosFloat = Field(
        18.0,
        description="95th percentile of those speeds (px/frame; sigma = ln(p95/median)/1.645). 18 puts "
        "5% of layers at 36+ px between frames 2 apart (4-8 res3 cells) and 1% at 64+ px (6-15 "
        "cells): the fast tail of real footage, mostly inside STT's res3 window (radius 12 cells).",
    )
    jitter: NonNegFloat = Field(
        0.5,
        description="Camera shake (px): uniform in [-jitter, jitter] on each axis, per frame, added to "
        "the pan. 0.5 makes every frame's offset sub-pixel, so no two frames align on the pixel grid.",
    )
    motion_blur: bool = Field(
        True,
        description="Smear each moving layer along its motion (a half-frame exposure) as a camera does; "
        "masks stay the exact silhouettes of each frame's central pose.",
    )
    davis_sequences: NonNegInt = Field(4, description="Sequences in the synthetic DAVIS-2017 benchmark.")
    vip_sequences: NonNegInt = Field(2, description="Sequences in the synthetic VIP benchmark.")
    jhmdb_sequences: NonNegInt = Field(2, description="Sequences in the synthetic JHMDB benchmark.")
    benchmark_frames: PosInt = Field(12, description="Frames per synthetic benchmark sequence.")
    benchmark_size: tuple[PosInt, PosInt] = Field(
        (96, 160), description="(height, width) of synthetic benchmark frames."
    )


class FootageConfig(Section):
    """The real-footage VOS benchmark (DAVIS-2017 480p layout); evaluation material only."""

    seed: int = Field(
        0, description="The footage benchmark is a pure function of this seed (same seed, same bytes)."
    )
    sequences: PosInt = Field(
        10,
        description="Sequences; 10 covers each of the 7 challenges at least once, with >= 20 objects. "
        "Fewer is allowed for quick tests.",
    )
    frames: int = Field(
        12,
        ge=6,
        description="Frames per sequence; 12 keeps generation and a CPU evaluation to seconds. At least 6, "
        "so an object can leave the frame and come back, or pass behind another, mid-sequence.",
    )
    size: tuple[PosInt, PosInt] = Field(
        (480, 854),
        description="(height, width) of the frames: DAVIS-2017 480p, the size its evaluation runs at. "
        "Short side >= 160 and landscape; sizes and speeds are set at 480p and scale with it.",
    )
    jpeg_quality: int = Field(
        90,
        ge=1,
        le=100,
        description="JPEG quality of the frames; 90 leaves the usual mild compression artefacts of "
        "real footage at a third of the size of 100. Labels come from the composite before compression.",
    )
