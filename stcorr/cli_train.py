"""Training commands: ``stcorr pretrain``, ``stcorr teacher``, ``stcorr finetune``.

Each runs one stage alone on given shards (the pipeline chains them). Relaunching the same
command with the same inputs and config resumes from the stage's last checkpoint.
"""

from pathlib import Path
from typing import Annotated

import typer

from stcorr.cli_common import ConfigOpt, SetOpt, _load, friendly_errors

# No `from __future__ import annotations` here: typer reads these annotations at runtime.
ShardsOpt = Annotated[str, typer.Option("--shards", help="manifest.json of the shards (local path or s3://).")]
EncoderOpt = Annotated[str, typer.Option("--encoder", help="pretrain encoder: .pt file or models:/name/N")]
InitOpt = Annotated[
    str | None, typer.Option("--init", help="student start: .pt or models:/... (default: scratch)")
]
TeacherOpt = Annotated[
    str | None, typer.Option("--teacher", help="teacher: models:/stcorr-encoder@teacher or a .pt file")
]


def register(app: typer.Typer) -> None:
    """Add the training commands to ``app``."""

    @app.command()
    @friendly_errors
    def pretrain(shards: ShardsOpt, config: ConfigOpt = None, sets: SetOpt = None) -> None:
        """MoCo v2 pretraining on image shards (Ray Train, DDP); registers the encoder in MLflow."""
        from tasks.pretrain import run_pretrain

        out = run_pretrain(_load(config, sets), shards)
        typer.echo(f"pretrain encoder: {out.encoder}  (model version {out.model_version}, run {out.run_id})")

    @app.command()
    @friendly_errors
    def teacher(
        encoder: EncoderOpt,
        config: ConfigOpt = None,
        sets: SetOpt = None,
    ) -> None:
        """Freeze a pretrain encoder as the STT teacher; registers it with alias 'teacher'."""
        from stcorr.registry import resolve_encoder
        from tasks.teacher import run_teacher
        from tasks.training import StageOutput, stage_fingerprint

        cfg = _load(config, sets)
        path = resolve_encoder(encoder, cfg.tracking)
        source = StageOutput("pretrain", stage_fingerprint("external", encoder), str(path))
        out = run_teacher(cfg, source)
        typer.echo(f"teacher: {out.encoder}  sha256 {out.sha256}  (model version {out.model_version})")

    @app.command()
    @friendly_errors
    def finetune(
        shards: ShardsOpt,
        init: InitOpt = None,
        teacher: TeacherOpt = None,
        config: ConfigOpt = None,
        sets: SetOpt = None,
    ) -> None:
        """STT (default) or CRW fine-tuning on video shards; registers the student as 'candidate'."""
        from stcorr.registry import resolve_encoder
        from tasks.finetune import run_finetune
        from tasks.training import StageOutput, stage_fingerprint

        extra = [] if init else ["finetune.init=scratch"]
        if teacher:
            extra.append(f"finetune.teacher={teacher}")
        cfg = _load(config, [*(sets or []), *extra])
        start = None
        if init:
            path = resolve_encoder(init, cfg.tracking)
            start = StageOutput("pretrain", stage_fingerprint("external", init), str(Path(path)))
        out = run_finetune(cfg, shards, init=start, teacher=None)
        typer.echo(f"finetune encoder: {out.encoder}  (model version {out.model_version}, alias candidate)")
