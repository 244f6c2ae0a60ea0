"""Pretrain stage: MoCo v2 on the image shards with Ray Train; output a registered encoder.

With ``pretrain.init`` the stage trains nothing: it adopts that encoder (a checkpoint of the
papers' code or a registry version) as the spatial stage, which the teacher stage then freezes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from stcorr.config import PipelineConfig
from stcorr.tracking import (
    StageOutput,
    claim,
    maybe_stage_run,
    record_health,
    register,
    save_output,
    shard_urls,
    stage_fingerprint,
    warn_setup,
)
from stcorr.train.launch import fit_stage, output_dir
from stcorr.train.stages import StageInputs


def run_pretrain(cfg: PipelineConfig, image_manifest: str, *, pipeline: str = "") -> StageOutput:
    """Train (or resume) the spatial encoder and register it in MLflow (or adopt ``pretrain.init``)."""
    if cfg.pretrain.init is not None:
        return _adopt(cfg, pipeline)
    shards, source_fp, images = shard_urls(cfg, image_manifest)
    workers = cfg.compute.for_stage("pretrain").workers  # the batch is per rank: part of the recipe
    # init is null here; leaving it out keeps the fingerprints of runs made before it existed
    recipe = cfg.pretrain.model_dump(mode="json", exclude={"init"})
    fp = stage_fingerprint("pretrain", recipe, source_fp, str(workers))
    with claim(cfg, "pretrain", fp) as done:
        if done is None:
            warn_setup("pretrain", _context(cfg, images))
        return done or _train(cfg, fp, shards, images, pipeline)


def _train(cfg: PipelineConfig, fp: str, shards: list[str], images: int, pipeline: str) -> StageOutput:
    with maybe_stage_run(cfg, "pretrain", fp, pipeline) as run:
        result = fit_stage(
            cfg, "pretrain", StageInputs(shards=shards), run_name=f"pretrain-{fp[:16]}", run_id=run.run_id
        )
        run.log_metrics({"final_step": result.steps})
        health = record_health(run, "pretrain", result.extras, _context(cfg, images))
        version = register(cfg, run, result.encoder_path, alias=None, tags={"stcorr.stage": "pretrain"})
        out = StageOutput("pretrain", fp, str(result.encoder_path), version, run.run_id,
                          checkpoint=result.checkpoint, health=health)
        return save_output(run, out)


def init_file(cfg: PipelineConfig) -> tuple[Path, str]:
    """The local file ``pretrain.init`` names and its sha256.

    Raises:
        ModelRefError: no such file or registry version (one line naming ``pretrain.init``).
    """
    from stcorr.tracking import resolve_init

    assert cfg.pretrain.init is not None, "only called when pretrain.init is set"
    path = resolve_init(cfg.pretrain.init, cfg.tracking)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _adopt(cfg: PipelineConfig, pipeline: str) -> StageOutput:
    path, sha = init_file(cfg)
    fp = stage_fingerprint("pretrain-init", cfg.pretrain.arch, sha)  # the file, not its name
    with claim(cfg, "pretrain", fp) as done:
        return done or _store_init(cfg, fp, path, sha, pipeline)


def _store_init(cfg: PipelineConfig, fp: str, path: Path, sha: str, pipeline: str) -> StageOutput:
    """Save ``pretrain.init`` as an stcorr encoder (torchvision keys + contract) and register it."""
    import torch

    from stcorr.models.contract import pack
    from stcorr.models.importers import read_encoder
    from stcorr.tracking import registry_contract

    ref = cfg.pretrain.init or ""
    state, contract = read_encoder(path, registry_contract(ref, cfg.tracking))
    if contract.input != "rgb":  # the STT teacher is fed the RGB clip (stcorr.objectives.stt)
        raise ValueError(f"pretrain.init: {ref} takes {contract.input} input ({contract.describe()}); "
                         f"the teacher is fed RGB: use an RGB encoder (moco, vfs, sfc, crw, torchvision)")
    if contract.arch != cfg.pretrain.arch:
        raise ValueError(f"pretrain.init: {ref} is a {contract.arch}; pretrain.arch is {cfg.pretrain.arch}")
    out_file = output_dir(cfg, f"pretrain-init-{fp[:16]}") / "encoder.pt"
    torch.save(pack(state, contract), out_file)
    with maybe_stage_run(cfg, "pretrain", fp, pipeline) as run:
        run.set_tags({"stcorr.pretrain.init": ref, "stcorr.pretrain.init_sha256": sha})
        tags = {"stcorr.stage": "pretrain", "stcorr.pretrain.init": ref, "sha256": sha}
        version = register(cfg, run, out_file, alias=None, tags=tags)
        return save_output(run, StageOutput("pretrain", fp, str(out_file), version, run.run_id, sha256=sha))


def _context(cfg: PipelineConfig, images: int) -> dict[str, int]:
    """What the health checks need to know besides the logged diagnostics."""
    return {"queue": cfg.pretrain.moco.queue, "images": images}
