"""Pretrain stage: MoCo v2 on the image shards with Ray Train; output a registered encoder."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stcorr.config import PipelineConfig
from stcorr.train.launch import fit_stage
from stcorr.train.stages import StageInputs
from tasks.training import (
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


def run_pretrain(cfg: PipelineConfig, image_manifest: str, *, pipeline: str = "") -> StageOutput:
    """Train (or resume) the spatial encoder and register it in MLflow."""
    shards, source_fp, images = shard_urls(cfg, image_manifest)
    workers = cfg.compute.for_stage("pretrain").workers  # the batch is per rank: part of the recipe
    fp = stage_fingerprint("pretrain", cfg.pretrain, source_fp, str(workers))
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


def _context(cfg: PipelineConfig, images: int) -> dict[str, int]:
    """What the health checks need to know besides the logged diagnostics."""
    return {"queue": cfg.pretrain.moco.queue, "images": images}


pretrain_task = task(name="pretrain", cache_policy=NO_CACHE)(run_pretrain)
