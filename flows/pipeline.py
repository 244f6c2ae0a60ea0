"""The stcorr pipeline as one Prefect flow: shard -> pretrain -> teacher -> finetune -> evaluate.

Tasks pass small hashable references (URIs, fingerprints, run ids), never tensors. Image and
video sharding run concurrently; evaluation runs its benchmarks concurrently on Ray. Every stage
skips itself when MLflow holds a FINISHED run with its fingerprint, and a training stage that
failed resumes from its last checkpoint, so `stcorr resume` is just the same flow again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from prefect import flow

from stcorr.config import PipelineConfig
from stcorr.stages import init_file
from tasks import finetune_task, pretrain_task, shard_task, sources_task, teacher_task


@flow(name="stcorr-pipeline", log_prints=False)
def pipeline_flow(cfg: PipelineConfig, pipeline_id: str, until: str = "evaluate") -> dict[str, Any]:
    """Run the stages up to ``until``; return the stage outputs and the evaluation summaries."""
    if cfg.pretrain.init is not None:
        init_file(cfg)  # a missing pretrain.init fails now, not after sharding
    sources = sources_task(cfg)  # Ray starts on first use: a fully cached re-run never needs it
    images = shard_task.submit(cfg, "images", sources["images"])
    videos = shard_task.submit(cfg, "videos", sources["videos"])
    outputs: dict[str, Any] = {"shards": {"images": images.result(), "videos": videos.result()}}
    if until == "shard":
        return outputs
    pretrain = outputs["pretrain"] = pretrain_task(cfg, images.result().manifest_url, pipeline=pipeline_id)
    if until == "pretrain":
        return outputs
    teacher = outputs["teacher"] = teacher_task(cfg, pretrain, pipeline=pipeline_id)
    if until == "teacher":
        return outputs
    videos_url = videos.result().manifest_url
    finetune = finetune_task(cfg, videos_url, init=pretrain, teacher=teacher, pipeline=pipeline_id)
    outputs["finetune"] = finetune
    if until == "finetune":
        return outputs
    from tasks import evaluate_task

    benchmarks = {name: sources[name] for name in cfg.evaluate.benchmarks if name in sources}
    outputs["evaluate"] = evaluate_task(  # each encoder is run as its stored input contract says
        cfg,
        finetune.encoder,
        teacher.encoder,
        benchmarks,
        calibration=sources.get("videos"),  # training frames for the random baseline's BatchNorm
        pipeline=pipeline_id,
    )
    return outputs


def new_pipeline_id() -> str:
    return uuid.uuid4().hex[:12]


def run_pipeline(
    cfg: PipelineConfig,
    pipeline_id: str | None = None,
    until: str = "evaluate",
    before_flow: Callable[[], None] | None = None,
) -> str:
    """Run (or resume) the pipeline under one MLflow parent run; return the summary to print.

    ``before_flow`` is called right before the flow starts (the CLI waits there for the Prefect
    server it started in the background).
    """
    from stcorr.tracking import lineage

    pipeline_id = pipeline_id or new_pipeline_id()
    with lineage.pipeline_run(cfg, pipeline_id) as parent:
        if before_flow is not None:
            before_flow()
        outputs = pipeline_flow(cfg, pipeline_id, until)
        return lineage.finish(cfg, parent, outputs)
