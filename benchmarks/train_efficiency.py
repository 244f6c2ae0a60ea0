"""Training efficiency: the real Ray Train stages vs the same steps on in-memory tensors.

Contract: docs/benchmarks.md. For pretrain (MoCo v2) and finetune (STT, the full STT Eq. 10 with
the frozen teacher), with 1 and 2 Ray Train workers, alternating per repetition:

  (a) pipeline  ``stcorr.train.launch.fit_stage``: the real ``TorchTrainer`` and worker loop,
                batches streamed from shards (``compute.loader_workers`` DataLoader processes
                per worker, the default 1), rank 0 logging to a real MLflow SQLite store
                (metrics every ``log_every`` steps, system metrics, image panels) and
                checkpoints every ``checkpoint_every`` steps, at the stage's default cadence,
                one checkpoint (and for finetune one image panel) inside the timed window;
  (b) bare      the same module (``stage.build()``), optimiser, scheduler, DDP wrapping
                (``prepare_model``) and ``stage.step`` on random tensors of the batch's shapes,
                already in memory, under a ``TorchTrainer`` with the same ScalingConfig and
                gloo backend (so DDP costs are identical); no data loading, no logging.
                Both stages' bare runs share one ``TorchTrainer.fit()`` (start-up paid once).

Throughput is samples/s over all ranks over a window of steps that leaves out the first
``log_every`` steps (warm-up, DataLoader start): for (a) the wall time between the MLflow metric
timestamps of rank 0's log at that step and at the last step (so it includes logging and the
checkpoints in between); for (b) rank 0's clock at the same two steps. Also reported: rank 0's
own ``samples_per_s`` (step time only, without logging/checkpoint) and ``data_wait_share`` for
(a), and start-up: ``ray.init`` seconds, ``TorchTrainer.fit()`` call to the bare train function's
first line (worker group + process group), and fit() call to the end of the first step.

Wall-clock on a shared machine: ratios hold better than seconds; medians of the repetitions.
Sizes: pretrain at its defaults (batch 32 per rank, 64 px, ResNet-18, queue 4096); finetune
batch 4 clips of 2 frames at 96 px (defaults 8 and 128 px, scaled down for 2 CPU cores).

    python benchmarks/train_efficiency.py [--quick] [--out FILE.json] [--reps N] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stcorr.config import PipelineConfig, load_config
from stcorr.data.shard_stage import shard_source

TARGETS = {"pipeline_vs_bare_pretrain": 0.85, "pipeline_vs_bare_finetune": 0.85}
# Cadence: None = the stage's defaults (pipeline_config.yaml); steps = checkpoint_every + log_every.
FULL: dict[str, Any] = {"cadence": None, "reps": 2, "workers": (1, 2)}
QUICK: dict[str, Any] = {"cadence": {"log_every": 4, "checkpoint_every": 8}, "reps": 1, "workers": (2,)}
STAGE_FLAGS = {
    "pretrain": ["pretrain.batch_size=32", "pretrain.image_size=64", "pretrain.warmup_steps=2"],
    "finetune": ["finetune.batch_size=4", "finetune.crop_size=96", "finetune.warmup_steps=2"],
}


def make_data(root: Path, quick: bool) -> tuple[str, str, str, str]:
    """Image and video shards, and random init/teacher encoder files.

    Returns: (image manifest, video manifest, init weights path, teacher weights path).
    """
    from stcorr.data.synthetic import render_image, render_video, write_mp4
    from stcorr.models.resnet import build_backbone, encoder_state_dict
    from stcorr.train.teacher import make_teacher

    cfg = config(root, "pretrain", 1, QUICK)
    images, videos = root / "images", root / "videos"
    for i in range(48 if quick else 128):
        image, _ = render_image(np.random.default_rng(i), 64)
        (images / f"g{i % 4}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(images / f"g{i % 4}" / f"img{i:04d}.jpg", quality=95)
    videos.mkdir()
    for i in range(6 if quick else 12):
        write_mp4(videos / f"v{i}.mp4", render_video(np.random.default_rng(i), 12, (96, 128), 2).frames)
    manifests = [
        shard_source(kind, str(src), str(root / "shards" / kind),
                     cfg.shard.model_copy(update={"samples_per_shard": per}), cfg.storage, cfg.compute
                     ).manifest_url
        for kind, src, per in (("images", images, 16), ("videos", videos, 2))
    ]
    torch.manual_seed(0)
    init = root / "init.pt"
    torch.save(encoder_state_dict(build_backbone("stt_teacher", "resnet18")), init)
    make_teacher(init, root / "teacher.pt", "resnet18")
    return manifests[0], manifests[1], str(init), str(root / "teacher.pt")


def cadence(stage: str, plan: dict[str, Any]) -> dict[str, int]:
    """Log and checkpoint cadence, and the steps that put one checkpoint in the timed window."""
    section = getattr(load_config(overrides=[]), stage)
    chosen = plan["cadence"] or {"log_every": section.log_every, "checkpoint_every": section.checkpoint_every}
    return {**chosen, "steps": chosen["checkpoint_every"] + chosen["log_every"]}


def config(root: Path, stage: str, workers: int, plan: dict[str, Any]) -> PipelineConfig:
    """The stage's config: real logging and checkpoint cadence inside the timed window."""
    steps = cadence(stage, plan)
    return load_config(overrides=[
        f"storage.root={root / 'store'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"tracking.artifact_location={root / 'artifacts'}",
        "compute.num_cpus=2",
        f"compute.workers={workers}",
        f"{stage}.steps={steps['steps']}",
        f"{stage}.log_every={steps['log_every']}",
        f"{stage}.checkpoint_every={steps['checkpoint_every']}",
        *(["finetune.image_every=" + str(steps["checkpoint_every"])] if stage == "finetune" else []),
        *STAGE_FLAGS[stage],
    ])


