"""``stcorr status``: what a pipeline did, read from MLflow without writing to it.

One line for the pipeline (state, start date, total time, MLflow run URL), then one row per
stage run: state, its own time, fingerprint and where its output is (a ``models:/`` reference
for the encoder stages, the manifest for shards, the results folder for evaluate). A skipped
stage shows the output of the run it reused.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stcorr.config import PipelineConfig
from stcorr.tracking import stage_runs
from stcorr.tracking.lineage import PipelineNotFoundError
from stcorr.tracking.stage_cache import output_artifact


@dataclass(frozen=True)
class StageStatus:
    """One stage run of a pipeline."""

    stage: str  # the run name, e.g. ``finetune-3f2a9c1d``
    state: str  # FINISHED, FAILED, KILLED, RUNNING or ``SKIPPED (reused)``
    seconds: float | None  # the stage's own wall time (None: unknown)
    fingerprint: str
    output: str  # ``models:/...``, a manifest URL, a folder, or "" when none is recorded


@dataclass(frozen=True)
class PipelineStatus:
    """A pipeline's parent run and its stages, oldest first."""

    pipeline_id: str
    state: str
    started: dt.datetime | None
    seconds: float | None  # parent run end (or now, while running) minus its start
    url: str
    store: str
    stages: list[StageStatus]


