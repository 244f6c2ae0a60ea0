"""A tiny ``data.synth`` config shared by the synthetic-data tests (seconds to generate)."""

from __future__ import annotations

from stcorr.config import SynthConfig


def tiny(seed: int = 3, **overrides: object) -> SynthConfig:
    base: dict[str, object] = dict(
        seed=seed, images=3, image_size=32, videos=2, video_frames=8, video_size=(32, 64), objects=2,
        davis_sequences=2, vip_sequences=1, jhmdb_sequences=2, benchmark_frames=8,
        benchmark_size=(48, 64),
    )  # fmt: skip
    base.update(overrides)
    return SynthConfig.model_validate(base)
