"""Evaluation commands: ``stcorr evaluate``, ``stcorr score``, ``stcorr track``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to ``app``."""
