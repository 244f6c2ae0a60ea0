"""Evaluate a model on a benchmark: one Ray task per sequence, aggregation, outputs, MLflow.

Aggregation follows the official protocols (docs/methods.md 3.2-3.4 and 4.4): DAVIS-2017 averages
every statistic over all objects (``davis_summary``), with a 95% bootstrap interval over
objects for J&F (``J&F-Mean-low`` / ``-high``); VIP sums the per-sequence confusion matrices
into one dataset-level mIoU; JHMDB pools every frame of every video into PCK. The real-footage
benchmark (``footage``) is read and scored exactly as DAVIS-2017. The same harness runs the
candidate and the baselines (``copy``, ``lab``, ``random``, ``teacher``), so every results
table has them side by side (CRW, Jabri et al., NeurIPS 2020, Tab. 1; STT, Li & Liu, CVPR
2023, Tab. 2).

Outputs under ``out_dir``: predictions ``<benchmark>/<seq>/...`` (DAVIS/VIP palette PNGs named
like the GT, JHMDB ``keypoints.npy``), ``<benchmark>-per-sequence.csv``,
``<benchmark>-summary.json`` and ``pictures/<benchmark>/<seq>-strip.png`` / ``<seq>.gif``. The
CSV is kept outside the predictions folder on purpose: the official DAVIS tool re-uses any
``*results-val.csv`` it finds in a results folder instead of recomputing.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from stcorr.config import ComputeConfig, EvaluateConfig
from stcorr.eval.features import FeatureExtractor, ModelSpec
from stcorr.eval.intervals import mean_interval, object_scores
from stcorr.eval.metrics import VIP_CLASSES, ConfusionMatrix, davis_summary, pck
from stcorr.eval.protocols import apply_protocol
from stcorr.eval.readers import MaskSequence, PoseSequence, read_davis, read_jhmdb, read_vip
from stcorr.eval.sequence import SequenceResult, evaluate_sequence
from stcorr.models.resnet import read_state
from stcorr.runtime import console

BENCHMARKS = ("footage", "davis", "vip", "jhmdb")
PROTOCOL = {"footage": "davis", "davis": "davis", "vip": "vip", "jhmdb": "jhmdb"}  # name -> protocol
VIP_CLASS_NAMES = (
    "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks",
    "pants", "gloves", "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm",
    "right-leg", "left-leg", "right-shoe", "left-shoe",
)  # fmt: skip
HEADLINE = {"footage": ("J&F-Mean", "J-Mean", "F-Mean"), "davis": ("J&F-Mean", "J-Mean", "F-Mean"),
            "vip": ("mIoU",), "jhmdb": ("PCK@0.1", "PCK@0.2")}
Sequences = list[MaskSequence] | list[PoseSequence]


@dataclass
class BenchmarkResult:
    """One model on one benchmark: the summary, the per-sequence table and the files."""

    benchmark: str
    model: str
    summary: dict[str, float]
    rows: list[dict[str, str | float]]
    sequences: list[SequenceResult]
    files: dict[str, Path] = field(default_factory=dict)  # csv, json, predictions
    pictures: list[Path] = field(default_factory=list)  # strips and GIFs

    @property
    def precision(self) -> str:
        """The encoder's arithmetic over the sequences ("float32", "bfloat16" or both, where
        ``auto`` met machines with and without native bf16)."""
        return " and ".join(sorted({s.precision for s in self.sequences})) or "float32"


def read_benchmark(benchmark: str, root: str | Path,
                   max_sequences: int | None = None) -> Sequences:
    """The sequences of a benchmark folder (its layout checked), at most ``max_sequences``.

    Raises:
        ValueError: unknown benchmark name.
        BenchmarkLayoutError: the folder is not in the benchmark's layout (one line).
    """
    folder = Path(root).resolve()
    seqs: Sequences
    if PROTOCOL.get(benchmark) == "davis":
        seqs = read_davis(folder)
    elif benchmark == "vip":
        seqs = read_vip(folder)
    elif benchmark == "jhmdb":
        seqs = read_jhmdb(folder)
    else:
        raise ValueError(f"benchmark {benchmark!r}: unknown; expected one of {list(BENCHMARKS)}")
    return seqs[:max_sequences] if max_sequences else seqs


def _sequence_task(benchmark: str, seq: MaskSequence | PoseSequence, spec: ModelSpec,
                   state: bytes | None, cfg: EvaluateConfig, pred_dir: Path,
                   size: tuple[int, int] | None) -> SequenceResult:
    """Body of one Ray task (and of the sequential path): build the model, evaluate."""
    weights = read_state(state, spec.weights or spec.name) if state is not None else None
    extractor = FeatureExtractor(spec, weights, cfg.precision)
    result = evaluate_sequence(PROTOCOL[benchmark], seq, extractor, cfg, pred_dir, size=size,
                               visualize=cfg.visualize)
    return replace(result, precision=extractor.precision)


def run_sequences(benchmark: str, seqs: Sequences, spec: ModelSpec, cfg: EvaluateConfig,
                  pred_dir: Path, compute: ComputeConfig | None, *,
                  size: tuple[int, int] | None = None) -> list[SequenceResult]:
    """Evaluate every sequence: one Ray task each, or in this process when ``compute`` is None.

    The encoder's bytes go to the Ray object store once, so workers on other nodes need no
    shared copy of the checkpoint (the benchmark folder and ``pred_dir`` they do need).

    Raises:
        ComputeError: Ray cannot be reached; the first failing sequence's own error otherwise.
    """
    state = Path(spec.weights).read_bytes() if spec.weights else None
    done = console.bar("evaluate", 0, "sequence")  # one display for every model and benchmark
    done.grow(len(seqs))
    if compute is None:
        results = []
        for s in seqs:
            results.append(_sequence_task(benchmark, s, spec, state, cfg, pred_dir, size))
            done.update(advance=1)
        return results
    import ray

    from stcorr.runtime import init_ray

    init_ray(compute)
    task = ray.remote(num_cpus=1)(_sequence_task)
    state_ref = ray.put(state)
    futures = [task.remote(benchmark, s, spec, state_ref, cfg, pred_dir, size) for s in seqs]
    try:
        pending = list(futures)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done.update(advance=len(ready))
        return list(ray.get(futures))
    except ray.exceptions.RayTaskError as err:  # re-raise the sequence's one-line error
        for future in futures:
            ray.cancel(future)
        cause = err.cause
        raise (cause if isinstance(cause, Exception) else err) from None


def aggregate(benchmark: str, results: Sequence[SequenceResult], bootstrap_samples: int = 2000,
              ) -> tuple[dict[str, float], list[dict[str, str | float]]]:
    """Benchmark summary and per-sequence rows from the sequences' results.

    Returns:
        DAVIS protocol: J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay
        (object-weighted) and the 95% bootstrap interval of J&F-Mean over objects
        (``J&F-Mean-low``, ``J&F-Mean-high``); VIP: mIoU and ``IoU/<class>`` (dataset-level
        confusion); JHMDB: PCK@0.1..0.5.
    """
    rows = [row for r in results for row in r.rows]
    if PROTOCOL[benchmark] == "davis":
        summary = davis_summary([rec for r in results for rec in r.records])
        interval = mean_interval(object_scores(rows), bootstrap_samples)
        summary.update({"J&F-Mean-low": interval.low, "J&F-Mean-high": interval.high})
        return summary, rows
    if benchmark == "vip":
        confusion = ConfusionMatrix(VIP_CLASSES)
        for r in results:
            assert r.confusion is not None, "a VIP result carries its confusion counts"
            confusion.matrix += r.confusion
        per_class = confusion.per_class_iou()
        summary = {"mIoU": confusion.miou()}
        summary.update({f"IoU/{name}": float(v) for name, v in zip(VIP_CLASS_NAMES, per_class,
                                                                   strict=True)})
        return summary, rows
    keypoints = [r.keypoints for r in results if r.keypoints is not None]
    return pck([p for p, _ in keypoints], [g for _, g in keypoints]), rows


def _safe(name: str) -> str:
    return name.replace("/", "__")


def json_safe(summary: Mapping[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: a class absent from GT and predictions becomes null."""
    return {k: (v if math.isfinite(v) else None) for k, v in summary.items()}


