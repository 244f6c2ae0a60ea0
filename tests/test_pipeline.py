"""The whole pipeline through the console script on a tiny config: stages, lineage, skipping, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = [
    "data.synth.images=32",
    "data.synth.image_size=48",
    "data.synth.videos=6",
    "data.synth.video_frames=8",
    "data.synth.video_size=[64, 96]",
    "data.synth.davis_sequences=2",
    "data.synth.vip_sequences=1",
    "data.synth.jhmdb_sequences=1",
    "data.synth.benchmark_frames=5",
    "data.synth.benchmark_size=[64, 96]",
    "shard.samples_per_shard=8",
    "compute.num_cpus=2",
    "compute.loader_workers=0",
    "pretrain.steps=4",
    "pretrain.batch_size=8",
    "pretrain.image_size=32",
    "pretrain.checkpoint_every=4",
    "pretrain.moco.queue=64",
    "pretrain.moco.hidden=64",
    "finetune.steps=6",
    "finetune.batch_size=2",
    "finetune.crop_size=64",
    "finetune.checkpoint_every=2",
    "finetune.log_every=1",
    "evaluate.baselines=[lab]",
]


def _command(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("stcorr")
    sets = [arg for item in TINY for arg in ("--set", item)]
    return [str(exe), *args, *sets]


def _stcorr(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(*args), cwd=cwd, capture_output=True, text=True, timeout=900)


def _runs(cwd: Path) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'work/mlflow.db'}")
    return mlflow.search_runs(experiment_names=["stcorr"], output_format="list")


def _finished(runs: list, stage: str) -> list:
    return [
        r
        for r in runs
        if r.data.tags.get("stcorr.stage") == stage
        and r.data.tags.get("stcorr.fingerprint")
        and r.info.status == "FINISHED"
    ]


def test_pipeline_end_to_end_then_cached_then_evaluate_only(tmp_path: Path) -> None:
    first = _stcorr(tmp_path, "run")
    assert first.returncode == 0, first.stderr[-4000:]
    runs = _runs(tmp_path)
    for stage in ("pretrain", "teacher", "finetune", "evaluate"):
        assert len(_finished(runs, stage)) == 1, stage
    parent = next(r for r in runs if r.data.tags.get("stcorr.stage") == "pipeline")
    assert parent.info.status == "FINISHED"
    root = Path(parent.info.artifact_uri.removeprefix("file://"))
    report = (root / "report.md").read_text()
    for bench in ("davis", "vip", "jhmdb"):
        assert f"**{bench}**" in report
    assert (root / "report.html").is_file() and (root / "loss_curves.png").is_file()
    assert "davis" in first.stdout and "lab" in first.stdout

    second = _stcorr(tmp_path, "run")
    assert second.returncode == 0, second.stderr[-4000:]
    for stage in ("pretrain", "teacher", "finetune", "evaluate"):
        assert f"{stage}: up to date" in second.stdout, stage
    runs = _runs(tmp_path)
    for stage in ("pretrain", "teacher", "finetune", "evaluate"):
        assert len(_finished(runs, stage)) == 1, stage  # nothing ran twice

    third = _stcorr(tmp_path, "run", "--set", "evaluate.topk=5")
    assert third.returncode == 0, third.stderr[-4000:]
    runs = _runs(tmp_path)
    for stage in ("pretrain", "teacher", "finetune"):
        assert len(_finished(runs, stage)) == 1, stage
    assert len(_finished(runs, "evaluate")) == 2  # only evaluation ran again


def test_sigkill_during_finetune_then_resume(tmp_path: Path) -> None:
    slow = ["--set", "finetune.steps=12"]
    proc = subprocess.Popen(
        _command("run", *slow), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    snapshot = tmp_path / "work" / "ray"
    while time.monotonic() < deadline and proc.poll() is None:
        if list(snapshot.glob("finetune-*/checkpoint_manager_snapshot.json")):
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait(timeout=60)

    resumed = _stcorr(tmp_path, "resume", *slow)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for stage in ("pretrain", "teacher"):
        assert f"{stage}: up to date" in resumed.stdout, stage
    runs = _runs(tmp_path)
    for stage in ("pretrain", "teacher", "finetune", "evaluate"):
        assert len(_finished(runs, stage)) == 1, stage
    finetune = _finished(runs, "finetune")[0]
    from mlflow import MlflowClient

    history = MlflowClient().get_metric_history(finetune.info.run_id, "resumed_from_step")
    # Resumed at a checkpoint (every 2 steps in TINY), not from step 0.
    assert history and history[-1].value > 0 and history[-1].value % 2 == 0
    status = _stcorr(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert "finetune" in status.stdout and "FINISHED" in status.stdout
