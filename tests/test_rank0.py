"""Rank 0's MLflow writes go through a background thread: they land in order, and a failed
write stops training at the next call instead of being lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from stcorr.train.rank0 import Rank0


def _store(tmp_path: Path) -> tuple[str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("rank0", artifact_location=str(tmp_path / "artifacts"))
    return uri, client.create_run(experiment).info.run_id


def test_metrics_tags_and_images_land_after_flush(tmp_path: Path) -> None:
    uri, run_id = _store(tmp_path)
    log = Rank0(0, uri, run_id, system_metrics=False)
    for step in range(1, 6):
        log.metrics({"loss": 1.0 / step, "lr": 0.1}, step)
    log.tags({"stcorr.ray_nodes": "a,b"})
    log.image(np.full((8, 8, 3), 200, np.uint8), "panels/step_000005.png")
    log.flush()
    log.close()

    client = MlflowClient(uri)
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / s) for s in range(1, 6)]
    assert client.get_run(run_id).data.tags["stcorr.ray_nodes"] == "a,b"
    assert [f.path for f in client.list_artifacts(run_id, "panels")] == ["panels/step_000005.png"]


def test_a_failed_write_is_raised_in_the_training_thread(tmp_path: Path) -> None:
    uri, _ = _store(tmp_path)
    log = Rank0(0, uri, "0" * 32, system_metrics=False)  # no such run: every write fails
    log.metrics({"loss": 1.0}, 1)
    with pytest.raises(MlflowException):
        log.flush()
    log.close()


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    uri, run_id = _store(tmp_path)
    log = Rank0(1, uri, run_id, system_metrics=False)
    log.metrics({"loss": 1.0}, 1)
    log.flush()
    log.close()
    assert MlflowClient(uri).get_metric_history(run_id, "loss") == []
