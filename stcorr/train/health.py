"""Did a training stage learn anything? Checks of the logged diagnostics against chance levels.

A stage that runs but learns nothing is a defect, and the loss curve alone hides it (an InfoNCE
loss that *rises* to ln(1 + K) looks like training). Each stage logs diagnostics next to the
level a model that learned nothing would reach, on the same batches:

- pretrain (MoCo): InfoNCE top-1 accuracy vs chance 1 / (1 + K), the loss vs ln(1 + K), and the
  share of queries whose own image has a key in the queue (false negatives, once K reaches the
  number of distinct images);
- finetune (STT): reconstruction PSNR vs copying the reference at the same place, each STT Eq. 10
  term's share of the gradient, the res5 grid of global distillation (under 4x4 both
  correlations are near one-hot and the term is ~0), the kept fraction of the selection;
- finetune (CRW): walk accuracy vs chance 1 / N.

The worker keeps every log step's scalars; :func:`assess` reads the last third of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

HEALTH_FILE = "health.json"  # the log-step history, written next to each checkpoint
FINAL_SHARE = 1.0 / 3.0  # "final" = mean over the last third of the log steps
MIN_GC_GRID = 4  # res5 side below which global distillation is ~0
MIN_PSNR_GAIN = 0.5  # dB over copying the same position: less is no correspondence learned
MIN_GRAD_SHARE = 0.01
MIN_ACC_OVER_CHANCE = 10.0  # MoCo top-1 below 10x chance: no instance is told apart
# A MoCo loss within 2% of ln(1 + K) is a model at chance: the demo's old 1024-key queue over 256
# images ended at 6.83 vs 6.93 (0.985). Short runs that do tell images apart (top-1 20-70%) end at
# 0.92-0.96 of it: their embeddings are still close together, but correctly ordered.
MAX_LOSS_SHARE = 0.98


@dataclass(frozen=True)
class Health:
    """A stage's verdict: summary numbers (logged as ``health/<name>``) and findings."""

    stage: str
    summary: dict[str, float]
    findings: list[str] = field(default_factory=list)  # each a one-line warning
    learned: bool = True

    def line(self) -> str:
        """The summary on one line, for the console and the report."""
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in self.summary.items())
        return f"{self.stage} health: {'ok' if self.learned and not self.findings else 'WARN'}; {shown}"


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def final(history: Sequence[Mapping[str, float]], key: str) -> float | None:
    """Mean of ``key`` over the last third of the log steps that have it (None if none do)."""
    values = [float(h[key]) for h in history if key in h and math.isfinite(float(h[key]))]
    if not values:
        return None
    tail = values[-max(1, math.ceil(len(values) * FINAL_SHARE)):]
    return sum(tail) / len(tail)


def assess_pretrain(history: Sequence[Mapping[str, float]], *, queue: int,
                    images: int | None) -> Health:
    """MoCo: top-1 accuracy and loss against chance; the queue against the distinct images."""
    chance_loss = math.log(1 + queue)
    chance_acc = 100.0 / (1 + queue)
    acc, loss, positives = (final(history, k) for k in ("acc1", "loss", "positive_in_queue"))
    summary = {"acc1": acc or 0.0, "acc1_chance": chance_acc, "loss": loss or math.nan,
               "loss_chance": chance_loss, "queue": float(queue)}
    if images is not None:
        summary["distinct_images"] = float(images)
    if positives is not None:
        summary["positive_in_queue"] = positives
    findings = []
    crowded = images is not None and queue >= images
    if crowded:
        findings.append(f"pretrain.moco.queue = {queue} >= {images} distinct images: the queue holds "
                        f"keys of each query's own image as negatives ({100 * (positives or 0):.0f}% "
                        f"of queries); use a queue smaller than the data")
    learned = (acc is not None and acc >= MIN_ACC_OVER_CHANCE * chance_acc
               and (loss is None or loss < MAX_LOSS_SHARE * chance_loss))
    if not learned:
        cause = ("the queue holds copies of the positives" if crowded else
                 "augmentations too strong for the image size, or too few steps")
        findings.append(f"pretrain learned nothing: InfoNCE top-1 accuracy {acc or 0:.1f}% (chance "
                        f"{chance_acc:.2f}%), loss {loss or math.nan:.2f} vs chance ln(1+K) = "
                        f"{chance_loss:.2f}; likely cause: {cause}")
    return Health("pretrain", summary, findings, learned)


