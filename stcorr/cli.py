"""The ``stcorr`` command line.

Every command takes ``--config FILE`` and repeated ``--set section.key=value``. Errors are one
line on stderr: exit code 2 for a config problem, 1 for anything else the user can fix (a missing
path, a corrupt file, an unreachable server). ``STCORR_DEBUG=1`` shows the full traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from stcorr.cli_common import ConfigOpt, ProfileOpt, SetOpt, _load, friendly_errors
from stcorr.config import ConfigError, PipelineConfig

__all__ = ["ConfigOpt", "ProfileOpt", "SetOpt", "_load", "app", "friendly_errors", "main"]

app = typer.Typer(
    help="Learn dense space-time correspondence from unlabeled images and videos (STT, CRW), "
    "and evaluate it by label propagation. `stcorr run` runs the pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@friendly_errors
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the synthetic data into.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write the synthetic data: images, videos (.mp4 and JPEG folders), DAVIS/VIP/JHMDB benchmarks,
    and the real-footage DAVIS-layout benchmark (evaluation only) in OUT/footage."""
    from stcorr.data.footage import write_footage
    from stcorr.data.synthetic import generate

    cfg = _load(config, sets)
    roots = generate(out, cfg.data.synth)
    roots["footage"] = write_footage(out / "footage", cfg.data.footage)
    for name, root in roots.items():
        typer.echo(f"{name:>14}: {root}")


