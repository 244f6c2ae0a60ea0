"""Finetune stage: STT or CRW on the video shards with Ray Train; output alias ``candidate``."""

from __future__ import annotations

from typing import Any

from stcorr.config import PipelineConfig
from stcorr.models.contract import unpack
from stcorr.tracking import (
    StageOutput,
    claim,
    maybe_stage_run,
    record_health,
    register,
    resolve_encoder,
    save_output,
    shard_urls,
    stage_fingerprint,
    warn_setup,
)
from stcorr.train.launch import NonFiniteLossError, fit_stage
from stcorr.train.stages import StageInputs
from stcorr.train.teacher import state_sha256

__all__ = ["NonFiniteLossError", "TeacherChangedError", "run_finetune"]


class TeacherChangedError(RuntimeError):
    """The teacher's weights hash differently after fine-tuning than when it was frozen."""


def run_finetune(
    cfg: PipelineConfig,
    video_manifest: str,
    *,
    init: StageOutput | None,
    teacher: StageOutput | None,
    pipeline: str = "",
) -> StageOutput:
    """Fine-tune (or resume) the student; register it with alias ``candidate``.

    Args:
        init: the pretrain output (ignored when ``finetune.init: scratch``).
        teacher: the teacher stage output; ``finetune.teacher`` (a registry URI or file) wins.
    """
    import torch

    shards, source_fp, _ = shard_urls(cfg, video_manifest)
    teacher_file = resolve_encoder(cfg.finetune.teacher, cfg.tracking) if cfg.finetune.teacher else None
    teacher_path = str(teacher_file) if teacher_file else (teacher.encoder if teacher else None)
    teacher_sha = ""
    if teacher_path:  # over the weights only, as the worker hashes the loaded teacher
        teacher_sha = state_sha256(unpack(torch.load(teacher_path, weights_only=True), teacher_path)[0])
    init_path = init.encoder if init is not None and cfg.finetune.init == "pretrain" else None
    upstream = [source_fp, init.fingerprint if init_path and init else "scratch", teacher_sha]
    workers = cfg.compute.for_stage("finetune").workers  # the batch is per rank: part of the recipe
    fp = stage_fingerprint("finetune", cfg.finetune, *upstream, str(workers))
    inputs = StageInputs(shards=shards, init_weights=init_path, teacher_weights=teacher_path)
    with claim(cfg, "finetune", fp) as done:
        if done is None:
            warn_setup("finetune", _context(cfg))
        return done or _train(cfg, fp, inputs, teacher_sha, pipeline)


def _train(cfg: PipelineConfig, fp: str, inputs: StageInputs, teacher_sha: str, pipeline: str) -> StageOutput:
    with maybe_stage_run(cfg, "finetune", fp, pipeline) as run:
        result = fit_stage(cfg, "finetune", inputs, run_name=f"finetune-{fp[:16]}", run_id=run.run_id)
        after = result.extras.get("teacher_sha256.txt")
        if after is not None and after != teacher_sha:
            raise TeacherChangedError(
                f"finetune: teacher weights changed during training ({teacher_sha[:12]} -> {after[:12]})"
            )
        run.set_tags(
            {"stcorr.teacher.sha256": teacher_sha, "stcorr.teacher.unchanged": str(after == teacher_sha)}
        )
        tags = {"stcorr.stage": "finetune"}  # + the encoder's contract (register_encoder)
        version = register(cfg, run, result.encoder_path, alias="candidate", tags=tags)
        health = record_health(run, "finetune", result.extras, _context(cfg))
        out = StageOutput("finetune", fp, str(result.encoder_path), version, run.run_id,
                          checkpoint=result.checkpoint, health=health)
        return save_output(run, out)


def _context(cfg: PipelineConfig) -> dict[str, Any]:
    """What the health checks need to know besides the logged diagnostics."""
    section = cfg.finetune
    return {"objective": section.objective, "global_distill": section.stt.global_distill,
            "crop": section.crop_size}
