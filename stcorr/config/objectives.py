"""The config sections of the papers' objectives: MoCo v2 pretraining, STT and CRW fine-tuning.

Each switch and constant of the equations in ``stcorr.objectives`` is a field here, nested in
``pretrain.moco``, ``finetune.stt`` and ``finetune.crw``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stcorr.config.types import Fraction, NonNegFloat, PosFloat, PosInt, Section


class MocoConfig(Section):
    dim: PosInt = Field(128, description="Embedding size of the MLP head (MoCo v2).")
    hidden: PosInt = Field(2048, description="Hidden width of the 2-layer MLP head (MoCo v2).")
    queue: PosInt = Field(
        256,
        description="Negatives in the queue (K). MoCo uses 65536 for ImageNet's 1.28M images; it must "
        "stay well below the number of distinct images, or the queue holds keys of each query's own "
        "image as negatives (1024 keys over the demo's old 256 images left the loss at chance, "
        "ln(1+K)). 256 is a quarter of the demo's 1024 images.",
    )
    momentum: Fraction = Field(
        0.99,
        description="Key-encoder momentum m (MoCo: 0.999 over ~200k steps). A 60-step run needs keys "
        "that follow the query encoder: at 0.999 they barely leave their random init; the cluster "
        "profile uses 0.999.",
    )
    tau: PosFloat = Field(0.2, description="InfoNCE temperature (MoCo v2 uses 0.2).")
    shuffle_bn: bool = Field(
        True, description="Shuffle BN across ranks for the key encoder (MoCo); SyncBN is the alternative."
    )


class SttConfig(Section):
    """STT temporal objective, STT Eq. 2-10 (Li & Liu, CVPR 2023)."""

    levels: tuple[Literal["res3", "res4"], ...] = Field(
        ("res3", "res4"), description="Pyramid levels for reconstruction (STT Eq. 7), finest first."
    )
    radii: tuple[PosInt, ...] = Field(
        (12, 6),
        description="Window radius r per level, in feature pixels (both cover +-48 px at strides 4/8).",
    )
    reconstruction: bool = Field(True, description="Pyramid frame reconstruction L_rec^p (STT Eq. 5-7).")
    rec_loss: Literal["l1", "smooth_l1"] = Field(
        "smooth_l1", description="'smooth_l1' is what the reference code computes; 'l1' is the paper's text."
    )
    rec_weight: PosFloat = Field(
        20.0, description="Scale inside the reconstruction loss (reference code: 20 with smooth-L1)."
    )
    channel_dropout: bool = Field(
        True, description="Drop one of a/b (Lab) in both frames and reconstruct it (reference code)."
    )
    student_input: Literal["lab", "rgb"] = Field(
        "rgb",
        description="Colour space the student sees. 'lab' is the reference code (its stage-1 weights saw "
        "RGB, so the first layers must re-learn: the demo's 100 steps lost 5 J&F points to that); 'rgb' "
        "feeds the same channel-dropped clip converted back to RGB, keeping the stage-1 input domain.",
    )
    local_distill: bool = Field(True, description="Local correlation distillation L_lc^e (STT Eq. 8-9).")
    alpha: NonNegFloat = Field(
        100.0,
        description="Weight alpha of L_lc^e in STT Eq. 10 (reference code: 1000). At 1000 the demo's 100 "
        "steps mostly flatten the correlations to match across levels; 100 lets reconstruction lead.",
    )
    selection: Literal["shannon", "reference_code", "none"] = Field(
        "shannon",
        description="Entropy-based selection: Shannon entropy with a global threshold as the paper "
        "describes; 'reference_code' reproduces the official code's sum(-log p) with a row-wise "
        "threshold (docs/methods.md 2.6); 'none' keeps every position.",
    )
    keep_fraction: Fraction = Field(
        0.7, description="Share of target positions kept by the entropy selection (paper: 0.7)."
    )
    pseudo_label_norm: Literal["sum", "mean"] = Field(
        "sum",
        description="Pool the fine correlation to the coarse grid by sum (rows sum to 1, the paper's "
        "intent) or mean (rows sum to 1/4, the reference code).",
    )
    global_distill: bool = Field(
        False,
        description="Global correlation distillation L_gc vs the teacher (STT Eq. 2-3). Off in the demo: at "
        "its 96-px crops res5 (stride 32) is a 3x3 grid where both correlations are near one-hot and "
        "the term is ~0 (the stage warns); on in the cpu-hour and cluster profiles (crops >= 128).",
    )
    beta: NonNegFloat = Field(50.0, description="Weight beta of L_gc in STT Eq. 10 (reference code: 50).")
    teacher_tau: PosFloat = Field(0.07, description="Teacher correlation temperature (reference code: 0.07).")
    teacher_normalize: bool = Field(
        False,
        description="L2-normalise teacher features; the reference code does not (near one-hot targets).",
    )
    student_scaling: bool = Field(
        True, description="Scale student correlations by 1/sqrt(C) (reference code: scaling=True)."
    )


class CrwConfig(Section):
    """Contrastive random walk, Jabri et al., NeurIPS 2020."""

    nodes: Literal["patches", "dense"] = Field(
        "patches", description="'patches': 7x7 grid of 64 px patches (paper); 'dense': feature-map cells."
    )
    patch_size: PosInt = Field(64, description="Patch side in pixels (CRW: 64).")
    patch_stride: PosInt = Field(32, description="Patch stride in pixels (CRW: 32, 50% overlap).")
    dim: PosInt = Field(128, description="Node embedding size after the linear head (CRW: 128).")
    tau: PosFloat = Field(0.05, description="Walk temperature (released model: 0.05; paper text: 0.07).")
    edge_dropout: Fraction = Field(0.1, description="Edge dropout rate (released model: 0.1).")
    jitter: bool = Field(True, description="Per-patch random resized crop (scale 0.7-0.9) as in CRW.")
