"""The whole pipeline through the console script on a tiny config: stages, lineage, skipping, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stcorr.config import load_config
from stcorr.eval.features import resolved_precision

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
    "data.footage.sequences=2",
    "data.footage.frames=6",
    "data.footage.size=[160, 288]",
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
    "evaluate.baselines=[copy, lab]",
]


def _command(command: str, *args: str) -> list[str]:
    """``stcorr <command> <TINY sets> <args>``: a test's own --set items win over TINY's."""
    exe = Path(sys.executable).with_name("stcorr")
    sets = [arg for item in TINY for arg in ("--set", item)]
    return [str(exe), command, *sets, *args]


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


def _popen(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _command(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )


def _parent(runs: list, pipeline: str | None = None) -> Any:
    return next(
        r for r in runs
        if r.data.tags.get("stcorr.stage") == "pipeline"
        and pipeline in (None, r.data.tags.get("stcorr.pipeline"))
    )


def test_two_pipelines_at_once_then_cached_then_evaluate_only(tmp_path: Path) -> None:
    """Two pipelines started together on one store share pretrain (one waits, then reuses it)
    and keep their own finetune, evaluation and report; then a cached re-run and an evaluate-only
    change."""
    first, other = _popen(tmp_path, "run"), _popen(tmp_path, "run", "--set", "finetune.lr=0.001")
    outputs = [proc.communicate(timeout=900)[0] for proc in (first, other)]
    assert first.returncode == 0 and other.returncode == 0, "\n".join(o[-3000:] for o in outputs)
    runs = _runs(tmp_path)
    for stage in ("pretrain", "teacher"):
        assert len(_finished(runs, stage)) == 1, stage  # ran once, reused by the other pipeline
    for stage in ("finetune", "evaluate"):
        assert len(_finished(runs, stage)) == 2, stage  # one per fine-tuning setting
    tags = [r.data.tags for r in runs]
    pipelines = {t["stcorr.pipeline"] for t in tags if t.get("stcorr.stage") == "pipeline"}
    import mlflow

    experiment = mlflow.get_experiment_by_name("stcorr")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on runs
    assert len(pipelines) == 2
    reports = []
    for pipeline in pipelines:
        parent = _parent(runs, pipeline)
        assert parent.info.status == "FINISHED"
        root = Path(parent.info.artifact_uri.removeprefix("file://"))
        reports.append((root / "report.md").read_text())
        for bench in ("footage", "davis", "vip", "jhmdb"):
            assert f"**{bench}**" in reports[-1]
        assert "## Learning health" in reports[-1] and "pretrain health:" in reports[-1]
        assert "copy first mask" in reports[-1] and "- footage: candidate - lab: " in reports[-1]
        ran = resolved_precision(load_config().evaluate.precision)  # what auto chose here
        assert f"forward pass in {ran}" in reports[-1].split("## How each model was run")[1]
        _check_report(root, reports[-1], parent)
    finetunes = {r.info.run_id for r in _finished(runs, "finetune")}
    assert all(sum(rid in report for rid in finetunes) == 1 for report in reports)  # its own run
    assert "davis" in outputs[0] and "lab" in outputs[0]
    for output in outputs:
        _check_console(output, tmp_path)
    assert sum("pretrain: started" in output.splitlines() for output in outputs) == 1  # one waited

    second = _stcorr(tmp_path, "run")
    assert second.returncode == 0, second.stderr[-4000:]
    for stage in ("pretrain", "teacher", "finetune", "evaluate"):
        assert f"{stage}: up to date" in second.stdout, stage
    runs = _runs(tmp_path)
    for stage in ("pretrain", "teacher"):
        assert len(_finished(runs, stage)) == 1, stage  # nothing ran twice
    assert len(_finished(runs, "finetune")) == 2

    third = _stcorr(tmp_path, "run", "--set", "evaluate.topk=5")
    assert third.returncode == 0, third.stderr[-4000:]
    runs = _runs(tmp_path)
    for stage in ("pretrain", "teacher"):
        assert len(_finished(runs, stage)) == 1, stage
    assert len(_finished(runs, "finetune")) == 2
    assert len(_finished(runs, "evaluate")) == 3  # only evaluation ran again

    ui = _popen(tmp_path, "ui", "--port", "5099")  # serves the store: read its first line only
    assert ui.stdout is not None
    first_line = ui.stdout.readline().strip()
    os.killpg(ui.pid, signal.SIGKILL)
    ui.wait(timeout=60)
    page = f"#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    assert first_line == f"MLflow UI on http://127.0.0.1:5099/{page} (Ctrl-C to stop)"


def test_experiment_link_reads_a_local_store_and_never_creates_one(tmp_path: Path) -> None:
    from stcorr.config import TrackingConfig
    from stcorr.tracking import experiment_link, setup

    missing = TrackingConfig(uri=f"sqlite:///{tmp_path / 'none.db'}")
    assert experiment_link(missing) == "" and not (tmp_path / "none.db").exists()
    store = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="other",
                           artifact_location=str(tmp_path / "art"))
    assert experiment_link(store) == ""  # no store yet
    experiment_id = setup(store)
    assert experiment_link(store) == f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert experiment_link(TrackingConfig(uri=store.uri, experiment="absent")) == ""


INTERNAL = ("pid=", "Failed to query", "TrainingReport", "core_worker", "INFO mlflow", "prefect",
            "Checkpoint successfully", "Traceback")


def _check_console(output: str, cwd: Path) -> None:
    """Only stcorr's lines, none twice, the table last (then how to open MLflow); the log file
    holds what Ray, Prefect and MLflow said."""
    lines = output.splitlines()
    assert not [line for line in lines if any(sign in line for sign in INTERNAL)], output[-3000:]
    ours = [line for line in lines if line.strip() and not line.startswith(("|", "#", "- ", "  - "))]
    assert len(ours) == len(set(ours)), output[-3000:]  # table rows and list items repeat by nature
    tail = lines[lines.index("## Learning health"):]
    assert tail[-2].startswith("Open MLflow: stcorr ui") and "| candidate |" in output
    assert any(line.startswith("finetune: done in ") for line in lines)  # each pipeline fine-tunes
    assert any(line.startswith("evaluate  sequence ") for line in lines)
    log = Path(next(line for line in lines if line.startswith("log: ")).split()[1])
    assert log.is_relative_to(cwd) and "RayTrainWorker pid=" in log.read_text()


def _check_report(root: Path, report: str, parent: Any) -> None:
    """Pictures logged and embedded, Markdown rendered, links relative to the UI, the table as
    the parent run's description, the run's log file among its artifacts."""
    for picture in ("loss_curves", "diagnostics", "overlay_footage", "overlay_davis", "overlay_vip",
                    "overlay_jhmdb"):
        assert (root / "report" / f"{picture}.png").is_file(), picture
        assert f"](report/{picture}.png)" in report
    page = (root / "report.html").read_text()
    assert "**" not in page and "<strong>footage</strong>" in page and "data:image/png;base64," in page
    assert ":5000" not in report + page and "](#/experiments/" in report  # no hard-coded UI address
    note = parent.data.tags["mlflow.note.content"]
    assert "| candidate |" in note and "](#/experiments/" in note
    assert len(list((root / "logs").glob("run-*.log"))) == 1


def _wait_for_step(proc: subprocess.Popen[str], after: str) -> list[str]:
    """Read the output until a progress line follows the line containing ``after``."""
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if any(after in s for s in seen[:-1]) and "  step " in line:
            return seen
    raise AssertionError("the run ended before training started:\n" + "".join(seen[-40:]))


def test_sigterm_then_sigkill_during_finetune_then_resume(tmp_path: Path) -> None:
    """SIGTERM: finetune checkpoints where it is and every run ends KILLED; a resume that is then
    SIGKILLed leaves its run RUNNING; the next resume ends that run KILLED, continues from the
    SIGTERM checkpoint and finishes with one FINISHED run per stage."""
    from mlflow import MlflowClient

    slow = ["--set", "finetune.steps=12", "--set", "finetune.checkpoint_every=50"]  # no periodic ckpt
    proc = _popen(tmp_path, "run", *slow)
    _wait_for_step(proc, "finetune: starting")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "finetune: stop requested; checkpoint saved at step" in out and "KILLED" in out
    runs = _runs(tmp_path)
    assert [r.info.status for r in runs if r.data.tags.get("stcorr.stage") == "finetune"] == ["KILLED"]
    assert _parent(runs).info.status == "KILLED"

    proc = _popen(tmp_path, "resume", *slow)
    _wait_for_step(proc, "finetune: resuming at step")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait(timeout=60)
    states = [r.info.status for r in _runs(tmp_path) if r.data.tags.get("stcorr.stage") == "finetune"]
    assert sorted(states) == ["KILLED", "RUNNING"]  # the SIGKILLed process could not end its run

    resumed = _stcorr(tmp_path, "resume", *slow)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for stage in ("pretrain", "teacher"):
        assert f"{stage}: up to date" in resumed.stdout, stage
    runs = _runs(tmp_path)
    for stage in ("pretrain", "teacher", "finetune", "evaluate"):
        assert len(_finished(runs, stage)) == 1, stage
    finetune = _finished(runs, "finetune")[0]
    history = MlflowClient().get_metric_history(finetune.info.run_id, "resumed_from_step")
    assert history and 0 < history[-1].value < 12  # the SIGTERM checkpoint, not step 0
    states = [r.info.status for r in runs if r.data.tags.get("stcorr.stage") == "finetune"]
    assert sorted(states) == ["FINISHED", "KILLED", "KILLED"]  # nothing left RUNNING
    status = _stcorr(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert "finetune" in status.stdout and "FINISHED" in status.stdout
    assert "models:/stcorr-encoder@candidate" in status.stdout
    evaluate_row = next(line for line in status.stdout.splitlines() if line.startswith("evaluate-"))
    assert f" {tmp_path / 'work' / 'evaluate'}/" in evaluate_row  # its results folder