def pipeline_status(cfg: PipelineConfig, pipeline_id: str | None) -> PipelineStatus:
    """The status of ``pipeline_id`` (None: the latest pipeline) in the configured store.

    Raises:
        PipelineNotFoundError: no store, no pipeline, or no pipeline with that id (one line
            naming the store).
    """
    from mlflow import MlflowClient

    store = _existing_store(cfg)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    parent = _parent(client, experiment, pipeline_id)
    if parent is None or experiment is None:
        if pipeline_id is None:
            raise PipelineNotFoundError(
                f"tracking.uri: no pipeline run in {store}; start one with `stcorr run`")
        raise PipelineNotFoundError(
            f"pipeline {pipeline_id!r}: not found in {store}; `stcorr status` shows the latest one")
    pid = str(parent.data.tags[stage_runs.TAG_PIPELINE])
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{stage_runs.TAG_PIPELINE}` = '{pid}'",
                              order_by=["attributes.start_time ASC"])
    stages = [_stage(client, run) for run in runs if run.data.tags.get(stage_runs.TAG_STAGE) != "pipeline"]
    info = parent.info
    return PipelineStatus(
        pipeline_id=pid, state=info.status, started=_date(info.start_time),
        seconds=_seconds(info.start_time, info.end_time), store=store, stages=stages,
        url=stage_runs.ui_url(cfg.tracking, info.run_id, info.experiment_id))


def render_status(status: PipelineStatus) -> str:
    """The text ``stcorr status`` prints."""
    started = status.started.strftime("%Y-%m-%d %H:%M:%S") if status.started else "?"
    total = _clock(status.seconds) + (" so far" if status.state == "RUNNING" else "")
    lines = [f"pipeline {status.pipeline_id}  {status.state}  started {started}  total {total}",
             f"MLflow run: {status.url}", ""]
    if not status.stages:
        return "\n".join([*lines, "(no stage runs yet)"])
    rows = [("stage", "state", "time", "fingerprint", "output")]
    rows += [(s.stage, s.state, "-" if s.state.startswith("SKIPPED") else _clock(s.seconds),
              s.fingerprint[:12], s.output or "-") for s in status.stages]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if status.store.startswith(("http://", "https://")):
        return "\n".join(lines)
    return "\n".join([*lines, "", "(the MLflow run URL is served by `stcorr ui`)"])


def _existing_store(cfg: PipelineConfig) -> str:
    """The store's URI, refusing to create a SQLite file that is not there (status only reads).

    Raises:
        ServiceUnreachableError: the MLflow server does not answer.
        PipelineNotFoundError: tracking is off, or the SQLite file does not exist.
    """
    if cfg.tracking.uri is None:
        raise PipelineNotFoundError(
            "tracking.uri: tracking is disabled (null); there are no pipeline records")
    uri = stage_runs.resolve_uri(cfg.tracking.uri)
    if uri.startswith(("http://", "https://")):  # only MLflow: status needs no Ray, Prefect or S3
        from stcorr.runtime import ServiceUnreachableError, check_mlflow

        if (problem := check_mlflow(uri)) is not None:
            raise ServiceUnreachableError([problem])
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise PipelineNotFoundError(f"tracking.uri: no pipeline run in {uri} (no such file); "
                                    "start one with `stcorr run`")
    return uri


def _parent(client: Any, experiment: Any, pipeline_id: str | None) -> Any | None:
    if experiment is None:
        return None
    where = f"tags.`{stage_runs.TAG_STAGE}` = 'pipeline'"
    if pipeline_id is not None:
        safe = pipeline_id.replace("'", "")  # ids are hex; a quote would break the filter
        where += f" and tags.`{stage_runs.TAG_PIPELINE}` = '{safe}'"
    runs = client.search_runs([experiment.experiment_id], filter_string=where,
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _stage(client: Any, run: Any) -> StageStatus:
    tags = run.data.tags
    skipped = tags.get("stcorr.skipped") == "true"
    source = run
    if skipped and tags.get("stcorr.reused_run"):
        try:
            source = client.get_run(tags["stcorr.reused_run"])
        except Exception:  # the reused run was deleted: its output is unknown
            source = None
    seconds = run.data.metrics.get("stage_seconds")
    return StageStatus(
        stage=run.info.run_name or tags.get(stage_runs.TAG_STAGE, "?"),
        state="SKIPPED (reused)" if skipped else run.info.status,
        seconds=seconds if seconds is not None else _seconds(run.info.start_time, run.info.end_time),
        fingerprint=tags.get(stage_runs.TAG_FINGERPRINT) or tags.get("stcorr.reused_fingerprint", ""),
        output=_output(client, source) if source is not None else "")


def _output(client: Any, run: Any) -> str:
    """Where the run's output is: its registered encoder, shard manifest or results folder."""
    if run.data.tags.get("stcorr.shard.url"):
        return str(run.data.tags["stcorr.shard.url"])
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    if versions:
        return ", ".join(_model_ref(client, v.name, str(v.version)) for v in versions)
    stage = run.data.tags.get(stage_runs.TAG_STAGE, "")
    recorded = _stage_output(client, run.info.run_id, output_artifact(stage))
    if stage == "evaluate" and recorded:
        # the results folder where it is on this machine, else its copy among the run's artifacts
        # (an s3:// storage root evaluates into a temporary folder on the driver)
        folder = recorded.get("out_dir")
        return str(folder) if folder and Path(folder).is_dir() else f"{run.info.artifact_uri}/evaluate"
    return str(recorded.get("out_dir") or recorded.get("encoder") or "")


def _model_ref(client: Any, name: str, version: str) -> str:
    """``models:/name@alias (version N)`` while an alias points at it, else ``models:/name/N``.

    (A version found by search carries no aliases; the registered model's alias map has them.)
    """
    pointing = sorted(a for a, v in (client.get_registered_model(name).aliases or {}).items()
                      if str(v) == version)
    if pointing:
        return f"models:/{name}@{pointing[0]} (version {version})"
    return f"models:/{name}/{version}"


def _stage_output(client: Any, run_id: str, artifact: str) -> dict[str, Any]:
    """The run's hand-over (``stcorr.tracking.stage_cache.output_artifact``), or {}."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, artifact, tmp)
            data = json.loads(Path(local).read_text())
        except Exception:  # no such artifact (shard, import, failed runs)
            return {}
    return data if isinstance(data, dict) else {}


def _date(millis: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(millis / 1000).astimezone() if millis else None


def _seconds(start: int | None, end: int | None) -> float | None:
    if not start:
        return None
    stop = end or int(dt.datetime.now(tz=dt.UTC).timestamp() * 1000)
    return max(0.0, (stop - start) / 1000)


def _clock(seconds: float | None) -> str:
    """``1h02m03s``, ``4m05s``, ``7s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
