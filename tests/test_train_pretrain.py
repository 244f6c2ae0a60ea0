"""Pretrain and teacher stages on real local Ray (2 DDP workers over gloo) and a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stcorr.config import PipelineConfig, load_config
from stcorr.data.shard_stage import shard_source
from stcorr.data.synthetic import render_image
from stcorr.models.contract import override_contract, unpack
from stcorr.runtime import shutdown_ray
from stcorr.stages import run_pretrain, run_teacher
from stcorr.tracking import ModelRefError, registry_contract, resolve_encoder
from stcorr.train.teacher import build_teacher, state_sha256

pytestmark = pytest.mark.slow


def _images(root: Path, count: int) -> None:
    """The demo's still images: textured objects on textured backgrounds."""
    for i in range(count):
        image, _ = render_image(np.random.default_rng(i), 48)
        folder = root / f"group{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"img{i:03d}.jpg", quality=95)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> PipelineConfig:
    root = tmp_path_factory.mktemp("train")
    return load_config(
        overrides=[
            f"storage.root={root / 'store'}",
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            f"tracking.artifact_location={root / 'artifacts'}",
            "compute.num_cpus=2",
            "compute.workers=2",
            "compute.loader_workers=0",
            "pretrain.steps=24",
            "pretrain.batch_size=16",
            "pretrain.image_size=40",
            "pretrain.lr=0.03",
            "pretrain.warmup_steps=2",
            "pretrain.checkpoint_every=12",
            "pretrain.log_every=1",
            "pretrain.moco.queue=64",
            "pretrain.moco.hidden=128",
            "pretrain.moco.dim=32",
            "pretrain.moco.momentum=0.99",
        ]
    )


@pytest.fixture(scope="module")
def manifest(cfg: PipelineConfig, tmp_path_factory: pytest.TempPathFactory) -> str:
    source = tmp_path_factory.mktemp("images")
    _images(source, 96)
    result = shard_source(
        "images",
        str(source),
        f"{cfg.storage.root}/shards/images",
        cfg.shard.model_copy(update={"samples_per_shard": 12}),
        cfg.storage,
        cfg.compute,
    )
    yield result.manifest_url
    shutdown_ray()


def _history(cfg: PipelineConfig, run_id: str, key: str = "loss") -> dict[int, float]:
    from mlflow import MlflowClient

    from stcorr.tracking import resolve_uri

    client = MlflowClient(resolve_uri(cfg.tracking.uri or ""))
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_pretrain_trains_registers_and_teacher_freezes(cfg: PipelineConfig, manifest: str) -> None:
    out = run_pretrain(cfg, manifest)
    assert out.run_id is not None and out.model_version is not None
    losses = _history(cfg, out.run_id)
    assert sorted(losses) == list(range(1, 25))  # rank 0 logged every step
    # The queue starts with random (easy) negatives and fills with real keys within 2 steps, so
    # the loss first climbs towards chance, log(1 + K); learning then brings it back down.
    chance = float(np.log(1 + cfg.pretrain.moco.queue))
    assert all(np.isfinite(v) and v < chance + 1.0 for v in losses.values())
    peak = max(losses[s] for s in range(2, 9))
    assert np.mean([losses[s] for s in range(19, 25)]) < peak - 0.03
    assert _history(cfg, out.run_id, "acc1") and _history(cfg, out.run_id, "samples_per_s")
    # 96 images, a 64-key queue: no image's key is in the queue in its own batch's step 1
    assert _history(cfg, out.run_id, "positive_in_queue")[1] == 0.0
    chance = _history(cfg, out.run_id, "acc1_chance")
    assert chance and all(v == pytest.approx(100 / 65) for v in chance.values())
    assert out.health[0].startswith("pretrain health: ") and "acc1_chance 1.54" in out.health[0]
    assert _history(cfg, out.run_id, "health/acc1_chance")

    state, contract = unpack(torch.load(out.encoder, weights_only=True), out.encoder)
    assert "conv1.weight" in state and "layer4.1.bn2.running_var" in state  # torchvision names
    assert not any(k.startswith(("fc.", "encoder_q.", "module.")) for k in state)
    assert contract == override_contract("moco") and contract.input == "rgb"  # its input contract

    teacher = run_teacher(cfg, out)
    teacher_state, teacher_contract = unpack(torch.load(teacher.encoder, weights_only=True), "t")
    assert teacher.sha256 == state_sha256(teacher_state) and teacher_contract == contract
    resolved = resolve_encoder(f"models:/{cfg.tracking.model_name}@teacher", cfg.tracking)
    loaded = build_teacher(resolved, cfg.pretrain.arch)
    assert state_sha256(loaded.state_dict()) == teacher.sha256
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training
    ref = f"models:/{cfg.tracking.model_name}/{out.model_version}"
    by_version = unpack(torch.load(resolve_encoder(ref, cfg.tracking), weights_only=True), ref)[0]
    assert torch.equal(by_version["conv1.weight"], state["conv1.weight"])
    assert registry_contract(ref, cfg.tracking) == contract  # the version's tags say the same


def test_unknown_alias_is_one_clear_line(cfg: PipelineConfig) -> None:
    from stcorr.tracking import setup

    setup(cfg.tracking)  # the store exists (when this test runs alone)
    store = r"sqlite:///.*/mlflow\.db"
    with pytest.raises(ModelRefError, match=rf"^models:/nope@teacher: no registered model named 'nope' "
                                            rf"in the registry at {store}$"):
        resolve_encoder("models:/nope@teacher", cfg.tracking)
    with pytest.raises(ModelRefError, match="model file not found"):
        resolve_encoder("/does/not/exist.pt", cfg.tracking)
