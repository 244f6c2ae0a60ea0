"""The ``stcorr`` command line.

Every command takes ``--config FILE`` and repeated ``--set section.key=value``. Errors are one
line on stderr: exit code 2 for a config problem, 1 for anything else the user can fix (a missing
path, a corrupt file, an unreachable server). ``STCORR_DEBUG=1`` shows the full traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from stcorr.config import ConfigError, PipelineConfig, load_config

app = typer.Typer(
    help="Learn dense space-time correspondence from unlabeled images and videos (STT, CRW), "
    "and evaluate it by label propagation. `stcorr run` runs the pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="pipeline_config.yaml to load (default: built-in defaults)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one key, e.g. --set shard.max_samples=500 (repeatable)."),
]
ProfileOpt = Annotated[
    str | None, typer.Option("--profile", help="local (embedded services) or cluster (configured servers).")
]

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn the errors a user can fix into one line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc), 2)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            if os.environ.get("STCORR_DEBUG"):
                raise
            _fail(_one_line(exc), 1)

    return wrapper  # type: ignore[return-value]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in message:
        message = f"{exc.filename}: {message}"
    return message


def _fail(message: str, code: int) -> None:
    typer.echo(f"stcorr: error: {message}", err=True)
    raise typer.Exit(code)


def _load(config: Path | None, sets: list[str] | None, profile: str | None = None) -> PipelineConfig:
    return load_config(config, sets or (), profile=profile)


@app.command()
@friendly_errors
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the synthetic data into.")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write the synthetic data: images, videos (.mp4 and JPEG folders), DAVIS/VIP/JHMDB benchmarks."""
    from stcorr.data.synthetic import generate

    cfg = _load(config, sets)
    roots = generate(out, cfg.data.synth)
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
def run(config: ConfigOpt = None, sets: SetOpt = None, profile: ProfileOpt = None) -> None:
    """Run the pipeline on the configured profile (embedded default: everything on this machine).

    For now the pipeline is the data stage: synthetic data (or your folders) -> WebDataset shards,
    logged to MLflow. Training and evaluation stages join it in later releases.
    """
    from stcorr.orchestration import prefect_environment

    cfg = _load(config, sets, profile)
    prefect_environment(cfg)
    from flows.pipeline import run_pipeline

    summary = run_pipeline(cfg)
    typer.echo(summary)


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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="stcorr")


if __name__ == "__main__":  # pragma: no cover
    main()
