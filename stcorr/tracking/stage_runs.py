"""MLflow: one place that knows the tracking store, stage runs, tags and artifacts.

MLflow is imported inside the functions: the library stays importable without it, and the CLI
starts fast for commands that do not track.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stcorr.config import PipelineConfig, TrackingConfig

TAG_STAGE = "stcorr.stage"
TAG_FINGERPRINT = "stcorr.fingerprint"
TAG_PIPELINE = "stcorr.pipeline"


class TrackingError(RuntimeError):
    """The MLflow store could not be reached or used; one line naming the URI."""


# MLflow's client retries a dead server 7 times with exponential back-off (minutes); a pipeline
# should fail in seconds and be resumed. Set for this process and handed to Ray workers.
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_OUTAGE_SIGNS = ("Max retries exceeded", "Connection refused", "ConnectionError", "Failed to establish")


def explain_outage(exc: BaseException, cfg: TrackingConfig) -> str | None:
    """One line for an error caused by an MLflow server that stopped answering, else None."""
    if not (cfg.uri or "").startswith(("http://", "https://")):
        return None
    text = " ".join(str(e) for e in _chain(exc))
    if not any(sign in text for sign in _OUTAGE_SIGNS):
        return None
    return (f"tracking.uri: the MLflow server at {cfg.uri} stopped answering; start it again, then run "
            "`stcorr resume` (finished stages are kept, training continues from its last checkpoint)")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def resolve_uri(uri: str) -> str:
    """Make relative ``sqlite:///rel/path.db`` and plain folder paths absolute (cwd-independent)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///")).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def artifact_root(location: str | None) -> str | None:
    """A local artifact folder as a file:// URI; s3:// and other URIs pass through."""
    if location is None or "://" in location:
        return location
    path = Path(location).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def setup(cfg: TrackingConfig) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id.

    Raises:
        TrackingError: tracking is disabled (``tracking.uri: null``) or the store does not answer.
    """
    import mlflow

    if cfg.uri is None:
        raise TrackingError("tracking.uri: tracking is disabled (null); set an MLflow tracking URI")
    uri = resolve_uri(cfg.uri)
    for key, value in HTTP_RETRIES.items():
        os.environ.setdefault(key, value)
    mlflow.set_tracking_uri(uri)
    try:
        with _sqlite_lock(uri):  # two pipelines creating one SQLite store race in its migrations
            experiment = mlflow.get_experiment_by_name(cfg.experiment)
            if experiment is not None:
                if KIND_TAG not in experiment.tags:  # made before stcorr set it
                    mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
                return str(experiment.experiment_id)
            location = artifact_root(cfg.artifact_location)
            return str(mlflow.create_experiment(cfg.experiment, artifact_location=location,
                                                tags={KIND_TAG: KIND}))
    except Exception as exc:  # MLflow raises many types for a dead server; report one line
        raise TrackingError(
            f"tracking.uri: cannot use MLflow store {uri} ({type(exc).__name__}: {exc})"
        ) from None


# The experiment's kind for MLflow 3's UI (the tag and value it reads). MLflow 3.17's UI lays
# every experiment out by a per-browser GenAI / Model training switch (GenAI until flipped) and
# uses the tag only where that switch is turned off, so links also ask for model training.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
UI_PORT = 5000  # where `stcorr ui` serves a local store
MODEL_TRAINING = "?workflowType=machine_learning"  # the UI page's query asking for that layout


def ui_url(cfg: TrackingConfig, run_id: str, experiment_id: str | None = None) -> str:
    """The MLflow UI page of a run: on the tracking server, or on `stcorr ui` for a local store."""
    base = cfg.uri if cfg.uri and cfg.uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{UI_PORT}"
    if experiment_id is None:
        from mlflow import MlflowClient

        experiment_id = MlflowClient(resolve_uri(cfg.uri or "")).get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/{run_link(experiment_id, run_id)}"


def experiment_link(cfg: TrackingConfig) -> str:
    """The experiment's runs page relative to the MLflow UI, in its model-training layout
    (``#/experiments/1/runs?workflowType=...``); "" when a local store or its experiment does not
    exist yet (the UI's home page lists experiments). A local store is read, never created."""
    from mlflow import MlflowClient

    uri = resolve_uri(cfg.uri or "")
    if not uri.startswith("sqlite:///") or not Path(uri.removeprefix("sqlite:///")).is_file():
        return ""
    experiment = MlflowClient(uri).get_experiment_by_name(cfg.experiment)
    if experiment is None:
        return ""
    return f"#/experiments/{experiment.experiment_id}/runs{MODEL_TRAINING}"


def run_link(experiment_id: str, run_id: str) -> str:
    """A run's page relative to the MLflow UI (``#/experiments/1/runs/ab12...?workflowType=...``):
    it works in the UI's own pages (run descriptions) on whatever host and port serve the store.

    MLflow 3.17's UI shows every page in its GenAI layout unless the URL (or a toggle the browser
    remembers) asks for model training; the experiment's kind tag alone does not switch it.
    """
    return f"#/experiments/{experiment_id}/runs/{run_id}{MODEL_TRAINING}"


@contextlib.contextmanager
def _sqlite_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock next to a SQLite store (other stores need none)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def git_revision() -> str:
    """The checkout's git revision (with '-dirty' when modified), or 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def flat_params(config: PipelineConfig | Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a (section of a) config into MLflow params: ``{"finetune.lr": "0.0005", ...}``."""
    data = config.model_dump(mode="json") if isinstance(config, PipelineConfig) else dict(config)
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, prefix=f"{name}."))
        else:
            out[name] = json.dumps(value) if not isinstance(value, str) else value
    return out


