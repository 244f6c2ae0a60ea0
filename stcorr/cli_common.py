"""Options and error handling shared by every ``stcorr`` command."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from stcorr.config import ConfigError, PipelineConfig, load_config

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="pipeline_config.yaml to load (default: built-in defaults)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one key, e.g. --set shard.max_samples=500 (repeatable)."),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="local (embedded demo), cpu-hour (embedded services, one-hour "
                 "training budget) or cluster (configured servers)."),
]

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn the errors a user can fix into one line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:  # click's Exit is a RuntimeError: let it through with its code
            raise
        except ConfigError as exc:
            _fail(str(exc), 2)
        except (OSError, ValueError, RuntimeError, LookupError) as exc:
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


