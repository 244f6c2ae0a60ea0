"""Shared plumbing of the training stages: shard inputs, the stage's MLflow run, registration."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stcorr import __version__
from stcorr.config import PipelineConfig, fingerprint
from stcorr.data.manifest import load_manifest, verify_shards
from stcorr.runtime import console, storage_from_config


@dataclass(frozen=True)
class StageOutput:
    """Small, hashable hand-over between stages: URIs, fingerprints, run ids; never tensors."""

    stage: str
    fingerprint: str
    encoder: str  # local path of the encoder state dict
    model_version: str | None = None
    run_id: str | None = None
    sha256: str | None = None
    checkpoint: str | None = None
    health: tuple[str, ...] = ()  # the stage's learning-health line and findings (report, console)


def shard_urls(cfg: PipelineConfig, manifest_url: str) -> tuple[list[str], str, int]:
    """The verified shard URLs of a manifest, its source fingerprint and its sample count.

    Raises:
        ShardChecksumError: a shard is missing or its sha256 differs from the manifest.
    """
    storage = storage_from_config(cfg.storage)
    manifest = load_manifest(manifest_url, storage)
    verify_shards(manifest, storage, full=True)
    samples = sum(int(record["samples"]) for record in manifest["shards"])
    return [record["url"] for record in manifest["shards"]], str(manifest["source_fingerprint"]), samples


def stage_fingerprint(stage: str, section: Any, *upstream: str) -> str:
    """sha256(stage, its config section, its inputs' fingerprints, package version)."""
    return fingerprint(stage, section, list(upstream), __version__)


class _NoRun:
    """Stands in for an MLflow run when tracking is off (``tracking.uri: null``)."""

    run_id = None
    client = None

    def log_json(self, *args: Any, **kwargs: Any) -> None: ...
    def log_metrics(self, *args: Any, **kwargs: Any) -> None: ...
    def set_tags(self, *args: Any, **kwargs: Any) -> None: ...
    def log_file(self, *args: Any, **kwargs: Any) -> None: ...


@contextlib.contextmanager
def maybe_stage_run(cfg: PipelineConfig, stage: str, fp: str, pipeline: str = "") -> Iterator[Any]:
    """The stage's MLflow run, or a no-op stand-in when tracking is disabled; the console shows
    the stage's start and its duration."""
    if cfg.tracking.uri is None:
        with console.stage(stage):
            yield _NoRun()
        return
    from stcorr.tracking import stage_runs

    with console.stage(stage), stage_runs.stage_run(cfg, stage, fp, run_name=f"{stage}-{fp[:8]}",
                                                    pipeline=pipeline) as run:
        yield run


def register(
    cfg: PipelineConfig, run: Any, encoder: Path, *, alias: str | None, tags: dict[str, str]
) -> str | None:
    """Log and register the encoder (None when tracking is off)."""
    if run.client is None:
        return None
    from stcorr.tracking.registry import register_encoder

    return register_encoder(
        run.client, run.run_id, encoder, model_name=cfg.tracking.model_name, alias=alias, tags=tags
    )


def warn_setup(stage: str, context: dict[str, Any]) -> None:
    """Print the problems training would have, before it starts (``stcorr.train.health``)."""
    from stcorr.runtime import console
    from stcorr.train.health import setup_warnings

    for line in setup_warnings(stage, context):
        console.warn(f"{stage}: {line}")


def record_health(run: Any, stage: str, extras: dict[str, str], context: dict[str, Any]) -> tuple[str, ...]:
    """Assess the stage's log-step diagnostics; log ``health/*`` metrics and tags, print them.

    Returns:
        The summary line and one line per finding (each also a ``stcorr: warning:`` on stderr).
    """
    import math

    from stcorr.runtime import console
    from stcorr.train.health import HEALTH_FILE, assess

    health = assess(stage, json.loads(extras.get(HEALTH_FILE, "[]")), context)
    run.log_metrics({f"health/{k}": v for k, v in health.summary.items() if math.isfinite(v)})
    run.set_tags({"stcorr.health": "ok" if health.learned and not health.findings else "warn",
                  "stcorr.health.findings": " | ".join(health.findings)[:4000]})
    console.say(health.line())
    for finding in health.findings:
        console.warn(f"{stage}: {finding}")
    return (health.line(), *health.findings)


OUTPUT_ARTIFACT = "stage_output.json"
# The evaluate stage keeps its hand-over (results folder, tables, summaries) beside its results
# table under evaluate/; `output_artifact` is where any stage's hand-over is.
EVALUATE_OUTPUT_ARTIFACT = "evaluate/stage_output.json"


def output_artifact(stage: str) -> str:
    """The artifact path of a stage's hand-over in its run."""
    return EVALUATE_OUTPUT_ARTIFACT if stage == "evaluate" else OUTPUT_ARTIFACT


def save_output(run: Any, out: StageOutput) -> StageOutput:
    """Store the stage's hand-over in its run, so a later pipeline can reuse it (on any machine)."""
    run.log_json(dataclasses.asdict(out), OUTPUT_ARTIFACT)
    return out


def reuse(cfg: PipelineConfig, stage: str, fp: str,
          load: Callable[[Any], Any] | None = None) -> Any | None:
    """The output of a FINISHED run with this fingerprint, recording the skip; None = must run.

    Args:
        load: reads the output from the run (default: its :class:`StageOutput` hand-over).
    """
    if cfg.tracking.uri is None:
        return None
    from stcorr.tracking import stage_runs

    run = stage_runs.find_finished(cfg, stage, fp)
    if run is None:
        return None
    out = (load or _load_output)(run)
    stage_runs.record_skip(cfg, stage, fp, run)
    console.say(f"{stage}: up to date (fingerprint {fp[:12]}); reusing run {run.info.run_id}")
    return out


def run_json(run: Any, artifact: str) -> Any:
    """A JSON artifact of a run, downloaded and parsed."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=artifact)
    return json.loads(Path(local).read_text())


@contextlib.contextmanager
def claim(cfg: PipelineConfig, stage: str, fp: str, find: Callable[[], Any] | None = None) -> Iterator[Any]:
    """The reusable output of a finished run, or None while this process holds the stage's lease.

    A pipeline running the same stage (same fingerprint) at the same time holds the lease: wait
    for it, then reuse its run. Runs of this stage left RUNNING by a killed process end KILLED.
    ``find`` looks for the reusable output (default: :func:`reuse`).
    """
    look = find or (lambda: reuse(cfg, stage, fp))
    if (done := look()) is not None:
        yield done
        return
    from stcorr.runtime import lease

    def waiting(holder: dict[str, Any]) -> None:
        console.say(f"{stage}: the same stage is running in process {holder.get('pid')} on "
                    f"{holder.get('host')}; waiting for it to finish")

    storage = storage_from_config(cfg.storage)
    with lease(storage, f"{cfg.storage.root.rstrip('/')}/locks/{stage}-{fp[:16]}.json", on_wait=waiting):
        done = look()  # the other pipeline may have finished it meanwhile
        if done is None and cfg.tracking.uri is not None:
            from stcorr.tracking import stage_runs

            stage_runs.close_orphans(cfg, stage, fp)
        yield done


def _load_output(run: Any) -> StageOutput:
    import mlflow

    data = run_json(run, OUTPUT_ARTIFACT)
    out = StageOutput(**{**data, "health": tuple(data.get("health", ()))})
    if out.encoder and not Path(out.encoder).is_file():  # produced on another machine
        folder = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="encoder")
        out = dataclasses.replace(out, encoder=str(next(Path(folder).glob("*.pt"))))
    return out
