"""The Ray Train V2 worker loop shared by every training stage.

Resume goes only through ``ray.train.get_checkpoint()`` (docs/stack.md 1.2): a relaunch with the same
run name and storage path gets the latest checkpoint, restores model, optimiser, scheduler and
step, and continues; nothing else decides "first run or resume". Each step re-seeds the random
generators from (seed, rank, step) and the data stream skips what was consumed, so a resumed run
repeats the uninterrupted run's steps.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stcorr.config import PipelineConfig
from stcorr.train.checkpoint import capture_state, restore_checkpoint, write_state
from stcorr.train.health import HEALTH_FILE
from stcorr.train.rank0 import Rank0
from stcorr.train.schedule import cosine_with_warmup
from stcorr.train.stages import StageInputs, TrainStage

ENCODER_FILE = "encoder.pt"
FAILURE_FILE = "nonfinite.json"
STOP_FILE = "stop.json"  # written by the driver on SIGINT/SIGTERM (stcorr.runtime.interrupt)


def build_stage(loop_config: dict[str, Any]) -> TrainStage:
    """The stage named in ``loop_config`` (imported here: workers unpickle only this module)."""
    cfg = PipelineConfig.model_validate(loop_config["config"])
    inputs = StageInputs(**loop_config["inputs"])
    if loop_config["stage"] == "pretrain":
        from stcorr.train.pretrain import PretrainStage

        return PretrainStage(cfg, inputs)
    from stcorr.train.finetune import FinetuneStage

    return FinetuneStage(cfg, inputs)


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed that depends only on (seed, rank, step)."""
    digest = hashlib.sha256(f"{seed}:{rank}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def train_worker(loop_config: dict[str, Any]) -> None:
    """Per-worker training function given to ``TorchTrainer``."""
    import ray.train
    import ray.train.torch

    stage = build_stage(loop_config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(stage.section.seed)  # identical init on every rank (DDP also broadcasts it)
    module = stage.build()
    optimizer = stage.optimizer(module)
    scheduler = cosine_with_warmup(optimizer, stage.steps, stage.section.warmup_steps)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint_folder(checkpoint) as folder:
            restored = restore_checkpoint(folder, model=module, optimizer=optimizer, scheduler=scheduler)
        start = int(restored["step"])
    log = Rank0(rank, loop_config.get("tracking_uri"), loop_config.get("run_id"), system_metrics=True)
    if start:
        log.metrics({"resumed_from_step": start}, start)
    log.print(
        f"{stage.name}: {'resuming at step ' + str(start) if start else 'starting'} "
        f"({world} workers, {stage.steps} steps)"
    )
    # Every stage builds only the layers its objective uses, so DDP needs no unused-parameter scan.
    no_scan = {"find_unused_parameters": False}
    wrapped = ray.train.torch.prepare_model(module, parallel_strategy_kwargs=no_scan)
    nodes = _node_ids(world)
    log.tags({"stcorr.ray_nodes": ",".join(sorted(set(nodes))), "stcorr.ray_worker_nodes": json.dumps(nodes)})
    loop = _Loop(stage, module, wrapped, optimizer, scheduler, rank, world, log, loop_config)
    try:
        loop.run(start)
        log.flush()
    finally:
        log.close()


@contextlib.contextmanager
def checkpoint_folder(checkpoint: Any) -> Iterator[Path]:
    """A ``ray.train.Checkpoint`` as a local folder that no other process writes to.

    A checkpoint on local storage is read in place. A remote one (S3) is downloaded into a
    folder of the caller's own, removed on exit. ``Checkpoint.as_directory`` shares one folder
    among the processes of a node and lets a late one download again into it while an earlier
    one reads (ray-project/ray#48726): ranks restoring together on one node then read a
    half-rewritten ``state.pt``.
    """
    import pyarrow.fs  # type: ignore[import-untyped]

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        yield Path(checkpoint.path)
        return
    folder = tempfile.mkdtemp(prefix="stcorr-restore-")
    try:
        checkpoint.to_directory(folder)
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class _Loop:
    """What every step of one worker's training loop uses."""

    stage: TrainStage
    module: torch.nn.Module  # the stage's module; ``wrapped`` is its DDP wrapper (or itself)
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    rank: int
    world: int
    log: Rank0
    loop_config: dict[str, Any]  # the driver's: config, inputs, run id, stop and marker URLs

    def run(self, start: int) -> None:
        """Steps ``start .. stage.steps - 1``; stops early on a non-finite loss or a stop request."""
        stage, section = self.stage, self.stage.section
        batches = stage.batches(self.rank, self.world, start)
        stop_watch = _StopWatch(stage.cfg, self.loop_config.get("stop_url"))
        self.wrapped.train()
        for step in range(start, stage.steps):
            seed = step_seed(section.seed, self.rank, step)
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            began = time.perf_counter()
            batch = next(batches)
            waited = time.perf_counter() - began
            diagnose = _log_step(step, section.log_every, stage.steps)
            out = stage.step(self.wrapped, batch, rng, diagnose=diagnose)
            finite, stop = _agree(out["loss"], stop_watch.requested(), self.world)
            if not finite:
                self._report_nonfinite(step)
                return
            self.optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            self.optimizer.step()
            self.scheduler.step()
            self._after_step(out, batch, step, (time.perf_counter() - began, waited))
            last = step + 1 == stage.steps
            if stop or last or (step + 1) % section.checkpoint_every == 0:
                self.log.flush()  # no checkpoint ahead of a metric that failed to log (a resume re-logs it)
                self._checkpoint(step + 1, out)
            if stop and not last:
                self.log.print(f"{stage.name}: stop requested; checkpoint saved at step {step + 1}")
                return

    def _after_step(self, out: dict[str, torch.Tensor], batch: dict[str, Any], step: int,
                    seconds: tuple[float, float]) -> None:
        """Metrics and progress on log steps, a picture every ``image_every`` steps.

        Args:
            seconds: (the step's wall time, the part of it spent waiting for the batch).
        """
        stage, section, log = self.stage, self.stage.section, self.log
        elapsed, waited = seconds
        if _log_step(step, section.log_every, stage.steps):
            scalars = {k: float(v.detach()) for k, v in out.items() if v.dim() == 0}
            scalars.update(
                lr=self.optimizer.param_groups[0]["lr"],
                samples_per_s=stage.batch_size * self.world / max(elapsed, 1e-9),
                data_wait_share=waited / max(elapsed, 1e-9),
            )
            log.metrics(scalars, step + 1)
            stage.history.append({"step": float(step + 1), **scalars})  # health.json: learned anything?
            log.progress(stage.name, step, stage.steps, scalars["loss"])
        image_every = getattr(section, "image_every", 0)
        if log.enabled and image_every and ((step + 1) % image_every == 0 or step == 0):
            panel = stage.panel(out, batch)
            if panel is not None:
                log.image(panel, f"panels/step_{step + 1:06d}.png")

    def _report_nonfinite(self, step: int) -> None:
        """Leave a marker for the driver and stop cleanly (a retry would only hit the NaN again)."""
        if self.rank == 0:
            from stcorr.runtime import storage_from_config

            storage_from_config(self.stage.cfg.storage).write_bytes(
                self.loop_config["marker_url"], json.dumps({"step": step + 1}).encode()
            )

    def _checkpoint(self, step: int, out: dict[str, torch.Tensor]) -> None:
        """Rank 0 checkpoints (+ the exported encoder); every rank calls report once.

        Only the copy of the state happens here. Writing the files and persisting them to the
        run's storage happen in Ray Train's upload thread (``CheckpointUploadMode.ASYNC``) while
        training goes on; Ray registers the checkpoint only once it is persisted and waits for
        pending uploads before the worker exits, and a failed write stops the run with the
        write's error.
        """
        import ray.train

        metrics = {"step": step, "loss": float(out["loss"].detach())}
        mode = ray.train.CheckpointUploadMode.ASYNC
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_upload_mode=mode)
            return
        stage = self.stage
        state = capture_state(step=step, config=self.loop_config["config"], model=self.module,
                              optimizer=self.optimizer, scheduler=self.scheduler)
        encoder = copy.deepcopy(stage.export(self.module))
        extras = {**stage.extra_files(self.module), HEALTH_FILE: json.dumps(stage.history).encode()}
        folder = Path(tempfile.mkdtemp(prefix=f"stcorr-{stage.name}-{step}-"))
        storage = ray.train.get_context().get_storage()

        def write_and_persist(checkpoint: ray.train.Checkpoint, name: str) -> ray.train.Checkpoint:
            try:
                write_state(folder, state)
                torch.save(encoder, folder / ENCODER_FILE)
                for file_name, data in extras.items():
                    (folder / file_name).write_bytes(data)
                return storage.persist_current_checkpoint(checkpoint, name)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise

        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
            checkpoint_upload_mode=mode,
            delete_local_checkpoint_after_upload=True,
            checkpoint_upload_fn=write_and_persist,
        )


