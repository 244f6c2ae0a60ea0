"""Entry point of the Prefect deployment (infra/prefect/prefect.yaml).

A run triggered from the Prefect UI or with ``prefect deployment run stcorr/cluster`` carries only
JSON parameters, so this flow takes the config by path (plus ``--set``-style overrides and the
profile), checks that every service the config names answers, and then runs or resumes the
pipeline exactly as ``stcorr run`` / ``stcorr resume`` do. It is a Prefect flow itself, so the
pipeline flow appears nested under it in the Prefect UI.
"""

from __future__ import annotations

from prefect import flow


@flow(name="stcorr", log_prints=True)
def deployed_pipeline(
    config_path: str = "pipeline_config.yaml",
    overrides: list[str] | None = None,
    profile: str = "cluster",
    pipeline_id: str | None = None,
    until: str = "evaluate",
) -> str:
    """Load the config, check the services, run the pipeline; return the summary it prints.

    Args:
        config_path: pipeline config, relative to the worker's working directory (the image's /app).
        overrides: ``section.key=value`` strings, as ``stcorr run --set`` takes them.
        profile: the config profile to apply (``cluster`` on a cluster).
        pipeline_id: resume this pipeline instead of starting a new one.
        until: last stage to run: shard, pretrain, teacher, finetune or evaluate.

    Raises:
        ConfigError: the config does not load or validate.
        ServiceUnreachableError: Ray, Prefect, MLflow or S3 did not answer (one line naming it).
    """
    from flows.pipeline import run_pipeline
    from stcorr.config import load_config
    from stcorr.runtime import check_services
    from stcorr.tracking import STAGES, pipeline_config

    if until not in STAGES:
        raise ValueError(f"until: expected one of {', '.join(STAGES)}, got {until!r}")
    cfg = load_config(config_path, overrides or (), profile=profile)
    check_services(cfg)
    if pipeline_id is not None:
        cfg = pipeline_config(cfg, pipeline_id)  # resume with the config the pipeline ran with
    return run_pipeline(cfg, pipeline_id, until)
