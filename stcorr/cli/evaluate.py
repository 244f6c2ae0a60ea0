"""Evaluation commands: ``stcorr evaluate``, ``stcorr score``, ``stcorr track``.

``evaluate`` runs one model or baseline on one benchmark folder outside the pipeline;
``score davis`` scores any method's palette PNGs like the official DAVIS-2017 tool;
``track`` propagates a first-frame mask through your own video.
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from stcorr.cli.common import ConfigOpt, SetOpt, _load, app, examples, friendly_errors, removed_on_failure
from stcorr.config import ConfigError

# No `from __future__ import annotations` here: typer reads these annotations at runtime.
ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", metavar="MODEL",
                 help="lab | random | a .pt encoder | models:/name@alias | models:/name/3"),
]
ObjectiveOpt = Annotated[
    str | None,
    typer.Option("--objective", metavar="NAME", help="Override the model's recorded input contract: "
                 "stt (Lab input), stt-rgb, crw or moco (warns when it disagrees with the contract)."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Output folder (created; removed again if the command fails).")]


def _check_objective(objective: str | None) -> None:
    from stcorr.eval.features import OBJECTIVES

    if objective is not None and objective not in OBJECTIVES:
        raise ConfigError(f"--objective: expected one of {', '.join(OBJECTIVES)}, got {objective!r}")


def _size(text: str | None) -> tuple[int, int] | None:
    """``"HxW"`` -> (H, W)."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--size: expected HxW in pixels such as 560x560, got {text!r}")
    return int(parts[0]), int(parts[1])


@app.command(epilog=examples(
    "stcorr evaluate -b davis --root data/synth/davis -m lab -o results/lab",
    "stcorr evaluate -b davis --root ~/DAVIS -m models:/stcorr-encoder@candidate -o results/cand",
    "stcorr evaluate -b vip --root ~/VIP -m crw.pt -o results/vip --size 560x560",
    "stcorr evaluate -b davis --root ~/DAVIS -m random -o results/rnd --calibrate data/videos/mp4",
    "stcorr evaluate -b jhmdb --root ~/JHMDB -m lab -o results/j --set evaluate.max_sequences=5"))
