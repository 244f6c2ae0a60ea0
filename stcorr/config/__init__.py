"""The pipeline's configuration: typed sections, loading (YAML, ``--set``, profiles), errors.

``load_config`` reads ``pipeline_config.yaml`` and ``--set`` overrides into a validated
``PipelineConfig``; ``fingerprint`` hashes any part of it for the stage cache;
``render_reference`` writes docs/config-reference.md.
"""

from stcorr.config.data import FootageConfig, SynthConfig
from stcorr.config.errors import ConfigError
from stcorr.config.evaluate import EvaluateConfig
from stcorr.config.loading import fingerprint, load_config, parse_overrides
from stcorr.config.objectives import CrwConfig, MocoConfig, SttConfig
from stcorr.config.reference import render_reference
from stcorr.config.sections import (
    ComputeConfig,
    PipelineConfig,
    ShardConfig,
    StorageConfig,
    TrackingConfig,
)

__all__ = [
    "ComputeConfig",
    "ConfigError",
    "CrwConfig",
    "EvaluateConfig",
    "FootageConfig",
    "MocoConfig",
    "PipelineConfig",
    "ShardConfig",
    "StorageConfig",
    "SttConfig",
    "SynthConfig",
    "TrackingConfig",
    "fingerprint",
    "load_config",
    "parse_overrides",
    "render_reference",
]
