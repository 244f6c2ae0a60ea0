"""The stcorr pipeline as one Prefect flow.

Today it runs the data stage end to end: resolve (or generate) the sources, then shard the
images and the videos concurrently (each shard a Ray task). Training and evaluation stages are
added to this flow as they land.
"""

from __future__ import annotations

from prefect import flow

from stcorr.compute import init_ray
from stcorr.config import PipelineConfig
from tasks.data import sources_task
from tasks.shard import shard_task


@flow(name="stcorr-pipeline", log_prints=False)
def pipeline_flow(cfg: PipelineConfig) -> dict[str, str]:
    """shard (images || videos); returns the manifest URL of each shard set."""
    sources = sources_task(cfg)
    init_ray(cfg.compute)  # once, before the two shard tasks share it from their threads
    images = shard_task.submit(cfg, "images", sources["images"])
    videos = shard_task.submit(cfg, "videos", sources["videos"])
    return {"images": images.result().manifest_url, "videos": videos.result().manifest_url}


def run_pipeline(cfg: PipelineConfig) -> str:
    """Run the flow and return the summary the CLI prints."""
    manifests = pipeline_flow(cfg)
    lines = ["", "data stage finished (training and evaluation stages are not part of the pipeline yet):"]
    lines += [f"  {kind:>6} shards: {url}" for kind, url in manifests.items()]
    if cfg.tracking.uri:
        lines.append(
            f"  MLflow: {cfg.tracking.uri}  (open with: .venv/bin/mlflow ui --backend-store-uri "
            f"{cfg.tracking.uri})"
        )
    return "\n".join(lines)