def write_outputs(result: BenchmarkResult, out_dir: Path) -> None:
    """Write the CSV, the summary JSON and the pictures; record their paths in ``result``."""
    bench = result.benchmark
    table = out_dir / f"{bench}-per-sequence.csv"
    columns = list(dict.fromkeys(k for row in result.rows for k in row))
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.rows)
    summary = out_dir / f"{bench}-summary.json"
    summary.write_text(json.dumps({"benchmark": bench, "model": result.model,
                                   "summary": json_safe(result.summary),
                                   "sequences": len(result.sequences),
                                   "precision": result.precision}, indent=2))
    result.files.update(csv=table, json=summary)
    pictures = out_dir / "pictures" / bench
    for seq in result.sequences:
        for suffix, data in (("-strip.png", seq.strip), (".gif", seq.animation)):
            if data:
                pictures.mkdir(parents=True, exist_ok=True)
                path = pictures / f"{_safe(seq.name)}{suffix}"
                path.write_bytes(data)
                result.pictures.append(path)


def evaluate_benchmark(benchmark: str, root: str | Path, model: ModelSpec,
                       cfg_evaluate: EvaluateConfig, out_dir: str | Path,
                       compute_cfg: ComputeConfig | None, *,
                       size: tuple[int, int] | None = None) -> BenchmarkResult:
    """Evaluate ``model`` on one benchmark folder and write its outputs.

    Args:
        benchmark: "footage", "davis", "vip" or "jhmdb" (footage is scored as DAVIS).
        root: the benchmark folder in its published layout.
        model: from ``load_model``.
        cfg_evaluate: propagation parameters, ``max_sequences``, ``visualize``; ``protocol``
            replaces the propagation keys by a paper's (:mod:`stcorr.eval.protocols`).
        out_dir: output folder (see the module docstring).
        compute_cfg: Ray settings; None evaluates the sequences one by one in this process.
        size: squash size for VIP/JHMDB; None = ``evaluate.vip_size`` / ``jhmdb_size``.

    Raises:
        BenchmarkLayoutError: wrong layout (before Ray starts); ValueError: bad masks.
    """
    seqs = read_benchmark(benchmark, root, cfg_evaluate.max_sequences)
    cfg_evaluate = apply_protocol(cfg_evaluate, benchmark, model.stride, model.contract)
    out = Path(out_dir).resolve()
    pred_dir = out / benchmark
    pred_dir.mkdir(parents=True, exist_ok=True)
    results = run_sequences(benchmark, seqs, model, cfg_evaluate, pred_dir, compute_cfg,
                            size=size)
    summary, rows = aggregate(benchmark, results, cfg_evaluate.bootstrap_samples)
    result = BenchmarkResult(benchmark, model.name, summary, rows, results,
                             files={"predictions": pred_dir})
    write_outputs(result, out)
    return result


