"""Prefect settings for the embedded (ephemeral) and cluster (server) profiles.

Prefect reads its settings when it is imported, so :func:`prefect_environment` must run before
``import prefect``. Offline machines need telemetry off and a generous ephemeral start-up timeout
(docs/stack.md 2.2).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from stcorr.config import PipelineConfig


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


def start_ephemeral_server() -> Callable[[], None]:
    """Start Prefect's temporary server now, in the background; return a function that waits for it.

    Without a Prefect API URL the flow starts a local server on its first API call (about 7 s on
    2 cores). Started here, that overlaps with importing torch and opening the MLflow runs.
    """

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            return
        try:
            SubprocessASGIServer().start()
        except Exception:  # the flow's own start retries and reports it
            return

    thread = threading.Thread(target=start, name="prefect-server", daemon=True)
    thread.start()
    return thread.join
