"""The config sections of ``pipeline_config.yaml``, one frozen pydantic model each.

The papers' objective sections (MoCo, STT, CRW) live in :mod:`stcorr.config.objectives`, the
generated data's (``data.synth``, ``data.footage``) in :mod:`stcorr.config.data`, the
evaluation protocol's in :mod:`stcorr.config.evaluate`.
Each field's description says why its default is what it is; ``stcorr config-reference`` renders
them as the config reference, so the docs never drift from the code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stcorr.config.data import FootageConfig, SynthConfig
from stcorr.config.evaluate import EvaluateConfig
from stcorr.config.objectives import CrwConfig, MocoConfig, SttConfig
from stcorr.config.types import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class StorageConfig(Section):
    root: str = Field(
        "work",
        description="Where shards, checkpoints and outputs go: a local folder or s3://bucket/prefix. "
        "'work' keeps the embedded demo inside the checkout.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 API endpoint for MinIO, moto or another S3-compatible server; null = AWS. "
        "Credentials come only from the environment or ~/.aws, never from this file.",
    )
    s3_region: str | None = Field(None, description="S3 region; null lets boto3 decide (AWS_DEFAULT_REGION).")
    retries: PosInt = Field(
        4, description="Attempts per S3 call before giving up: rides out a blip, fails within ~15 s."
    )


class TrackingConfig(Section):
    uri: str | None = Field(
        "sqlite:///work/mlflow.db",
        description="MLflow tracking URI. SQLite is the embedded default because MLflow 3 needs a "
        "database backend for the model registry; null disables tracking.",
    )
    experiment: str = Field("stcorr", description="MLflow experiment every run goes to.")
    artifact_location: str | None = Field(
        "work/mlartifacts",
        description="Artifact root for a new experiment (local folder or s3://); null = server default.",
    )
    model_name: str = Field(
        "stcorr-encoder",
        description="Registered model name; aliases 'teacher' and 'candidate' point into it.",
    )


class StageResources(Section):
    """Per-stage overrides of the ``compute`` defaults (null = use ``compute.<key>``)."""

    workers: PosInt | None = Field(None, description="Ray Train workers for this stage.")
    cpus_per_worker: PosFloat | None = Field(None, description="CPUs per worker for this stage.")
    gpus_per_worker: NonNegFloat | None = Field(None, description="GPUs per worker for this stage.")


class ComputeConfig(Section):
    ray_address: str | None = Field(
        None, description="Ray cluster address; null starts a local Ray on this machine."
    )
    num_cpus: PosInt | None = Field(
        None, description="CPUs a local Ray may use; null = all cores of this machine."
    )
    prefect_api_url: str | None = Field(
        None, description="Prefect server API; null runs an ephemeral Prefect inside the process."
    )
    workers: PosInt = Field(2, description="Ray Train workers (DDP ranks); 2 matches a 2-core laptop.")
    cpus_per_worker: PosFloat = Field(1.0, description="CPUs reserved per training worker.")
    gpus_per_worker: NonNegFloat = Field(
        0.0, description="GPUs per training worker; > 0 switches to CUDA, nccl, AMP and channels-last."
    )
    loader_workers: NonNegInt = Field(
        1, description="DataLoader processes per training worker; 1 overlaps decode with compute on 2 cores."
    )
    video_decoder: Literal["auto", "decord", "pyav"] = Field(
        "auto",
        description="Decoder of video samples at read time: 'auto' = decord, PyAV where decord fails "
        "(or has no wheel); 'pyav' decodes a 4-frame clip from transcoded shards in ~2/3 of decord's time "
        "(benchmarks/data_throughput.py). Same frames either way, so not part of any fingerprint.",
    )
    pretrain: StageResources = Field(
        default_factory=StageResources, description="Resources of the pretrain stage (overrides)."
    )
    finetune: StageResources = Field(
        default_factory=StageResources, description="Resources of the finetune stage (overrides)."
    )

    def for_stage(self, stage: str) -> ComputeConfig:
        """This section with the stage's overrides applied (``workers``, CPUs, GPUs)."""
        overrides = getattr(self, stage, None)
        if not isinstance(overrides, StageResources):
            return self
        return self.model_copy(update=overrides.model_dump(exclude_none=True))