class StageRun:
    """One MLflow run, written through ``MlflowClient`` (thread-safe, no global active run)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.seconds_before = 0.0  # stage work done before the run opened (added to stage_seconds)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_json(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def log_file(self, path: Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_dir)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(artifact_file).name
            target.write_bytes(data)
            parent = str(Path(artifact_file).parent)
            self.log_file(target, None if parent == "." else parent)


# The pipeline run a stage belongs to (set by the flow; stage tasks run in its threads).
_PIPELINE: dict[str, str] = {}


def set_pipeline(pipeline_id: str, parent_run_id: str | None) -> None:
    """Make later stage runs children of ``parent_run_id`` and tag them with ``pipeline_id``."""
    _PIPELINE.clear()
    _PIPELINE.update(id=pipeline_id, parent=parent_run_id or "")


def find_finished(cfg: PipelineConfig, stage: str, fingerprint: str) -> Any | None:
    """The newest FINISHED run of ``stage`` with this fingerprint (None if there is none)."""
    from mlflow import MlflowClient

    experiment_id = setup(cfg.tracking)
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{TAG_STAGE}` = '{stage}' and tags.`{TAG_FINGERPRINT}` = '{fingerprint}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def close_orphans(cfg: PipelineConfig, stage: str, fingerprint: str) -> list[str]:
    """End as KILLED the RUNNING runs of ``stage`` with this fingerprint; return their ids.

    Call only while holding the stage's lease (``stcorr.runtime.locks``): then no live process owns
    them, their process was killed (SIGKILL, a lost machine) before it could end them.
    """
    from mlflow import MlflowClient

    experiment_id = setup(cfg.tracking)
    client = MlflowClient()
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{TAG_STAGE}` = '{stage}' and tags.`{TAG_FINGERPRINT}` = '{fingerprint}' "
            "and attributes.status = 'RUNNING'"
        ),
    )
    for run in runs:
        client.set_tag(run.info.run_id, "mlflow.note.content", "Its process died; ended by the next run.")
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in runs]


def record_skip(cfg: PipelineConfig, stage: str, fingerprint: str, reused: Any) -> str:
    """Log that ``stage`` was skipped in this pipeline and which run's outputs it reused."""
    from mlflow import MlflowClient

    experiment_id = setup(cfg.tracking)
    client = MlflowClient()
    link = run_link(reused.info.experiment_id, reused.info.run_id)
    tags = {
        TAG_STAGE: stage,
        TAG_PIPELINE: _PIPELINE.get("id", ""),
        "stcorr.skipped": "true",
        "stcorr.reused_run": reused.info.run_id,
        "stcorr.reused_fingerprint": fingerprint,
        "mlflow.note.content": f"Skipped: outputs reused from run [{reused.info.run_id}]({link}).",
    }
    if _PIPELINE.get("parent"):
        tags["mlflow.parentRunId"] = _PIPELINE["parent"]
    run = client.create_run(experiment_id, run_name=f"{stage} (reused)", tags=tags)
    client.set_terminated(run.info.run_id, status="FINISHED")
    return str(run.info.run_id)


@contextlib.contextmanager
def stage_run(
    cfg: PipelineConfig, stage: str, fingerprint: str, *, run_name: str | None = None, pipeline: str = ""
) -> Iterator[StageRun]:
    """Open an MLflow run for one stage with the lineage tags, the resolved config and git revision.

    The run ends FINISHED when the block completes, FAILED when it raises, KILLED on Ctrl-C.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Param

    experiment_id = setup(cfg.tracking)
    client = MlflowClient()
    tags = {
        TAG_STAGE: stage,
        TAG_FINGERPRINT: fingerprint,
        TAG_PIPELINE: pipeline or _PIPELINE.get("id", ""),
        "stcorr.git": git_revision(),
    }
    if _PIPELINE.get("parent"):
        tags["mlflow.parentRunId"] = _PIPELINE["parent"]
    run = client.create_run(experiment_id, run_name=run_name or stage, tags=tags)
    handle = StageRun(client, run.info.run_id)
    status = "FAILED"
    started = time.perf_counter()
    try:
        params = [Param(key, value[:6000]) for key, value in flat_params(cfg).items()]
        for first in range(0, len(params), 100):  # one request per 100 params (MLflow's batch limit)
            client.log_batch(handle.run_id, params=params[first : first + 100])
        handle.log_json(cfg.model_dump(mode="json"), "config/resolved_config.json")
        yield handle
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        # The stage's own wall time, body only (benchmarks/orchestration.py subtracts it).
        seconds = time.perf_counter() - started + handle.seconds_before
        end_run(client, handle.run_id, status, {"stage_seconds": seconds})


def end_run(client: Any, run_id: str, status: str, metrics: Mapping[str, float] | None = None) -> None:
    """Log the last metrics and end the run. If the store is gone and the block already failed,
    keep quiet: the block's own error is the one to report (a resume ends the run later)."""
    try:
        for key, value in (metrics or {}).items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id, status=status)
    except Exception:
        if status == "FINISHED":
            raise