def random_batch(stage: Any) -> dict[str, Any]:
    """Random tensors with the shapes and dtypes the stage's reader yields."""
    if stage.name == "pretrain":
        side = stage.cfg.pretrain.image_size
        shape = (stage.batch_size, 3, side, side)
        keys = [f"image-{i:06d}" for i in range(stage.batch_size)]  # sample keys, as the reader's
        return {"q": torch.randn(shape), "k": torch.randn(shape), "key": keys}  # (B, 3, S, S)
    section = stage.cfg.finetune
    clip = (stage.batch_size, section.clip_frames, 3, section.crop_size, section.crop_size)
    return {"rgb": torch.rand(clip), "lab": torch.randn(clip), "lab_dropped": torch.randn(clip),
            "drop_channel": torch.randint(1, 3, (stage.batch_size,))}  # (B, T, 3, S, S), (B,)


def bare_worker(loop_config: dict[str, Any]) -> None:
    """(b): each stage's model, optimiser and step on in-memory tensors; nothing else."""
    import ray.train

    context = ray.train.get_context()
    records = {}
    for stage_config in loop_config["stages"]:
        entered = time.time()
        marks = bare_steps(stage_config)
        records[stage_config["stage"]] = {"entered": entered, "marks": marks}
    if context.get_world_rank() == 0:
        Path(loop_config["result_file"]).write_text(json.dumps(records))


def bare_steps(loop_config: dict[str, Any]) -> list[float]:
    """One stage's bare steps; the wall clock after each."""
    import ray.train.torch

    from stcorr.train.schedule import cosine_with_warmup
    from stcorr.train.worker import build_stage

    stage = build_stage(loop_config)
    torch.manual_seed(stage.section.seed)
    module = stage.build()
    optimizer = stage.optimizer(module)
    scheduler = cosine_with_warmup(optimizer, stage.steps, stage.section.warmup_steps)
    no_scan = {"find_unused_parameters": False}  # as stcorr/train/worker.py
    wrapped = ray.train.torch.prepare_model(module, parallel_strategy_kwargs=no_scan)
    wrapped.train()
    batch, rng, marks = random_batch(stage), np.random.default_rng(0), []
    for _ in range(stage.steps):
        out = stage.step(wrapped, batch, rng)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        scheduler.step()
        marks.append(time.time())
    return marks