class DataConfig(Section):
    source: Literal["synthetic", "folders"] = Field(
        "synthetic",
        description="'synthetic' generates everything (no downloads, the embedded default); "
        "'folders' reads the real data sets from the paths below.",
    )
    synthetic_root: str = Field("work/data", description="Where generated data is written.")
    images: str | None = Field(
        None, description="ImageNet-style image folder (searched recursively) for pretraining."
    )
    videos: str | None = Field(
        None,
        description="Video source: a folder of video files (.mp4/.avi/.mkv/.webm) or of "
        "YouTube-VOS/DAVIS-style JPEG frame folders.",
    )
    davis: str | None = Field(
        None, description="DAVIS-2017 root (JPEGImages/480p, Annotations/480p, ImageSets)."
    )
    vip: str | None = Field(None, description="VIP root (VIP_Fine layout).")
    jhmdb: str | None = Field(None, description="JHMDB root (frames + joint_positions).")
    synth: SynthConfig = Field(default_factory=SynthConfig)
    footage: FootageConfig = Field(default_factory=FootageConfig)


class ShardConfig(Section):
    samples_per_shard: PosInt = Field(
        16,
        description="Samples per tar shard. Real runs want 0.25-1 GB shards and several per loader "
        "worker; 16 gives the demo's few hundred samples enough shards for 2 ranks x 1 worker.",
    )
    max_samples: PosInt | None = Field(
        None, description="Cap on samples per source (quick tries); null = all."
    )
    video_format: Literal["encoded", "transcoded", "frames"] = Field(
        "encoded",
        description="'encoded' stores the video file's bytes (10-50x smaller, decoded by decord at "
        "read time); 'transcoded' re-encodes it as H.264 with a keyframe every video_keyint frames "
        "(~3x faster clip reads from web-style video, shards ~3x larger); 'frames' stores JPEG "
        "frames (cheap decode, big shards).",
    )
    video_keyint: PosInt = Field(
        8, description="'transcoded' mode: frames between keyframes; a clip decodes at most this "
        "many frames beyond its span (8 covers CRW's 4-frame clips at gap 2).",
    )
    video_short_side: PosInt | None = Field(
        None, description="'transcoded' mode: scale videos down to this short side once, at shard "
        "time (256 is Kinetics as CRW reads it); null keeps the size.",
    )
    video_crf: int = Field(
        18, ge=0, le=51, description="'transcoded' mode: x264's constant rate factor (0 = lossless, "
        "51 = worst). 18 keeps a second-generation copy of lossy web video close to the source; "
        "x264's default, 23, gave 45% smaller videos and 30% faster clip decodes at 2.3 dB lower "
        "PSNR (Big Buck Bunny at 454x256).",
    )
    max_video_frames: PosInt | None = Field(
        None, description="Keep at most this many frames per video in 'frames' and 'transcoded' "
        "modes; null = all."
    )
    image_max_side: PosInt | None = Field(
        None, description="Re-encode images whose longer side exceeds this; null keeps the original bytes."
    )
    max_bad_fraction: Fraction = Field(
        0.05,
        description="Corrupt inputs are skipped and listed in the manifest; the stage fails only past "
        "this fraction, which catches a wrong folder without dying on one bad file.",
    )
    parallelism: PosInt | None = Field(
        None, description="Shards written at once (Ray tasks); null = one per available CPU."
    )


class PretrainConfig(Section):
    arch: Literal["resnet18", "resnet50"] = Field(
        "resnet18", description="Backbone; the paper's main rows use ResNet-18."
    )
    init: str | None = Field(
        None,
        description="Skip MoCo and use this encoder as the spatial stage (and so as the frozen "
        "teacher): a checkpoint file (stcorr .pt, or MoCo/VFS/SFC/CRW/torchvision as "
        "`stcorr import-checkpoint` reads them) or models:/name/N. It must take RGB input (the "
        "teacher is fed RGB) and match pretrain.arch; its sha256 is part of the stage's fingerprint. "
        "null trains MoCo v2 (STT step 1).",
    )
    steps: PosInt = Field(
        60, description="Optimiser steps; the demo budget (about a minute of pretraining on 2 cores)."
    )
    batch_size: PosInt = Field(16, description="Images per rank per step (MoCo v2: 256 over 8 GPUs).")
    image_size: PosInt = Field(
        64,
        description="Crop size of the two views (MoCo: 224). 64 from the 128-px synthetic images keeps "
        "a res5 map of 2x2 and views that share content (at 48 px top-1 accuracy stayed near chance "
        "in a short run); small enough for the CPU demo.",
    )
    crop_scale: tuple[Fraction, Fraction] = Field(
        (0.2, 1.0),
        description="Area range of the views' random resized crops (MoCo v2: 0.2-1 of an ImageNet "
        "photo, whose object fills much of it).",
    )
    color_jitter: Fraction = Field(
        0.4,
        description="Brightness, contrast and saturation jitter of the views (hue: a quarter; MoCo v2: 0.4).",
    )
    lr: PosFloat = Field(0.03, description="SGD learning rate (MoCo v2: 0.03 for batch 256).")
    weight_decay: NonNegFloat = Field(1e-4, description="SGD weight decay (MoCo v2).")
    warmup_steps: NonNegInt = Field(5, description="Linear warm-up before the cosine decay.")
    checkpoint_every: PosInt = Field(30, description="Steps between checkpoints.")
    log_every: PosInt = Field(10, description="Steps between metric logs.")
    seed: int = Field(0, description="Seeds model init, augmentation and shuffling.")
    moco: MocoConfig = Field(default_factory=MocoConfig)


