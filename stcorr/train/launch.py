"""Driver side of a training stage: build the ``TorchTrainer``, fit, collect the output.

The Ray run name comes from the stage fingerprint, so relaunching the same stage finds the run's
snapshot in storage and Ray Train V2 hands the latest checkpoint to the workers
(``resume_from_checkpoint`` no longer exists; docs/stack.md 1.2).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path
from typing import Any

from stcorr.config import PipelineConfig
from stcorr.runtime import init_ray, interrupt, is_s3, split_s3, storage_from_config
from stcorr.tracking import resolve_uri
from stcorr.train.health import HEALTH_FILE
from stcorr.train.stages import StageInputs
from stcorr.train.worker import ENCODER_FILE, FAILURE_FILE, STOP_FILE, checkpoint_folder, train_worker


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


class TrainingError(RuntimeError):
    """Training failed after Ray Train's retries; one line with the worker's error."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished training stage hands on."""

    run_name: str
    checkpoint: str  # where Ray persisted the final checkpoint (local folder or s3 URI)
    encoder_path: Path  # local copy of the exported encoder (torchvision key names)
    steps: int
    extras: dict[str, str] = dataclasses.field(default_factory=dict)  # teacher_sha256.txt, health.json


def ray_storage(cfg: PipelineConfig) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for ``RunConfig``: a local folder or an S3 prefix."""
    root = cfg.storage.root.rstrip("/")
    if not is_s3(root):
        path = Path(root, "ray").resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None
    import pyarrow.fs  # type: ignore[import-untyped]

    bucket, key = split_s3(root)
    endpoint = cfg.storage.s3_endpoint_url
    kwargs: dict[str, Any] = {"region": cfg.storage.s3_region or "us-east-1"}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme)
    return f"{bucket}/{key}/ray".replace("//", "/"), pyarrow.fs.S3FileSystem(**kwargs)


def marker_url(cfg: PipelineConfig, run_name: str, name: str = FAILURE_FILE) -> str:
    """Where the driver and the workers of ``run_name`` leave each other a note."""
    return f"{cfg.storage.root.rstrip('/')}/ray-markers/{run_name}/{name}"


def fit_stage(
    cfg: PipelineConfig, stage: str, inputs: StageInputs, *, run_name: str, run_id: str | None = None
) -> TrainResult:
    """Run (or resume) one training stage on Ray Train and return its output.

    Raises:
        NonFiniteLossError: the loss stopped being finite; names the step and last checkpoint.
        TrainingError: a worker failed more often than ``FailureConfig`` retries.
    """
    init_ray(cfg.compute)
    storage = storage_from_config(cfg.storage)
    marker, stop = marker_url(cfg, run_name), marker_url(cfg, run_name, STOP_FILE)
    for stale in (marker, stop):
        if storage.exists(stale):
            storage.delete(stale)
    loop_config = {
        "stage": stage,
        "config": cfg.model_dump(mode="json"),
        "inputs": dataclasses.asdict(inputs),
        "tracking_uri": resolve_uri(cfg.tracking.uri) if cfg.tracking.uri else None,
        "run_id": run_id,
        "marker_url": marker,
        "stop_url": stop,
    }
    trainer = _trainer(cfg, stage, run_name, loop_config)
    with interrupt.stoppable(stage, lambda: storage.write_bytes(stop, b"{}")):
        result = _fit(trainer, stage)
    signum = interrupt.stopped(stage)
    if signum is not None:
        where = result.checkpoint.path if result.checkpoint is not None else "none"
        raise interrupt.Interrupted(
            f"{stage}: stopped by signal; checkpoint saved at {where}; `stcorr resume` continues from it",
            signum,
        )
    if storage.exists(marker):
        step = json.loads(storage.read_bytes(marker))["step"]
        last = result.checkpoint.path if result.checkpoint is not None else "none (no checkpoint yet)"
        raise NonFiniteLossError(
            f"{stage}: loss is not finite at step {step}; stopped. Last good checkpoint: {last}"
        )
    return _collect(cfg, result, run_name)


def _trainer(cfg: PipelineConfig, stage: str, run_name: str, loop_config: dict[str, Any]) -> Any:
    """The ``TorchTrainer`` of one stage: its workers, resources, storage and retries."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage_path, filesystem = ray_storage(cfg)
    compute = cfg.compute.for_stage(stage)
    gpu = compute.gpus_per_worker > 0
    resources = {"CPU": compute.cpus_per_worker, **({"GPU": compute.gpus_per_worker} if gpu else {})}
    return TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=compute.workers, use_gpu=gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=2),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )


def _fit(trainer: Any, stage: str) -> Any:
    """``trainer.fit()`` in a helper thread: in the main thread it would replace our SIGINT
    handler by one that aborts the workers without a checkpoint (ray.train v2 trainer)."""
    from ray.train import TrainingFailedError

    try:
        return _in_daemon_thread(trainer.fit, f"fit-{stage}")
    except TrainingFailedError as exc:
        cause = exc.__cause__ or exc
        first = str(cause).strip().splitlines()
        raise TrainingError(
            f"{stage}: training failed after retries: {first[-1] if first else cause!r}"
        ) from exc


def _in_daemon_thread(func: Any, name: str) -> Any:
    """``func()`` in a daemon thread, waited for in short slices so signals are handled at once
    (and a second Ctrl-C does not wait for it, as a thread pool's shutdown would)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = func()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if "error" in box:
        raise box["error"]
    return box["result"]


def output_dir(cfg: PipelineConfig, run_name: str) -> Path:
    """The local folder (created) a stage's exported encoder goes to: under a local
    ``storage.root``, else under ``work/`` (an s3:// root keeps only the checkpoints)."""
    root = Path("work") if is_s3(cfg.storage.root) else Path(cfg.storage.root)
    out_dir = (root / "outputs" / run_name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _collect(cfg: PipelineConfig, result: Any, run_name: str) -> TrainResult:
    if result.checkpoint is None:
        raise TrainingError(f"{run_name}: training finished without a checkpoint")
    out_dir = output_dir(cfg, run_name)
    extras: dict[str, str] = {}
    with checkpoint_folder(result.checkpoint) as folder:
        shutil.copyfile(folder / ENCODER_FILE, out_dir / ENCODER_FILE)
        for extra in [*folder.glob("*.txt"), *folder.glob(HEALTH_FILE)]:
            extras[extra.name] = extra.read_text()
    path = result.checkpoint.path
    location = f"s3://{path}" if is_s3(cfg.storage.root) else path
    step = int((result.metrics or {}).get("step", 0))  # metrics of the last checkpointed report
    return TrainResult(run_name, location, out_dir / ENCODER_FILE, step, extras)
