"""The shard stage: resolve the source and output, write the shards, log them to MLflow."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stcorr.config import PipelineConfig, fingerprint
from stcorr.data.preview import sample_grid
from stcorr.data.shard_stage import shard_source
from stcorr.runtime import console, storage_from_config


def shard_url(cfg: PipelineConfig, kind: str, source: str) -> str:
    """Where the shards of one source go: ``<storage.root>/shards/<kind>-<fingerprint>``.

    One folder per (source, shard settings), so pipelines sharding different data into one store
    at the same time never write into each other's shards.
    """
    where = source if "://" in source else str(Path(source).resolve())
    return f"{cfg.storage.root.rstrip('/')}/shards/{kind}-{fingerprint(kind, where, cfg.shard)[:12]}"


def run_shard_stage(cfg: PipelineConfig, kind: str, source: str, out: str | None = None) -> Any:
    """Shard one source (skipped when its shards are up to date) and log the manifest to MLflow."""
    out_url = out or shard_url(cfg, kind, source)
    began = time.perf_counter()
    with console.stage(f"shard {kind}"):
        result = shard_source(kind, source, out_url, cfg.shard, cfg.storage, cfg.compute,
                              progress=_progress(kind))
        if cfg.tracking.uri is not None:
            _log(cfg, kind, result, time.perf_counter() - began)
    return result


def _progress(kind: str) -> Callable[[str], None]:
    """The shard stage's lines as a progress display: ``shard 3/40 written: ...`` advances it
    (one per finished shard), the others (summary, re-sharding) are lines."""

    def show(line: str) -> None:
        head = line.split(" ", 2)
        if head[0] == "shard" and "/" in head[1]:
            console.bar(f"shard {kind}", int(head[1].split("/")[1]), "shard").update(advance=1)
        else:
            console.say(f"shard {kind}: {line}")

    return show


def _log(cfg: PipelineConfig, kind: str, result: Any, seconds: float) -> None:
    """A run with the manifest, or, when nothing was written, a record of the reused run."""
    from stcorr import tracking

    manifest = result.manifest
    stage_fp = fingerprint("shard", kind, cfg.shard, manifest["source_fingerprint"], result.manifest_url)
    if result.skipped and (reused := tracking.find_finished(cfg, "shard", stage_fp)) is not None:
        tracking.record_skip(cfg, "shard", stage_fp, reused)
        return
    with tracking.stage_run(cfg, "shard", stage_fp, run_name=f"shard-{kind}") as run:
        run.seconds_before = seconds  # the shards were written before the run could be named
        run.set_tags({"stcorr.shard.kind": kind, "stcorr.shard.url": result.manifest_url})
        run.log_json(manifest, f"shards/{kind}/manifest.json")
        run.log_metrics(
            {
                "samples": manifest["total_samples"],
                "bytes": manifest["total_bytes"],
                "shards": len(manifest["shards"]),
                "bad_inputs": len(manifest["bad_inputs"]),
            }
        )
        if manifest["total_samples"] > 0:
            png = sample_grid(manifest, storage_from_config(cfg.storage))
            run.log_bytes(png, f"shards/{kind}/sample_grid.png")
