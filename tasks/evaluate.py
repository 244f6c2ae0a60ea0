"""Evaluate stage: the candidate and the baselines on every configured benchmark, in MLflow."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from stcorr.compute import init_ray
from stcorr.config import PipelineConfig
from stcorr.eval.features import ModelSpec, load_model
from stcorr.eval.harness import (
    BenchmarkResult,
    evaluate_benchmark,
    log_benchmark,
    read_benchmark,
    results_table,
    table_row,
)

BenchmarkName = Literal["davis", "vip", "jhmdb"]
OUTPUT_ARTIFACT = "evaluate/stage_output.json"


def _models(cfg: PipelineConfig, candidate: str | None, teacher: str | None,
            objective: str) -> tuple[list[ModelSpec], list[str]]:
    """The candidate (if any) and the configured baselines; baselines without inputs skipped."""
    stride, tracking = cfg.evaluate.stride, cfg.tracking
    models = [load_model(candidate, objective=objective, stride=stride, tracking=tracking,
                         name="candidate")] if candidate else []
    skipped = []
    for baseline in cfg.evaluate.baselines:
        if baseline == "teacher" and not teacher:
            skipped.append("teacher")
            continue
        ref = teacher if baseline == "teacher" and teacher else baseline
        models.append(load_model(ref, objective=objective, stride=stride, tracking=tracking,
                                 name=baseline, teacher=baseline == "teacher"))
    return models, skipped


def _identity(model: ModelSpec) -> str:
    """What the fingerprint knows of a model: its kind, input, preset and weights' sha256."""
    digest = hashlib.sha256(Path(model.weights).read_bytes()).hexdigest() if model.weights else ""
    return f"{model.name}:{model.kind}:{model.input}:{model.preset}:{model.stride}:{digest}"


def _data_identity(name: str, root: str, max_sequences: int | None) -> str:
    """Benchmark, root and the sequences' frame counts (content hashing would read every frame)."""
    seqs = read_benchmark(name, root, max_sequences)  # layout errors here, before Ray and MLflow
    return f"{name}={Path(root).resolve()}:" + ",".join(f"{s.name}/{len(s.frames)}" for s in seqs)


def _out_dir(cfg: PipelineConfig, fp: str) -> Path:
    """``<storage.root>/evaluate/<fp>`` for a local root; a temp folder for s3:// (MLflow keeps it)."""
    if "://" in cfg.storage.root:
        return Path(tempfile.mkdtemp(prefix=f"stcorr-evaluate-{fp[:8]}-"))
    return Path(cfg.storage.root) / "evaluate" / fp[:16]


def _reuse(cfg: PipelineConfig, fp: str) -> dict[str, Any] | None:
    """The output of a FINISHED evaluate run with this fingerprint (recording the skip), or None."""
    if cfg.tracking.uri is None:
        return None
    import mlflow

    from stcorr import tracking

    run = tracking.find_finished(cfg, "evaluate", fp)
    if run is None:
        return None
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=OUTPUT_ARTIFACT)
    tracking.record_skip(cfg, "evaluate", fp, run)
    print(f"evaluate: up to date (fingerprint {fp[:12]}); reusing run {run.info.run_id}", flush=True)
    return dict(json.loads(Path(local).read_text()))


def run_evaluate(cfg: PipelineConfig, candidate_encoder: str | None,
                 teacher_encoder: str | None, benchmarks: Mapping[BenchmarkName, str], *,
                 objective: str, pipeline: str = "") -> dict[str, Any]:
    """Evaluate the candidate and the baselines; log metrics, tables and pictures to MLflow.

    Skipped (its output reused) when MLflow holds a FINISHED evaluate run with the same
    fingerprint: the ``evaluate`` section, the objective, the models' weights and the data.

    Args:
        cfg: the pipeline config (``evaluate`` section, tracking, compute, storage).
        candidate_encoder: encoder file or ``models:/`` reference; None = baselines only.
        teacher_encoder: the teacher's file or reference, for the ``teacher`` baseline.
        benchmarks: benchmark name -> root folder; only ``evaluate.benchmarks`` are run.
        objective: how the candidate was trained ("stt" or "crw"): its input and preset.
        pipeline: the pipeline run's tag value.

    Returns:
        ``{"fingerprint", "run_id", "out_dir", "table", "skipped", "summaries": {benchmark:
        {model: {metric: value}}}}`` (finite values only; model "candidate" or a baseline).

    Raises:
        ValueError: no configured benchmark has a root; BenchmarkLayoutError: a bad layout;
        ModelRefError: an encoder reference that does not resolve.
    """
    from tasks.training import claim, stage_fingerprint

    roots = {b: benchmarks[b] for b in cfg.evaluate.benchmarks if benchmarks.get(b)}
    if not roots:
        raise ValueError(f"evaluate.benchmarks: none of {list(cfg.evaluate.benchmarks)} has a "
                         f"root folder (got {sorted(benchmarks)}); set data.davis/vip/jhmdb")
    data = [_data_identity(b, root, cfg.evaluate.max_sequences) for b, root in roots.items()]
    models, skipped = _models(cfg, candidate_encoder, teacher_encoder, objective)
    fp = stage_fingerprint("evaluate", cfg.evaluate, objective, *map(_identity, models), *data)
    with claim(cfg, "evaluate", fp, lambda: _reuse(cfg, fp)) as done:
        return done or _evaluate(cfg, fp, models, roots, skipped, pipeline)


def _evaluate(cfg: PipelineConfig, fp: str, models: list[ModelSpec], roots: Mapping[BenchmarkName, str],
              skipped: list[str], pipeline: str) -> dict[str, Any]:
    from tasks.training import maybe_stage_run

    out_dir = _out_dir(cfg, fp)
    init_ray(cfg.compute)  # once, before the benchmark threads share it
    with maybe_stage_run(cfg, "evaluate", fp, pipeline) as run:
        results = _evaluate_all(cfg, models, roots, out_dir)
        for result in results:
            log_benchmark(run, result, prefix="" if result.model == "candidate" else f"{result.model}/")
        table = results_table([table_row(m.name, [r for r in results if r.model == m.name])
                               for m in models])
        (out_dir / "results.md").write_text(table + "\n")
        run.log_file(out_dir / "results.md", "evaluate")
        output = {"fingerprint": fp, "run_id": run.run_id, "out_dir": str(out_dir.resolve()),
                  "table": table, "skipped": skipped, "summaries": _summaries(results)}
        run.log_json(output, OUTPUT_ARTIFACT)
    return output


def _summaries(results: list[BenchmarkResult]) -> dict[str, dict[str, dict[str, float]]]:
    """``{benchmark: {model: {metric: value}}}`` without NaN (a VIP class absent everywhere)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        out.setdefault(r.benchmark, {})[r.model] = {
            k: v for k, v in r.summary.items() if math.isfinite(v)}
    return out


def _evaluate_all(cfg: PipelineConfig, models: list[ModelSpec], roots: Mapping[BenchmarkName, str],
                  out_dir: Path) -> list[BenchmarkResult]:
    """Every (model, benchmark) pair concurrently; each pair fans out one Ray task per sequence."""
    pairs = [(m, b, root) for m in models for b, root in roots.items()]
    with ThreadPoolExecutor(max_workers=max(1, len(pairs))) as pool:
        futures = [pool.submit(evaluate_benchmark, b, root, m, cfg.evaluate, out_dir / m.name,
                               cfg.compute) for m, b, root in pairs]
        return [f.result() for f in futures]


evaluate_task = task(name="evaluate", cache_policy=NO_CACHE)(run_evaluate)
