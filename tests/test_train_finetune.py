"""Finetune stage (STT and CRW) on real local Ray with 2 DDP workers, real video shards, real MLflow.

Includes a worker process killed with SIGKILL mid-run: Ray Train's FailureConfig restarts the
worker group, which resumes from the last checkpoint through ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import glob
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from stcorr.config import PipelineConfig, load_config
from stcorr.data.shard_stage import shard_source
from stcorr.data.synthetic import render_video, write_mp4
from stcorr.models.contract import override_contract, unpack
from stcorr.models.resnet import build_backbone, encoder_state_dict
from stcorr.runtime import shutdown_ray
from stcorr.stages import run_finetune
from stcorr.tracking import StageOutput, registry_contract, resolve_encoder, resolve_uri

pytestmark = pytest.mark.slow

BASE = [
    "compute.num_cpus=2",
    "compute.workers=2",
    "compute.loader_workers=0",
    "finetune.batch_size=2",
    "finetune.crop_size=64",
    "finetune.lr=0.001",
    "finetune.warmup_steps=0",
    "finetune.log_every=1",
    "finetune.image_every=4",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("finetune")


def _cfg(root: Path, *extra: str) -> PipelineConfig:
    return load_config(
        overrides=[
            f"storage.root={root / 'store'}",
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            f"tracking.artifact_location={root / 'artifacts'}",
            *BASE,
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def manifest(root: Path) -> str:
    videos = root / "videos"
    videos.mkdir()
    for i in range(6):
        scene = render_video(np.random.default_rng(i), 8, (64, 96), 2)
        write_mp4(videos / f"v{i}.mp4", scene.frames)
    cfg = _cfg(root)
    shards = cfg.shard.model_copy(update={"samples_per_shard": 2})
    result = shard_source("videos", str(videos), str(root / "shards"), shards, cfg.storage, cfg.compute)
    yield result.manifest_url
    shutdown_ray()


@pytest.fixture(scope="module")
def upstream(root: Path) -> tuple[StageOutput, StageOutput]:
    """A random-init 'pretrain' encoder and the matching frozen 'teacher' file."""
    torch.manual_seed(0)
    path = root / "init.pt"
    torch.save(encoder_state_dict(build_backbone("stt_teacher", "resnet18")), path)
    from stcorr.train.teacher import make_teacher

    teacher_file = root / "teacher.pt"
    sha = make_teacher(path, teacher_file, "resnet18")
    return StageOutput("pretrain", "p" * 64, str(path)), StageOutput(
        "teacher", "t" * 64, str(teacher_file), sha256=sha
    )


def _history(cfg: PipelineConfig, run_id: str, key: str) -> dict[int, float]:
    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(cfg.tracking.uri or ""))
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_stt_finetune_learns_keeps_teacher_and_registers(root: Path, manifest: str, upstream: tuple) -> None:
    init, teacher = upstream
    cfg = _cfg(root, "finetune.steps=10", "finetune.checkpoint_every=5", "finetune.crop_size=128",
               "finetune.stt.global_distill=true")  # the full STT Eq. 10: res5 is 4x4 at 128 px
    out = run_finetune(cfg, manifest, init=init, teacher=teacher)
    rec = _history(cfg, out.run_id or "", "rec_res3")
    assert sorted(rec) == list(range(1, 11))
    assert np.mean([rec[s] for s in (8, 9, 10)]) < np.mean([rec[s] for s in (1, 2, 3)])
    for term in ("rec_res4", "lc", "gc", "samples_per_s", "data_wait_share", "lr", "copy_psnr",
                 "psnr_gain", "grad_share_rec", "grad_share_lc", "grad_share_gc"):
        assert _history(cfg, out.run_id or "", term), term
    assert set(_history(cfg, out.run_id or "", "gc_grid").values()) == {4.0}
    assert out.health[0].startswith("finetune health: ") and "copy_psnr" in out.health[0]

    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(cfg.tracking.uri or ""))
    run = client.get_run(out.run_id or "")
    assert run.data.tags["stcorr.teacher.unchanged"] == "True"
    assert run.data.tags["stcorr.teacher.sha256"] == teacher.sha256
    assert run.data.params["finetune.objective"] == "stt"
    artifacts = [a.path for a in client.list_artifacts(out.run_id, "panels")]
    assert artifacts, "no image panel logged"
    candidate = resolve_encoder(f"models:/{cfg.tracking.model_name}@candidate", cfg.tracking)
    state, contract = unpack(torch.load(candidate, weights_only=True), str(candidate))
    # the demo's student sees RGB in the max-pool geometry: it is evaluated that way
    assert contract == override_contract("stt-rgb", train_preset="stt_student_pool")
    assert registry_contract(f"models:/{cfg.tracking.model_name}@candidate", cfg.tracking) == contract
    exported = unpack(torch.load(out.encoder, weights_only=True), out.encoder)[0]
    start = unpack(torch.load(init.encoder, weights_only=True), init.encoder)[0]
    assert torch.equal(state["conv1.weight"], exported["conv1.weight"])
    assert not torch.equal(state["conv1.weight"], start["conv1.weight"])


def test_crw_finetune_runs(root: Path, manifest: str, upstream: tuple) -> None:
    init, _ = upstream
    cfg = _cfg(
        root,
        "finetune.objective=crw",
        "finetune.clip_frames=4",
        "finetune.steps=3",
        "finetune.checkpoint_every=3",
        "finetune.crw.nodes=dense",
        "finetune.image_every=1",
    )
    out = run_finetune(cfg, manifest, init=init, teacher=None)
    assert sorted(_history(cfg, out.run_id or "", "loss")) == [1, 2, 3]
    assert _history(cfg, out.run_id or "", "acc_k2")


def _kill_one_worker_after_checkpoint(storage: Path, stop: threading.Event) -> list[int]:
    """Background thread body: SIGKILL one Ray Train worker once a checkpoint exists."""
    killed: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            # The snapshot is written once Ray Train has registered a checkpoint.
            if glob.glob(str(storage / "ray" / "finetune-*" / "checkpoint_manager_snapshot.json")):
                for proc in psutil.process_iter(["pid", "cmdline"]):
                    if "RayTrainWorker" in " ".join(proc.info["cmdline"] or []):
                        os.kill(proc.info["pid"], signal.SIGKILL)
                        killed.append(proc.info["pid"])
                        return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def test_killed_worker_resumes_from_checkpoint(root: Path, manifest: str, upstream: tuple) -> None:
    init, teacher = upstream
    flags = ["finetune.steps=8", "finetune.checkpoint_every=3", "finetune.stt.global_distill=false"]
    cfg = _cfg(root / "resume", *flags)
    stop = threading.Event()
    killed = _kill_one_worker_after_checkpoint(root / "resume" / "store", stop)
    try:
        out = run_finetune(cfg, manifest, init=init, teacher=teacher)
    finally:
        stop.set()
    assert killed, "no worker was killed"
    resumed = _history(cfg, out.run_id or "", "resumed_from_step")
    assert set(resumed.values()) <= {3.0, 6.0} and resumed  # continued at a checkpoint, not step 0
    assert out.model_version is not None

    reference_cfg = _cfg(root / "reference", *flags)
    reference = run_finetune(reference_cfg, manifest, init=init, teacher=teacher)
    resumed_loss = _history(cfg, out.run_id or "", "loss")
    reference_loss = _history(reference_cfg, reference.run_id or "", "loss")
    assert sorted(resumed_loss) == list(range(1, 9))
    for step in range(1, 9):  # the resumed run repeats the uninterrupted run's steps
        assert resumed_loss[step] == pytest.approx(reference_loss[step], rel=1e-3), step


def test_nan_loss_stops_with_the_step_and_last_checkpoint(root: Path, manifest: str, upstream: tuple) -> None:
    from stcorr.train.launch import NonFiniteLossError

    init, teacher = upstream
    # An absurd learning rate makes the weights, and then the loss, non-finite within a few steps.
    flags = [
        "finetune.steps=12",
        "finetune.checkpoint_every=1",
        "finetune.lr=1e30",
        "finetune.stt.global_distill=false",
    ]
    cfg = _cfg(root / "nan", *flags)
    with pytest.raises(
        NonFiniteLossError,
        match=r"^finetune: loss is not finite at step \d+; stopped\. Last good checkpoint: /",
    ):
        run_finetune(cfg, manifest, init=init, teacher=teacher)