def metric_name(benchmark: str, name: str, prefix: str = "") -> str:
    """MLflow metric key ``<prefix><benchmark>/<name>``.

    MLflow 3.17 rejects '&' and '@' in metric names, so ``J&F-Mean`` is logged as ``JF-Mean``
    and ``PCK@0.1`` as ``PCK_at_0.1``, as ``stcorr.tracking.report`` does (JSON and CSV keep the
    official names).
    """
    return f"{prefix}{benchmark}/{name.replace('&', '').replace('@', '_at_')}"


def log_benchmark(run: Any, result: BenchmarkResult, *, prefix: str = "") -> None:
    """Log a benchmark result to an MLflow stage run (``StageRun`` or the no-tracking stand-in).

    Summary metrics as ``<prefix><benchmark>/<metric>``; the CSV and JSON under
    ``evaluate/<model>/<benchmark>/``, strips under ``.../strips`` and GIFs under ``.../gifs``.
    """
    metrics = {metric_name(result.benchmark, k, prefix): v for k, v in result.summary.items()
               if math.isfinite(v)}
    run.log_metrics(metrics)
    base = f"evaluate/{result.model}/{result.benchmark}"
    for key in ("csv", "json"):
        if key in result.files:
            run.log_file(result.files[key], base)
    for path in result.pictures:
        run.log_file(path, f"{base}/{'gifs' if path.suffix == '.gif' else 'strips'}")


def table_row(model: str, results: Sequence[BenchmarkResult]) -> dict[str, Any]:
    """One results-table row: ``{"model": ..., "<benchmark>/<metric>": value, ...}``."""
    row: dict[str, Any] = {"model": model}
    for r in results:
        row.update({f"{r.benchmark}/{k}": v for k, v in r.summary.items()})
    return row


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of the headline metrics, one row per model (fractions, 3 decimals).

    Args:
        rows: from ``table_row``; a metric a row lacks prints as "-".
    """
    columns = [f"{b}/{m}" for b, names in HEADLINE.items() for m in names
               if any(f"{b}/{m}" in row for row in rows)]
    lines = ["| model | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row in rows:
        cells = [_fmt(row.get(c)) for c in columns]
        lines.append(f"| {row.get('model', '?')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(np.asarray(value)):.3f}"


def davis_tables(summary: Mapping[str, float], rows: Sequence[Mapping[str, Any]]) -> str:
    """The official tool's printout: the global table, then one row per object ``<seq>_<k>``.

    Args:
        summary: from ``davis_summary`` (J&F-Mean, J-Mean, ..., F-Decay).
        rows: per-object rows ``{"Sequence": "<seq>_<k>", "J-Mean": ..., ...}``.
    """
    stats = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    width = max([8, *(len(str(r["Sequence"])) for r in rows)])
    lines = ["Global results", "  ".join(f"{s:>8}" for s in stats),
             "  ".join(f"{summary[s]:>8.3f}" for s in stats), "", "Per sequence results",
             f"{'Sequence':<{width}}  " + "  ".join(f"{s:>8}" for s in stats[1:])]
    for row in rows:
        values = "  ".join(f"{float(row[s]):>8.3f}" for s in stats[1:])
        lines.append(f"{row['Sequence']!s:<{width}}  {values}")
    return "\n".join(lines)
