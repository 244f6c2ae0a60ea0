"""Side effects on rank 0 only, behind one helper: printing, MLflow metrics, images, system metrics.

Printed lines are tagged for the driver's console (``stcorr.runtime.console``): Ray forwards them, and the
driver shows them as a line or as the stage's progress display instead of passing them to the log.

The driver opens the stage's MLflow run and passes its id; rank 0 writes into that run from
inside the Ray Train worker (Ray Train V2 has no MLflow callback; docs/stack.md 1.3).

MLflow calls go through one background thread, in order, so a slow tracking server does not
stall the training step. A call that failed is raised in the training thread at the next call
(or at :meth:`Rank0.flush`), so a tracking outage still stops the run with MLflow's error. The
worker flushes before every checkpoint, so a checkpoint is never registered past steps whose
metrics were lost: a resume starts at or before the first of them and logs them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from stcorr.runtime import tagged


class Rank0:
    """Logs only when ``rank == 0``; every method is a no-op elsewhere."""

    def __init__(
        self, rank: int, tracking_uri: str | None, run_id: str | None, *, system_metrics: bool
    ) -> None:
        self.rank = rank
        self.enabled = rank == 0
        self._client: Any = None
        self._monitor: Any = None
        self._run_id = run_id
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future[Any]] = []
        if self.enabled and tracking_uri and run_id:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri)
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rank0-mlflow")
            if system_metrics:
                self._monitor = _start_system_metrics(run_id, tracking_uri)

    def print(self, message: str) -> None:
        """A line for the driver's console (``stcorr.runtime.console``), not for the log."""
        if self.enabled:
            print(tagged("say", text=message), flush=True)

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)  # the time of the step, not of the write
        batch = [Metric(key, float(value), now, step) for key, value in values.items()]
        self._submit(lambda: self._client.log_batch(self._run_id, metrics=batch))

    def tags(self, values: dict[str, str]) -> None:
        if self._client is None:
            return
        from mlflow.entities import RunTag

        tags = [RunTag(key, value) for key, value in values.items()]
        self._submit(lambda: self._client.log_batch(self._run_id, tags=tags))

    def image(self, array: np.ndarray, artifact_file: str) -> None:
        """Log an ``(H, W, 3)`` uint8 array as a PNG artifact."""
        if self._client is None:
            return
        image = Image.fromarray(array)  # log_image writes it as PNG (the file's extension)
        self._submit(lambda: self._client.log_image(self._run_id, image, artifact_file=artifact_file))

    def progress(self, stage: str, step: int, total: int, loss: float) -> None:
        """Step ``step + 1`` of ``total`` for the stage's progress display on the driver, which
        adds the rate and ETA (``stcorr.runtime.console``)."""
        if self.enabled:
            print(tagged("progress", stage=stage, step=step + 1, total=total, info=f"loss {loss:.4f}"),
                  flush=True)

    def flush(self) -> None:
        """Wait for every queued MLflow call; raise the first one that failed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Stop the system metrics monitor and the writer thread (waits, raises nothing)."""
        if self._monitor is not None:
            self._monitor.finish()
        if self._writer is not None:
            self._writer.shutdown(wait=True)

    def _submit(self, call: Callable[[], Any]) -> None:
        """Queue ``call`` on the writer thread; first raise any earlier call's error."""
        waiting = []
        for future in self._pending:  # one done() per future: none can slip between two checks
            if future.done():
                future.result()
            else:
                waiting.append(future)
        self._pending = waiting
        assert self._writer is not None
        self._pending.append(self._writer.submit(call))


def _start_system_metrics(run_id: str, tracking_uri: str) -> Any:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=5, tracking_uri=tracking_uri)
    monitor.start()
    return monitor
