"""Pipeline lineage in MLflow: one parent run per pipeline, stage runs nested under it.

The truth about what ran lives in MLflow (and the outputs in storage), so `stcorr status` and
`stcorr resume` work from any machine that reaches the same tracking store.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stcorr.config import PipelineConfig
from stcorr.runtime import console
from stcorr.tracking import stage_runs

STAGES = ("shard", "pretrain", "teacher", "finetune", "evaluate")


class PipelineNotFoundError(LookupError):
    """No pipeline run with that id (or none at all) in the tracking store."""


@contextlib.contextmanager
def pipeline_run(cfg: PipelineConfig, pipeline_id: str) -> Iterator[str]:
    """Create (or reopen, on resume) the pipeline's parent run; mark it FINISHED/FAILED/KILLED."""
    from mlflow import MlflowClient

    experiment_id = stage_runs.setup(cfg.tracking)
    client = MlflowClient()
    existing = _parent(client, experiment_id, pipeline_id)
    if existing is not None:
        run_id = existing.info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {
            stage_runs.TAG_PIPELINE: pipeline_id,
            stage_runs.TAG_STAGE: "pipeline",
            "stcorr.git": stage_runs.git_revision(),
        }
        run_id = client.create_run(experiment_id, run_name=f"pipeline-{pipeline_id}", tags=tags).info.run_id
        client.log_dict(run_id, cfg.model_dump(mode="json"), "config/resolved_config.json")
    stage_runs.set_pipeline(pipeline_id, run_id)
    console.say(f"pipeline {pipeline_id}: MLflow run {run_id}")
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        log = console.log_path()
        if log is not None:  # Ray's, Prefect's and MLflow's lines of this run, so far
            with contextlib.suppress(Exception):  # a lost store: end_run reports it
                client.log_artifact(run_id, str(log), "logs")
        stage_runs.end_run(client, run_id, status)


def _parent(client: Any, experiment_id: str, pipeline_id: str) -> Any | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{stage_runs.TAG_PIPELINE}` = '{pipeline_id}' "
            f"and tags.`{stage_runs.TAG_STAGE}` = 'pipeline'"
        ),
        max_results=1,
    )
    return runs[0] if runs else None


def latest_pipeline(cfg: PipelineConfig) -> str:
    """Id of the most recently started pipeline in the store."""
    from mlflow import MlflowClient

    experiment_id = stage_runs.setup(cfg.tracking)
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{stage_runs.TAG_STAGE}` = 'pipeline'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise PipelineNotFoundError(
            f"tracking.uri: no pipeline run in {cfg.tracking.uri}; start one with `stcorr run`"
        )
    return str(runs[0].data.tags[stage_runs.TAG_PIPELINE])


def pipeline_config(cfg: PipelineConfig, pipeline_id: str) -> PipelineConfig:
    """The resolved config a pipeline ran with (what `stcorr resume` runs again)."""
    import mlflow
    from mlflow import MlflowClient

    experiment_id = stage_runs.setup(cfg.tracking)
    parent = _parent(MlflowClient(), experiment_id, pipeline_id)
    if parent is None:
        raise PipelineNotFoundError(f"pipeline {pipeline_id}: not found in {cfg.tracking.uri}")
    local = mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="config/resolved_config.json"
    )
    return PipelineConfig.model_validate(json.loads(Path(local).read_text()))


def finish(cfg: PipelineConfig, parent_run_id: str, outputs: dict[str, Any]) -> str:
    """Write the report into the parent run and return the summary the CLI prints."""
    from stcorr.tracking.report import write_report

    table = write_report(cfg, parent_run_id, outputs)
    lines = [""]
    for kind, result in outputs.get("shards", {}).items():
        lines.append(f"{kind} shards: {result.manifest_url}")
    for stage in ("pretrain", "teacher", "finetune"):
        if stage in outputs:
            lines.append(f"{stage}: {outputs[stage].encoder}")
    lines += ["", table, ""]
    if cfg.tracking.uri:
        uri = stage_runs.resolve_uri(cfg.tracking.uri)
        if uri.startswith(("http://", "https://")):
            lines.append(f"MLflow: {stage_runs.ui_url(cfg.tracking, parent_run_id)}")
        else:
            lines.append(f"Open MLflow: stcorr ui   (or: mlflow ui --backend-store-uri {uri}), then")
            lines.append(f"  {stage_runs.ui_url(cfg.tracking, parent_run_id)}")
    return "\n".join(lines)
