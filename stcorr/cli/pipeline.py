"""Pipeline commands: ``synth``, ``shard``, ``run``, ``resume``, ``status``, ``ui``, ``sweep``,
``config``, ``config-reference``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from stcorr.cli.common import (
    ConfigOpt,
    ProfileOpt,
    SetOpt,
    _load,
    app,
    examples,
    friendly_errors,
    removed_on_failure,
)
from stcorr.config import ConfigError, PipelineConfig


@app.command(epilog=examples("stcorr synth --out data/synth",
                             "stcorr synth --out data/tiny --set data.synth.videos=4"))
@friendly_errors
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Folder to write the synthetic data into.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write synthetic images, videos and benchmarks.

    Images, videos (.mp4 and JPEG folders), DAVIS/VIP/JHMDB benchmarks with ground truth, and
    the real-footage DAVIS-layout benchmark (evaluation only) in OUT/footage.
    """
    from stcorr.data.footage import write_footage
    from stcorr.data.synthetic import generate

    cfg = _load(config, sets)
    with removed_on_failure(out):
        roots = generate(out, cfg.data.synth)
        roots["footage"] = write_footage(out / "footage", cfg.data.footage)
    for name, root in roots.items():
        typer.echo(f"{name:>14}: {root}")


@app.command(epilog=examples("stcorr shard images data/synth/images",
                             "stcorr shard videos data/synth/videos/mp4 --out s3://bucket/shards/videos",
                             "stcorr shard images ~/imagenet/train --set shard.max_samples=50000"))
