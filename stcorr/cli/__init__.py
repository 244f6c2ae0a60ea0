"""The ``stcorr`` command line: one Typer app (``common.app``); each module adds its commands.

``common`` holds the app, the shared options and the error contract; ``pipeline`` the pipeline
commands (synth, shard, run, resume, status, ui, sweep, config); ``train`` the single-stage
commands, ``evaluate`` evaluate/score/track, ``models`` import-checkpoint.
"""

# isort: off
from stcorr.cli import pipeline, train, evaluate, models  # noqa: F401  (each adds its commands, in help order)
# isort: on
from stcorr.cli.common import app

__all__ = [
    "app",
    "main",
]


def main() -> None:
    """Console-script entry point."""
    app(prog_name="stcorr")
