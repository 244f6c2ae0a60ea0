"""Temporal objectives: windowed local correlation vs dense masked attention, and STT/CRW steps.

Contract: docs/benchmarks.md.

(a) correlation  STT Eq. 4 (Li & Liu, CVPR 2023) at the R18 pyramid sizes, 64x64 (C=128, r=12)
    and 32x32 (C=256, r=6), batch 2: stcorr's windowed correlation (tiles, one matmul per
    chunk, custom backward, no HW x HW matrix) against the reference code's formulation (HW x HW
    matmul, precomputed window mask, masked_fill(-inf), softmax, matmul with the values). Each
    contender runs softmax weights -> apply to a one-channel value map -> backward to both
    feature maps, i.e. one reconstruction level of a training step. Timed alternately
    (A, B, A, B ...). Peak memory: each contender in its own subprocess, VmHWM above the RSS with
    inputs ready (peak reset through /proc/self/clear_refs); the dense mask is built after the
    reset, so it counts for the dense side. Measured twice: "live" with MALLOC_MMAP_THRESHOLD_ =
    64 KiB (every tensor its own mapping, returned when freed: the peak of live tensors, the
    target's figure) and "rss" with glibc's defaults (freed blocks under 32 MiB may stay in the
    heap; reported, no target). --quick measures the 64x64 "live" figures only.
(b) step  one fine-tuning step (forward + backward + Adam step) of the STT objective
    (stcorr.objectives.stt, full STT Eq. 10, R18 student + frozen R18 teacher, 2 frames, 256 px) and
    of CRW (stcorr.objectives.crw, R18, patch nodes; CRW needs T >= 3, so it runs on 3 frames,
    not STT's 2). The objective's share is timed by running the same objective on recorded
    backbone outputs (features as leaves, so its backward stops there): STT's ``SttObjective``
    with the backbones replaced by replays, CRW's ``walk_loss`` on node embeddings.
    --quick: batch 1 and CRW at 128 px. Full: batch 8; CRW's step (~1.5 CPU-minutes, ~6 GiB RSS
    at 256 px) is timed once, without warm-up.

Every time is CPU-seconds of a single-threaded process (``time.process_time``), median of the
repetitions after one warm-up: stable on a shared machine, where wall-clock is not.

    python benchmarks/objectives.py [--quick] [--out FILE.json] [--no-crw]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stcorr.objectives.correlation import apply_local_correlation, local_correlation

TARGETS = {"dense_mem_over_windowed_mem": 4.0, "windowed_vs_dense_speed": 1.0,
           "step_over_objective": 4.0}
SIZES = {"64": (64, 128, 12), "32": (32, 256, 6)}  # side, channels, radius r
CRW_FRAMES = 3  # the fewest CRW accepts (one palindrome of length 2); STT uses 2
CONTENDERS = ("dense", "windowed")


# ---------------------------------------------------------------- (a) correlation

def window_mask(side: int, r: int) -> Tensor:
    """(HW, HW) bool window mask of the reference code, built per axis (no int64 HW x HW)."""
    pos = torch.arange(side)
    near = (pos[:, None] - pos[None]).abs() <= r  # (side, side)
    return (near[:, None, :, None] & near[None, :, None, :]).reshape(side * side, side * side)


def dense_level(f_t: Tensor, f_r: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """Reference code: HW x HW dot products, mask, softmax, matmul with the values."""
    logits = torch.bmm(f_t.flatten(2).transpose(1, 2), f_r.flatten(2)) / math.sqrt(f_t.shape[1])
    weights = logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # (B, HW, HW)
    return torch.bmm(weights, values.flatten(2).transpose(1, 2))  # (B, HW, 1)


def windowed_level(f_t: Tensor, f_r: Tensor, values: Tensor, r: int) -> Tensor:
    """stcorr: windowed correlation (B, HW, (2r+1)^2), then the frame transform."""
    return apply_local_correlation(local_correlation(f_t, f_r, r).weights, values, r)


def level_inputs(size: str, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    side, channels, _ = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    f_t = torch.randn(batch, channels, side, side, generator=gen).requires_grad_()
    f_r = torch.randn(batch, channels, side, side, generator=gen).requires_grad_()
    return f_t, f_r, torch.randn(batch, 1, side, side, generator=gen)


def contender(name: str, size: str, batch: int) -> Callable[[], None]:
    """One fwd + bwd of a contender on fixed inputs; the dense mask is built on first call."""
    f_t, f_r, values = level_inputs(size, batch)
    side, _, r = SIZES[size]
    mask: list[Tensor] = []

    def run() -> None:
        if name == "dense":
            mask[:] = mask or [window_mask(side, r)]
            out = dense_level(f_t, f_r, values, mask[0])
        else:
            out = windowed_level(f_t, f_r, values, r)
        out.square().sum().backward()
        f_t.grad = f_r.grad = None

    return run


def time_levels(batch: int, reps: int) -> dict[str, float]:
    """Median CPU-seconds of each contender and size, alternating contenders."""
    figures: dict[str, float] = {}
    for size in SIZES:
        runs = {name: contender(name, size, batch) for name in CONTENDERS}
        times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        for rep in range(reps + 1):  # repetition 0 is the warm-up
            for name, run in runs.items():
                start = time.process_time()
                run()
                if rep:
                    times[name].append(time.process_time() - start)
        for name in CONTENDERS:
            figures[f"{name}_{size}_s"] = statistics.median(times[name])
    return figures


def peak_levels_mib(batch: int, sizes: tuple[str, ...], modes: tuple[str, ...]) -> dict[str, float]:
    """Peak memory of one fwd + bwd of each contender and size, each in its own subprocess.

    Twice: with glibc's defaults (freed heap memory may stay resident, so RSS can exceed the
    live peak), and with ``MALLOC_MMAP_THRESHOLD_`` = 64 KiB, where every tensor is its own
    mapping and leaves RSS when freed, so the peak is the live peak.
    """
    jobs = {}
    for size in sizes:
        for name in CONTENDERS:
            for mode in modes:
                env = {"MALLOC_MMAP_THRESHOLD_": "65536"} if mode == "live" else {}
                cmd = [sys.executable, __file__, "--child", name, "--size", size, "--batch", str(batch)]
                jobs[f"{name}_{size}_{mode}_peak_mib"] = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
                )
    figures = {}
    for key, proc in jobs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"benchmark child {key} failed with exit code {proc.returncode}")
        figures[key] = float(json.loads(out.strip().splitlines()[-1])["peak_mib"])
    return figures


def _status_kib(key: str) -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(key))


def child(name: str, size: str, batch: int) -> None:
    torch.set_num_threads(1)
    run = contender(name, size, batch)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_kib("VmRSS:")
    run()
    print(json.dumps({"peak_mib": (_status_kib("VmHWM:") - base) / 1024}))


# ---------------------------------------------------------------- (b) training steps

class Replay(nn.Module):
    """Stands in for a backbone: returns recorded features, so only the objective runs."""

    def __init__(self, feats: dict[str, Tensor]) -> None:
        super().__init__()
        self.feats = feats

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.feats


def median_cpu(fn: Callable[[], None], reps: int, warm_up: bool = True) -> float:
    times = []
    for rep in range(reps + int(warm_up)):
        start = time.process_time()
        fn()
        if rep or not warm_up:  # repetition 0 is the warm-up
            times.append(time.process_time() - start)
    return statistics.median(times)


def stt_figures(batch: int, size: int, reps: int) -> dict[str, float]:
    # imported here: the memory children need only the correlation
    from stcorr.config import SttConfig
    from stcorr.data.lab import normalize_lab, normalize_rgb, rgb_to_lab
    from stcorr.models.resnet import build_backbone
    from stcorr.objectives.stt import SttObjective, required_taps

    torch.manual_seed(0)
    config = SttConfig()
    student = build_backbone("stt_student", out=required_taps(config))
    teacher = build_backbone("stt_teacher")
    objective = SttObjective(config, student, teacher).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=5e-5)
    rgb = torch.rand(batch, 2, 3, size, size)
    lab = normalize_lab(rgb_to_lab(rgb))
    dropped = lab.clone()
    dropped[:, :, 1] = 0.0
    dropped = dropped * 1.5

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        objective(dropped, lab, rgb, 1)["loss"].backward()
        optimizer.step()

    frames = torch.cat([dropped[:, 0], dropped[:, -1]])
    with torch.no_grad():
        feats = {k: v.detach().requires_grad_() for k, v in student(frames).items()}
        teacher_feats = teacher(normalize_rgb(torch.cat([rgb[:, 0], rgb[:, -1]])))
    replayed = SttObjective(config, Replay(feats), Replay(teacher_feats)).train()

    def objective_only() -> None:
        replayed(dropped, lab, rgb, 1)["loss"].backward()
        for v in feats.values():
            v.grad = None

    return {"stt_step_s": median_cpu(step, reps), "stt_objective_s": median_cpu(objective_only, reps)}


def crw_figures(batch: int, frames: int, size: int, reps: int, warm_up: bool) -> dict[str, float]:
    from stcorr.config import CrwConfig
    from stcorr.data.lab import normalize_rgb
    from stcorr.objectives.crw import CRW, walk_loss

    torch.manual_seed(0)
    config = CrwConfig()
    model = CRW.from_config(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    clip = normalize_rgb(torch.rand(batch, frames, 3, size, size))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(clip)["loss"].backward()
        optimizer.step()

    with torch.no_grad():
        q = model.embed(clip).detach().requires_grad_()  # (B, T, N, dim)

    def objective_only() -> None:
        walk_loss(q, config.tau, config.edge_dropout)["loss"].backward()
        q.grad = None

    return {
        "crw_step_s": median_cpu(step, reps, warm_up),
        "crw_objective_s": median_cpu(objective_only, max(reps, 3)),
    }


# ---------------------------------------------------------------- report

def report(figures: dict[str, float], setup: dict[str, Any]) -> dict[str, Any]:
    def mem_ratio(size: str, mode: str) -> float:
        return figures[f"dense_{size}_{mode}_peak_mib"] / figures[f"windowed_{size}_{mode}_peak_mib"]

    ratios = {
        "dense_mem_over_windowed_mem": mem_ratio("64", "live"),
        "windowed_vs_dense_speed": figures["dense_64_s"] / figures["windowed_64_s"],
        "step_over_objective": figures["stt_step_s"] / figures["stt_objective_s"],
    }
    extra = {"windowed_vs_dense_speed_32": figures["dense_32_s"] / figures["windowed_32_s"]}
    if "dense_32_live_peak_mib" in figures:
        extra["dense_mem_over_windowed_mem_32"] = mem_ratio("32", "live")
    if "dense_64_rss_peak_mib" in figures:
        extra["dense_mem_over_windowed_mem_glibc_rss"] = mem_ratio("64", "rss")
    if "crw_step_s" in figures:
        extra["crw_step_over_objective"] = figures["crw_step_s"] / figures["crw_objective_s"]
    result: dict[str, Any] = {
        "name": "objectives",
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__.split("+")[0],
                    "python": platform.python_version()},
        "setup": setup, "figures": {k: round(v, 4) for k, v in figures.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()}, "targets": TARGETS,
        "pass": all(ratios[k] >= t for k, t in TARGETS.items()),
        "extra_ratios": {k: round(v, 3) for k, v in extra.items()},
    }
    print("| level | contender | CPU-s fwd+bwd | live peak MiB | RSS peak MiB (glibc default) |")
    print("|---|---|---|---|---|")
    for size, (side, channels, r) in SIZES.items():
        for name in CONTENDERS:
            print(f"| {side}x{side} C={channels} r={r} | {name} | {figures[f'{name}_{size}_s']:.3f} | "
                  f"{figures.get(f'{name}_{size}_live_peak_mib', float('nan')):.0f} | "
                  f"{figures.get(f'{name}_{size}_rss_peak_mib', float('nan')):.0f} |")
    print("\n| step | CPU-s per step | CPU-s in the objective | objective share |\n|---|---|---|---|")
    for name in ("stt", "crw"):
        if f"{name}_step_s" in figures:
            step, obj = figures[f"{name}_step_s"], figures[f"{name}_objective_s"]
            print(f"| {name} | {step:.2f} | {obj:.3f} | {obj / step:.1%} |")
    print("\n| ratio | value | target |\n|---|---|---|")
    for name, value in ratios.items():
        print(f"| {name} | {value:.2f} | {TARGETS[name]} |")
    for name, value in extra.items():
        print(f"| {name} (no target) | {value:.2f} | |")
    print(f"\npass: {result['pass']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer repetitions")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--no-crw", action="store_true", help="skip the CRW step")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.size, args.batch)
    torch.set_num_threads(1)  # CPU-seconds of one thread: the stable unit on a shared machine
    level_batch, reps = 2, (2 if args.quick else 7)
    step_batch, crw_batch, crw_size, step_reps = (1, 1, 128, 1) if args.quick else (8, 8, 256, 2)
    figures = time_levels(level_batch, reps)
    if args.quick:  # every child pays ~2 CPU-s of `import torch`: only the target's figures
        figures |= peak_levels_mib(level_batch, ("64",), ("live",))
    else:
        figures |= peak_levels_mib(level_batch, tuple(SIZES), ("live", "rss"))
    figures |= stt_figures(step_batch, 256, step_reps)
    if not args.no_crw:
        # a full-size CRW step takes ~1.5 CPU-minutes: one timed step, no warm-up
        figures |= crw_figures(crw_batch, CRW_FRAMES, crw_size, 1, warm_up=args.quick)
    setup = {
        "levels": {size: {"side": s, "channels": c, "radius": r, "batch": level_batch}
                   for size, (s, c, r) in SIZES.items()},
        "level_op": "softmax weights -> apply to 1 value channel -> backward to both features",
        "stt_step": f"R18 stt_student + stt_teacher, batch {step_batch}, 2 frames, 256 px, "
                    "full Eq. 10 (SttConfig defaults), Adam",
        "crw_step": None if args.no_crw else f"R18 crw preset, batch {crw_batch}, {CRW_FRAMES} "
                    f"frames, {crw_size} px, patches of 64 px at stride 32, Adam",
        "repetitions": {"levels": reps, "stt_steps": step_reps,
                        "crw_steps": "1 after a warm-up" if args.quick else "1, no warm-up"},
        "threads": 1,
        "seconds": "CPU-seconds of the single-threaded process (time.process_time), median "
                   "after one warm-up",
    }
    result = report(figures, setup)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