def _log_step(step: int, log_every: int, steps: int) -> bool:
    """Metrics (and the costlier diagnostics) at the first, every ``log_every``-th and last step."""
    return (step + 1) % log_every == 0 or step == 0 or step + 1 == steps


def _node_ids(world: int) -> list[str]:
    """The Ray node id of every rank, in rank order (where the workers really ran)."""
    import ray

    mine = ray.get_runtime_context().get_node_id()
    if world == 1:
        return [mine]
    import torch.distributed as dist

    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    return [str(node) for node in everyone]


def _agree(loss: torch.Tensor, stop: bool, world: int) -> tuple[bool, bool]:
    """(the loss is finite on every rank, some rank saw a stop request): one all-reduce, so the
    ranks stop together at the same step (DDP would hang otherwise)."""
    flags = torch.tensor([float(bool(torch.isfinite(loss.detach()).all())), float(not stop)])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return bool(flags[0] == 1.0), bool(flags[1] == 0.0)


class _StopWatch:
    """Looks for the driver's stop marker at most once a second (a HEAD request on S3)."""

    def __init__(self, cfg: PipelineConfig, url: str | None) -> None:
        from stcorr.runtime import storage_from_config

        self.url = url
        self.storage = storage_from_config(cfg.storage) if url else None
        self.checked = 0.0

    def requested(self) -> bool:
        now = time.monotonic()
        if self.storage is None or now - self.checked < 1.0:
            return False
        self.checked = now
        return self.storage.exists(str(self.url))
