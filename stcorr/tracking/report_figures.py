"""The report's pictures: training loss, learning-health diagnostics, one overlay strip per benchmark.

Each is PNG bytes (or a file the evaluation wrote), logged into the pipeline's parent run under
``report/`` and shown in ``report.md`` and ``report.html`` (``stcorr.tracking.report``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

STAGE_TITLE = {"pretrain": "pretrain (MoCo v2, images)", "finetune": "finetune (videos)"}
# Each diagnostic next to the value that means "learned nothing" (stcorr.train.health).
DIAGNOSTICS = (
    ("acc1", "acc1_chance", "InfoNCE top-1 accuracy (%)", "chance"),
    ("psnr", "copy_psnr", "reconstruction PSNR (dB)", "copy the reference"),
    ("walk_acc", "walk_chance", "cycle-walk accuracy", "chance"),
)


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _axes(panels: int) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.4), squeeze=False)
    return fig, axes[0]


def _history(client: Any, run_id: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return [s for s, _ in points], [v for _, v in points]


def loss_curves_png(client: Any, run_ids: dict[str, str]) -> bytes | None:
    """Training loss against step, one panel per training stage (None without one)."""
    stages = {s: r for s, r in run_ids.items() if r}
    if not stages:
        return None
    fig, axes = _axes(len(stages))
    for ax, (stage, run_id) in zip(axes, stages.items(), strict=True):
        steps, values = _history(client, run_id, "loss")
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None)
        ax.set_title(f"{STAGE_TITLE.get(stage, stage)}: training loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    return _figure_png(fig)


def diagnostics_png(client: Any, run_ids: dict[str, str]) -> bytes | None:
    """Each training stage's learning diagnostic against its "learned nothing" level (None when
    no stage logged one)."""
    panels = []
    for stage, run_id in run_ids.items():
        keys = set(client.get_run(run_id).data.metrics) if run_id else set()
        panels += [(stage, run_id, d) for d in DIAGNOSTICS if d[0] in keys and d[1] in keys]
    if not panels:
        return None
    fig, axes = _axes(len(panels))
    for ax, (stage, run_id, (key, base, label, base_label)) in zip(axes, panels, strict=True):
        for name, legend, style in ((key, stage, "-"), (base, base_label, "--")):
            steps, values = _history(client, run_id, name)
            ax.plot(steps, values, style, marker="o" if len(steps) < 20 else None, label=legend)
        ax.set_title(f"{STAGE_TITLE.get(stage, stage)}: {label}")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    return _figure_png(fig)


def overlay_strips(evaluate: dict[str, Any]) -> dict[str, Path]:
    """``{benchmark: strip}``: the first sequence's strip of the candidate (else of the first
    model) per benchmark, from the evaluation's output folder (missing when it ran elsewhere)."""
    out_dir = Path(evaluate.get("out_dir", ""))
    found: dict[str, Path] = {}
    for bench in evaluate.get("summaries", {}):
        models = list(evaluate["summaries"][bench])
        for model in sorted(models, key=lambda m: m != "candidate"):
            strips = sorted((out_dir / model / "pictures" / bench).glob("*-strip.png"))
            if strips:
                found[bench] = strips[0]
                break
    return found
