"""Prefect settings for the embedded (ephemeral) and cluster (server) profiles.

Prefect reads its settings when it is imported, so :func:`prefect_environment` must run before
``import prefect``. Offline machines need telemetry off and a generous ephemeral start-up timeout
(STACK.md 3e).
"""

from __future__ import annotations

import os
from pathlib import Path

from stcorr.config_sections import PipelineConfig


def prefect_environment(cfg: PipelineConfig) -> None:
    """Set the ``PREFECT_*`` variables for this process (explicit user settings win)."""
    home = Path(os.environ.get("PREFECT_HOME", Path("work") / "prefect")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    if cfg.compute.prefect_api_url:
        defaults["PREFECT_API_URL"] = cfg.compute.prefect_api_url
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