def run_bare(runs: list[tuple[PipelineConfig, str, Any]]) -> dict[str, dict[str, float]]:
    """Every stage's (b) run in one ``TorchTrainer`` configured as ``fit_stage`` configures it."""
    import dataclasses

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from stcorr.train.launch import ray_storage

    cfg = runs[0][0]
    storage_path, _ = ray_storage(cfg)
    stages = [{"stage": stage, "config": c.model_dump(mode="json"), "inputs": dataclasses.asdict(inputs)}
              for c, stage, inputs in runs]
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp, "bare.json")
        trainer = TorchTrainer(
            bare_worker,
            train_loop_config={"stages": stages, "result_file": str(result_file)},
            scaling_config=ScalingConfig(num_workers=cfg.compute.workers, use_gpu=False,
                                         resources_per_worker={"CPU": cfg.compute.cpus_per_worker}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(name=f"bare-{uuid.uuid4().hex[:8]}", storage_path=storage_path),
        )
        called = time.time()
        trainer.fit()
        records = json.loads(result_file.read_text())
    out = {}
    for c, stage, _ in runs:
        marks, section = records[stage]["marks"], getattr(c, stage)
        warm = section.log_every  # the same window as the pipeline's
        samples = section.batch_size * c.compute.workers * (len(marks) - warm)
        out[stage] = {"samples_per_s": samples / (marks[-1] - marks[warm - 1])}
    first = runs[0][1]
    out[first].update(trainer_startup_s=records[first]["entered"] - called,
                      first_step_s=records[first]["marks"][0] - called)
    return out


def run_pipeline(cfg: PipelineConfig, stage: str, inputs: Any) -> dict[str, float]:
    """One (a) run: ``fit_stage`` into a fresh MLflow run; throughput from rank 0's log times."""
    from mlflow import MlflowClient

    from stcorr.tracking import resolve_uri, setup
    from stcorr.train.launch import fit_stage

    client = MlflowClient(resolve_uri(cfg.tracking.uri or ""))
    run_id = client.create_run(setup(cfg.tracking)).info.run_id
    called = time.time()
    fit_stage(cfg, stage, inputs, run_name=f"{stage}-bench-{uuid.uuid4().hex[:8]}", run_id=run_id)
    client.set_terminated(run_id)

    def history(key: str) -> dict[int, Any]:
        return {m.step: m for m in client.get_metric_history(run_id, key)}

    loss, rate, wait = history("loss"), history("samples_per_s"), history("data_wait_share")
    section, last = getattr(cfg, stage), max(loss)
    warm = section.log_every  # first logged step after warm-up
    window = section.batch_size * cfg.compute.workers * (last - warm)
    logged = [rate[s].value for s in rate if s > warm]  # step time only: no logging, no checkpoint
    return {
        "samples_per_s": window / ((loss[last].timestamp - loss[warm].timestamp) / 1000.0),
        "step_only_samples_per_s": statistics.median(logged),
        "data_wait_share": statistics.median(wait[s].value for s in wait if s > warm),
        "first_step_s": loss[1].timestamp / 1000.0 - called,
    }


def measure(root: Path, data: tuple[str, str, str, str], plan: dict[str, Any]) -> dict[str, float]:
    """Every (stage, workers) pair, pipeline and bare alternating; medians of the repetitions."""
    from stcorr.tracking import shard_urls
    from stcorr.train.stages import StageInputs

    figures: dict[str, float] = {}
    for workers in plan["workers"]:
        runs = []
        for stage, manifest in (("pretrain", data[0]), ("finetune", data[1])):
            cfg = config(root, stage, workers, plan)
            runs.append((cfg, stage, StageInputs(shards=shard_urls(cfg, manifest)[0], init_weights=data[2],
                                                 teacher_weights=data[3])))
        records: dict[str, list[dict[str, float]]] = {}
        for _ in range(plan["reps"]):
            for cfg, stage, inputs in runs:
                records.setdefault(f"pipeline_{stage}", []).append(run_pipeline(cfg, stage, inputs))
            for stage, bare in run_bare(runs).items():
                records.setdefault(f"bare_{stage}", []).append(bare)
            print(f"  {workers}w: " + " | ".join(f"{k}: {v[-1]}" for k, v in records.items()),
                  file=sys.stderr, flush=True)
        for name, found in records.items():
            kind, stage = name.split("_")
            for key in found[0]:
                figures[f"{kind}_{stage}_{workers}w_{key}"] = statistics.median(r[key] for r in found)
    return figures


def ratios_of(figures: dict[str, float], plan: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for stage in ("pretrain", "finetune"):
        for workers in plan["workers"]:
            ratio = (figures[f"pipeline_{stage}_{workers}w_samples_per_s"]
                     / figures[f"bare_{stage}_{workers}w_samples_per_s"])
            out[f"pipeline_vs_bare_{stage}" if workers == 2 else f"pipeline_vs_bare_{stage}_1w"] = ratio
            out[f"pipeline_step_only_vs_bare_{stage}_{workers}w"] = (
                figures[f"pipeline_{stage}_{workers}w_step_only_samples_per_s"]
                / figures[f"bare_{stage}_{workers}w_samples_per_s"])
    return out


def table(figures: dict[str, float], ratios: dict[str, float], plan: dict[str, Any]) -> str:
    lines = ["| stage | workers | pipeline samples/s | step-only samples/s | bare samples/s | "
             "pipeline/bare | data wait | fit()->1st step pipeline / bare (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for stage in ("pretrain", "finetune"):
        for w in plan["workers"]:
            p, b = f"pipeline_{stage}_{w}w_", f"bare_{stage}_{w}w_"
            ratio = ratios[f"pipeline_vs_bare_{stage}" if w == 2 else f"pipeline_vs_bare_{stage}_1w"]
            lines.append(
                f"| {stage} | {w} | {figures[p + 'samples_per_s']:.1f} | "
                f"{figures[p + 'step_only_samples_per_s']:.1f} | {figures[b + 'samples_per_s']:.1f} | "
                f"{ratio:.3f} | {figures[p + 'data_wait_share']:.1%} | "
                f"{figures[p + 'first_step_s']:.1f} / {figures.get(b + 'first_step_s', float('nan')):.1f} |")
    lines.append("")
    lines.append(f"ray.init: {figures['ray_init_s']:.1f} s; TorchTrainer.fit() -> train function "
                 f"(bare, median): {figures['trainer_startup_s']:.1f} s")
    for name, target in TARGETS.items():
        lines.append(f"{name}: {ratios[name]:.3f} (target >= {target})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 workers only, 12 steps (checkpoint at 8), 1 repetition")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--reps", type=int, help="repetitions (default: 2 full, 1 quick)")
    parser.add_argument("--workers", help="worker counts, comma-separated (must include 2)")
    args = parser.parse_args()
    plan = dict(QUICK if args.quick else FULL)
    if args.reps:
        plan["reps"] = args.reps
    if args.workers:
        plan["workers"] = tuple(int(w) for w in args.workers.split(","))
    from stcorr.runtime import init_ray, shutdown_ray

    with tempfile.TemporaryDirectory(prefix="train_eff_") as tmp:
        root = Path(tmp)
        began = time.time()
        init_ray(config(root, "pretrain", 1, plan).compute)
        ray_init = time.time() - began
        try:
            data = make_data(root, args.quick)
            figures = measure(root, data, plan)
        finally:
            shutdown_ray()
    figures["ray_init_s"] = ray_init
    figures["trainer_startup_s"] = statistics.median(
        v for k, v in figures.items() if k.startswith("bare_") and k.endswith("_trainer_startup_s"))
    ratios = ratios_of(figures, plan)
    result = {
        "name": "train_efficiency",
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__.split("+")[0],
                    "python": platform.python_version()},
        "figures": {k: round(v, 4) for k, v in figures.items()},
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "targets": TARGETS,
        "cadence": {stage: cadence(stage, plan) for stage in ("pretrain", "finetune")},
        "pass": all(ratios[k] >= t for k, t in TARGETS.items()),
    }
    print(table(figures, ratios, plan))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
