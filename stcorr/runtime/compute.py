"""Connect to Ray: a local instance on this machine (embedded default) or a cluster address.

Ray is imported inside the functions so that ``stcorr`` itself never needs Ray to import.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from stcorr.config import ComputeConfig


class ComputeError(RuntimeError):
    """Ray could not be reached or started; the message names the address and how to fix it."""


def ray_env(compute: ComputeConfig) -> dict[str, str]:
    """Environment every Ray process of ours needs (driver, ``ray start``, workers).

    Ray 2.60 turns token auth on by itself and writes ``~/.ray/auth_token``; locally we switch it
    off, on a cluster every node and driver must agree on ``token`` (docs/stack.md 1.1).
    """
    from stcorr.tracking import HTTP_RETRIES

    return {
        **{key: os.environ.get(key, value) for key, value in HTTP_RETRIES.items()},
        "RAY_AUTH_MODE": os.environ.get(
            "RAY_AUTH_MODE", "disabled" if compute.ray_address is None else "token"
        ),
        "RAY_TRAIN_V2_ENABLED": "1",
        # Train V2 turns a worker's print into a log record that Ray prints as well: every line
        # twice. Plain prints reach the driver once (stcorr.runtime.console shows rank 0's).
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        # Keep relative paths (work/...) meaning the same inside Ray Train workers.
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
    }


def init_ray(compute: ComputeConfig, **extra: Any) -> None:
    """Start or join Ray once per process; a no-op when Ray is already initialised.

    Raises:
        ComputeError: the cluster address does not answer.
    """
    with _INIT_LOCK:  # the image and video shard tasks may both be first
        _init_ray(compute, **extra)


_INIT_LOCK = threading.Lock()


def _init_ray(compute: ComputeConfig, **extra: Any) -> None:
    import ray

    if ray.is_initialized():
        return
    env = ray_env(compute)
    os.environ.update(env)
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "WARNING",
        "runtime_env": {"env_vars": env},
        **extra,
    }
    if compute.ray_address is None:
        kwargs["num_cpus"] = compute.num_cpus or os.cpu_count() or 1
    else:
        kwargs["address"] = compute.ray_address
    keep = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        where = compute.ray_address or "a local Ray instance"
        raise ComputeError(
            f"compute.ray_address: could not connect to Ray at {where} ({exc}); start it with "
            "`ray start --head` or set compute.ray_address to null for a local Ray"
        ) from None
    from stcorr.runtime.console import attach_ray

    attach_ray()  # rank 0's progress and our warnings to the console, Ray's lines to its printer
    if threading.current_thread() is threading.main_thread() and keep is not None:
        # ray.init installs sys.exit; keep ours (stcorr.runtime.interrupt)
        signal.signal(signal.SIGTERM, keep)


def shutdown_ray() -> None:
    """Stop the Ray instance this process started (or disconnect from a cluster)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