class FinetuneConfig(Section):
    objective: Literal["stt", "crw"] = Field("stt", description="Temporal objective: STT (default) or CRW.")
    init: Literal["pretrain", "scratch"] = Field(
        "pretrain", description="Student start: the pretrain weights, or scratch (the 'YTV only' rows)."
    )
    teacher: str | None = Field(
        None,
        description="Teacher override: a registry URI (models:/name@teacher) or a checkpoint file; "
        "null uses the pipeline's teacher stage.",
    )
    arch: Literal["resnet18", "resnet50"] = Field("resnet18", description="Student backbone.")
    student_preset: Literal["stt_student", "stt_student_pool"] = Field(
        "stt_student_pool",
        description="STT student geometry (CRW always uses its 'crw' preset). 'stt_student' is the "
        "reference code's (no stem pool: layer1 at stride 2, evaluated as eval_d8); "
        "'stt_student_pool' keeps the max-pool stem the pretrained weights learned with (same "
        "res3 /4, res4 /8 pyramid, about 40% less compute at 480p), evaluated as eval_student_pool_d8.",
    )
    steps: PosInt = Field(100, description="Optimiser steps; sized for the 10-minute demo on 2 cores.")
    batch_size: PosInt = Field(8, description="Clips per rank per step.")
    clip_frames: PosInt = Field(2, description="Frames per clip T (STT: 2 = reference + target; CRW: 4).")
    frame_gap: PosInt = Field(
        2,
        description="Frames between consecutive clip frames. 2 on the synthetic videos puts the median "
        "displacement at 1-2 res3 cells, so reconstruction cannot copy the same position; real "
        "YouTube-VOS frames are already every 5th raw frame (STT uses 1, the cluster profile's value).",
    )
    crop_size: PosInt = Field(
        96,
        description="Side of the shared random resized crop (paper: 256). 96 gives res3 24x24 and "
        "res4 12x12 grids for the windows of radius 12 and 6 at demo cost; global distillation needs "
        ">= 128 (a 4x4 res5 grid), so the demo trains without it.",
    )
    lr: PosFloat = Field(
        1e-4,
        description="Adam learning rate (reference code 5e-5 for batch 64); 1e-4 keeps the 100-step demo "
        "from drifting away from its pretrained init (5e-4 lost 6 J&F points).",
    )
    warmup_steps: NonNegInt = Field(10, description="Linear warm-up before the cosine decay.")
    checkpoint_every: PosInt = Field(50, description="Steps between checkpoints.")
    log_every: PosInt = Field(10, description="Steps between metric logs.")
    image_every: PosInt = Field(50, description="Steps between image panels logged to MLflow.")
    seed: int = Field(0, description="Seeds init, sampling and augmentation.")
    stt: SttConfig = Field(default_factory=SttConfig)
    crw: CrwConfig = Field(default_factory=CrwConfig)


class PipelineConfig(Section):
    profile: Literal["local", "cluster", "cpu-hour"] = Field(
        "local",
        description="'local': the embedded demo on one machine; 'cpu-hour': the same services with a "
        "one-hour training budget on 2 cores (stcorr/config/profiles.py); 'cluster': the addresses below.",
    )
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> PipelineConfig:
        stt = self.finetune.stt
        if len(stt.radii) != len(stt.levels):
            raise ValueError(
                f"finetune.stt.radii: expected one radius per level {list(stt.levels)}, got {list(stt.radii)}"
            )
        if self.data.source == "folders" and not (self.data.images or self.data.videos):
            raise ValueError("data.images: expected a folder when data.source is 'folders', got null")
        return self