@friendly_errors
def evaluate(
    benchmark: Annotated[str, typer.Option("--benchmark", "-b", metavar="NAME",
                                           help="footage, davis, vip or jhmdb (footage: DAVIS rules).")],
    root: Annotated[Path, typer.Option("--root", metavar="DIR",
                                       help="The benchmark folder in its published layout.")],
    model: ModelOpt,
    out: OutOpt,
    objective: ObjectiveOpt = None,
    calibrate: Annotated[
        Path | None, typer.Option("--calibrate", metavar="DIR", help="--model random: training videos "
                                  "(never benchmark frames) to recalibrate its BatchNorm statistics on.")
    ] = None,
    size: Annotated[
        str | None, typer.Option("--size", metavar="HxW",
                                 help="VIP/JHMDB squash size HxW (default 560x560 / 320x320).")
    ] = None,
    no_ray: Annotated[
        bool, typer.Option("--no-ray", help="Evaluate the sequences one by one in this process.")
    ] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Evaluate one model or baseline on one benchmark.

    Writes the predictions, a metrics JSON and a per-sequence CSV into OUT and prints the
    results table.
    """
    from stcorr.eval.features import check_precision, load_model
    from stcorr.eval.harness import (
        BENCHMARKS,
        evaluate_benchmark,
        read_benchmark,
        results_table,
        table_row,
    )
    from stcorr.eval.reproduction import reproduction_table

    if benchmark not in BENCHMARKS:
        raise ConfigError(f"--benchmark {benchmark!r}: unknown; expected one of {', '.join(BENCHMARKS)}")
    _check_objective(objective)
    cfg = _load(config, sets)
    check_precision(cfg.evaluate.precision)
    read_benchmark(benchmark, root, cfg.evaluate.max_sequences)  # layout errors before loading
    spec = load_model(model, objective=objective, stride=cfg.evaluate.stride, tracking=cfg.tracking,
                      name=model)
    if calibrate is not None and spec.kind == "random":
        from stcorr.eval.calibrate import calibrated_random

        spec = calibrated_random(spec, calibrate, cfg.evaluate.random_bn_frames or 64)
    from stcorr.runtime import console

    with removed_on_failure(out), console.stage("evaluate"):  # sequences done/total meanwhile
        result = evaluate_benchmark(benchmark, root, spec, cfg.evaluate, out,
                                    None if no_ray else cfg.compute, size=_size(size))
    typer.echo(results_table([table_row(model, [result])]))
    reproduction = reproduction_table(spec.contract, {benchmark: result.summary})
    if spec.kind == "encoder" and reproduction:
        typer.echo(reproduction)
    typer.echo(f"predictions: {result.files['predictions']}")
    typer.echo(f"metrics: {result.files['json']}  per sequence: {result.files['csv']}")

@app.command(epilog=examples("stcorr score davis --gt ~/DAVIS --pred results/cand/davis",
                             "stcorr score davis --gt ~/DAVIS --pred their_results --json scores.json"))
@friendly_errors
def score(
    benchmark: Annotated[str, typer.Argument(metavar="BENCHMARK", help="davis (palette-PNG results)")],
    gt: Annotated[Path, typer.Option("--gt", metavar="DIR",
                                     help="DAVIS-2017 root (ImageSets/2017/val.txt, ...).")],
    pred: Annotated[Path, typer.Option("--pred", metavar="DIR",
                                       help="Results folder: <seq>/<frame>.png palette PNGs.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Also write the scores as JSON here.")
    ] = None,
) -> None:
    """Score any method's DAVIS results.

    Palette PNGs are scored as the official DAVIS-2017 tool does (semi-supervised, val).
    """
    from stcorr.eval.harness import davis_tables
    from stcorr.eval.metrics import score_davis_folder

    if benchmark != "davis":
        raise ConfigError(f"score {benchmark}: only 'davis' is scored from result files; "
                         f"VIP and JHMDB are scored by `stcorr evaluate`")
    if not pred.is_dir():
        raise FileNotFoundError(f"{pred}: results folder not found; expected <seq>/<frame>.png")
    summary, rows = score_davis_folder(gt, pred)
    typer.echo(davis_tables(summary, rows))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"global": summary, "per_sequence": rows}, indent=2))

@app.command(epilog=examples(
    "stcorr track --video clip.mp4 --mask first.png -m lab -o tracked",
    "stcorr track --video clip.mp4 --mask first.png -m models:/stcorr-encoder@candidate -o tracked",
    "stcorr track --video long.mp4 --mask first.png -m crw.pt -o tracked --max-frames 100"))
@friendly_errors
def track(
    video: Annotated[Path, typer.Option("--video", metavar="FILE",
                                        help="Your video file (.mp4, .avi, ...).")],
    mask: Annotated[Path, typer.Option("--mask", metavar="PNG",
                                       help="First-frame mask PNG (ids or colours).")],
    model: ModelOpt,
    out: OutOpt,
    objective: ObjectiveOpt = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, metavar="N",
                                 help="Track only the first N frames.")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Propagate a first-frame mask through your video.

    Writes one palette PNG per frame and an overlay video into OUT.
    """
    from stcorr.eval.features import check_precision, load_model
    from stcorr.eval.track import track_video

    _check_objective(objective)
    cfg = _load(config, sets)
    check_precision(cfg.evaluate.precision)
    spec = load_model(model, objective=objective, stride=cfg.evaluate.stride, tracking=cfg.tracking)

    def progress(phase: str, done: int, total: int) -> None:
        typer.echo(f"track: {phase} {done}/{total} frames")

    with removed_on_failure(out):
        result = track_video(video, mask, spec, out, cfg.evaluate, max_frames=max_frames,
                             progress=progress)
    typer.echo(f"{len(result.masks)} masks in {out}; overlay: {result.overlay}")