def assess_stt(history: Sequence[Mapping[str, float]], *, global_distill: bool, crop: int) -> Health:
    """STT: reconstruction vs copying the same place, gradient shares, the res5 grid."""
    psnr, copy, gain = (final(history, k) for k in ("psnr", "copy_psnr", "psnr_gain"))
    summary = {"psnr": psnr or math.nan, "copy_psnr": copy or math.nan, "psnr_gain": gain or math.nan}
    for key in ("kept_fraction", "gc_grid", "grad_share_rec", "grad_share_lc", "grad_share_gc"):
        value = final(history, key)
        if value is not None:
            summary[key] = value
    findings = []
    grid = summary.get("gc_grid")
    if global_distill and grid is not None and grid < MIN_GC_GRID:
        findings.append(f"global distillation runs on a {grid:.0f}x{grid:.0f} res5 grid (crop {crop} px, "
                        f"stride 32): both correlations are near one-hot and the term is ~0 "
                        f"(gc = {final(history, 'gc') or 0:.1e}); use finetune.crop_size >= "
                        f"{32 * MIN_GC_GRID} or finetune.stt.global_distill=false")
    for term in ("rec", "lc", "gc"):
        share = summary.get(f"grad_share_{term}")
        if share is not None and share < MIN_GRAD_SHARE:
            findings.append(f"the {term} term carries {100 * share:.2f}% of the gradient: it trains nothing")
    learned = gain is not None and gain >= MIN_PSNR_GAIN
    if not learned:
        findings.append(f"finetune learned nothing: reconstruction PSNR {psnr or math.nan:.1f} dB vs "
                        f"{copy or math.nan:.1f} dB for copying the reference at the same place; likely "
                        f"cause: motion between the sampled frames is under a feature cell, so "
                        f"'copy the same position' is the answer (raise finetune.frame_gap or the motion)")
    return Health("finetune", summary, findings, learned)


def assess_crw(history: Sequence[Mapping[str, float]]) -> Health:
    """CRW: walk accuracy against chance 1/N."""
    acc, chance, loss = (final(history, k) for k in ("walk_acc", "walk_chance", "loss"))
    summary = {"walk_acc": acc or 0.0, "walk_chance": chance or math.nan, "loss": loss or math.nan}
    learned = acc is not None and chance is not None and acc > 2 * chance
    findings = [] if learned else [
        f"finetune learned nothing: walk accuracy {100 * (acc or 0):.1f}% vs chance "
        f"{100 * (chance or 0):.1f}% (1/N); likely cause: too few steps or nodes too alike"]
    return Health("finetune", summary, findings, learned)


def setup_warnings(stage: str, context: Mapping[str, Any]) -> list[str]:
    """What can be told before training starts: a term that cannot work at its resolution, a
    queue that will hold the positives. Same ``context`` as :func:`assess`."""
    if stage == "pretrain":
        queue, images = int(context["queue"]), context.get("images")
        if images is not None and queue >= images:
            return [f"pretrain.moco.queue = {queue} >= {images} distinct images: the queue will hold "
                    f"keys of each query's own image as negatives; use a queue smaller than the data"]
        return []
    if context.get("objective") == "crw":
        return []
    grid, crop = int(context.get("crop", 0)) // 32, int(context.get("crop", 0))
    if context.get("global_distill") and grid < MIN_GC_GRID:
        return [f"global distillation on a {grid}x{grid} res5 grid (crop {crop} px, stride 32) is ~0: "
                f"both correlations are near one-hot; use finetune.crop_size >= {32 * MIN_GC_GRID} or "
                f"finetune.stt.global_distill=false"]
    if not context.get("global_distill") and grid < MIN_GC_GRID:
        return [f"global distillation (STT Eq. 2-3) is off: at crop {crop} px the res5 grid would be "
                f"{grid}x{grid}, under the {MIN_GC_GRID}x{MIN_GC_GRID} where it carries signal"]
    return []


def assess(stage: str, history: Sequence[Mapping[str, float]], context: Mapping[str, Any]) -> Health:
    """The stage's health from its log-step history.

    Args:
        stage: "pretrain" or "finetune".
        history: one dict of scalars per log step, in step order.
        context: pretrain: ``queue``, ``images``; finetune: ``objective``, ``global_distill``,
            ``crop``.
    """
    if stage == "pretrain":
        return assess_pretrain(history, queue=int(context["queue"]), images=context.get("images"))
    if context.get("objective") == "crw":
        return assess_crw(history)
    return assess_stt(history, global_distill=bool(context.get("global_distill")),
                      crop=int(context.get("crop", 0)))
