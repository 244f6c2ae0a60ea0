"""Teacher stage: freeze the pretrain encoder, record its sha256, register it as ``@teacher``."""

from __future__ import annotations

from pathlib import Path

from stcorr.config import PipelineConfig
from stcorr.tracking import StageOutput, claim, maybe_stage_run, register, save_output, stage_fingerprint
from stcorr.train.teacher import make_teacher

TEACHER_FILE = "teacher.pt"


def run_teacher(cfg: PipelineConfig, pretrain: StageOutput, *, pipeline: str = "") -> StageOutput:
    """Freeze ``pretrain.encoder`` into the teacher and register it with alias ``teacher``."""
    fp = stage_fingerprint("teacher", cfg.pretrain.arch, pretrain.fingerprint)
    with claim(cfg, "teacher", fp) as done:
        return done or _freeze(cfg, fp, pretrain, pipeline)


def _freeze(cfg: PipelineConfig, fp: str, pretrain: StageOutput, pipeline: str) -> StageOutput:
    out_file = Path(pretrain.encoder).parent.parent / f"teacher-{fp[:16]}" / TEACHER_FILE
    with maybe_stage_run(cfg, "teacher", fp, pipeline) as run:
        sha = make_teacher(Path(pretrain.encoder), out_file, cfg.pretrain.arch)
        run.set_tags({"stcorr.teacher.sha256": sha, "stcorr.source_run": pretrain.run_id or ""})
        tags = {"stcorr.stage": "teacher", "sha256": sha}
        version = register(cfg, run, out_file, alias="teacher", tags=tags)
        return save_output(run, StageOutput("teacher", fp, str(out_file), version, run.run_id, sha256=sha))
