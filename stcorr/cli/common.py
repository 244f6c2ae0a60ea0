"""The ``stcorr`` app, the options and the error contract shared by every command.

Every command takes ``--config FILE`` and repeated ``--set section.key=value``. Every error is
one line on stderr, ``stcorr: error: ...``: exit 2 for a usage or config problem (click's own
usage errors included), 1 for a runtime or input problem (a missing path, a corrupt file, an
unreachable server). ``STCORR_DEBUG=1`` shows the traceback of the latter.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer._click import exceptions as click  # typer >= 0.26 runs its own copy of click
from typer.core import TyperArgument, TyperGroup

from stcorr.config import ConfigError, PipelineConfig, load_config

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="FILE",
                 help="pipeline_config.yaml to load (default: built-in defaults)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE",
                 help="Override one config key, section.key=value (repeatable; keys: stcorr "
                 "config-reference)."),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", metavar="NAME", help="local (embedded demo), cpu-hour (embedded services, "
                 "one-hour training budget) or cluster (configured servers)."),
]

F = TypeVar("F", bound=Callable[..., Any])
USAGE_EXIT = 2  # usage and config errors; runtime and input errors exit 1


def examples(*lines: str) -> str:
    """A help epilog listing example command lines, kept as written (click's ``\\b``)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def friendly_errors(func: F) -> F:
    """Turn the errors a user can fix into one line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:  # click's Exit is a RuntimeError: let it through with its code
            raise
        except ConfigError as exc:
            _fail(str(exc), USAGE_EXIT)
        except (OSError, ValueError, RuntimeError, LookupError) as exc:
            if os.environ.get("STCORR_DEBUG"):
                raise
            _fail(_one_line(exc), 1)

    return wrapper  # type: ignore[return-value]


class _UntypedArgument(TyperArgument):
    """A positional argument whose help shows its name, without a ``<str>`` after it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class OneLineErrors(TyperGroup):
    """The ``stcorr`` group: click's own usage errors (a missing or unknown option, a bad value,
    an unknown command) as one ``stcorr: error:`` line and exit 2, no usage block or panel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            for param in command.params:
                if type(param) is TyperArgument:
                    param.__class__ = _UntypedArgument

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        call = functools.partial(super().main, args, prog_name, complete_var, standalone_mode=False,
                                 windows_expand_args=windows_expand_args, **extra)
        if not standalone_mode:
            return call()
        try:
            code = call()
        except click.NoArgsIsHelpError as exc:  # plain `stcorr`: the help, as click does
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            typer.echo(f"stcorr: error: {usage_line(exc)}", err=True)
            sys.exit(USAGE_EXIT)
        except click.ClickException as exc:
            typer.echo(f"stcorr: error: {_flat(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("stcorr: error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # non-standalone click returns Exit's code


def usage_line(exc: click.UsageError) -> str:
    """``track: Missing option '--video' (see stcorr track --help)``."""
    message = _flat(exc.format_message()).rstrip(".")
    if exc.ctx is None:
        return message
    path = exc.ctx.command_path
    command = path.partition(" ")[2]
    return f"{command + ': ' if command else ''}{message} (see {path} --help)"


def _flat(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in message:
        message = f"{exc.filename}: {message}"
    return message


def _fail(message: str, code: int) -> None:
    from stcorr.runtime import console

    console.error(message)  # the terminal's stderr, also once a run sends stderr to its log
    raise typer.Exit(code)


@contextlib.contextmanager
def removed_on_failure(path: Path) -> Iterator[None]:
    """Delete the folder ``path`` (with the parents made for it) if the block fails and the
    folder did not exist before it: a failed command leaves nothing it created, and never
    touches a folder that was already there."""
    absolute = Path(os.path.abspath(path))
    missing = [p for p in (absolute, *absolute.parents) if not p.exists()]
    created = missing[-1] if missing else None  # the topmost folder this command will make
    try:
        yield
    except BaseException:
        if created is not None and created.is_dir():
            shutil.rmtree(created, ignore_errors=True)
        raise


def _load(config: Path | None, sets: list[str] | None, profile: str | None = None) -> PipelineConfig:
    return load_config(config, sets or (), profile=profile)


app = typer.Typer(
    help="Learn dense space-time correspondence from unlabeled images and videos (STT, CRW), "
    "and evaluate it by label propagation. `stcorr run` runs the pipeline.",
    cls=OneLineErrors,  # click's usage errors as one line, exit 2
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: paragraphs rewrapped, no panels, no <type> tags
)
