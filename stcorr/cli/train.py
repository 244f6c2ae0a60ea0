"""Training commands: ``stcorr pretrain``, ``stcorr teacher``, ``stcorr finetune``.

Each runs one stage alone on given shards (the pipeline chains them). Relaunching the same
command with the same inputs and config resumes from the stage's last checkpoint.
"""

from pathlib import Path
from typing import Annotated

import typer

from stcorr.cli.common import ConfigOpt, SetOpt, _load, app, examples, friendly_errors

# No `from __future__ import annotations` here: typer reads these annotations at runtime.
ShardsOpt = Annotated[str, typer.Option("--shards", metavar="MANIFEST",
                                        help="manifest.json of the shards (local path or s3://).")]
EncoderOpt = Annotated[str, typer.Option("--encoder", metavar="MODEL",
                                         help="Pretrain encoder: a .pt file or models:/name/N.")]
InitOpt = Annotated[
    str | None, typer.Option("--init", metavar="MODEL",
                             help="Student start: a .pt file or models:/... (default: scratch).")
]
TeacherOpt = Annotated[
    str | None, typer.Option("--teacher", metavar="MODEL",
                             help="Teacher: models:/stcorr-encoder@teacher or a .pt file.")
]


@app.command(epilog=examples(
    "stcorr pretrain --shards work/shards/images-3f2a9c1d0b7e/manifest.json",
    "stcorr pretrain --shards s3://bucket/shards/images/manifest.json --set pretrain.steps=2000"))
@friendly_errors
def pretrain(shards: ShardsOpt, config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Pretrain the spatial encoder on image shards (MoCo v2).

    Runs on Ray Train (DDP) and registers the encoder in MLflow.
    """
    from stcorr.stages import run_pretrain

    out = run_pretrain(_load(config, sets), shards)
    typer.echo(f"pretrain encoder: {out.encoder}  (model version {out.model_version}, run {out.run_id})")

@app.command(epilog=examples("stcorr teacher --encoder models:/stcorr-encoder/1",
                             "stcorr teacher --encoder work/pretrain/encoder.pt"))
@friendly_errors
def teacher(
    encoder: EncoderOpt,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Freeze a pretrain encoder as the STT teacher.

    Registers it in MLflow with the alias 'teacher'.
    """
    from stcorr.stages import run_teacher
    from stcorr.tracking import StageOutput, resolve_encoder, stage_fingerprint

    cfg = _load(config, sets)
    path = resolve_encoder(encoder, cfg.tracking)
    source = StageOutput("pretrain", stage_fingerprint("external", encoder), str(path))
    out = run_teacher(cfg, source)
    typer.echo(f"teacher: {out.encoder}  sha256 {out.sha256}  (model version {out.model_version})")

@app.command(epilog=examples(
    "stcorr finetune --shards work/shards/videos-9c1d0b7e3f2a/manifest.json "
    "--init models:/stcorr-encoder/1 --teacher models:/stcorr-encoder@teacher",
    "stcorr finetune --shards work/shards/videos-9c1d0b7e3f2a/manifest.json "
    "--set finetune.objective=crw"))
@friendly_errors
def finetune(
    shards: ShardsOpt,
    init: InitOpt = None,
    teacher: TeacherOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Fine-tune on video shards (STT by default, or CRW).

    Registers the student in MLflow with the alias 'candidate'.
    """
    from stcorr.stages import run_finetune
    from stcorr.tracking import StageOutput, resolve_encoder, stage_fingerprint

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
