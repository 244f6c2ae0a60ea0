"""Evaluate stage: the candidate and the baselines on every configured benchmark, in MLflow."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from stcorr.config import PipelineConfig
from stcorr.eval.features import ModelSpec, check_precision, load_model
from stcorr.eval.harness import (
    PROTOCOL,
    BenchmarkResult,
    evaluate_benchmark,
    log_benchmark,
    read_benchmark,
    results_table,
    table_row,
)
from stcorr.eval.intervals import object_scores
from stcorr.eval.protocols import chosen
from stcorr.eval.ranking import compare
from stcorr.runtime import init_ray

BenchmarkName = Literal["footage", "davis", "vip", "jhmdb"]


def _models(cfg: PipelineConfig, candidate: str | None, teacher: str | None, objective: str | None,
            calibration: str | None) -> tuple[list[ModelSpec], list[str]]:
    """The candidate (if any) and the configured baselines; baselines without inputs skipped.

    Every encoder is run as its input contract says (``objective`` overrides the candidate's);
    the random baseline copies the candidate's contract and, given training frames
    (``calibration``), gets its BatchNorm statistics recalibrated on them.
    """
    stride, tracking = cfg.evaluate.stride, cfg.tracking
    cand = load_model(candidate, objective=objective, stride=stride, tracking=tracking,
                      name="candidate") if candidate else None
    models, skipped = ([cand] if cand else []), []
    for baseline in cfg.evaluate.baselines:
        if baseline == "teacher":
            if teacher:  # the spatial encoder: its own contract (RGB), never the candidate's
                models.append(load_model(teacher, stride=stride, tracking=tracking, name="teacher",
                                         fallback="moco"))
            else:
                skipped.append("teacher")
        elif baseline == "random":
            models.append(_random(cfg, cand, objective, calibration))
        else:
            models.append(load_model(baseline, stride=stride))
    return models, skipped


def _random(cfg: PipelineConfig, cand: ModelSpec | None, objective: str | None,
            calibration: str | None) -> ModelSpec:
    """The random baseline with the candidate's contract, recalibrated when frames are given."""
    from stcorr.eval.calibrate import calibrated_random

    spec = load_model("random", objective=objective, stride=cfg.evaluate.stride,
                      like=cand.contract if cand else None)
    if calibration and cfg.evaluate.random_bn_frames:
        return calibrated_random(spec, calibration, cfg.evaluate.random_bn_frames)
    note = "BatchNorm statistics at their initial values (no training frames given)"
    return dataclasses.replace(spec, notes=(*spec.notes, note))


def _identity(model: ModelSpec) -> str:
    """What the fingerprint knows of a model: kind, contract, notes and the weights' sha256."""
    digest = hashlib.sha256(Path(model.weights).read_bytes()).hexdigest() if model.weights else ""
    return f"{model.name}:{model.kind}:{model.contract.to_dict()}:{model.notes}:{digest}"


def _data_identity(name: str, root: str, max_sequences: int | None) -> str:
    """Benchmark, root and the sequences' frame counts (content hashing would read every frame)."""
    seqs = read_benchmark(name, root, max_sequences)  # layout errors here, before Ray and MLflow
    return f"{name}={Path(root).resolve()}:" + ",".join(f"{s.name}/{len(s.frames)}" for s in seqs)


def _out_dir(cfg: PipelineConfig, fp: str) -> Path:
    """``<storage.root>/evaluate/<fp>`` for a local root; a temp folder for s3:// (MLflow keeps it)."""
    if "://" in cfg.storage.root:
        return Path(tempfile.mkdtemp(prefix=f"stcorr-evaluate-{fp[:8]}-"))
    return Path(cfg.storage.root) / "evaluate" / fp[:16]


def run_evaluate(cfg: PipelineConfig, candidate_encoder: str | None,
                 teacher_encoder: str | None, benchmarks: Mapping[BenchmarkName, str], *,
                 objective: str | None = None, calibration: str | None = None,
                 pipeline: str = "") -> dict[str, Any]:
    """Evaluate the candidate and the baselines; log metrics, tables and pictures to MLflow.

    Skipped (its output reused) when MLflow holds a FINISHED evaluate run with the same
    fingerprint: the ``evaluate`` section, the models' contracts and weights, and the data.

    Args:
        cfg: the pipeline config (``evaluate`` section, tracking, compute, storage).
        candidate_encoder: encoder file or ``models:/`` reference; None = baselines only.
        teacher_encoder: the teacher's file or reference, for the ``teacher`` baseline.
        benchmarks: benchmark name -> root folder; only ``evaluate.benchmarks`` are run.
        objective: override of the candidate's input contract (``--objective`` spellings);
            None runs every encoder as its contract says.
        calibration: training video source for the random baseline's BatchNorm statistics.
        pipeline: the pipeline run's tag value.

    Returns:
        ``{"fingerprint", "run_id", "out_dir", "table", "skipped", "summaries": {benchmark:
        {model: {metric: value}}}}`` (finite values only; model "candidate" or a baseline).

    Raises:
        ValueError: no configured benchmark has a root; BenchmarkLayoutError: a bad layout;
        ModelRefError: an encoder reference that does not resolve.
    """
    from stcorr.tracking import claim, output_artifact, reuse, run_json, stage_fingerprint

    roots = {b: benchmarks[b] for b in cfg.evaluate.benchmarks if benchmarks.get(b)}
    if not roots:
        raise ValueError(f"evaluate.benchmarks: none of {list(cfg.evaluate.benchmarks)} has a "
                         f"root folder (got {sorted(benchmarks)}); set data.davis/vip/jhmdb")
    data = [_data_identity(b, root, cfg.evaluate.max_sequences) for b, root in roots.items()]
    check_precision(cfg.evaluate.precision)
    models, skipped = _models(cfg, candidate_encoder, teacher_encoder, objective, calibration)
    # auto: every model runs the candidate's protocol; the contracts in the identities decide it,
    # and leaving the key out keeps the fingerprints of runs made before it existed
    auto = cfg.evaluate.protocol == "auto"
    section = cfg.evaluate.model_dump(mode="json", exclude={"protocol"} if auto else set())
    cand = next((m for m in models if m.name == "candidate"), None)
    cfg = cfg.model_copy(update={"evaluate": chosen(cfg.evaluate, cand.contract if cand else None)})
    fp = stage_fingerprint("evaluate", section, *map(_identity, models), *data)
    def find() -> dict[str, Any] | None:
        return reuse(cfg, "evaluate", fp, lambda run: dict(run_json(run, output_artifact("evaluate"))))

    with claim(cfg, "evaluate", fp, find) as done:
        return done or _evaluate(cfg, fp, models, roots, skipped, pipeline)


def _evaluate(cfg: PipelineConfig, fp: str, models: list[ModelSpec], roots: Mapping[BenchmarkName, str],
              skipped: list[str], pipeline: str) -> dict[str, Any]:
    from stcorr.tracking import maybe_stage_run, output_artifact

    out_dir = _out_dir(cfg, fp)
    init_ray(cfg.compute)  # once, before the benchmark threads share it
    with maybe_stage_run(cfg, "evaluate", fp, pipeline) as run:
        results = _evaluate_all(cfg, models, roots, out_dir)
        for result in results:
            log_benchmark(run, result, prefix="" if result.model == "candidate" else f"{result.model}/")
        table = results_table([table_row(m.name, [r for r in results if r.model == m.name])
                               for m in models])
        objects = _object_scores(results)
        comparisons = [c for bench, scores in objects.items()
                       for c in compare(bench, scores, cfg.evaluate.bootstrap_samples)]
        run.log_metrics({f"compare/{c.benchmark}/{c.a}_vs_{c.b}/{k}": v for c in comparisons
                         for k, v in (("diff", c.diff.value), ("low", c.diff.low), ("high", c.diff.high))})
        lines = [table, "", *(c.line() for c in comparisons)]
        (out_dir / "results.md").write_text("\n".join(lines) + "\n")
        run.log_file(out_dir / "results.md", "evaluate")
        output = {"fingerprint": fp, "run_id": run.run_id, "out_dir": str(out_dir.resolve()),
                  "table": table, "skipped": skipped, "summaries": _summaries(results),
                  "comparisons": [c.to_dict() for c in comparisons], "objects": objects,
                  "notes": {m.name: list(m.notes) for m in models},
                  "contracts": {m.name: m.describe() for m in models},
                  "precision": {r.model: r.precision for r in results
                                if r.model in {m.name for m in models if m.kind in ("encoder", "random")}},
                  "contract_fields": {m.name: m.contract.to_dict() for m in models if m.kind == "encoder"}}
        run.log_json(output, output_artifact("evaluate"))
    return output


def _object_scores(results: list[BenchmarkResult]) -> dict[str, dict[str, dict[str, float]]]:
    """``{benchmark: {model: {object: J&F}}}`` for the benchmarks scored with the DAVIS protocol."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        if PROTOCOL[r.benchmark] == "davis":
            out.setdefault(r.benchmark, {})[r.model] = object_scores(r.rows)
    return out


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