@friendly_errors
def shard(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="images or videos")],
    source: Annotated[str, typer.Argument(metavar="SOURCE",
                                          help="Image folder, video folder or frame-folder root.")],
    out: Annotated[str | None, typer.Option("--out", "-o", metavar="DIR|URL",
                                            help="Output folder or s3:// URL.")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write WebDataset shards from one image or video source.

    The shards and their manifest.json (URLs, sample counts, sha256) are written in parallel
    on Ray, into OUT or under storage.root.
    """
    from stcorr.stages import run_shard_stage

    if kind not in ("images", "videos"):
        raise ConfigError(f"kind: expected 'images' or 'videos', got {kind!r}")
    cfg = _load(config, sets)
    run_shard_stage(cfg, kind, source, out)  # its lines and summary are on the console


@app.command(epilog=examples("stcorr run",
                             "stcorr run --profile cpu-hour",
                             "stcorr run --until finetune --set finetune.objective=crw",
                             "stcorr run --config pipeline_config.yaml --profile cluster"))
@friendly_errors
def run(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
    until: Annotated[
        str, typer.Option(metavar="STAGE",
                          help="Last stage to run: shard, pretrain, teacher, finetune or evaluate.")
    ] = "evaluate",
) -> None:
    """Run the pipeline, or its first stages.

    shard -> pretrain -> teacher -> finetune -> evaluate. Stages whose fingerprint already has
    a FINISHED MLflow run are skipped and their outputs reused; the summary table and how to
    open MLflow are printed at the end.
    """
    from stcorr.tracking import STAGES

    if until not in STAGES:
        raise ConfigError(f"--until: expected one of {', '.join(STAGES)}, got {until!r}")
    cfg = _load(config, sets, profile)
    _check_services(cfg)
    if cfg.pretrain.init is not None:  # one line before Prefect starts, not a flow traceback
        from stcorr.tracking import resolve_init

        resolve_init(cfg.pretrain.init, cfg.tracking)
    _run_flow(cfg, None, until)


@app.command(epilog=examples("stcorr resume", "stcorr resume 3f2a9c1d"))
@friendly_errors
def resume(
    pipeline_id: Annotated[str | None, typer.Argument(metavar="PIPELINE_ID",
                                                      help="Pipeline id (default: the latest).")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Resume a pipeline with the config it ran with.

    Finished stages are skipped; a failed training stage continues from its last checkpoint.
    """
    from stcorr.tracking import latest_pipeline, pipeline_config

    cfg = _load(config, sets, profile)
    _check_services(cfg)
    pid = pipeline_id or latest_pipeline(cfg)
    from stcorr.runtime import console

    console.say(f"resuming pipeline {pid}")
    _run_flow(pipeline_config(cfg, pid), pid)


@app.command(epilog=examples("stcorr status", "stcorr status 3f2a9c1d",
                             "stcorr status --set tracking.uri=http://mlflow.internal:5000"))
@friendly_errors
def status(
    pipeline_id: Annotated[str | None, typer.Argument(metavar="PIPELINE_ID",
                                                      help="Pipeline id (default: the latest).")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Show a pipeline's stages, their times and outputs.

    The start date, total and per-stage times, each stage's state, fingerprint and output (a
    models:/ reference, a shard manifest, a results folder) and the pipeline's MLflow run URL.
    """
    from stcorr.tracking import pipeline_status, render_status

    cfg = _load(config, sets, profile)
    typer.echo(render_status(pipeline_status(cfg, pipeline_id)))


@app.command(epilog=examples("stcorr ui", "stcorr ui --port 5001"))
@friendly_errors
def ui(
    port: Annotated[int, typer.Option(metavar="PORT", help="Port of the MLflow UI.")] = 5000,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Open the MLflow UI on the tracking store.

    Serves the configured store (local SQLite by default) on 127.0.0.1; for an MLflow server,
    prints its address.
    """
    from stcorr.tracking import experiment_link, resolve_uri

    cfg = _load(config, sets, profile)
    uri = cfg.tracking.uri
    if uri is None:
        raise ConfigError("tracking.uri: tracking is disabled (null); there is nothing to show")
    if uri.startswith(("http://", "https://")):
        typer.echo(f"the MLflow server is at {uri}; open it in a browser")
        return
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    # the runs page: MLflow 3.17 opens an experiment in its GenAI layout unless the URL asks
    typer.echo(f"MLflow UI on http://127.0.0.1:{port}/{experiment_link(cfg.tracking)} (Ctrl-C to stop)")
    os.execv(
        mlflow,
        [mlflow, "ui", "--backend-store-uri", resolve_uri(uri), "--host", "127.0.0.1", "--port", str(port)],
    )


@app.command(epilog=examples("stcorr sweep",
                             "stcorr sweep --row pyramid --row pyramid+lc+gc --profile cpu-hour"))
@friendly_errors
def sweep(
    rows: Annotated[
        list[str] | None, typer.Option("--row", metavar="ROW",
                                       help="Table 1 row to run (repeatable; default: all rows).")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Run the paper's Table 1 ablation rows as pipelines.

    Stages the rows share (shard, pretrain, teacher) run once and are reused.
    """
    from stcorr.objectives.stt import TABLE1_ROWS
    from stcorr.runtime import console

    chosen = rows or list(TABLE1_ROWS)
    unknown = [r for r in chosen if r not in TABLE1_ROWS]
    if unknown:
        raise ConfigError(f"--row {unknown[0]!r}: unknown; expected one of {', '.join(TABLE1_ROWS)}")
    _check_services(_load(config, sets, profile))
    for row in chosen:
        overrides = [f"finetune.stt.{key}={_yaml_value(value)}" for key, value in TABLE1_ROWS[row].items()]
        console.say(f"== Table 1 row: {row}")
        _run_flow(_load(config, [*(sets or []), *overrides], profile), None)


def _yaml_value(value: object) -> str:
    import json

    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _check_services(cfg: PipelineConfig) -> None:
    """Fail fast, before any stage, when Ray, Prefect, MLflow or S3 does not answer."""
    from stcorr.runtime import check_services

    check_services(cfg)


def _run_flow(cfg: PipelineConfig, pipeline_id: str | None, until: str = "evaluate") -> None:
    """Run the flow; SIGINT/SIGTERM checkpoint a running training stage and end the runs KILLED.

    From here on the console shows only stcorr's lines; Ray, Prefect and MLflow write to the
    run's log file (``stcorr.runtime.console``), logged to the pipeline's MLflow run at its end.
    """
    import traceback

    from stcorr.runtime import console, interrupt, prefect_environment, start_ephemeral_server

    console.capture(run_log_file(cfg))
    interrupt.install()
    prefect_environment(cfg)
    prefect_ready = start_ephemeral_server()
    from flows.pipeline import run_pipeline

    try:
        console.say(run_pipeline(cfg, pipeline_id, until, before_flow=prefect_ready))
    except Exception as exc:
        traceback.print_exc()  # into the log; the console gets one line (friendly_errors)
        from stcorr.tracking import TrackingError, explain_outage

        outage = explain_outage(exc, cfg.tracking)
        if outage is None:
            raise
        raise TrackingError(outage) from exc
    except interrupt.Interrupted as stop:
        console.CONSOLE.write(f"stcorr: {stop}; runs marked KILLED. Continue with: stcorr resume", err=True)
        raise typer.Exit(128 + stop.signum) from None


def run_log_file(cfg: PipelineConfig) -> Path:
    """``<storage.root>/logs/run-<UTC time>-<pid>.log`` (``work/logs`` for an s3:// root)."""
    import time

    root = Path("work") if "://" in cfg.storage.root else Path(cfg.storage.root)
    return root / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.log"


@app.command("config", epilog=examples("stcorr config", "stcorr config --profile cluster",
                                       "stcorr config --config my.yaml --set finetune.lr=0.0002"))
@friendly_errors
def show_config(config: ConfigOpt = None, sets: SetOpt = None, profile: ProfileOpt = None) -> None:
    """Print the resolved config as YAML.

    The defaults with the file, the profile's block, STCORR_* environment variables and --set
    applied, in that order.
    """
    import yaml

    cfg = _load(config, sets, profile)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@app.command("config-reference", epilog=examples("stcorr config-reference > docs/config.md"))
def config_reference() -> None:
    """Print the config reference as Markdown.

    Every key with its type, default and why the default is what it is.
    """
    from stcorr.config import render_reference

    typer.echo(render_reference(), nl=False)
