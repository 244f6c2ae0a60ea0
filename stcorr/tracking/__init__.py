"""What MLflow holds: stage runs, the stage cache, pipeline lineage, the model registry, reports.

``stage_runs`` opens and finds stage runs; ``stage_cache`` is the protocol every stage follows
(fingerprint, reuse a finished run or claim the stage, save the hand-over); ``lineage`` links a
pipeline's runs; ``registry`` registers and resolves encoders; ``report`` and ``status`` write
what a person reads.
"""

from stcorr.tracking.lineage import STAGES, latest_pipeline, pipeline_config
from stcorr.tracking.registry import (
    ModelRefError,
    register_encoder,
    register_import,
    registry_contract,
    resolve_encoder,
    resolve_init,
)
from stcorr.tracking.report import reproduction_section, to_html
from stcorr.tracking.stage_cache import (
    StageOutput,
    claim,
    maybe_stage_run,
    output_artifact,
    record_health,
    register,
    reuse,
    run_json,
    save_output,
    shard_urls,
    stage_fingerprint,
    warn_setup,
)
from stcorr.tracking.stage_runs import (
    HTTP_RETRIES,
    TrackingError,
    experiment_link,
    explain_outage,
    find_finished,
    record_skip,
    resolve_uri,
    setup,
    stage_run,
)
from stcorr.tracking.status import pipeline_status, render_status

__all__ = [
    "HTTP_RETRIES",
    "STAGES",
    "ModelRefError",
    "StageOutput",
    "TrackingError",
    "claim",
    "experiment_link",
    "explain_outage",
    "find_finished",
    "latest_pipeline",
    "maybe_stage_run",
    "output_artifact",
    "pipeline_config",
    "pipeline_status",
    "record_health",
    "record_skip",
    "register",
    "register_encoder",
    "register_import",
    "registry_contract",
    "render_status",
    "reproduction_section",
    "resolve_encoder",
    "resolve_init",
    "resolve_uri",
    "reuse",
    "run_json",
    "save_output",
    "setup",
    "shard_urls",
    "stage_fingerprint",
    "stage_run",
    "to_html",
    "warn_setup",
]