@app.command()
@friendly_errors
def shard(
    kind: Annotated[str, typer.Argument(help="images or videos")],
    source: Annotated[str, typer.Argument(help="Image folder, video folder or frame-folder root.")],
    out: Annotated[str | None, typer.Option("--out", "-o", help="Output folder or s3:// URL.")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write WebDataset shards (+ manifest.json) from one source, in parallel on Ray."""
    from tasks.shard import run_shard_stage

    if kind not in ("images", "videos"):
        raise ConfigError(f"kind: expected 'images' or 'videos', got {kind!r}")
    cfg = _load(config, sets)
    result = run_shard_stage(cfg, kind, source, out)
    typer.echo(result.message)


@app.command()
@friendly_errors
def run(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
    until: Annotated[
        str, typer.Option(help="last stage to run: shard, pretrain, teacher, finetune or evaluate")
    ] = "evaluate",
) -> None:
    """Run the pipeline: shard -> pretrain -> teacher -> finetune -> evaluate.

    Stages whose fingerprint already has a FINISHED MLflow run are skipped and their outputs
    reused; the summary table and how to open MLflow are printed at the end.
    """
    from stcorr.lineage import STAGES

    if until not in STAGES:
        raise ConfigError(f"--until: expected one of {', '.join(STAGES)}, got {until!r}")
    cfg = _load(config, sets, profile)
    _check_services(cfg)
    _run_flow(cfg, None, until)


@app.command()
@friendly_errors
def resume(
    pipeline_id: Annotated[str | None, typer.Argument(help="pipeline id (default: the latest)")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Resume a pipeline with the config it ran with: finished stages are skipped, a failed
    training stage continues from its last checkpoint."""
    from stcorr.lineage import latest_pipeline, pipeline_config

    cfg = _load(config, sets, profile)
    _check_services(cfg)
    pid = pipeline_id or latest_pipeline(cfg)
    typer.echo(f"resuming pipeline {pid}")
    _run_flow(pipeline_config(cfg, pid), pid)


@app.command()
@friendly_errors
def status(
    pipeline_id: Annotated[str | None, typer.Argument(help="pipeline id (default: the latest)")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """A table of a pipeline's stages: state, fingerprint, MLflow run, duration."""
    from stcorr.lineage import latest_pipeline, render_rows, stage_rows

    cfg = _load(config, sets, profile)
    _check_services(cfg)
    pid = pipeline_id or latest_pipeline(cfg)
    typer.echo(f"pipeline {pid}")
    typer.echo(render_rows(stage_rows(cfg, pid)))


@app.command()
@friendly_errors
def ui(
    port: Annotated[int, typer.Option(help="port of the MLflow UI")] = 5000,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Open the MLflow UI on the configured tracking store (local SQLite by default)."""
    from stcorr.tracking import resolve_uri

    cfg = _load(config, sets, profile)
    uri = cfg.tracking.uri
    if uri is None:
        raise ConfigError("tracking.uri: tracking is disabled (null); there is nothing to show")
    if uri.startswith(("http://", "https://")):
        typer.echo(f"the MLflow server is at {uri}; open it in a browser")
        return
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    os.execv(
        mlflow,
        [mlflow, "ui", "--backend-store-uri", resolve_uri(uri), "--host", "127.0.0.1", "--port", str(port)],
    )


@app.command()
@friendly_errors
def sweep(
    rows: Annotated[
        list[str] | None, typer.Option("--row", help="Table 1 row to run (repeatable; default: all rows)")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Run the paper's Table 1 ablation rows as pipelines; shared stages run once and are reused."""
    from stcorr.objectives.stt import TABLE1_ROWS

    chosen = rows or list(TABLE1_ROWS)
    unknown = [r for r in chosen if r not in TABLE1_ROWS]
    if unknown:
        raise ConfigError(f"--row {unknown[0]!r}: unknown; expected one of {', '.join(TABLE1_ROWS)}")
    _check_services(_load(config, sets, profile))
    for row in chosen:
        overrides = [f"finetune.stt.{key}={_yaml_value(value)}" for key, value in TABLE1_ROWS[row].items()]
        typer.echo(f"== Table 1 row: {row}")
        _run_flow(_load(config, [*(sets or []), *overrides], profile), None)


def _yaml_value(value: object) -> str:
    import json

    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _check_services(cfg: PipelineConfig) -> None:
    """Fail fast, before any stage, when Ray, Prefect, MLflow or S3 does not answer."""
    from stcorr.preflight import check_services

    check_services(cfg)


def _run_flow(cfg: PipelineConfig, pipeline_id: str | None, until: str = "evaluate") -> None:
    """Run the flow; SIGINT/SIGTERM checkpoint a running training stage and end the runs KILLED."""
    from stcorr import interrupt
    from stcorr.orchestration import prefect_environment, start_ephemeral_server

    interrupt.install()
    prefect_environment(cfg)
    prefect_ready = start_ephemeral_server()
    from flows.pipeline import run_pipeline

    try:
        typer.echo(run_pipeline(cfg, pipeline_id, until, before_flow=prefect_ready))
    except Exception as exc:
        from stcorr.tracking import TrackingError, explain_outage

        outage = explain_outage(exc, cfg.tracking)
        if outage is None:
            raise
        raise TrackingError(outage) from exc
    except interrupt.Interrupted as stop:
        typer.echo(f"stcorr: {stop}; runs marked KILLED. Continue with: stcorr resume", err=True)
        raise typer.Exit(128 + stop.signum) from None


@app.command("config")
@friendly_errors
def show_config(config: ConfigOpt = None, sets: SetOpt = None, profile: ProfileOpt = None) -> None:
    """Print the resolved config (defaults, file, STCORR_* environment and --set applied) as YAML."""
    import yaml

    cfg = _load(config, sets, profile)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@app.command("config-reference")
def config_reference() -> None:
    """Print the config reference (every key, type, default, why) as Markdown."""
    from stcorr.config_reference import render_reference

    typer.echo(render_reference(), nl=False)


def _register_commands() -> None:
    """Commands that live in their own modules (evaluation, training, models) add themselves here."""
    from stcorr import cli_eval, cli_models, cli_train

    cli_eval.register(app)
    cli_train.register(app)
    cli_models.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="stcorr")


if __name__ == "__main__":  # pragma: no cover
    main()
