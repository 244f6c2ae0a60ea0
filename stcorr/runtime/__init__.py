"""Where the pipeline runs: storage (local or S3), leases, Ray, Prefect, service checks, interrupts,
the console.

``storage`` reads and writes by URL; ``locks`` leases a stage to one process; ``compute`` starts
or joins Ray; ``orchestration`` sets up Prefect; ``preflight`` checks every configured service
before anything starts; ``interrupt`` turns SIGINT/SIGTERM into a checkpoint-and-stop;
``console`` is what a person sees while it runs (progress, stage lines) and the run's log file.
"""

from stcorr.runtime.compute import init_ray, shutdown_ray
from stcorr.runtime.console import StcorrWarning, tagged
from stcorr.runtime.locks import lease
from stcorr.runtime.orchestration import prefect_environment, start_ephemeral_server
from stcorr.runtime.preflight import ServiceUnreachableError, check_mlflow, check_services, find_problems
from stcorr.runtime.storage import (
    Storage,
    StorageError,
    StorageNotFoundError,
    is_s3,
    split_s3,
    storage_from_config,
)

__all__ = [
    "ServiceUnreachableError",
    "StcorrWarning",
    "Storage",
    "StorageError",
    "StorageNotFoundError",
    "check_mlflow",
    "check_services",
    "find_problems",
    "init_ray",
    "is_s3",
    "lease",
    "prefect_environment",
    "shutdown_ray",
    "split_s3",
    "start_ephemeral_server",
    "storage_from_config",
    "tagged",
]
